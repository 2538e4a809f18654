"""The editor page. (A module of its own: NiceGUI's test fixtures unload the module that
defines a page between tests, which must not be the ``__main__`` that runs the app.)

What a tab opens with:

1. Its own draft, after a reload (``app.drafts``; the tab's storage keeps the draft's id): the
   document as it was, the workspace file it was saved as, the open panel, the pan and zoom. A
   duplicated browser tab comes with the original's storage: it gets a copy of the draft, under an
   id of its own.
2. In a new tab, while closed tabs have left unsaved changes: the most recent of those drafts, with a
   notification; Open lists the others. This wins over the graph named on the command line
   (``netcanvas G.json``): that graph is a file or a template, one Open away, while the unsaved one
   exists nowhere but in its draft, and a user who has closed a tab by mistake expects the next tab
   to bring it back. Each such draft goes to one tab (the tab then owns it), so opening several
   tabs brings back several.
3. Otherwise the graph named on the command line (a template by default).

Drafts that nobody will miss (nothing unsaved and a day old, or beyond the most kept) are pruned
when the server starts and whenever they are listed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nicegui import app, run, ui

from app import drafts
from app.drafts import DRAFT_KEY, Draft
from app.editor import Editor, drafts_in_use
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc
from graphcore.core.gallery import open_graph
from graphcore.runtime.workspace import DraftEntry, Workspace


def register(graph: str, workspace: str = ".") -> None:
    """The page at ``/``: each tab edits its own document in ``workspace``, restored from the tab's
    draft (a new tab: a closed tab's unsaved draft, or else ``graph``)."""
    folder = Workspace(workspace)
    folder.prune_drafts()  # no tab is open yet

    @ui.page("/", title="NetCanvas")
    async def index() -> None:
        client = ui.context.client
        await client.connected(timeout=30)
        draft = await _own_draft(folder, app.storage.tab.get(DRAFT_KEY), client.tab_id)
        if draft is not None:
            Editor(draft.doc, folder, draft)
            return
        left = await run.io_bound(drafts.recoverable, folder, drafts_in_use()) or []
        if _take_over(folder, left):
            return
        if not graph.lower().endswith(".onnx"):
            Editor(open_graph(graph), folder)
            return
        # An ONNX model named on the command line opens like an uploaded one: imported off the event
        # loop, with its weights kept in the workspace (undo goes back to the empty graph).
        model = Path(graph)
        editor = Editor(GraphDoc(name=model.stem), folder)
        await editor.open_file(model.name, model.read_bytes())


async def _own_draft(folder: Workspace, draft_id: object, tab_id: str | None) -> Draft | None:
    """The tab's own draft (after a reload); None for a new tab, or when the draft is gone or damaged."""
    if not isinstance(draft_id, str):
        return None
    await drafts.written(draft_id)  # the page before the reload may still be writing it
    try:
        draft = drafts.read(folder.load_draft(draft_id))
    except GraphError:
        return None
    if draft.id in drafts_in_use(but_tab=tab_id):  # a duplicated tab: the original keeps the draft
        return replace(draft, id=drafts.new_id())
    return draft


def _take_over(folder: Workspace, left: list[DraftEntry]) -> bool:
    """Open the most recent of the drafts that closed tabs ``left`` unsaved; False if none can be."""
    in_use = drafts_in_use()  # again: another new tab may have taken one while they were listed
    free = [entry for entry in left if entry.id not in in_use]
    for n, entry in enumerate(free):
        try:
            draft = drafts.read(entry)
        except GraphError:  # its document is damaged: try the next
            continue
        Editor(draft.doc, folder, draft)
        more = len(free) - n - 1
        ui.notify(f"Restored unsaved graph {entry.name!r} from a closed tab"
                  + (f" (Open lists {more} more)" if more else ""), multi_line=True, timeout=8000)
        return True
    return False
