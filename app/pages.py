"""The editor page. (A module of its own: NiceGUI's test fixtures unload the module that
defines a page between tests, which must not be the ``__main__`` that runs the app.)"""

from __future__ import annotations

from nicegui import app, ui

from app.editor import AUTOSAVE_KEY, Editor
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import loads
from graphcore.core.gallery import open_graph


def register(graph: str) -> None:
    """The page at ``/``: each tab edits its own document, restored from the tab's autosave."""

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
        Editor(doc or open_graph(graph))
