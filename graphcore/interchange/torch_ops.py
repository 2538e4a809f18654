"""ATen ops and module classes as blocks: the converters that ``from_torch`` looks up.

An op converter gets the call with its arguments by schema name (``call.named``: ``input``,
``weight``, ``stride``…), where computed tensors are ``Value``s and weights are tensors, and adds
the block through the importer, or raises ``Refused`` saying why no block does it. Dims are
PyTorch's (the batch is dim 0), as block params take them; an op along the batch dim is refused.
Module classes that a block builds need nothing here (``module_blocks`` matches them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import blocks
from blocks.shapes import shape_text
from graphcore.interchange.torch_import import Importer, Refused, converts, converts_module
from graphcore.interchange.torch_trace import Call, Value

aten = torch.ops.aten


# ----------------------------------------------------------------------------- helpers
def _dim(imp: Importer, value: Value, dim: int, what: str = "dim") -> int:
    """``dim`` of ``value`` as given (PyTorch numbering), refused where it is the batch dim."""
    rank = len(imp.shape(value))
    if not -rank <= dim < rank:
        raise Refused(f"{what} {dim} is out of range")
    if dim % rank == 0:
        raise Refused(f"works along the batch dim ({what} {dim})")
    return dim


def _size(values: Any) -> int | list[int]:
    """One int when every spatial dim agrees (as in a hand-written graph), else the list."""
    values = [int(v) for v in values]
    return values[0] if len(set(values)) == 1 else values


def _number(imp: Importer, arg: Any, what: str) -> float:
    """A constant operand as a number (a one-element tensor counts); a tensor of several values is refused."""
    if isinstance(arg, Value):
        raise Refused(f"computes its {what}")
    if isinstance(arg, torch.Tensor):
        if arg.numel() != 1:
            raise Refused(f"combines a tensor with a constant tensor of shape {list(arg.shape)}; NetCanvas "
                          "constants are single numbers (a learned tensor is a layer's weight)")
        return float(arg.item())
    return float(arg)


def _per_sample(shape: tuple[int, ...], constant: torch.Tensor, what: str) -> torch.Tensor:
    """``constant``, which broadcasts against a tensor of ``shape``, as the weight of one sample: its
    leading 1s (the batch's) left out; refused where it varies along the batch or would make a sample bigger."""
    if constant.dim() > len(shape):
        raise Refused(f"combines a tensor of rank {len(shape)} with a {what} of rank {constant.dim()}, which puts "
                      "dims before the batch dim")
    weight = constant
    while weight.dim() >= len(shape) and weight.shape[0] == 1:
        weight = weight.reshape(weight.shape[1:])
    if weight.dim() >= len(shape):
        raise Refused(f"combines a tensor with a {what} of shape {list(constant.shape)} that varies along the "
                      "batch dim")
    if torch.broadcast_shapes(shape[1:], weight.shape) != shape[1:]:
        raise Refused(f"broadcasts each sample {list(shape[1:])} up to more values with a {what} of shape "
                      f"{list(constant.shape)}")
    return weight.float()


def _fixed(call: Call, **expected: Any) -> None:
    """Refuse a call whose arguments are not the values a block computes with."""
    for name, value in expected.items():
        if call.named.get(name, value) != value:
            raise Refused(f"has {name}={call.named[name]!r}; the block computes only {name}={value!r}")


# ----------------------------------------------------------------------------- activations
# ATen op -> activation block; the block's params are the op's arguments of the same names, and
# the op's other arguments must have the values the block's torch.nn class computes with.
_ELU = {"scale": 1, "input_scale": 1}
_ACTIVATIONS: dict[Any, tuple[str, dict[str, Any]]] = {
    aten.relu.default: ("relu", {}), aten.relu_.default: ("relu", {}),
    aten.relu6.default: ("relu6", {}),
    aten.hardtanh.default: ("relu6", {"min_val": 0.0, "max_val": 6.0}),
    aten.hardtanh_.default: ("relu6", {"min_val": 0.0, "max_val": 6.0}),
    aten.leaky_relu.default: ("leaky_relu", {}), aten.leaky_relu_.default: ("leaky_relu", {}),
    aten.elu.default: ("elu", _ELU), aten.elu_.default: ("elu", _ELU),
    aten.selu.default: ("selu", {}), aten.selu_.default: ("selu", {}),
    aten.gelu.default: ("gelu", {}), aten.gelu_.default: ("gelu", {}),
    aten.silu.default: ("silu", {}), aten.silu_.default: ("silu", {}),
    aten.mish.default: ("mish", {}), aten.mish_.default: ("mish", {}),
    aten.softplus.default: ("softplus", {"beta": 1, "threshold": 20}),
    aten.hardswish.default: ("hardswish", {}), aten.hardswish_.default: ("hardswish", {}),
    aten.hardsigmoid.default: ("hardsigmoid", {}), aten.hardsigmoid_.default: ("hardsigmoid", {}),
    aten.tanh.default: ("tanh", {}), aten.tanh_.default: ("tanh", {}),
    aten.sigmoid.default: ("sigmoid", {}), aten.sigmoid_.default: ("sigmoid", {}),
    aten.softmax.int: ("softmax", {"dtype": None}), aten._softmax.default: ("softmax", {"half_to_float": False}),
    aten.log_softmax.int: ("logsoftmax", {"dtype": None}),
    aten._log_softmax.default: ("logsoftmax", {"half_to_float": False}),
}


@converts(*_ACTIVATIONS)
def _activation(imp: Importer, call: Call) -> None:
    block, fixed = _ACTIVATIONS[call.target]
    _fixed(call, **fixed)
    x = imp.value(call.named["input"])
    spec = blocks.get(block)
    assert spec is not None, f"activation block {block!r} is registered"
    params = {name: call.named[name] for name in spec.params.model_fields if name in call.named}
    if "dim" in params:
        params["dim"] = _dim(imp, x, params["dim"])
    imp.add(block, params, [x])


@converts(aten.prelu.default)
def _prelu(imp: Importer, call: Call) -> None:
    slopes = imp.weight(call.named["weight"], "slope")
    imp.add("prelu", {"num_parameters": slopes.numel()}, [imp.value(call.named["input"])],
            {"weight": slopes.reshape(-1)})


# ----------------------------------------------------------------------------- element-wise math
def _binary(block: str, commutative: bool) -> Callable[[Importer, Call], None]:
    """``block`` on two computed tensors, or on one and a number (its ``constant``, first or second),
    or on one and a constant tensor (the weight of a scale or shift block)."""
    merge = block in ("add", "mul")  # these take n inputs, and a constant as one more operand

    def convert(imp: Importer, call: Call) -> None:
        _fixed(call, alpha=1)
        left, right = call.named["input"], call.named.get("other", call.named.get("exponent"))
        if isinstance(left, Value) and isinstance(right, Value):
            imp.add(block, {"n": 2} if merge else {}, [left, right])
            return
        x, number, first = (left, right, False) if isinstance(left, Value) else (imp.value(right), left, True)
        if isinstance(number, torch.Tensor) and number.numel() > 1:
            _weighted(imp, block, x, number, first)
            return
        params: dict[str, Any] = {"n": 1} if merge else {}
        params["constant"] = _number(imp, number, "operand")
        if first and not commutative:
            params["constant_first"] = True
        imp.add(block, params, {"in0": x})  # the port a binary block keeps with its constant
    return convert


# A tensor with a constant tensor (ConvNeXt's layer scale, an input's mean and spread): the block whose
# weight the constant becomes, and the weight it is (x - c is x + (-c), x / c is x · (1 / c)).
_WEIGHTED: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "mul": ("scale", lambda c: c), "add": ("shift", lambda c: c),
    "sub": ("shift", torch.neg), "div": ("scale", torch.reciprocal)}


def _weighted(imp: Importer, block: str, x: Value, constant: torch.Tensor, first: bool) -> None:
    if block not in _WEIGHTED or (first and block in ("sub", "div")):
        raise Refused(f"computes {block} with a constant tensor of shape {list(constant.shape)} as its "
                      f"{'first' if first else 'second'} operand; NetCanvas holds a constant tensor as the weight "
                      "of a scale or shift block (x · w, x + w)")
    shape = imp.shape(x)
    weight = _per_sample(shape, constant, "constant tensor")
    if block == "add" and len(shape) == 3 and weight.shape == shape[1:]:  # tokens (N, T, D) plus a (T, D) table
        imp.add("pos_embed", {}, [x], {"pos_embedding": weight.reshape(1, *shape[1:])})
        return
    kind, form = _WEIGHTED[block]
    imp.add(kind, {"shape": list(weight.shape)}, [x], {"weight": form(weight)})


for _ops, _block, _commutative in (
        ((aten.add.Tensor, aten.add_.Tensor, aten.add.Scalar), "add", True),
        ((aten.mul.Tensor, aten.mul_.Tensor, aten.mul.Scalar), "mul", True),
        ((aten.sub.Tensor, aten.sub_.Tensor, aten.sub.Scalar), "sub", False),
        ((aten.div.Tensor, aten.div_.Tensor, aten.div.Scalar), "div", False),
        ((aten.pow.Tensor_Tensor, aten.pow.Tensor_Scalar, aten.pow.Scalar), "pow", False),
        ((aten.maximum.default,), "maximum", True),
        ((aten.minimum.default,), "minimum", True)):
    converts(*_ops)(_binary(_block, _commutative))


@converts(aten.rsub.Scalar, aten.rsub.Tensor)
def _rsub(imp: Importer, call: Call) -> None:
    _fixed(call, alpha=1)
    x, other = imp.value(call.named["input"]), call.named["other"]
    if isinstance(other, Value):
        imp.add("sub", {}, [other, x])
    else:
        imp.add("sub", {"constant": _number(imp, other, "operand"), "constant_first": True}, {"in0": x})


_UNARY = {aten.neg.default: "neg", aten.abs.default: "abs", aten.exp.default: "exp", aten.log.default: "log",
          aten.sqrt.default: "sqrt", aten.reciprocal.default: "reciprocal"}


@converts(*_UNARY)
def _math(imp: Importer, call: Call) -> None:
    imp.add("math", {"op": _UNARY[call.target]}, [imp.value(call.named["input"])])


@converts(aten.clamp.default, aten.clamp_.default, aten.clamp_min.default, aten.clamp_max.default)
def _clip(imp: Importer, call: Call) -> None:
    bounds = {name: call.named.get(name) for name in ("min", "max")}
    params = {name: None if bound is None else _number(imp, bound, f"{name} bound") for name, bound in bounds.items()}
    imp.add("clip", params, [imp.value(call.named["input"])])


# ----------------------------------------------------------------------------- joins and shapes
@converts(aten.cat.default)
def _cat(imp: Importer, call: Call) -> None:
    if not all(isinstance(t, Value) for t in call.named["tensors"]):
        _class_token(imp, call)
        return
    tensors = call.named["tensors"]
    if len(tensors) == 1:
        imp.alias(tensors[0])
        return
    imp.add("concat", {"n": len(tensors), "dim": _dim(imp, tensors[0], call.named["dim"])}, tensors)


def _class_token(imp: Importer, call: Call) -> None:
    """A learned token put before the tokens (ViT's ``cat([class_token.expand(N, -1, -1), x], 1)``):
    pos_embed with a class token. Its positions are the table the result is then added to (that
    add is the block's too, as in ONNX import), else zeros."""
    tensors = call.named["tensors"]
    if not _is_class_token(imp, tensors, call.named["dim"]):
        raise Refused("joins a constant tensor to computed ones; of such joins only a class token (one learned "
                      "token put before the tokens (N, T, D), as in ViT) has a block: pos_embed")
    token, x = tensors
    result = Value(call.outputs[0])
    tokens = imp.trace.info[result.name].shape[1:]
    later = imp.sole_user(result)
    table = _added_table(imp, later, result) if later is not None else None
    positions = torch.zeros(1, *tokens) if table is None else table.reshape(1, *tokens)
    imp.add("pos_embed", {"cls_token": True}, [x], {"class_token": token[:1], "pos_embedding": positions})
    if table is not None:
        imp.absorb(later)


def _is_class_token(imp: Importer, tensors: list[Any], dim: int) -> bool:
    """Are ``tensors`` one token, the same for every sample, and tokens (N, T, D), joined along T?"""
    if len(tensors) != 2 or isinstance(tensors[0], Value) or not isinstance(tensors[1], Value):
        return False
    token, shape = tensors[0], imp.shape(tensors[1])
    return len(shape) == 3 and dim % 3 == 1 and token.shape[1:] == (1, shape[2]) and \
        torch.equal(token, token[:1].expand_as(token))


def _added_table(imp: Importer, later: Call, tokens: Value) -> torch.Tensor | None:
    """The (T, D) table that ``later`` adds to ``tokens`` (N, T, D), if it is such an add."""
    if later.target not in (aten.add.Tensor, aten.add_.Tensor) or later.named.get("alpha", 1) != 1:
        return None
    other = next((o for o in (later.named["input"], later.named["other"]) if not isinstance(o, Value)), None)
    if not isinstance(other, torch.Tensor):
        return None
    try:
        table = _per_sample(imp.shape(tokens), other, "table")
    except Refused:
        return None
    return table if table.shape == imp.shape(tokens)[1:] else None


# op -> the argument that says where to cut; the op itself, run on the indexes of the dim, gives the pieces
_SPLITS = {aten.chunk.default: "chunks", aten.split.Tensor: "split_size",
           aten.split_with_sizes.default: "split_sizes"}


@converts(*_SPLITS)
def _split(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    dim = _dim(imp, x, call.named["dim"])
    pieces = call.target(torch.arange(imp.shape(x)[dim]), call.named[_SPLITS[call.target]], 0)
    if len(pieces) == 1:
        imp.alias(x)
        return
    sizes = [len(piece) for piece in pieces]
    imp.add("split", {"sizes": sizes, "dim": dim}, [x], outputs=[f"out{i}" for i in range(len(sizes))])


@converts(aten.slice.Tensor)
def _slice(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    dim, start, end, step = (call.named[name] for name in ("dim", "start", "end", "step"))
    size = imp.shape(x)[dim]
    if slice(start, end, step).indices(size) == (0, size, 1):
        imp.alias(x)  # all of it (``x[:, 1]`` slices the batch whole first)
        return
    _dim(imp, x, dim)
    imp.add("slice", {"dim": dim, "start": start or 0, "end": None if end is None or end >= size else end,
                      "step": step}, [x])


@converts(aten.roll.default)
def _roll(imp: Importer, call: Call) -> None:
    """A roll along dims, as ONNX exporters write it: along each dim, a slice of its last ``shift``
    entries put before a slice of the rest."""
    x = imp.value(call.named["input"])
    shape = imp.shape(x)
    if not call.named["dims"]:
        raise Refused("rolls the flattened tensor, across the batch dim")
    for dim in call.named["dims"]:
        _dim(imp, x, dim)
    rolls = [(dim, shift % shape[dim]) for dim, shift in zip(call.named["dims"], call.named["shifts"], strict=True)
             if shift % shape[dim]]
    if not rolls:
        imp.alias(x)
        return
    for i, (dim, shift) in enumerate(rolls):
        size = shape[dim]
        halves = [imp.step("slice", {"dim": dim, "start": size - shift}, [x]),
                  imp.step("slice", {"dim": dim, "end": size - shift}, [x])]
        if i + 1 < len(rolls):
            x = imp.step("concat", {"dim": dim}, halves)
        else:
            imp.add("concat", {"dim": dim}, halves)


@converts(aten.flatten.using_ints)
def _flatten(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    start, end = call.named["start_dim"], call.named["end_dim"]
    _dim(imp, x, start, "start_dim")
    imp.add("flatten", {"start_dim": start, "end_dim": end}, [x])


@converts(aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.unsqueeze.default,
          aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.unflatten.int)
def _reshape(imp: Importer, call: Call) -> None:
    """A view of each sample's values in the same order: a reshape to the result's per-sample
    shape (a flatten where the result is one vector a sample)."""
    x = imp.value(call.named["input"])
    before, after = imp.shape(x), imp.trace.info[call.outputs[0]].shape
    if not after or after[0] != before[0] or math.prod(after) != math.prod(before):
        raise Refused(f"reshapes {list(before)} to {list(after)}, across the batch dim")
    if after == before:
        imp.alias(x)
    elif len(after) == 2 and len(before) > 2:
        imp.add("flatten", {}, [x])
    else:
        imp.add("reshape", {"shape": list(after[1:])}, [x])


@converts(aten.permute.default)
def _permute(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    _permuted(imp, x, [d % len(imp.shape(x)) for d in call.named["dims"]])


@converts(aten.transpose.int, aten.swapaxes.default, aten.swapdims.default)
def _transpose(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    rank = len(imp.shape(x))
    names = ("dim0", "dim1") if "dim0" in call.named else ("axis0", "axis1")
    a, b = (call.named[name] % rank for name in names)
    dims = list(range(rank))
    dims[a], dims[b] = dims[b], dims[a]
    _permuted(imp, x, dims)


def _permuted(imp: Importer, x: Value, dims: list[int]) -> None:
    if dims[0] != 0:
        raise Refused(f"moves the batch dim (dims {dims})")
    if dims == sorted(dims):
        imp.alias(x)
    else:
        imp.add("permute", {"dims": dims[1:]}, [x])


@converts(aten.select.int)
def _select(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    if _dim(imp, x, call.named["dim"]) % len(imp.shape(x)) != 1:
        raise Refused("picks along a dim other than dim 1; NetCanvas's token_select picks a token (dim 1)")
    imp.add("token_select", {"index": call.named["index"]}, [x])


@converts(aten.contiguous.default, aten.clone.default, aten.alias.default, aten.detach.default,
          aten.lift_fresh_copy.default)
def _same(imp: Importer, call: Call) -> None:
    imp.alias(imp.value(call.named["input"]))


@converts(aten.to.dtype, aten.to.dtype_layout, aten.type_as.default)
def _cast(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    if imp.dtype(x) != imp.trace.info[call.outputs[0]].dtype:
        raise Refused(f"converts {imp.dtype(x)} to {imp.trace.info[call.outputs[0]].dtype}; NetCanvas keeps dtypes")
    imp.alias(x)


@converts(aten.dropout.default, aten.dropout_.default, aten.feature_dropout.default, aten.feature_dropout_.default)
def _dropout(imp: Importer, call: Call) -> None:
    block = "dropout2d" if call.target in (aten.feature_dropout.default, aten.feature_dropout_.default) else "dropout"
    imp.add(block, {"p": float(call.named["p"])}, [imp.value(call.named["input"])])


@converts(aten.pad.default, aten.constant_pad_nd.default)
def _pad(imp: Importer, call: Call) -> None:
    mode, value = call.named.get("mode", "constant"), call.named.get("value") or 0.0
    imp.add("pad", {"padding": [int(p) for p in call.named["pad"]], "mode": mode, "value": float(value)},
            [imp.value(call.named["input"])])


# ----------------------------------------------------------------------------- layers with weights
@converts(aten.linear.default)
def _linear(imp: Importer, call: Call) -> None:
    weight, bias = imp.weight(call.named["weight"], "weight"), imp.weight(call.named["bias"], "bias")
    imp.add("linear", {"out_features": int(weight.shape[0]), "bias": bias is not None},
            [imp.value(call.named["input"])], {"weight": weight, "bias": bias})


@converts(aten.matmul.default, aten.mm.default, aten.bmm.default)
def _matmul(imp: Importer, call: Call) -> None:
    x, other = call.named["input"], call.named.get("other", call.named.get("mat2"))
    if isinstance(x, Value) and isinstance(other, Value):
        ranks = {len(imp.shape(x)), len(imp.shape(other))}
        if len(ranks) != 1 or ranks.pop() < 3:
            raise Refused(f"multiplies computed tensors of shapes {shape_text(imp.shape(x)[1:])} and "
                          f"{shape_text(imp.shape(other)[1:])} in each sample; NetCanvas's matmul multiplies two of "
                          "one rank, matrices or stacks of them")
        imp.add("matmul", {}, [x, other])
        return
    weight = imp.weight(other, "matrix")
    if weight is None or weight.dim() != 2:
        raise Refused("multiplies by a constant that is not a matrix")
    imp.add("linear", {"out_features": int(weight.shape[1]), "bias": False}, [imp.value(x)], {"weight": weight.T})


@converts(aten.conv1d.default, aten.conv2d.default, aten.conv3d.default,
          aten.conv1d.padding, aten.conv2d.padding, aten.conv3d.padding)
def _conv(imp: Importer, call: Call) -> None:
    weight, bias = imp.weight(call.named["weight"], "weight"), imp.weight(call.named["bias"], "bias")
    n = weight.dim() - 2
    padding = call.named["padding"]
    params = {"out_channels": int(weight.shape[0]), "kernel_size": _size(weight.shape[2:]),
              "stride": _size(call.named["stride"]), "padding": padding if isinstance(padding, str) else _size(padding),
              "dilation": _size(call.named["dilation"]), "groups": int(call.named["groups"]), "bias": bias is not None}
    imp.add(f"conv{n}d", params, [imp.value(call.named["input"])], {"weight": weight, "bias": bias})


@converts(aten.conv_transpose2d.input)
def _conv_transpose(imp: Importer, call: Call) -> None:
    weight, bias = imp.weight(call.named["weight"], "weight"), imp.weight(call.named["bias"], "bias")
    groups = int(call.named["groups"])
    params = {"out_channels": int(weight.shape[1]) * groups, "kernel_size": _size(weight.shape[2:]),
              "stride": _size(call.named["stride"]), "padding": _size(call.named["padding"]),
              "output_padding": _size(call.named["output_padding"]), "dilation": _size(call.named["dilation"]),
              "groups": groups, "bias": bias is not None}
    imp.add("conv_transpose2d", params, [imp.value(call.named["input"])], {"weight": weight, "bias": bias})


@converts(aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)
def _batchnorm(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    weight, bias = imp.weight(call.named["weight"], "scale"), imp.weight(call.named["bias"], "shift")
    mean, var = imp.weight(call.named["running_mean"], "mean"), imp.weight(call.named["running_var"], "variance")
    if mean is None or var is None or call.named.get("training") or call.named["momentum"] is None:
        raise Refused("normalises with the batch's statistics or their cumulative average; NetCanvas's batch "
                      "norms keep running statistics with a momentum")
    rank = len(imp.shape(x))
    block = {2: "batchnorm1d", 3: "batchnorm1d", 4: "batchnorm2d", 5: "batchnorm3d"}.get(rank)
    if block is None:
        raise Refused(f"normalises a tensor of rank {rank}")
    params = {"eps": float(call.named["eps"]), "momentum": float(call.named["momentum"]), "affine": weight is not None}
    imp.add(block, params, [x], {"weight": weight, "bias": bias, "running_mean": mean, "running_var": var,
                                 "num_batches_tracked": torch.tensor(0)})


@converts(aten.layer_norm.default)
def _layernorm(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    if list(call.named["normalized_shape"]) != [imp.shape(x)[-1]]:
        raise Refused(f"normalises over {list(call.named['normalized_shape'])}, more than the last dim")
    weight, bias = imp.weight(call.named["weight"], "scale"), imp.weight(call.named["bias"], "shift")
    if weight is not None and bias is None:
        bias = torch.zeros_like(weight)
    imp.add("layernorm", {"eps": float(call.named["eps"]), "elementwise_affine": weight is not None}, [x],
            {"weight": weight, "bias": bias})


@converts(aten.group_norm.default)
def _groupnorm(imp: Importer, call: Call) -> None:
    weight, bias = imp.weight(call.named["weight"], "scale"), imp.weight(call.named["bias"], "shift")
    params = {"num_groups": int(call.named["num_groups"]), "eps": float(call.named["eps"]),
              "affine": weight is not None}
    imp.add("groupnorm", params, [imp.value(call.named["input"])], {"weight": weight, "bias": bias})


@converts(aten.instance_norm.default)
def _instancenorm(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    weight, bias = imp.weight(call.named["weight"], "scale"), imp.weight(call.named["bias"], "shift")
    if not call.named["use_input_stats"] or call.named["running_mean"] is not None:
        raise Refused("normalises with running statistics; NetCanvas's instance norms use each sample's own")
    params = {"eps": float(call.named["eps"]), "affine": weight is not None}
    imp.add(f"instancenorm{len(imp.shape(x)) - 2}d", params, [x], {"weight": weight, "bias": bias})


@converts(aten.embedding.default)
def _embedding(imp: Importer, call: Call) -> None:
    table = imp.weight(call.named["weight"], "table")
    _fixed(call, padding_idx=-1, scale_grad_by_freq=False, sparse=False)
    params = {"num_embeddings": int(table.shape[0]), "embedding_dim": int(table.shape[1])}
    imp.add("embedding", params, [imp.value(call.named["indices"], "indices")], {"weight": table})


# ----------------------------------------------------------------------------- pooling and resizing
def _pool(kind: str, n: int) -> Callable[[Importer, Call], None]:
    def convert(imp: Importer, call: Call) -> None:
        named = call.named
        params = {"kernel_size": _size(named["kernel_size"]), "stride": _size(named["stride"] or named["kernel_size"]),
                  "padding": _size(named["padding"]), "ceil_mode": bool(named["ceil_mode"])}
        if kind == "max":
            params["dilation"] = _size(named["dilation"])
        else:
            _fixed(call, divisor_override=None)
            params["count_include_pad"] = bool(named["count_include_pad"])
        imp.add(f"{kind}pool{n}d", params, [imp.value(named["input"])])
    return convert


for _n in (1, 2, 3):
    converts(getattr(aten, f"max_pool{_n}d").default)(_pool("max", _n))
    converts(getattr(aten, f"avg_pool{_n}d").default)(_pool("avg", _n))


@converts(aten.adaptive_avg_pool2d.default)
def _adaptive_avgpool(imp: Importer, call: Call) -> None:
    imp.add("adaptive_avgpool2d", {"output_size": _size(call.named["output_size"])}, [imp.value(call.named["input"])])


@converts(aten.mean.dim)
def _mean(imp: Importer, call: Call) -> None:
    """A mean over all spatial dims of (N, C, …) is a pool (as a hand-written graph has it); any
    other mean is a reduce."""
    x = imp.value(call.named["input"])
    rank = len(imp.shape(x))
    dims = sorted(d % rank for d in call.named["dim"] or range(rank))
    spatial = rank >= 3 and dims == list(range(2, rank))
    if spatial and not call.named["keepdim"]:
        imp.add("global_avgpool", {}, [x])
    elif spatial and rank == 4:
        imp.add("adaptive_avgpool2d", {"output_size": 1}, [x])
    else:
        _reduce(imp, call)


# ATen reduction -> the reduce block's op; its dims are the op's ``dim`` (one or a list)
_REDUCE = {aten.mean.dim: "mean", aten.sum.dim_IntList: "sum", aten.amax.default: "max", aten.amin.default: "min",
           aten.max.dim: "max", aten.min.dim: "min", aten.prod.dim_int: "prod"}


@converts(*(op for op in _REDUCE if op is not aten.mean.dim))
def _reduce(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    _fixed(call, dtype=None)
    if any(imp.used(name) for name in call.outputs[1:]):
        raise Refused("its indices are used; reduce gives only the values")
    dims = call.named["dim"]
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    if not dims:
        raise Refused("reduces every dim, the batch's too")
    imp.add("reduce", {"op": _REDUCE[call.target], "dims": [_dim(imp, x, d) for d in dims],
                       "keepdim": bool(call.named["keepdim"])}, [x])


@converts(aten.sum.default, aten.mean.default, aten.prod.default, aten.max.default, aten.min.default)
def _reduce_all(imp: Importer, call: Call) -> None:
    raise Refused("reduces the whole batch to one value; NetCanvas's reduce reduces each sample's own dims")


_UPSAMPLE = {aten.upsample_nearest1d.vec: "nearest", aten.upsample_nearest2d.vec: "nearest",
             aten.upsample_nearest3d.vec: "nearest", aten.upsample_linear1d.vec: "linear",
             aten.upsample_bilinear2d.vec: "bilinear", aten.upsample_bicubic2d.vec: "bicubic",
             aten.upsample_trilinear3d.vec: "trilinear"}


@converts(*_UPSAMPLE)
def _upsample(imp: Importer, call: Call) -> None:
    x = imp.value(call.named["input"])
    if call.named.get("align_corners"):
        raise Refused("aligns corners; NetCanvas's upsample does not")
    before, after = imp.shape(x)[2:], imp.trace.info[call.outputs[0]].shape[2:]
    factors = set(call.named.get("scale_factors") or [a / b for a, b in zip(after, before, strict=True)])
    if len(factors) != 1:
        raise Refused(f"scales the spatial dims by different factors {sorted(factors)}")
    imp.add("upsample", {"scale_factor": float(factors.pop()), "mode": _UPSAMPLE[call.target]}, [x])


# ----------------------------------------------------------------------------- attention
@converts(aten.scaled_dot_product_attention.default)
def _attention(imp: Importer, call: Call) -> None:
    """softmax(q·kᵀ·scale + mask)·v as the blocks that compute it, as ONNX import reads it: kᵀ a
    permute, the products matmuls, the scale a mul, a constant mask (or the causal one) a shift."""
    _fixed(call, dropout_p=0.0, enable_gqa=False)
    q, k, v = (imp.value(call.named[name], name) for name in ("query", "key", "value"))
    rank = len(imp.shape(q))
    if rank < 3 or {len(imp.shape(k)), len(imp.shape(v))} != {rank}:
        raise Refused("takes a query, key and value that are not (N, …, T, D) tensors of one rank")
    keys = imp.step("permute", {"dims": [*range(1, rank - 2), rank - 1, rank - 2]}, [k])
    scale = 1 / math.sqrt(imp.shape(q)[-1]) if call.named["scale"] is None else call.named["scale"]
    scores = imp.step("mul", {"n": 1, "constant": float(scale)}, {"in0": imp.step("matmul", {}, [q, keys])})
    mask = _attention_mask(imp, call, q, k)
    if mask is not None:
        (*before, length, _), (*others, keys_length, _) = imp.shape(q), imp.shape(k)
        weight = _per_sample((*torch.broadcast_shapes(before, others), length, keys_length), mask, "mask")
        scores = imp.step("shift", {"shape": list(weight.shape)}, [scores], {"weight": weight})
    imp.add("matmul", {}, [imp.step("softmax", {"dim": -1}, [scores]), v])


def _attention_mask(imp: Importer, call: Call, q: Value, k: Value) -> torch.Tensor | None:
    """What the attention adds to its scores: the mask given (False: -inf), the causal one, or none."""
    mask, causal = call.named["attn_mask"], call.named["is_causal"]
    if isinstance(mask, Value):
        raise Refused("computes its mask; NetCanvas holds an attention mask as a shift block's weight")
    if causal:
        mask = torch.ones(imp.shape(q)[-2], imp.shape(k)[-2], dtype=torch.bool).tril()
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape).masked_fill(~mask, -math.inf)
    return mask


# ----------------------------------------------------------------------------- modules no block builds
@converts_module(nn.MultiheadAttention)
def _multihead_attention(imp: Importer, call: Call) -> None:
    """``nn.MultiheadAttention`` (batch_first) as ``multihead_attention``: its packed q/k/v
    projection split into the block's three."""
    mha = call.target
    assert isinstance(mha, nn.MultiheadAttention)
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    bound = dict(zip(names, call.args, strict=False)) | call.kwargs
    if not mha.batch_first:
        raise Refused("has batch_first=False; NetCanvas tokens are (N, T, D): build it with batch_first=True")
    if mha.bias_k is not None or mha.add_zero_attn:
        raise Refused("adds a key/value bias or a zero attention step, which multihead_attention does not")
    if bound.get("key_padding_mask") is not None or bound.get("attn_mask") is not None or bound.get("is_causal"):
        raise Refused("is called with a mask")
    if any(imp.used(name) for name in call.outputs[1:]):
        raise Refused("its attention weights are used; multihead_attention returns only its output")
    q, k, v = (imp.value(bound[name], name) for name in ("query", "key", "value"))
    dim = mha.embed_dim
    if mha._qkv_same_embed_dim:
        wq, wk, wv = mha.in_proj_weight.split(dim)
    else:
        wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    biases = mha.in_proj_bias.split(dim) if mha.in_proj_bias is not None else (None, None, None)
    weights: dict[str, torch.Tensor | None] = {"out_proj.weight": mha.out_proj.weight,
                                               "out_proj.bias": mha.out_proj.bias}
    for name, w, b in zip("qkv", (wq, wk, wv), biases, strict=True):
        weights |= {f"{name}_proj.weight": w, f"{name}_proj.bias": b}
    if mha.in_proj_bias is None or mha.out_proj.bias is None:
        raise Refused("has no biases; multihead_attention's projections have them")
    separate = not (q == k == v)
    params = {"num_heads": mha.num_heads, "dropout": float(mha.dropout)}
    if separate:
        params["separate_inputs"] = True
    imp.add("multihead_attention", params, {"q": q, "k": k, "v": v} if separate else {"in": q}, weights)
