"""ONNX import of the element-wise math, activation, norm, pooling and reshaping blocks.

Each case is a torch module written as a user would (``1 - x``, ``nn.PReLU(3)``, ``F.pad``),
exported by PyTorch's exporter; it must import as the one block of that type with those params,
and give the outputs onnxruntime gives for the file. The legacy exporter (opset 17) runs in the
fast suite, the torch.export-based one (a few seconds per model) in the slow one. Hand-made
files check the older opsets' forms (attributes where later opsets have inputs) and the refusals.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import graphcore as gc


class Fn(nn.Module):
    """A module whose forward is ``fn``."""

    def __init__(self, fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor):
        return self.fn(*xs)


def positive(*shape: int) -> torch.Tensor:
    return torch.rand(*shape) + 0.5


@dataclass
class Case:
    """A module, its inputs' per-sample shapes, and the block it must import as."""

    module: nn.Module
    shapes: tuple[tuple[int, ...], ...]
    block: str
    params: dict = field(default_factory=dict)
    make: Callable[..., torch.Tensor] = torch.randn  # the inputs, from (N, *shape)


def _seeded(module: nn.Module) -> nn.Module:
    """Learned values that are not the initial ones, so that weights are seen to come across."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand_like(p) + 0.1)
    return module


CASES = {
    # element-wise math
    "exp": Case(Fn(torch.exp), ((3, 4),), "math", {"op": "exp"}),
    "neg": Case(Fn(torch.neg), ((3, 4),), "math", {"op": "neg"}),
    "abs": Case(Fn(torch.abs), ((5,),), "math", {"op": "abs"}),
    "log": Case(Fn(torch.log), ((3, 4),), "math", {"op": "log"}, positive),
    "sqrt": Case(Fn(torch.sqrt), ((3, 4),), "math", {"op": "sqrt"}, positive),
    "reciprocal": Case(Fn(torch.reciprocal), ((6,),), "math", {"op": "reciprocal"}, positive),
    "sub": Case(Fn(lambda x, y: x - y), ((3, 4), (1, 4)), "sub"),
    "one_minus": Case(Fn(lambda x: 1 - x), ((6,),), "sub", {"constant": 1.0, "constant_first": True}),
    "minus_constant": Case(Fn(lambda x: x - 0.5), ((6,),), "sub", {"constant": 0.5}),
    "div": Case(Fn(lambda x, y: x / y), ((3, 4), (3, 4)), "div", {}, positive),
    "by_six": Case(Fn(lambda x: x / 6), ((2, 5),), "div", {"constant": 6.0}),
    # (2 / x is exported as Reciprocal and Mul)
    "two_over": Case(Fn(lambda x: torch.div(torch.tensor(2.0), x)), ((5,),), "div",
                     {"constant": 2.0, "constant_first": True}, positive),
    "pow": Case(Fn(torch.pow), ((3, 4), (3, 4)), "pow", {}, positive),
    "square": Case(Fn(lambda x: x ** 2), ((3, 4),), "pow", {"constant": 2.0}),
    "two_to_the": Case(Fn(lambda x: 2 ** x), ((5,),), "pow", {"constant": 2.0, "constant_first": True}),
    "minimum": Case(Fn(torch.minimum), ((3, 4), (3, 1)), "minimum"),
    "maximum_constant": Case(Fn(lambda x: torch.maximum(x, torch.tensor(0.25))), ((4,),), "maximum",
                             {"constant": 0.25}),
    "clamp": Case(Fn(lambda x: torch.clamp(x, -0.5, 0.5)), ((3, 4),), "clip", {"min": -0.5, "max": 0.5}),
    "clamp_max": Case(Fn(lambda x: torch.clamp(x, max=0.3)), ((3, 4),), "clip", {"min": None, "max": 0.3}),
    "plus_constant": Case(Fn(lambda x: x + 3), ((4,),), "add", {"n": 1, "constant": 3.0}),
    # reductions, and the product of two computed tensors
    "mean_dim": Case(Fn(lambda x: x.mean(dim=2)), ((3, 4, 5),), "reduce",
                     {"op": "mean", "dims": [2], "keepdim": False}),
    "sum_keepdim": Case(Fn(lambda x: x.sum(dim=(1, 3), keepdim=True)), ((3, 4, 5),), "reduce",
                        {"op": "sum", "dims": [1, 3], "keepdim": True}),
    "amax": Case(Fn(lambda x: torch.amax(x, dim=-1)), ((3, 4),), "reduce", {"op": "max", "dims": [2]}),
    "amin": Case(Fn(lambda x: torch.amin(x, dim=1, keepdim=True)), ((3, 4),), "reduce",
                 {"op": "min", "dims": [1], "keepdim": True}),
    "prod": Case(Fn(lambda x: torch.prod(x, dim=1)), ((3, 4),), "reduce", {"op": "prod", "dims": [1]}),
    "matmul": Case(Fn(torch.matmul), ((2, 3), (3, 4)), "matmul"),
    # activations
    "relu6": Case(nn.ReLU6(), ((3, 4),), "relu6"),
    "prelu": Case(_seeded(nn.PReLU()), ((3, 4, 5),), "prelu", {"num_parameters": 1}),
    "prelu_per_channel": Case(_seeded(nn.PReLU(3)), ((3, 4, 5),), "prelu", {"num_parameters": 3}),
    "prelu_features": Case(_seeded(nn.PReLU(6)), ((6,),), "prelu", {"num_parameters": 6}),
    "elu": Case(nn.ELU(alpha=0.5), ((3, 4),), "elu", {"alpha": 0.5}),
    "selu": Case(nn.SELU(), ((3, 4),), "selu"),
    "softplus": Case(nn.Softplus(), ((3, 4),), "softplus"),
    "hardswish": Case(nn.Hardswish(), ((3, 4),), "hardswish"),
    "hardsigmoid": Case(nn.Hardsigmoid(), ((3, 4),), "hardsigmoid"),
    "logsoftmax": Case(nn.LogSoftmax(dim=1), ((5, 3),), "logsoftmax", {"dim": 1}),
    # norms
    "instancenorm2d": Case(_seeded(nn.InstanceNorm2d(4, affine=True)), ((4, 5, 5),), "instancenorm2d",
                           {"eps": 1e-5, "affine": True}),
    "instancenorm1d": Case(nn.InstanceNorm1d(3, eps=1e-3), ((3, 7),), "instancenorm1d", {"eps": 1e-3, "affine": False}),
    # pooling
    "maxpool1d": Case(nn.MaxPool1d(3, 2, 1, dilation=2), ((3, 11),), "maxpool1d",
                      {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2, "ceil_mode": False}),
    "maxpool2d_dilated": Case(nn.MaxPool2d(3, 1, dilation=2), ((2, 9, 9),), "maxpool2d",
                              {"kernel_size": 3, "stride": 1, "padding": 0, "dilation": 2, "ceil_mode": False}),
    "avgpool3d": Case(nn.AvgPool3d(2), ((2, 4, 4, 4),), "avgpool3d",
                      {"kernel_size": 2, "stride": 2, "padding": 0, "ceil_mode": False, "count_include_pad": True}),
    "avgpool1d_uncounted": Case(nn.AvgPool1d(3, 1, 1, count_include_pad=False), ((2, 8),), "avgpool1d",
                                {"kernel_size": 3, "stride": 1, "padding": 1, "ceil_mode": False,
                                 "count_include_pad": False}),
    # moving values
    "zero_pad": Case(nn.ZeroPad2d(1), ((3, 5, 5),), "pad", {"padding": 1, "mode": "constant"}),
    "reflect_pad": Case(Fn(lambda x: F.pad(x, (1, 2, 0, 1), mode="reflect")), ((3, 5, 5),), "pad",
                        {"padding": [1, 2, 0, 1], "mode": "reflect"}),
    "replicate_pad": Case(nn.ReplicationPad1d((2, 1)), ((2, 4),), "pad", {"padding": [2, 1], "mode": "replicate"}),
    "channel_pad": Case(Fn(lambda x: F.pad(x, (0, 0, 0, 0, 1, 1), value=0.5)), ((2, 3, 4),), "pad",
                        {"padding": [0, 0, 0, 0, 1, 1], "mode": "constant", "value": 0.5}),
    "tile": Case(Fn(lambda x: x.repeat(1, 1, 2)), ((3, 4),), "tile", {"repeats": [2]}),
    "tile_all": Case(Fn(lambda x: x.repeat(1, 2, 1, 3)), ((2, 3, 4),), "tile", {"repeats": [2, 1, 3]}),
}
SPLIT = Case(Fn(lambda x: torch.split(x, [1, 3], dim=1)), ((4, 5),), "split", {"sizes": [1, 3], "dim": 1})


def batch_dims(module: nn.Module, count: int) -> dict:
    """torch.export's dynamic_shapes: dim 0 of every input is the batch, by the forward's argument names."""
    batch = torch.export.Dim("batch")
    params = list(inspect.signature(module.forward).parameters.values())
    if params[0].kind == params[0].VAR_POSITIONAL:
        return {params[0].name: tuple({0: batch} for _ in range(count))}
    return {p.name: {0: batch} for p in params[:count]}


def export(case: Case, path: Path, dynamo: bool) -> list[torch.Tensor]:
    """Write ``case.module`` to ``path``; the inputs to check it with (batch 3)."""
    inputs = [case.make(3, *shape) for shape in case.shapes]
    names = [f"x{i}" for i in range(len(inputs))]
    case.module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(case.module, tuple(inputs), str(path), dynamo=True, external_data=False,
                              input_names=names, dynamic_shapes=batch_dims(case.module, len(inputs)), verbose=False)
        else:
            torch.onnx.export(case.module, tuple(inputs), str(path), dynamo=False, opset_version=17,
                              input_names=names, dynamic_axes={name: {0: "N"} for name in names})
    return inputs


def blocks_of(doc) -> list:
    return [n for n in doc.nodes if n.type not in ("input", "output")]


def check_import(case: Case, path: Path, inputs: list[torch.Tensor]) -> None:
    doc, state = gc.from_onnx(path, flat=True)
    (node,) = blocks_of(doc)
    assert node.type == case.block
    assert {k: node.params[k] for k in case.params} == case.params
    model = gc.compile(doc).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        got = model(*inputs)
        want_torch = case.module(*inputs)
    got, want_torch = (t if isinstance(t, tuple) else (t,) for t in (got, want_torch))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want_ort = session.run(None, {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs)})
    for mine, theirs, reference in zip(got, want_ort, want_torch, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mine.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [*CASES, "split"])
def test_a_torch_module_imports_as_its_block(tmp_path, name):
    case = SPLIT if name == "split" else CASES[name]
    path = tmp_path / f"{name}.onnx"
    check_import(case, path, export(case, path, dynamo=False))


# What the torch.export-based exporter writes differently, so that the block does not come back:
DYNAMO_DIFFERS = {
    "softplus": "Softplus + Greater + Where (PyTorch's threshold), which no rule reads yet",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in [*CASES, "split"] if n not in DYNAMO_DIFFERS])
def test_a_torch_module_imports_as_its_block_from_the_dynamo_exporter(tmp_path, name):
    case = SPLIT if name == "split" else CASES[name]
    path = tmp_path / f"{name}.onnx"
    check_import(case, path, export(case, path, dynamo=True))


def test_split_gives_each_piece_its_own_output_port(tmp_path):
    path = tmp_path / "split.onnx"
    export(SPLIT, path, dynamo=False)
    doc, _ = gc.from_onnx(path, flat=True)
    (split,) = blocks_of(doc)
    assert sorted(e.src_port for e in doc.edges if e.src == split.id) == ["out0", "out1"]


def test_imported_weights_are_the_modules(tmp_path):
    for name, key in (("prelu_per_channel", "weight"), ("instancenorm2d", "bias")):
        case = CASES[name]
        path = tmp_path / f"{name}.onnx"
        export(case, path, dynamo=False)
        doc, state = gc.from_onnx(path, flat=True)
        (node,) = blocks_of(doc)
        np.testing.assert_array_equal(state[f"{node.id}.{key}"].numpy(), getattr(case.module, key).detach().numpy())


# ---------------------------------------------------------------------- hand-made files
def value(name: str, dims: list, elem: int = TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def hand_made(path: Path, nodes: list, shape: list, out_shape: list | None = None, initializers=(),
              opset: int = 17, outputs: tuple[str, ...] = ("y",)) -> Path:
    graph = helper.make_graph(nodes, "hand_made", [value("x", ["N", *shape])],
                              [value(o, ["N", *(out_shape or shape)]) for o in outputs], list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def imports_like_onnxruntime(path: Path, shape: list, batch: int = 2) -> list:
    """The graph's blocks; its outputs must equal onnxruntime's."""
    doc, state = gc.from_onnx(path, flat=True)
    model = gc.compile(doc).eval()
    model.load_state_dict(state)
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        got = model(x)
    got = got if isinstance(got, tuple) else (got,)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for mine, want in zip(got, session.run(None, {"x": x.numpy()}), strict=True):
        np.testing.assert_allclose(mine.numpy(), want, rtol=1e-5, atol=1e-5)
    return blocks_of(doc)


def test_lrn_imports_as_its_block(tmp_path):
    """PyTorch exports LocalResponseNorm as a dozen ops; the model zoo's LRN op is one block."""
    node = helper.make_node("LRN", ["x"], ["y"], size=3, alpha=2e-4, beta=0.6, bias=1.5)
    (lrn,) = imports_like_onnxruntime(hand_made(tmp_path / "lrn.onnx", [node], [6, 4, 4]), [6, 4, 4])
    assert (lrn.type, lrn.params) == ("lrn", {"size": 3, "alpha": 2e-4, "beta": 0.6, "k": 1.5})


def test_opset_6_keeps_clip_bounds_pads_and_split_sizes_as_attributes(tmp_path):
    clip = helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.5)
    (block,) = imports_like_onnxruntime(hand_made(tmp_path / "clip.onnx", [clip], [3, 4], opset=6), [3, 4])
    assert (block.type, block.params) == ("clip", {"min": -0.5, "max": 0.5})

    pad = helper.make_node("Pad", ["x"], ["y"], mode="edge", pads=[0, 0, 3, 1, 0, 0, 4, 2])
    (block,) = imports_like_onnxruntime(hand_made(tmp_path / "pad.onnx", [pad], [3, 4, 4], [3, 11, 7], opset=6),
                                        [3, 4, 4])
    assert (block.type, block.params) == ("pad", {"padding": [1, 2, 3, 4], "mode": "replicate"})

    split = helper.make_node("Split", ["x"], ["a", "b"], axis=-1, split=[2, 4])
    path = hand_made(tmp_path / "split.onnx", [split], [3, 6], [3, 2], opset=6, outputs=("a", "b"))
    model = onnx.load(path)
    model.graph.output[1].CopyFrom(value("b", ["N", 3, 4]))
    onnx.save(model, path)
    (block,) = imports_like_onnxruntime(path, [3, 6])
    assert (block.type, block.params) == ("split", {"sizes": [2, 4], "dim": -1})


def test_opset_6_prelu_takes_one_slope_per_channel_unshaped(tmp_path):
    """As PyTorch wrote nn.PReLU(3) for opset 6 (onnxruntime has no PRelu-6 to compare with)."""
    slopes = np.array([0.1, 0.2, 0.3], np.float32)
    node = helper.make_node("PRelu", ["x", "slope"], ["y"])
    path = hand_made(tmp_path / "prelu.onnx", [node], [3, 4], initializers=[numpy_helper.from_array(slopes, "slope")],
                     opset=6)
    doc, state = gc.from_onnx(path, flat=True)
    (block,) = blocks_of(doc)
    assert (block.type, block.params) == ("prelu", {"num_parameters": 3})
    model = gc.compile(doc).eval()
    model.load_state_dict(state)
    x = torch.randn(2, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), F.prelu(x, torch.from_numpy(slopes)))


def test_equal_split_pieces_get_their_sizes_from_shape_inference(tmp_path):
    split = helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)
    (block,) = imports_like_onnxruntime(
        hand_made(tmp_path / "split.onnx", [split], [4, 3], [2, 3], opset=18, outputs=("a", "b")), [4, 3])
    assert block.params == {"sizes": [2, 2], "dim": 1}


def refusals(path: Path) -> list[str]:
    with pytest.raises(gc.GraphError) as caught:
        gc.from_onnx(path, flat=True)
    return [r.why for r in caught.value.refused]


@pytest.mark.parametrize("node,initializers,why", [
    (helper.make_node("Selu", ["x"], ["y"], alpha=2.0), [],
     "has alpha=2, but NetCanvas's selu (PyTorch's) has alpha=1.67326"),
    (helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.2), [],
     "has alpha=0.2, but NetCanvas's hardsigmoid (PyTorch's) has alpha=0.166667"),
    (helper.make_node("Sub", ["x", "c"], ["y"]), [numpy_helper.from_array(np.ones(4, np.float32), "c")],
     "combines a tensor with a constant of shape [4]; NetCanvas combines tensors with a single number"),
    (helper.make_node("Max", ["x", "x", "x"], ["y"]), [], "takes 3 inputs; NetCanvas's maximum takes two"),
    (helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect"),
     [numpy_helper.from_array(np.array([0, 1, 1, 1, 0, 1, 1, 1]), "pads")],
     "pads the channels in reflect mode"),
    (helper.make_node("Tile", ["x", "r"], ["y"]), [numpy_helper.from_array(np.array([2, 1, 1, 1]), "r")],
     "repeats the batch dim (repeats [2, 1, 1, 1])"),
    (helper.make_node("PRelu", ["x", "s"], ["y"]), [numpy_helper.from_array(np.ones((4, 4), np.float32), "s")],
     "has slopes of shape [4, 4]; NetCanvas's prelu has one slope, or one per channel of its input [3, 4, 4]"),
])
def test_what_a_block_cannot_hold_is_refused_naming_why(tmp_path, node, initializers, why):
    path = tmp_path / "m.onnx"
    graph = helper.make_graph([node], "hand_made", [value("x", ["N", 3, 4, 4])], [value("y", ["N", "c", "h", "w"])],
                              initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    (refusal,) = refusals(path)
    assert refusal.startswith(why)
