"""The editor's workspace: save under a name, open the workspace's graphs, loads that undo, a
tab reload that brings back the graph, its imported weights, its open panel and its view, a new tab
that brings back what a closed tab left unsaved, and the title's unsaved mark (NiceGUI's simulated
user; the canvas's events are triggered as the browser sends them)."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from fastapi import HTTPException
from nicegui import app, ui
from nicegui.elements.upload_files import SmallFileUpload
from nicegui.testing import User
from nicegui.testing.user_interaction import UserInteraction
from test_app_user import SLOW, open_editor, select, tiny_onnx

import graphcore as gc
from app import drafts
from app import editor as editor_module
from app.drafts import DRAFT_KEY
from app.editor import EDITORS, Editor
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc, dumps, loads
from graphcore.editing.session import EditSession
from graphcore.runtime.workspace import Workspace


@pytest.fixture
async def user(workspace: Workspace, user: User) -> AsyncIterator[User]:
    """The app's simulated user, with the app serving ``workspace``."""
    yield user


def editor_of(user: User) -> Editor:
    return EDITORS[user.client.id]


async def autosaved(user: User) -> None:
    """Wait for the half-second timer's autosave of everything a reload restores."""
    editor = editor_of(user)
    for _ in range(SLOW):
        if editor.saved_state == editor.tab_state():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the tab was not autosaved")


async def save_as(user: User, name: str) -> None:
    user.find("save-menu").click()
    user.find("save-as").click()
    await user.should_see(marker="save-name")
    user.find("save-name").clear().type(name)
    user.find("save-ok").click()


async def test_save_asks_a_name_the_first_time_then_saves_in_place(user: User, workspace: Workspace):
    await open_editor(user)
    user.find("save").click()
    await user.should_see(marker="save-name")
    user.find("save-name").clear().type("mine")
    user.find("save-ok").click()
    await user.should_see(marker="doc-name", content="mine")
    saved = loads((workspace.graphs_dir / "mine.json").read_text())
    assert saved.name == "mine" and len(saved.nodes) == 14
    await select(user, "f6")
    user.find("param-out_features").clear().type("50")
    user.find("save").click()  # the second time: no question
    await user.should_see("Saved mine")
    assert loads((workspace.graphs_dir / "mine.json").read_text()).node("f6").params == {"out_features": 50}


async def test_ctrl_s_saves(user: User, workspace: Workspace):
    await open_editor(user)
    page = UserInteraction(user, {user.client.layout}, None)
    page.trigger("netcanvasSave")  # what the page's Ctrl+S sends (Vue names it so)
    await user.should_see(marker="save-name")
    user.find("save-ok").click()
    await user.should_see("Saved lenet5")
    page.trigger("netcanvasSaveAs")  # Ctrl+Shift+S
    await user.should_see(marker="save-name")


async def test_save_as_always_asks_and_saving_over_a_graph_asks_first(user: User, workspace: Workspace):
    await open_editor(user)
    other = gc.template("autoencoder")
    workspace.save_graph("taken", other)
    await save_as(user, "taken")
    await user.should_see("taken already exists")
    user.find("overwrite-cancel").click()
    assert loads((workspace.graphs_dir / "taken.json").read_text()).nodes == other.nodes  # kept
    await save_as(user, "taken")
    user.find("overwrite-ok").click()
    await user.should_see("Saved taken")
    assert len(loads((workspace.graphs_dir / "taken.json").read_text()).nodes) == 14


@pytest.mark.parametrize("name", ["../outside", "a/b", "x" * 300])
async def test_a_bad_name_is_refused_in_one_line(user: User, workspace: Workspace, name: str):
    await open_editor(user)
    await save_as(user, name)
    await user.should_see("Cannot save")
    assert workspace.graphs() == []
    assert not (workspace.root.parent / "outside.json").exists()


async def test_a_second_tab_saving_the_same_name_is_asked(user: User, workspace: Workspace):
    await open_editor(user)
    await save_as(user, "shared")
    await user.should_see("Saved shared")
    await asyncio.sleep(0.05)
    workspace.save_graph("shared", GraphDoc(name="shared"), overwrite=True)  # another tab saved it since
    os.utime(workspace.graphs_dir / "shared.json", None)
    user.find("save").click()
    await user.should_see("shared changed since")
    user.find("overwrite-ok").click()
    await user.should_see("Saved shared")
    assert len(loads((workspace.graphs_dir / "shared.json").read_text()).nodes) == 14


async def test_clicking_the_title_renames_the_graph(user: User, workspace: Workspace):
    await open_editor(user)
    await save_as(user, "first")
    await user.should_see("Saved first")
    user.find("doc-name").click()
    await user.should_see(marker="graph-name")
    user.find("graph-name").clear().type("second")
    user.find("graph-ok").click()
    await user.should_see(marker="doc-name", content="second")
    assert [g.name for g in workspace.graphs()] == ["second"]
    assert editor_of(user).session.doc.name == "second"


async def test_open_lists_the_workspace_graphs_recent_first_and_opens_one(user: User, workspace: Workspace):
    workspace.save_graph("older", gc.template("lenet5").model_copy(update={"name": "older"}))
    newer = EditSession(GraphDoc(name="newer"))
    newer.add_node("input", params={"shape": [4]})
    workspace.save_graph("newer", newer.doc)
    past = (workspace.graphs_dir / "older.json").stat().st_mtime - 60
    os.utime(workspace.graphs_dir / "older.json", (past, past))
    (workspace.graphs_dir / "broken.json").write_text("{")
    await open_editor(user)
    user.find("open").click()
    await user.should_see(marker="open-graph-newer")
    listed = next(iter(user.find("open-graphs").elements)).default_slot.children
    rows = [next(m for m in row._markers if m.startswith("open-graph-")) for row in listed]
    assert rows == ["open-graph-broken", "open-graph-newer", "open-graph-older"]  # recent first
    await user.should_see("invalid JSON")  # an unreadable file is listed with its reason
    await user.should_see("61,706")  # lenet5's parameters, in the list
    user.find("open-graph-newer").click()
    await user.should_see(marker="doc-name", content="newer")
    editor = editor_of(user)
    assert [n.id for n in editor.session.doc.nodes] == ["input_1"]
    user.find("undo").click()  # opening is one step: undo brings the graph back
    await user.should_see(marker="doc-name", content="lenet5")
    assert len(editor.session.doc.nodes) == 14


async def test_new_then_undo_brings_the_graph_back(user: User):
    await open_editor(user)
    editor = editor_of(user)
    before = editor.session.doc.to_dict()
    user.find("new").click()
    await user.should_see(marker="doc-name", content="untitled")
    assert editor.session.doc.nodes == []
    user.find("undo").click()
    await user.should_see(marker="doc-name", content="lenet5")
    assert editor.session.doc.to_dict() == before
    user.find("redo").click()
    await user.should_see(marker="doc-name", content="untitled")


async def test_a_template_then_undo_and_reload(user: User):
    await open_editor(user)
    user.find("templates").click()
    user.find("template-vgg11").click()
    await user.should_see(marker="doc-name", content="vgg11")
    user.find("undo").click()
    await user.should_see(marker="doc-name", content="lenet5")
    user.find("redo").click()
    await user.should_see(marker="doc-name", content="vgg11")
    await autosaved(user)  # no edit follows the load: the autosave still runs
    await open_editor(user)
    assert editor_of(user).session.doc.name == "vgg11"


async def test_reload_after_opening_a_file_keeps_it(user: User):
    await open_editor(user)
    doc = EditSession(GraphDoc(name="mine"))
    doc.add_node("input", params={"shape": [3, 8, 8]})
    user.find("open").click()
    upload = next(iter(user.find("open-upload").elements))
    await upload.handle_uploads([SmallFileUpload("mine.json", "application/json", dumps(doc.doc).encode())])
    await user.should_see("Opened mine.json")
    await autosaved(user)
    await open_editor(user)
    assert [n.id for n in editor_of(user).session.doc.nodes] == ["input_1"]


async def open_tiny_onnx(user: User) -> None:
    """Open the editor, upload tiny.onnx through Open, and wait until its draft is kept."""
    await open_editor(user)
    user.find("open").click()
    upload = next(iter(user.find("open-upload").elements))
    await upload.handle_uploads([SmallFileUpload("tiny.onnx", "application/octet-stream", tiny_onnx())])
    await user.should_see("Opened tiny.onnx with its weights", retries=100)
    await autosaved(user)


async def test_reload_after_opening_an_onnx_model_keeps_its_weights(user: User, workspace: Workspace):
    await open_tiny_onnx(user)
    with user.client.layout:
        stored = json.dumps(dict(app.storage.tab))
    assert "fc.weight" not in stored and len(stored) < 10_000  # the tab keeps the key, not the weights
    assert list((workspace.root / ".netcanvas" / "weights").glob("*.pt"))
    await open_editor(user)
    editor = editor_of(user)
    assert [n.type for n in editor.session.doc.nodes] == ["input", "linear", "relu", "output"]
    assert editor.weights is None and editor.has_imported_weights()  # kept, but not read to show the page
    user.find("export-python").click()  # the export reads them
    await user.should_see(marker="export-weights")
    user.find("export-weights").click()
    user.find("imported weights (from the opened ONNX file)").click()
    user.find("export-go").click()
    await user.should_see("with imported weights from tiny", retries=100)
    for _ in range(SLOW):
        if len(user.download.http_responses) >= 2:  # the .py and its .pt
            break
        await asyncio.sleep(0.1)
    exported = torch.load(io.BytesIO(user.download.http_responses[-1].content), weights_only=True)
    assert exported["fc.weight"][2, 3].item() == pytest.approx(1.1)
    assert editor.weights is not None  # read once, for the next export too
    user.find("new").click()
    await user.should_see(marker="doc-name", content="untitled")
    assert editor.weights is None and not editor.has_imported_weights()  # the new graph has none...
    user.find("undo").click()
    await user.should_see(marker="doc-name", content="tiny")
    assert editor.has_imported_weights()  # ...and undo brings them back with the graph
    assert editor.imported_weights()["fc.weight"][2, 3].item() == pytest.approx(1.1)


async def test_a_reload_says_when_the_imported_weights_are_gone(user: User, workspace: Workspace):
    await open_tiny_onnx(user)
    for kept in (workspace.root / ".netcanvas" / "weights").glob("*.pt"):
        kept.unlink()
    await open_editor(user)
    await user.should_see("The imported weights are gone")
    editor = editor_of(user)
    assert not editor.has_imported_weights()
    with pytest.raises(GraphError, match="no saved weights"):
        editor.imported_weights()


async def test_reload_keeps_the_open_panel(user: User):
    await open_editor(user)
    user.find(kind=ui.tab, content="Python").click()
    await user.should_see(marker="python-preview")
    await autosaved(user)
    await open_editor(user)
    editor = editor_of(user)
    assert editor.tab_panels.visible and editor.tab_panels.value == "python"


async def test_opening_a_file_that_is_not_a_graph_fails_the_upload_and_names_the_file(user: User):
    await open_editor(user)
    user.find("open").click()
    upload = next(iter(user.find("open-upload").elements))
    for name, data in (("notes.json", b'{"hello": 1}'), ("model.onnx", b"not a model")):
        with pytest.raises(HTTPException):  # the uploader marks the file failed, not uploaded
            await upload.handle_uploads([SmallFileUpload(name, "application/octet-stream", data)])
        await user.should_see(f"Cannot open {name}", retries=50)
    said = " ".join(m for m in user.notify.messages)
    assert "netcanvas-onnx-" not in said and "/tmp" not in said
    assert editor_of(user).session.doc.name == "lenet5"
    assert not editor_of(user).session.can_undo  # nothing was loaded


def test_a_load_is_one_step_that_undo_reverts_exactly():
    session = EditSession(gc.template("lenet5"))
    original = dict(session.doc.node("c1").params)
    session.set_params("c1", {"out_channels": 8})
    before, analysis = session.doc.to_dict(), session.analysis
    delta = session.load(EditSession(gc.template("vgg11")))
    assert delta.document and session.doc.name == "vgg11" and session.analysis.ok
    session.add_node("relu", node_id="extra")
    session.undo()
    session.undo()  # the load
    assert session.doc.to_dict() == before and session.analysis is analysis  # nothing re-analysed
    assert session.doc.node("c1").params == {"out_channels": 8}
    session.undo()  # the step before the load is still there
    assert session.doc.node("c1").params == original
    session.redo()
    session.redo()
    assert session.doc.name == "vgg11"


@pytest.fixture
def onnx_at_start(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``netcanvas tiny.onnx``: the model named on the command line (set before the app starts)."""
    path = workspace.root / "tiny.onnx"
    path.write_bytes(tiny_onnx())
    monkeypatch.setenv("NETCANVAS_GRAPH", str(path))
    return path


async def test_an_onnx_model_named_at_start_opens_with_its_weights(onnx_at_start: Path, user: User):
    await open_editor(user)
    await user.should_see("Opened tiny.onnx with its weights", retries=100)
    editor = editor_of(user)
    assert [n.type for n in editor.session.doc.nodes] == ["input", "linear", "relu", "output"]
    assert editor.weights["fc.weight"][2, 3].item() == pytest.approx(1.1)


# --- drafts: a reload, a closed tab, the unsaved mark -----------------------------------------

def closed_tab(workspace: Workspace, draft_id: str, doc: GraphDoc, *, unsaved: bool = True, age: float = 0.0,
               viewport: dict | None = None) -> None:
    """The draft a tab closed ``age`` seconds ago left in the workspace."""
    state = drafts.payload(doc, dumps(doc), saved_as=None, panel=None, viewport=viewport, unsaved=unsaved)
    workspace.save_draft(draft_id, {**state, "time": state["time"] - age})


async def edit_f6(user: User) -> None:
    await select(user, "f6")
    user.find("param-out_features").clear().type("50")


async def edited_and_kept(user: User) -> Editor:
    """A new tab on lenet5 with f6 edited, once its draft is written: the tab's editor."""
    await open_editor(user)
    editor = editor_of(user)
    await edit_f6(user)
    await autosaved(user)
    await drafts.written(editor.draft_id)
    return editor


async def until(condition, what: str) -> None:
    for _ in range(SLOW):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(what)


async def test_a_big_graph_is_autosaved_once_the_edits_pause(user: User, monkeypatch):
    """Above QUICK_AUTOSAVE_NODES blocks, the autosave waits for a tick with no edit since the last
    one (or AUTOSAVE_WAIT), so that its JSON does not hold up the replies to edits coming in."""
    monkeypatch.setattr(editor_module, "QUICK_AUTOSAVE_NODES", 5)  # lenet5's 14 blocks count as big
    monkeypatch.setattr(editor_module, "AUTOSAVE_WAIT", 3600.0)
    await open_editor(user)
    editor = editor_of(user)
    await autosaved(user)
    with user.client.layout:  # as the page's timer runs it
        editor.tick_revision = editor.session.revision  # as a tick just saw it
        editor.session.set_params("f6", {"out_features": 60})
        editor._tick()  # an edit since the last tick: not yet
        assert editor.saved_state != editor.tab_state()
        editor._tick()  # no edit since: now
        assert editor.saved_state == editor.tab_state()


async def test_the_tab_draft_is_kept_in_the_workspace(user: User, workspace: Workspace):
    editor = await edited_and_kept(user)
    entry = workspace.load_draft(editor.draft_id)
    assert entry.unsaved and entry.name == "lenet5"
    assert loads(entry.payload["document"]).node("f6").params == {"out_features": 50}
    with user.client.layout:
        assert app.storage.tab[DRAFT_KEY] == editor.draft_id  # the tab keeps the id, the workspace the rest
        assert "out_features" not in json.dumps(dict(app.storage.tab))
    await open_editor(user)  # a reload
    assert editor_of(user).draft_id == editor.draft_id
    assert editor_of(user).session.doc.node("f6").params == {"out_features": 50}
    await user.should_see(marker="unsaved")  # still unsaved after the reload


async def test_a_new_tab_brings_back_what_closed_tabs_left_unsaved(user: User, workspace: Workspace):
    older = gc.template("autoencoder").model_copy(update={"name": "older"})
    newer = EditSession(GraphDoc(name="newer"))
    newer.add_node("input", params={"shape": [4]})
    view = {"x": 10.0, "y": 20.0, "zoom": 0.5}
    closed_tab(workspace, "closed-1", older, age=60)
    closed_tab(workspace, "closed-2", newer.doc, age=30, viewport=view)
    closed_tab(workspace, "closed-clean", gc.template("vgg11"), unsaved=False)  # the newest, but nothing to lose
    await open_editor(user)
    await user.should_see("Restored unsaved graph 'newer' from a closed tab (Open lists 1 more)")
    editor = editor_of(user)
    assert editor.draft_id == "closed-2"  # the tab owns that draft now
    assert [n.id for n in editor.session.doc.nodes] == ["input_1"]
    assert editor.canvas.viewport == view == editor.canvas.props["graph"]["viewport"]  # its view, not a fit
    await user.should_see(marker="unsaved")
    user.find("open").click()
    await user.should_see(marker="open-draft-closed-1")
    await user.should_not_see(marker="open-draft-closed-2")  # this tab's
    await user.should_not_see(marker="open-draft-closed-clean")
    user.find("open-draft-closed-1").click()
    await user.should_see(marker="doc-name", content="older")
    await until(lambda: not (workspace.drafts_dir / "closed-1.json").exists(), "the closed tab's draft stays")
    kept = workspace.load_draft("closed-2")  # this tab's draft holds it now
    assert kept.name == "older" and kept.unsaved
    assert len(loads(kept.payload["document"]).nodes) == len(older.nodes)
    await user.should_see(marker="unsaved")
    user.find("undo").click()  # opening it was one step
    await user.should_see(marker="doc-name", content="newer")


async def test_the_graph_named_at_start_opens_when_no_closed_tab_left_changes(user: User, workspace: Workspace):
    closed_tab(workspace, "closed-clean", gc.template("vgg11"), unsaved=False)
    (workspace.drafts_dir / "torn.json").write_text('{"format": "netcanvas.draft"')
    closed_tab(workspace, "old-clean", gc.template("vgg11"), unsaved=False, age=2 * 24 * 3600)
    await open_editor(user)
    editor = editor_of(user)
    assert editor.session.doc.name == "lenet5" and editor.draft_id not in {"closed-clean", "torn"}
    assert not any("Restored" in m for m in user.notify.messages)
    assert not (workspace.drafts_dir / "old-clean.json").exists()  # pruned when listed
    await user.should_not_see(marker="unsaved")  # a template as it comes: nothing unsaved


async def test_a_damaged_draft_on_reload_starts_the_tab_afresh(user: User, workspace: Workspace):
    editor = await edited_and_kept(user)
    workspace.draft_path(editor.draft_id).write_text("{ torn")
    await open_editor(user)
    assert editor_of(user).session.doc.node("f6").params == {"out_features": 84}  # lenet5 as it comes


async def test_the_unsaved_mark_shows_after_an_edit_and_clears_on_save(user: User, workspace: Workspace):
    await open_editor(user)
    await user.should_not_see(marker="unsaved")
    await edit_f6(user)
    await user.should_see(marker="unsaved", retries=SLOW)
    user.find("save").click()
    await user.should_see(marker="save-name")
    user.find("save-name").clear().type("mine")
    user.find("save-ok").click()
    await user.should_see("Saved mine")
    await user.should_not_see(marker="unsaved")
    user.find("undo").click()  # the document differs from the file again...
    await user.should_see(marker="unsaved", retries=SLOW)
    user.find("redo").click()  # ...and is the same again
    await user.should_not_see(marker="unsaved", retries=SLOW)
    user.find("doc-name").click()  # renaming a saved graph renames its file: still nothing unsaved
    user.find("graph-name").clear().type("yours")
    user.find("graph-ok").click()
    await user.should_see(marker="doc-name", content="yours")
    await user.should_not_see(marker="unsaved", retries=SLOW)
    user.find("new").click()  # a load as it comes
    await user.should_see(marker="doc-name", content="untitled")
    await user.should_not_see(marker="unsaved", retries=SLOW)
    user.find("undo").click()  # the saved graph again, as saved
    await user.should_see(marker="doc-name", content="yours")
    await user.should_not_see(marker="unsaved", retries=SLOW)


async def test_reload_restores_the_view_and_a_new_document_is_fitted(user: User):
    await open_editor(user)
    view = {"x": -120.5, "y": 33.25, "zoom": 0.6}
    user.find("canvas").trigger("viewport", {**view, "zoom": 0.6000000001})
    user.find("canvas").trigger("viewport", {"x": "far", "y": 0, "zoom": 1})  # not a viewport: ignored
    user.find("canvas").trigger("viewport", {"x": 0, "y": 0, "zoom": float("inf")})
    assert editor_of(user).canvas.viewport == view
    await autosaved(user)
    await open_editor(user)
    canvas = editor_of(user).canvas
    assert canvas.props["graph"]["viewport"] == view == canvas.viewport
    user.find("templates").click()
    user.find("template-vgg11").click()
    await user.should_see(marker="doc-name", content="vgg11")
    assert canvas.props["graph"]["viewport"] is None  # fitted anew


async def test_reload_keeps_the_modules_drawn_open_inside_an_opened_subgraph(user: User):
    await open_editor(user)
    user.find("templates").click()
    user.find("template-muzero_tictactoe").click()
    await user.should_see(marker="doc-name", content="muzero_tictactoe")
    editor = editor_of(user)
    editor.open_subgraph("representation")
    editor.toggle_module("expand", "scale")  # drawn open in place, inside the opened subgraph
    editor.toggle_module("expand", "block1")  # a stack of two res_blocks: shown one by one
    assert "scale/" in editor.projection.nodes
    await autosaved(user)
    await open_editor(user)
    editor = editor_of(user)
    assert editor.current is editor.session  # a reload shows the file
    editor.open_subgraph("representation")
    assert editor.view_states[("representation",)].expanded == {"scale"}
    assert editor.view_states[("representation",)].unstacked == {"block1"}
    assert "scale/" in editor.projection.nodes and {"block1", "block2"} <= set(editor.projection.nodes)
