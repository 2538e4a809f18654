"""Training and sampling panels (bottom drawer): background jobs from ``graphcore.runtime.jobs``.

A job runs in its own process and streams events; a UI timer polls them (never blocking),
so the page stays responsive and every tab has its own jobs.
"""

from __future__ import annotations

import base64
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nicegui import events, run, ui

from graphcore.core.diagnostics import GraphError
from graphcore.core.names import identifier
from graphcore.runtime.config import TASKS, TrainConfig, guess_task
from graphcore.runtime.jobs import Job, start_sampling, start_training

if TYPE_CHECKING:
    from app.editor import Editor

RUNS_DIR = Path("runs")
POLL_SECONDS = 0.25


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def device_options() -> dict[str, str]:
    """Devices to offer; CUDA ones are named after their GPU."""
    import torch

    options = {"auto": "auto", "cpu": "CPU"}
    for i in range(torch.cuda.device_count()):
        options[f"cuda:{i}"] = f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        options["mps"] = "Apple GPU (mps)"
    return options


def run_name(graph_name: str) -> str:
    return f"{identifier(graph_name, 'graph')}-{datetime.now():%Y%m%d-%H%M%S}"


class JobPanel:
    """What the Train and Sample panels share: one background job at a time, its Start/Stop
    buttons and the timer that polls its events. Subclasses make ``start_button``,
    ``stop_button`` and ``status`` and define ``_poll``."""

    job: Job | None
    start_button: ui.button
    stop_button: ui.button
    status: ui.label
    timer: ui.timer

    def _begin(self, job: Job, status: str) -> None:
        self.job = job
        self.status.text = status
        self.start_button.set_enabled(False)
        self.stop_button.set_enabled(True)
        self.timer.activate()

    def _end_if_finished(self) -> None:
        if self.job is not None and self.job.finished:
            self.timer.deactivate()
            self.start_button.set_enabled(True)
            self.stop_button.set_enabled(False)


class TrainPanel(JobPanel):
    """Settings, Start/Stop, a live loss/accuracy chart, progress with ETA, log, finished runs."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self.job: Job | None = None
        self.runs: list[dict[str, Any]] = []  # finished runs of this tab: run_dir, task, metrics
        self.started_at = 0.0
        with ui.row().classes("w-full items-start gap-4 no-wrap"):
            with ui.column().classes("gap-1 w-64"):
                self.task = ui.select(list(TASKS), label="task", value="classify").props("dense outlined") \
                    .classes("w-full").mark("train-task")
                self.dataset = ui.input("dataset", value="digits").props("dense outlined").classes("w-full") \
                    .mark("train-dataset").tooltip("digits, a folder of class folders of images, or an .npz file")
                ui.upload(label="or upload .npz", auto_upload=True, on_upload=self._uploaded) \
                    .props("dense flat accept=.npz").classes("w-full")
                with ui.row().classes("gap-1 no-wrap"):
                    self.epochs = ui.number("epochs", value=5, min=1, precision=0).props("dense outlined") \
                        .classes("w-20").mark("train-epochs")
                    self.minutes = ui.number("minutes", value=None, min=0).props("dense outlined") \
                        .classes("w-20").mark("train-minutes")
                    self.batch = ui.number("batch", value=64, min=1, precision=0).props("dense outlined") \
                        .classes("w-20").mark("train-batch")
                with ui.row().classes("gap-1 no-wrap"):
                    self.lr = ui.number("lr (blank: default)", value=None, format="%.2g").props("dense outlined") \
                        .classes("w-28").mark("train-lr")
                    self.device = ui.select(device_options(), label="device", value="auto").props("dense outlined") \
                        .classes("w-32").mark("train-device")
                with ui.row().classes("gap-1"):
                    self.start_button = ui.button("Start", icon="play_arrow", on_click=self.start).mark("train-start")
                    self.stop_button = ui.button("Stop", icon="stop", on_click=self.stop).props("outline") \
                        .mark("train-stop")
                    self.stop_button.set_enabled(False)
            with ui.column().classes("gap-1 flex-grow"):
                self.progress = ui.linear_progress(value=0, show_value=False).classes("w-full").mark("train-progress")
                self.status = ui.label("Not started.").classes("text-sm").mark("train-status")
                self.chart = ui.echart(self._chart_options()).classes("w-full h-44").mark("train-chart")
            with ui.column().classes("gap-1 w-80"):
                self.preview = ui.image().classes("w-40").mark("train-preview")
                self.preview.set_visibility(False)
                self.log = ui.log(max_lines=300).classes("w-full h-32 text-xs").mark("train-log")
                self.finished = ui.column().classes("gap-0").mark("train-runs")
        self.timer = ui.timer(POLL_SECONDS, self._poll, active=False)

    @staticmethod
    def _chart_options() -> dict:
        return {
            "animation": False,
            "grid": {"left": 45, "right": 45, "top": 25, "bottom": 25},
            "legend": {"top": 0, "textStyle": {"fontSize": 10}},
            "tooltip": {"trigger": "axis"},
            "xAxis": {"type": "value", "name": "step", "nameGap": 4, "minInterval": 1},
            "yAxis": [{"type": "value", "name": "loss", "scale": True},
                      {"type": "value", "name": "accuracy", "min": 0, "max": 1}],
            "series": [
                {"name": "train loss", "type": "line", "showSymbol": False, "data": []},
                {"name": "val loss", "type": "line", "data": []},
                {"name": "val accuracy", "type": "line", "yAxisIndex": 1, "data": []},
            ],
        }

    def config(self) -> TrainConfig:
        return TrainConfig(task=self.task.value, dataset=(self.dataset.value or "digits").strip(),
                           epochs=int(self.epochs.value or 1), minutes=self.minutes.value or None,
                           batch_size=int(self.batch.value or 64), lr=self.lr.value or None,
                           device=self.device.value or "auto")

    def prepare(self) -> None:
        """Called when a document is opened: guess the task it is made for."""
        try:
            self.task.value = guess_task(self.editor.session.doc)
        except GraphError:
            pass

    async def _uploaded(self, e: events.UploadEventArguments) -> None:
        folder = Path(tempfile.mkdtemp(prefix="netcanvas-data-"))
        target = folder / Path(e.file.name).name
        await e.file.save(target)
        self.dataset.value = str(target)
        ui.notify(f"Dataset {e.file.name} uploaded")

    def start(self) -> None:
        if self.job is not None and self.job.running:
            return
        doc = self.editor.session.doc
        try:
            config = self.config()
        except GraphError as exc:
            ui.notify(str(exc), type="negative")
            return
        out = RUNS_DIR / run_name(doc.name)
        self.chart.options.update(self._chart_options())
        self.chart.update()
        self.log.clear()
        self.progress.value = 0
        self.log.push(f"starting {config.task} on {config.dataset}, {config.epochs} epoch(s) -> {out}")
        self._begin(start_training(doc.model_copy(deep=True), config, out=out), "Starting (a fresh Python process)…")
        self.started_at = time.monotonic()

    def stop(self) -> None:
        if self.job is not None and self.job.running:
            self.job.stop()
            self.status.text = "Stopping: saving a checkpoint…"
            self.log.push("stop requested")

    def _poll(self) -> None:
        if self.job is None:
            return
        new = self.job.poll()
        for event in new:
            self._event(event)
        self._end_if_finished()
        if new:
            self.chart.update()

    def _event(self, event: dict) -> None:
        kind = event.get("type")
        series = self.chart.options["series"]
        if kind == "start":
            self.total = event.get("total_steps") or 1
            self.status.text = f"Training on {event.get('device')}…"
            self.log.push(f"run folder {event.get('run_dir')}, {self.total} steps on {event.get('device')}")
        elif kind == "step":
            series[0]["data"].append([event["step"], round(event["loss"], 5)])
            done = event["step"] / max(1, getattr(self, "total", 1))
            self.progress.value = min(1.0, done)
            elapsed = time.monotonic() - self.started_at
            eta = elapsed * (1 - done) / done if done > 0 else 0
            self.status.text = (f"epoch {event['epoch'] + 1}, step {event['step']}/{self.total}, "
                                f"loss {event['loss']:.4f} · ETA {eta:.0f} s")
        elif kind == "metrics":
            if event.get("split") == "val":
                series[1]["data"].append([event["step"], round(event["loss"], 5)])
                if "accuracy" in event:
                    series[2]["data"].append([event["step"], round(event["accuracy"], 4)])
            described = ", ".join(f"{k} {v:.4g}" for k, v in event.items()
                                  if k not in ("type", "epoch", "step", "split") and isinstance(v, int | float))
            self.log.push(f"epoch {event['epoch'] + 1} {event.get('split')}: {described}")
        elif kind == "samples" and event.get("png"):
            self.preview.set_source(data_url(event["png"]))
            self.preview.set_visibility(True)
        elif kind == "checkpoint":
            self.log.push(f"checkpoint {event.get('path')}")
        elif kind == "done":
            self.progress.value = 1.0 if event.get("status") == "finished" else self.progress.value
            self.status.text = f"{event.get('status')}: {event.get('message') or 'done'}"
            self.log.push(f"done ({event.get('status')}) {event.get('message') or ''}")
            self._finished_run(event)
        elif kind == "error":
            self.status.text = f"Failed: {event.get('message')}"
            self.status.classes("text-red-8")
            self.log.push(f"error: {event.get('message')}")

    def _finished_run(self, event: dict) -> None:
        if not event.get("run_dir"):
            return
        metrics = self.chart.options["series"][1]["data"]
        entry = {"run_dir": event["run_dir"], "task": self.task.value, "status": event.get("status"),
                 "val_loss": metrics[-1][1] if metrics else None}
        self.runs.append(entry)
        with self.finished:
            loss = f", val loss {entry['val_loss']:.4g}" if entry["val_loss"] is not None else ""
            ui.label(f"{entry['run_dir']} ({entry['task']}, {entry['status']}{loss})").classes("text-xs")
        self.editor.sample_panel.add_run(entry)


class SamplePanel(JobPanel):
    """Diffusion sampling from a finished run: sampler, steps, count, seed, a live grid, interpolation."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self.job: Job | None = None
        with ui.row().classes("w-full items-start gap-4 no-wrap"):
            with ui.column().classes("gap-1 w-64"):
                self.run_dir = ui.input("run folder (a diffusion run)").props("dense outlined").classes("w-full") \
                    .mark("sample-run")
                with ui.row().classes("gap-1 no-wrap"):
                    self.sampler = ui.select(["ddim", "ddpm"], label="sampler", value="ddim") \
                        .props("dense outlined").classes("w-24").mark("sample-sampler")
                    self.steps = ui.number("steps", value=50, min=1, precision=0).props("dense outlined") \
                        .classes("w-20").mark("sample-steps")
                with ui.row().classes("gap-1 no-wrap"):
                    self.count = ui.number("count", value=16, min=1, precision=0).props("dense outlined") \
                        .classes("w-20").mark("sample-count")
                    self.seed = ui.number("seed", value=0, precision=0).props("dense outlined").classes("w-20") \
                        .mark("sample-seed")
                with ui.row().classes("gap-1"):
                    self.start_button = ui.button("Sample", icon="auto_awesome", on_click=self.start) \
                        .mark("sample-start")
                    self.stop_button = ui.button("Stop", icon="stop", on_click=self.stop).props("outline")
                    self.stop_button.set_enabled(False)
                ui.button("Interpolate seed → seed+1", on_click=self.interpolate).props("flat dense no-caps") \
                    .mark("sample-interpolate")
            with ui.column().classes("gap-1"):
                self.status = ui.label("Train a diffusion graph (e.g. unet_ddpm_small), then sample it here.") \
                    .classes("text-sm").mark("sample-status")
                self.grid = ui.image().classes("w-64").mark("sample-grid")
                self.grid.set_visibility(False)
            with ui.column().classes("gap-1"):
                self.frames: list[str] = []
                self.frame = ui.image().classes("w-32")
                self.frame.set_visibility(False)
                self.slider = ui.slider(min=0, max=7, value=0, on_change=self._show_frame).classes("w-32")
                self.slider.set_visibility(False)
        self.timer = ui.timer(POLL_SECONDS, self._poll, active=False)

    def add_run(self, entry: dict) -> None:
        if entry["task"] == "diffusion":
            self.run_dir.value = entry["run_dir"]

    def start(self) -> None:
        if not self.run_dir.value:
            ui.notify("Choose a finished diffusion run folder first", type="warning")
            return
        out = Path(tempfile.mkdtemp(prefix="netcanvas-samples-"))
        job = start_sampling(self.run_dir.value, out, sampler=self.sampler.value, steps=int(self.steps.value or 50),
                             n=int(self.count.value or 16), seed=int(self.seed.value or 0))
        self._begin(job, "Starting…")

    def stop(self) -> None:
        if self.job is not None and self.job.running:
            self.job.stop()

    def _poll(self) -> None:
        if self.job is None:
            return
        for event in self.job.poll():
            kind = event.get("type")
            if kind == "step":
                self.grid.set_source(data_url(event["png"]))
                self.grid.set_visibility(True)
                self.status.text = f"denoising step {event['step']}/{event['steps']}"
            elif kind == "done":
                self.status.text = event.get("message") or "done"
            elif kind == "error":
                self.status.text = f"Failed: {event.get('message')}"
        self._end_if_finished()

    async def interpolate(self) -> None:
        if not self.run_dir.value:
            ui.notify("Choose a finished diffusion run folder first", type="warning")
            return
        seed = int(self.seed.value or 0)
        self.status.text = f"Interpolating between seeds {seed} and {seed + 1}…"
        try:
            self.frames = await run.io_bound(_interpolation_frames, self.run_dir.value, seed,
                                             int(self.steps.value or 50))
        except GraphError as exc:
            self.status.text = f"Failed: {exc}"
            return
        self.slider.props(f"max={len(self.frames) - 1}")
        self.slider.set_visibility(True)
        self.frame.set_visibility(True)
        self.slider.value = 0
        self._show_frame()
        self.status.text = f"Interpolation between seeds {seed} and {seed + 1}: move the slider"

    def _show_frame(self, *_: Any) -> None:
        if self.frames:
            self.frame.set_source(self.frames[int(self.slider.value or 0)])


def _interpolation_frames(run_dir: str, seed: int, steps: int, frames: int = 8) -> list[str]:
    """DDIM samples along the path between two seeds' noises, one PNG data URL a frame (in a thread)."""
    from graphcore.runtime import diffusion
    from graphcore.runtime.config import GraphIO
    from graphcore.runtime.train import load_run

    model, config = load_run(run_dir)
    if config.task != "diffusion":
        raise GraphError(f"{run_dir}: not a diffusion run")
    shape = GraphIO.of(model.doc).sample_shape("diffusion")
    schedule = diffusion.Schedule(config.beta_schedule, config.timesteps)
    path = diffusion.interpolate(diffusion.denoiser(model), shape, schedule, seed_a=seed, seed_b=seed + 1,
                                 frames=frames, steps=min(steps, 50))
    images = diffusion.to_unit_range(path.float())
    if images.dim() == 5:
        images = images[:, :, 0]
    return [data_url(diffusion.png_bytes(images[i:i + 1], scale=4)) for i in range(frames)]
