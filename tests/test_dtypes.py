"""Dtypes: ids (int) and floats are told apart at validation, not at the first forward.

Every port says what it takes and every block what it gives; a wire that brings the other
kind is an error naming the node and the port. The registry test checks each declaration
against the real module.
"""

import itertools

import pytest
import torch
from block_strategies import block_call, example_params, outputs_of

import blocks
import graphcore as gc
from blocks.io import INPUT_DTYPES
from graphcore.core.analysis import Analysis
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.inputs import input_specs

TORCH_DTYPES = {"float": torch.float32, "int": torch.int64}
NAMES = {torch_dtype: name for name, torch_dtype in TORCH_DTYPES.items()}


def graph(*nodes: tuple, edges: list[tuple] | None = None, subgraphs: dict | None = None) -> GraphDoc:
    """Nodes from (id, type, params); edges from (src, dst) or (src, dst, dst_port), else a chain."""
    doc_nodes = [Node(id=i, type=t, params=p) for i, t, p in nodes]
    pairs = edges if edges is not None else [(a.id, b.id) for a, b in zip(doc_nodes, doc_nodes[1:])]
    doc_edges = [Edge(src=e[0], dst=e[1], dst_port=e[2] if len(e) > 2 else "in") for e in pairs]
    return GraphDoc(name="t", nodes=doc_nodes, edges=doc_edges, subgraphs=subgraphs or {})


def ids(shape: list[int]) -> tuple:
    return ("x", "input", {"shape": shape, "dtype": "int64"})


def floats(shape: list[int]) -> tuple:
    return ("x", "input", {"shape": shape})


Y = ("y", "output", {})


def only_error(doc: GraphDoc):
    problems = [d for d in gc.validate(doc) if d.severity == "error"]
    assert len(problems) == 1, problems
    return problems[0]


# ------------------------------------------------------------------------- a wrong dtype is an error
def test_floats_into_an_embedding_name_the_port_and_the_source():
    problem = only_error(graph(floats([3, 8, 8]), ("c1", "conv2d", {"out_channels": 4}), ("f", "flatten", {}),
                               ("e", "embedding", {}), Y))
    assert (problem.node_id, problem.port) == ("e", "in")
    assert problem.message == "port 'in' takes an int tensor (ids), got float from 'f'"
    assert "int64" in problem.hint


def test_ids_into_a_linear_say_to_embed_them_first():
    problem = only_error(graph(ids([6]), ("fc", "linear", {}), Y))
    assert (problem.node_id, problem.port) == ("fc", "in")
    assert problem.message == "port 'in' takes a float tensor, got int from 'x'"
    assert "embedding" in problem.hint


def test_a_wrong_dtype_fails_validation_before_it_would_fail_forward():
    doc = graph(ids([6]), ("fc", "linear", {}), Y)
    x = torch.randint(0, 5, (2, 6))
    with pytest.raises(RuntimeError):  # what the user met before: torch's error at the first forward
        blocks.get("linear").build(blocks.get("linear").params(), {"in": (6,)})(x)
    assert not Analysis(doc).ok


def test_ids_pass_through_blocks_that_only_move_values():
    doc = graph(
        ids([2, 3]), ("r", "reshape", {"shape": [6]}), ("f", "flatten", {}), ("i", "identity", {}),
        ("j", "concat", {"dim": -1}), ("e", "embedding", {"num_embeddings": 5, "embedding_dim": 4}), Y,
        edges=[("x", "r"), ("r", "f"), ("f", "i"), ("i", "j", "in0"), ("x2", "j", "in1"), ("j", "e"), ("e", "y")])
    doc.nodes.append(Node(id="x2", type="input", params={"shape": [6], "dtype": "int64"}))
    analysis = Analysis(doc)
    assert analysis.diagnostics == []
    assert {nid: analysis.nodes[nid].dtypes["out"] for nid in ("r", "f", "i", "j", "e")} == {
        "r": "int", "f": "int", "i": "int", "j": "int", "e": "float"}
    out = gc.compile(doc)(torch.randint(0, 5, (2, 2, 3)), torch.randint(0, 5, (2, 6)))
    assert out.shape == (2, 12, 4)


def test_adding_floats_to_ids_gives_floats_as_in_pytorch():
    doc = graph(ids([6]), ("w", "input", {"shape": [6]}), ("s", "add", {}), ("e", "embedding", {}), Y,
                edges=[("x", "s", "in0"), ("w", "s", "in1"), ("s", "e"), ("e", "y")])
    problem = only_error(doc)
    assert problem.node_id == "e" and problem.message.endswith("got float from 's'")


def test_a_timestep_may_be_int_or_float():
    for timestep in (ids([]), floats([])):
        assert gc.validate(graph(timestep, ("t", "time_embedding", {"dim": 8}), Y)) == []


def test_a_dtype_problem_is_reported_past_a_shape_problem_upstream():
    doc = graph(ids([6]), ("r", "reshape", {"shape": [5]}), ("fc", "linear", {}), Y)
    assert sorted((d.node_id, d.port) for d in gc.validate(doc)) == [("fc", "in"), ("r", None)]


# ------------------------------------------------------------------------- subgraph boundaries
def embed_subgraph(dtype: str = "int64") -> GraphDoc:
    return graph(("ids", "input", {"shape": [6], "dtype": dtype}), ("e", "embedding", {"embedding_dim": 4}), Y)


def keep_subgraph() -> GraphDoc:
    return graph(("ids", "input", {"shape": [6], "dtype": "int64"}), ("f", "flatten", {}), Y)


def test_floats_into_an_int_subgraph_input_are_refused_at_the_subgraph_node():
    doc = graph(floats([6]), ("g", "subgraph:embed", {}), Y, subgraphs={"embed": embed_subgraph()})
    problem = only_error(doc)
    assert (problem.node_id, problem.port) == ("g", "in")
    assert problem.message == "port 'in' takes an int tensor (ids), got float from 'x'"


def test_a_subgraph_gives_the_dtypes_that_reach_its_outputs():
    library = {"embed": embed_subgraph(), "keep": keep_subgraph()}
    ok = graph(ids([6]), ("k", "subgraph:keep", {}), ("g", "subgraph:embed", {}), ("fc", "linear", {}), Y,
               subgraphs=library)
    analysis = Analysis(ok)
    assert analysis.diagnostics == []
    assert (analysis.nodes["k"].dtypes, analysis.nodes["g"].dtypes) == ({"out": "int"}, {"out": "float"})
    wrong = graph(ids([6]), ("g", "subgraph:embed", {}), ("k", "subgraph:keep", {}), Y, subgraphs=library)
    assert (only_error(wrong).node_id, only_error(wrong).port) == ("k", "in")


def test_repeat_refuses_a_subgraph_that_changes_the_dtype():
    doc = graph(ids([6]), ("g", "subgraph:embed", {"repeat": 2}), Y, subgraphs={"embed": embed_subgraph()})
    problem = only_error(doc)
    assert problem.node_id == "g" and "repeat: each copy takes int but gives float" in problem.message


def test_grouping_keeps_ids_that_arrive_through_a_pass_through_block():
    doc = graph(ids([2, 3]), ("f", "flatten", {}), ("e", "embedding", {}), Y)
    grouped = gc.group(doc, ["e"], "embed")
    assert gc.validate(grouped) == []
    assert grouped.subgraphs["embed"].node("x").params["dtype"] == "int64"


# ------------------------------------------------------------------------- incremental analysis
def test_changing_an_input_dtype_updates_the_ports_downstream():
    analysis = Analysis(graph(ids([6]), ("f", "flatten", {}), ("e", "embedding", {}), Y))
    analysis.doc.node("x").params["dtype"] = "float32"
    changed = analysis.update_node("x")
    assert {"x", "f", "e"} <= changed
    assert [(d.node_id, d.port) for d in analysis.diagnostics] == [("e", "in")]
    fresh = Analysis(analysis.doc)
    assert sorted(map(str, analysis.diagnostics)) == sorted(map(str, fresh.diagnostics))
    analysis.doc.node("x").params["dtype"] = "int64"
    analysis.update_node("x")
    assert analysis.diagnostics == []


# ------------------------------------------------------------------------- every block's declaration
def dtype_cases():
    """(spec, example, dtypes arriving): each 'any' port is tried with ints and with floats."""
    for spec in blocks.all_specs():
        if spec.build is None:
            continue
        for i, example in enumerate(spec.examples):
            ports = [p for p in spec.input_ports(example_params(spec, example)) if p.name in example.inputs]
            choices = [("float", "int") if p.dtype == "any" else (p.dtype,) for p in ports]
            for combo in itertools.product(*choices):
                yield pytest.param(spec, example, dict(zip((p.name for p in ports), combo)),
                                   id=f"{spec.type}-{i}-{'-'.join(combo)}")


@pytest.mark.parametrize("spec,example,arriving", list(dtype_cases()))
def test_declared_output_dtypes_are_what_the_module_returns(spec, example, arriving):
    params = example_params(spec, example)
    module = spec.build(params, example.inputs)

    def make(port, shape):
        if arriving[port.name] == "int":
            return torch.randint(0, 2, (2, *shape))
        return torch.randn(2, *shape)

    args, kwargs = block_call(spec, params, example.inputs, make)
    with torch.no_grad():
        outs = outputs_of(spec, params, module(*args, **kwargs))
    ports = spec.output_ports(params)
    assert spec.infer_dtypes(params, arriving) == {port: NAMES[t.dtype] for port, t in zip(ports, outs)}


@pytest.mark.parametrize("dtype", list(INPUT_DTYPES))
def test_an_input_gives_the_dtype_its_param_names(dtype):
    analysis = Analysis(graph(("x", "input", {"shape": [4], "dtype": dtype}), Y))
    (spec,) = input_specs(analysis)  # what exports and checks feed the model
    assert TORCH_DTYPES[analysis.nodes["x"].dtypes["out"]] == spec.random(2).dtype
