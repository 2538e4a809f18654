"""Background jobs for the editor: training (and sampling) in a separate process.

    job = start_training(doc, TrainConfig(task="classify", epochs=5), out="runs/lenet")
    for event in job.events():       # or job.poll() from a UI timer: never blocks
        print(event["type"], event)  # start, step, metrics, samples, checkpoint, done | error
    job.stop()                       # the trainer saves a checkpoint, then ends with "done"

Every job ends with exactly one terminal event: ``done`` or ``error``. An exception in the job
arrives as ``error`` with its message and traceback; a process that dies without a word (killed,
out of memory, a crash in native code) is noticed here and reported as ``error`` too.

The process is started with ``spawn`` (a fresh interpreter: safe next to the editor's threads
and event loop) and gets the graph as JSON, never a pickled module. It is not daemonic, since a job
may start processes of its own (an AlphaZero run's self-play workers and Inferencer, DDP's ranks),
which a daemonic process may not; so when the editor's process exits, ``_end_jobs`` asks every job
still running to stop (a training job saves its checkpoint) and kills the ones still there seconds later.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import queue as queue_module
import time
import traceback
import weakref
from collections.abc import Iterator
from typing import Any

from graphcore.core.diagnostics import GraphError, one_line
from graphcore.core.document import GraphDoc, dumps, loads
from graphcore.runtime.config import TrainConfig

TERMINAL = ("done", "error")


_LIVE: weakref.WeakSet[Job] = weakref.WeakSet()  # the jobs started by this process
EXIT_GRACE = 10.0  # seconds the jobs get to stop when the editor's process exits


@atexit.register
def _end_jobs() -> None:
    """At exit: stop the jobs still running, then kill those that did not stop in time. (Python would
    otherwise wait for their non-daemonic processes to end by themselves.)"""
    running = [job for job in list(_LIVE) if job.running]
    for job in running:
        job.stop()
    deadline = time.monotonic() + EXIT_GRACE
    for job in running:
        job.join(max(0.0, deadline - time.monotonic()))
        job.kill()


class Job:
    """A running background job: read its events, ask it to stop."""

    def __init__(self, kind: str, target_args: tuple):
        ctx = mp.get_context("spawn")
        self.kind = kind
        self._queue = ctx.Queue()
        self._stop = ctx.Event()
        self._process = ctx.Process(target=_job_main, args=(kind, *target_args, self._queue, self._stop),
                                    name=f"netcanvas-{kind}", daemon=False)
        self._process.start()
        _LIVE.add(self)
        self._finished = False
        self.last_event: dict | None = None

    # ------------------------------------------------------------------ events
    def poll(self) -> list[dict]:
        """Every event that has arrived, without waiting."""
        found = []
        while (event := self._next(timeout=0)) is not None:
            found.append(event)
        return found

    def events(self, timeout: float | None = None) -> Iterator[dict]:
        """Events as they come, until the terminal one (``done`` or ``error``).

        ``timeout`` bounds the wait for each event; when it passes the iteration just ends
        (the job goes on: call again, or ``stop``)."""
        while not self._finished:
            event = self._next(timeout=timeout)
            if event is None:
                return
            yield event

    def _next(self, timeout: float | None) -> dict | None:
        if self._finished:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
                event = self._queue.get(timeout=wait)
            except queue_module.Empty:
                if not self._process.is_alive():
                    try:  # the feeder may still be flushing the last events
                        event = self._queue.get(timeout=1.0)
                    except queue_module.Empty:
                        return self._record({"type": "error", "kind": self.kind,
                                             "message": f"the {self.kind} process ended without a word "
                                                        f"({_exit_reason(self._process.exitcode)})",
                                             "traceback": None})
                elif deadline is not None and time.monotonic() >= deadline:
                    return None
                else:
                    continue
            return self._record(event)

    def _record(self, event: dict) -> dict:
        self.last_event = event
        if event.get("type") in TERMINAL:
            self._finished = True
        return event

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the job to stop; a training job saves its checkpoint first, then sends ``done``."""
        self._stop.set()

    def kill(self) -> None:
        """End the process at once (no checkpoint); an ``error`` event reports it."""
        if self._process.is_alive():
            self._process.kill()

    def join(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        return self._process.exitcode

    @property
    def running(self) -> bool:
        return self._process.is_alive()

    @property
    def finished(self) -> bool:
        """True once the terminal event has been read."""
        return self._finished

    @property
    def pid(self) -> int | None:
        return self._process.pid


def start_training(graph: GraphDoc, config: TrainConfig, *, out: str | os.PathLike | None = None,
                   resume: str | os.PathLike | None = None) -> Job:
    """Train in a separate process; ``resume`` continues that run folder (``config.epochs`` as the new total)."""
    return Job("training", (dumps(graph), config.to_dict(), str(out) if out else None,
                            str(resume) if resume else None))


def start_sampling(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, sampler: str = "ddim",
                   steps: int = 50, n: int = 16, seed: int = 0, preview_every: int = 1) -> Job:
    """Sample from a diffusion run in a separate process, with a ``step`` event (the current
    x0 prediction as images; for vector data the current points drawn over the data) every
    ``preview_every`` denoising steps: the editor's live preview.
    The files go to ``out`` (default: a new ``run_dir/samples/STAMP/``); the ``done`` event names
    the ``folder`` and its ``files``."""
    options = {"sampler": sampler, "steps": steps, "n": n, "seed": seed, "preview_every": preview_every}
    return Job("sampling", (str(run_dir), str(out) if out is not None else None, options))


def _job_main(kind: str, *args: Any) -> None:
    *payload, events, stop = args
    try:
        if kind == "training":
            _train_job(*payload, events.put, stop)
        else:
            _sample_job(*payload, events.put, stop)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the editor
        message = "; ".join(str(d) for d in exc.diagnostics) if isinstance(exc, GraphError) else \
            one_line(f"{type(exc).__name__}: {exc}")
        events.put({"type": "error", "kind": kind, "message": message,
                    "traceback": None if isinstance(exc, GraphError) else traceback.format_exc()})
    finally:
        events.close()
        events.join_thread()


def _train_job(doc_json: str, config: dict, out: str | None, resume: str | None, emit, stop) -> None:
    from graphcore.runtime.train import Trainer, trainer_class

    if resume:
        trainer = Trainer.resume(resume, epochs=config.get("epochs"), minutes=config.get("minutes"),
                                 events=emit, stop_event=stop)
    else:
        settings = TrainConfig.from_dict(config)
        trainer = trainer_class(settings.task)(loads(doc_json), settings, out=out, events=emit, stop_event=stop)
    trainer.fit()  # sends start … done itself


def _sample_job(run_dir: str, out: str | None, options: dict, emit, stop) -> None:
    import torch

    from graphcore.runtime import diffusion
    from graphcore.runtime.sample import sample_run
    from graphcore.runtime.train import read_vectors

    every = max(1, options.pop("preview_every"))
    started = time.monotonic()
    vectors = read_vectors(run_dir)

    def on_step(i: int, steps: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
        if stop.is_set():
            raise _Stopped
        if (i + 1) % every == 0 or i + 1 == steps:
            if vectors is not None:  # the points themselves, moving from noise to the data's shape
                points = vectors[0].to_data(x_t.float().cpu())
                emit({"type": "step", "step": i + 1, "steps": steps, "points": points.numpy(),
                      "png": diffusion.scatter_png(points, vectors[1])})
                return
            images = diffusion.to_unit_range(x0.float().cpu())
            if images.dim() == 5:  # clips: preview their first frames
                images = images[:, :, 0]
            emit({"type": "step", "step": i + 1, "steps": steps,
                  "images": (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
                  "png": diffusion.png_bytes(images, scale=2)})

    emit({"type": "start", "run_dir": run_dir, "steps": options["steps"], "n": options["n"]})
    try:
        result = sample_run(run_dir, out, callback=on_step, **options)
    except _Stopped:
        emit({"type": "done", "status": "stopped", "message": "sampling stopped", "files": []})
        return
    emit({"type": "done", "status": "finished", "message": f"wrote {result.folder}",
          "seconds": time.monotonic() - started, "folder": str(result.folder), "files": [str(f) for f in result.files]})


class _Stopped(Exception):
    pass


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        import signal
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
