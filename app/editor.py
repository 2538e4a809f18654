"""One browser tab's editor: toolbar, palette, canvas, inspector, summary and bottom drawer.

Each tab has its own ``Editor`` and its own ``EditSession``. The tab's draft in the workspace
(``app.drafts``; the tab's storage keeps only its id) holds what a reload restores, and what a new
tab takes over once the tab is closed: the document (autosaved after every change, loads
included), the workspace file it was saved as, the open panel, the view's pan and zoom, and
whether it has unsaved changes (the title marks them). Imported weights stay
in the workspace (``Workspace.save_weights``); the document holds only their key
(``doc.ui["weights"]``), so undoing a load brings its weights back with it. Every load (New, Open,
a template, an ONNX model) is one undoable step of the session. ``session`` is the whole file's
session; ``current`` is the one on the canvas: the same, or the inside of an opened subgraph
(a breadcrumb leads back), whose edits re-infer the shapes of the file around it.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from nicegui import app, background_tasks, events, run, ui

import graphcore as gc
from app import drafts
from app.canvas import Canvas
from app.drafts import Draft
from app.inspector import Inspector
from app.palette import Palette
from graphcore.core.analysis import Deadline
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc, dumps, loads
from graphcore.core.summary import human
from graphcore.editing import expand, ops
from graphcore.editing.expand import Projection, ViewState
from graphcore.editing.session import Delta, EditError, EditSession, clear_offset
from graphcore.runtime.workspace import DraftEntry, GraphEntry, Workspace, check_name, weights_key

WEIGHTS = "weights"
"""``doc.ui[WEIGHTS]``: the workspace key of the weights that came with the document (an ONNX model's)."""
SAVE_KEYS = """
document.addEventListener("keydown", (e) => {  // Ctrl+S / Cmd+S: the editor's Save, not the browser's
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") {
    e.preventDefault();
    emitEvent(e.shiftKey ? "netcanvas-save-as" : "netcanvas-save");
  }
});
"""
EDITORS: weakref.WeakValueDictionary[str, Editor] = weakref.WeakValueDictionary()
"""The editor of each connected page, by NiceGUI client id (for tests and tools, and to tell whose
drafts are in use)."""
PROBLEMS_SHOWN = 200
BLOCK_MIDDLE = (80, 35)
"""From a typical block's top-left corner (its position) to its middle, on the canvas."""
LOAD_SECONDS = 10.0
"""How long opening a document (reading and analysing it, in a worker thread) may take."""
QUICK_AUTOSAVE_NODES = 1_000
"""Below this many blocks the autosave (a few ms) runs at the first tick after a change; above it,
at the first tick with no edit since the one before, or AUTOSAVE_WAIT seconds after the last one."""
AUTOSAVE_WAIT = 2.0
EXPAND_DEPTHS = (1, 2, 3)
"""The depths the toolbar's "Expand all" offers."""
DIRECTIONS = {"RIGHT": "Left to right", "DOWN": "Top down"}
"""The auto-layout's directions (elkjs's names), kept in the document as ``ui.layout.direction``."""
log = logging.getLogger(__name__)


@dataclass
class SavedAs:
    """The workspace file a document was last saved as or opened from, and its time then
    (``modified``: what tells that another tab has saved over it since)."""

    doc: GraphDoc  # the very document: after an undone load, the document on screen is another one
    name: str
    modified: float


class Editor:
    """One tab's editor of one document, kept in ``workspace``. ``draft``: the draft ``doc`` comes
    from (this tab's before a reload, or a closed tab's), restored with the document; without one
    the tab starts a draft of its own."""

    def __init__(self, doc: GraphDoc, workspace: Workspace, draft: Draft | None = None) -> None:
        self.session = EditSession(doc)
        self.workspace = workspace
        self.current = self.session  # what the canvas shows: the file, or an opened subgraph
        self.opened: list[tuple[str, EditSession]] = []  # (subgraph node id, its session), outermost first
        self.weights: dict | None = None  # the document's imported weights (an ONNX model's), once read
        self.weights_key: str | None = None  # the document's imported weights' key (``weights`` are theirs)
        self.client = ui.context.client
        self.draft_id = draft.id if draft else drafts.new_id()
        self.saved_as = SavedAs(doc, *draft.saved_as) if draft and draft.saved_as else None
        self.clean: dict[int, tuple[GraphDoc, str]] = {}  # id(doc) -> (doc, its JSON when last saved or loaded)
        if draft is None or not draft.unsaved:
            self._mark_clean(doc)
        self.file_view = draft.viewport if draft else None  # the file's pan and zoom, while a subgraph is shown
        # The modules drawn open at each level (the file's is ``()``; an opened subgraph's is its path),
        # and what the canvas draws now: None while the level has no subgraph, drawn as it is.
        self.view_states: dict[tuple[str, ...], ViewState] = dict(draft.views) if draft else {(): ViewState()}
        self.projection: Projection | None = None
        self.selected: list[str] = []
        self.saved_state: tuple | None = None  # ``tab_state()`` at the last autosave
        self.summary_revision = -1
        self.python_revision = -1
        self.tick_revision = -1  # the revision at the last tick: unchanged means no edit since
        self.autosaved_at = 0.0  # time.monotonic() at the last autosave
        self.problems_shown: tuple | None = None  # the diagnostics the problems panel lists
        # The canvas's messages that need more than the session's edit: a dialog, a new view, a selection.
        self.answers: dict[type[ops.EditOp], Callable[[Any], None]] = {
            ops.AddNode: lambda edit: self._select_added(self.edit(edit)),
            ops.GroupRequest: lambda request: self.group_dialog(request.ids or self.selected),
            ops.OpenSubgraph: lambda request: self.open_subgraph(request.id),
            ops.Expand: lambda request: self.toggle_module("expand", request.id),
            ops.Collapse: lambda request: self.toggle_module("collapse", request.id),
            ops.RenameRequest: lambda request: self.rename_dialog(request.id),
            ops.Part: self._on_part,
        }
        self.parts = ops.Parts()
        EDITORS[self.client.id] = self
        self._build()
        self._show_name(bool(draft and draft.unsaved))
        if draft and draft.panel:
            self.open_drawer(draft.panel)
        self._sync_weights()
        ui.timer(0.5, self._tick)

    # ----------------------------------------------------------------- layout
    def _build(self) -> None:
        ui.add_css(CSS)
        with ui.header().classes("items-center gap-1 px-3 py-1 bg-slate-800"):
            ui.label("NetCanvas").classes("text-lg font-bold mr-2")
            with ui.row().classes("items-center gap-1 mr-4 no-wrap"):
                self.title = ui.label(self.session.doc.name).classes("text-sm opacity-80 cursor-pointer") \
                    .tooltip("The graph's name: click to rename it").on("click", self.rename_graph_dialog) \
                    .mark("doc-name")
                self.unsaved_mark = ui.label("•").classes("text-sm").mark("unsaved") \
                    .tooltip("Changes not in the workspace yet: Ctrl+S keeps them")
            self._tool("note_add", "New", self.new_doc)
            self._tool("folder_open", "Open", self.open_dialog)
            self._tool("save", "Save", self.save_doc).tooltip("Save in the workspace (Ctrl+S)")
            with ui.button(icon="arrow_drop_down").props("flat dense color=white").classes("-ml-2").mark("save-menu"):
                with ui.menu():
                    ui.menu_item("Save as…", self.save_as_dialog).mark("save-as")
                    ui.menu_item("Download .json", self.download_doc).mark("download")
            self._tool("dashboard", "Templates", self.templates_dialog)
            ui.separator().props("vertical dark")
            self.undo_button = self._tool("undo", "Undo", self.undo)
            self.redo_button = self._tool("redo", "Redo", self.redo)
            self._tool("delete", "Delete", self.delete_selected)
            self._tool("group_work", "Group", lambda: self.group_dialog(self.selected))
            with ui.button("Auto-layout", icon="account_tree").props("flat dense no-caps color=white") \
                    .mark("auto-layout"):
                with ui.menu():
                    ui.menu_item("All blocks", lambda: self.canvas.auto_layout(False)).mark("layout-all")
                    ui.menu_item("Selection", lambda: self.canvas.auto_layout(True))
                    ui.separator()
                    for direction, text in DIRECTIONS.items():
                        ui.menu_item(f"All blocks, {text.lower()}", lambda d=direction: self.lay_out(d)) \
                            .mark(f"layout-{direction.lower()}")
            with ui.button("Modules", icon="unfold_more").props("flat dense no-caps color=white").mark("modules"):
                with ui.menu():
                    for depth in EXPAND_DEPTHS:
                        ui.menu_item(f"Expand all to depth {depth}", lambda d=depth: self.expand_all(d)) \
                            .mark(f"expand-depth-{depth}")
                    ui.menu_item("Collapse all", self.collapse_all).mark("collapse-all")
            ui.separator().props("vertical dark")
            with ui.button("Export", icon="ios_share").props("flat dense no-caps color=white").mark("export"):
                with ui.menu():
                    ui.menu_item("Python (.py)", lambda: self.export("python")).mark("export-python")
                    ui.menu_item("ONNX (.onnx)", lambda: self.export("onnx")).mark("export-onnx")
            self._tool("model_training", "Train", lambda: self.open_drawer("train"))
            self._tool("auto_awesome", "Sample", lambda: self.open_drawer("samples"))
            ui.space()
            self._tool("fit_screen", "Fit", lambda: self.canvas.fit())

        with ui.left_drawer(value=True, bordered=True).props("width=230").classes("p-2 gap-1"):
            Palette(on_add=self.add_block).mark("palette")

        with ui.right_drawer(value=True, bordered=True).props("width=300").classes("p-3 gap-2"):
            ui.label("Inspector").classes("text-overline")
            self.inspector = Inspector(self.session, lambda d: self.apply(d, from_inspector=True),
                                       on_open=self.open_subgraph, on_ungroup=self.ungroup)
            ui.separator()
            with ui.card().classes("w-full p-2").mark("summary"):
                ui.label("Summary").classes("text-overline")
                self.summary_label = ui.label("…").classes("text-sm").mark("summary-text")

        with ui.footer(value=True).classes("bg-white text-black p-0 border-t"):
            with ui.row().classes("w-full items-center gap-0"):
                with ui.tabs().props("dense align=left no-caps").classes("text-slate-700") as self.tabs:
                    self.tab_problems = ui.tab("problems", "Problems")
                    for name, label in (("train", "Training"), ("runs", "Runs"), ("samples", "Samples"),
                                        ("play", "Play"), ("python", "Python")):
                        ui.tab(name, label).on("click", lambda n=name: self.open_drawer(n))
                    self.tab_problems.on("click", lambda: self.open_drawer("problems"))
                ui.space()
                self.drawer_toggle = ui.button(icon="expand_less", on_click=self.toggle_drawer) \
                    .props("flat dense round").mark("drawer-toggle")
            self.tab_panels = ui.tab_panels(self.tabs, value="problems", on_change=self._tab_changed) \
                .classes("w-full nc-drawer")
            self.tab_panels.set_visibility(False)
            with self.tab_panels:
                with ui.tab_panel("problems").classes("p-2"):
                    self.problems = ui.column().classes("w-full gap-0").mark("problems")
                with ui.tab_panel("train").classes("p-2"):
                    from app.runs import TrainPanel
                    self.train_panel = TrainPanel(self)
                with ui.tab_panel("runs").classes("p-2"):
                    from app.runs import RunsPanel
                    self.runs_panel = RunsPanel(self)
                with ui.tab_panel("samples").classes("p-2"):
                    from app.runs import SamplePanel
                    self.sample_panel = SamplePanel(self)
                with ui.tab_panel("play").classes("p-2"):
                    from app.play import PlayPanel
                    self.play_panel = PlayPanel(self)
                with ui.tab_panel("python").classes("p-2"):
                    self.python_code = ui.code("", language="python").classes("w-full").mark("python-preview")

        ui.run_javascript(SAVE_KEYS)  # (a <script> added to a built page would not run)
        ui.on("netcanvas-save", self.save_doc)
        ui.on("netcanvas-save-as", self.save_as_dialog)
        with ui.element("div").classes("nc-stage"):
            self.canvas = Canvas(self._view(self.session), on_edit=self.on_edit, on_select=self.on_select,
                                 viewport=self.file_view).mark("canvas")
            # A .json or .onnx file dropped on the canvas goes up as an upload would (over HTTP:
            # the page's socket takes no more than a megabyte a message).
            self.dropped = FileOpener(self.open_file).classes("hidden").mark("drop-upload")
            self.canvas.on("files", js_handler=f"""(files) => {{
                const uploader = getElement({self.dropped.id}).$refs.qRef;
                uploader.reset();  // forget the files dropped before
                uploader.addFiles(files);
            }}""")
            self.crumbs = ui.row().classes("nc-crumbs items-center gap-1").mark("breadcrumb")
            self.crumbs.set_visibility(False)
        self.refresh_problems()
        self._history_buttons()
        self.train_panel.prepare()

    def _tool(self, icon: str, text: str, handler) -> ui.button:
        return ui.button(text, icon=icon, on_click=handler).props("flat dense no-caps color=white").mark(text.lower())

    # ----------------------------------------------------------------- edits
    def apply(self, delta: Delta, from_inspector: bool = False) -> None:
        """Show an edit's result everywhere: canvas, inspector, problems, history buttons."""
        if delta.document:
            self._document_changed()
            return
        self._draw(delta)
        if delta.nodes or delta.removed:
            self.refresh_problems()
        selected = self.inspector.node_id
        if selected in delta.ids:
            self.selected = [delta.ids[selected]]
            self.inspector.show(self.selected[0])
            self.canvas.select(self.selected)
        elif selected is not None and (selected in delta.nodes or selected in delta.removed):
            if from_inspector:
                self.inspector.refresh_results()
            else:
                self.inspector.show(selected if selected in self.session.analysis.nodes else None)
        self._history_buttons()

    def on_edit(self, payload: Any) -> None:
        """A message from the canvas: an edit of the document, or a request the editor answers."""
        try:
            message = ops.parse_edit(payload)
        except EditError as exc:  # the canvas and the protocol are out of step: a bug, but not the user's to see fail
            log.warning("refused a message from the canvas: %s", exc)
            ui.notify(f"Edit refused: {exc}", type="negative")
            return
        self._take(message)

    def _take(self, message: ops.EditOp) -> None:
        """A whole message: made on the drawn view, translated to the document's ids; then answered or applied."""
        translate = IN_DOCUMENT.get(type(message))
        if translate is not None and self.projection is not None:  # made on the drawn view: frames, stacks
            message = translate(self.projection, message)
        self.answers.get(type(message), self.edit)(message)

    def _on_part(self, part: ops.Part) -> None:
        """A part of a message too long for one websocket message: the message once all are in."""
        try:
            message = self.parts.add(part)
        except EditError as exc:
            ui.notify(f"Edit refused: {exc}", type="warning")
            return
        if message is not None:
            self._take(message)

    def edit(self, edit: ops.SessionEdit) -> Delta | None:
        """Make an edit on the canvas's session and show it; None when the session refused it."""
        try:
            delta = edit.apply(self.current)
        except EditError as exc:
            ui.notify(f"Edit refused: {exc}", type="warning")
            return None
        self.apply(delta)
        return delta

    def on_select(self, node_ids: list[str]) -> None:
        self.selected = [n for n in node_ids if n in self.current.analysis.nodes]
        shown = self.selected[0] if len(self.selected) == 1 else None
        if shown != self.inspector.node_id:
            self.inspector.show(shown)

    def add_block(self, type_id: str) -> None:
        """Palette click: add the block in the middle of the view (down and right of a block
        already there), or right of everything while the canvas has not said where it looks."""
        position = None
        if self.canvas.center is not None:
            x, y = self.canvas.center[0] - BLOCK_MIDDLE[0], self.canvas.center[1] - BLOCK_MIDDLE[1]
            dx, dy = clear_offset([(x, y)], self.current.positions.values(), (40, 40), first=0)
            position = (round(x + dx), round(y + dy))
        delta = self.current.add_node(type_id, position=position)
        self.apply(delta)
        self._select_added(delta)

    def _select_added(self, delta: Delta | None) -> None:
        """Select the block an edit added, on the canvas and in the inspector."""
        if delta is None or not delta.nodes:
            return
        self.selected = list(delta.nodes)
        self.inspector.show(self.selected[0])
        self.canvas.select(self.selected)

    def undo(self) -> None:
        self.apply(self.current.undo())

    def redo(self) -> None:
        self.apply(self.current.redo())

    def delete_selected(self) -> None:
        if self.selected:
            self.apply(self.current.remove_nodes(self.selected))
            self.selected = []

    def _history_buttons(self) -> None:
        self.undo_button.set_enabled(self.current.can_undo)
        self.redo_button.set_enabled(self.current.can_redo)

    # ----------------------------------------------------------------- modules drawn open
    def _view(self, session: EditSession) -> dict:
        """The whole view of a level for the canvas: its subgraphs drawn as this tab's state says."""
        state = self.view_states.setdefault(session.path, ViewState())
        self.projection = expand.project(session, state) if expand.has_subgraphs(session) else None
        view = self.projection.view(session.doc.name) if self.projection else session.view()
        return {**view, "direction": self.layout_direction()}

    def layout_direction(self) -> str:
        """The document's auto-layout direction: left to right unless it says top down."""
        layout = self.session.doc.ui.get("layout")
        direction = layout.get("direction") if isinstance(layout, dict) else None
        return direction if direction in DIRECTIONS else "RIGHT"

    def lay_out(self, direction: str) -> None:
        """Lay every block out towards ``direction``, which the document keeps for the next layouts."""
        self.session.doc.ui["layout"] = {"direction": direction}
        self.canvas.auto_layout(False, direction)

    def _draw(self, delta: Delta) -> None:
        """Show an edit on the canvas: as it is where the level draws as it is, else as the change
        between what was drawn and what is drawn now."""
        before = self.projection
        followed = expand.follow(before, delta) if before is not None else None
        if followed is not None:
            self.canvas.apply(followed)
            return
        if before is None:
            self.canvas.apply(delta)
            if not expand.has_subgraphs(self.current):
                return
            before = expand.project(self.current, ViewState(), stacks=False)  # what the canvas shows now
        self._view(self.current)
        after = self.projection or expand.project(self.current, ViewState(), stacks=False)
        change = expand.diff(before, after)
        change.ids = delta.ids
        self.canvas.apply(change)

    def _set_view_state(self, state: ViewState) -> None:
        self.view_states[self.current.path] = state
        self._draw(Delta())

    def toggle_module(self, op: str, view_id: str) -> None:
        """A click on a block's expand or collapse control."""
        if self.projection is not None:
            self._set_view_state(expand.toggle(self.view_states[self.current.path], self.projection, op, view_id))

    def expand_all(self, depth: int) -> None:
        """Draw every module open, ``depth`` levels deep."""
        self._set_view_state(expand.expand_all(self.current, depth))

    def collapse_all(self) -> None:
        self._set_view_state(ViewState())

    # ----------------------------------------------------------------- subgraphs and names
    def group_dialog(self, node_ids: list[str]) -> None:
        """Ask for a name, then group ``node_ids`` into a subgraph."""
        node_ids = [n for n in node_ids if n in self.current.analysis.nodes]
        if not node_ids:
            ui.notify("Select the blocks to group first (shift-drag draws a selection box)", type="warning")
            return
        if self.current is not self.session:
            ui.notify("Close the subgraph first: groups are made at the top level of the file", type="warning")
            return
        self._name_dialog(f"Group {len(node_ids)} block(s) into a subgraph", "subgraph name",
                          self.session.fresh_subgraph_name(), "Group", "group",
                          lambda name: self.group(node_ids, name))

    def group(self, node_ids: list[str], name: str | None = None) -> bool:
        before = set(self.current.analysis.nodes)
        try:
            delta = self.current.group(node_ids, name or None)
        except EditError as exc:
            ui.notify(f"Cannot group: {exc}", type="warning")
            return False
        self.apply(delta)
        for node_id in delta.nodes:
            if node_id not in before:
                self.focus(node_id)  # the new subgraph node
        return True

    def ungroup(self, node_id: str) -> None:
        try:
            self.apply(self.current.ungroup(node_id))
        except EditError as exc:
            ui.notify(f"Cannot ungroup: {exc}", type="warning")

    def open_subgraph(self, node_id: str) -> None:
        """Show the inside of a subgraph node (``node_id`` may be a block drawn inside an expanded one:
        each subgraph around it opens in turn); the breadcrumb leads back."""
        session = self.current
        opened = []
        try:
            for nid in expand.document_path(node_id):
                session = session.open_subgraph(nid)
                opened.append((nid, session))
        except EditError as exc:
            ui.notify(str(exc), type="warning")
            return
        if self.current is self.session:
            self.file_view = self.canvas.viewport
        self.opened.extend(opened)
        self._show(session)

    def close_subgraph(self, levels: int = 1) -> None:
        """Go back out ``levels`` subgraphs (the breadcrumb's links)."""
        if not self.opened:
            return
        node_id = self.opened[-levels][0]
        del self.opened[-levels:]
        self._show(self.opened[-1][1] if self.opened else self.session)
        self.focus(node_id)

    def _show(self, session: EditSession) -> None:
        """Put one level of the file on the canvas (the file itself, or an opened subgraph)."""
        self.current = session
        self.inspector.session = session
        self.inspector.show(None)
        self.selected = []
        self.canvas.load(self._view(session))
        self.refresh_problems()
        self._history_buttons()
        self._breadcrumb()

    def _breadcrumb(self) -> None:
        self.crumbs.clear()
        self.crumbs.set_visibility(bool(self.opened))
        with self.crumbs:
            levels = [(self.session.doc.name or "graph", len(self.opened))]
            levels += [(f"{nid} ({s.doc.name})", len(self.opened) - 1 - i) for i, (nid, s) in enumerate(self.opened)]
            for i, (text, back) in enumerate(levels):
                if i:
                    ui.icon("chevron_right").classes("text-grey-7")
                if back:
                    ui.link(text).classes("cursor-pointer text-primary").on(
                        "click", lambda b=back: self.close_subgraph(b)).mark(f"crumb-{i}")
                else:
                    ui.label(text).classes("font-bold")
            ui.button("Close", icon="close", on_click=lambda: self.close_subgraph(1)) \
                .props("flat dense no-caps size=sm").mark("close-subgraph")

    def rename_dialog(self, node_id: str) -> None:
        if node_id not in self.current.analysis.nodes:
            return
        self._name_dialog(f"Rename {node_id}", "new id", node_id, "Rename", "rename",
                          lambda new_id: self.rename(node_id, new_id))

    @staticmethod
    def _name_dialog(title: str, label: str, value: str, action: str, mark: str,
                     accept: Callable[[str], bool]) -> None:
        """Ask for one name; ``accept(name)`` applies it and says whether the dialog may close."""
        with _transient_dialog() as dialog, ui.card().classes("w-96"):
            ui.label(title).classes("text-h6")
            name = ui.input(label, value=value).props("dense outlined autofocus").classes("w-full") \
                .mark(f"{mark}-name")

            def done() -> None:
                if accept((name.value or "").strip()):
                    dialog.close()
            name.on("keydown.enter", done)
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button(action, on_click=done).mark(f"{mark}-ok")
        dialog.open()

    def rename(self, node_id: str, new_id: str) -> bool:
        try:
            delta = self.current.rename(node_id, new_id)
        except EditError as exc:
            ui.notify(str(exc), type="warning")
            return False
        self.apply(delta)
        if new_id in self.current.analysis.nodes:
            self.focus(new_id)
        return True

    # ----------------------------------------------------------------- documents
    def load(self, doc: GraphDoc) -> None:
        """Make ``doc`` (one made here: New) the document, as one undoable step."""
        self._load(EditSession(doc))

    def _load(self, prepared: EditSession) -> None:
        self._mark_clean(prepared.doc)  # loaded as it is kept (a file, a template): nothing unsaved yet
        self.apply(self.session.load(prepared))

    async def open_doc(self, read: Callable[[], tuple[GraphDoc, dict | None]], name: str) -> bool:
        """Make what ``read`` returns (a document, and the weights that came with it, if any) the
        document, as one undoable step; False when it cannot be opened, and the open document stays.

        Reading and analysing run in a worker thread, under a deadline of ``LOAD_SECONDS``: a slow
        or hostile file stalls no tab, and one that takes longer is refused with a notification.
        """
        try:
            # The analysis stops itself at its deadline; the wait's own limit covers a reader that
            # cannot be stopped (an ONNX import), which is left to finish in its thread.
            opened = await asyncio.wait_for(run.io_bound(_prepared, read, self.workspace),
                                            timeout=2 * LOAD_SECONDS)
        except GraphError as exc:
            ui.notify(_cannot_open(name, exc), type="negative", multi_line=True)
            return False
        except TimeoutError:
            opened = None
        if opened is None:  # timed out, or the app is shutting down
            ui.notify(f"Cannot open {name}: reading it took longer than {LOAD_SECONDS:g} s", type="negative")
            return False
        session, weights = opened
        if weights is not None:  # already read: the document's key needs no second reading
            self.weights_key, self.weights = session.doc.ui[WEIGHTS], weights
        self._load(session)
        return True

    def _document_changed(self) -> None:
        """Another document took this one's place (a load, or its undo): show it all afresh."""
        self.opened = []
        self.view_states = {(): ViewState()}
        self._show_name(self.unsaved())
        self._show(self.session)
        self.train_panel.prepare()
        self.summary_revision = self.python_revision = -1
        self._sync_weights()

    def _sync_weights(self) -> None:
        """Follow the document's imported weights when another document takes this one's place.
        They are read only when needed (``imported_weights``): a reload reads no weights to show
        the page, it only checks that they are still kept."""
        key = self.session.doc.ui.get(WEIGHTS)
        if key == self.weights_key:
            return
        self.weights_key, self.weights = key, None
        if key and not self.has_imported_weights():
            ui.notify(f"The imported weights are gone from {self.workspace.weights_dir} (removed?): open the "
                      "model again", type="warning", multi_line=True)

    def has_imported_weights(self) -> bool:
        """Whether the document came with weights (an ONNX model's) that are still at hand."""
        if self.weights is not None:
            return True
        try:
            return self.weights_key is not None and self.workspace.weights_path(self.weights_key).is_file()
        except GraphError:  # a key that names no file the workspace would keep
            return False

    def imported_weights(self) -> dict:
        """The document's imported weights, read from the workspace the first time they are needed
        (an export: call it in a worker thread). A GraphError if it has none, or if they are gone."""
        weights, key = self.weights, self.weights_key
        if weights is None:
            if key is None:
                raise GraphError("this graph has no imported weights (open an .onnx file with weights)")
            weights = self.workspace.load_weights(key)
            if self.weights_key == key:  # still the document's (no other load meanwhile)
                self.weights = weights
        return weights

    def new_doc(self) -> None:
        self.load(GraphDoc(name="untitled"))

    # ----------------------------------------------------------------- the workspace's files
    def _saved_as(self) -> SavedAs | None:
        """The workspace file of the document on screen, if it has one."""
        saved = self.saved_as
        return saved if saved is not None and saved.doc is self.session.doc else None

    def save_doc(self) -> None:
        """Save (Ctrl+S) in the workspace, under the name the document was saved as or opened
        from; the first time, ask for one. A file another tab saved over since is not replaced unasked."""
        saved = self._saved_as()
        if saved is None:
            self.save_as_dialog()
            return
        try:
            modified = self.workspace.graph_path(saved.name).stat().st_mtime
        except (OSError, GraphError):
            modified = None  # removed meanwhile: save it again
        if modified is not None and modified != saved.modified:
            self._confirm(f"{saved.name} changed since you opened or saved it (in another tab?). Replace it?",
                          lambda: self._save(saved.name))
            return
        self._save(saved.name)

    def save_as_dialog(self) -> None:
        saved = self._saved_as()
        self._name_dialog("Save in the workspace as", "graph name", saved.name if saved else self.session.doc.name,
                          "Save", "save", self._save_as)

    def _save_as(self, name: str) -> bool:
        """Save under ``name`` (from the dialog); saving over another graph asks first."""
        saved = self._saved_as()
        if saved is not None and saved.name == name:
            self.save_doc()
            return True
        try:
            taken = self.workspace.graph_path(name).exists()
        except GraphError as exc:
            ui.notify(f"Cannot save: {exc.diagnostics[0].message}", type="warning", multi_line=True)
            return False
        if taken:
            self._confirm(f"{name} already exists in the workspace. Replace it?", lambda: self._save(name))
            return True
        return self._save(name)

    def _save(self, name: str) -> bool:
        try:
            path = self.workspace.save_graph(name, self.session.doc, overwrite=True)
            modified = path.stat().st_mtime
        except GraphError as exc:
            ui.notify(f"Cannot save: {exc.diagnostics[0].message}", type="negative", multi_line=True)
            return False
        self.session.doc.name = name
        self.saved_as = SavedAs(self.session.doc, name, modified)
        self._mark_clean()
        self._show_name(False)
        ui.notify(f"Saved {name} in {self.workspace.graphs_dir}", type="positive")
        return True

    @staticmethod
    def _confirm(question: str, replace: Callable[[], Any]) -> None:
        """Ask before replacing a file; ``replace()`` if the user says so."""
        with _transient_dialog() as dialog, ui.card().classes("w-96"):
            ui.label(question)

            def accepted() -> None:
                dialog.close()
                replace()
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat").mark("overwrite-cancel")
                ui.button("Replace", on_click=accepted).props("color=negative").mark("overwrite-ok")
        dialog.open()

    def rename_graph_dialog(self) -> None:
        self._name_dialog("Rename the graph", "graph name", self.session.doc.name, "Rename", "graph",
                          self.rename_graph)

    def rename_graph(self, name: str) -> bool:
        """Give the graph a new name (its workspace file too, if it has one)."""
        saved = self._saved_as()
        kept = saved is not None and not self.unsaved()  # the file holds the document: it still will
        try:
            check_name(name)
            if saved is not None and saved.name != name:
                path = self.workspace.rename_graph(saved.name, name)
                self.saved_as = SavedAs(self.session.doc, name, path.stat().st_mtime)
        except GraphError as exc:
            ui.notify(f"Cannot rename: {exc.diagnostics[0].message}", type="warning", multi_line=True)
            return False
        self.session.doc.name = name
        if kept:
            self._mark_clean()
        self._show_name(self.unsaved())
        return True

    def download_doc(self) -> None:
        """The document as a .json file to keep elsewhere (without the workspace's weights key)."""
        doc = self.session.doc
        ui_data = {k: v for k, v in doc.ui.items() if k != WEIGHTS}
        ui.download.content(dumps(doc.model_copy(update={"ui": ui_data})).encode(), f"{doc.name or 'graph'}.json",
                            "application/json")

    def open_dialog(self) -> None:
        """The workspace's graphs, recent first, after what closed tabs left unsaved (listed once read,
        in a worker thread), and an upload from the computer."""
        with _transient_dialog() as dialog, ui.card().classes("w-[640px] max-w-full"):
            ui.label("Open").classes("text-h6")
            left = ui.list().props("dense separator").classes("w-full max-h-48 overflow-auto").mark("open-drafts")
            listing = ui.list().props("dense separator").classes("w-full max-h-96 overflow-auto").mark("open-graphs")
            ui.label("From your computer: a graph (.json) or an ONNX model (.onnx); you can also drop one "
                     "on the canvas.").classes("text-sm mt-2")
            FileOpener(lambda name, data: self._open_upload(name, data, dialog)) \
                .props("accept=.json,.onnx").classes("w-full").mark("open-upload")
        dialog.open()
        background_tasks.create(self._list_graphs(listing, left, dialog), name="list the workspace's graphs")

    async def _list_graphs(self, listing: ui.list, left: ui.list, dialog: ui.dialog) -> None:
        recoverable = await run.io_bound(drafts.recoverable, self.workspace, drafts_in_use()) or []
        entries = await run.io_bound(self.workspace.graphs) or []
        if listing.is_deleted:
            return  # closed meanwhile
        if recoverable:
            with left:
                ui.item_label("Unsaved, from tabs closed before").props("header").classes("p-1")
                for draft in recoverable:
                    self._draft_row(draft, dialog)
        with listing:
            if not entries:
                ui.label(f"No graphs in {self.workspace.graphs_dir} yet: Save puts them there.") \
                    .classes("text-sm text-grey-7")
            for entry in entries:
                self._graph_row(entry, dialog)

    def _graph_row(self, entry: GraphEntry, dialog: ui.dialog) -> None:
        if entry.error:
            with ui.item().props("disable").mark(f"open-graph-{entry.name}"):
                with ui.item_section():
                    ui.item_label(entry.name)
                    ui.item_label(entry.error).props("caption").classes("text-red-8")
            return
        size = f"{entry.blocks} blocks · " + (f"{entry.params:,} params" if entry.params is not None else "has errors")
        with ui.item(on_click=lambda: self._open_saved(entry, dialog)).mark(f"open-graph-{entry.name}"):
            with ui.item_section():
                ui.item_label(entry.name).classes("font-bold")
                ui.item_label(size).props("caption")
            with ui.item_section().props("side"):
                ui.item_label(_ago(entry.modified)).props("caption")

    def _draft_row(self, entry: DraftEntry, dialog: ui.dialog) -> None:
        blocks = entry.payload.get("blocks")
        with ui.item(on_click=lambda: self._open_draft(entry, dialog)).mark(f"open-draft-{entry.id}"):
            with ui.item_section():
                ui.item_label(entry.name).classes("font-bold")
                ui.item_label(f"{blocks} blocks · unsaved" if isinstance(blocks, int) else "unsaved").props("caption")
            with ui.item_section().props("side"):
                ui.item_label(_ago(entry.time)).props("caption")

    async def _open_draft(self, entry: DraftEntry, dialog: ui.dialog) -> None:
        """Open what a closed tab left unsaved (one undoable load); this tab's draft takes it over."""
        dialog.close()
        with self.client:  # the page's: the closed dialog, whose row called, is gone with its slots
            await self._adopt_draft(entry)

    async def _adopt_draft(self, entry: DraftEntry) -> None:
        if entry.id in drafts_in_use():
            ui.notify(f"{entry.name} is open in another tab now", type="warning")
            return
        try:
            draft = drafts.read(entry)
        except GraphError as exc:
            ui.notify(_cannot_open(entry.name, exc), type="negative", multi_line=True)
            return
        if not await self.open_doc(lambda: (draft.doc, None), entry.name):
            return
        self.saved_as = SavedAs(self.session.doc, *draft.saved_as) if draft.saved_as else None
        self.clean.pop(id(self.session.doc), None)  # what the draft holds is saved nowhere else
        self._show_name(True)
        self._autosave_if_changed()
        await drafts.written(self.draft_id)  # kept here before the closed tab's draft goes
        await run.io_bound(self.workspace.delete_draft, entry.id)

    async def _open_saved(self, entry: GraphEntry, dialog: ui.dialog) -> None:
        dialog.close()
        if await self.open_doc(lambda: (self.workspace.load_graph(entry.name), None), entry.name):
            self.saved_as = SavedAs(self.session.doc, entry.name, entry.modified)

    async def _open_upload(self, name: str, data: bytes, dialog: ui.dialog) -> bool:
        opened = await self.open_file(name, data)
        if opened:
            dialog.close()
        return opened

    async def open_file(self, name: str, data: bytes) -> bool:
        """Open a file from the user's computer (uploaded, or dropped on the canvas): a graph (.json)
        or an ONNX model (.onnx). False, with one message naming the file, when it cannot be opened."""
        reader = READERS.get(Path(name).suffix.lower())
        if reader is None:
            ui.notify(f"Cannot open {name}: NetCanvas opens graphs (.json) and ONNX models (.onnx)", type="negative")
            return False
        if not await self.open_doc(lambda: reader(data, name), name):
            return False
        if self.weights is None:
            ui.notify(f"Opened {name}")
        else:
            ui.notify(f"Opened {name} with its weights: Export and Train offer them while the graph still fits "
                      "them.", multi_line=True, timeout=8000)
        return True

    def templates_dialog(self) -> None:
        with ui.dialog() as dialog, ui.card().classes("w-[720px] max-w-full"):
            ui.label("Templates").classes("text-h6")
            with ui.grid(columns=3).classes("w-full gap-2"):
                for name in gc.templates():
                    with ui.card().classes("p-2 cursor-pointer").mark(f"template-{name}") \
                            .on("click", lambda n=name: self._template_chosen(dialog, n)):
                        ui.label(name).classes("font-bold")
        dialog.open()

    async def _template_chosen(self, dialog: ui.dialog, name: str) -> None:
        dialog.close()
        await self.open_template(name)

    async def open_template(self, name: str) -> bool:
        return await self.open_doc(lambda: (gc.template(name), None), name)

    # ----------------------------------------------------------------- panels
    def refresh_problems(self) -> None:
        diagnostics = self.current.analysis.diagnostics
        if tuple(diagnostics) == self.problems_shown:
            return  # the same list: new elements would only make the page's Tailwind rescan every element
        self.problems_shown = tuple(diagnostics)
        errors = sum(d.severity == "error" for d in diagnostics)
        self.tab_problems.props(f'label="Problems ({len(diagnostics)})"')
        self.tab_problems.classes(replace="text-red-8" if errors else "")
        self.problems.clear()
        with self.problems:
            if not diagnostics:
                ui.label("No problems.").classes("text-sm text-grey-7")
            for d in diagnostics[:PROBLEMS_SHOWN]:
                icon = "error" if d.severity == "error" else "warning"
                with ui.row().classes("items-center gap-2 cursor-pointer nc-problem") \
                        .on("click", lambda n=d.node_id: self.focus(n)).mark(f"problem-{d.node_id}"):
                    ui.icon(icon, color="red-8" if d.severity == "error" else "orange-8").classes("text-base")
                    where = f"{d.node_id}: " if d.node_id else ""
                    hint = f" ({d.hint})" if d.hint else ""
                    ui.label(f"{where}{d.message}{hint}").classes("text-sm")

    def focus(self, node_id: str | None) -> None:
        if node_id is None or node_id not in self.current.analysis.nodes:
            return
        self.selected = [node_id]
        self.inspector.show(node_id)
        self.canvas.focus_node(node_id)

    def refresh_summary(self) -> None:
        try:
            table = gc.summary(self.session.doc, analysis=self.session.analysis)
        except GraphError as exc:
            self.summary_label.text = f"Fix {len(exc.diagnostics)} problem(s) to count parameters."
            return
        self.summary_label.text = (f"{table.total_params:,} parameters · {human(table.total_macs)} MACs per sample · "
                                   f"{len(self.session.doc.nodes)} blocks")

    def refresh_python(self) -> None:
        try:
            from graphcore.interchange.codegen import to_python
            self.python_code.content = to_python(self.session.doc)
        except ImportError:
            self.python_code.content = "# code generation is not available in this build"
        except GraphError as exc:
            self.python_code.content = "# fix these problems to generate code:\n" + "\n".join(
                f"# {d}" for d in exc.diagnostics)

    def open_drawer(self, tab: str) -> None:
        self.tab_panels.value = tab
        self.tabs.value = tab
        self.tab_panels.set_visibility(True)
        self.drawer_toggle.props("icon=expand_more")

    def drawer_shows(self, tab: str) -> bool:
        """Whether the bottom drawer is open on ``tab``."""
        return self.tab_panels.visible and self.tab_panels.value == tab

    def toggle_drawer(self) -> None:
        visible = not self.tab_panels.visible
        self.tab_panels.set_visibility(visible)
        self.drawer_toggle.props(f"icon={'expand_more' if visible else 'expand_less'}")

    def _tab_changed(self, e: events.ValueChangeEventArguments) -> None:
        if e.value == "python":
            self.refresh_python()
            self.python_revision = self.session.revision

    def _tick(self) -> None:
        """Work that may wait half a second: summary, autosave, the code preview."""
        revision = self.session.revision
        # The summary takes tens of milliseconds on a big graph, on the event loop: while edits come
        # in, it would hold up their replies. It waits until a tick sees no edit since the last one.
        quiet = revision == self.tick_revision
        self.tick_revision = revision
        if quiet and self.summary_revision != revision:
            self.summary_revision = revision
            self.refresh_summary()
        # So does the autosave of a big graph (its JSON): while edits come in, it waits for a quiet
        # tick too, but never longer than AUTOSAVE_WAIT.
        if quiet or len(self.session.doc.nodes) < QUICK_AUTOSAVE_NODES \
                or time.monotonic() - self.autosaved_at >= AUTOSAVE_WAIT:
            self._autosave_if_changed()
        if self.tab_panels.visible and self.tab_panels.value == "python" and self.python_revision != revision:
            self.python_revision = revision
            self.refresh_python()

    def _autosave_if_changed(self) -> None:
        state = self.tab_state()
        if state != self.saved_state and self.autosave():
            self.saved_state = state
            self.autosaved_at = time.monotonic()

    def tab_state(self) -> tuple:
        """What a reload restores, in brief: when it changes, the autosave runs. (A move inside an
        opened subgraph changes only that level's revision.)"""
        saved = self._saved_as()
        return (self.session.revision, id(self.current), self.current.revision, self.session.doc.name,
                saved and (saved.name, saved.modified), self.open_panel(), self.file_viewport(),
                tuple(self.view_states.items()))

    def open_panel(self) -> str | None:
        """The bottom drawer's tab, when the drawer is open."""
        return self.tab_panels.value if self.tab_panels.visible else None

    def file_viewport(self) -> dict[str, float] | None:
        """The file's pan and zoom (what a reload shows): the canvas's while it shows the file, else
        as they were when a subgraph was opened."""
        return self.canvas.viewport if self.current is self.session else self.file_view

    def autosave(self) -> bool:
        """Write the tab's draft (in a worker thread) and keep its id in the tab's storage; refresh
        the unsaved mark. False when the page is not connected: not yet, or no more (a reload's new
        page has the draft now)."""
        if not self.client.has_socket_connection:
            return False
        app.storage.tab[drafts.DRAFT_KEY] = self.draft_id
        text = dumps(self.session.doc, compact=True)
        unsaved = self.unsaved(text)
        self._show_name(unsaved)
        saved = self._saved_as()
        drafts.write(self.workspace, self.draft_id, drafts.payload(
            self.session.doc, text, saved_as=saved and (saved.name, saved.modified), panel=self.open_panel(),
            viewport=self.file_viewport(), unsaved=unsaved, views=self.view_states))
        return True

    def unsaved(self, text: str | None = None) -> bool:
        """Whether the document differs from what it was when last saved, opened or loaded (``text``:
        its JSON, when at hand). A document that came unsaved (in a draft) stays so until saved."""
        clean = self.clean.get(id(self.session.doc))
        if clean is None or clean[0] is not self.session.doc:
            return True
        return clean[1] != (dumps(self.session.doc, compact=True) if text is None else text)

    def _mark_clean(self, doc: GraphDoc | None = None) -> None:
        """``doc`` (the document on screen) as it is now is kept somewhere: it has no unsaved changes."""
        doc = self.session.doc if doc is None else doc
        self.clean[id(doc)] = (doc, dumps(doc, compact=True))

    def _show_name(self, unsaved: bool) -> None:
        """The graph's name in the title, with the unsaved mark (•) while it has unsaved changes."""
        self.title.text = self.session.doc.name
        self.unsaved_mark.set_visibility(unsaved)

    # ----------------------------------------------------------------- export
    def export(self, fmt: str) -> None:
        """Export the open graph as Python or ONNX; a dialog asks with which weights."""
        from app.export import export_dialog

        problems = [d for d in self.session.analysis.diagnostics if d.severity == "error"]
        if problems:
            ui.notify(f"Cannot export: {len(problems)} problem(s); see Problems", type="negative")
            self.open_drawer("problems")
            return
        export_dialog(self, fmt)


def drafts_in_use(but_tab: str | None = None) -> set[str]:
    """The drafts of the tabs open now (a closed tab's page has lost its connection), but those of the
    browser tab ``but_tab`` (its page from before a reload, on its way out)."""
    return {e.draft_id for e in list(EDITORS.values()) if e.client.tab_id not in (None, but_tab)}


def _transient_dialog() -> ui.dialog:
    """A dialog that removes itself from the page once closed. It belongs to the page, not to
    what opened it: a dialog opened from another dialog outlives that one."""
    with ui.context.client.layout:
        dialog = ui.dialog()
    dialog.on_value_change(lambda e: None if e.value else dialog.delete())
    return dialog


class FileOpener(ui.upload):
    """An uploader whose file ``open_file(name, data)`` opens (True when it did). A file that cannot
    be opened fails its upload, so the uploader marks it failed, not uploaded."""

    def __init__(self, open_file: Callable[[str, bytes], Awaitable[bool]]) -> None:
        super().__init__(auto_upload=True)
        self.open_file = open_file

    async def handle_uploads(self, files: list[ui.upload.FileUpload]) -> None:
        """Open each file now (not in a background task, as ``ui.upload`` does), and answer the
        upload with an error for one that cannot be opened."""
        for file in files:
            data = await file.read()
            with self:  # the upload's request comes in a task of its own: notifications need the page
                opened = await self.open_file(file.name, data)
            if not opened:
                raise HTTPException(status_code=422, detail=f"cannot open {file.name}")


def _prepared(read: Callable[[], tuple[GraphDoc, dict | None]],
              workspace: Workspace) -> tuple[EditSession, dict | None]:
    """Read a document and analyse it (in a worker thread), within ``LOAD_SECONDS``; weights that
    came with it are kept in the workspace, under the key the document holds."""
    with Deadline(LOAD_SECONDS):
        doc, weights = read()
        session = EditSession(doc)
    if weights is not None:
        workspace.save_weights(doc.ui[WEIGHTS], weights)
    return session, weights


def _cannot_open(name: str, exc: GraphError) -> str:
    """One message naming the user's file (most messages start with it already)."""
    reason = "; ".join(d.message for d in exc.diagnostics)
    return f"Cannot open {reason}" if reason.startswith(name) else f"Cannot open {name}: {reason}"


def _ago(moment: float) -> str:
    """When, in words a list can show: ``just now``, ``5 min ago``, ``3 h ago``, else the date."""
    seconds = time.time() - moment
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h ago"
    return time.strftime("%Y-%m-%d", time.localtime(moment))


def _parse(data: bytes, name: str) -> tuple[GraphDoc, None]:
    """An uploaded graph file (it comes without weights)."""
    return loads(data.decode("utf-8", errors="replace"), name), None


def _import_onnx(data: bytes, name: str) -> tuple[GraphDoc, dict]:
    """``gc.from_onnx`` on uploaded bytes (it reads a file: write them to a temporary one, whose
    path no message shows). The document holds its weights' workspace key."""
    from graphcore.interchange.onnx_import import from_onnx

    folder = Path(tempfile.mkdtemp(prefix="netcanvas-onnx-"))
    path = folder / Path(name).name
    path.write_bytes(data)
    try:
        doc, weights = from_onnx(path)
    except GraphError as exc:
        raise GraphError("; ".join(d.message for d in exc.diagnostics).replace(str(path), name)) from None
    finally:
        path.unlink(missing_ok=True)
        folder.rmdir()
    doc.ui[WEIGHTS] = weights_key(data)
    return doc, weights


READERS: dict[str, Callable[[bytes, str], tuple[GraphDoc, dict | None]]] = {".json": _parse, ".onnx": _import_onnx}
"""How to read a file from the user's computer, by its suffix."""
IN_DOCUMENT: dict[type[ops.EditOp], Callable[[Projection, Any], ops.EditOp]] = {
    ops.Move: lambda view, m: ops.Move(positions=view.document_positions(m.positions)),
    ops.Remove: lambda view, m: ops.Remove(nodes=view.document_ids(m.nodes), edges=view.document_edges(m.edges)),
    ops.Duplicate: lambda view, m: ops.Duplicate(ids=view.document_ids(m.ids)),
    ops.GroupRequest: lambda view, m: ops.GroupRequest(ids=view.document_ids(m.ids)),
}
"""The canvas's messages that name blocks as drawn (a frame ``id/``, a stack under its first node's id), in
the document's ids: what each drawn block stands for."""


CSS = """
.nc-stage { position: absolute; inset: 0; }
.q-page { position: relative; }
.nicegui-content { padding: 0; }
.nc-drawer { height: 260px; overflow: auto; }
.nc-problem:hover { background: #f1f5f9; }
.nc-crumbs { position: absolute; top: 8px; left: 12px; z-index: 10; background: rgba(255, 255, 255, 0.92);
  border: 1px solid #cbd2d9; border-radius: 6px; padding: 2px 8px; font-size: 13px; }
.q-drawer--right .q-field--with-bottom { padding-bottom: 0; }
.q-drawer--right .q-field__bottom { position: static; transform: none; padding: 2px 4px 6px; }
"""
