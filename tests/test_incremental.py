"""The editor's incremental analysis always agrees with a fresh full analysis."""

from hypothesis import given, settings
from hypothesis import strategies as st

from graphcore.core import limits
from graphcore.core.analysis import Analysis
from graphcore.core.document import GraphDoc
from graphcore.core.limits import Limits
from graphcore.core.synthetic import residual_tower


def same_as_fresh(analysis: Analysis) -> None:
    fresh = Analysis(analysis.doc)
    assert analysis.shapes() == fresh.shapes()
    assert sorted(map(str, analysis.diagnostics)) == sorted(map(str, fresh.diagnostics))


def test_tower_is_valid_and_sized_as_documented():
    doc = residual_tower(10)
    analysis = Analysis(doc)
    assert analysis.ok and len(doc.nodes) == 7 * 10 + 7
    assert analysis.shapes()[("head", "out")] == (None, 10)


def test_an_edit_that_keeps_shapes_re_infers_only_that_node():
    analysis = Analysis(residual_tower(20))
    analysis.doc.node("b3_conv1").params["bias"] = True
    assert analysis.update_node("b3_conv1") == {"b3_conv1"}


def test_an_edit_that_changes_shapes_reports_every_changed_node():
    analysis = Analysis(residual_tower(4))
    analysis.doc.node("b1_conv2").params["out_channels"] = 8
    changed = analysis.update_node("b1_conv2")
    # conv2 -> bn2 -> add (now mismatched: the problem is reported there and stops)
    assert changed == {"b1_conv2", "b1_bn2", "b1_add", "b1_act2", "b2_conv1", "b2_bn1", "b2_act1",
                       "b2_conv2", "b2_bn2", "b2_add", "b2_act2", "b3_conv1", "b3_bn1", "b3_act1", "b3_conv2",
                       "b3_bn2", "b3_add", "b3_act2", "pool", "head", "logits"}
    assert [d.node_id for d in analysis.diagnostics] == ["b1_add"]
    same_as_fresh(analysis)


def test_a_change_of_ports_falls_back_to_a_rebuild():
    analysis = Analysis(residual_tower(2))
    analysis.doc.node("b0_add").params["n"] = 3
    changed = analysis.update_node("b0_add")
    assert "b0_add" in changed
    assert [(d.node_id, d.port) for d in analysis.diagnostics] == [("b0_add", "in2")]
    same_as_fresh(analysis)


EDITS = st.sampled_from([
    ("conv2", "out_channels", st.integers(1, 24)),
    ("conv1", "kernel_size", st.integers(1, 40)),
    ("conv1", "padding", st.integers(0, 3)),
    ("conv1", "stride", st.integers(1, 3)),
    ("bn1", "eps", st.floats(-1, 1)),
    ("conv2", "kernel_size", st.sampled_from(["3", 2.5, [3, 3], [3]])),
])


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_edit_sequences_match_a_fresh_analysis(data):
    analysis = Analysis(residual_tower(3, size=12))
    for _ in range(data.draw(st.integers(1, 6))):
        part, param, values = data.draw(EDITS)
        node_id = f"b{data.draw(st.integers(0, 2))}_{part}"
        analysis.doc.node(node_id).params[param] = data.draw(values)
        analysis.update_node(node_id)
        same_as_fresh(analysis)


def test_rebuild_reports_the_nodes_touched_by_a_structural_edit():
    analysis = Analysis(residual_tower(2))
    analysis.doc.edges = [e for e in analysis.doc.edges if not (e.dst == "b1_add" and e.dst_port == "in1")]
    changed = analysis.rebuild()
    assert "b1_add" in changed and "head" in changed and "b0_conv1" not in changed
    same_as_fresh(analysis)


def test_repeated_layers_take_known_results_and_still_report_their_own_problems(monkeypatch):
    analysis = Analysis(residual_tower(6))
    inferred = []
    spec_class = type(analysis.nodes["b0_conv1"].spec)
    infer = spec_class.infer
    monkeypatch.setattr(spec_class, "infer", lambda spec, *args: inferred.append(spec.type) or infer(spec, *args))
    analysis.doc.node("x").params["shape"] = [3, 16, 16]
    analysis.update_node("x")  # every block gets new input shapes; a repeated one is inferred once
    assert len(inferred) < len(analysis.nodes) // 3
    same_as_fresh(analysis)
    # A cap lowered after results were kept: back at 32x32, every conv is over it and named, not only the first.
    monkeypatch.setattr(limits, "LIMITS", Limits(max_tensor_elements=1000))
    analysis.doc.node("x").params["shape"] = [3, 32, 32]
    analysis.update_node("x")
    assert {d.node_id for d in analysis.diagnostics if "more than the 1,000" in d.message} == {
        f"b{i}_conv{j}" for i in range(6) for j in (1, 2)}
    same_as_fresh(analysis)


def test_params_with_any_text_a_user_typed_make_a_signature():
    """A list param (unhashable) with a lone surrogate in a string beside it: no JSON for the memo's key."""
    doc = GraphDoc.model_validate({"name": "g", "nodes": [
        {"id": "x", "type": "input", "params": {"shape": [7], "name": "\ud800"}},
        {"id": "y", "type": "output"}], "edges": [{"src": "x", "dst": "y"}]})
    analysis = Analysis(doc)
    assert [d.node_id for d in analysis.diagnostics] == ["x"]  # its name, said as a problem
    assert analysis.shapes()[("x", "out")] == (None, 7)
