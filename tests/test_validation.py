"""Bad graphs: every problem is a diagnostic that names the node and says what to do."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import blocks
import graphcore as gc
from graphcore.cli import main
from graphcore.core.analysis import Analysis
from graphcore.core.document import Edge, GraphDoc, Node


def chain(*nodes: tuple, edges=None) -> GraphDoc:
    """A graph from (id, type, params) triples, wired in order unless edges are given."""
    doc_nodes = [Node(id=i, type=t, params=p) for i, t, p in nodes]
    if edges is None:
        edges = [Edge(src=a.id, dst=b.id) for a, b in zip(doc_nodes, doc_nodes[1:])]
    return GraphDoc(name="t", nodes=doc_nodes, edges=edges)


def only_error(doc: GraphDoc):
    problems = [d for d in gc.validate(doc) if d.severity == "error"]
    assert len(problems) == 1, problems
    return problems[0]


X = ("x", "input", {"shape": [3, 8, 8]})
Y = ("y", "output", {})


def test_a_valid_graph_has_no_problems():
    assert gc.validate(gc.template("lenet5")) == []


def test_unknown_block_type_suggests_the_nearest_name():
    problem = only_error(chain(X, ("c", "conv2", {}), Y))
    assert problem.node_id == "c"
    assert "unknown block type 'conv2'" in problem.message
    assert "conv2d" in problem.hint


def test_unknown_param_suggests_the_nearest_name():
    problem = only_error(chain(X, ("c", "conv2d", {"kernal_size": 3}), Y))
    assert problem.node_id == "c" and "unknown param 'kernal_size'" in problem.message
    assert problem.hint == "did you mean 'kernel_size'?"


@pytest.mark.parametrize("params, fragment", [
    ({"out_channels": "16"}, "param 'out_channels' = '16' is not valid"),
    ({"out_channels": 0}, "greater than or equal to 1"),
    ({"out_channels": 2.5}, "valid integer"),
    ({"bias": "yes"}, "param 'bias'"),
    ({"padding": "full"}, "param 'padding'"),
])
def test_wrong_param_type_or_bounds(params, fragment):
    problem = only_error(chain(X, ("c", "conv2d", params), Y))
    assert problem.node_id == "c" and fragment in problem.message
    assert problem.hint  # the param's description says what it is


def test_duplicate_id():
    doc = chain(X, ("a", "relu", {}), ("a", "relu", {}), Y)
    doc.edges = [Edge(src="x", dst="a"), Edge(src="a", dst="y")]
    problem = only_error(doc)
    assert problem.node_id == "a" and "duplicate id" in problem.message


@pytest.mark.parametrize("bad_id, fragment", [
    ("2conv", "not a valid name"), ("my-conv", "not a valid name"), ("class", "keyword"),
    ("__init__", "mangles"), ("forward", "clashes"), ("training", "clashes"), ("x\ny", "not a valid name"),
    ("çonv", "not a valid name"),
])
def test_id_that_is_not_a_safe_python_name(bad_id, fragment):
    problem = only_error(chain(X, (bad_id, "relu", {}), Y))
    assert problem.node_id == bad_id and fragment in problem.message


def test_edge_to_a_missing_node():
    doc = chain(X, ("a", "relu", {}), Y)
    doc.edges.append(Edge(src="ghost", dst="a", dst_port="in"))
    problems = [d for d in gc.validate(doc) if d.severity == "error"]
    assert any("node 'ghost' does not exist" in d.message and d.node_id == "a" for d in problems)


def test_edge_to_a_missing_port_lists_the_ports():
    doc = chain(X, ("a", "relu", {}), Y)
    doc.edges[0] = Edge(src="x", dst="a", dst_port="input")
    problems = [d for d in gc.validate(doc) if d.severity == "error"]
    missing_port = next(d for d in problems if "no input port 'input'" in d.message)
    assert missing_port.node_id == "a" and missing_port.hint == "its inputs: in"
    assert any("input port 'in' has no edge" in d.message for d in problems)


def test_input_port_with_no_edge():
    doc = chain(X, ("s", "add", {}), Y, edges=[Edge(src="x", dst="s", dst_port="in0"), Edge(src="s", dst="y")])
    problem = only_error(doc)
    assert (problem.node_id, problem.port) == ("s", "in1") and "has no edge" in problem.message


def test_input_port_with_two_edges():
    doc = chain(X, ("a", "relu", {}), ("b", "relu", {}), Y)
    doc.edges.append(Edge(src="x", dst="b"))
    problem = only_error(doc)
    assert problem.node_id == "b" and "two edges (from 'a' and 'x')" in problem.message


def test_cycle_names_its_nodes():
    doc = chain(X, ("s", "add", {}), ("a", "relu", {}), ("b", "relu", {}), Y, edges=[
        Edge(src="x", dst="s", dst_port="in0"), Edge(src="b", dst="s", dst_port="in1"),
        Edge(src="s", dst="a"), Edge(src="a", dst="b"), Edge(src="b", dst="y"),
    ])
    problem = only_error(doc)
    assert "cycle" in problem.message
    for node_id in ("s", "a", "b"):
        assert node_id in problem.message


def test_self_loop_is_a_cycle():
    doc = chain(X, ("a", "add", {}), Y, edges=[
        Edge(src="x", dst="a", dst_port="in0"), Edge(src="a", dst="a", dst_port="in1"), Edge(src="a", dst="y")])
    assert "a -> a" in only_error(doc).message


def test_incompatible_shapes_at_add():
    doc = chain(X, ("c", "conv2d", {"out_channels": 4}), ("s", "add", {}), Y, edges=[
        Edge(src="x", dst="c"), Edge(src="x", dst="s", dst_port="in0"), Edge(src="c", dst="s", dst_port="in1"),
        Edge(src="s", dst="y")])
    problem = only_error(doc)
    assert problem.node_id == "s"
    assert "in0 (3, 8, 8), in1 (4, 6, 6)" in problem.message


def test_incompatible_shapes_at_concat():
    doc = chain(X, ("p", "maxpool2d", {}), ("j", "concat", {}), Y, edges=[
        Edge(src="x", dst="p"), Edge(src="x", dst="j", dst_port="in0"), Edge(src="p", dst="j", dst_port="in1"),
        Edge(src="j", dst="y")])
    problem = only_error(doc)
    assert problem.node_id == "j" and "must match in every dim but dim 1" in problem.message


def test_kernel_larger_than_its_padded_input():
    problem = only_error(chain(X, ("c", "conv2d", {"kernel_size": 11, "padding": 1}), Y))
    assert problem.node_id == "c"
    assert "kernel spans 11 along H but the padded input is only 10" in problem.message


def test_problems_are_reported_once_where_they_start():
    doc = chain(X, ("c", "conv2d", {"kernel_size": 11}), ("f", "flatten", {}), ("l", "linear", {}), Y)
    assert [d.node_id for d in gc.validate(doc)] == ["c"]


@pytest.mark.parametrize("drop, kind", [("x", "input"), ("y", "output")])
def test_no_input_or_no_output_node(drop, kind):
    doc = chain(X, ("a", "relu", {}), Y)
    doc.nodes = [n for n in doc.nodes if n.id != drop]
    doc.edges = [e for e in doc.edges if drop not in (e.src, e.dst)]
    problems = [d for d in gc.validate(doc) if d.severity == "error"]
    assert any(f"no {kind} node" in d.message for d in problems)


def test_node_that_reaches_no_output_is_a_warning_and_is_left_out():
    doc = chain(X, ("a", "relu", {}), Y)
    doc.nodes.append(Node(id="stray", type="relu"))
    doc.edges.append(Edge(src="x", dst="stray"))
    (problem,) = gc.validate(doc)
    assert problem.severity == "warning" and problem.node_id == "stray"
    assert "stray" not in dict(gc.compile(doc).named_children())


# ------------------------------------------------------------------------- the CLI
BAD_GRAPHS = {
    "unknown_type": (chain(X, ("c", "conv2", {}), Y), "node 'c'"),
    "unknown_param": (chain(X, ("c", "conv2d", {"kernal_size": 3}), Y), "node 'c'"),
    "bad_bound": (chain(X, ("c", "conv2d", {"out_channels": -1}), Y), "node 'c'"),
    "bad_id": (chain(X, ("2c", "relu", {}), Y), "node '2c'"),
    "kernel": (chain(X, ("c", "conv2d", {"kernel_size": 9}), Y), "node 'c'"),
    "no_output": (chain(X, ("a", "relu", {})), "no output node"),
}


@pytest.mark.parametrize("case", BAD_GRAPHS)
def test_cli_validate_reports_bad_graphs_with_exit_1(case, tmp_path, capsys):
    doc, fragment = BAD_GRAPHS[case]
    path = tmp_path / "g.json"
    gc.save(doc, path)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert fragment in err
    assert err.splitlines() and all(line.startswith("error: ") for line in err.splitlines())


@pytest.mark.parametrize("text", ['{"format": "netcanvas.graph", "nodes": [', '{"format": "other"}', "\x00\x01"])
def test_cli_reports_broken_files_with_exit_1(text, tmp_path, capsys):
    path = tmp_path / "g.json"
    path.write_text(text)
    assert main(["summary", str(path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(path) in err


@pytest.mark.slow
def test_console_script_end_to_end(tmp_path):
    path = tmp_path / "g.json"
    gc.save(BAD_GRAPHS["kernel"][0], path)
    bad = subprocess.run([sys.executable, "-m", "graphcore.cli", "validate", str(path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: node 'c': kernel spans 9 along H")
    netcanvas = str(Path(sys.executable).parent / "netcanvas")  # the installed console script
    good = subprocess.run([netcanvas, "validate", "lenet5"], capture_output=True, text=True)
    assert good.returncode == 0 and "lenet5: OK (14 nodes, 13 edges)" in good.stdout
    usage = subprocess.run([netcanvas, "validate"], capture_output=True, text=True)
    assert usage.returncode == 2


def test_cli_validate_json_output(tmp_path, capsys):
    path = tmp_path / "g.json"
    gc.save(BAD_GRAPHS["unknown_param"][0], path)
    assert main(["validate", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["diagnostics"][0]["node_id"] == "c"
    assert report["diagnostics"][0]["hint"] == "did you mean 'kernel_size'?"


def test_analysis_never_raises_on_nonsense_wiring():
    doc = chain(X, ("s", "add", {"n": "two"}), Y, edges=[
        Edge(src="x", dst="s", dst_port="in7"), Edge(src="s", dst="y", src_port="nope"), Edge(src="y", dst="x")])
    analysis = Analysis(doc)
    assert not analysis.ok
    assert all(d.node_id in {"s", "x", "y", None} for d in analysis.diagnostics)


@pytest.mark.parametrize("block, param", [("dropout", "p"), ("dropout2d", "p"), ("ffn", "dropout"),
                                          ("transformer_block", "attention_dropout"), ("unet_mid", "dropout")])
def test_a_dropout_rate_of_one_is_refused_everywhere(block, param):
    """A rate of 1 would zero every element; every dropout param shares one bound."""
    assert blocks.get(block).params.model_validate({param: 0.99})
    problem = only_error(chain(X, ("d", block, {param: 1.0}), Y))
    assert problem.node_id == "d" and f"param {param!r} = 1.0" in problem.message and "less than 1" in problem.message
