"""The editor page. (A module of its own: NiceGUI's test fixtures unload the module that
defines a page between tests, which must not be the ``__main__`` that runs the app.)"""

from __future__ import annotations

from pathlib import Path

from nicegui import app, ui

from app.editor import AUTOSAVE_KEY, TAB_KEY, Editor
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc, loads
from graphcore.core.gallery import open_graph
from graphcore.runtime.workspace import Workspace


def register(graph: str, workspace: str = ".") -> None:
    """The page at ``/``: each tab edits its own document in ``workspace``, restored from the
    tab's autosave (a new tab opens ``graph``)."""
    folder = Workspace(workspace)

    @ui.page("/", title="NetCanvas")
    async def index() -> None:
        await ui.context.client.connected(timeout=30)
        saved = app.storage.tab.get(AUTOSAVE_KEY)
        doc = None
        if saved:
            try:
                doc = loads(saved, "autosave")
            except GraphError:
                doc = None  # an autosave from another version: start from the default graph
        tab = app.storage.tab.get(TAB_KEY) if doc is not None else None
        model = Path(graph) if doc is None and graph.lower().endswith(".onnx") else None
        if model is None:
            Editor(doc or open_graph(graph), folder, tab if isinstance(tab, dict) else None)
            return
        # An ONNX model named on the command line opens like an uploaded one: imported off the event
        # loop, with its weights kept in the workspace (undo goes back to the empty graph).
        editor = Editor(GraphDoc(name=model.stem), folder, None)
        await editor.open_file(model.name, model.read_bytes())
