"""ONNX export agrees with PyTorch in onnxruntime, and ONNX files come back in as graphs.

Every template and every block type is exported and checked at two batch sizes (the templates
other than lenet5 and diffusion_mlp are slow tests); an exported graph imports back with the same
parameters and outputs.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from block_strategies import example_params, single_block_doc
from onnx import TensorProto, helper, numpy_helper

import blocks
import graphcore as gc
from graphcore.core.analysis import Analysis
from graphcore.core.inputs import input_specs, random_inputs
from graphcore.interchange import onnx_export

SLOW = pytest.mark.slow
QUICK_TEMPLATES = {"lenet5", "diffusion_mlp"}
# The block cases that take seconds, not a fraction of one: onnxruntime refuses their legacy
# export (a dilated conv with padding="same", adaptive pooling to a size that does not divide the
# input), so export_onnx falls back to the torch.export exporter, whose first use alone takes ~3 s.
SLOW_BLOCK_CASES = {"conv2d-1", "adaptive_avgpool2d-0"}


def ort_outputs(path, inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs)})


def torch_outputs(model, inputs):
    with torch.no_grad():
        out = model(*inputs)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def assert_agrees(path, model, doc, batches=(2, 5)):
    """Our own check of the file, independent of export_onnx's: two batch sizes, 1e-4 scaled."""
    specs = input_specs(Analysis(doc), model)
    for batch in batches:
        inputs = random_inputs(specs, batch, seed=batch)
        for want, got in zip(torch_outputs(model, inputs), ort_outputs(path, inputs), strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("name", [n if n in QUICK_TEMPLATES else pytest.param(n, marks=SLOW) for n in gc.templates()])
def test_template_exports_and_onnxruntime_agrees_at_two_batch_sizes(tmp_path, name):
    doc = gc.template(name)
    model = gc.compile(doc).init(seed=0).eval()
    result = gc.export_onnx(model, tmp_path / f"{name}.onnx")
    assert result.path.exists() and result.size == result.path.stat().st_size
    assert 0 <= result.max_diff <= result.tolerance
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # one file, no external data, no temp
    assert_agrees(result.path, model, doc)


def block_cases() -> list:
    cases = [(spec, example, f"{spec.type}-{i}") for spec in blocks.all_specs() if spec.build is not None
             for i, example in enumerate(spec.examples)]
    return [pytest.param(spec, example, id=case, marks=[SLOW] if case in SLOW_BLOCK_CASES else [])
            for spec, example, case in cases]


@pytest.mark.parametrize("spec,example", block_cases())
def test_every_block_type_exports_to_onnx(tmp_path, spec, example):
    doc = single_block_doc(spec, example.params, example.inputs, spec.input_ports(example_params(spec, example)))
    model = gc.compile(doc).eval()
    result = gc.export_onnx(model, tmp_path / "block.onnx")
    assert_agrees(result.path, model, doc)


def test_int8_is_smaller_and_reports_the_change(tmp_path):
    doc = gc.template("lenet5")
    model = gc.compile(doc).init(seed=0).eval()
    plain = gc.export_onnx(model, tmp_path / "fp32.onnx")
    result = gc.export_onnx(model, tmp_path / "int8.onnx", quantize="int8")
    q = result.int8
    assert q.fp32_size == plain.size and q.size == result.size < plain.size / 2
    assert q.fp32_max_diff == result.max_diff and q.max_diff > q.fp32_max_diff
    ops = {n.op_type for n in onnx.load(result.path).graph.node}
    assert ops & {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}
    inputs = random_inputs(input_specs(Analysis(doc), model), 4)
    (got,) = ort_outputs(result.path, inputs)
    assert np.abs(got - torch_outputs(model, inputs)[0]).max() == pytest.approx(q.max_diff, rel=10)


def test_a_mismatch_is_an_error_and_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous export")
    monkeypatch.setattr(onnx_export, "RTOL", -1.0)  # nothing can agree within a negative tolerance
    monkeypatch.setattr(onnx_export, "EXPORTERS", ("legacy",))  # (the fallback would disagree too, slowly)
    with pytest.raises(gc.GraphError, match="onnxruntime disagrees with PyTorch"):
        gc.export_onnx(gc.template("lenet5"), target)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_an_invalid_graph_is_refused_naming_the_node(tmp_path):
    doc = gc.template("lenet5")
    doc.node("c3").params["kernel_size"] = 99
    with pytest.raises(gc.GraphError, match="node 'c3'"):
        gc.export_onnx(doc, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_an_unwritable_path_is_a_clear_error(tmp_path):
    with pytest.raises(gc.GraphError, match="cannot write"):
        gc.export_onnx(gc.template("lenet5"), tmp_path / "missing" / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_bad_quantize_value_is_refused(tmp_path):
    with pytest.raises(gc.GraphError, match="quantize"):
        gc.export_onnx(gc.template("lenet5"), tmp_path / "m.onnx", quantize="int4")


@pytest.mark.parametrize("opset", [1, 6, 99])
def test_an_opset_torch_cannot_write_is_refused_not_replaced(tmp_path, opset):
    with pytest.raises(gc.GraphError, match=f"opset {opset} cannot be written: torch.onnx writes opsets 7 to"):
        gc.export_onnx(gc.template("lenet5"), tmp_path / "m.onnx", opset=opset)
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------------------- import
def round_trip(tmp_path, name, fuse):
    doc = gc.template(name)
    model = gc.compile(doc).init(seed=0).eval()
    path = gc.export_onnx(model, tmp_path / f"{name}.onnx", fuse=fuse).path
    imported, state = gc.from_onnx(path)
    assert gc.validate(imported) == [] or not [d for d in gc.validate(imported) if d.severity == "error"]
    again = gc.compile(imported).eval()
    again.load_state_dict(state, strict=True)
    inputs = random_inputs(input_specs(Analysis(doc), model), 3)
    for want, got in zip(torch_outputs(model, inputs), torch_outputs(again, inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return model, again


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["lenet5", pytest.param("resnet18", marks=SLOW)])
def test_round_trip_keeps_parameter_count_and_outputs(tmp_path, name):
    if name not in gc.templates():
        pytest.fail(f"template {name} is missing")
    model, again = round_trip(tmp_path, name, fuse=False)
    assert count(again) == count(model)


@pytest.mark.parametrize("name", ["lenet5", pytest.param("resnet18", marks=SLOW)])
def test_fused_export_imports_with_batch_norms_folded_into_convs(tmp_path, name):
    model, again = round_trip(tmp_path, name, fuse=True)
    folded = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert count(again) == count(model) - folded  # each norm's scale+shift became one conv bias


@SLOW
def test_an_export_by_the_torch_export_exporter_imports_too(tmp_path):
    doc = gc.template("lenet5")
    model = gc.compile(doc).init(seed=0).eval()
    path = tmp_path / "dynamo.onnx"
    torch.onnx.export(model, (torch.randn(2, 1, 28, 28),), str(path), dynamo=True, external_data=False,
                      input_names=["x"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    imported, state = gc.from_onnx(path)
    again = gc.compile(imported).eval()
    again.load_state_dict(state)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=1e-5, atol=1e-5)


def make_model(path: Path, nodes, inputs, outputs, initializers=(), opset=17) -> Path:
    graph = helper.make_graph(nodes, "hand_made", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def value(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def test_shape_arithmetic_matmul_add_and_silu_import_as_blocks(tmp_path):
    """x (N, 2, 3, 2) -> Shape/Gather/Unsqueeze/Concat -> Reshape (N, 12) -> MatMul + Add -> x*sigmoid(x):
    a flatten, a linear and a silu."""
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((12, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "twelve"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["lin"]),
        helper.make_node("Sigmoid", ["lin"], ["gate"]),
        helper.make_node("Mul", ["lin", "gate"], ["y"]),
    ]
    consts = [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array([0]), "axes"),
              numpy_helper.from_array(np.array([12]), "twelve"), numpy_helper.from_array(w, "w"),
              numpy_helper.from_array(b, "b")]
    path = make_model(tmp_path / "m.onnx", nodes, [value("x", ["N", 2, 3, 2])], [value("y", ["N", 5])], consts)

    doc, state = gc.from_onnx(path)
    assert sorted(n.type for n in doc.nodes) == ["flatten", "input", "linear", "output", "silu"]
    model = gc.compile(doc).eval()
    model.load_state_dict(state)
    x = torch.randn(3, 2, 3, 2)
    (want,) = ort_outputs(path, [x])
    np.testing.assert_allclose(torch_outputs(model, [x])[0], want, rtol=1e-5, atol=1e-5)


def test_unmapped_ops_are_listed_with_counts(tmp_path):
    nodes = [helper.make_node("Erf", ["x"], ["e1"]), helper.make_node("Erf", ["e1"], ["e2"]),
             helper.make_node("Relu", ["e2"], ["r"]), helper.make_node("Sin", ["r"], ["y"])]
    path = make_model(tmp_path / "m.onnx", nodes, [value("x", ["N", 4])], [value("y", ["N", 4])])
    with pytest.raises(gc.GraphError, match=r"no NetCanvas block for these ONNX ops: Erf ×2, Sin ×1"):
        gc.from_onnx(path)


def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path):
    for name, data in [("text.onnx", b"hello, I am not a model\n"), ("empty.onnx", b""),
                       ("graph.onnx", gc.template("lenet5").model_dump_json().encode())]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(gc.GraphError, match="not an ONNX model|not a valid ONNX model"):
            gc.from_onnx(tmp_path / name)
    with pytest.raises(gc.GraphError, match="cannot read"):
        gc.from_onnx(tmp_path / "missing.onnx")


def test_a_constant_tensor_added_is_a_shift_block_and_one_across_the_batch_names_the_onnx_node(tmp_path):
    offsets = np.arange(4, dtype=np.float32)
    nodes = [helper.make_node("Add", ["x", "c"], ["y"], name="offset")]
    path = make_model(tmp_path / "m.onnx", nodes, [value("x", ["N", 4])], [value("y", ["N", 4])],
                      [numpy_helper.from_array(offsets, "c")])
    doc, weights = gc.from_onnx(path)
    assert [(n.type, n.params) for n in doc.nodes if n.type not in ("input", "output")] == [("shift", {"shape": [4]})]
    model = gc.compile(doc)
    model.load_state_dict(weights, strict=True)
    x = torch.randn(3, 4)
    assert torch.equal(model(x), x + torch.from_numpy(offsets))
    path = make_model(tmp_path / "b.onnx", nodes, [value("x", ["N", 4])], [value("y", ["N", 4])],
                      [numpy_helper.from_array(np.ones((3, 4), np.float32), "c")])
    with pytest.raises(gc.GraphError, match="'offset' \\(Add\\).*varies along the batch dim"):
        gc.from_onnx(path)
