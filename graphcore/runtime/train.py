"""Training a graph: classify, reconstruct or diffusion, on a run folder that can be resumed.

    trainer = Trainer(gc.template("lenet5"), TrainConfig(task="classify", epochs=10), out="runs/lenet")
    result = trainer.fit()          # TrainResult(status, message, run_dir, epoch, step, metrics)

A run folder holds ``graph.json``, ``config.json``, ``last.pt`` (everything needed to continue:
weights, optimizer, step, RNG state, position in the epoch), ``best.pt`` (the weights with the
best validation score) and ``metrics.jsonl`` (one line per epoch and split). ``Trainer.resume``
continues a run exactly where it stopped.

The learning rate follows a function of the global step (linear warm-up, then cosine decay
to zero, or constant), so the schedule's whole state is the step counter and the plan.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel; each
process takes its own share of every epoch's shuffled order, and only rank 0 writes.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graphcore.core.compiler import GraphModel, compile
from graphcore.core.diagnostics import GraphError, one_line
from graphcore.core.document import GraphDoc, dumps, load, write_atomic
from graphcore.runtime import diffusion
from graphcore.runtime.config import TrainConfig, TrainResult, check_task
from graphcore.runtime.data import load_dataset
from graphcore.runtime.devices import amp_dtype, pick_device

EventSink = Callable[[dict], None]


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
    """Trains one graph on one dataset into one run folder; see the module docstring."""

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
        for name in ("graph.json", "config.json", "last.pt"):
            if not (run_dir / name).exists():
                raise GraphError(f"{run_dir}: not a run folder to resume (no {name})")
        config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        config.minutes = minutes
        if epochs is not None:
            config.epochs = epochs
        if device is not None:
            config.device = device
        trainer = cls(load(run_dir / "graph.json"), config, out=run_dir, **kwargs)
        trainer._resume_state = _load_checkpoint(run_dir / "last.pt")
        return trainer

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.config
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        self.main = self.rank == 0
        self.device = pick_device(cfg.device)
        io_ = check_task(self.doc, cfg.task)
        self.shape = io_.sample_shape(cfg.task)
        self.data = load_dataset(cfg.dataset, self.shape, val_fraction=cfg.val_fraction)
        check_task(self.doc, cfg.task, self.data)
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            torch.distributed.init_process_group(backend)
        if self.model is None:
            self.model = compile(self.doc).init(seed=cfg.seed)
        self.schedule = diffusion.Schedule(cfg.beta_schedule, cfg.timesteps) if cfg.task == "diffusion" else None
        train_x, train_y = self.data.split("train")
        self._preflight(train_x[:2])
        self.amp = amp_dtype(self.device, cfg.amp)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the batch shape is fixed, so the autotuned kernels are reused
        self.channels_last = self.device.type == "cuda" and len(self.shape) in (3, 4)
        layout = torch.channels_last if len(self.shape) == 3 else torch.channels_last_3d
        self.model.to(self.device, memory_format=layout if self.channels_last else torch.preserve_format)
        self.layout = layout
        self.net: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False) if cfg.ema else None
        self.optimizer = self._optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        # Samples on the device; shuffled orders come from (seed, epoch) so they need no saved state.
        self.train_x, self.train_y = train_x.to(self.device), train_y.to(self.device) if train_y is not None else None
        self.local_batch = max(1, cfg.batch_size // self.world)
        per_rank = math.ceil(len(train_x) / self.world)
        self.steps_per_epoch = math.ceil(per_rank / self.local_batch)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed * 1000 + self.rank)
        self._params = list(self.model.parameters())
        self._ema_params = list(self.ema_model.parameters()) if self.ema_model is not None else []
        self._nan: tuple[float, int] | None = None  # (loss, step) of the first non-finite loss
        self._buffer = torch.zeros(2, cfg.log_every, device=self.device)  # per-step loss, correct count
        self._sizes: list[int] = []  # batch sizes of the steps not yet flushed
        self._lr: float | None = None
        self.step = self.epoch = self.batch = 0
        self.partial = {"loss": 0.0, "correct": 0, "count": 0}
        self.best: float | None = None
        self.elapsed = 0.0
        if self._resume_state is not None:
            self._restore(self._resume_state)
        elif self.main:
            self._create_run_dir()

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
            base = Path("runs") / self.doc.name
            self.run_dir, n = base, 2
            while self.run_dir.exists():
                self.run_dir, n = base.with_name(f"{base.name}-{n}"), n + 1
        if (self.run_dir / "last.pt").exists():
            raise GraphError(f"{self.run_dir} already holds a run: resume it with --resume {self.run_dir}, "
                             f"or choose another --out")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GraphError(f"{self.run_dir}: cannot create the run folder: {exc.strerror or exc}") from None
        write_atomic(self.run_dir / "graph.json", dumps(self.doc).encode())
        write_atomic(self.run_dir / "config.json", (json.dumps(self.config.to_dict(), indent=2) + "\n").encode())
        (self.run_dir / "metrics.jsonl").write_text("")

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
                if self.schedule is not None:
                    t = torch.tensor([0, self.schedule.timesteps - 1][:len(x)], device=x.device)
                    diffusion.denoiser(self.model, self.doc)(diffusion.to_model_range(x), t)
                else:
                    self.model(x)
        except GraphError:
            raise
        except Exception as exc:  # a shape the rules allowed but the modules refuse, an id out of range, …
            raise GraphError(f"graph {self.doc.name!r} fails on a batch of the dataset: "
                             f"{one_line(f'{type(exc).__name__}: {exc}')[:300]}") from None
        finally:
            self.model.train(training)

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
        return self.schedule.loss(diffusion.denoiser(net, self.doc), diffusion.to_model_range(x), generator,
                                  weighting=self.config.loss_weighting), None

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Train until the planned epochs, the time budget, a stop request or a NaN loss."""
        self._setup()
        cfg = self.config
        start = time.monotonic()
        restore_signals = self._install_signal_handlers()
        bar = self._progress_bar()
        self._emit({"type": "start", "run_dir": str(self.run_dir), "epochs": cfg.epochs, "step": self.step,
                    "total_steps": self.total_steps, "device": str(self.device), "task": cfg.task})
        status, message = "finished", ""
        self._window: list[float] = []  # losses since the last "step" event
        try:
            while self.epoch < cfg.epochs:
                order = self._epoch_order(self.epoch)
                self.net.train()
                while self.batch < self.steps_per_epoch:
                    idx = order[self.batch * self.local_batch:(self.batch + 1) * self.local_batch]
                    self._train_step(idx)
                    self.step += 1
                    self.batch += 1
                    if self.on_step is not None:
                        self.on_step(self)
                    due = len(self._sizes) >= cfg.log_every or self.batch == self.steps_per_epoch
                    stop_reason = None
                    if due:  # the one host sync of the window: losses, NaN check, events, DDP agreement
                        stop_reason = self._should_stop(start, self._flush(bar))
                    elif self.world == 1:  # cheap without DDP: a stop or the time limit acts at once
                        stop_reason = self._should_stop(start, False)
                        if stop_reason is not None and self._flush(bar):  # settle the window before saving
                            stop_reason = "nan"
                    if stop_reason == "nan":
                        loss_value, at = self._nan or (float("nan"), self.step + 1)  # (another rank's NaN)
                        return self._finish("nan", self._nan_message(loss_value, at), start)
                    if stop_reason is not None:
                        status = "time_limit" if stop_reason == "time" else "stopped"
                        self._save_last(start)
                        why = f"time budget of {cfg.minutes:g} min used" if status == "time_limit" else stop_reason
                        return self._finish(status, f"stopped at step {self.step} (epoch {self.epoch + 1}): {why}; "
                                                    f"saved {self.run_dir / 'last.pt'}", start)
                self._end_epoch(start)
            val = self.last_metrics.get("val", {})
            summary = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if k in ("loss", "accuracy"))
            message = f"finished {cfg.epochs} epochs ({self.step} steps): val {summary}; run in {self.run_dir}"
            return self._finish(status, message, start)
        finally:
            if bar is not None:
                bar.close()
            restore_signals()
            if self.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    def _flush(self, bar) -> bool:
        """Read the losses of the steps since the last flush (one host sync), add them to the
        epoch's figures, send "step" events; True (and ``self._nan``) if one was not finite."""
        n, sizes = len(self._sizes), self._sizes
        values = self._buffer[:, :n].tolist()  # [[loss per step], [correct per step]]
        self._sizes = []
        first = self.step - n  # the step count before the window
        for i, (loss_value, correct, size) in enumerate(zip(values[0], values[1], sizes)):
            if not math.isfinite(loss_value):
                self.step, self.batch = first + i, self.batch - (n - i)
                self._nan = (loss_value, first + i + 1)
                return True
            self.partial["loss"] += loss_value * size
            self.partial["correct"] += int(correct)
            self.partial["count"] += size
            self._window.append(loss_value)
            if len(self._window) >= self.config.log_every:
                mean, lr = sum(self._window) / len(self._window), self.optimizer.param_groups[0]["lr"]
                self._emit({"type": "step", "step": first + i + 1, "epoch": self.epoch, "loss": mean, "lr": lr})
                if bar is not None:
                    bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}", refresh=False)
                self._window = []
        if bar is not None:
            bar.update(n)
        return False

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's share of the epoch's shuffled order; the same (seed, epoch) gives the same order."""
        n = len(self.train_x)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 100_003 + epoch))
        if self.world > 1:  # pad by wrapping so every rank gets the same number of batches
            padded = math.ceil(n / self.world) * self.world
            order = torch.cat([order, order[:padded - n]])[self.rank::self.world]
        return order.to(self.device)

    def _train_step(self, idx: torch.Tensor) -> None:
        """One optimizer step; its loss (and correct count) go to a preallocated buffer on the
        device, read back by ``_flush`` every ``log_every`` steps rather than synced each step."""
        cfg = self.config
        lr = cfg.lr * lr_factor(self.step, self.total_steps, cfg.warmup, cfg.schedule)
        if lr != self._lr:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._lr = lr
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

    def _should_stop(self, start: float, nonfinite: bool) -> str | None:
        """"nan", "time", a stop reason, or None; agreed by all ranks under DDP (asked only at
        flushes there, since the agreement is a collective)."""
        timeout = self.config.minutes is not None and time.monotonic() - start >= self.config.minutes * 60
        requested = self._stop_reason is not None or (self.stop_event is not None and self.stop_event.is_set())
        if self.world > 1:
            flags = torch.tensor([nonfinite, timeout, requested], dtype=torch.float32, device=self.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            nonfinite, timeout, requested = (bool(v) for v in flags.tolist())
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
        count = max(1, self.partial["count"])
        train = {"loss": self.partial["loss"] / count}
        if self.config.task == "classify":
            train["accuracy"] = self.partial["correct"] / count
        if self.world > 1:  # average the ranks' epoch figures
            values = torch.tensor(list(train.values()), dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(values)
            train = dict(zip(train, (values / self.world).tolist()))
        val = self.evaluate()
        self.last_metrics = {"train": train, "val": val}
        self.epoch += 1
        self.batch = 0
        self.partial = {"loss": 0.0, "correct": 0, "count": 0}
        score = val["loss"]
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

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (and accuracy) over the whole val split; diffusion uses fixed noise."""
        self.model.eval()
        x_all, y_all = self.data.split("val")
        generator = torch.Generator(device=self.device).manual_seed(1234)
        total, correct = 0.0, 0
        for i in range(0, len(x_all), 256):
            x = x_all[i:i + 256].to(self.device)
            y = y_all[i:i + 256].to(self.device) if y_all is not None else None
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
        state = self._weights() | {
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch": self.batch, "partial": dict(self.partial),
            "best": self.best, "rng": rng, "elapsed": self.elapsed + time.monotonic() - start,
            "total_steps": self.total_steps, "config": self.config.to_dict(),
        }
        self._save(self.run_dir / "last.pt", state)
        self._saved_step = self.step
        self._emit({"type": "checkpoint", "path": str(self.run_dir / "last.pt"), "step": self.step})

    @staticmethod
    def _save(path: Path, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(path, buffer.getvalue())

    def _restore(self, state: dict) -> None:
        self.model._load_checked(state["model"], str(self.run_dir / "last.pt"))
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
        if self.main:  # forget metric lines written after the checkpoint (a crash between the two)
            path = self.run_dir / "metrics.jsonl"
            lines = [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
            kept = [line for line in lines if json.loads(line)["step"] <= self.step]
            path.write_text("".join(line + "\n" for line in kept))
            write_atomic(self.run_dir / "config.json", (json.dumps(self.config.to_dict(), indent=2) + "\n").encode())

    # ------------------------------------------------------------------ events, previews, signals
    def _emit(self, event: dict) -> None:
        if self.events is not None and self.main:
            self.events(event)

    @torch.no_grad()
    def _preview(self) -> None:
        """A few images for the editor: reconstructions, or DDIM samples from the EMA weights."""
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

    def _finish(self, status: str, message: str, start: float) -> TrainResult:
        result = TrainResult(status, message, self.run_dir, self.epoch, self.step, dict(self.last_metrics))
        self._emit({"type": "done", "status": status, "message": message, "run_dir": str(self.run_dir),
                    "epoch": self.epoch, "step": self.step, "seconds": time.monotonic() - start})
        return result


def _load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise GraphError(f"{path}: cannot read the checkpoint: {exc}".splitlines()[0]) from None


def train(graph: GraphDoc | GraphModel | str, config: TrainConfig | None = None, **kwargs) -> TrainResult:
    """``Trainer(graph, config, **kwargs).fit()``; ``graph`` may be a file or a template name."""
    if isinstance(graph, str | os.PathLike):
        from graphcore.core.gallery import open_graph
        graph = open_graph(graph)
    return Trainer(graph, config, **kwargs).fit()


def load_run(run_dir: str | os.PathLike, *, checkpoint: str = "last", ema: bool = True,
             device: str = "cpu") -> tuple[GraphModel, TrainConfig]:
    """The model of a run (EMA weights where the run kept them) and its config."""
    run_dir = Path(run_dir)
    path = run_dir / f"{checkpoint}.pt"
    for needed in (run_dir / "graph.json", run_dir / "config.json", path):
        if not needed.exists():
            raise GraphError(f"{run_dir}: not a finished run folder (no {needed.name})")
    config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    state = _load_checkpoint(path)
    model = compile(load(run_dir / "graph.json"))
    model._load_checked(state["ema"] if ema and "ema" in state else state["model"], str(path))
    return model.to(pick_device(device)).eval(), config
