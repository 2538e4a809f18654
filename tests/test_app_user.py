"""The editor's panels and flows, driven through NiceGUI's simulated user (no browser).

The canvas itself is JavaScript; here its events are triggered as the browser would send
them (``select``, ``edit``), and what Python sends back is checked on the Python side.
"""

from __future__ import annotations

import asyncio
import json
import logging

import onnx
import pytest
from fastapi import HTTPException
from nicegui import ui
from nicegui.elements.upload_files import SmallFileUpload
from nicegui.testing import User

import blocks
import graphcore as gc
from app.editor import EDITORS, Editor
from blocks import categories
from graphcore.editing import ops

SLOW = 30  # retries of 0.1 s for what the half-second timer refreshes (summary, autosave)


def editor_of(user: User) -> Editor:
    """The editor of the page the user has open."""
    return EDITORS[user.client.id]


async def open_editor(user: User) -> None:
    """Open the page; it is built once the tab has connected (to read the tab's autosave)."""
    await user.open("/")
    await user.should_see(marker="canvas", retries=SLOW)


async def select(user: User, node_id: str) -> None:
    user.find("canvas").trigger("select", [node_id])
    await user.should_see(marker="inspector-type")


async def test_opens_with_the_default_template_and_its_summary(user: User):
    await open_editor(user)
    await user.should_see("lenet5")
    await user.should_see("61,706 parameters", retries=SLOW)
    await user.should_see("Problems (0)")


async def test_editing_a_param_in_the_inspector_changes_the_shapes(user: User):
    await open_editor(user)
    await select(user, "c3")
    await user.should_see("(N, 16, 10, 10)")
    user.find("param-out_channels").clear().type("32")
    await user.should_see("out: (N, 32, 10, 10)")
    session = editor_of(user).session
    assert session.doc.node("c3").params["out_channels"] == 32
    assert session.analysis.nodes["flat"].outputs == {"out": (800,)}  # downstream re-inferred
    await user.should_not_see("61,706 parameters", retries=SLOW)  # the summary follows


async def test_a_bad_value_is_explained_under_its_field_and_listed_as_a_problem(user: User):
    await open_editor(user)
    await select(user, "c1")
    user.find("param-out_channels").clear().type("0")
    await user.should_see("Input should be greater than or equal to 1")
    await user.should_see("Problems (1)")
    user.find(kind=ui.tab, content="Problems").click()
    await user.should_see("c1: param 'out_channels' = 0 is not valid", retries=5)
    user.find("param-out_channels").clear().type("6")
    await user.should_see("Problems (0)")
    await user.should_not_see("Input should be greater than or equal to 1")


async def test_a_text_param_takes_lists_and_words(user: User):
    await open_editor(user)
    await select(user, "c1")
    user.find("param-padding").clear().type("same").trigger("blur")
    session = editor_of(user).session
    assert session.doc.node("c1").params["padding"] == "same"
    user.find("param-kernel_size").clear().type("3, 5")
    user.find("param-kernel_size").trigger("keydown.enter")
    assert session.doc.node("c1").params["kernel_size"] == [3, 5]
    await user.should_see("out: (N, 6, 28, 28)")


async def test_canvas_edits_connect_undo_and_redo(user: User):
    await open_editor(user)
    editor = editor_of(user)
    canvas = user.find("canvas")
    canvas.trigger("edit", {"op": "add", "type": "conv2d", "x": 100, "y": 400})
    assert editor.session.doc.node("conv2d_1") is not None
    canvas.trigger("edit", {"op": "connect", "src": "f7", "src_port": "out", "dst": "conv2d_1", "dst_port": "in"})
    user.find(kind=ui.tab, content="Problems").click()
    await user.should_see("conv2d_1: expects a per-sample input (C, H, W), got (10)")
    user.find("undo").click()
    await user.should_not_see("conv2d_1: expects a per-sample input (C, H, W), got (10)")
    user.find("redo").click()
    await user.should_see("conv2d_1: expects a per-sample input (C, H, W), got (10)")
    canvas.trigger("edit", {"op": "remove", "nodes": ["conv2d_1"], "edges": []})
    assert editor.session.doc.node("conv2d_1") is None
    await user.should_see("Problems (0)")


async def test_palette_click_adds_a_block(user: User):
    await open_editor(user)
    user.find("palette").trigger("add", "groupnorm")  # what a click on its item sends (the search filters in the page)
    await user.should_see("groupnorm_1")  # the inspector shows the new block
    assert editor_of(user).session.doc.node("groupnorm_1").type == "groupnorm"
    user.find("palette").trigger("add", "no_such_block")  # a message no item sends: ignored
    assert [n.type for n in editor_of(user).session.doc.nodes].count("groupnorm") == 1


async def test_problem_click_focuses_the_node(user: User):
    await open_editor(user)
    user.find("canvas").trigger("edit", {"op": "remove", "nodes": ["flat"], "edges": []})
    user.find(kind=ui.tab, content="Problems").click()
    await user.should_see("f5: input port 'in' has no edge")
    user.find(marker="problem-f5").click()
    await user.should_see(marker="inspector-type")
    assert editor_of(user).inspector.node_id == "f5"


async def test_save_and_open_round_trip(user: User):
    await open_editor(user)
    await select(user, "f6")
    user.find("param-out_features").clear().type("50")
    user.find("save-menu").click()
    user.find("download").click()
    saved = (await user.download.next()).text
    assert json.loads(saved)["nodes"][10] == {"id": "f6", "type": "linear", "params": {"out_features": 50}}
    user.find("new").click()
    await user.should_see("untitled")
    user.find("open").click()
    upload = next(iter(user.find("open-upload").elements))
    await upload.handle_uploads([SmallFileUpload("mine.json", "application/json", saved.encode())])
    await user.should_see("Opened mine.json")
    doc = editor_of(user).session.doc
    assert doc.node("f6").params == {"out_features": 50}
    assert gc.Analysis(doc).ok


async def test_opening_a_broken_file_says_why_and_keeps_the_work(user: User):
    await open_editor(user)
    user.find("open").click()
    upload = next(iter(user.find("open-upload").elements))
    with pytest.raises(HTTPException):  # the upload fails: the uploader marks the file failed
        bad = SmallFileUpload("bad.json", "application/json", b'{"format": "netcanvas.graph", ')
        await upload.handle_uploads([bad])
    await user.should_see("Cannot open bad.json")
    assert editor_of(user).session.doc.name == "lenet5"


async def test_templates_gallery_opens_a_template(user: User):
    await open_editor(user)
    user.find("templates").click()
    user.find("template-vgg11").click()
    await user.should_see(marker="doc-name", content="vgg11")  # opened in a worker thread
    assert editor_of(user).session.doc.name == "vgg11"


async def test_reload_restores_the_tab_document(user: User):
    await open_editor(user)
    user.find("canvas").trigger("edit", {"op": "add", "type": "dropout", "x": 0, "y": 300})
    editor = editor_of(user)
    assert editor.session.doc.node("dropout_1") is not None
    for _ in range(SLOW):  # autosave runs on the half-second timer
        if editor.saved_state == editor.tab_state():
            break
        await asyncio.sleep(0.1)
    await open_editor(user)
    assert editor_of(user).session.doc.node("dropout_1") is not None


async def test_export_python(user: User):
    await open_editor(user)
    user.find("export-python").click()
    await user.should_see(marker="export-go")  # asks which weights: fresh ones by default
    user.find("export-go").click()
    source = (await user.download.next(timeout=10)).text
    await user.should_see("with fresh weights")
    assert "def build_model" in source and "import torch" in source


async def test_generated_python_preview(user: User):
    await open_editor(user)
    user.find(kind=ui.tab, content="Python").click()
    await user.should_see(marker="python-preview")
    preview = next(iter(user.find("python-preview").elements))
    assert "def build_model" in preview.content


@pytest.mark.slow
async def test_export_onnx_shows_the_check(user: User):
    await open_editor(user)
    user.find("export-onnx").click()
    await user.should_see(marker="export-go")
    user.find("export-go").click()
    await user.should_see("Checked: onnxruntime matches PyTorch", retries=600)
    for _ in range(20):
        if user.download.http_responses:
            break
        await asyncio.sleep(0.1)
    model = onnx.load_model_from_string(user.download.http_responses[-1].content)
    assert [i.name for i in model.graph.input] == ["x"]


async def test_group_a_selection_open_it_edit_inside_and_close(user: User):
    await open_editor(user)
    editor = editor_of(user)
    user.find("canvas").trigger("select", ["c3", "a3", "s4"])
    user.find("group").click()  # the toolbar button; the canvas's context menu sends the same request
    await user.should_see(marker="group-name")
    user.find("group-name").clear().type("features")
    user.find("group-ok").click()
    await user.should_see("subgraph:features")  # the inspector shows the new node
    assert editor.session.doc.node("features").type == "subgraph:features"
    assert editor.session.doc.node("c3") is None
    await user.should_see("out: (N, 16, 5, 5)")

    user.find("inspector-open").click()  # (or a double click / the context menu on the canvas)
    await user.should_see(marker="breadcrumb")
    await user.should_see("features (features)")
    assert set(editor.current.analysis.nodes) == {"x", "c3", "a3", "s4", "y"}
    await select(user, "c3")
    user.find("param-out_channels").clear().type("32")
    await user.should_see("out: (N, 32, 10, 10)")
    assert editor.session.analysis.nodes["flat"].outputs == {"out": (800,)}  # the file around it follows

    user.find("close-subgraph").click()
    await user.should_not_see(marker="close-subgraph")
    assert editor.current is editor.session
    await user.should_see("out: (N, 32, 5, 5)")  # the subgraph node is focused in the inspector
    user.find("canvas").trigger("edit", {"op": "ungroup", "id": "features"})
    assert editor.session.doc.node("c3").params["out_channels"] == 32
    assert editor.session.doc.subgraphs == {}
    user.find("undo").click()
    assert editor.session.doc.node("features") is not None


async def test_grouping_nothing_or_a_bad_name_explains_why(user: User):
    await open_editor(user)
    user.find("group").click()
    await user.should_see("Select the blocks to group first")
    user.find("canvas").trigger("edit", {"op": "group", "ids": ["x", "c1"]})
    user.find("group-ok").click()
    await user.should_see("Cannot group: input and output nodes cannot be grouped: x")
    assert editor_of(user).session.doc.subgraphs == {}


async def test_rename_in_the_inspector_and_from_the_context_menu(user: User):
    await open_editor(user)
    editor = editor_of(user)
    await select(user, "c1")
    user.find("inspector-id").clear().type("stem").trigger("keydown.enter")
    assert editor.session.doc.node("stem") is not None and editor.session.doc.node("c1") is None
    assert ("stem", "a1") in {(e.src, e.dst) for e in editor.session.doc.edges}
    user.find("canvas").trigger("edit", {"op": "rename_request", "id": "a1"})
    user.find("rename-name").clear().type("class")
    user.find("rename-ok").click()
    await user.should_see("'class': ")  # a Python keyword is refused, with the reason
    user.find("rename-name").clear().type("stem_act")
    user.find("rename-ok").click()
    await user.should_not_see(marker="rename-name")
    assert editor.session.doc.node("stem_act") is not None
    user.find("undo").click()
    assert editor.session.doc.node("a1") is not None


async def test_context_menu_duplicate_and_delete(user: User):
    await open_editor(user)
    editor = editor_of(user)
    canvas = user.find("canvas")
    canvas.trigger("edit", {"op": "duplicate", "ids": ["c1", "a1"]})
    assert editor.session.doc.node("c1_1") is not None and editor.session.doc.node("a1_1") is not None
    canvas.trigger("edit", {"op": "remove", "nodes": ["c1_1", "a1_1"], "edges": []})
    assert editor.session.doc.node("c1_1") is None
    user.find("undo").click()
    assert editor.session.doc.node("a1_1") is not None


def tiny_onnx() -> bytes:
    """x (N, 4) -> Gemm (3 outputs) -> Relu, with known weights."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "fc.weight")
    bias = numpy_helper.from_array(np.array([0.1, -0.2, 0.3], dtype=np.float32), "fc.bias")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], transB=1),
         helper.make_node("Relu", ["h"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=[weight, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


async def test_open_an_onnx_model_keeps_its_graph_and_weights(user: User):
    await open_editor(user)
    user.find("open").click()
    upload = next(iter(user.find("open-upload").elements))
    await upload.handle_uploads([SmallFileUpload("tiny.onnx", "application/octet-stream", tiny_onnx())])
    await user.should_see("Opened tiny.onnx with its weights", retries=100)
    editor = editor_of(user)
    assert [(n.id, n.type) for n in editor.session.doc.nodes] == [
        ("x", "input"), ("fc", "linear"), ("relu", "relu"), ("y", "output")]
    assert editor.weights is not None and editor.weights["fc.weight"][2, 3].item() == pytest.approx(1.1)
    await user.should_see("Problems (0)")


async def test_opening_a_broken_onnx_file_says_why(user: User):
    await open_editor(user)
    user.find("open").click()
    upload = next(iter(user.find("open-upload").elements))
    with pytest.raises(HTTPException):
        await upload.handle_uploads([SmallFileUpload("bad.onnx", "application/octet-stream", b"not a model")])
    await user.should_see("Cannot open bad.onnx", retries=50)
    assert editor_of(user).session.doc.name == "lenet5"


@pytest.mark.parametrize(("payload", "said"), [
    ({"op": "explode", "id": "c1"}, "Edit refused: unknown edit op 'explode'"),
    ({"op": "connect", "src": "f7"}, "Edit refused: edit 'connect': dst: Field required"),
    ({"op": "move", "positions": {"c1": "left"}}, "Edit refused: edit 'move': positions.c1: Input should be"),
    ({"nodes": ["c1"]}, "Edit refused: an edit is an object with an 'op' field"),
])
async def test_a_message_the_editor_cannot_read_is_logged_and_explained(user: User, caplog, payload, said):
    await open_editor(user)
    before = editor_of(user).session.doc.to_dict()
    with caplog.at_level(logging.WARNING, logger="app.editor"):
        user.find("canvas").trigger("edit", payload)
        await user.should_see(said)
    assert said.removeprefix("Edit refused: ") in caplog.text
    assert editor_of(user).session.doc.to_dict() == before


async def test_an_edit_the_session_refuses_is_explained(user: User):
    await open_editor(user)
    requests = {cls for cls in ops.OPS.values() if issubclass(cls, ops.Request)}
    assert requests <= set(editor_of(user).answers)  # every request has its answer
    user.find("canvas").trigger("edit", {"op": "connect", "src": "ghost", "dst": "c1"})
    await user.should_see("Edit refused: no node 'ghost'")
    user.find("canvas").trigger("edit", {"op": "add", "type": "conv3", "x": 0, "y": 0})
    await user.should_see("Edit refused: unknown block type 'conv3'")


async def test_a_block_dropped_on_the_canvas_is_selected(user: User):
    await open_editor(user)
    user.find("canvas").trigger("edit", {"op": "add", "type": "layernorm", "x": 100, "y": 400})
    await user.should_see(marker="inspector-type")
    assert editor_of(user).selected == ["layernorm_1"]
    assert editor_of(user).inspector.node_id == "layernorm_1"


async def test_the_palette_and_the_canvas_follow_the_category_table(user: User):
    await open_editor(user)
    used = [c for c in categories.CATEGORIES if any(s.category == c.name for s in blocks.all_specs())]
    sections = next(iter(user.find("palette").elements)).props["sections"]
    assert [(s["name"], s["label"], s["colour"], s["expanded"]) for s in sections] == [
        (c.name, c.label, c.colour, c.expanded) for c in used]  # in the table's order
    for section in sections:
        assert [b["type"] for b in section["blocks"]] == sorted(
            s.type for s in blocks.all_specs() if s.category == section["name"])
    canvas = next(iter(user.find("canvas").elements))
    assert canvas.props["categories"] == categories.view()
    shown = {face["category"] for face in canvas.props["graph"]["faces"]}  # each distinct face once
    assert shown == {"io", "conv", "activation", "pool", "reshape", "dense"}  # lenet5's
    assert shown <= set(canvas.props["categories"])  # each with its colour


async def test_palette_click_adds_the_block_at_the_centre_of_the_view(user: User):
    await open_editor(user)
    editor = editor_of(user)
    user.find("canvas").trigger("view", [2000, 1500])  # the canvas reports its view's centre after each move
    user.find("palette").trigger("add", "groupnorm")
    x, y = editor.session.positions["groupnorm_1"]
    assert abs(x + 80 - 2000) < 100 and abs(y + 35 - 1500) < 100  # the block's middle near the centre
    user.find("palette").trigger("add", "groupnorm")  # a second click does not hide the first block
    assert editor.session.positions["groupnorm_2"] != editor.session.positions["groupnorm_1"]
