"""ONNX import: every block type comes back from its own export, a refused model lists every
blocker at once, folding and pattern rules open what exporters write, the ONNX project's backend
test data imports, and weights are read once.

Import stories outside these (external data, budgets, hostile files) are in
test_onnx_import_hardening.py; round trips of whole templates in test_onnx.py.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from block_strategies import example_params, single_block_doc
from onnx import TensorProto, helper, numpy_helper
from onnx_cases import SUITES, cases, check, gemm_model, peak_import_memory
from torch import nn

import blocks
import graphcore as gc
from graphcore.cli import main
from graphcore.core.analysis import Analysis
from graphcore.core.inputs import input_specs, random_inputs
from graphcore.interchange.onnx_import import (
    EXPORT_ONLY,
    FLOAT64_NOTE,
    IMPORTED_AS_OTHERS,
    ONE_SAMPLE_NOTE,
    ImportRefused,
)
from graphcore.interchange.onnx_stream import STREAM_BYTES, skeleton

SLOW = pytest.mark.slow
TORCH_EXPORT = pytest.mark.filterwarnings("ignore")  # torch.export's exporter warns about things of its own


# ---------------------------------------------------------------------- helpers
def ort_run(path, *inputs: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {arg.name: x for arg, x in zip(session.get_inputs(), inputs, strict=True)})


def imported(path, **kwargs) -> tuple[gc.GraphDoc, nn.Module]:
    doc, state = gc.from_onnx(path, flat=True, **kwargs)
    model = gc.compile(doc).eval()
    model.load_state_dict(state, strict=True)
    return doc, model


def assert_same_outputs(model: nn.Module, path, *inputs: np.ndarray) -> None:
    """The imported model computes what onnxruntime computes from the file."""
    with torch.no_grad():
        got = model(*(torch.from_numpy(x) for x in inputs))
    for out, want in zip(got if isinstance(got, tuple) else (got,), ort_run(path, *inputs), strict=True):
        np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def block_types(doc: gc.GraphDoc) -> list[str]:
    return [n.type for n in doc.nodes if n.type not in ("input", "output")]


def value(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def save(path, nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "hand_made", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def export_torch(module: nn.Module, x: torch.Tensor, path, dynamo: bool = False, opset: int = 17):
    """``module`` as ONNX with a dynamic batch, by torch's TorchScript exporter or its torch.export one."""
    module.eval()
    if dynamo:
        torch.onnx.export(module, (x,), str(path), dynamo=True, external_data=False, input_names=["x"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset)
    else:
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["x"], opset_version=opset,
                          dynamic_axes={"x": {0: "batch"}})
    return path


EXPORTERS = ["legacy", pytest.param("dynamo", marks=[SLOW, TORCH_EXPORT])]


# ---------------------------------------------------------------------- every block type comes back
SPATIAL = ("kernel_size", "stride", "padding", "dilation", "output_padding")


def canonical(spec: blocks.BlockSpec, params: dict) -> dict:
    """Params with every default filled in, and the spellings that mean the same written one way:
    a pool's stride None is its kernel, a conv's padding 'valid' / 'same' is the number it pads,
    [3, 3] is 3."""
    values = spec.params.model_validate(params).model_dump()
    if "stride" in values and values["stride"] is None:
        values["stride"] = values["kernel_size"]
    if values.get("padding") == "valid":
        values["padding"] = 0
    elif values.get("padding") == "same":
        kernel, dilation = values["kernel_size"], values["dilation"]
        n = max(len(v) if isinstance(v, list) else 1 for v in (kernel, dilation))
        kernel, dilation = ([v] * n if isinstance(v, int) else v for v in (kernel, dilation))
        values["padding"] = [d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True)]
    for key in SPATIAL:
        if isinstance(values.get(key), list) and len(set(values[key])) == 1:
            values[key] = values[key][0]
    return values


def close(a, b) -> bool:
    """Equal, floats to float32 precision (an ONNX attribute is a float32)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, int | float) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b and type(a) is type(b)


def come_back(tmp_path, spec: blocks.BlockSpec, index: int) -> str:
    """How the example's ONNX export imports: 'itself' (one block of the same type and params),
    'others' (other blocks), or 'refused'; where it imports, its outputs are the block's."""
    example = spec.examples[index]
    doc = single_block_doc(spec, example.params, example.inputs, spec.input_ports(example_params(spec, example)))
    model = gc.compile(doc).eval()
    path = gc.export_onnx(model, tmp_path / f"{spec.type}-{index}.onnx", fuse=False).path
    try:
        back, again = imported(path)
    except ImportRefused:
        return "refused"
    inputs = random_inputs(input_specs(Analysis(doc), model), 3, seed=index)
    with torch.no_grad():
        want, got = model(*inputs), again(*inputs)
    for w, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,),
                    strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    (node, *others) = [n for n in back.nodes if n.type not in ("input", "output")] or [None]
    same = node is not None and not others and node.type == spec.type and \
        close(canonical(spec, node.params), canonical(spec, example.params))
    return "itself" if same else "others"


# The block cases whose export falls back to the torch.export exporter (~3 s for its first use).
SLOW_TYPES = {"conv2d", "adaptive_avgpool2d", "lrn", "pad"}


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.type, marks=[SLOW] if s.type in SLOW_TYPES else [])
                                  for s in blocks.all_specs() if s.build is not None])
def test_every_block_type_imports_back_from_its_own_onnx_export(tmp_path, spec):
    outcomes = {come_back(tmp_path, spec, i) for i in range(len(spec.examples))}
    if spec.type in IMPORTED_AS_OTHERS:
        assert outcomes <= {"itself", "others"} and "others" in outcomes, IMPORTED_AS_OTHERS[spec.type]
    elif spec.type in EXPORT_ONLY:
        assert "refused" in outcomes, f"{spec.type} is listed as export-only, but every example imports"
    else:
        assert outcomes == {"itself"}, (f"{spec.type}: an example imports as {outcomes - {'itself'}}; make it "
                                        "import back, or list it in onnx_import's IMPORTED_AS_OTHERS or EXPORT_ONLY")


def test_the_tables_of_block_types_that_do_not_come_back_name_registered_types_with_a_reason():
    for table in (IMPORTED_AS_OTHERS, EXPORT_ONLY):
        for type_id, reason in table.items():
            assert blocks.get(type_id) is not None and len(reason) > 10, type_id
    assert not set(IMPORTED_AS_OTHERS) & set(EXPORT_ONLY)


# ---------------------------------------------------------------------- every blocker at once
def model_with_three_problems(tmp_path):
    """Two Erf and a Sin (no block), a Reshape across the batch and two Transposes that move it
    (refused), and a Relu after the Reshape (not checked: what it gets is not known)."""
    nodes = [helper.make_node("Erf", ["x"], ["e1"], name="erf1"), helper.make_node("Erf", ["e1"], ["e2"], name="erf2"),
             helper.make_node("Sin", ["e2"], ["s"], name="sin"),
             helper.make_node("Reshape", ["x", "across"], ["r"], name="fold_batch"),
             helper.make_node("Relu", ["r"], ["r2"], name="after"),
             helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 0], name="swap1"),
             helper.make_node("Transpose", ["x"], ["t2"], perm=[1, 0], name="swap2")]
    outputs = [value("s", ["N", 4]), value("r2", [-1]), value("t1", [4, "N"]), value("t2", [4, "N"])]
    return save(tmp_path / "m.onnx", nodes, [value("x", ["N", 4])], outputs,
                [numpy_helper.from_array(np.array([-1], np.int64), "across")])


def test_a_refused_model_lists_every_unmapped_op_and_every_refused_node_in_one_error(tmp_path):
    with pytest.raises(ImportRefused) as caught:
        gc.from_onnx(model_with_three_problems(tmp_path))
    lines = str(caught.value).splitlines()
    assert lines == [
        "error: m.onnx: no NetCanvas block for these ONNX ops: Erf ×2, Sin ×1",
        "error: m.onnx: ONNX node 'fold_batch' (Reshape) reshapes across the batch dim (target shape [-1])",
        "error: m.onnx: ONNX node 'swap1' (Transpose) moves the batch dim (perm [1, 0]); so do 'swap2'",
    ]
    assert caught.value.to_dict() == {
        "unmapped": [{"op": "Erf", "count": 2}, {"op": "Sin", "count": 1}],
        "refused": [{"op": "Reshape", "node": "fold_batch", "why": "reshapes across the batch dim (target shape [-1])"},
                    {"op": "Transpose", "node": "swap1", "why": "moves the batch dim (perm [1, 0])"},
                    {"op": "Transpose", "node": "swap2", "why": "moves the batch dim (perm [1, 0])"}]}


def test_the_import_command_prints_the_blockers_as_json(tmp_path, capsys):
    path = model_with_three_problems(tmp_path)
    assert main(["import", str(path), "--out", str(tmp_path / "g.json"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["unmapped"] == [{"op": "Erf", "count": 2}, {"op": "Sin", "count": 1}]
    assert [r["node"] for r in report["refused"]] == ["fold_batch", "swap1", "swap2"]
    assert len(report["diagnostics"]) == 3 and not (tmp_path / "g.json").exists()
    assert main(["import", str(path), "--out", str(tmp_path / "g.json")]) == 1
    assert capsys.readouterr().err.count("\n") == 3  # one line per group, no traceback


def test_the_import_command_reports_success_as_json(tmp_path, capsys):
    path = gc.export_onnx(gc.template("lenet5"), tmp_path / "lenet.onnx", fuse=False).path
    assert main(["import", str(path), "--out", str(tmp_path / "g.json"), "--flat", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["parameters"] == 61_706 and (tmp_path / "g.json").exists()


def test_an_input_of_unknown_size_is_listed_with_the_other_blockers(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Erf", ["z"], ["b"])]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", "width"]), value("z", ["N", 3])],
                [value("a", ["N", "width"]), value("b", ["N", 3])])
    with pytest.raises(ImportRefused) as caught:
        gc.from_onnx(path)
    assert str(caught.value).splitlines() == [
        "error: m.onnx: no NetCanvas block for these ONNX ops: Erf ×1",
        "error: m.onnx: input 'x' needs a fixed size in every dim but the first (the batch), got [None, None]"]


def test_sizes_in_messages_are_plain_numbers(tmp_path):
    """A Reshape that really crosses the batch: its target reads [2, 6], not np.int64(2). (With a
    fixed input shape, (4, 3), the model would import as one sample.)"""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="r")]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", 3])], [value("y", [2, 6])],
                [numpy_helper.from_array(np.array([2, 6], np.int64), "shape")])
    with pytest.raises(ImportRefused, match=r"target shape \[2, 6\]\)$") as caught:
        gc.from_onnx(path)
    assert "np." not in str(caught.value)


# ---------------------------------------------------------------------- folding and shape arithmetic
def test_arithmetic_on_the_batch_size_keeps_the_batch(tmp_path):
    """x.view(x.size(0) * 6 // 6, groups, C // groups, 4) as the TorchScript exporter writes it."""
    consts = {"zero": np.array(0, np.int64), "one": np.array(1, np.int64), "six": np.array(6, np.int64),
              "groups": np.array([2], np.int64), "two": np.array(2, np.int64), "four": np.array([4], np.int64),
              "axes": np.array([0], np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
             helper.make_node("Mul", ["n", "six"], ["n6"]), helper.make_node("Div", ["n6", "six"], ["batch"]),
             helper.make_node("Gather", ["shape", "one"], ["c"], axis=0),
             helper.make_node("Div", ["c", "two"], ["per_group"]),
             helper.make_node("Unsqueeze", ["batch", "axes"], ["b1"]),
             helper.make_node("Unsqueeze", ["per_group", "axes"], ["p1"]),
             helper.make_node("Concat", ["b1", "groups", "p1", "four"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", 6, 4])], [value("y", ["N", 2, 3, 4])],
                [numpy_helper.from_array(v, k) for k, v in consts.items()])
    doc, model = imported(path)
    assert [(n.type, n.params) for n in doc.nodes if n.type == "reshape"] == [("reshape", {"shape": [2, 3, 4]})]
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((5, 6, 4), np.float32))


def test_weights_computed_by_constant_of_shape_fold_into_the_block_and_stay_one_value(tmp_path):
    """As in the ONNX model zoo's 'light' models: a conv weight that is ConstantOfShape(shape)."""
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [1], [0.02])
    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], value=fill),
             helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", 3, 8, 8])], [value("y", ["N", 4, 8, 8])],
                [numpy_helper.from_array(np.array([4, 3, 3, 3], np.int64), "w_shape"),
                 numpy_helper.from_array(np.arange(4, dtype=np.float32), "b")])
    doc, state = gc.from_onnx(path, flat=True)
    (weight,) = [t for k, t in state.items() if k.endswith("weight")]
    assert weight.shape == (4, 3, 3, 3) and torch.all(weight == 0.02) and weight.stride() == (0, 0, 0, 0)
    _, model = imported(path)
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((2, 3, 8, 8), np.float32))


@pytest.mark.parametrize("reduction, indices, updates", [
    ("none", [[0], [2]], [[1, 2, 3, 4], [5, 6, 7, 8]]),  # whole rows written: mask[0], mask[2] = ...
    ("add", [[1, 3], [1, 3], [2, 0]], [5, 6, 7]),  # the same place twice: both added
    ("max", [[0, 0], [2, 1]], [-3, 9]),
])
def test_in_place_writes_to_a_constant_fold_into_it(tmp_path, reduction, indices, updates):
    """Swin's shift mask as the TorchScript exporter writes ``mask[h, w] = count``: ScatterND on
    constants, folded into the constant the model then multiplies by (a scale block's weight)."""
    consts = {"shape": np.array([3, 4], np.int64), "indices": np.array(indices, np.int64),
              "updates": np.array(updates, np.float32)}
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["zeros"],
                              value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ScatterND", ["zeros", "indices", "updates"], ["mask"], reduction=reduction),
             helper.make_node("Mul", ["x", "mask"], ["y"])]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", 3, 4])], [value("y", ["N", 3, 4])],
                [numpy_helper.from_array(v, k) for k, v in consts.items()], opset=18)
    doc, model = imported(path)
    assert block_types(doc) == ["scale"]
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((2, 3, 4), np.float32))


@pytest.mark.parametrize("target, block, params", [([1, 48], "flatten", {"start_dim": 1, "end_dim": -1}),
                                                   ([1, 3, 16], "flatten", {"start_dim": 2, "end_dim": -1}),
                                                   ([1, 12, 4], "reshape", {"shape": [12, 4]})])
def test_a_reshape_whose_leading_1_is_a_fixed_batch_is_per_sample(tmp_path, target, block, params):
    """torch.flatten(x, 1) exported at batch size 1 by the torch.export exporter: Reshape to [1, 48]."""
    nodes = [helper.make_node("Reshape", ["x", "target"], ["y"])]
    path = save(tmp_path / "m.onnx", nodes, [value("x", [1, 3, 4, 4])], [value("y", target)],
                [numpy_helper.from_array(np.array(target, np.int64), "target")])
    doc, model = imported(path)
    assert [(n.type, n.params) for n in doc.nodes if n.type == block] == [(block, params)]
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((1, 3, 4, 4), np.float32))


def test_a_concat_of_one_tensor_is_a_connection_and_a_gemm_bias_of_shape_1_by_n_works(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Concat", ["x"], ["joined"], axis=1),
             helper.make_node("Gemm", ["joined", "w", "b"], ["y"], transB=1)]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", 4])], [value("y", ["N", 3])],
                [numpy_helper.from_array(rng.standard_normal((3, 4), np.float32), "w"),
                 numpy_helper.from_array(rng.standard_normal((1, 3), np.float32), "b")])
    doc, model = imported(path)
    assert block_types(doc) == ["linear"]
    assert_same_outputs(model, path, rng.standard_normal((2, 4), np.float32))


def test_unsqueeze_and_squeeze_of_a_computed_tensor_are_reshapes(tmp_path):
    """nn.AvgPool1d as exported: Unsqueeze -> AveragePool (2-D) -> Squeeze."""
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["u"]),
             helper.make_node("AveragePool", ["u"], ["p"], kernel_shape=[1, 2], strides=[1, 2]),
             helper.make_node("Squeeze", ["p", "axes"], ["y"])]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", 3, 8])], [value("y", ["N", 3, 4])], [axes])
    doc, model = imported(path)
    assert block_types(doc) == ["reshape", "avgpool2d", "reshape"]
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((2, 3, 8), np.float32))


def test_caffe_style_pools_that_pad_the_end_more_import_with_ceil_mode(tmp_path):
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", 2, 10, 10])], [value("y", ["N", 2, 5, 5])])
    doc, model = imported(path)
    assert [n.params["ceil_mode"] for n in doc.nodes if n.type == "maxpool2d"] == [True]
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((2, 2, 10, 10), np.float32))


@pytest.mark.parametrize("node, inputs, output, why", [
    (helper.make_node("Gemm", ["x", "w"], ["y"], name="mm"), [value("x", ["N", 4]), value("w", [4, 3])],
     ["N", 3], "'mm' \\(Gemm\\) multiplies two computed tensors"),
    (helper.make_node("ReduceMean", ["x"], ["y"], axes=[0], name="avg"), [value("x", ["N", 4, 2, 2])],
     [1, 4, 2, 2], "'avg' \\(ReduceMean\\) reduces over the batch dim"),
])
def test_what_has_no_block_is_explained(tmp_path, node, inputs, output, why):
    path = save(tmp_path / "m.onnx", [node], inputs, [value("y", output)])
    with pytest.raises(ImportRefused, match=why):
        gc.from_onnx(path)


# ---------------------------------------------------------------------- pattern rules
class Mlp(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(6, 8), act, nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("act, opset, block", [(nn.GELU(), 17, "gelu"), (nn.Hardswish(), 13, "hardswish"),
                                               (nn.Mish(), 17, "mish"), (nn.SiLU(), 17, "silu")])
def test_activations_exported_as_several_ops_import_as_one_block(tmp_path, exporter, act, opset, block):
    torch.manual_seed(0)
    path = export_torch(Mlp(act), torch.randn(2, 5, 6), tmp_path / "m.onnx", exporter == "dynamo", opset)
    doc, model = imported(path)
    assert block_types(doc) == ["linear", block, "linear"]
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((3, 5, 6), np.float32))


@pytest.mark.parametrize("divide", [True, False])
def test_hardswish_and_hardsigmoid_written_with_clip_import_as_their_blocks(tmp_path, divide):
    """x · clip(x + 3, 0, 6) / 6, and clip(x + 3, 0, 6) · (1/6): as converters without the ops write them."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), k)
              for k, v in (("three", 3.0), ("zero", 0.0), ("six", 6.0), ("sixth", 1 / 6))]
    scale = helper.make_node("Div", ["c", "six"], ["s"]) if divide else helper.make_node("Mul", ["c", "sixth"], ["s"])
    nodes = [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
             scale, helper.make_node("Mul", ["x", "s"], ["swish"]), helper.make_node("Relu", ["s"], ["sig"])]
    path = save(tmp_path / "m.onnx", nodes[:4] if divide else [*nodes[:3], nodes[4]], [value("x", ["N", 5])],
                [value("swish" if divide else "sig", ["N", 5])], consts)
    doc, model = imported(path)
    assert block_types(doc) == (["hardswish"] if divide else ["hardsigmoid", "relu"])
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((4, 5), np.float32) * 4)


def test_a_layernorm_written_out_before_opset_17_imports_as_one_layernorm(tmp_path):
    torch.manual_seed(0)
    norm = nn.LayerNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    path = export_torch(norm, torch.randn(2, 4, 6), tmp_path / "m.onnx", opset=16)
    assert "LayerNormalization" not in {n.op_type for n in onnx.load(path).graph.node}
    doc, model = imported(path)
    assert [(n.type, n.params) for n in doc.nodes if n.type != "input" and n.type != "output"] == [
        ("layernorm", {"eps": 1e-6})]
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((3, 4, 6), np.float32))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_scaled_dot_product_attention_with_its_projections_imports_as_multihead_attention(tmp_path, exporter):
    from blocks.attention import Attention

    torch.manual_seed(0)
    path = export_torch(Attention(16, 4), torch.randn(2, 7, 16), tmp_path / "m.onnx", exporter == "dynamo")
    doc, model = imported(path)
    assert [(n.type, n.params) for n in doc.nodes if n.type == "multihead_attention"] == [
        ("multihead_attention", {"num_heads": 4})] and len(block_types(doc)) == 1
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((3, 7, 16), np.float32))


def test_a_batch_norm_with_its_affine_written_apart_is_one_batch_norm(tmp_path):
    """Caffe2's form (the 'light' model zoo): BatchNormalization, then Mul and Add by (C, 1, 1) constants."""
    rng = np.random.default_rng(0)
    c = 3
    consts = {"scale": np.ones(c), "bias": np.zeros(c), "mean": rng.standard_normal(c), "var": rng.uniform(1, 2, c),
              "w": rng.standard_normal((c, 1, 1)), "b": rng.standard_normal((c, 1, 1))}
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["n"]),
             helper.make_node("Mul", ["n", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", c, 4, 4])], [value("y", ["N", c, 4, 4])],
                [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()])
    doc, model = imported(path)
    assert block_types(doc) == ["batchnorm2d"]
    assert_same_outputs(model, path, rng.standard_normal((2, c, 4, 4), np.float32))


def test_a_chain_of_adds_is_one_add_of_n_inputs(tmp_path):
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"]), helper.make_node("Add", ["ab", "c"], ["y"])]
    path = save(tmp_path / "m.onnx", nodes, [value(n, ["N", 3]) for n in "abc"], [value("y", ["N", 3])])
    doc, model = imported(path)
    assert [(n.type, n.params) for n in doc.nodes if n.type == "add"] == [("add", {"n": 3})]
    rng = np.random.default_rng(0)
    assert_same_outputs(model, path, *(rng.standard_normal((2, 3), np.float32) for _ in range(3)))


def as_strided_model(path, sample: list[int], offsets: np.ndarray, batch_stride: int | None = None):
    """``y[n] = x[n].flatten()[offsets]`` as the torch.export exporter writes as_strided: the batch
    flattened, and a Gather at indices Range(0, N) · (values in a sample) + offsets."""
    size = math.prod(sample)
    consts = {"flat": np.array([-1], np.int64), "zero": np.array(0, np.int64), "one": np.array(1, np.int64),
              "stride": np.array(batch_stride or size, np.int64), "axes": np.arange(1, offsets.ndim + 1),
              "offsets": offsets.reshape(1, *offsets.shape).astype(np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["shape"], end=1), helper.make_node("Squeeze", ["shape"], ["n"]),
             helper.make_node("Reshape", ["x", "flat"], ["values"], name="flatten_batch"),
             helper.make_node("Range", ["zero", "n", "one"], ["samples"], name="count_samples"),
             helper.make_node("Mul", ["samples", "stride"], ["starts"]),
             helper.make_node("Unsqueeze", ["starts", "axes"], ["starts_"]),
             helper.make_node("Add", ["starts_", "offsets"], ["indices"]),
             helper.make_node("Gather", ["values", "indices"], ["y"], axis=0, name="as_strided")]
    return save(path, nodes, [value("x", ["N", *sample])], [value("y", ["N", *offsets.shape])],
                [numpy_helper.from_array(v, k) for k, v in consts.items()], opset=18)


SAMPLE = np.arange(24).reshape(2, 3, 4)  # each offset of a (2, 3, 4) sample, at its place


@pytest.mark.parametrize("offsets, blocks", [
    (SAMPLE, []),  # the sample as it is: a connection (ConvNeXt's permute after its pool)
    (SAMPLE.reshape(6, 4), [("reshape", {"shape": [6, 4]})]),
    (SAMPLE.transpose(1, 2, 0), [("permute", {"dims": [2, 3, 1]})]),
    (SAMPLE[:, 1:3, ::2], [("reshape", {"shape": [2, 3, 2, 2]}), ("slice", {"dim": 2, "start": 1, "end": 3, "step": 1}),
                           ("slice", {"dim": 4, "start": 0, "end": 1, "step": 1}), ("reshape", {"shape": [2, 2, 2]})]),
    (SAMPLE[1, 2, 1:].reshape(3),
     [("reshape", {"shape": [24]}), ("slice", {"dim": 1, "start": 21, "end": 24, "step": 1})]),
    (np.arange(20, dtype=np.int64)[::5].reshape(2, 2),  # strides 10 and 5 over 24 values: the last 4 cut off
     [("reshape", {"shape": [24]}), ("slice", {"dim": 1, "start": 0, "end": 20, "step": 1}),
      ("reshape", {"shape": [2, 2, 5]}), ("slice", {"dim": 3, "start": 0, "end": 1, "step": 1}),
      ("reshape", {"shape": [2, 2]})]),
], ids=["itself", "reshaped", "permuted", "sliced", "one_row", "strides_past_the_end"])
def test_as_strided_over_the_flattened_batch_is_the_view_it_reads(tmp_path, offsets, blocks):
    path = as_strided_model(tmp_path / "m.onnx", [2, 3, 4], offsets)
    doc, model = imported(path)
    assert [(n.type, n.params) for n in doc.nodes if n.type not in ("input", "output")] == blocks
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((3, 2, 3, 4), np.float32))


@pytest.mark.parametrize("offsets, batch_stride, why", [
    (np.random.default_rng(0).permutation(24).reshape(4, 6), None, "at offsets that are no strided view of a sample"),
    (SAMPLE.reshape(-1)[::-1].reshape(2, 12), None, "with strides \\[-12, -1\\], which read backwards"),
    (np.array([[0, 1, 2], [1, 2, 3]]), None, "with strides \\[1, 1\\], which do not nest as a sample's dims do"),
    (SAMPLE[0], 12, "at indices that do not move on by one sample \\(24 values\\)"),
    (SAMPLE[:, :, 1:] + 1, None, "at offsets outside a sample of 24 values"),
], ids=["shuffled", "reversed", "overlapping_windows", "half_a_sample_apart", "past_the_sample"])
def test_as_strided_that_is_no_view_of_a_sample_is_refused_in_one_line(tmp_path, offsets, batch_stride, why):
    path = as_strided_model(tmp_path / "m.onnx", [2, 3, 4], offsets, batch_stride)
    with pytest.raises(ImportRefused) as caught:
        gc.from_onnx(path)
    (line,) = str(caught.value).splitlines()
    gather = "ONNX node 'as_strided' \\(Gather\\) reads the flattened batch \\(as_strided\\)"
    assert re.search(f"{gather} {why}", line), line


def test_a_range_over_the_batch_that_no_pattern_reads_is_refused_naming_it(tmp_path):
    consts = {"zero": np.array(0, np.int64), "one": np.array(1, np.int64), "axes": np.array([1], np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["shape"], end=1), helper.make_node("Squeeze", ["shape"], ["n"]),
             helper.make_node("Range", ["zero", "n", "one"], ["samples"], name="count_samples"),
             helper.make_node("Cast", ["samples"], ["counts"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["counts", "axes"], ["column"]),
             helper.make_node("Add", ["x", "column"], ["y"])]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", 3])], [value("y", ["N", 3])],
                [numpy_helper.from_array(v, k) for k, v in consts.items()], opset=18)
    with pytest.raises(ImportRefused) as caught:
        gc.from_onnx(path)
    assert str(caught.value).splitlines() == [
        "error: m.onnx: ONNX node 'count_samples' (Range) counts along the batch size, which an import cannot know "
        "(an index over the whole batch, as torch.export writes for as_strided)"]


@SLOW
@TORCH_EXPORT
def test_torch_as_strided_exported_by_torch_export_imports_as_its_view(tmp_path):
    """A view that starts one value in, with strides of 4, 12 and 2 over a (2, 3, 4) sample."""
    class Strided(nn.Module):
        def forward(self, x):
            return torch.as_strided(x, (x.shape[0], 3, 2, 2), (24, 4, 12, 2), 1)

    path = export_torch(Strided(), torch.randn(2, 2, 3, 4), tmp_path / "m.onnx", dynamo=True, opset=18)
    doc, model = imported(path)
    assert set(block_types(doc)) <= {"reshape", "slice", "permute"}
    assert_same_outputs(model, path, np.random.default_rng(0).standard_normal((3, 2, 3, 4), np.float32))


# ---------------------------------------------------------------------- weights are read once
def test_large_initializers_stay_in_the_file_until_read_into_their_weights(tmp_path):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((256, 512), np.float32)  # 512 KB
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    path = save(tmp_path / "m.onnx", nodes, [value("x", ["N", 512])], [value("y", ["N", 256])],
                [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.ones(256, np.float32), "b")])
    data, streamed = skeleton(path)
    assert set(streamed) == {"w"} and len(data) < 2 * STREAM_BYTES  # the 1 KB bias stays in, inline
    _, state = gc.from_onnx(path, flat=True)
    np.testing.assert_array_equal(state["linear.weight"].numpy(), weight)


@SLOW
def test_importing_a_model_peaks_at_under_twice_its_file_size(tmp_path):
    path = gemm_model(tmp_path / "big.onnx", 100)
    assert peak_import_memory(path) <= 2 * path.stat().st_size


# ---------------------------------------------------------------------- reductions, and models of one sample
REDUCTIONS = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod"}


def reduce_model(path, op: str, axes: list[int], keepdims: int, opset: int):
    """x (N, 3, 4, 5) reduced over ``axes``: an attribute before opset 18 (ReduceSum's 13), an input after."""
    as_input = opset >= (13 if op == "ReduceSum" else 18)
    node = helper.make_node(op, ["x", "axes"] if as_input else ["x"], ["y"], keepdims=keepdims,
                            **({} if as_input else {"axes": axes}))
    initializers = [numpy_helper.from_array(np.array(axes, np.int64), "axes")] if as_input else []
    dims, reduced = ["N", 3, 4, 5], {a % 4 for a in axes}
    out = [1 if i in reduced else d for i, d in enumerate(dims) if keepdims or i not in reduced]
    return save(path, [node], [value("x", dims)], [value("y", out)], initializers, opset=opset)


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("op", list(REDUCTIONS))
def test_reductions_import_as_the_reduce_block_from_attribute_and_input_axes(tmp_path, op, opset):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    for axes, keepdims, dims in (([2], 0, [2]), ([1, -1], 1, [1, 3])):
        path = reduce_model(tmp_path / f"{op}{keepdims}.onnx", op, axes, keepdims, opset)
        doc, model = imported(path)
        (node,) = [n for n in doc.nodes if n.type not in ("input", "output")]
        assert (node.type, node.params) == ("reduce", {"op": REDUCTIONS[op], "dims": dims, "keepdim": bool(keepdims)})
        assert_same_outputs(model, path, x)


def test_a_reduction_over_the_batch_dim_is_refused_and_a_mean_over_space_stays_a_pool(tmp_path):
    with pytest.raises(ImportRefused, match=r"'ReduceSum' \(ReduceSum\) reduces over the batch dim \(dims \[0, 2\]\)"):
        gc.from_onnx(reduce_model(tmp_path / "batch.onnx", "ReduceSum", [0, 2], 0, 17), flat=True)
    doc, _ = imported(reduce_model(tmp_path / "space.onnx", "ReduceMean", [2, 3], 0, 17))
    assert block_types(doc) == ["global_avgpool"]


def two_inputs_model(path, nodes, a: list, b: list, out: list, elem=TensorProto.FLOAT):
    return save(path, nodes, [value("a", a, elem), value("b", b, elem)], [value("y", out, elem)])


def test_inputs_of_different_first_sizes_import_as_one_sample_with_a_note(tmp_path):
    """(2, 3) @ (3, 4) + (4,): no batch dim is shared, so each input is one sample; the graph
    computes the product for every sample of a batch, as the model does for its one."""
    nodes = [helper.make_node("MatMul", ["a", "b"], ["ab"]), helper.make_node("Add", ["ab", "c"], ["y"])]
    path = save(tmp_path / "mm.onnx", nodes, [value("a", [2, 3]), value("b", [3, 4]), value("c", [4])],
                [value("y", [2, 4])])
    doc, model = imported(path)
    assert doc.meta["notes"] == [ONE_SAMPLE_NOTE]
    assert [n.params["shape"] for n in doc.nodes if n.type == "input"] == [[2, 3], [3, 4], [4]]
    assert sorted(block_types(doc)) == ["add", "matmul", "reshape"]  # c (4,) gets a 1 in front: (1, 4)
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((5, *shape)).astype(np.float32) for shape in ((2, 3), (3, 4), (4,))]
    with torch.no_grad():
        got = model(*map(torch.from_numpy, samples)).numpy()
    for i in range(5):  # each sample of the batch is the model run on it alone
        (want,) = ort_run(path, *(s[i] for s in samples))
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)


def test_a_fixed_shape_model_split_along_dim_0_imports_as_one_sample(tmp_path):
    nodes = [helper.make_node("Split", ["x"], ["p", "q"], axis=0, split=[2, 1])]
    path = save(tmp_path / "chunk.onnx", nodes, [value("x", [3, 4])], [value("p", [2, 4]), value("q", [1, 4])],
                opset=11)
    doc, model = imported(path)
    assert doc.meta["notes"] == [ONE_SAMPLE_NOTE]
    (split,) = [n for n in doc.nodes if n.type == "split"]
    assert split.params == {"sizes": [2, 1], "dim": 1}
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with torch.no_grad():
        got = model(torch.from_numpy(x)[None])
    for out, want in zip(got, ort_run(path, x), strict=True):
        np.testing.assert_array_equal(out[0].numpy(), want)


def test_the_import_command_prints_what_the_import_changed(tmp_path, capsys):
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    path = save(tmp_path / "mm.onnx", nodes, [value("a", [2, 3]), value("b", [3, 4])], [value("y", [2, 4])])
    assert main(["import", str(path), "--out", str(tmp_path / "g.json")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"note: {ONE_SAMPLE_NOTE}"
    assert main(["import", str(path), "--out", str(tmp_path / "g.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == [ONE_SAMPLE_NOTE]


def test_a_model_with_a_dynamic_batch_is_never_imported_as_one_sample(tmp_path):
    nodes = [helper.make_node("Split", ["x"], ["p", "q"], axis=0, split=[2, 1])]
    path = save(tmp_path / "chunk.onnx", nodes, [value("x", ["N", 4])], [value("p", [2, 4]), value("q", [1, 4])],
                opset=11)
    with pytest.raises(ImportRefused, match="cuts along the batch dim"):
        gc.from_onnx(path, flat=True)


def test_a_fixed_batch_classifier_keeps_its_batch_dim(tmp_path):
    """A Reshape to [1, 48] (torch.flatten(x, 1) exported at batch 1) is a per-sample flatten, and
    the model is not one sample: its input is (3, 4, 4) per sample."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["y"])]
    path = save(tmp_path / "fixed.onnx", nodes, [value("x", [1, 3, 4, 4])], [value("y", [1, 48])],
                [numpy_helper.from_array(np.array([1, 48], np.int64), "shape")])
    doc, _ = imported(path)
    assert "notes" not in doc.meta and block_types(doc) == ["relu", "flatten"]
    assert [n.params["shape"] for n in doc.nodes if n.type == "input"] == [[3, 4, 4]]


def test_float64_inputs_import_as_float32_with_a_note(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    path = save(tmp_path / "double.onnx", nodes, [value("x", ["N", 3], TensorProto.DOUBLE)],
                [value("y", ["N", 3], TensorProto.DOUBLE)])
    doc, model = imported(path)
    assert doc.meta["notes"] == [FLOAT64_NOTE]
    assert [n.params["dtype"] for n in doc.nodes if n.type == "input"] == ["float32"]


# ---------------------------------------------------------------------- the ONNX project's backend test data
# Models of the backend data that NetCanvas refuses, and a piece of the reason; every other model
# must import and compute the expected outputs. Models whose dim 0 is data, not a batch, import as
# one sample (a split or a product along dim 0, inputs of different first sizes); a constant tensor
# added to a tensor is a shift block, but not to an integer one.
REFUSED = {
    "test_operator_non_float_params": "constant of shape [2, 2]",
}
# Models whose float64 test data (up to 1e219) lies beyond float32, in which NetCanvas computes:
# they import, and their outputs overflow.
BEYOND_FLOAT32 = {"test_operator_add_broadcast", "test_operator_add_size1_right_broadcast",
                  "test_operator_add_size1_singleton_broadcast", "test_operator_addconstant"}


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.suite}/{c.name}", marks=[SLOW] if c.suite == "light" else [])
                                  for suite in SUITES for c in cases(suite)])
def test_the_onnx_backend_test_models_import_and_compute_the_expected_outputs(case):
    why = check(case)
    if case.name in REFUSED:
        assert why.startswith("error:") and REFUSED[case.name] in why, why
    elif case.name in BEYOND_FLOAT32:
        assert why.startswith("output differs by inf"), why
    else:
        assert why == ""


def test_every_case_named_as_refused_exists():
    names = {c.name for suite in SUITES for c in cases(suite)}
    assert set(REFUSED) | BEYOND_FLOAT32 <= names
