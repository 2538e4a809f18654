"""ONNX import converters for the element-wise math, activation, norm and reshaping blocks
(blocks/elementwise.py, the activation table, lrn and instance norm, pad, tile and split).

Each converter maps one ONNX op onto one block: ``Sub(x, 1)`` -> ``sub(constant=1)``, ``Clip(x,
0, 6)`` -> ``relu6``, ``Pad(x, pads, "edge")`` -> ``pad(mode="replicate")``. Older opsets keep some
inputs as attributes (Clip's bounds, Pad's pads, Split's sizes before opsets 11-13); both forms are
read. What the block cannot hold is refused with the reason, naming the node.

onnx_import imports this module at its end, so that these converters are registered.
"""

from __future__ import annotations

import numpy as np

from blocks.activation import ACTIVATIONS, ONNX_FIXED_ATTRS
from graphcore.interchange.onnx_import import check_legacy_broadcast, converts, decimal, reduce_axes, single_number

UNARY = {"Neg": "neg", "Abs": "abs", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal"}
"""ONNX op -> the ``op`` of the math block."""

BINARY = {"Sub": "sub", "Div": "div", "Pow": "pow", "Min": "minimum", "Max": "maximum"}
"""ONNX op -> block type: two tensors, or a tensor and a single number."""

REDUCE_OPS = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod"}
"""ONNX op -> the ``op`` of the reduce block."""

PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
"""ONNX Pad's mode -> the pad block's."""

FLOAT_LIMIT = 3.4e38  # beyond it a bound is float32's extreme: exporters' way of writing no bound


def _ints(values) -> list[int]:
    """Sizes as plain ints, for params and messages (never ``np.int64(3)``)."""
    return [int(v) for v in np.ravel(values)]


# ---------------------------------------------------------------------- element-wise math
@converts(*UNARY, one_sample=True)
def _unary(imp, node):
    imp.add(node, "math", {"op": UNARY[node.op_type]}, [node.input[0]])


@converts(*BINARY, one_sample=True)
def _binary(imp, node):
    inputs = [name for name in node.input if name]
    block = BINARY[node.op_type]
    if len(inputs) == 1:  # Min and Max take any number of inputs; of one, it is that tensor
        imp.alias(node, inputs[0])
        return
    if len(inputs) > 2:
        imp.fail(node, f"takes {len(inputs)} inputs; NetCanvas's {block} takes two (chain several)")
    check_legacy_broadcast(imp, node, inputs)
    constants = [i for i, name in enumerate(inputs) if name in imp.consts]
    if not constants:
        first, second = imp.same_rank(node, inputs)
        imp.add(node, block, {}, {"in0": first, "in1": second})
        return
    (index,) = constants  # both constant: folded before conversion
    params = {"constant": single_number(imp, node, imp.consts[inputs[index]])}
    if index == 0:
        params["constant_first"] = True
    imp.add(node, block, params, {"in0": inputs[1 - index]})


def clip_bounds(imp, node) -> tuple[float | None, float | None]:
    """Clip's (min, max), None for an open bound: attributes before opset 11, constant inputs after.
    float32's extremes, which exporters write for no bound, count as open."""
    if imp.opset < 11:
        bounds = [imp.attr(node, "min"), imp.attr(node, "max")]
    else:
        bounds = [None if value is None else decimal(value.reshape(()))
                  for value in (imp.const(node, 1, "min"), imp.const(node, 2, "max"))]
    return tuple(None if b is None or abs(b) >= FLOAT_LIMIT else decimal(b) for b in bounds)


@converts("Clip", one_sample=True)
def _clip(imp, node):
    low, high = clip_bounds(imp, node)
    if low is None and high is None:
        imp.alias(node, node.input[0])
    elif (low, high) == (0.0, 6.0):
        imp.add(node, "relu6", {}, [node.input[0]])  # how ReLU6 is exported
    else:
        imp.add(node, "clip", {"min": low, "max": high}, [node.input[0]])


# ---------------------------------------------------------------------- activations
@converts(*ONNX_FIXED_ATTRS, one_sample=True)
def _fixed_activation(imp, node):
    """An activation whose ONNX op has attributes PyTorch's class fixes (Selu, HardSigmoid)."""
    block = ONNX_FIXED_ATTRS[node.op_type]
    for name, want in ACTIVATIONS[block].onnx_attrs.items():
        value = imp.attr(node, name, want)
        if abs(value - want) > 1e-6 * abs(want):
            imp.fail(node, f"has {name}={value:g}, but NetCanvas's {block} (PyTorch's) has {name}={want:g}")
    imp.add(node, block, {}, [node.input[0]])


@converts("Elu", one_sample=True)
def _elu(imp, node):
    imp.add(node, "elu", {"alpha": decimal(imp.attr(node, "alpha", 1.0))}, [node.input[0]])


@converts("PRelu")
def _prelu(imp, node):
    """One slope, or one per channel: (C,) before opset 7; after, shaped to broadcast along the
    channel dim, as (C, 1, 1) for (N, C, H, W)."""
    slope = imp.const(node, 1, "slope")
    dims = imp.dims.get(node.input[0]) or []
    channels = dims[1] if len(dims) > 1 else None
    per_channel = (channels,) + (1,) * (len(dims) - 2)
    trimmed = slope.shape[next((i for i, d in enumerate(slope.shape) if d != 1), slope.ndim):]
    if slope.size != 1 and not (trimmed == per_channel or (imp.opset < 7 and slope.shape == (channels,))):
        imp.fail(node, f"has slopes of shape {_ints(slope.shape)}; NetCanvas's prelu has one slope, or one per "
                       f"channel of its input {_ints(dims[1:]) if dims else '(shape not known)'}")
    imp.add(node, "prelu", {"num_parameters": int(slope.size)}, [node.input[0]], {"weight": slope.reshape(-1)})


# ---------------------------------------------------------------------- norms
@converts("LRN")
def _lrn(imp, node):
    params = {"size": int(imp.attr(node, "size")), "alpha": decimal(imp.attr(node, "alpha", 1e-4)),
              "beta": decimal(imp.attr(node, "beta", 0.75)), "k": decimal(imp.attr(node, "bias", 1.0))}
    imp.add(node, "lrn", params, [node.input[0]])


@converts("InstanceNormalization")
def _instancenorm(imp, node):
    """instancenorm{1,2,3}d. Exporters write a norm without affine as a scale of ones and a bias of
    zeros (Constant nodes, or initializers named ``val_3``); a scale named as PyTorch names a
    parameter (``norm.weight``) stays learned whatever its values, so a freshly made affine norm
    comes back affine."""
    n = (imp.rank(node.input[0]) or 0) - 2
    if n not in (1, 2, 3):
        imp.fail(node, "normalises a tensor that is not (N, C, L), (N, C, H, W) or (N, C, D, H, W)")
    scale, bias = imp.const(node, 1, "scale"), imp.const(node, 2, "bias")
    learned = node.input[1].rpartition(".")[2] == "weight"
    fixed = not learned and np.all(scale == 1) and np.all(bias == 0)
    params = {"eps": decimal(imp.attr(node, "epsilon", 1e-5)), "affine": not fixed}
    imp.add(node, f"instancenorm{n}d", params, [node.input[0]], None if fixed else {"weight": scale, "bias": bias})


# ---------------------------------------------------------------------- reductions
@converts(*REDUCE_OPS, one_sample=True)
def _reduce(imp, node):
    """reduce over the dims named. A mean over every spatial dim is a global average pool, imported
    as the pool block (adaptive_avgpool2d where it keeps the dims of (N, C, H, W)). No axes reduce
    every dim, the batch's too, unless noop_with_empty_axes makes that a pass-through."""
    rank, axes = imp.rank(node.input[0]), reduce_axes(imp, node)
    keep = bool(imp.attr(node, "keepdims", 1))
    if not axes and imp.attr(node, "noop_with_empty_axes", 0):
        imp.alias(node, node.input[0])
        return
    if rank is None:
        imp.fail(node, "reduces a tensor whose rank is not known when importing")
    axes = axes or list(range(rank))
    if axes[0] == 0:
        imp.fail(node, f"reduces over the batch dim (dims {axes})")
    op = REDUCE_OPS[node.op_type]
    if op == "mean" and not imp.lead and rank >= 3 and axes == list(range(2, rank)) and (not keep or rank == 4):
        imp.add(node, "adaptive_avgpool2d" if keep else "global_avgpool", {"output_size": 1} if keep else {},
                [node.input[0]])
        return
    imp.add(node, "reduce", {"op": op, "dims": axes, "keepdim": keep}, [node.input[0]])


# ---------------------------------------------------------------------- moving values
def _onnx_pads(imp, node, rank: int) -> list[int]:
    """Pad's pads for every dim, begins then ends (attribute before opset 11, input after, with
    the axes they apply to from opset 18)."""
    if imp.opset < 11:
        return _ints(imp.attr(node, "pads"))
    pads = _ints(imp.const(node, 1, "pads"))
    axes = imp.const(node, 3, "axes")
    if axes is None:
        return pads
    full = [0] * 2 * rank
    for i, axis in enumerate(_ints(axes)):
        full[axis % rank], full[axis % rank + rank] = pads[i], pads[i + len(pads) // 2]
    return full


@converts("Pad")
def _pad(imp, node):
    rank = imp.rank(node.input[0])
    mode = PAD_MODES.get(imp.attr(node, "mode", "constant"))
    if rank is None or mode is None:
        imp.fail(node, f"pads with mode {imp.attr(node, 'mode')!r} or a tensor of unknown rank")
    pads = _onnx_pads(imp, node, rank)
    if pads[0] or pads[rank] or min(pads) < 0:
        imp.fail(node, f"pads the batch dim or crops (pads {pads})")
    pairs = [[pads[d], pads[d + rank]] for d in range(rank - 1, 0, -1)]  # last dim first, as F.pad
    spatial = max(rank - 2, 1)  # the dims an int padding pads
    # constant mode pads up to the outermost dim padded; the others pad every spatial dim, no channels
    kept = max((i + 1 for i, pair in enumerate(pairs) if any(pair)), default=1) if mode == "constant" else spatial
    if any(any(pair) for pair in pairs[kept:]):
        imp.fail(node, f"pads the channels in {mode} mode (pads {pads}); NetCanvas pads them with a constant only")
    sides = [side for pair in pairs[:kept] for side in pair]
    params = {"padding": sides[0] if len(set(sides)) == 1 and len(sides) == 2 * spatial else sides, "mode": mode}
    value = imp.attr(node, "value", 0.0) if imp.opset < 11 else imp.const(node, 2, "constant value")
    if mode == "constant" and value is not None and np.ravel(value)[0] != 0:
        params["value"] = decimal(np.ravel(value)[0])
    imp.add(node, "pad", params, [node.input[0]])


@converts("Tile")
def _tile(imp, node):
    repeats = _ints(imp.const(node, 1, "repeats"))
    if not repeats or repeats[0] != 1:
        imp.fail(node, f"repeats the batch dim (repeats {repeats})")
    if all(r == 1 for r in repeats):
        imp.alias(node, node.input[0])
        return
    first = next(i for i, r in enumerate(repeats) if r != 1)  # the tile block implies the leading ones
    imp.add(node, "tile", {"repeats": repeats[first:]}, [node.input[0]])


@converts("Split", one_sample=True)
def _split(imp, node):
    rank = imp.rank(node.input[0])
    given_axis = int(imp.attr(node, "axis", 0))
    axis = imp.axis(node, given_axis, node.input[0])
    if axis == 0:
        imp.fail(node, "cuts along the batch dim")
    given = imp.attr(node, "split") if imp.opset < 13 else imp.const(node, 1, "split")
    if given is not None:
        sizes = _ints(given)
    else:  # equal pieces: their sizes are what shape inference gave each output
        sizes = [(imp.dims.get(name) or [None] * rank)[axis] for name in node.output]
        if None in sizes:
            imp.fail(node, "cuts into pieces whose sizes are not known when importing")
    node_id = imp.add(node, "split", {"sizes": sizes, "dim": given_axis if given_axis < 0 else axis}, [node.input[0]])
    for i, name in enumerate(node.output):
        imp.values[name] = (node_id, f"out{i}")


@converts("Expand")
def _expand(imp, node):
    """A computed tensor broadcast to a constant shape: nothing where the shape changes no size (as
    exporters write before a Tile), else a tile of its dims of size 1."""
    dims = imp.dims.get(node.input[0])
    shape = list(imp.const(node, 1, "shape"))
    if dims is None or len(shape) > len(dims) or None in dims[1:]:
        imp.fail(node, "adds dims to a tensor, or one whose shape is not known when importing")
    target = [1] * (len(dims) - len(shape)) + shape
    if not imp.keeps_batch(target[0], node.input[0]) and target[0] != 1:
        imp.fail(node, f"broadcasts along the batch dim (to {target[0]})")
    repeats = [1 if t == 1 or t == d else int(t) for d, t in zip(dims[1:], target[1:])]
    if any(r != 1 and d != 1 for r, d in zip(repeats, dims[1:])):
        imp.fail(node, f"broadcasts {_ints(dims[1:])} to {_ints(target[1:])}, which does not fit")
    if all(r == 1 for r in repeats):
        imp.alias(node, node.input[0])
        return
    first = next(i for i, r in enumerate(repeats) if r != 1)
    imp.add(node, "tile", {"repeats": repeats[first:]}, [node.input[0]])


ENDLESS = 2**62  # an end at or past it is "to the end" (exporters write INT64_MAX, or the dim's size)


def _slice_ranges(imp, node) -> list[tuple[int, int, int | None, int]]:
    """(axis, start, end, step) per sliced axis: attributes before opset 10, constant inputs after."""
    if imp.opset < 10:
        starts, ends = imp.attr(node, "starts"), imp.attr(node, "ends")
        axes, steps = imp.attr(node, "axes"), None
    else:
        starts, ends = (imp.const(node, i, what) for i, what in ((1, "starts"), (2, "ends")))
        axes, steps = imp.const(node, 3, "axes"), imp.const(node, 4, "steps")
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    rank = imp.rank(node.input[0])
    if rank is None:
        imp.fail(node, "slices a tensor whose rank is not known when importing")
    dims = imp.dims[node.input[0]]
    ranges = []
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        axis = imp.axis(node, axis, node.input[0])
        size = dims[axis]
        if step < 1:
            imp.fail(node, f"steps by {step} along dim {axis}; NetCanvas's slice steps forward")
        whole = start == 0 and (end >= ENDLESS or size is not None and end >= size) and step == 1
        if axis == 0 and not whole:
            imp.fail(node, "slices the batch dim")
        if not whole:
            ranges.append((axis, start, None if end >= ENDLESS or size is not None and end >= size else end, step))
    return ranges


@converts("Slice", one_sample=True)
def _slice(imp, node):
    """A range along each sliced dim of a computed tensor: one slice block per dim, chained."""
    ranges = _slice_ranges(imp, node)
    if not ranges:
        imp.alias(node, node.input[0])
        return
    tensor = node.input[0]
    for i, (axis, start, end, step) in enumerate(ranges):
        out = node.output[0] if i == len(ranges) - 1 else f"{node.output[0]}#slice{i}"
        imp.add(node, "slice", {"dim": axis, "start": start, "end": end, "step": step}, [tensor], output=out)
        tensor = out
