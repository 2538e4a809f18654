"""Hostile graphs cost little: analysis linear in the document with caps on nesting, expanded size
and weight sizes, each a one-line error naming the node; a deadline stops an analysis cleanly."""

from __future__ import annotations

import asyncio
import resource
import sys
import time

import pytest
import torch
from fastapi import HTTPException
from nicegui.elements.upload_files import SmallFileUpload
from nicegui.testing import User

import blocks
import graphcore as gc
from app import editor as editor_module
from app.editor import EDITORS, Editor
from graphcore.core import limits
from graphcore.core.analysis import Analysis, Deadline
from graphcore.core.document import Edge, GraphDoc, Node, dumps
from graphcore.core.limits import Limits
from graphcore.core.synthetic import nested_subgraphs, residual_tower

FEATURES = 8
LINEAR = FEATURES * FEATURES + FEATURES  # params of one linear layer of a nested_subgraphs graph


def errors_of(doc: GraphDoc) -> list[gc.Diagnostic]:
    return [d for d in gc.validate(doc) if d.severity == "error"]


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def chain(*nodes: tuple) -> GraphDoc:
    """A graph from (id, type, params) triples wired in order."""
    doc_nodes = [Node(id=i, type=t, params=p) for i, t, p in nodes]
    edges = [Edge(src=a.id, dst=b.id) for a, b in zip(doc_nodes, doc_nodes[1:])]
    return GraphDoc(name="t", nodes=doc_nodes, edges=edges)


# ----------------------------------------------------------------- subgraphs: memoised, capped
def test_a_subgraph_used_twice_per_level_is_analysed_once_per_level():
    doc = nested_subgraphs(14)  # 16,384 linears once expanded: the analysis once took 10 s here
    diagnostics, seconds = timed(gc.validate, doc)
    assert diagnostics == [] and seconds < 1.0


def test_the_summary_counts_through_doubling_subgraphs_without_expanding_them():
    doc = nested_subgraphs(14)
    table, seconds = timed(gc.summary, doc)
    assert table.total_params == 2**14 * LINEAR
    assert table.total_macs == 2**14 * FEATURES * FEATURES
    assert seconds < 2.0


def test_summary_and_compile_agree_through_nested_subgraphs():
    doc = nested_subgraphs(4)
    model = gc.compile(doc)
    assert gc.summary(doc).total_params == sum(p.numel() for p in model.parameters()) == 16 * LINEAR
    assert model(torch.zeros(2, FEATURES)).shape == (2, FEATURES)


def test_a_graph_that_would_expand_past_the_cap_is_an_error_on_the_node_above_it():
    doc = nested_subgraphs(30)  # 2**30 linears: depth 30 never finished before
    problems, seconds = timed(errors_of, doc)
    assert seconds < 1.0
    (problem,) = problems
    assert problem.node_id == "top"
    assert "subgraph 'level30' expands to 5,368,709,118 nodes, more than the 100,000" in problem.message
    with pytest.raises(gc.GraphError, match="expands to 5,368,709,118 nodes"):
        gc.summary(doc)


def test_nesting_deeper_than_the_cap_is_an_error_not_a_recursion_error():
    problems, seconds = timed(errors_of, nested_subgraphs(300, uses=1))
    assert seconds < 2.0
    (problem,) = problems
    assert problem.node_id == "top"
    assert "subgraph 'level300' nests 301 levels deep, more than the 32" in problem.message
    assert "RecursionError" not in str(problem)


def test_nesting_up_to_the_cap_validates_summarises_and_compiles():
    deepest = limits.LIMITS.max_nesting - 1  # level0 is one level itself
    doc = nested_subgraphs(deepest, uses=1)
    assert gc.validate(doc) == []
    assert gc.summary(doc).total_params == LINEAR
    assert gc.compile(doc)(torch.zeros(1, FEATURES)).shape == (1, FEATURES)
    assert "nests 33 levels deep" in errors_of(nested_subgraphs(deepest + 1, uses=1))[0].message


def test_nesting_at_the_cap_holds_on_a_deep_call_stack():
    def deep(levels: int):
        return deep(levels - 1) if levels else gc.validate(nested_subgraphs(limits.LIMITS.max_nesting - 1, uses=1))
    assert deep(sys.getrecursionlimit() // 3) == []


def test_subgraphs_that_use_each_other_are_refused_on_the_node_that_uses_them():
    doc = nested_subgraphs(3)
    doc.subgraphs["level0"].nodes[1].type = "subgraph:level2"  # level2 -> level1 -> level0 -> level2
    problems, seconds = timed(errors_of, doc)
    assert seconds < 1.0
    assert problems[0].node_id == "top" and "contains itself" in problems[0].message


def test_repeat_counts_towards_the_expanded_size(monkeypatch):
    monkeypatch.setattr(limits, "LIMITS", Limits(max_expanded_nodes=200))
    doc = nested_subgraphs(3)  # level3 expands to 38 nodes
    assert gc.validate(doc) == []
    doc.node("top").params["repeat"] = 8
    (problem,) = errors_of(doc)
    assert problem.node_id == "top"
    assert "the graph expands to 306 nodes, more than the 200 a model may have" in problem.message


def test_several_subgraph_nodes_together_over_the_cap_name_the_largest(monkeypatch):
    monkeypatch.setattr(limits, "LIMITS", Limits(max_expanded_nodes=100))
    doc = nested_subgraphs(3)
    doc.subgraphs["level4"] = doc.subgraphs["level3"].model_copy(deep=True)
    for use in doc.subgraphs["level4"].nodes[1:3]:
        use.type = "subgraph:level3"  # 2 + 2 * 38 = 78 nodes
    doc.node("top").type = "subgraph:level4"
    doc.nodes.insert(1, Node(id="small", type="subgraph:level3"))  # 38 nodes
    doc.edges = [Edge(src="x", dst="small"), Edge(src="small", dst="top"), Edge(src="top", dst="y")]
    (problem,) = errors_of(doc)
    assert problem.node_id == "top" and "the graph expands to 118 nodes" in problem.message


def test_a_subgraph_reused_at_many_sizes_is_analysed_once_per_size():
    doc = nested_subgraphs(6)
    doc.subgraphs["level0"].nodes[0].params["shape"] = [4]
    doc.subgraphs["level0"].nodes[1].params["out_features"] = 4  # keeps the size it gets
    uses = [Node(id=f"u{i}", type="subgraph:level6") for i in range(40)]
    pads = [Node(id=f"p{i}", type="linear", params={"out_features": i + 1}) for i in range(40)]
    nodes = [doc.nodes[0]] + [n for pair in zip(pads, uses) for n in pair] + [doc.nodes[-1]]
    doc.nodes = nodes
    doc.edges = [Edge(src=a.id, dst=b.id) for a, b in zip(nodes, nodes[1:])]
    diagnostics, seconds = timed(gc.validate, doc)
    assert diagnostics == [] and seconds < 2.0


# ----------------------------------------------------------------- weight sizes, without allocating
def test_a_weight_tensor_over_the_budget_is_an_error_naming_the_node():
    doc = chain(("x", "input", {"shape": [3, 8, 8]}), ("c", "conv2d", {"out_channels": 10**9}), ("y", "output", {}))
    (problem,) = errors_of(doc)
    assert problem.node_id == "c"
    assert "weight (1000000000, 3, 3, 3) would hold 27,000,000,000 numbers" in problem.message
    assert "more than the 4,294,967,296 one tensor may hold" in problem.message
    with pytest.raises(gc.GraphError, match="27,000,000,000 numbers"):
        gc.to_python(doc)  # refused before any weight is made


def test_a_size_that_overflows_is_an_error_not_a_crash():
    doc = chain(("x", "input", {"shape": [5], "dtype": "int64"}), ("e", "embedding", {"num_embeddings": 10**30,
                                                                                       "embedding_dim": 4}),
                ("y", "output", {}))
    (problem,) = errors_of(doc)
    assert problem.node_id == "e" and "too large to count" in problem.message
    with pytest.raises(gc.GraphError, match="too large to count"):
        gc.summary(doc)


def test_weights_over_the_model_budget_name_the_largest_block():
    # Each weight (2**30 numbers) is under the per-tensor budget; together they take 4 * 4.3 GB.
    wide = {"out_features": 32768}
    doc = chain(("x", "input", {"shape": [32768]}), ("a", "linear", wide), ("b", "linear", wide),
                ("c", "linear", wide), ("d", "linear", {"out_features": 32768, "bias": False}), ("y", "output", {}))
    (problem,) = errors_of(doc)
    assert problem.node_id == "a"  # the first of the largest
    assert "the model's weights would take 17.2 GB, more than the 16.0 GB budget" in problem.message


def test_summary_counts_big_weights_without_allocating_them():
    wide = {"out_features": 32768}
    doc = chain(("x", "input", {"shape": [32768]}), ("a", "linear", wide), ("b", "linear", wide),
                ("c", "linear", wide), ("y", "output", {}))  # 12.9 GB of weights: under the budget
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    table, seconds = timed(gc.summary, doc)
    assert table.total_params == 3 * (32768 * 32768 + 32768)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000 and seconds < 5


def test_a_huge_bad_param_value_is_quoted_short():
    doc = chain(("x", "input", {"shape": [3, 8, 8]}), ("c", "conv2d", {"out_channels": "x" * 10**6}),
                ("y", "output", {}))
    (problem,) = errors_of(doc)
    assert problem.node_id == "c" and len(str(problem)) < 300


def test_budgets_are_configurable_in_one_place(monkeypatch):
    assert gc.validate(gc.template("lenet5")) == []
    monkeypatch.setattr(limits, "LIMITS", Limits(max_model_bytes=50_000, max_tensor_elements=40_000))
    model, tensor = errors_of(gc.template("lenet5"))  # the graph-wide problem first
    assert tensor.node_id == "f5"
    assert "its weight (120, 400) would hold 48,000 numbers, more than the 40,000" in tensor.message
    # f5 counts once, where its problem starts; the rest still takes 54 kB, f6 the most of it
    assert model.node_id == "f6"
    assert "the model's weights would take 54.3 kB, more than the 50.0 kB budget" in model.message


def test_weights_inside_a_subgraph_count_towards_the_model(monkeypatch):
    monkeypatch.setattr(limits, "LIMITS", Limits(max_model_bytes=2**4 * LINEAR * 4 - 1))
    (problem,) = errors_of(nested_subgraphs(4))  # 16 linears of 72 float32 numbers
    assert problem.node_id == "top" and "the model's weights would take" in problem.message


@pytest.mark.parametrize("spec", blocks.all_specs(), ids=lambda s: s.type)
def test_weights_are_measured_without_allocating_and_match_the_module(spec):
    """Every block's examples: the meta-device count equals the real module's."""
    for example in spec.examples:
        params = spec.params.model_validate(example.params)
        weights = limits.measure(spec, params, example.inputs)
        if spec.build is None:
            assert weights == limits.Weights()
            continue
        module = spec.build(params, example.inputs)
        assert weights.params == sum(p.numel() for p in module.parameters())
        assert weights.bytes == sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def test_an_edit_that_fixes_a_size_clears_its_error():
    doc = gc.template("lenet5")
    analysis = Analysis(doc)
    doc.node("f5").params["out_features"] = 10**9
    changed = analysis.update_node("f5")
    assert "f5" in changed and not analysis.ok
    doc.node("f5").params["out_features"] = 120
    analysis.update_node("f5")
    assert analysis.ok


def test_an_edit_upstream_that_grows_weights_below_it_is_counted_against_the_budget(monkeypatch):
    """A wider input leaves the linear layer's output shape as it was but grows its weight: the
    update counts it again (only the nodes it infers again), as a fresh analysis does."""
    monkeypatch.setattr(limits, "LIMITS", Limits(max_model_bytes=100_000))
    doc = chain(("x", "input", {"shape": [16]}), ("a", "linear", {"out_features": 256}), ("y", "output", {}))
    analysis = Analysis(doc)
    assert analysis.ok  # (16 + 1) * 256 * 4 bytes
    doc.node("x").params["shape"] = [128]
    changed = analysis.update_node("x")
    assert "a" in changed and not analysis.ok  # (128 + 1) * 256 * 4 = 132 kB
    assert [str(p) for p in analysis.diagnostics] == [str(p) for p in Analysis(doc).diagnostics]
    doc.node("x").params["shape"] = [16]
    analysis.update_node("x")
    assert analysis.ok and analysis.weights() == Analysis(doc).weights()


# ----------------------------------------------------------------- deadline
def test_an_analysis_past_its_deadline_stops_with_a_graph_error():
    doc = residual_tower(300)
    with pytest.raises(gc.GraphError, match=r"analysis took longer than 0 s"):
        Analysis(doc, deadline=Deadline(0))
    assert Analysis(doc, deadline=Deadline(60)).ok


def test_a_deadline_reaches_the_analyses_of_subgraphs():
    doc = nested_subgraphs(10)
    with pytest.raises(gc.GraphError, match="analysis took longer than 0 s"), Deadline(0):
        gc.validate(doc)
    assert gc.validate(doc) == []  # nothing half-done was remembered


# ----------------------------------------------------------------- the editor
def reused_at_many_widths(uses: int, depth: int) -> GraphDoc:
    """A chain of ``depth`` relus as a subgraph, used ``uses`` times, each time at a new width: it is
    analysed once per width (``uses * depth`` nodes in all), as it must be. Small as a file, slow to analyse."""
    inner = [Node(id="x", type="input", params={"shape": [4]}), *(Node(id=f"r{i}", type="relu") for i in range(depth)),
             Node(id="y", type="output")]
    chain_doc = GraphDoc(name="relus", nodes=inner, edges=[Edge(src=a.id, dst=b.id) for a, b in zip(inner, inner[1:])])
    nodes = [Node(id="x", type="input", params={"shape": [1]})]
    for i in range(uses):
        nodes += [Node(id=f"w{i}", type="linear", params={"out_features": i + 2}),
                  Node(id=f"s{i}", type="subgraph:relus")]
    nodes.append(Node(id="y", type="output"))
    return GraphDoc(name="slow", nodes=nodes, edges=[Edge(src=a.id, dst=b.id) for a, b in zip(nodes, nodes[1:])],
                    subgraphs={"relus": chain_doc})


async def upload(user: User, name: str, doc: GraphDoc) -> None:
    user.find("open").click()
    element = next(iter(user.find("open-upload").elements))
    await element.handle_uploads([SmallFileUpload(name, "application/json", dumps(doc).encode())])


async def open_editor(user: User) -> Editor:
    await user.open("/")
    await user.should_see(marker="canvas", retries=30)
    return EDITORS[user.client.id]


async def test_a_hostile_nested_document_opens_at_once_with_its_problem_and_the_page_stays_usable(user: User):
    editor = await open_editor(user)
    start = time.perf_counter()
    await upload(user, "doubling.json", nested_subgraphs(30))
    await user.should_see("Opened doubling.json")
    assert time.perf_counter() - start < 5
    await user.should_see("Problems (1)")
    (problem,) = editor.session.analysis.diagnostics
    assert problem.node_id == "top" and "expands to 5,368,709,118 nodes" in problem.message
    user.find("templates").click()
    user.find("template-vgg11").click()
    await user.should_see(marker="doc-name", content="vgg11")
    await user.should_see("Problems (0)")


async def test_a_document_too_slow_to_analyse_is_refused_while_the_page_keeps_answering(user: User, monkeypatch):
    monkeypatch.setattr(editor_module, "LOAD_SECONDS", 0.3)
    editor = await open_editor(user)
    gaps: list[float] = []

    async def tick() -> None:  # the event loop's pulse: what every other tab waits on
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        with pytest.raises(HTTPException):  # the upload fails: the uploader marks the file failed
            await upload(user, "slow.json", reused_at_many_widths(uses=150, depth=400))  # 60,000 nodes to analyse
        await user.should_see("Cannot open slow.json: analysis took longer than 0.3 s")
    finally:
        ticker.cancel()
    assert editor.session.doc.name == "lenet5"  # the work in the tab is kept
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.2f} s"
    user.find("templates").click()
    user.find("template-vgg11").click()
    await user.should_see(marker="doc-name", content="vgg11")
