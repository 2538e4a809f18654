"""The editor's edit model: every edit keeps the document and its analysis in step, undoes
exactly, and returns only what the canvas must redraw."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import pytest

import graphcore as gc
from graphcore.core.analysis import Analysis
from graphcore.core.document import GraphDoc
from graphcore.core.synthetic import residual_tower
from graphcore.editing import ops
from graphcore.editing.session import COLUMN_WIDTH, ROW_HEIGHT, EditError, EditSession, edge_key, wrapped_columns


@pytest.fixture
def session() -> EditSession:
    return EditSession(gc.template("lenet5"))


def state(doc: GraphDoc) -> dict:
    """The document as data (positions compare as a mapping, whatever their order)."""
    return doc.to_dict()


def fresh_analysis_agrees(session: EditSession) -> None:
    """The incrementally kept analysis says what a fresh one says."""
    fresh = Analysis(session.doc)
    assert session.analysis.shapes() == fresh.shapes()
    assert sorted(map(str, session.analysis.diagnostics)) == sorted(map(str, fresh.diagnostics))


def test_every_node_gets_a_position_in_depth_columns(session):
    positions = session.doc.ui["positions"]
    assert set(positions) == {n.id for n in session.doc.nodes}
    assert positions["x"][0] < positions["c1"][0] < positions["a1"][0]  # left to right...
    assert positions["x"][1] < positions["logits"][1]  # ...in bands, top to bottom


@pytest.mark.parametrize("name", gc.templates())
def test_templates_open_readable_not_as_one_long_row(name):
    """Deep templates wrap into bands: the layout is at most about three times wider than tall,
    and no two blocks share a place."""
    session = EditSession(gc.template(name))
    xy = [tuple(p) for p in session.positions.values()]
    assert len(set(xy)) == len(xy)
    width = max(x for x, _ in xy) - min(x for x, _ in xy) + COLUMN_WIDTH
    height = max(y for _, y in xy) - min(y for _, y in xy) + ROW_HEIGHT
    assert width <= 3 * height or width <= 10 * COLUMN_WIDTH, (width, height)


def test_wrapped_columns_keeps_a_shallow_graph_in_one_row():
    positions = wrapped_columns([["a"], ["b", "c"], ["d"]])
    assert positions == {"a": [0.0, 0.0], "b": [300.0, 0.0], "c": [300.0, 130.0], "d": [600.0, 0.0]}


def test_param_edit_returns_the_new_shapes_downstream_only(session):
    delta = session.set_params("c3", {"out_channels": 32, "kernel_size": 5})
    assert delta.nodes["c3"]["shapes"] == {"out": "(N, 32, 10, 10)"}
    assert delta.nodes["flat"]["shapes"] == {"out": "(N, 800)"}
    assert "c1" not in delta.nodes and "x" not in delta.nodes  # upstream untouched
    assert session.analysis.ok
    fresh_analysis_agrees(session)


def test_nodes_only_reanalysed_get_a_patch_and_edited_ones_their_whole_view(session):
    session.view()  # what the canvas draws first
    delta = session.set_params("c3", {"out_channels": 32, "kernel_size": 5})
    assert delta.nodes["c3"] == session.node_view("c3")
    assert delta.nodes["c3"]["summary"] == "out_channels=32 kernel_size=5"
    assert delta.nodes["flat"] == {"id": "flat", "shapes": {"out": "(N, 800)"}, "problems": []}
    undone = session.undo()
    assert undone.nodes["c3"]["summary"] == "out_channels=16 kernel_size=5"  # not the cached face of the edit
    assert set(undone.nodes["flat"]) == {"id", "shapes", "problems"}


def test_a_face_follows_a_rename_a_label_and_ports_that_change(session):
    session.view()
    session.rename("c3", "conv3")
    assert session.node_view("conv3")["id"] == "conv3"
    session.doc.nodes[0].label = "image"  # a label changed without an edit: the next view shows it anyway
    assert session.node_view(session.doc.nodes[0].id)["label"] == "image"
    delta = session.set_params("c1", {"out_channels": 6, "kernel_size": 3, "padding": 2})
    assert "type" not in delta.nodes["conv3"]  # re-analysed only


def test_the_canvas_gets_each_face_once_and_no_defaults():
    from app.canvas import DEFAULTS, compact_graph

    view = EditSession(residual_tower(20)).view()
    sent = compact_graph(view)
    assert len(sent["faces"]) < 10 < len(view["nodes"])  # its repeated layers share their faces
    for node, compact in zip(view["nodes"], sent["nodes"], strict=True):
        assert "type" not in compact and "problems" not in compact  # a face's, and none
        rest = {key: value for key, value in compact.items() if key != "face"}
        assert {**DEFAULTS, **sent["faces"][compact["face"]], **rest} == node  # what the canvas fills in
    for edge, compact in zip(view["edges"], sent["edges"], strict=True):
        ends = {**{"sourceHandle": "out", "targetHandle": "in"}, **compact}
        assert "id" not in compact and edge == {"id": f"{ends['source']}.{ends['sourceHandle']}->"
                                                      f"{ends['target']}.{ends['targetHandle']}", **ends}


def test_the_canvas_gets_each_distinct_patch_once_with_the_ids_it_applies_to():
    from app.canvas import compact_delta

    session = EditSession(residual_tower(20))
    session.view()
    delta = session.set_params("x", {"shape": [3, 16, 16]})  # every block after it: new shapes
    sent = compact_delta(delta)
    assert set(sent["nodes"]) == {"x"}  # the edited block: its whole view
    assert len(sent["patches"]) < 10 < len(delta.nodes)
    unpacked = {nid: {"id": nid, "problems": [], **{k: v for k, v in patch.items() if k != "ids"}}
                for patch in sent["patches"] for nid in patch["ids"]}
    assert unpacked == {nid: view for nid, view in delta.nodes.items() if nid != "x"}


def test_bad_param_value_is_kept_and_reported_on_the_node(session):
    delta = session.set_params("c1", {"out_channels": 0, "kernel_size": 5, "padding": 2})
    problems = delta.nodes["c1"]["problems"]
    assert problems and "out_channels" in problems[0]["message"]
    assert session.doc.node("c1").params["out_channels"] == 0
    fresh_analysis_agrees(session)


def test_add_connect_and_wrong_connection(session):
    delta = session.add_node("relu", position=(10, 500))
    (new_id,) = delta.nodes
    assert new_id == "relu_1" and delta.nodes[new_id]["position"] == [10.0, 500.0]
    delta = session.connect("f7", "out", new_id, "in")
    assert delta.edges_added[0]["id"] == edge_key(gc.Edge(src="f7", dst=new_id))
    assert delta.nodes[new_id]["shapes"] == {"out": "(N, 10)"}
    # A vector into a conv: the conv turns red and says why.
    (conv,) = session.add_node("conv2d", position=(10, 700)).nodes
    delta = session.connect("f7", "out", conv, "in")
    assert delta.nodes[conv]["problems"][0]["severity"] == "error"
    assert "(C, H, W)" in delta.nodes[conv]["problems"][0]["message"]
    # The input's old edge is replaced; a cycle is reported on the node where it closes.
    delta = session.connect("flat", "out", "c3", "in")
    assert "s2.out->c3.in" in delta.edges_removed
    assert sum(e.dst == "c3" for e in session.doc.edges) == 1
    assert any("cycle" in p["message"] for view in delta.nodes.values() for p in view["problems"])
    fresh_analysis_agrees(session)


def test_undo_redo_restore_the_exact_document(session):
    before = state(session.doc)
    session.set_params("f5", {"out_features": 60})
    session.connect("a3", "out", "flat", "in")
    session.add_node("dropout", {"p": 0.2}, (0, 300))
    session.move("c1", 5, 5)
    after = state(session.doc)
    for _ in range(4):
        session.undo()
    assert state(session.doc) == before
    fresh_analysis_agrees(session)
    for _ in range(4):
        session.redo()
    assert state(session.doc) == after
    fresh_analysis_agrees(session)


def test_group_delete_and_paste_are_one_undo_step_each(session):
    before = state(session.doc)
    delta = session.remove_nodes(["c3", "a3", "s4"])
    assert set(delta.removed) == {"c3", "a3", "s4"}
    assert "s2.out->c3.in" in delta.edges_removed and "s4.out->flat.in" in delta.edges_removed
    assert any("has no edge" in p["message"] for p in delta.nodes["flat"]["problems"])
    session.undo()
    assert state(session.doc) == before

    clip = session.copy(["c1", "a1"])
    delta = session.paste(clip["nodes"], clip["edges"])
    assert delta.ids == {"c1": "c1_1", "a1": "a1_1"}
    assert delta.edges_added[0]["source"] == "c1_1" and delta.edges_added[0]["target"] == "a1_1"
    assert delta.nodes["c1_1"]["position"][0] == session.doc.ui["positions"]["c1"][0] + 40
    session.undo()
    assert state(session.doc) == before
    fresh_analysis_agrees(session)


def test_rename_moves_edges_and_position_and_checks_the_id(session):
    position = session.doc.ui["positions"]["c1"]
    delta = session.rename("c1", "conv_first")
    assert delta.removed == ["c1"] and "conv_first" in delta.nodes
    assert {e.src for e in session.doc.edges if e.dst == "a1"} == {"conv_first"}
    assert session.doc.ui["positions"]["conv_first"] == position
    for bad in ("class", "2x", "a1", "training", "__x"):
        with pytest.raises(EditError):
            session.rename("conv_first", bad)
    session.undo()
    assert session.doc.node("c1") is not None and session.analysis.ok


def test_edits_on_unknown_nodes_are_refused_and_change_nothing(session):
    before = state(session.doc)
    with pytest.raises(EditError):
        session.connect("nope", "out", "c1", "in")
    with pytest.raises(EditError):
        session.add_node("not_a_block")
    with pytest.raises(EditError):
        session.remove_nodes(["ghost"])
    assert state(session.doc) == before and not session.can_undo


def test_a_new_edit_clears_redo(session):
    session.move("x", 1, 1)
    session.undo()
    assert session.can_redo
    session.move("x", 2, 2)
    assert not session.can_redo


def test_typing_into_one_param_coalesces_into_one_undo_step(session):
    before = state(session.doc)
    for value in (1, 12, 128):
        session.set_params("f5", {"out_features": value}, coalesce=True)
    session.set_params("f6", {"out_features": 8}, coalesce=True)  # another node: a new step
    assert len(session.undo_stack) == 2
    session.undo()
    assert session.doc.node("f5").params == {"out_features": 128}
    session.undo()
    assert state(session.doc) == before


def test_group_and_ungroup_are_one_undo_step_each(session):
    before = state(session.doc)
    delta = session.group(["c3", "a3", "s4"], "features")
    assert set(delta.removed) == {"c3", "a3", "s4"}
    assert delta.nodes["features"]["type"] == "subgraph:features"
    assert delta.nodes["features"]["shapes"] == {"out": "(N, 16, 5, 5)"}
    assert {e["id"] for e in delta.edges_added} == {"s2.out->features.in", "features.out->flat.in"}
    assert "features" in session.doc.ui["positions"]
    assert session.analysis.ok
    fresh_analysis_agrees(session)
    grouped = state(session.doc)

    session.undo()
    assert state(session.doc) == before
    fresh_analysis_agrees(session)
    session.redo()
    assert state(session.doc) == grouped

    delta = session.ungroup("features")
    assert {"c3", "a3", "s4"} <= set(delta.nodes) and delta.removed == ["features"]
    assert session.doc.subgraphs == {} and session.analysis.ok
    fresh_analysis_agrees(session)
    session.undo()
    assert state(session.doc) == grouped
    session.undo()
    assert state(session.doc) == before


def test_group_refuses_bad_selections_and_names(session):
    before = state(session.doc)
    with pytest.raises(EditError, match="input and output nodes"):
        session.group(["x", "c1"], "g")
    with pytest.raises(EditError, match="must be letters"):
        session.group(["c1"], "2bad")
    with pytest.raises(EditError, match="no node"):
        session.group(["ghost"], "g")
    with pytest.raises(EditError, match="not a subgraph"):
        session.ungroup("c1")
    assert state(session.doc) == before and not session.can_undo


def test_editing_inside_a_subgraph_updates_the_file_around_it(session):
    session.group(["c3", "a3", "s4"], "features")
    inner = session.open_subgraph("features")
    assert set(inner.analysis.nodes) == {"x", "c3", "a3", "s4", "y"}
    xs = inner.positions
    assert xs["x"][0] < xs["c3"][0] and xs["s4"][0] < xs["y"][0]  # the new ports at the sides
    revision = session.revision
    inner.set_params("c3", {"out_channels": 32, "kernel_size": 5})
    assert session.node_view("features")["shapes"] == {"out": "(N, 32, 5, 5)"}
    assert session.node_view("flat")["shapes"] == {"out": "(N, 800)"}
    assert session.revision > revision  # the file changed: autosave sees it
    assert session.doc.subgraphs["features"].node("c3").params["out_channels"] == 32
    fresh_analysis_agrees(session)
    inner.undo()
    assert session.node_view("flat")["shapes"] == {"out": "(N, 400)"}
    with pytest.raises(EditError, match="close the subgraph"):
        inner.group(["a3"], "deeper")
    with pytest.raises(EditError, match="not a subgraph"):
        session.open_subgraph("c1")


def test_a_bad_edit_inside_a_subgraph_shows_on_its_node(session):
    session.group(["c3", "a3"], "features")
    inner = session.open_subgraph("features")
    inner.remove_nodes(["a3"])
    problems = session.node_view("features")["problems"]
    assert problems and "inside subgraph 'features'" in problems[0]["message"]


def test_duplicate_copies_nodes_and_their_inner_edges(session):
    delta = session.duplicate(["c1", "a1"])
    assert delta.ids == {"c1": "c1_1", "a1": "a1_1"}
    assert [e["id"] for e in delta.edges_added] == ["c1_1.out->a1_1.in"]
    session.undo()
    assert session.doc.node("c1_1") is None


def test_repeated_pastes_and_duplicates_never_land_on_each_other(session):
    clip = session.copy(["c1", "a1"])
    original = session.positions["c1"]
    spots = {tuple(original)}
    for _ in range(3):
        delta = session.paste(clip["nodes"], clip["edges"])
        spots.add(tuple(session.positions[delta.ids["c1"]]))
    session.duplicate(["c1"])
    spots.add(tuple(session.positions["c1_4"]))
    assert len(spots) == 5  # the original, three pastes and a duplicate: five places
    xs = sorted(x for x, _ in spots)
    assert all(b - a >= 30 for a, b in zip(xs, xs[1:]))  # each copy visibly apart from the last


# ------------------------------------------------------------------ the edit protocol (graphcore.editing.ops)
STATIC_SRC = Path(__file__).resolve().parent.parent / "static" / "src"

# One valid message per op, on lenet5; a new op without an example here fails the first test.
EXAMPLES = {
    "add": {"op": "add", "type": "conv2d", "x": 10, "y": 400},
    "connect": {"op": "connect", "src": "a1", "src_port": "out", "dst": "flat", "dst_port": "in"},
    "remove": {"op": "remove", "nodes": ["f7"], "edges": ["c1.out->a1.in"]},
    "move": {"op": "move", "positions": {"c1": [5, 6], "a1": [300, 6]}},
    "paste": {"op": "paste", "nodes": [{"id": "c1", "type": "conv2d", "params": {"out_channels": 4},
                                        "label": None, "position": [0, 0]}, {"id": "a1", "type": "relu"}],
              "edges": [{"src": "c1", "src_port": "out", "dst": "a1", "dst_port": "in"}]},
    "duplicate": {"op": "duplicate", "ids": ["c1", "a1"]},
    "set_params": {"op": "set_params", "id": "f6", "params": {"out_features": 50}},
    "rename": {"op": "rename", "id": "c1", "new_id": "stem"},
    "ungroup": {"op": "ungroup", "id": "features"},
    "undo": {"op": "undo"},
    "redo": {"op": "redo"},
    "group": {"op": "group", "ids": ["c3", "a3"]},
    "open": {"op": "open", "id": "features"},
    "expand": {"op": "expand", "id": "features"},
    "collapse": {"op": "collapse", "id": "features/"},
    "rename_request": {"op": "rename_request", "id": "c1"},
    "part": {"op": "part", "index": 0, "count": 2, "text": '{"op": "un'},
}


def test_every_op_has_an_example_and_parses_to_its_own_model():
    assert set(EXAMPLES) == set(ops.OPS)
    for name, payload in EXAMPLES.items():
        message = ops.parse_edit(payload)
        assert type(message) is ops.OPS[name] and message.op == name
        assert isinstance(message, ops.SessionEdit | ops.Request)


@pytest.mark.parametrize("name", [n for n, cls in ops.OPS.items() if issubclass(cls, ops.SessionEdit)])
def test_every_session_edit_changes_the_document_and_undoes_exactly(name):
    session = EditSession(gc.template("lenet5"))
    session.group(["c3", "a3", "s4"], "features")  # for ungroup
    session.move("x", 1, 1)  # for undo
    if name == "redo":
        session.undo()
    before = state(session.doc)
    delta = ops.parse_edit(EXAMPLES[name]).apply(session)
    assert not delta.empty and state(session.doc) != before
    fresh_analysis_agrees(session)
    if name not in ("undo", "redo"):  # (those two move along the history instead)
        session.undo()
        assert state(session.doc) == before


def test_an_unknown_op_is_refused_with_the_known_ones():
    with pytest.raises(EditError, match=r"unknown edit op 'conect' \(did you mean 'connect'\?\); known: add, "):
        ops.parse_edit({"op": "conect", "src": "a", "dst": "b"})


@pytest.mark.parametrize(("payload", "reason"), [
    ({"op": "add", "type": "conv2d", "x": "left"}, "edit 'add': x: Input should be a valid number, unable to "
                                                   "parse string as a number; y: Field required"),
    ({"op": "connect", "src": "c1"}, "edit 'connect': dst: Field required"),
    ({"op": "move", "positions": {"c1": [1, 2, 3]}}, "edit 'move': positions.c1: Tuple should have at most 2 items"),
    ({"op": "paste", "nodes": [{"id": "c1"}]}, "edit 'paste': nodes.0.type: Field required"),
    ({"op": "undo", "steps": 2}, "edit 'undo': steps: Extra inputs are not permitted"),
    ({"op": "remove", "nodes": "c1"}, "edit 'remove': nodes: Input should be a valid list"),
    ({"type": "conv2d"}, "an edit is an object with an 'op' field, got {'type': 'conv2d'}"),
    (["add"], "an edit is an object with an 'op' field, got ['add']"),
])
def test_a_malformed_payload_is_refused_naming_the_field(payload, reason):
    with pytest.raises(EditError) as refused:
        ops.parse_edit(payload)
    assert str(refused.value).startswith(reason)


def test_an_op_name_is_registered_once_only():
    with pytest.raises(ValueError, match="'undo' is already registered by Undo"):
        @ops.edit_op
        class Again(ops.SessionEdit):
            op: Literal["undo"] = "undo"


def js_table(source: str, name: str) -> str:
    """The text of ``export const NAME = ...;`` in a JS module."""
    match = re.search(rf"export const {name} = (.*?);\n", source, re.S)
    assert match, f"static/src/editOps.js declares no {name}"
    return match.group(1)


def test_the_canvas_names_exactly_the_ops_of_the_schema():
    """static/src/editOps.js is the canvas's one table of op names: it must name the schema's ops,
    its requests must be the schema's requests, and the canvas must send no op outside it."""
    table = (STATIC_SRC / "editOps.js").read_text()
    names = dict(re.findall(r"^\s*(\w+): \"(\w+)\",", js_table(table, "OPS"), re.M))
    assert set(names.values()) == set(ops.OPS)
    assert len(names) == len(ops.OPS)
    requests = re.findall(r"OPS\.(\w+)", js_table(table, "REQUESTS"))
    assert {names[r] for r in requests} == {n for n, cls in ops.OPS.items() if issubclass(cls, ops.Request)}
    for path in STATIC_SRC.glob("*.vue"):
        source = path.read_text()
        assert not re.search(r"\bop: [\"'`]", source), f"{path.name} spells an op name: use OPS from editOps.js"
        assert set(re.findall(r"\bOPS\.(\w+)", source)) <= set(names), f"{path.name} uses an op that OPS lacks"
    assert "OPS.ADD" in (STATIC_SRC / "FlowCanvas.vue").read_text()  # the canvas does use the table


def split(payload: dict, size: int) -> list[ops.Part]:
    """The parts the canvas sends for a message longer than ``size`` characters of JSON."""
    text = json.dumps(payload)
    texts = [text[i:i + size] for i in range(0, len(text), size)]
    return [ops.Part(index=i, count=len(texts), text=t) for i, t in enumerate(texts)]


def test_a_long_message_sent_in_parts_is_joined_into_the_message():
    paste = {"op": "paste", "nodes": [{"id": f"r{i}", "type": "relu", "label": "ü" * 50} for i in range(200)]}
    parts = split(paste, 3000)
    assert len(parts) > 10
    joined = ops.Parts()
    assert [joined.add(part) for part in parts[:-1]] == [None] * (len(parts) - 1)
    assert joined.add(parts[-1]) == ops.parse_edit(paste)
    assert [joined.add(part) for part in parts][-1] == ops.parse_edit(paste)  # the next one starts afresh


def test_parts_out_of_order_or_not_a_message_are_refused_in_one_line():
    parts = split({"op": "remove", "nodes": ["a" * 100]}, 40)
    joined = ops.Parts()
    joined.add(parts[0])
    with pytest.raises(EditError, match="part 3 of 4 of a long message came out of order"):
        joined.add(parts[2])
    with pytest.raises(EditError, match="came out of order"):
        joined.add(parts[1])  # the parts so far were dropped
    joined.add(ops.Part(index=0, count=2, text='{"op": "re'))
    with pytest.raises(EditError, match="not JSON when joined"):
        joined.add(ops.Part(index=1, count=2, text='move"'))
    nested = split({"op": "part", "index": 0, "count": 2, "text": "x" * 50}, 30)
    with pytest.raises(EditError, match="another split message"):
        for part in nested:
            joined.add(part)
    with pytest.raises(EditError, match="count"):
        ops.parse_edit({"op": "part", "index": 0, "count": ops.MAX_PARTS + 1, "text": ""})
