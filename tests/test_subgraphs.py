"""Subgraphs: group a selection, compile it as its own module, repeat it, ungroup it."""

import pytest
import torch

import graphcore as gc
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.synthetic import residual_tower

BLOCK0 = ["b0_conv1", "b0_bn1", "b0_act1", "b0_conv2", "b0_bn2", "b0_add", "b0_act2"]


def structure(doc: GraphDoc):
    nodes = sorted((n.id, n.type, tuple(sorted(n.params.items()))) for n in doc.nodes)
    edges = sorted((e.src, e.src_port, e.dst, e.dst_port) for e in doc.edges)
    return nodes, edges


def outputs_match(grouped: GraphDoc, flat: GraphDoc, rename) -> None:
    """Same outputs when the grouped model gets the flat model's weights."""
    flat_model = gc.compile(flat).eval()
    grouped_model = gc.compile(grouped).eval()
    state = flat_model.state_dict()
    grouped_model.load_state_dict({key: state[rename(key)] for key in grouped_model.state_dict()})
    x = torch.randn(2, 3, 12, 12)
    assert torch.allclose(grouped_model(x), flat_model(x), atol=1e-6)


def test_group_compiles_to_its_own_module_with_the_same_outputs():
    flat = residual_tower(2, size=12)
    grouped = gc.group(flat, BLOCK0, "resblock")
    assert gc.validate(grouped) == []
    assert {n.id for n in grouped.nodes} >= {"resblock"} and not set(BLOCK0) & {n.id for n in grouped.nodes}
    model = gc.compile(grouped)
    assert type(model.resblock).__name__ == "Resblock"
    assert isinstance(model.resblock, torch.fx.GraphModule)
    outputs_match(grouped, flat, lambda key: key.removeprefix("resblock."))


def test_ungroup_restores_the_graph():
    flat = residual_tower(2, size=12)
    assert structure(gc.ungroup(gc.group(flat, BLOCK0, "resblock"), "resblock")) == structure(flat)


def test_group_keeps_positions_and_places_the_group_at_their_centre():
    flat = residual_tower(1, size=12)
    flat.ui["positions"] = {node.id: [i * 100, 0] for i, node in enumerate(flat.nodes)}
    grouped = gc.group(flat, ["b0_conv1", "b0_bn1"], "pair")
    assert grouped.ui["positions"]["pair"] == [450.0, 0.0]
    assert grouped.subgraphs["pair"].ui["positions"] == {"b0_conv1": [400, 0], "b0_bn1": [500, 0]}
    assert "b0_conv1" not in grouped.ui["positions"]


def test_repeat_stacks_copies_and_ungroup_expands_them():
    flat = residual_tower(1, size=12)
    grouped = gc.group(flat, BLOCK0, "resblock")
    grouped.node("resblock").params["repeat"] = 3
    assert gc.validate(grouped) == []
    model = gc.compile(grouped)
    assert len(model.resblock) == 3 and "resblock.2.b0_conv1.weight" in model.state_dict()
    expanded = gc.ungroup(grouped, "resblock")
    assert sum(n.type == "conv2d" for n in expanded.nodes) == 1 + 3 * 2
    assert "resblock" not in expanded.subgraphs
    assert gc.validate(expanded) == []

    def rename(key: str) -> str:  # resblock.1.b0_conv1.weight -> b0_conv1_1.weight
        if not key.startswith("resblock."):
            return key
        _, copy, rest = key.split(".", 2)
        node, param = rest.split(".", 1)
        return f"{node}{'' if copy == '0' else '_' + copy}.{param}"

    outputs_match(grouped, expanded, rename)


def test_repeat_must_keep_the_shape():
    doc = residual_tower(1, size=12)
    doc.node("b0_conv1").params["stride"] = 2
    grouped = gc.group(gc.group(doc, ["b0_conv1"], "down"), ["down"], "outer")
    grouped.subgraphs["outer"].node("down").params["repeat"] = 2
    problems = [d for d in gc.validate(grouped) if d.severity == "error"]
    assert problems[0].node_id == "outer"
    assert "inside subgraph 'outer': node 'down': repeat: copy 2 would change the shape" in problems[0].message


def test_one_subgraph_is_reused_at_two_sizes():
    pair = GraphDoc(name="pair", nodes=[
        Node(id="x", type="input", params={"shape": [3, 8, 8]}),
        Node(id="c", type="conv2d", params={"out_channels": 3, "kernel_size": 3, "padding": 1}),
        Node(id="y", type="output")], edges=[Edge(src="x", dst="c"), Edge(src="c", dst="y")])
    doc = GraphDoc(name="reuse", subgraphs={"pair": pair}, nodes=[
        Node(id="img", type="input", params={"shape": [3, 16, 16]}),
        Node(id="first", type="subgraph:pair"), Node(id="pool", type="maxpool2d"),
        Node(id="second", type="subgraph:pair"), Node(id="out", type="output")],
        edges=[Edge(src="img", dst="first"), Edge(src="first", dst="pool"), Edge(src="pool", dst="second"),
               Edge(src="second", dst="out")])
    shapes = gc.infer_shapes(doc)
    assert shapes[("first", "out")] == (None, 3, 16, 16) and shapes[("second", "out")] == (None, 3, 8, 8)
    assert gc.compile(doc)(torch.randn(1, 3, 16, 16)).shape == (1, 3, 8, 8)


def test_nested_subgraphs_save_load_and_compile(tmp_path):
    flat = residual_tower(1, size=12)
    inner = gc.group(flat, ["b0_conv1", "b0_bn1", "b0_act1"], "unit")
    nested = gc.group(inner, ["unit", "b0_conv2", "b0_bn2", "b0_add", "b0_act2"], "block")
    assert set(nested.subgraphs) == {"unit", "block"}
    gc.save(nested, tmp_path / "g.json")
    loaded = gc.load(tmp_path / "g.json")
    assert loaded == nested and gc.validate(loaded) == []
    outputs_match(loaded, flat, lambda key: key.removeprefix("block.").removeprefix("unit."))


def test_several_ports_are_named_after_their_sources():
    doc = residual_tower(1, size=12)
    grouped = gc.group(doc, ["b0_bn2", "b0_add"], "merge")
    assert [e.dst_port for e in grouped.edges if e.dst == "merge"] == ["b0_conv2", "stem_act"]
    assert gc.validate(grouped) == []
    outputs_match(grouped, doc, lambda key: key.removeprefix("merge."))


def test_a_subgraph_that_contains_itself_is_refused():
    doc = gc.group(residual_tower(1, size=12), ["b0_act1"], "loop")
    doc.subgraphs["loop"].node("b0_act1").type = "subgraph:loop"
    problem = next(d for d in gc.validate(doc) if d.severity == "error")
    assert problem.node_id == "loop" and "contains itself" in problem.message


def test_unknown_subgraph_names_the_ones_there_are():
    doc = gc.group(residual_tower(1, size=12), ["b0_act1"], "act")
    doc.node("act").type = "subgraph:acts"
    problem = gc.validate(doc)[0]
    assert "no subgraph named 'acts'" in problem.message and problem.hint == "subgraphs here: act"


def test_a_problem_inside_a_subgraph_is_reported_on_its_node():
    doc = gc.group(residual_tower(1, size=12), ["b0_conv1"], "conv")
    doc.subgraphs["conv"].node("b0_conv1").params["kernel_size"] = 30
    (problem,) = gc.validate(doc)
    assert problem.node_id == "conv"
    assert problem.message.startswith("inside subgraph 'conv': node 'b0_conv1': kernel spans 30")


@pytest.mark.parametrize("ids, name, fragment", [
    (["x", "stem"], "g", "input and output nodes cannot be grouped"),
    (["ghost"], "g", "no such nodes: ghost"),
    ([], "g", "select at least one node"),
    (["stem"], "my group", "must be letters"),
])
def test_group_refuses_bad_requests(ids, name, fragment):
    with pytest.raises(gc.GraphError, match=fragment):
        gc.group(residual_tower(1), ids, name)


def test_summary_counts_inside_subgraphs():
    flat = residual_tower(2, size=12)
    grouped = gc.group(flat, BLOCK0, "resblock")
    assert gc.summary(grouped).total_params == gc.summary(flat).total_params
    assert gc.summary(grouped).total_macs == gc.summary(flat).total_macs
