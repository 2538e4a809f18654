"""The Export dialog: Python (.py) or ONNX (.onnx), with the weights the user picks (fresh, the
imported ones, a run's best or last), and a message that says which weights went out.

Python with weights comes as two downloads: the .py, and a .pt state_dict its ``build_model(path)`` loads.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nicegui import run, ui

import graphcore as gc
from app.runs import FRESH, IMPORTED, weight_choices
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc
from graphcore.interchange import weights as w

if TYPE_CHECKING:
    from app.editor import Editor

FORMATS = {"python": "Python (.py)", "onnx": "ONNX (.onnx)"}


@dataclass
class Exported:
    """What an export produced: the files to download (name, bytes) and a one-line account of it."""

    files: list[tuple[str, bytes]]
    message: str


def export_dialog(editor: Editor, fmt: str = "python", weights: str | None = None,
                  doc: GraphDoc | None = None) -> None:
    """Ask which format and which weights, export, and offer the files. ``doc`` (a run's graph)
    defaults to the open document; ``weights`` preselects a ``weight_choices`` key."""
    doc = (doc or editor.session.doc).model_copy(deep=True)
    choices = weight_choices(editor, doc.name, imported=doc.name == editor.session.doc.name)
    if weights is not None and weights not in choices:
        choices[weights] = f"{Path(weights).parent.name}: {Path(weights).stem}"
    with ui.dialog() as dialog, ui.card().classes("w-[560px]"):
        ui.label(f"Export {doc.name or 'the graph'}").classes("text-h6")
        kind = ui.toggle(FORMATS, value=fmt).props("dense no-caps").mark("export-format")
        source = ui.select(choices, label="weights", value=weights or FRESH).props("dense outlined") \
            .classes("w-full").mark("export-weights")
        status = ui.label("").classes("text-sm").mark("export-status")
        downloads = ui.row().classes("gap-2")

        async def go() -> None:
            button.set_enabled(False)
            downloads.clear()
            status.classes(remove="text-red-8")
            status.text = "Exporting" + (" and checking against onnxruntime…" if kind.value == "onnx" else "…")
            try:
                result = await run.io_bound(_export, EXPORTERS[kind.value], doc, source.value or FRESH, editor)
            except GraphError as exc:
                status.text = f"Export failed: {exc}"
                status.classes("text-red-8")
                button.set_enabled(True)
                return
            status.text = result.message
            with downloads:
                for name, data in result.files:
                    ui.button(f"Download {name}", icon="download",
                              on_click=lambda n=name, d=data: ui.download.content(d, n)) \
                        .props("no-caps dense").mark(f"export-download-{Path(name).suffix[1:]}")
            for name, data in result.files:
                ui.download.content(data, name)
            button.set_enabled(True)

        with ui.row().classes("w-full justify-end"):
            ui.button("Close", on_click=dialog.close).props("flat")
            button = ui.button("Export", icon="ios_share", on_click=go).mark("export-go")
    dialog.on_value_change(lambda e: None if e.value else dialog.delete())
    dialog.open()


def _export(exporter, doc: GraphDoc, choice: str, editor: Editor) -> Exported:
    """Read the chosen weights (``choice``: a ``weight_choices`` key) and export, in a worker
    thread: both may take seconds (imported weights are read here the first time)."""
    if choice == FRESH:
        weights = w.FRESH
    elif choice == IMPORTED:
        weights = w.imported(editor.imported_weights(), editor.session.doc.name)
    else:  # a run's checkpoint: named after the run
        checkpoint = Path(choice)
        weights = w.read_weights(checkpoint.parent, checkpoint.stem)
    return exporter(doc, weights)


def export_python(doc: GraphDoc, weights: w.Weights) -> Exported:
    """The generated .py, and with weights other than fresh ones the state_dict its
    ``build_model(path)`` loads."""
    import torch

    from graphcore.interchange.codegen import to_python

    name = doc.name or "model"
    files = [(f"{name}.py", to_python(doc).encode())]
    if weights.state is None:
        return Exported(files, f"Exported {name}.py with fresh weights: build_model() initialises them at random.")
    buffer = io.BytesIO()
    torch.save(weights.model(doc).state_dict(), buffer)  # checked against the graph on the way
    files.append((f"{name}.pt", buffer.getvalue()))
    return Exported(files, f"Exported {name}.py and {name}.pt with {weights.description}; "
                           f"build_model('{name}.pt') loads them.")


def export_onnx(doc: GraphDoc, weights: w.Weights) -> Exported:
    """The .onnx file with the chosen weights inside, checked against onnxruntime."""
    model = weights.model(doc)
    # The file goes into a temporary folder, under a fixed name: the graph's name only names the
    # download (``/home/me/model`` must not choose where the server writes).
    with tempfile.TemporaryDirectory(prefix="netcanvas-") as folder:
        path = Path(folder) / "model.onnx"
        result = gc.export_onnx(model, path)
        data = path.read_bytes()
    return Exported([(f"{doc.name or 'model'}.onnx", data)],
                    f"Exported with {weights.description}. Checked: onnxruntime matches PyTorch (max abs diff "
                    f"{result.max_diff:.1e}, tolerance {result.tolerance:.0e}); {result.size / 1e6:.2f} MB, "
                    f"opset {result.opset}.")


EXPORTERS = {"python": export_python, "onnx": export_onnx}
