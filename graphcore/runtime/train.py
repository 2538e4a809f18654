"""Training a graph: classify, reconstruct or diffusion, on a run folder that can be resumed.

    trainer = Trainer(gc.template("lenet5"), TrainConfig(task="classify", epochs=10), out="runs/lenet")
    result = trainer.fit()          # TrainResult(status, message, run_dir, epoch, step, metrics)

A run folder holds ``graph.json``, ``config.json``, ``last.pt`` (everything needed to continue:
weights, optimizer, step, RNG state, position in the epoch), ``best.pt`` (the weights with the
best validation score), ``metrics.jsonl`` (one line per epoch and split), ``status.json`` (running,
finished, stopped or failed: what the workspace's Runs list reads), for vector data
``vectors.npz`` (its standardisation and points to draw samples over) and the marker file
``.netcanvas-run``. A run only starts in a folder that is new, empty, or marked and without a
checkpoint, so it never overwrites a user's files. ``last.pt`` is saved at every epoch's end and
every ``checkpoint_minutes`` inside an epoch; ``Trainer.resume`` continues a run exactly where
it stopped, and a damaged run folder is one line naming the file.

The learning rate follows a function of the global step (linear warm-up, then cosine decay
to zero, or constant), so the schedule's whole state is the step counter and the plan. The plan
is the epochs' steps; under a time budget (``minutes``) it is as many steps as fit in the time
left at the measured cost of a step, whichever is fewer, re-planned after every step, so that a
budgeted run ends annealed when its time does. Without ``epochs`` a run trains until its budget
ends and then evaluates the last stretch as a (partial) epoch.

Progress goes to ``events``: a "step" event (loss, lr, the plan's ``total_steps`` and ``eta`` in
seconds) after the first step, then every ``log_every`` steps or ``EVENT_SECONDS``, whichever
comes first.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel; each
process takes its own share of every epoch's shuffled order, and only rank 0 writes.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import logging
import math
import os
import pickle
import signal
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from graphcore.core.compiler import GraphModel, compile
from graphcore.core.diagnostics import GraphError, one_line
from graphcore.core.document import GraphDoc, dumps, leftover_temp_files, load, write_atomic
from graphcore.runtime import diffusion
from graphcore.runtime.config import DEFAULT_EPOCHS, TrainConfig, TrainResult, check_task, read_config
from graphcore.runtime.data import Dataset, load_dataset
from graphcore.runtime.devices import amp_dtype, pick_device
from graphcore.runtime.workspace import TRAINER_STATUS, is_run_dir, mark_run_dir, timestamp, write_status

EventSink = Callable[[dict], None]
log = logging.getLogger(__name__)

RUN_FILES = ("graph.json", "config.json", "last.pt")  # what resuming needs
_NUMBER = (int, float)
LAST_PT = {"model": dict, "optimizer": dict, "scaler": dict, "step": int, "epoch": int, "batch": int,
           "partial": dict, "best": (*_NUMBER, type(None)), "rng": dict, "elapsed": _NUMBER, "total_steps": int}
"""What ``last.pt`` holds, and the type of each entry."""
WEIGHTS_PT = {"model": dict}
EVENT_SECONDS = 2.0  # longest wait between "step" events when steps are slow (one process)
VECTORS_FILE = "vectors.npz"  # a vector-data run: the data's mean and std, and points to draw samples over
REFERENCE_POINTS = 2000
PREVIEW_POINTS = 500


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warm-up, then cosine to 0 or constant."""
    warm = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    """Trains one graph on one dataset into one run folder; see the module docstring.

    A task with its own loop (``gan``) subclasses it: ``_prepare_models``, ``_train_step``,
    ``evaluate`` and the checkpoint hooks are what differ; the run folder, the time budget, events,
    NaN handling and resuming are shared. ``trainer_class(task)`` says which class trains a task.
    """

    CHECKPOINT = LAST_PT  # what last.pt holds
    FIGURES: tuple[str, ...] = ("loss", "correct")  # each step's figures in the device buffer; the first: NaN check
    DROP_LAST = False  # whether an epoch leaves out a last, smaller batch

    def __init__(self, graph: GraphDoc | GraphModel, config: TrainConfig | None = None, *,
                 out: str | os.PathLike | None = None, events: EventSink | None = None,
                 stop_event: Any = None, progress: bool = False, on_step: Callable[[Trainer], None] | None = None):
        self.config = config or TrainConfig()
        self.doc = graph.doc if isinstance(graph, GraphModel) else graph
        self.model = graph if isinstance(graph, GraphModel) else None
        self.run_dir = Path(out) if out is not None else None
        self.events, self.stop_event, self.progress, self.on_step = events, stop_event, progress, on_step
        self._resume_state: dict | None = None
        self._stop_reason: str | None = None
        self._saved_step: int | None = None
        self.last_metrics: dict[str, dict] = {}

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, *, epochs: int | None = None, minutes: float | None = None,
               device: str | None = None, **kwargs) -> Trainer:
        """Continue a run from its ``last.pt``. ``epochs`` is the run's new total (default: as planned);
        changing it re-plans the rest of the lr schedule."""
        run_dir = Path(run_dir)
        for name in RUN_FILES:
            if not (run_dir / name).exists():
                raise GraphError(f"{run_dir}: not a run folder to resume (no {name})")
        config = read_config(run_dir / "config.json")
        for stale in leftover_temp_files(run_dir):  # a save cut short by a kill or a power cut
            stale.unlink(missing_ok=True)
        config.minutes = minutes
        if epochs is not None:
            config.epochs = epochs
        if config.epochs is None and config.minutes is None:
            raise GraphError(f"{run_dir} was trained for a time budget: give --minutes or --epochs to continue it")
        if device is not None:
            config.device = device
        klass = trainer_class(config.task) if cls is Trainer else cls
        trainer = klass(load(run_dir / "graph.json"), config, out=run_dir, **kwargs)
        trainer._resume_state = _load_checkpoint(run_dir / "last.pt", klass.CHECKPOINT)
        return trainer

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.config
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        self.main = self.rank == 0
        if self._resume_state is None and self.main and self.run_dir is not None:
            check_out_dir(self.run_dir)  # before the data loads: a refusal should come at once
        self.device = pick_device(cfg.device)
        io_ = check_task(self.doc, cfg.task)
        self.shape = io_.sample_shape(cfg.task)
        self.data = self._load_data()
        check_task(self.doc, cfg.task, self.data)
        self.range = diffusion.DataRange.of(self.data)
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            torch.distributed.init_process_group(backend)
        train_x, train_y = self.data.split("train")
        self.amp = amp_dtype(self.device, cfg.amp)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the batch shape is fixed, so the autotuned kernels are reused
        self.channels_last = self.device.type == "cuda" and len(self.shape) in (3, 4)
        self.layout = torch.channels_last if len(self.shape) == 3 else torch.channels_last_3d
        self._prepare_models(train_x)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        # Samples on the device; shuffled orders come from (seed, epoch) so they need no saved state.
        self.train_x, self.train_y = train_x.to(self.device), train_y.to(self.device) if train_y is not None else None
        self.local_batch = max(1, cfg.batch_size // self.world)
        per_rank = math.ceil(len(train_x) / self.world)
        batches = per_rank // self.local_batch if self.DROP_LAST else math.ceil(per_rank / self.local_batch)
        self.steps_per_epoch = batches
        if self.steps_per_epoch < 1:
            raise GraphError(f"dataset {self.data.name!r}: {per_rank} training samples do not make one batch of "
                             f"{self.local_batch}; use a smaller --batch-size")
        self._epoch_steps = cfg.epochs * self.steps_per_epoch if cfg.epochs is not None else None
        # before a step is measured, a budgeted run guesses its length (re-planned after the first step)
        self.total_steps = self._epoch_steps or DEFAULT_EPOCHS * self.steps_per_epoch
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed * 1000 + self.rank)
        self._nan: tuple[float, int] | None = None  # (loss, step) of the first non-finite loss
        self._buffer = torch.zeros(len(self.FIGURES), cfg.log_every, device=self.device)  # per-step figures
        self._sizes: list[int] = []  # batch sizes of the steps not yet flushed
        self._lr: float | None = None
        self.step = self.epoch = self.batch = 0
        self.partial = self._new_partial()
        self.best: float | None = None
        self.elapsed = 0.0
        if self._resume_state is not None:
            self._restore(self._resume_state)
        elif self.main:
            self._create_run_dir()

    def _load_data(self) -> Dataset:
        cfg = self.config
        return load_dataset(cfg.dataset, self.shape, val_fraction=cfg.val_fraction)

    def _prepare_models(self, train_x: torch.Tensor) -> None:
        """Compile (or take) the model, try it on two samples, move it to the device, wrap it for DDP,
        and make its EMA copy and optimizer."""
        cfg = self.config
        if self.model is None:
            self.model = compile(self.doc).init(seed=cfg.seed)
        if cfg.init and self._resume_state is None:  # fine-tuning; a resumed run has its own weights
            self.model.init(cfg.init)
        self.schedule = diffusion.Schedule(cfg.beta_schedule, cfg.timesteps) if cfg.task == "diffusion" else None
        self._preflight(train_x[:2])
        self.model.to(self.device, memory_format=self.layout if self.channels_last else torch.preserve_format)
        self.net: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False) if cfg.ema else None
        self.optimizer = self._optimizer()
        self._params = list(self.model.parameters())
        self._ema_params = list(self.ema_model.parameters()) if self.ema_model is not None else []

    @staticmethod
    def _new_partial() -> dict:
        """The running sums of an epoch's figures (saved in last.pt, so a resumed epoch adds up the same)."""
        return {"loss": 0.0, "correct": 0, "count": 0}

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise GraphError(f"graph {self.doc.name!r} has no trainable parameters")
        fused = {"fused": True} if self.device.type == "cuda" else {}
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)

    def _create_run_dir(self) -> None:
        if self.run_dir is None:
            self.run_dir = free_run_dir(self.doc.name)
        check_out_dir(self.run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GraphError(f"{self.run_dir}: cannot create the run folder: {exc.strerror or exc}") from None
        mark_run_dir(self.run_dir)
        write_atomic(self.run_dir / "graph.json", dumps(self.doc).encode())
        write_atomic(self.run_dir / "config.json", (json.dumps(self.config.to_dict(), indent=2) + "\n").encode())
        (self.run_dir / "metrics.jsonl").write_text("")
        self._write_data_files()

    def _write_data_files(self) -> None:
        """What the run folder keeps of its data: for vector data, ``vectors.npz``."""
        if self.data.kind == "vectors":
            write_vectors(self.run_dir, self.range, reference_points(self.data))

    def _preflight(self, x: torch.Tensor) -> None:
        """One forward pass on two samples ``x``, in eval mode, where the model is (on the CPU, before
        it moves to its device), so that a graph that cannot run fails before training with a message.
        On CUDA an index out of range would be a device-side assert that ends the process's use of
        the GPU. Diffusion graphs are tried at the first and the last timestep."""
        training = self.model.training
        self.model.eval()
        x = x.to(next(self.model.parameters(), x).device)
        try:
            with torch.no_grad():
                self._trial(x)
        except GraphError:
            raise
        except Exception as exc:  # a shape the rules allowed but the modules refuse, an id out of range, …
            raise GraphError(f"graph {self.doc.name!r} fails on a batch of the dataset: "
                             f"{one_line(f'{type(exc).__name__}: {exc}')[:300]}") from None
        finally:
            self.model.train(training)

    def _trial(self, x: torch.Tensor) -> None:
        """The preflight's forward pass on ``x`` (a diffusion graph at the first and the last timestep)."""
        if self.schedule is not None:
            t = torch.tensor([0, self.schedule.timesteps - 1][:len(x)], device=x.device)
            diffusion.denoiser(self.model, self.doc)(self.range.to_model(x), t)
        else:
            self.model(x)

    # ------------------------------------------------------------------ one batch
    def _forward(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(loss, number of correct predictions or None) for one batch."""
        if self.channels_last:
            x = x.contiguous(memory_format=self.layout)
        if self.amp is None:  # no autocast context to enter each step
            return self._loss(net, x, y, generator)
        with torch.autocast(self.device.type, dtype=self.amp):
            return self._loss(net, x, y, generator)

    def _loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.config.task == "classify":
            logits = net(x)  # (B, K)
            loss = F.cross_entropy(logits.float(), y)
            return loss, (logits.argmax(dim=1) == y).sum()
        if self.config.task == "reconstruct":
            return F.mse_loss(net(x).float(), x), None
        return self.schedule.loss(diffusion.denoiser(net, self.doc), self.range.to_model(x), generator,
                                  weighting=self.config.loss_weighting), None

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Train until the planned epochs, the time budget, a stop request or a NaN loss."""
        minutes = self.config.minutes
        self.deadline = time.monotonic() + minutes * 60 if minutes is not None else None  # the setup counts too
        self._setup()
        self._record_status(status="running", pid=os.getpid(), device=str(self.device), started=timestamp(),
                            ended=None, message="")
        cfg = self.config
        start = time.monotonic()
        self._t0, self._step0 = start, self.step  # what the cost of a step is measured from
        self._step_cost: float | None = None
        self._end_cost: float | None = None  # seconds an epoch's end (evaluation, checkpoint) took
        self._event_at = -math.inf
        restore_signals = self._install_signal_handlers()
        bar = self._progress_bar()
        self._emit({"type": "start", "run_dir": str(self.run_dir), "epochs": cfg.epochs, "minutes": cfg.minutes,
                    "step": self.step, "total_steps": self.total_steps, "device": str(self.device), "task": cfg.task})
        status, message = "finished", ""
        self._window: list[dict[str, float]] = []  # the steps' figures since the last "step" event
        self._saved_at = start
        try:
            while cfg.epochs is None or self.epoch < cfg.epochs:
                order = self._epoch_order(self.epoch)
                self.net.train()
                while self.batch < self.steps_per_epoch:
                    idx = order[self.batch * self.local_batch:(self.batch + 1) * self.local_batch]
                    self._train_step(idx)
                    self.step += 1
                    self.batch += 1
                    if self.on_step is not None:
                        self.on_step(self)
                    stop_reason = self._check_in(start, bar)
                    if stop_reason == "nan":
                        loss_value, at = self._nan or (float("nan"), self.step + 1)  # (another rank's NaN)
                        return self._finish("nan", self._nan_message(loss_value, at), start)
                    if stop_reason is not None:
                        return self._stopped(stop_reason, start)
                self._end_epoch(start)
            message = (f"finished {cfg.epochs} epochs ({self.step} steps): val {self._val_summary()}; "
                       f"run in {self.run_dir}")
            return self._finish(status, message, start)
        except BaseException as exc:
            self._record_status(status="failed", ended=timestamp(), message=one_line(str(exc)) or type(exc).__name__)
            raise
        finally:
            if bar is not None:
                bar.close()
            restore_signals()
            if self.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    def _stopped(self, stop_reason: str, start: float) -> TrainResult:
        """The end of a run before its last epoch: the planned end of a budgeted run, or a stop (a
        budget that also had epochs, a stop request, a signal) after saving ``last.pt``."""
        cfg = self.config
        if stop_reason == "time" and cfg.epochs is None:
            return self._finish_budget(start)
        status = "time_limit" if stop_reason == "time" else "stopped"
        self._save_last(start)
        why = f"time budget of {cfg.minutes:g} min used" if status == "time_limit" else stop_reason
        return self._finish(status, f"stopped at step {self.step} (epoch {self.epoch + 1}): {why}; "
                                    f"saved {self.run_dir / 'last.pt'}", start)

    def _finish_budget(self, start: float) -> TrainResult:
        """The time budget is used: the last stretch is evaluated as a (partial) epoch, then the run is done."""
        if self.batch > 0:
            self._end_epoch(start)
        message = (f"finished: time budget of {self.config.minutes:g} min used, {self.step} steps "
                   f"({self.epoch} epochs): val {self._val_summary()}; run in {self.run_dir}")
        return self._finish("finished", message, start)

    def _val_summary(self) -> str:
        val = self.last_metrics.get("val", {})
        return ", ".join(f"{k} {v:.4f}" for k, v in val.items() if k in ("loss", "accuracy", "judge_acc"))

    def _check_in(self, start: float, bar) -> str | None:
        """After each step: read the losses back when due, save ``last.pt`` when ``checkpoint_minutes``
        have passed since the last save, and say whether to stop (see ``_should_stop``)."""
        due = len(self._sizes) >= self.config.log_every or self.batch == self.steps_per_epoch or self._event_due()
        save = self.main and self.batch < self.steps_per_epoch and self._checkpoint_due()  # epoch ends save anyway
        if self.world > 1 and not due:  # under DDP the ranks re-plan and agree on stopping at due steps only
            return None
        out_of_time = self._replan()
        if due or save:
            # the one host sync of the window: losses, NaN check, events, DDP agreement
            stop_reason = self._should_stop(self._flush(bar), out_of_time)
            if stop_reason is None and save:
                self._save_last(start)  # after the flush, so that the epoch's figures so far are in it
            return stop_reason
        stop_reason = self._should_stop(False, out_of_time)  # cheap without DDP: a stop or the time limit acts at once
        if stop_reason is not None and self._flush(bar):  # settle the window before saving
            return "nan"
        return stop_reason

    def _event_due(self) -> bool:
        """A "step" event is due: the first step of this invocation, or (in one process: the ranks
        must agree on when to sync) ``EVENT_SECONDS`` since the last one."""
        if self.step == self._step0 + 1:
            return True
        return self.world == 1 and time.monotonic() - self._event_at >= EVENT_SECONDS

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self._saved_at >= self.config.checkpoint_minutes * 60

    def _flush(self, bar) -> bool:
        """Read the losses of the steps since the last flush (one host sync), add them to the
        epoch's figures, send "step" events; True (and ``self._nan``) if one was not finite."""
        n, sizes = len(self._sizes), self._sizes
        values = self._buffer[:, :n].tolist()  # [[loss per step], [correct per step]] (or a task's FIGURES)
        self._sizes = []
        first = self.step - n  # the step count before the window
        for i, size in enumerate(sizes):
            figures = {name: row[i] for name, row in zip(self.FIGURES, values)}
            loss_value = values[0][i]
            if not math.isfinite(loss_value):
                self.step, self.batch = first + i, self.batch - (n - i)
                self._nan = (loss_value, first + i + 1)
                return True
            self._accumulate(figures, size)
            self._window.append(figures)
            if len(self._window) >= self.config.log_every:
                self._step_event(first + i + 1, bar)
        if self._window and self._event_due():
            self._step_event(self.step, bar)
        if bar is not None:
            if bar.total != self.total_steps:  # re-planned under a time budget
                bar.total = self.total_steps
            bar.update(n)
        return False

    def _accumulate(self, figures: dict[str, float], size: int) -> None:
        """Add one step's figures (a batch of ``size``) to the epoch's sums."""
        self.partial["loss"] += figures["loss"] * size
        self.partial["correct"] += int(figures["correct"])
        self.partial["count"] += size

    def _step_event(self, step: int, bar) -> None:
        """A "step" event with the mean loss (and a task's other figures) since the last one, the
        current lr, the plan and the ETA."""
        means = {name: _mean([f[name] for f in self._window]) for name in self.FIGURES if name != "correct"}
        mean, lr = means["loss"], self.optimizer.param_groups[0]["lr"]
        self._emit({"type": "step", "step": step, "epoch": self.epoch, **means, "lr": lr,
                    "total_steps": self.total_steps, "eta": self._eta()})
        if bar is not None:
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}", refresh=False)
        self._window = []
        self._event_at = time.monotonic()

    def _replan(self) -> bool:
        """Measure the cost of a step so far (epoch ends included) and, under a time budget, plan the
        run's length: as many more steps as fit in the time left, or the epochs' steps if fewer.
        True when the budget has no room for another step."""
        now = time.monotonic()
        self._step_cost = (now - self._t0) / max(1, self.step - self._step0)
        if self.deadline is None:
            return False
        room = int(max(0.0, self.deadline - now - self._end_reserve()) / self._step_cost)
        fits = self.step + room
        self.total_steps = fits if self._epoch_steps is None else min(self._epoch_steps, fits)
        return room == 0

    def _end_reserve(self) -> float:
        """Seconds to keep free at a budget's end for the last evaluation and checkpoint: what an
        epoch's end took, or before one has, a forward pass over the val split (a third of a step
        per batch)."""
        if self._end_cost is not None:
            return self._end_cost
        return (self._step_cost or 0.0) * len(self.data.val_idx) / (3 * self.local_batch)

    def _eta(self) -> float:
        """Seconds until the plan's end, counting against whichever limit comes first."""
        left = max(0, self.total_steps - self.step) * (self._step_cost or 0.0) + self._end_reserve()
        if self.deadline is not None:
            left = min(left, self.deadline - time.monotonic())
        return max(0.0, left)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's share of the epoch's shuffled order; the same (seed, epoch) gives the same order."""
        n = len(self.train_x)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 100_003 + epoch))
        if self.world > 1:  # pad by wrapping so every rank gets the same number of batches
            padded = math.ceil(n / self.world) * self.world
            order = torch.cat([order, order[:padded - n]])[self.rank::self.world]
        return order.to(self.device)

    def _schedule_lr(self, *optimizers: torch.optim.Optimizer) -> None:
        """Give ``optimizers`` this step's lr from the schedule, where it changed."""
        cfg = self.config
        lr = cfg.lr * lr_factor(self.step, self.total_steps, cfg.warmup, cfg.schedule)
        if lr != self._lr:
            for optimizer in optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            self._lr = lr

    def _train_step(self, idx: torch.Tensor) -> None:
        """One optimizer step; its loss (and correct count) go to a preallocated buffer on the
        device, read back by ``_flush`` every ``log_every`` steps rather than synced each step."""
        cfg = self.config
        self._schedule_lr(self.optimizer)
        x = self.train_x[idx]  # (B, *shape)
        y = self.train_y[idx] if self.train_y is not None else None
        loss, correct = self._forward(self.net, x, y, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            if cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self._params, cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if cfg.clip_grad:
                nn.utils.clip_grad_norm_(self._params, cfg.clip_grad)
            self.optimizer.step()
        with torch.no_grad():
            slot = len(self._sizes)
            self._buffer[0, slot] = loss.detach()
            if correct is not None:
                self._buffer[1, slot] = correct
            if self.ema_model is not None:  # the decay warms up so early weights do not linger in short runs
                decay = min(cfg.ema, (1 + self.step) / (10 + self.step))
                torch._foreach_lerp_(self._ema_params, self._params, 1.0 - decay)
        self._sizes.append(len(idx))

    def _should_stop(self, nonfinite: bool, timeout: bool) -> str | None:
        """"nan", "time", a stop reason, or None; agreed by all ranks under DDP (asked only at
        flushes there, since the agreement is a collective)."""
        requested = self._stop_reason is not None or (self.stop_event is not None and self.stop_event.is_set())
        if self.world > 1:  # the ranks agree on stopping and on the plan (the shortest), so their lr stays equal
            flags = torch.tensor([nonfinite, timeout, requested, -self.total_steps], dtype=torch.float64,
                                 device=self.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            nonfinite, timeout, requested = (bool(v) for v in flags.tolist()[:3])
            self.total_steps = int(-flags[3].item())
        if nonfinite:
            return "nan"
        if requested:
            return self._stop_reason or "stop requested"
        return "time" if timeout else None

    def _nan_message(self, loss_value: float, step: int) -> str:
        last = self.run_dir / "last.pt" if self.run_dir is not None else None
        kept = (f"kept the last good checkpoint {last} (step {self._saved_step})"
                if last is not None and last.exists() and self._saved_step is not None
                else "no checkpoint had been saved yet")
        return (f"training stopped: the loss became {loss_value} at step {step} (epoch {self.epoch + 1}); "
                f"{kept}. Try a lower --lr or check the data")

    def _end_epoch(self, start: float) -> None:
        began = time.monotonic()
        train = self._train_figures()
        if self.world > 1:  # average the ranks' epoch figures
            values = torch.tensor(list(train.values()), dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(values)
            train = dict(zip(train, (values / self.world).tolist()))
        val = self.evaluate()
        self.last_metrics = {"train": train, "val": val}
        self.epoch += 1
        self.batch = 0
        self.partial = self._new_partial()
        score = self._score(val)
        improved = self.best is None or score < self.best
        if improved:
            self.best = score
        if self.main:
            for split, values in (("train", train), ("val", val)):
                line = {"epoch": self.epoch, "step": self.step, "split": split, **values}
                with open(self.run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(line) + "\n")
                self._emit({"type": "metrics", **line})
            if improved:
                self._save(self.run_dir / "best.pt", self._weights() | {"epoch": self.epoch, "step": self.step,
                                                                        "val": val})
            self._save_last(start)
            if self.events is not None and self.epoch % self.config.preview_every == 0:
                self._preview()
        self._end_cost = time.monotonic() - began

    def _train_figures(self) -> dict[str, float]:
        """The epoch's training figures from its sums: mean loss (and accuracy)."""
        count = max(1, self.partial["count"])
        train = {"loss": self.partial["loss"] / count}
        if self.config.task == "classify":
            train["accuracy"] = self.partial["correct"] / count
        return train

    def _score(self, val: dict[str, float]) -> float:
        """What best.pt minimises: the validation loss."""
        return val["loss"]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (and accuracy) over the whole val split; diffusion uses fixed noise."""
        self.model.eval()
        x_all, y_all = self.data.split("val")
        generator = torch.Generator(device=self.device).manual_seed(1234)
        total, correct = 0.0, 0
        chunk = max(256, self.local_batch)  # a training batch fits, and small samples want big chunks
        for i in range(0, len(x_all), chunk):
            x = x_all[i:i + chunk].to(self.device)
            y = y_all[i:i + chunk].to(self.device) if y_all is not None else None
            loss, right = self._forward(self.model, x, y, generator)
            total += loss.item() * len(x)
            correct += int(right) if right is not None else 0
        self.model.train()
        result = {"loss": total / len(x_all)}
        if self.config.task == "classify":
            result["accuracy"] = correct / len(x_all)
        return result

    # ------------------------------------------------------------------ checkpoints
    def _weights(self) -> dict:
        weights = {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}
        if self.ema_model is not None:
            weights["ema"] = {k: v.detach().cpu() for k, v in self.ema_model.state_dict().items()}
        return weights

    def _save_last(self, start: float) -> None:
        if not self.main:
            return
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = self._weights() | self._optimizer_states() | {
            "step": self.step, "epoch": self.epoch, "batch": self.batch, "partial": dict(self.partial),
            "best": self.best, "rng": rng, "elapsed": self.elapsed + time.monotonic() - start,
            "total_steps": self.total_steps, "config": self.config.to_dict(),
        }
        self._save(self.run_dir / "last.pt", state)
        self._saved_step, self._saved_at = self.step, time.monotonic()
        self._emit({"type": "checkpoint", "path": str(self.run_dir / "last.pt"), "step": self.step})

    def _optimizer_states(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    @staticmethod
    def _save(path: Path, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(path, buffer.getvalue())

    def _restore(self, state: dict) -> None:
        path = self.run_dir / "last.pt"
        try:
            self._restore_state(state, path)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            raise GraphError(f"{path}: damaged checkpoint: {one_line(f'{type(exc).__name__}: {exc}')[:300]}") from None
        if self.main:  # forget metric lines written after the checkpoint (a crash between the two)
            metrics = self.run_dir / "metrics.jsonl"
            write_atomic(metrics, "".join(line + "\n" for line in self._metrics_until(metrics, self.step)).encode())
            write_atomic(self.run_dir / "config.json", (json.dumps(self.config.to_dict(), indent=2) + "\n").encode())

    @staticmethod
    def _metrics_until(path: Path, step: int) -> list[str]:
        """The lines of ``metrics.jsonl`` up to ``step``; a damaged line (half written when the
        power went) is skipped with a warning rather than making the run impossible to resume."""
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []
        kept = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                logged = json.loads(line)["step"]
                if isinstance(logged, bool) or not isinstance(logged, int):
                    raise TypeError("step is not a whole number")
            except (ValueError, KeyError, TypeError, RecursionError):
                log.warning("%s: line %d is damaged (half written?) and was skipped: %.60r", path, number, line)
                continue
            if logged <= step:
                kept.append(line)
        return kept

    def _restore_state(self, state: dict, path: Path) -> None:
        self.model._load_checked(state["model"], str(path))
        if self.ema_model is not None and "ema" in state:
            self.ema_model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch = state["step"], state["epoch"], state["batch"]
        self.partial, self.best, self.elapsed = dict(state["partial"]), state["best"], state["elapsed"]
        self._saved_step = self.step
        if state["total_steps"] != self.total_steps:
            # The run was extended (or shortened): the rest of the schedule is re-planned.
            self.total_steps = max(self.total_steps, self.step + 1)
        torch.set_rng_state(state["rng"]["torch"])
        if self.rank == 0:
            self.generator.set_state(state["rng"]["generator"].to(self.generator.get_state().device))
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    # ------------------------------------------------------------------ events, previews, signals
    def _emit(self, event: dict) -> None:
        if self.events is not None and self.main:
            self.events(event)

    @torch.no_grad()
    def _preview(self) -> None:
        """A few images for the editor: reconstructions, or DDIM samples from the EMA weights (of
        vector data: points drawn over the data)."""
        if self.config.task == "diffusion" and self.data.kind == "vectors":
            self._preview_points()
            return
        if self.config.task == "classify" or len(self.shape) not in (3, 4):
            return
        model = self.ema_model or self.model
        model.eval()
        if self.config.task == "reconstruct":
            x = self.data.split("val")[0][:8].to(self.device)
            images = torch.cat([x, model(x).float().clamp(0, 1)])  # (16, C, H, W): originals, then outputs
        else:
            samples = diffusion.sample(diffusion.denoiser(model, self.doc), self.shape, self.schedule, n=16,
                                       steps=20, seed=0, device=self.device)
            images = diffusion.to_unit_range(samples)
        if images.dim() == 5:  # clips (N, C, T, H, W): show their first frames
            images = images[:, :, 0]
        self.model.train()
        images = images.float().cpu()
        self._emit({"type": "samples", "epoch": self.epoch, "step": self.step,
                    "images": (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
                    "png": diffusion.png_bytes(images, scale=2)})

    def _preview_points(self) -> None:
        """DDIM samples from the EMA weights drawn over the data: the editor's preview of vector data."""
        model = self.ema_model or self.model
        model.eval()
        raw = diffusion.sample(diffusion.denoiser(model, self.doc), self.shape, self.schedule, n=PREVIEW_POINTS,
                               steps=20, seed=0, device=self.device, clip=self.range.clip)
        self.model.train()
        points = self.range.to_data(raw.float()).cpu()
        self._emit({"type": "samples", "epoch": self.epoch, "step": self.step, "points": points.numpy(),
                    "png": diffusion.scatter_png(points, reference_points(self.data))})

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGINT/SIGTERM ask for a clean stop (checkpoint first); a second SIGINT interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self._stop_reason is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_reason = f"stop requested ({signal.Signals(signum).name})"

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)
        return restore

    def _progress_bar(self):
        if not (self.progress and self.main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                    desc=f"{self.doc.name} {self.config.task}")

    def _record_status(self, **fields) -> None:
        """Say in the run folder's status.json how the run stands (what the workspace's Runs list reads)."""
        if not self.main or self.run_dir is None or not is_run_dir(self.run_dir):
            return
        try:
            write_status(self.run_dir, **fields)
        except GraphError as exc:  # a full disk: the run itself goes on, or its own error is the one to show
            log.warning("%s", exc)

    def _finish(self, status: str, message: str, start: float) -> TrainResult:
        result = TrainResult(status, message, self.run_dir, self.epoch, self.step, dict(self.last_metrics))
        self._record_status(status=TRAINER_STATUS.get(status, "failed"), ended=timestamp(), message=message)
        self._emit({"type": "done", "status": status, "message": message, "run_dir": str(self.run_dir),
                    "epoch": self.epoch, "step": self.step, "seconds": time.monotonic() - start})
        return result


def _mean(values: list[float]) -> float:
    """The mean of the finite values (a figure that a step did not compute is NaN), or NaN if none."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def reference_points(data: Dataset, count: int = REFERENCE_POINTS) -> torch.Tensor:
    """About ``count`` training points, evenly spread over the split (a file may be sorted): what
    samples of vector data are drawn over."""
    x = data.split("train")[0]
    return x[::max(1, math.ceil(len(x) / count))]


def write_vectors(run_dir: Path, data_range: diffusion.DataRange, points: torch.Tensor) -> None:
    """The run's ``vectors.npz``: the standardisation of its vector data and reference points."""
    buffer = io.BytesIO()
    np.savez(buffer, mean=data_range.mean.numpy(), std=data_range.std.numpy(), clip=np.float64(data_range.clip),
             points=points.numpy())
    write_atomic(run_dir / VECTORS_FILE, buffer.getvalue())


def read_vectors(run_dir: str | os.PathLike) -> tuple[diffusion.DataRange, torch.Tensor] | None:
    """A vector-data run's standardisation and reference points (None: the run was trained on images)."""
    path = Path(run_dir) / VECTORS_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            mean, std, points = (torch.from_numpy(archive[key]).float() for key in ("mean", "std", "points"))
            clip = float(archive["clip"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise GraphError(f"{path}: cannot read: {one_line(str(exc))[:300]}") from None
    return diffusion.DataRange(mean, std, clip), points


def free_run_dir(name: str) -> Path:
    """``runs/NAME``, or ``runs/NAME-2``, ``-3``, … : the first that does not exist yet."""
    base = Path("runs") / name
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def check_out_dir(path: Path) -> None:
    """A new run may go into ``path`` only if it is absent, empty, or a NetCanvas run folder (it has
    the marker) without a checkpoint yet; anything else might be a user's files."""
    if not path.exists():
        return
    if not path.is_dir():
        raise GraphError(f"{path}: is a file, not a folder; choose another --out")
    if all((path / name).exists() for name in RUN_FILES):
        raise GraphError(f"{path} already holds a run: resume it with --resume {path}, or choose another --out")
    if any(path.iterdir()) and not is_run_dir(path):
        raise GraphError(f"{path}: not empty and not a NetCanvas run folder, so a run would overwrite its "
                         f"files; choose a new or empty --out")


def _load_checkpoint(path: Path, layout: dict[str, type | tuple[type, ...]]) -> dict:
    """A checkpoint's dict, loaded without running any code (``weights_only``), with the entries
    of ``layout`` present and of their types; anything else is one line naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(exc)
        if "GLOBAL" in reason:  # it names code to import: a checkpoint holds only tensors and numbers
            raise GraphError(f"{path}: refused: it would load Python objects, not only tensors ({reason})") from None
        raise GraphError(f"{path}: cannot read the checkpoint: {reason}") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise GraphError(f"{path}: cannot read the checkpoint: {one_line(str(exc))[:300]}") from None
    problem = _layout_problem(state, layout)
    if problem:
        raise GraphError(f"{path}: not a training checkpoint: {problem}")
    return state


def _unpickling_reason(exc: pickle.UnpicklingError) -> str:
    """What torch's weights-only loader refused, without its advice to load with ``weights_only=False``
    (which would run whatever the file holds) and its pointers to the docs."""
    advice = ("weights_only", "Weights only", "Check the documentation")
    lines = [line.strip() for line in str(exc).splitlines()]
    return one_line(" ".join(line for line in lines if line and not any(a in line for a in advice)))[:300] \
        or "not a checkpoint of tensors"


def _layout_problem(state: Any, layout: dict[str, type | tuple[type, ...]]) -> str | None:
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    missing = [key for key in layout if key not in state]
    if missing:
        return f"missing {', '.join(missing)}"
    wrong = [f"{key} is a {type(state[key]).__name__}" for key, kind in layout.items()
             if not isinstance(state[key], kind) or isinstance(state[key], bool)]
    if wrong:
        return ", ".join(wrong)
    for key in ("model", "ema"):
        weights = state.get(key, {})
        if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                    for k, v in weights.items()):
            return f"{key} must map names to tensors"
    return None


OWN_LOOPS = {"gan": ("graphcore.runtime.gan", "GanTrainer"),
             "alphazero": ("graphcore.runtime.selfplay", "SelfPlayTrainer"),
             "muzero": ("graphcore.runtime.muzero", "MuZeroTrainer")}
"""The tasks with a loop of their own: module and class (imported when needed: they build on this module)."""


def trainer_class(task: str) -> type[Trainer]:
    """The class whose loop trains ``task``: the GAN's, AlphaZero's or MuZero's (``OWN_LOOPS``), or the Trainer's."""
    if task not in OWN_LOOPS:
        return Trainer
    module, name = OWN_LOOPS[task]
    return getattr(importlib.import_module(module), name)


def train(graph: GraphDoc | GraphModel | str, config: TrainConfig | None = None, **kwargs) -> TrainResult:
    """Train ``graph`` (a file or a template name too) with the loop of ``config.task``: the result of
    ``fit()``."""
    if isinstance(graph, str | os.PathLike):
        from graphcore.core.gallery import open_graph
        graph = open_graph(graph)
    config = config or TrainConfig()
    return trainer_class(config.task)(graph, config, **kwargs).fit()


def run_checkpoint(run_dir: Path, checkpoint: str) -> tuple[TrainConfig, Path]:
    """A finished run folder's config and the path of its ``checkpoint`` (``last``, ``best``); one
    line naming the file that is missing."""
    path = run_dir / f"{checkpoint}.pt"
    for needed in (run_dir / "graph.json", run_dir / "config.json", path):
        if not needed.exists():
            raise GraphError(f"{run_dir}: not a finished run folder (no {needed.name})")
    return read_config(run_dir / "config.json"), path


def load_run(run_dir: str | os.PathLike, *, checkpoint: str = "last", ema: bool = True, device: str = "cpu",
             network: Callable[[GraphDoc], GraphDoc] | None = None) -> tuple[GraphModel, TrainConfig]:
    """The model of a run (EMA weights where the run kept them) and its config. ``network``: the graph
    the run trained, made from its ``graph.json`` (MuZero's three networks in one), if not that graph."""
    run_dir = Path(run_dir)
    config, path = run_checkpoint(run_dir, checkpoint)
    state = _load_checkpoint(path, WEIGHTS_PT)
    doc = load(run_dir / "graph.json")
    model = compile(network(doc) if network is not None else doc)
    model._load_checked(state["ema"] if ema and "ema" in state else state["model"], str(path))
    return model.to(pick_device(device)).eval(), config
