"""The bottom drawer's Training, Runs and Samples panels.

Jobs belong to the server (``app.jobs.JOBS``), runs to the workspace (``Workspace.runs()``, read
from disk): a panel follows a job's event history from its own position, so a job started in one
tab shows, with its whole chart, in another tab and after a reload, and any tab can stop it.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nicegui import events, run, ui

from app.jobs import JOBS, JobBusy, Tracked, record_failure
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import load
from graphcore.runtime.config import TASK_DEFAULTS, TASKS, TrainConfig, guess_task, read_config, task_config
from graphcore.runtime.jobs import start_sampling, start_training

if TYPE_CHECKING:
    from app.editor import Editor
    from graphcore.runtime.workspace import RunEntry

POLL_SECONDS = 0.25
RUNS_REFRESH_SECONDS = 2.0
RUNS_SHOWN = 100  # most recent first
SAMPLES_SHOWN = 24
FRESH = "fresh"
IMPORTED = "imported"
SAMPLE_FILES = ("grid.png", "scatter.png", "samples.npy", "clip.gif")
PICTURES = ("grid.png", "scatter.png")  # what a saved sample's card shows: images or points over the data
SAMPLED_TASKS = ("diffusion", "gan")  # the runs the Samples panel draws from


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


def weight_choices(editor: Editor, graph: str, imported: bool = True) -> dict[str, str]:
    """The weights a model of ``graph`` can start from or be exported with: fresh, the tab's
    imported ones (when it has them and ``imported``), each of the graph's runs' best and last."""
    choices = {FRESH: "fresh (random) weights"}
    if imported and editor.has_imported_weights():
        choices[IMPORTED] = "imported weights (from the opened ONNX file)"
    for entry in runs_of(editor, graph):
        for checkpoint in ("best", "last"):
            if (entry.path / f"{checkpoint}.pt").is_file():
                choices[str(entry.path / f"{checkpoint}.pt")] = f"run {entry.name}: {checkpoint}"
    return choices


def weights_file(editor: Editor, choice: str) -> Path | None:
    """The .pt file behind a ``weight_choices`` key; None for fresh weights."""
    if choice == FRESH:
        return None
    if choice == IMPORTED:
        if editor.weights_key is None:
            raise GraphError("this tab has no imported weights (open an .onnx file with weights)")
        return editor.workspace.weights_path(editor.weights_key)  # kept there since the import
    return Path(choice)


def runs_of(editor: Editor, graph: str | None = None) -> list[RunEntry]:
    """The workspace's runs (of ``graph``), most recent first; unreadable ones included."""
    entries = editor.workspace.runs()
    return [e for e in entries if graph is None or e.graph == graph][:RUNS_SHOWN]


def read_metrics(run_dir: Path) -> list[dict]:
    """The lines of a run's ``metrics.jsonl`` (a damaged line, half written, is skipped)."""
    try:
        text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return []
    lines = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines


RECOMMENDED = ("dataset", "epochs", "minutes", "batch_size", "lr")
"""What a document's ``meta.train`` may recommend to the Train panel."""
PANEL_DEFAULTS = {"dataset": "digits", "batch_size": 64, "lr": None}
"""What the Train panel shows where neither the task nor the document says otherwise."""


def panel_defaults(task: str) -> dict[str, Any]:
    """The Train panel's fields for ``task`` where the document recommends nothing: the task's own
    settings (``TASK_DEFAULTS``: a GAN's batch and lr, a budget in place of epochs), else the panel's."""
    own = TASK_DEFAULTS.get(task, {})
    return {"epochs": own.get("epochs"), "minutes": own.get("minutes"),
            **{key: own.get(key, value) for key, value in PANEL_DEFAULTS.items()}}


def recommended(train: Any, task: str) -> dict[str, Any]:
    """The Train panel settings a document recommends in ``meta.train`` (the diffusion MLP: points,
    not digits, in big batches), as far as they make a valid ``TrainConfig`` for ``task``; nothing
    when they do not (``meta`` is free-form: a hand-edited file may hold anything)."""
    if not isinstance(train, dict):
        return {}
    settings = {key: train[key] for key in RECOMMENDED if key in train}
    if not isinstance(settings.get("dataset", ""), str):
        return {}
    try:
        TrainConfig(task=task, **settings)  # type: ignore[arg-type]
    except (GraphError, TypeError, ValueError):
        return {}
    return settings


class TrainPanel:
    """Start/Stop, status and progress on top; settings, a live loss/accuracy chart and the log
    below: all of it visible together in the drawer. It follows the server's latest training job,
    whichever tab started it."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self.tracked: Tracked | None = None
        self.seen = 0  # events of ``tracked`` shown so far
        self.total = 1
        self.waited: str | None = None  # how a Start waited for a stopping run, for the log
        self.recommended: set[str] = set()  # the settings the open document recommended (``prepare``)
        with ui.row().classes("w-full items-center gap-2 no-wrap"):
            self.start_button = ui.button("Start", icon="play_arrow", on_click=self.start).props("dense") \
                .mark("train-start")
            self.stop_button = ui.button("Stop", icon="stop", on_click=self.stop).props("outline dense") \
                .mark("train-stop")
            self.stop_button.set_enabled(False)
            self.progress = ui.linear_progress(value=0, show_value=False).classes("w-64").mark("train-progress")
            self.status = ui.label("Not started.").classes("text-sm flex-grow").mark("train-status")
        with ui.row().classes("w-full items-start gap-3 no-wrap"):
            with ui.grid(columns=2).classes("gap-1 w-72 shrink-0"):
                self.task = ui.select(list(TASKS), label="task", value="classify", on_change=self._task_chosen) \
                    .props("dense outlined").mark("train-task")
                with ui.row().classes("gap-0 no-wrap items-center"):
                    self.dataset = ui.input("dataset", value=PANEL_DEFAULTS["dataset"]).props("dense outlined") \
                        .classes("flex-grow").mark("train-dataset") \
                        .tooltip("digits; 2-D points: moons, circles, swissroll, gaussians8; "
                                 "a folder of class folders of images, or an .npz file")
                    ui.button(icon="upload", on_click=self._upload_dialog).props("flat dense round size=sm") \
                        .tooltip("upload an .npz dataset")
                self.epochs = ui.number("epochs", value=TASK_DEFAULTS["classify"]["epochs"], min=1, precision=0) \
                    .props("dense outlined").mark("train-epochs").tooltip("blank: train until the minutes end")
                self.minutes = ui.number("minutes", value=None, min=0).props("dense outlined").mark("train-minutes")
                self.batch = ui.number("batch", value=PANEL_DEFAULTS["batch_size"], min=1, precision=0) \
                    .props("dense outlined").mark("train-batch")
                self.lr = ui.number("lr (blank: default)", value=None, format="%.2g").props("dense outlined") \
                    .mark("train-lr")
                self.device = ui.select(device_options(), label="device", value="auto").props("dense outlined") \
                    .mark("train-device")
                self.init = ui.select({FRESH: "fresh weights"}, label="start from", value=FRESH) \
                    .props("dense outlined options-dense").mark("train-init").on("focus", self.refresh_choices)
            self.chart = ui.echart(self._chart_options()).classes("flex-grow h-44 min-w-0").mark("train-chart")
            with ui.column().classes("gap-1 w-80 shrink-0"):
                self.preview = ui.image().classes("w-24").mark("train-preview")
                self.preview.set_visibility(False)
                self.log = ui.log(max_lines=300).classes("w-full h-40 text-xs").mark("train-log")
        self.timer = ui.timer(POLL_SECONDS, self._poll)

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
        init = weights_file(self.editor, self.init.value or FRESH)
        # task_config: the task's settings without a field here (self-play's weight decay and schedule) too
        return task_config(self.task.value, dataset=(self.dataset.value or "digits").strip(),
                           epochs=int(self.epochs.value) if self.epochs.value else None,
                           minutes=self.minutes.value or None,
                           batch_size=int(self.batch.value or PANEL_DEFAULTS["batch_size"]),
                           lr=self.lr.value or None, device=self.device.value or "auto",
                           init=str(init) if init is not None else None)

    def prepare(self) -> None:
        """Called when a document is opened: guess the task it is made for, take the settings it
        recommends (a template's ``meta.train``, see ``recommended``); offer its runs' weights."""
        try:
            self.task.value = guess_task(self.editor.session.doc, self.editor.session.analysis)
        except GraphError:
            pass
        settings = recommended(self.editor.session.doc.meta.get("train"), self.task.value)
        if "minutes" in settings and "epochs" not in settings:
            settings["epochs"] = None  # a budget alone: train until it ends
        fields = {"dataset": self.dataset, "epochs": self.epochs, "minutes": self.minutes,
                  "batch_size": self.batch, "lr": self.lr}
        defaults = panel_defaults(self.task.value)
        for key in self.recommended - settings.keys():  # what the last document recommended goes back
            fields[key].value = defaults[key]
        for key, value in settings.items():
            fields[key].value = value
        self.recommended = set(settings)
        self.refresh_choices()

    def _task_chosen(self, e: events.ValueChangeEventArguments) -> None:
        """A task's own defaults: diffusion trains for a time budget, not a number of epochs; a GAN at
        batch 32 and lr 0.002 (the dataset typed stays)."""
        defaults = panel_defaults(e.value)
        for field, key in ((self.epochs, "epochs"), (self.minutes, "minutes"), (self.batch, "batch_size"),
                           (self.lr, "lr")):
            field.value = defaults[key]

    def refresh_choices(self) -> None:
        choices = weight_choices(self.editor, self.editor.session.doc.name)
        self.init.set_options(choices, value=self.init.value if self.init.value in choices else FRESH)

    def _upload_dialog(self) -> None:
        with ui.dialog() as dialog, ui.card():
            ui.label("Upload a dataset (.npz)").classes("text-h6")
            ui.upload(auto_upload=True, on_upload=lambda e: self._uploaded(e, dialog)) \
                .props("accept=.npz").mark("train-upload")
        dialog.open()

    async def _uploaded(self, e: events.UploadEventArguments, dialog: ui.dialog) -> None:
        folder = Path(tempfile.mkdtemp(prefix="netcanvas-data-"))
        target = folder / Path(e.file.name).name
        await e.file.save(target)
        self.dataset.value = str(target)
        dialog.close()
        ui.notify(f"Dataset {e.file.name} uploaded")

    # ----------------------------------------------------------------- control
    async def start(self) -> None:
        """Start a run of the open graph; waits for a stopping job to end, or says why it cannot start."""
        doc = self.editor.session.doc
        try:
            config = self.config()
        except GraphError as exc:
            ui.notify(str(exc), type="negative")
            return
        if not await self._wait_for_stopping():
            return
        out = self.editor.workspace.new_run_dir(doc.name)
        graph = doc.model_copy(deep=True)
        self._launch(out, lambda: start_training(graph, config, out=out), doc.name,
                     f"starting {config.task} on {config.dataset} -> {out}")

    async def resume(self, entry: RunEntry) -> None:
        """Continue a run from its ``last.pt``: as planned, or (a finished run) for this panel's epochs more."""
        try:
            config = read_config(entry.path / "config.json")
            graph = load(entry.path / "graph.json")
        except GraphError as exc:
            ui.notify(f"Cannot resume {entry.name}: {exc}", type="negative")
            return
        if entry.status == "finished" and config.epochs is not None:
            config.epochs += int(self.epochs.value or 1)
        if not await self._wait_for_stopping():
            return
        self._launch(entry.path, lambda: start_training(graph, config, resume=entry.path), entry.graph,
                     f"resuming {entry.name} ({config.epochs} epochs in all)")

    async def _wait_for_stopping(self) -> bool:
        """True when no training job runs; a stopping one is waited for. False (and why) otherwise."""
        JOBS.pump()
        busy = JOBS.unended("training")  # a process that has said "done" may still be exiting
        running = [t for t in busy if t.active and not t.stop_requested]
        if running:
            ui.notify(f"Cannot start: run {running[0].run_dir.name} is training; stop it first "
                      "(one training job at a time)", type="warning")
            return False
        if busy:
            self.status.text = f"Waiting for run {busy[0].run_dir.name} to save its checkpoint and end…"
            self.start_button.set_enabled(False)
            waited = time.monotonic()
            if not await JOBS.wait_ended(busy):
                ui.notify(f"Cannot start: run {busy[0].run_dir.name} is still saving; try again shortly",
                          type="warning")
                self._buttons()
                return False
            self.waited = f"(started once run {busy[0].run_dir.name} had ended: {time.monotonic() - waited:.1f} s)"
        return True

    def _launch(self, run_dir: Path, launch, graph: str, message: str) -> None:
        try:
            tracked = JOBS.start("training", run_dir, launch, graph=graph)
        except (JobBusy, GraphError) as exc:
            record_failure(run_dir, f"not started: {exc}")
            ui.notify(f"Cannot start: {exc}", type="warning")
            self._buttons()
            return
        self._follow(tracked)
        self.log.push(message)
        if self.waited:
            self.log.push(self.waited)
            self.waited = None
        self.editor.open_drawer("train")

    def stop(self) -> None:
        tracked = self.tracked
        if tracked is not None and tracked.active:
            JOBS.stop(tracked)
            self.status.text = "Stopping: saving a checkpoint…"
            self.log.push("stop requested")
            self._buttons()

    # ----------------------------------------------------------------- following the job
    def _follow(self, tracked: Tracked) -> None:
        """Show ``tracked`` from its first event on (its history replays into the chart)."""
        self.tracked, self.seen, self.total = tracked, 0, 1
        self.chart.options.update(self._chart_options())
        self.log.clear()
        self.progress.value = 0
        self.preview.set_visibility(False)
        self.status.classes(remove="text-red-8")
        self.status.text = f"Starting run {tracked.run_dir.name} (a fresh Python process)…"
        self._show_new()

    def _poll(self) -> None:
        JOBS.pump()
        latest = JOBS.latest("training")
        if latest is not None and latest is not self.tracked and (self.tracked is None or not self.tracked.active):
            self._follow(latest)
        else:
            self._show_new()

    def _show_new(self) -> None:
        tracked = self.tracked
        if tracked is None:
            return
        new = tracked.events[self.seen:]
        self.seen += len(new)
        for event in new:
            self._event(event)
        if new:
            self.chart.update()
        self._buttons()

    def _buttons(self) -> None:
        active = self.tracked is not None and self.tracked.active
        self.stop_button.set_enabled(active and not self.tracked.stop_requested)
        self.start_button.set_enabled(not active or self.tracked.stop_requested)

    def _event(self, event: dict) -> None:
        kind = event.get("type")
        series = self.chart.options["series"]
        if kind == "start":
            self.total = event.get("total_steps") or 1
            self.status.text = f"Training {Path(event.get('run_dir', '')).name} on {event.get('device')}…"
            self.log.push(f"run folder {event.get('run_dir')}, {self.total} steps on {event.get('device')}")
        elif kind == "step":
            series[0]["data"].append([event["step"], round(event["loss"], 5)])
            self.total = event.get("total_steps") or self.total  # re-planned under a time budget
            done = event["step"] / max(1, self.total)
            self.progress.value = min(1.0, done)
            elapsed = time.time() - self.tracked.started if self.tracked else 0.0
            # the trainer's ETA counts against whichever limit (epochs, minutes) comes first
            eta = event.get("eta", elapsed * (1 - done) / done if done > 0 else 0)
            name = self.tracked.run_dir.name if self.tracked else ""
            self.status.text = (f"{name}: epoch {event['epoch'] + 1}, step {event['step']}/{self.total}, "
                                f"loss {event['loss']:.4f} · ETA {eta:.0f} s")
        elif kind == "metrics":
            if event.get("split") == "val":
                series[1]["data"].append([event["step"], round(event["loss"], 5)])
                if "accuracy" in event:
                    series[2]["data"].append([event["step"], round(event["accuracy"], 4)])
            described = ", ".join(f"{k} {v:.4g}" for k, v in event.items()
                                  if k not in ("type", "epoch", "step", "split") and isinstance(v, int | float))
            # "epoch" counts the epochs completed, as in metrics.jsonl
            self.log.push(f"epoch {event['epoch']} {event.get('split')}: {described}")
        elif kind == "samples" and event.get("png"):
            self.preview.set_source(data_url(event["png"]))
            self.preview.set_visibility(True)
        elif kind == "checkpoint":
            self.log.push(f"checkpoint {event.get('path')}")
        elif kind == "done":
            self.progress.value = 1.0 if event.get("status") == "finished" else self.progress.value
            self.status.text = f"{event.get('status')}: {event.get('message') or 'done'}"
            self.log.push(f"done ({event.get('status')}) {event.get('message') or ''}")
            self.refresh_choices()
        elif kind == "error":
            self.status.text = f"Failed: {event.get('message')}"
            self.status.classes("text-red-8")
            self.log.push(f"error: {event.get('message')}")


class RunsPanel:
    """The workspace's runs, read from disk: status, best metric, duration, device; tick runs to
    overlay their curves; per run: open its graph, resume, sample, export, stop, delete."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self.checked: set[str] = set()
        self.shown: tuple | None = None  # what the list shows, to rebuild it only on a change
        with ui.row().classes("w-full items-start gap-3 no-wrap"):
            with ui.column().classes("gap-0 w-[60%] shrink-0"):
                with ui.row().classes("items-center gap-2"):
                    ui.label("Runs in the workspace (tick several to compare their curves)").classes("text-sm")
                    ui.button(icon="refresh", on_click=lambda: self.refresh(force=True)) \
                        .props("flat dense round size=sm").mark("runs-refresh")
                self.rows = ui.column().classes("w-full gap-0").mark("runs-list")
            self.chart = ui.echart(self._chart_options([])).classes("flex-grow h-52 min-w-0").mark("runs-chart")
        self.timer = ui.timer(RUNS_REFRESH_SECONDS, self.refresh)

    def refresh(self, force: bool = False) -> None:
        """Re-read the runs (only while the panel shows, or when ``force``)."""
        if not force and not self.editor.drawer_shows("runs"):
            return
        JOBS.pump()
        entries = runs_of(self.editor)
        # not the duration: a running run's grows, and rebuilding its row under the pointer loses clicks
        shown = tuple((e.name, self._status(e), tuple(sorted(e.best.items())), e.graph, e.task, e.device)
                      for e in entries)
        if shown != self.shown or force:
            self.shown = shown
            self._rebuild(entries)
        self._draw(entries)

    @staticmethod
    def _status(entry: RunEntry) -> str:
        tracked = JOBS.get("training", entry.path)
        if tracked is not None and tracked.active:
            return "stopping" if tracked.stop_requested else "running"
        return entry.status

    def _rebuild(self, entries: list[RunEntry]) -> None:
        self.rows.clear()
        self.checked &= {e.name for e in entries}
        with self.rows:
            if not entries:
                ui.label("No runs yet: train a graph (Training tab) to make one.").classes("text-sm text-grey-7")
            for entry in entries:
                self._row(entry)

    def _row(self, entry: RunEntry) -> None:
        status = self._status(entry)
        with ui.row().classes("w-full items-center gap-2 no-wrap nc-run").mark(f"run-{entry.name}"):
            ui.checkbox(value=entry.name in self.checked,
                        on_change=lambda e, n=entry.name: self._check(n, e.value)).props("dense") \
                .mark(f"run-check-{entry.name}")
            ui.label(entry.name).classes("font-mono text-xs w-56 truncate").tooltip(str(entry.path))
            if entry.status == "unreadable":
                ui.label(f"unreadable: {entry.error}").classes("text-xs text-red-8 truncate")
                self._action("delete", "Delete", lambda e=entry: self.ask_delete(e), entry)
                return
            ui.label(f"{entry.graph or '…'} · {entry.task or '…'}").classes("text-xs w-40 truncate")
            ui.badge(status, color=STATUS_COLOURS.get(status, "grey")).props("outline") \
                .mark(f"run-status-{entry.name}")
            ui.label(_describe_best(entry.best)).classes("text-xs w-36 truncate")
            ui.label(_duration(entry.duration)).classes("text-xs w-14")
            ui.label(entry.device or "").classes("text-xs w-16 truncate")
            self._action("open_in_new", "Open its graph", lambda e=entry: self.open_graph(e), entry)
            if status not in ("running", "stopping"):
                self._action("replay", "Resume", lambda e=entry: self.editor.train_panel.resume(e), entry)
            if entry.task in SAMPLED_TASKS:
                self._action("auto_awesome", "Sample", lambda e=entry: self.editor.sample_panel.choose(e), entry)
            self._action("ios_share", "Export with its weights",
                         lambda e=entry: self.export(e), entry)
            if status in ("running", "stopping"):
                self._action("stop", "Stop", lambda e=entry: self.stop(e), entry)
            self._action("delete", "Delete", lambda e=entry: self.ask_delete(e), entry)

    @staticmethod
    def _action(icon: str, tip: str, handler, entry: RunEntry) -> None:
        mark = tip.split()[0].lower()
        ui.button(icon=icon, on_click=handler).props("flat dense round size=sm").tooltip(tip) \
            .mark(f"run-{mark}-{entry.name}")

    def _check(self, name: str, on: bool) -> None:
        (self.checked.add if on else self.checked.discard)(name)
        self._draw(runs_of(self.editor))

    # ----------------------------------------------------------------- curves
    @staticmethod
    def _chart_options(series: list[dict]) -> dict:
        return {
            "animation": False,
            "grid": {"left": 45, "right": 45, "top": 30, "bottom": 25},
            "legend": {"top": 0, "type": "scroll", "textStyle": {"fontSize": 10}},
            "tooltip": {"trigger": "axis"},
            "xAxis": {"type": "value", "name": "epoch", "nameGap": 4, "minInterval": 1},
            "yAxis": [{"type": "value", "name": "loss", "scale": True},
                      {"type": "value", "name": "accuracy", "min": 0, "max": 1}],
            "series": series,
        }

    def _draw(self, entries: list[RunEntry]) -> None:
        series = []
        for entry in entries:
            if entry.name in self.checked:
                series += curves(entry.name, read_metrics(entry.path))
        if series != self.chart.options["series"]:
            self.chart.options.clear()
            self.chart.options.update(self._chart_options(series))
            self.chart.update()

    # ----------------------------------------------------------------- actions
    async def open_graph(self, entry: RunEntry) -> None:
        await self.editor.open_doc(lambda: (load(entry.path / "graph.json"), None), f"{entry.name}/graph.json")

    def export(self, entry: RunEntry) -> None:
        """Export the run's graph with its best weights (the dialog offers its last ones too)."""
        from app.export import export_dialog

        try:
            doc = load(entry.path / "graph.json")
        except GraphError as exc:
            ui.notify(f"Cannot export {entry.name}: {exc}", type="negative")
            return
        best = entry.path / "best.pt"
        export_dialog(self.editor, weights=str(best if best.is_file() else entry.path / "last.pt"), doc=doc)

    def stop(self, entry: RunEntry) -> None:
        tracked = JOBS.get("training", entry.path)
        if tracked is not None and tracked.active:
            JOBS.stop(tracked)
            ui.notify(f"Stopping {entry.name}: it saves a checkpoint first")
        self.refresh(force=True)

    def ask_delete(self, entry: RunEntry) -> None:
        if self._status(entry) in ("running", "stopping"):
            ui.notify(f"Cannot delete {entry.name}: it is running; stop it first", type="warning")
            return
        with ui.dialog() as dialog, ui.card():
            ui.label(f"Delete run {entry.name}?").classes("text-h6")
            ui.label(f"Its folder {entry.path} with its checkpoints and samples is removed.").classes("text-sm")
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Delete", color="negative", on_click=lambda: self.delete(entry, dialog)) \
                    .mark("run-delete-ok")
        dialog.open()

    def delete(self, entry: RunEntry, dialog: ui.dialog) -> None:
        dialog.close()
        try:
            self.editor.workspace.delete_run(entry.name)
        except GraphError as exc:
            ui.notify(f"Cannot delete {entry.name}: {exc}", type="warning")
            return
        JOBS.forget("training", entry.path)
        self.checked.discard(entry.name)
        ui.notify(f"Deleted run {entry.name}")
        self.refresh(force=True)


STATUS_COLOURS = {"running": "blue", "stopping": "orange", "finished": "green", "stopped": "grey-7",
                  "failed": "red", "unreadable": "red"}


def curves(name: str, metrics: list[dict]) -> list[dict]:
    """A run's loss (validation, else training) and validation accuracy by epoch, as chart series."""
    val = [m for m in metrics if m.get("split") == "val"]
    lossy = val or [m for m in metrics if m.get("split") == "train"]
    series = [{"name": f"{name} loss", "type": "line", "data": [[m["epoch"], m["loss"]] for m in lossy
                                                                 if "epoch" in m and "loss" in m]}]
    accuracy = [[m["epoch"], m["accuracy"]] for m in val if "epoch" in m and "accuracy" in m]
    if accuracy:
        series.append({"name": f"{name} accuracy", "type": "line", "yAxisIndex": 1,
                       "lineStyle": {"type": "dashed"}, "data": accuracy})
    return series


def _describe_best(best: dict | None) -> str:
    if not best:
        return "—"
    return ", ".join(f"{k} {v:.4g}" for k, v in best.items() if isinstance(v, int | float))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class SamplePanel:
    """Diffusion sampling from a run (kept in ``runs/NAME/samples/STAMP/``), a live grid (for a run
    on 2-D points: a scatter of the points over the data, moving from noise to its shape), the
    samples made so far with their downloads, and an interpolation between two seeds."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self.tracked: Tracked | None = None
        self.seen = 0
        self.shown: tuple | None = None
        with ui.row().classes("w-full items-start gap-4 no-wrap"):
            with ui.column().classes("gap-1 w-64 shrink-0"):
                self.run_dir = ui.select({}, label="diffusion or GAN run", with_input=True).props("dense outlined") \
                    .classes("w-full").mark("sample-run").on("focus", self.refresh_runs)
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
                        .props("dense").mark("sample-start")
                    self.stop_button = ui.button("Stop", icon="stop", on_click=self.stop).props("outline dense")
                    self.stop_button.set_enabled(False)
                ui.button("Interpolate seed → seed+1", on_click=self.interpolate).props("flat dense no-caps") \
                    .mark("sample-interpolate")
            with ui.column().classes("gap-1 shrink-0"):
                self.status = ui.label("Train a diffusion graph (e.g. unet_ddpm_small, or diffusion_mlp on "
                                       "swissroll) or a GAN (stylegan2_digits), then sample it here.") \
                    .classes("text-sm w-56").mark("sample-status")
                self.grid = ui.image().classes("h-44 w-44").props("fit=contain").mark("sample-grid")
                self.grid.set_visibility(False)
                self.frames: list[str] = []
                self.frame = ui.image().classes("w-24")
                self.frame.set_visibility(False)
                self.slider = ui.slider(min=0, max=7, value=0, on_change=self._show_frame).classes("w-24")
                self.slider.set_visibility(False)
            self.saved = ui.row().classes("gap-2 flex-grow min-w-0").mark("sample-saved")
        self.timer = ui.timer(POLL_SECONDS, self._poll)
        self.refresh_runs()

    def refresh_runs(self) -> None:
        options = {str(e.path): e.name for e in runs_of(self.editor)
                   if e.task in SAMPLED_TASKS and ((e.path / "best.pt").is_file() or (e.path / "last.pt").is_file())}
        value = self.run_dir.value if self.run_dir.value in options else next(iter(options), None)
        self.run_dir.set_options(options, value=value)

    def choose(self, entry: RunEntry) -> None:
        """The Runs panel's Sample action: this run, in this panel."""
        self.refresh_runs()
        self.run_dir.value = str(entry.path)
        self.editor.open_drawer("samples")

    def start(self) -> None:
        if not self.run_dir.value:
            ui.notify("Choose a finished diffusion or GAN run first", type="warning")
            return
        run_dir = Path(self.run_dir.value)
        options = {"sampler": self.sampler.value, "steps": int(self.steps.value or 50),
                   "n": int(self.count.value or 16), "seed": int(self.seed.value or 0)}
        try:
            self.tracked = JOBS.start("sampling", run_dir, lambda: start_sampling(run_dir, **options))
        except JobBusy as exc:
            ui.notify(f"Cannot sample: {exc}", type="warning")
            return
        self.seen = 0
        self.status.text = "Starting…"

    def stop(self) -> None:
        if self.tracked is not None and self.tracked.active:
            JOBS.stop(self.tracked)

    def _poll(self) -> None:
        JOBS.pump()
        tracked = self.tracked
        if tracked is not None:
            new = tracked.events[self.seen:]
            self.seen += len(new)
            for event in new:
                self._event(event)
        active = tracked is not None and tracked.active
        self.start_button.set_enabled(not active)
        self.stop_button.set_enabled(active)
        if self.editor.drawer_shows("samples"):
            self.refresh_saved()

    def _event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "step":
            self.grid.set_source(data_url(event["png"]))
            self.grid.set_visibility(True)
            self.status.text = f"denoising step {event['step']}/{event['steps']}"
        elif kind == "done":
            self.status.text = event.get("message") or "done"
        elif kind == "error":
            self.status.text = f"Failed: {event.get('message')}"

    # ----------------------------------------------------------------- samples on disk
    def refresh_saved(self, force: bool = False) -> None:
        folders = saved_samples(runs_of(self.editor))
        shown = tuple((str(f), tuple(sorted(p.name for p in f.iterdir()))) for f in folders)
        if shown == self.shown and not force:
            return
        self.shown = shown
        self.saved.clear()
        with self.saved:
            if not folders:
                ui.label("No samples yet: they are kept in runs/NAME/samples/.").classes("text-sm text-grey-7")
            for folder in folders:
                self._saved(folder)

    @staticmethod
    def _saved(folder: Path) -> None:
        run_name = folder.parent.parent.name
        with ui.card().classes("p-1 gap-0 items-center").mark(f"samples-{run_name}-{folder.name}"):
            for picture in (folder / name for name in PICTURES if (folder / name).is_file()):
                ui.image(picture).classes("w-24 h-24").props("fit=contain")
            ui.label(f"{run_name} · {folder.name}").classes("text-xs")
            with ui.row().classes("gap-0"):
                for name in SAMPLE_FILES:
                    if (folder / name).is_file():
                        ui.button(icon="download", on_click=lambda p=folder / name: _download(p)) \
                            .props("flat dense size=sm no-caps").tooltip(f"download {name}") \
                            .mark(f"samples-download-{name}")

    async def interpolate(self) -> None:
        if not self.run_dir.value:
            ui.notify("Choose a finished diffusion or GAN run first", type="warning")
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


def _download(path: Path) -> None:
    """Send a sample file (small: a grid, an array of a few images) named after its run and stamp."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        ui.notify(f"Cannot download {path.name}: {exc.strerror or exc}", type="warning")
        return
    ui.download.content(data, f"{path.parent.parent.parent.name}-{path.parent.name}-{path.name}")


def saved_samples(entries: list[RunEntry]) -> list[Path]:
    """The ``runs/NAME/samples/STAMP/`` folders of these runs, newest first."""
    folders = [f for e in entries if (e.path / "samples").is_dir()
               for f in (e.path / "samples").iterdir() if f.is_dir()]
    return sorted(folders, key=lambda f: f.name, reverse=True)[:SAMPLES_SHOWN]


def _interpolation_frames(run_dir: str, seed: int, steps: int, frames: int = 8) -> list[str]:
    """DDIM samples along the path between two seeds' noises (a GAN run: images along W between
    their styles), one PNG data URL a frame (in a thread)."""
    from graphcore.runtime import diffusion, gan
    from graphcore.runtime.config import GraphIO
    from graphcore.runtime.train import load_run, read_vectors

    if read_config(Path(run_dir) / "config.json").task == "gan":
        generator = gan.load_generator(run_dir)
        images = gan.interpolate(generator.model, seed_a=seed, seed_b=seed + 1, frames=frames)
        return [data_url(diffusion.png_bytes(images[i:i + 1], scale=4)) for i in range(frames)]
    model, config = load_run(run_dir)
    if config.task != "diffusion":
        raise GraphError(f"{run_dir}: not a diffusion run")
    if read_vectors(run_dir) is not None:
        raise GraphError(f"{run_dir}: interpolation draws images; this run was trained on points (sample it instead)")
    shape = GraphIO.of(model.doc).sample_shape("diffusion")
    schedule = diffusion.Schedule(config.beta_schedule, config.timesteps)
    path = diffusion.interpolate(diffusion.denoiser(model), shape, schedule, seed_a=seed, seed_b=seed + 1,
                                 frames=frames, steps=min(steps, 50))
    images = diffusion.to_unit_range(path.float())
    if images.dim() == 5:
        images = images[:, :, 0]
    return [data_url(diffusion.png_bytes(images[i:i + 1], scale=4)) for i in range(frames)]
