"""Constant folding for ONNX import: ops computed on constants before anything is converted.

Exporters write two kinds of computation on constants. Weights that the model computes
(Caffe2's model zoo fills them with ConstantOfShape; a weight transposed by a Transpose node),
and shape arithmetic for a dynamic batch: ``x.view(x.size(0), -1)`` becomes Shape -> Gather ->
Unsqueeze -> Concat -> Reshape. Folded here, the weights become arrays and the shapes become
values whose first size is the batch symbol ``N`` (``BATCH``): element-wise rules run on numpy
object arrays there, and ``BatchSize`` does the arithmetic.

Each rule gets the node's inputs as arrays and returns the result (a tuple for several outputs);
``elements`` says how many elements the result will hold, from the inputs' shapes alone, so the
import's budget (``ImportLimits``) is checked before it is allocated.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from graphcore.interchange.onnx_import import BATCH, BatchSize, folds, sizes_text


def _read_from_file(imp, node, inputs) -> int:
    """A value the file holds: bounded by the file, and sized by ``_Importer.array`` per tensor."""
    return 0


def _numeric(array: np.ndarray) -> bool:
    return array.dtype != object


def _ints(values: np.ndarray, what: str) -> list[int]:
    """Sizes that must be known numbers (not the batch symbol)."""
    if not _numeric(values):
        raise ValueError(f"{what} {sizes_text(np.ravel(values))} depends on the batch size")
    return [int(v) for v in np.ravel(values)]


def _axes(imp, node, inputs) -> list[int] | None:
    """Axes given as an attribute (before opset 13 or 18) or as input 1 (after)."""
    if len(inputs) > 1 and inputs[1] is not None:
        return _ints(inputs[1], "axes")
    axes = imp.attr(node, "axes")
    return None if axes is None else list(axes)


# ---------------------------------------------------------------------- values, shapes and casts
@folds("Constant", elements=_read_from_file)
def _constant(imp, node, inputs):
    for attribute in node.attribute:
        value = imp.onnx.helper.get_attribute_value(attribute)
        if attribute.name == "value":
            return imp.array(value, f"ONNX node {node.name or node.op_type!r} (Constant)")
        if attribute.name in ("value_float", "value_int"):
            return np.array(value, dtype=np.float32 if attribute.name == "value_float" else np.int64)
        if attribute.name in ("value_floats", "value_ints"):
            return np.array(list(value), dtype=np.float32 if attribute.name == "value_floats" else np.int64)
    imp.fail(node, "has a kind of value NetCanvas cannot read")


@folds("Identity")
def _identity(imp, node, inputs):
    return inputs[0]


@folds("Cast", "CastLike")
def _cast(imp, node, inputs):
    if not _numeric(inputs[0]):
        return inputs[0]  # sizes stay sizes, whatever integer type they are cast to
    target = inputs[1].dtype if node.op_type == "CastLike" else \
        imp.onnx.helper.tensor_dtype_to_np_dtype(imp.attr(node, "to"))
    return inputs[0].astype(target)


@folds("Shape", elements=lambda imp, node, inputs: len(imp.dims.get(node.input[0]) or ()))
def _shape(imp, node, inputs):
    if inputs[0] is not None:  # the shape of a folded constant
        return np.array(inputs[0].shape, np.int64)[imp.attr(node, "start", 0):imp.attr(node, "end", None)]
    if node.input[0] not in imp.computed:  # sizes not folded yet: their first dim is no batch
        imp.fail(node, "reads the shape of a constant that is not known when importing")
    values = _sizes(imp, node.input[0])
    if values is None:
        imp.fail(node, "reads a shape that is not known when importing")
    start, end = imp.attr(node, "start", 0), imp.attr(node, "end", None)
    return values[start:end]


# ops whose result has their (first computed) input's sizes, or with the last one changed (x @ W)
SAME_SIZES = frozenset({"Add", "Sub", "Mul", "Div", "Cast", "Identity", "LayerNormalization", "Softmax", "Relu",
                        "Sigmoid", "Tanh", "Erf", "Gelu", "MatMul"})


def _sizes(imp, tensor: str) -> np.ndarray | None:
    """The sizes of computed ``tensor``, N among them. Inferred dims cannot say which unknown size is
    the batch once a transpose has moved it, so this follows ``tensor`` back through ops that keep
    sizes (``SAME_SIZES``) and transposes to a Reshape whose folded target names every size and N,
    or to dims that it reads with N first, and replays the transposes."""
    steps = []  # the nodes passed, from ``tensor`` back
    node = imp.producer(tensor)
    while not imp.lead and node is not None:
        target = imp.consts.get(node.input[1]) if node.op_type == "Reshape" else None
        if target is not None and target.ndim == 1 and any(isinstance(d, BatchSize) for d in target) \
                and all(isinstance(d, BatchSize) or d > 0 for d in target):
            return _replayed(imp, target.astype(object), steps)
        computed = [name for name in node.input if name in imp.computed]
        if node.op_type not in SAME_SIZES | {"Transpose"} or len(computed) != 1 or not _keeps_sizes(imp, node):
            break
        steps.append(node)
        tensor = computed[0]
        node = imp.producer(tensor)
    dims = imp.dims.get(tensor)
    if dims is None or any(d is None for d in dims[1:]):
        return None
    # one sample's shape is all fixed; a batch's first size is the symbol N
    return np.array(dims[1:], np.int64) if imp.lead else _replayed(imp, np.array([BATCH, *dims[1:]], dtype=object),
                                                                   steps)


def _keeps_sizes(imp, node) -> bool:
    """Whether ``node``'s constants broadcast into its computed input without enlarging it (a MatMul's
    weight aside): then it has that input's sizes."""
    dims = imp.dims.get(next(name for name in node.input if name in imp.computed)) or []
    consts = [] if node.op_type == "MatMul" else [imp.consts[name] for name in node.input if name in imp.consts]
    return all(c.size == 1 or (c.ndim <= len(dims) and all(
        d == 1 or d == have for d, have in zip(c.shape[::-1], dims[::-1]))) for c in consts)


def _replayed(imp, sizes: np.ndarray, steps: list) -> np.ndarray | None:
    """``sizes`` after ``steps`` (last first): transposes permute them, x @ W sets the last."""
    for node in reversed(steps):
        if node.op_type == "Transpose":
            sizes = sizes[list(imp.attr(node, "perm") or range(len(sizes))[::-1])]
        elif node.op_type == "MatMul":
            weight = imp.consts.get(node.input[1])
            if weight is None or weight.ndim != 2 or node.input[0] not in imp.computed:
                return None
            sizes = np.array([*sizes[:-1], weight.shape[1]], dtype=object)
    return sizes


def _filled(imp, node, inputs) -> int:
    return math.prod(_ints(inputs[0], "the shape"))


@folds("ConstantOfShape", elements=_filled, view=True)
def _constant_of_shape(imp, node, inputs):
    """One value repeated: a read-only view of that value, which costs no memory however large."""
    value = imp.attr(node, "value")
    fill = np.zeros((), np.float32) if value is None else imp.array(value, "its value").reshape(())
    return np.broadcast_to(fill, _ints(inputs[0], "the shape"))


def _range_elements(imp, node, inputs) -> int:
    if any(isinstance(np.ravel(a)[0], BatchSize) for a in inputs):
        imp.fail(node, "counts along the batch size, which an import cannot know (an index over the whole batch, "
                       "as torch.export writes for as_strided)")
    start, limit, delta = (float(np.ravel(a)[0]) for a in inputs)
    return max(0, math.ceil((limit - start) / delta)) if delta else 0


@folds("Range", elements=_range_elements)
def _range(imp, node, inputs):
    start, limit, delta = (np.ravel(a)[0] for a in inputs)
    return np.arange(start, limit, delta, dtype=inputs[0].dtype)


def _expanded_shape(inputs) -> tuple[int, ...]:
    """The shape Expand broadcasts to; the batch symbol counts as 1, so a constant repeated over the
    batch (ViT's class token) stays one copy that broadcasts against the batch."""
    target = tuple(1 if d == BATCH else int(d) for d in np.ravel(inputs[1]))
    return np.broadcast_shapes(inputs[0].shape, target)


@folds("Expand", elements=lambda imp, node, inputs: math.prod(_expanded_shape(inputs)), view=True)
def _expand(imp, node, inputs):
    return np.broadcast_to(inputs[0], _expanded_shape(inputs))


@folds("Gather", elements=lambda imp, node, inputs: _gathered(imp, node, inputs))
def _gather(imp, node, inputs):
    return np.take(inputs[0], inputs[1].astype(np.int64), axis=imp.attr(node, "axis", 0))


def _gathered(imp, node, inputs) -> int:
    data, indices = inputs
    axis = imp.attr(node, "axis", 0) % max(data.ndim, 1)
    return math.prod(data.shape[:axis] + data.shape[axis + 1:]) * indices.size


@folds("Unsqueeze")
def _unsqueeze(imp, node, inputs):
    axes = _axes(imp, node, inputs)
    result = inputs[0]
    for axis in sorted(a % (result.ndim + len(axes)) for a in axes):
        result = np.expand_dims(result, axis)
    return result


@folds("Squeeze")
def _squeeze(imp, node, inputs):
    axes = _axes(imp, node, inputs)
    return np.squeeze(inputs[0], axis=None if axes is None else tuple(axes))


@folds("Concat", elements=lambda imp, node, inputs: sum(a.size for a in inputs))
def _concat(imp, node, inputs):
    return np.concatenate(inputs, axis=imp.attr(node, "axis"))


@folds("Split", elements=lambda imp, node, inputs: inputs[0].size)
def _split(imp, node, inputs):
    axis = imp.attr(node, "axis", 0)
    sizes = _ints(inputs[1], "split") if len(inputs) > 1 and inputs[1] is not None else imp.attr(node, "split")
    if sizes is None:
        return tuple(np.array_split(inputs[0], len(node.output), axis=axis))
    return tuple(np.split(inputs[0], np.cumsum(sizes)[:-1], axis=axis))


@folds("Slice")
def _slice(imp, node, inputs):
    if imp.opset < 10:  # starts, ends and axes were attributes
        inputs = [inputs[0], *(np.array(imp.attr(node, key)) if imp.attr(node, key) is not None else None
                               for key in ("starts", "ends", "axes"))]
    data, starts, ends = inputs[0], inputs[1], inputs[2]
    axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else range(len(starts))
    steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        big = np.iinfo(np.int64).max // 2
        index[int(axis)] = slice(int(np.clip(start, -big, big)), int(np.clip(end, -big, big)), int(step))
    return data[tuple(index)]


@folds("Reshape")
def _reshape(imp, node, inputs):
    target = _ints(inputs[1], "the target shape")
    target = [inputs[0].shape[i] if d == 0 and not imp.attr(node, "allowzero", 0) else d for i, d in enumerate(target)]
    return inputs[0].reshape(target)


@folds("Flatten")
def _flatten(imp, node, inputs):
    axis = imp.attr(node, "axis", 1) % (inputs[0].ndim + 1)
    return inputs[0].reshape(math.prod(inputs[0].shape[:axis]), -1)


@folds("Transpose")
def _transpose(imp, node, inputs):
    return np.transpose(inputs[0], imp.attr(node, "perm"))


SCATTER_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


@folds("ScatterND")
def _scatter_nd(imp, node, inputs):
    """A copy of the data with the updates written at the indices (PyTorch's in-place writes,
    ``mask[h, w] = count``, as its TorchScript exporter writes them); ``reduction`` combines them
    with what is there instead."""
    data, indices, updates = inputs
    where = tuple(np.moveaxis(indices.astype(np.int64), -1, 0))  # one index array per leading dim of the data
    result = data.copy()
    reduction = imp.attr(node, "reduction", "none")
    if reduction == "none":
        result[where] = updates
    elif reduction in SCATTER_REDUCTIONS:
        SCATTER_REDUCTIONS[reduction].at(result, where, updates)
    else:
        imp.fail(node, f"has reduction={reduction!r}, which is not an ONNX ScatterND reduction")
    return result


def _tiled(imp, node, inputs) -> int:
    return inputs[0].size * math.prod(_ints(inputs[1], "repeats"))


@folds("Tile", elements=_tiled)
def _tile(imp, node, inputs):
    return np.tile(inputs[0], _ints(inputs[1], "repeats"))


# ---------------------------------------------------------------------- arithmetic and logic
def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: true division for floats; for integers, division that truncates toward zero."""
    if not _numeric(a) or not _numeric(b):
        return np.floor_divide(a, b)  # sizes: BatchSize divides exactly
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(b.dtype, np.floating):
        return np.true_divide(a, b).astype(np.result_type(a, b))
    quotient = np.floor_divide(a, b)
    return quotient + ((quotient < 0) & (quotient * b != a))


UNARY = {
    "Neg": np.negative, "Abs": np.abs, "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log,
    "Reciprocal": np.reciprocal, "Floor": np.floor, "Ceil": np.ceil, "Sign": np.sign, "Not": np.logical_not,
    "Relu": lambda a: np.maximum(a, 0).astype(a.dtype), "Sigmoid": lambda a: (1 / (1 + np.exp(-a))).astype(a.dtype),
    "Tanh": np.tanh,
}
BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _divide, "Pow": np.power,
    "Equal": np.equal, "Less": np.less, "LessOrEqual": np.less_equal, "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
}
VARIADIC = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add}


def _broadcast(imp, node, inputs) -> int:
    return math.prod(np.broadcast_shapes(*(a.shape for a in inputs if a is not None)))


@folds(*UNARY)
def _unary(imp, node, inputs):
    return UNARY[node.op_type](inputs[0])


@folds(*BINARY, elements=_broadcast)
def _binary(imp, node, inputs):
    return BINARY[node.op_type](*inputs)


@folds(*VARIADIC, elements=_broadcast)
def _variadic(imp, node, inputs):
    return functools.reduce(VARIADIC[node.op_type], [a for a in inputs if a is not None])


@folds("Mod", elements=_broadcast)
def _mod(imp, node, inputs):
    """ONNX Mod: the remainder takes the divisor's sign (Python's %), or the dividend's with fmod=1."""
    return (np.fmod if imp.attr(node, "fmod", 0) else np.mod)(*inputs)


@folds("Where", elements=_broadcast)
def _where(imp, node, inputs):
    return np.where(*inputs)


def _reduced(imp, node, inputs) -> int:
    return inputs[0].size  # at most as many as the input


REDUCE = {"ReduceSum": np.sum, "ReduceProd": np.prod, "ReduceMean": np.mean, "ReduceMax": np.max,
          "ReduceMin": np.min}


@folds(*REDUCE, elements=_reduced)
def _reduce(imp, node, inputs):
    axes = _axes(imp, node, inputs)
    if not axes and imp.attr(node, "noop_with_empty_axes", 0):
        return inputs[0]
    result = REDUCE[node.op_type](inputs[0], axis=None if not axes else tuple(axes),
                                  keepdims=bool(imp.attr(node, "keepdims", 1)))
    return result if isinstance(result, BatchSize) or not _numeric(inputs[0]) else \
        np.asarray(result).astype(inputs[0].dtype)
