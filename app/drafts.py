"""Each editor tab's draft, kept in the workspace (``Workspace.save_draft``): what a reload restores,
and what a new tab takes over from a closed one (``app.pages`` decides which). The tab's own storage
keeps only the draft's id (``DRAFT_KEY``); the draft holds the rest::

    {"document": "<the document's JSON>", "name": "lenet5", "blocks": 14, "unsaved": true,
     "saved_as": ["lenet5", 1716200000.0] | null,  # the workspace file, and its time then
     "panel": "train" | null, "viewport": {"x": 12.5, "y": -40.0, "zoom": 0.8} | null, "time": 1716200100.0,
     "view": {"expanded": ["features"], "unstacked": []},  # the file's modules drawn open (editing.expand.ViewState)
     "views": [{"path": ["features", "stage1"], "expanded": ["block0"], "unstacked": []}]}  # opened subgraphs'

``write`` hands a state to a worker thread: the writes of one draft happen in order, and a state
still waiting is replaced by a newer one, so the last state wins and a slow disk never holds up the
page; ``written`` waits for them (a reload reads the draft its page before wrote).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from nicegui import background_tasks, run

from app.canvas import parse_viewport
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc, loads
from graphcore.editing.expand import ViewState
from graphcore.runtime.workspace import DraftEntry, Workspace

DRAFT_KEY = "netcanvas.draft"
"""The tab's storage: the id of the tab's draft."""
log = logging.getLogger(__name__)
_waiting: dict[str, tuple[Workspace, dict[str, Any]]] = {}  # draft id -> the newest state not yet written
_writers: dict[str, asyncio.Task] = {}  # draft id -> the task writing it


@dataclass(frozen=True)
class Draft:
    """A draft read back: the document, the workspace file it was saved as (name, time then), the
    open panel, the view (pan and zoom; the modules drawn open, at each level: the path of subgraph
    node ids opened to reach it, the file's ``()``), and whether it holds changes saved nowhere else."""

    id: str
    doc: GraphDoc
    saved_as: tuple[str, float] | None = None
    panel: str | None = None
    viewport: dict[str, float] | None = None
    unsaved: bool = False
    views: dict[tuple[str, ...], ViewState] = field(default_factory=lambda: {(): ViewState()})


def new_id() -> str:
    """A fresh draft id (a new tab's)."""
    return secrets.token_hex(12)


def payload(doc: GraphDoc, text: str, *, saved_as: tuple[str, float] | None, panel: str | None,
            viewport: dict[str, float] | None, unsaved: bool,
            views: Mapping[tuple[str, ...], ViewState] | None = None) -> dict[str, Any]:
    """What a draft keeps of a tab showing ``doc`` (``text``: its JSON; ``views``: each level's view state)."""
    views = views or {}
    return {"document": text, "name": doc.name, "blocks": len(doc.nodes), "unsaved": unsaved,
            "saved_as": list(saved_as) if saved_as else None, "panel": panel, "viewport": viewport,
            "time": time.time(), "view": views.get((), ViewState()).to_dict(),
            "views": [{"path": list(path), **state.to_dict()} for path, state in views.items()
                      if path and state != ViewState()]}


def read(entry: DraftEntry) -> Draft:
    """The draft behind a workspace entry; a GraphError if its document cannot be read."""
    data = entry.payload
    saved = data.get("saved_as")
    saved_as = None
    if isinstance(saved, list) and len(saved) == 2 and isinstance(saved[0], str) \
            and isinstance(saved[1], int | float) and not isinstance(saved[1], bool):
        saved_as = (saved[0], float(saved[1]))
    panel = data.get("panel")
    return Draft(entry.id, loads(data["document"], f"draft of {entry.name!r}"), saved_as,
                 panel if isinstance(panel, str) else None, parse_viewport(data.get("viewport")), entry.unsaved,
                 _views(data))


def _views(data: dict[str, Any]) -> dict[tuple[str, ...], ViewState]:
    """Each level's view state in a draft: the file's under "view", opened subgraphs' under "views"."""
    views = {(): ViewState.from_dict(data.get("view"))}
    inner = data.get("views")
    for state in inner if isinstance(inner, list) else ():
        path = state.get("path") if isinstance(state, dict) else None
        if isinstance(path, list) and path and all(isinstance(part, str) for part in path):
            views[tuple(path)] = ViewState.from_dict(state)
    return views


def recoverable(workspace: Workspace, in_use: Collection[str]) -> list[DraftEntry]:
    """The drafts that closed tabs left with unsaved changes, newest first (pruning the workspace's
    drafts first: ``in_use`` are the open tabs', which stay)."""
    return [d for d in workspace.prune_drafts(keep=in_use) if d.unsaved and d.id not in in_use]


def write(workspace: Workspace, draft_id: str, state: dict[str, Any]) -> None:
    """Write a tab's draft in a worker thread, after the writes of it already under way."""
    _waiting[draft_id] = (workspace, state)
    if draft_id not in _writers:
        _writers[draft_id] = background_tasks.create(_drain(draft_id), name=f"write draft {draft_id}")


async def written(draft_id: str) -> None:
    """Wait until every state handed to ``write`` for this draft is on disk (or given up)."""
    while (writer := _writers.get(draft_id)) is not None:
        await asyncio.wait([writer])


async def _drain(draft_id: str) -> None:
    try:
        while draft_id in _waiting:
            workspace, state = _waiting.pop(draft_id)
            try:
                await run.io_bound(workspace.save_draft, draft_id, state)
            except (GraphError, ValueError) as exc:  # a full disk, say: the tab goes on, the next change tries again
                log.warning("cannot keep the draft %s: %s", draft_id, exc)
    finally:
        del _writers[draft_id]
