"""One browser tab's editor: toolbar, palette, canvas, inspector, summary and bottom drawer.

Each tab has its own ``Editor`` and its own ``EditSession``; the document is autosaved to the
tab's storage (``app.storage.tab``), so a reload restores it. ``session`` is the whole file's
session; ``current`` is the one on the canvas: the same, or the inside of an opened subgraph
(a breadcrumb leads back), whose edits re-infer the shapes of the file around it.
"""

from __future__ import annotations

import logging
import tempfile
import weakref
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nicegui import app, events, run, ui

import blocks
import graphcore as gc
from app.canvas import Canvas
from app.inspector import Inspector
from blocks import categories
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc, dumps, loads
from graphcore.core.summary import human
from graphcore.editing import ops
from graphcore.editing.session import Delta, EditError, EditSession

AUTOSAVE_KEY = "netcanvas.doc"
EDITORS: weakref.WeakValueDictionary[str, Editor] = weakref.WeakValueDictionary()
"""The editor of each connected page, by NiceGUI client id (for tests and tools)."""
DRAG_TYPE = "application/x-netcanvas-block"
PROBLEMS_SHOWN = 200
log = logging.getLogger(__name__)


class Editor:
    def __init__(self, doc: GraphDoc) -> None:
        self.session = EditSession(doc)
        self.current = self.session  # what the canvas shows: the file, or an opened subgraph
        self.opened: list[tuple[str, EditSession]] = []  # (subgraph node id, its session), outermost first
        self.weights: dict | None = None  # weights that came with an opened ONNX file
        self.selected: list[str] = []
        self.saved_revision = -1
        self.summary_revision = -1
        self.python_revision = -1
        self.tick_revision = -1  # the revision at the last tick: unchanged means no edit since
        self.problems_shown: tuple | None = None  # the diagnostics the problems panel lists
        # The canvas's messages that need more than the session's edit: a dialog, a new view, a selection.
        self.answers: dict[type[ops.EditOp], Callable[[Any], None]] = {
            ops.AddNode: lambda edit: self._select_added(self.edit(edit)),
            ops.GroupRequest: lambda request: self.group_dialog(request.ids or self.selected),
            ops.OpenSubgraph: lambda request: self.open_subgraph(request.id),
            ops.RenameRequest: lambda request: self.rename_dialog(request.id),
        }
        EDITORS[ui.context.client.id] = self
        self._build()
        ui.timer(0.5, self._tick)

    # ----------------------------------------------------------------- layout
    def _build(self) -> None:
        ui.add_css(CSS)
        with ui.header().classes("items-center gap-1 px-3 py-1 bg-slate-800"):
            ui.label("NetCanvas").classes("text-lg font-bold mr-2")
            self.title = ui.label(self.session.doc.name).classes("text-sm opacity-80 mr-4").mark("doc-name")
            self._tool("note_add", "New", self.new_doc)
            self._tool("folder_open", "Open", self.open_dialog)
            self._tool("download", "Save", self.save_doc)
            self._tool("dashboard", "Templates", self.templates_dialog)
            ui.separator().props("vertical dark")
            self.undo_button = self._tool("undo", "Undo", self.undo)
            self.redo_button = self._tool("redo", "Redo", self.redo)
            self._tool("delete", "Delete", self.delete_selected)
            self._tool("group_work", "Group", lambda: self.group_dialog(self.selected))
            with ui.button("Auto-layout", icon="account_tree").props("flat dense no-caps color=white"):
                with ui.menu():
                    ui.menu_item("All blocks", lambda: self.canvas.auto_layout(False))
                    ui.menu_item("Selection", lambda: self.canvas.auto_layout(True))
            ui.separator().props("vertical dark")
            with ui.button("Export", icon="ios_share").props("flat dense no-caps color=white").mark("export"):
                with ui.menu():
                    ui.menu_item("Python (.py)", self.export_python).mark("export-python")
                    ui.menu_item("ONNX (.onnx)", self.export_onnx).mark("export-onnx")
            self._tool("model_training", "Train", lambda: self.open_drawer("train"))
            self._tool("auto_awesome", "Sample", lambda: self.open_drawer("samples"))
            ui.space()
            self._tool("fit_screen", "Fit", lambda: self.canvas.fit())

        with ui.left_drawer(value=True, bordered=True).props("width=230").classes("p-2 gap-1"):
            self._palette()

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
                    for name, label in (("train", "Training"), ("samples", "Samples"), ("python", "Python")):
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
                with ui.tab_panel("samples").classes("p-2"):
                    from app.runs import SamplePanel
                    self.sample_panel = SamplePanel(self)
                with ui.tab_panel("python").classes("p-2"):
                    self.python_code = ui.code("", language="python").classes("w-full").mark("python-preview")

        with ui.element("div").classes("nc-stage"):
            self.canvas = Canvas(self.session.view(), on_edit=self.on_edit, on_select=self.on_select).mark("canvas")
            self.crumbs = ui.row().classes("nc-crumbs items-center gap-1").mark("breadcrumb")
            self.crumbs.set_visibility(False)
        self.refresh_problems()
        self._history_buttons()
        self.train_panel.prepare()

    def _tool(self, icon: str, text: str, handler) -> ui.button:
        return ui.button(text, icon=icon, on_click=handler).props("flat dense no-caps color=white").mark(text.lower())

    def _palette(self) -> None:
        search = ui.input(placeholder="Search blocks").props("dense outlined clearable").classes("w-full") \
            .mark("palette-search")
        by_category: dict[str, list[blocks.BlockSpec]] = defaultdict(list)
        for spec in blocks.all_specs():
            by_category[spec.category].append(spec)
        rows: list[tuple[ui.element, str]] = []
        sections: list[tuple[ui.expansion, list[ui.element]]] = []
        with ui.scroll_area().classes("w-full flex-grow"):
            for category in categories.CATEGORIES:
                if category.name not in by_category:
                    continue
                with ui.expansion(category.label, value=category.expanded).props("dense") \
                        .classes("w-full text-sm nc-palette-section").style(f"border-left-color: {category.colour}") \
                        .mark(f"palette-section-{category.name}") as section:
                    members = []
                    for spec in sorted(by_category[category.name], key=lambda s: s.type):
                        row = ui.item(spec.type, on_click=lambda t=spec.type: self.add_block(t)) \
                            .props("dense clickable draggable=true").classes("nc-palette-item") \
                            .tooltip(spec.doc).mark(f"palette-{spec.type}")
                        row.on("dragstart", js_handler=f"(e) => e.dataTransfer.setData('{DRAG_TYPE}', '{spec.type}')")
                        rows.append((row, f"{spec.type} {category.name} {category.label} {spec.doc}".lower()))
                        members.append(row)
                sections.append((section, members))

        def filter_rows(e: events.ValueChangeEventArguments) -> None:
            words = (e.value or "").lower().split()
            for row, text in rows:
                row.set_visibility(all(w in text for w in words))
            for section, members in sections:
                section.set_visibility(any(m.visible for m in members))
                if words:
                    section.open()
        search.on_value_change(filter_rows)

    # ----------------------------------------------------------------- edits
    def apply(self, delta: Delta, from_inspector: bool = False) -> None:
        """Show an edit's result everywhere: canvas, inspector, problems, history buttons."""
        self.canvas.apply(delta)
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
        self.answers.get(type(message), self.edit)(message)

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
        """Palette click: add the block right of the selected one (or of everything)."""
        position = None
        if self.selected and self.selected[0] in self.current.positions:
            x, y = self.current.positions[self.selected[0]]
            position = (x + 240, y)
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
        """Show the inside of a subgraph node; the breadcrumb leads back."""
        try:
            inner = self.current.open_subgraph(node_id)
        except EditError as exc:
            ui.notify(str(exc), type="warning")
            return
        self.opened.append((node_id, inner))
        self._show(inner)

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
        self.canvas.load(session.view())
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
        """Replace the document (New, Open, Templates); the history starts afresh."""
        self.session = EditSession(doc)
        self.opened = []
        self.weights = None
        self.title.text = doc.name
        self._show(self.session)
        self.train_panel.prepare()
        self.summary_revision = self.python_revision = -1

    def new_doc(self) -> None:
        self.load(GraphDoc(name="untitled"))

    def save_doc(self) -> None:
        ui.download.content(dumps(self.session.doc).encode(), f"{self.session.doc.name or 'graph'}.json",
                            "application/json")

    def open_dialog(self) -> None:
        with ui.dialog() as dialog, ui.card():
            ui.label("Open a graph (.json) or an ONNX model (.onnx)").classes("text-h6")
            ui.upload(on_upload=lambda e: self._opened(e, dialog), auto_upload=True) \
                .props("accept=.json,.onnx").classes("w-80").mark("open-upload")
        dialog.open()

    async def _opened(self, event: events.UploadEventArguments, dialog: ui.dialog) -> None:
        name = event.file.name
        data = await event.file.read()
        weights = None
        try:
            if name.lower().endswith(".onnx"):
                doc, weights = await run.io_bound(_import_onnx, data, name)
            else:
                doc = loads(data.decode("utf-8", errors="replace"), name)
        except GraphError as exc:
            ui.notify(f"Cannot open {name}: {exc}", type="negative", multi_line=True)
            return
        dialog.close()
        self.load(doc)
        if weights is None:
            ui.notify(f"Opened {name}")
            return
        self.weights = weights
        ui.notify(f"Opened {name} with its weights: ONNX export keeps them while the graph still fits them; "
                  "training starts from fresh weights.", multi_line=True, timeout=8000)

    def templates_dialog(self) -> None:
        with ui.dialog() as dialog, ui.card().classes("w-[720px] max-w-full"):
            ui.label("Templates").classes("text-h6")
            with ui.grid(columns=3).classes("w-full gap-2"):
                for name in gc.templates():
                    with ui.card().classes("p-2 cursor-pointer").mark(f"template-{name}") \
                            .on("click", lambda n=name: (dialog.close(), self.open_template(n))):
                        ui.label(name).classes("font-bold")
        dialog.open()

    def open_template(self, name: str) -> None:
        self.load(gc.template(name))

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
        if self.saved_revision != revision or self.saved_revision == -1:
            self.saved_revision = revision
            self.autosave()
        if self.tab_panels.visible and self.tab_panels.value == "python" and self.python_revision != revision:
            self.python_revision = revision
            self.refresh_python()

    def autosave(self) -> None:
        try:
            app.storage.tab[AUTOSAVE_KEY] = dumps(self.session.doc)
        except RuntimeError:
            pass  # the tab is not connected (yet)

    # ----------------------------------------------------------------- export
    def export_python(self) -> None:
        try:
            from graphcore.interchange.codegen import to_python
            source = to_python(self.session.doc)
        except GraphError as exc:
            ui.notify(f"Cannot export: {len(exc.diagnostics)} problem(s); see Problems", type="negative")
            self.open_drawer("problems")
            return
        ui.download.content(source.encode(), f"{self.session.doc.name or 'model'}.py", "text/x-python")
        ui.notify("Python exported")

    async def export_onnx(self) -> None:
        from graphcore.interchange.onnx_export import export_onnx
        doc = self.session.doc.model_copy(deep=True)
        model, weights_note = _with_weights(doc, self.weights)
        with ui.dialog() as dialog, ui.card().classes("w-[560px]") as card:
            ui.label("ONNX export").classes("text-h6")
            status = ui.label("Exporting and checking against onnxruntime…").mark("onnx-status")
            spinner = ui.spinner()
        dialog.open()
        path = Path(tempfile.mkdtemp(prefix="netcanvas-")) / f"{doc.name or 'model'}.onnx"
        try:
            result = await run.io_bound(export_onnx, model if model is not None else doc, path)
        except GraphError as exc:
            spinner.delete()
            status.text = f"Export failed: {exc}"
            status.classes("text-red-8")
            return
        spinner.delete()
        status.text = (f"Checked: onnxruntime matches PyTorch (max abs diff {result.max_diff:.1e}, "
                       f"tolerance {result.tolerance:.0e}); {result.size / 1e6:.2f} MB, opset {result.opset}."
                       f"{weights_note}")
        with card:
            ui.button("Download .onnx", icon="download",
                      on_click=lambda: ui.download.content(path.read_bytes(), path.name)).mark("onnx-download")
        ui.download.content(path.read_bytes(), path.name)


def _transient_dialog() -> ui.dialog:
    """A dialog that removes itself from the page once closed."""
    dialog = ui.dialog()
    dialog.on_value_change(lambda e: None if e.value else dialog.delete())
    return dialog


def _import_onnx(data: bytes, name: str) -> tuple[GraphDoc, dict]:
    """``gc.from_onnx`` on uploaded bytes (it reads a file: write them to a temporary one)."""
    from graphcore.interchange.onnx_import import from_onnx

    folder = Path(tempfile.mkdtemp(prefix="netcanvas-onnx-"))
    path = folder / Path(name).name
    path.write_bytes(data)
    try:
        return from_onnx(path)
    finally:
        path.unlink(missing_ok=True)
        folder.rmdir()


def _with_weights(doc: GraphDoc, weights: dict | None) -> tuple[Any, str]:
    """The model to export with the opened ONNX file's weights, if they still fit the graph."""
    if weights is None:
        return None, ""
    try:
        model = gc.compile(doc)
        model.load_state_dict(weights, strict=True)
    except (GraphError, RuntimeError):
        return None, " The graph no longer fits the imported weights: exported with fresh ones."
    return model, " Exported with the imported weights."


CSS = """
.nc-stage { position: absolute; inset: 0; }
.q-page { position: relative; }
.nicegui-content { padding: 0; }
.nc-drawer { height: 260px; overflow: auto; }
.nc-palette-section { border-left: 4px solid transparent; }  /* its colour: the category's, set on each */
.nc-palette-item { cursor: grab; min-height: 28px; font-family: ui-monospace, monospace; font-size: 12px; }
.nc-problem:hover { background: #f1f5f9; }
.nc-crumbs { position: absolute; top: 8px; left: 12px; z-index: 10; background: rgba(255, 255, 255, 0.92);
  border: 1px solid #cbd2d9; border-radius: 6px; padding: 2px 8px; font-size: 13px; }
.q-drawer--right .q-field--with-bottom { padding-bottom: 0; }
.q-drawer--right .q-field__bottom { position: static; transform: none; padding: 2px 4px 6px; }
"""
