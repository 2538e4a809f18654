"""Pattern rules for ONNX import: the fused forms exporters write for one block.

An exporter writes GELU as Div -> Erf -> Add -> Mul -> Mul, a LayerNorm before opset 17 as seven
ops, a linear layer as MatMul + Add. Each rule here is tried at every node of its anchor op (the
first op of the form) after folding and before conversion; it follows the form from there and
returns a ``Match``: the nodes it covers and the block they are. The importer claims the nodes
unless a tensor inside the form is used outside it, and adds the block in place of the last one.

A rule that does not fit returns None; one that cannot even be checked (an input not known)
raises ``Refused``, which counts as no match.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from graphcore.interchange.onnx_import import (
    BATCH,
    FOLDERS,
    BatchSize,
    Match,
    batchnorm_parts,
    decimal,
    pattern,
    reduce_axes,
)
from graphcore.interchange.onnx_ops import clip_bounds

TOLERANCE = 1e-4  # how near a constant must be to the one a form needs (exporters write float32)


def _near(value: np.ndarray | None, want: float) -> bool:
    return value is not None and value.size == 1 and abs(float(value.reshape(())) - want) <= TOLERANCE * abs(want)


def _at(imp, *nodes) -> tuple[int, ...]:
    return tuple(sorted(imp.index[id(n)] for n in nodes))


def _user(imp, tensor: str, op_type: str):
    """The one node that uses ``tensor``, where it is of ``op_type``."""
    node = imp.sole_user(tensor)
    return node if node is not None and node.op_type == op_type else None


def _times_constant(imp, tensor: str, op_type: str) -> tuple[object, np.ndarray] | None:
    """(node, constant) where the one user of ``tensor`` is ``op_type`` of it and a constant."""
    node = _user(imp, tensor, op_type)
    split = node and imp.split_constant(node)
    return (node, split[1]) if split and split[0] == tensor else None


def _other(node, tensor: str) -> str:
    return node.input[1] if node.input[0] == tensor else node.input[0]


# ---------------------------------------------------------------------- linear, silu
@pattern("MatMul")
def _linear_with_bias(imp, matmul):
    """x @ W + b (how exporters write nn.Linear on more than 2 dims): one linear."""
    weight = imp.consts.get(matmul.input[1])
    found = weight is not None and weight.ndim == 2 and _times_constant(imp, matmul.output[0], "Add")
    if not found or found[1].size != weight.shape[1] or found[1].ndim > 2:
        return None
    add, bias = found
    return Match(_at(imp, matmul, add), "linear", {"out_features": int(weight.shape[1]), "bias": True},
                 [matmul.input[0]], {"weight": weight.T, "bias": bias.reshape(-1)})


@pattern("Sigmoid")
def _silu(imp, sigmoid):
    """x · sigmoid(x): silu."""
    x, mul = sigmoid.input[0], _user(imp, sigmoid.output[0], "Mul")
    if mul is None or _other(mul, sigmoid.output[0]) != x:
        return None
    return Match(_at(imp, sigmoid, mul), "silu", {}, [x])


# ---------------------------------------------------------------------- gelu, hardswish, hardsigmoid
@pattern("Erf")
def _erf_gelu(imp, erf):
    """x · 0.5 · (1 + erf(x / √2)), its products in any order: gelu."""
    scaled = imp.producer(erf.input[0])
    split = scaled is not None and scaled.op_type in ("Div", "Mul") and imp.split_constant(scaled)
    if not split or not _near(split[1], math.sqrt(2) if scaled.op_type == "Div" else 1 / math.sqrt(2)):
        return None
    x = split[0]
    found = _times_constant(imp, erf.output[0], "Add")
    if not found or not _near(found[1], 1.0):
        return None
    muls = _times_x_and_half(imp, found[0].output[0], x)
    return None if muls is None else Match(_at(imp, scaled, erf, found[0], *muls), "gelu", {"approximate": "none"},
                                           [x])


def _times_x_and_half(imp, tensor: str, x: str) -> list | None:
    """The Mul nodes that take ``tensor`` to x · 0.5 · tensor, in whichever order the exporter
    multiplied (x · t · 0.5, 0.5 · t · x, or (x · 0.5) · t)."""
    muls, need = [], {"x", "half"}
    while need:
        mul = _user(imp, tensor, "Mul")
        if mul is None or len(muls) == 2:
            return None
        other = _other(mul, tensor)
        if other == x and "x" in need:
            need.discard("x")
        elif _near(imp.consts.get(other), 0.5) and "half" in need:
            need.discard("half")
        elif need == {"x", "half"} and _is_half_of(imp, other, x, mul):
            muls.append(imp.producer(other))
            need.clear()
        else:
            return None
        muls.append(mul)
        tensor = mul.output[0]
    return muls


def _is_half_of(imp, tensor: str, x: str, user) -> bool:
    """Whether ``tensor`` is x · 0.5, computed for ``user`` alone."""
    node = imp.producer(tensor)
    split = imp.split_constant(node) if node is not None and node.op_type == "Mul" else None
    return bool(split) and split[0] == x and _near(split[1], 0.5) and imp.sole_user(tensor) is user


@pattern("HardSigmoid")
def _hardswish_from_hardsigmoid(imp, hard):
    """x · hardsigmoid(x) with PyTorch's slope 1/6 and offset 1/2 (opsets before 14): hardswish."""
    x, mul = hard.input[0], _user(imp, hard.output[0], "Mul")
    torch_slope = _near(np.array(imp.attr(hard, "alpha", 0.2)), 1 / 6) and _near(np.array(imp.attr(hard, "beta", 0.5)),
                                                                                 0.5)
    if mul is None or _other(mul, hard.output[0]) != x or not torch_slope:
        return None
    return Match(_at(imp, hard, mul), "hardswish", {}, [x])


@pattern("Add")
def _hard_activations(imp, add):
    """clip(x + 3, 0, 6) / 6: hardsigmoid; times x: hardswish (as written without their ONNX ops)."""
    split = imp.split_constant(add)
    clip = split and _near(split[1], 3.0) and _user(imp, add.output[0], "Clip")
    if not clip or clip_bounds(imp, clip) != (0.0, 6.0):
        return None
    x, nodes, tensor = split[0], [add, clip], clip.output[0]
    scaled = _scaled_by_sixth(imp, tensor)
    if scaled is not None:
        nodes.append(scaled)
        mul = _user(imp, scaled.output[0], "Mul")
        if mul is None or _other(mul, scaled.output[0]) != x:
            return Match(_at(imp, *nodes), "hardsigmoid", {}, [x])
        return Match(_at(imp, *nodes, mul), "hardswish", {}, [x])
    mul = _user(imp, tensor, "Mul")
    scaled = mul is not None and _other(mul, tensor) == x and _scaled_by_sixth(imp, mul.output[0])
    return Match(_at(imp, *nodes, mul, scaled), "hardswish", {}, [x]) if scaled else None


def _scaled_by_sixth(imp, tensor: str):
    """The node that divides ``tensor`` by 6 (or multiplies it by 1/6), where its one user does."""
    for op_type, want in (("Div", 6.0), ("Mul", 1 / 6)):
        found = _times_constant(imp, tensor, op_type)
        if found and _near(found[1], want):
            return found[0]
    return None


# ---------------------------------------------------------------------- norms
@pattern("ReduceMean")
def _layernorm(imp, mean):
    """(x - mean(x)) / sqrt(mean((x - mean(x))²) + eps) over the last dim, then · γ + β: layernorm."""
    x, rank = mean.input[0], imp.rank(mean.input[0])
    if rank is None or reduce_axes(imp, mean) != [rank - 1] or not imp.attr(mean, "keepdims", 1):
        return None
    sub = _user(imp, mean.output[0], "Sub")
    if sub is None or list(sub.input) != [x, mean.output[0]]:
        return None
    centred = sub.output[0]
    users = [imp.nodes_in_order[i] for i in imp.users.get(centred, [])]
    square = next((n for n in users if n.op_type == "Pow" and _near(imp.consts.get(n.input[1]), 2.0)), None)
    divide = next((n for n in users if n.op_type == "Div" and n.input[0] == centred), None)
    variance = square and _user(imp, square.output[0], "ReduceMean")
    if len(users) != 2 or not divide or not variance or reduce_axes(imp, variance) != [rank - 1]:
        return None
    found = _times_constant(imp, variance.output[0], "Add")
    sqrt = found and _user(imp, found[0].output[0], "Sqrt")
    if not sqrt or _other(divide, centred) != sqrt.output[0] or found[1].size != 1:
        return None
    nodes = [mean, sub, square, variance, found[0], sqrt, divide]
    width = imp.dims.get(x, [None])[-1]
    scale = _times_constant(imp, divide.output[0], "Mul")
    if not scale or scale[1].size != width:
        return Match(_at(imp, *nodes), "layernorm", {"eps": decimal(found[1].reshape(())),
                                                     "elementwise_affine": False}, [x])
    nodes.append(scale[0])
    shift = _times_constant(imp, scale[0].output[0], "Add")
    bias = shift[1].reshape(-1) if shift and shift[1].size == width else np.zeros(width, np.float32)
    nodes += [shift[0]] if shift and shift[1].size == width else []
    return Match(_at(imp, *nodes), "layernorm", {"eps": decimal(found[1].reshape(()))}, [x],
                 {"weight": scale[1].reshape(-1), "bias": bias})


def _per_channel(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """``value`` as one number per channel of an (N, C, …) tensor of ``rank``, where it is one."""
    if value.size == 1:
        return np.full(channels, float(value.reshape(())), np.float32)
    shape = list(value.shape)
    while shape and shape[0] == 1 and len(shape) > rank - 1:
        shape.pop(0)
    return value.reshape(channels) if shape == [channels] + [1] * (rank - 2) else None


@pattern("BatchNormalization")
def _batchnorm_affine(imp, norm):
    """A batch norm, then a per-channel scale and shift (Caffe2's models write the affine apart):
    one batch norm with them folded into its weight and bias."""
    block, params, weights = batchnorm_parts(imp, norm)
    channels, rank = weights["weight"].shape[0], imp.rank(norm.input[0])
    scale, shift, nodes, tensor = weights["weight"], weights["bias"], [norm], norm.output[0]
    while (found := _times_constant(imp, tensor, "Mul") or _times_constant(imp, tensor, "Add")) and (
            values := _per_channel(found[1], channels, rank)) is not None:
        if found[0].op_type == "Mul":
            scale, shift = scale * values, shift * values
        else:
            shift = shift + values
        nodes.append(found[0])
        tensor = found[0].output[0]
    if len(nodes) == 1:
        return None
    return Match(_at(imp, *nodes), block, params, [norm.input[0]], weights | {"weight": scale, "bias": shift})


# ---------------------------------------------------------------------- tokens
@pattern("Concat")
def _class_token(imp, concat):
    """[class token; tokens] + positions (ViT): pos_embed with a class token."""
    if len(concat.input) != 2 or imp.rank(concat.output[0]) != 3 or imp.attr(concat, "axis") % 3 != 1:
        return None
    token, x = (imp.consts.get(concat.input[0]), concat.input[1])
    found = token is not None and token.shape[-2:] == (1, token.shape[-1]) and \
        _times_constant(imp, concat.output[0], "Add")
    dims = imp.dims.get(concat.output[0])
    if not found or dims is None or found[1].shape[-2:] != tuple(dims[1:]):
        return None
    return Match(_at(imp, concat, found[0]), "pos_embed", {"cls_token": True}, [x],
                 {"class_token": token.reshape(1, 1, -1), "pos_embedding": found[1].reshape(1, *dims[1:])})


@pattern("Add")
def _positions(imp, add):
    """Tokens plus a learned (T, D) table: pos_embed."""
    split = imp.split_constant(add)
    dims = split and imp.dims.get(split[0])
    if not dims or len(dims) != 3 or split[1].ndim < 2 or split[1].shape[-2:] != tuple(dims[1:]) \
            or math.prod(split[1].shape) != math.prod(dims[1:]):
        return None
    return Match(_at(imp, add), "pos_embed", {"cls_token": False}, [split[0]],
                 {"pos_embedding": split[1].reshape(1, *dims[1:])})


@pattern("Softplus")
def _mish(imp, softplus):
    """x · tanh(softplus(x)): mish (ONNX has no Mish op before opset 18)."""
    x, tanh = softplus.input[0], _user(imp, softplus.output[0], "Tanh")
    mul = tanh and _user(imp, tanh.output[0], "Mul")
    if not mul or _other(mul, tanh.output[0]) != x:
        return None
    return Match(_at(imp, softplus, tanh, mul), "mish", {}, [x])


@pattern("Conv")
def _patch_embed(imp, conv):
    """A conv whose kernel and stride are one patch size, flattened to tokens (N, T, D): patch_embed."""
    weight, bias, dims = imp.consts.get(conv.input[1]), imp.consts.get(conv.input[2] if len(conv.input) > 2 else ""), \
        imp.dims.get(conv.input[0])
    if weight is None or bias is None or weight.ndim != 4 or dims is None or None in dims[1:]:
        return None
    size = weight.shape[2]
    plain = imp.attr(conv, "group", 1) == 1 and not any(imp.attr(conv, "pads") or []) and \
        set(imp.attr(conv, "dilations") or [1]) == {1} and weight.shape[3] == size and \
        list(imp.attr(conv, "strides") or []) == [size, size] and dims[2] % size == 0 == dims[3] % size
    reshape = plain and _user(imp, conv.output[0], "Reshape")
    tokens = reshape and _user(imp, reshape.output[0], "Transpose")
    if not tokens or list(imp.attr(tokens, "perm")) != [0, 2, 1] or imp.dims.get(reshape.output[0], [None])[1:] != [
            weight.shape[0], (dims[2] // size) * (dims[3] // size)]:
        return None
    return Match(_at(imp, conv, reshape, tokens), "patch_embed", {"patch_size": size, "embed_dim": weight.shape[0]},
                 [conv.input[0]], {"proj.weight": weight, "proj.bias": bias})


@pattern("Add", "Mul", priority=-1)
def _chain(imp, first):
    """a + b + c (a chain of two-input Adds, or Muls, each used once by the next): one add (mul) of n inputs."""
    if len(first.input) != 2 or any(name in imp.consts for name in first.input):
        return None
    nodes, inputs, tensor = [first], list(first.input), first.output[0]
    while (after := _user(imp, tensor, first.op_type)) is not None and _other(after, tensor) not in imp.consts \
            and len(after.input) == 2 and after.input[0] != after.input[1]:
        nodes.append(after)
        inputs.append(_other(after, tensor))
        tensor = after.output[0]
    if len(nodes) == 1:
        return None
    return Match(_at(imp, *nodes), "add" if first.op_type == "Add" else "mul", {"n": len(inputs)},
                 {f"in{i}": name for i, name in enumerate(inputs)})


# ---------------------------------------------------------------------- attention
class _Heads(NamedTuple):
    """A projection split into heads: (N, T, in) -> x @ W + b -> (N, T, h, d) -> (N, h, T, d)."""

    source: str
    weight: np.ndarray  # (h·d, in), as nn.Linear holds it
    bias: np.ndarray
    heads: int
    head_dim: int


@pattern("Softmax", priority=1)
def _attention(imp, softmax):
    """softmax(q·kᵀ/√d)·v over heads, with its four projections around it, as ``Attention`` (and
    torch's scaled_dot_product_attention) export: multihead_attention."""
    core = _attention_core(imp, softmax)
    if core is None:
        return None
    nodes, scale, queries, keys, apply = core
    q, k, v = (_heads(imp, name, perm, nodes) for name, perm in
               ((queries, (0, 2, 1, 3)), (keys, (0, 2, 3, 1)), (apply.input[1], (0, 2, 1, 3))))
    out = _output_projection(imp, apply.output[0], nodes)
    if None in (q, k, v, out) or len({q.heads, k.heads, v.heads}) != 1 or q.head_dim != k.head_dim \
            or not _near(np.array(scale), 1 / math.sqrt(q.head_dim)):
        return None
    weights = {"out_proj.weight": out[0], "out_proj.bias": out[1]}
    for name, part in zip("qkv", (q, k, v)):
        weights |= {f"{name}_proj.weight": part.weight, f"{name}_proj.bias": part.bias}
    if q.source == k.source == v.source:
        return Match(_at(imp, *nodes), "multihead_attention", {"num_heads": q.heads}, [q.source], weights)
    return Match(_at(imp, *nodes), "multihead_attention", {"num_heads": q.heads, "separate_inputs": True},
                 {"q": q.source, "k": k.source, "v": v.source}, weights)


def _attention_core(imp, softmax) -> tuple[list, float, str, str, object] | None:
    """softmax(q·kᵀ·scale)·v around ``softmax`` (over the last dim of a rank-4 tensor): the nodes
    so far, the product of every scale on the way, the unscaled queries and keys, and the MatMul
    that applies the weights to v; None where the Softmax is not one."""
    if imp.rank(softmax.input[0]) != 4 or imp.attr(softmax, "axis", -1) % 4 != 3:
        return None
    nodes = [softmax]
    scores, scale = _unscaled(imp, softmax.input[0], nodes)
    product, apply = imp.producer(scores), _user(imp, softmax.output[0], "MatMul")
    if product is None or product.op_type != "MatMul" or apply is None or apply.input[0] != softmax.output[0]:
        return None
    nodes += [product, apply]
    (queries, scale_q), (keys, scale_k) = (_unscaled(imp, name, nodes) for name in product.input)
    return nodes, scale * scale_q * scale_k, queries, keys, apply


def _unscaled(imp, tensor: str, nodes: list) -> tuple[str, float]:
    """``tensor`` before the multiplications (divisions) by numbers that made it, and their product."""
    scale = 1.0
    while (node := imp.producer(tensor)) is not None and node.op_type in ("Mul", "Div"):
        split = imp.split_constant(node)
        if not split or split[1].size != 1 or (node.op_type == "Div" and node.input[0] != split[0]):
            break
        value = float(split[1].reshape(()))
        scale = scale * value if node.op_type == "Mul" else scale / value
        nodes.append(node)
        tensor = split[0]
    return tensor, scale


def _heads(imp, tensor: str, perm: tuple[int, ...], nodes: list) -> _Heads | None:
    """The projection whose heads ``tensor`` is, permuted by ``perm`` from (N, T, h, d)."""
    composed = (0, 1, 2, 3)
    while (step := _permutation(imp, tensor)) is not None:
        source, order, covered = step
        composed = tuple(order[i] for i in composed)
        nodes += covered
        tensor = source
    split = imp.producer(tensor)
    target = imp.consts.get(split.input[1]) if split is not None and split.op_type == "Reshape" else None
    if composed != perm or target is None or len(target) != 4 or not imp.reshape_keeps_batch(split, target):
        return None
    projection = _input_projection(imp, split.input[0], nodes)
    if projection is None:
        return None
    nodes.append(split)
    dims = imp.dims.get(split.output[0]) or [None] * 4
    return _Heads(*projection, heads=int(dims[2] or target[2]), head_dim=int(dims[3] or target[3]))


def _permutation(imp, tensor: str) -> tuple[str, tuple[int, ...], list] | None:
    """(source, perm, nodes) where ``tensor`` is its source permuted: by a Transpose, or by the
    Reshape -> Transpose -> Reshape by which the torch.export exporter swaps the last two dims of a
    4-D tensor (merging the first two dims, which crosses the batch, and splitting them again)."""
    node = imp.producer(tensor)
    if node is not None and node.op_type == "Transpose":
        return node.input[0], tuple(imp.attr(node, "perm")), [node]
    swap = imp.producer(node.input[0]) if node is not None and node.op_type == "Reshape" else None
    merge = imp.producer(swap.input[0]) if swap is not None and swap.op_type == "Transpose" else None
    if merge is None or merge.op_type != "Reshape" or list(imp.attr(swap, "perm")) != [0, 2, 1]:
        return None
    # the split's target, not its inferred dims: inference reads the N in it as "keep dim 0", which
    # after the merge is N·h, not N
    before, target = imp.dims.get(merge.input[0]), imp.consts.get(node.input[1])
    if before is None or target is None or len(before) != 4 or len(target) != 4 or \
            not (target[0] == BATCH or target[0] == -1) or list(target[1:]) != [before[1], *before[:1:-1]] or \
            imp.sole_user(merge.output[0]) is not swap:
        return None
    return merge.input[0], (0, 1, 3, 2), [node, swap, merge]


def _input_projection(imp, tensor: str, nodes: list) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(input, weight (out, in), bias) of the x @ W (+ b) that computes ``tensor``."""
    node = imp.producer(tensor)
    split = imp.split_constant(node) if node is not None and node.op_type == "Add" else None
    matmul = imp.producer(split[0]) if split else node
    weight = imp.consts.get(matmul.input[1]) if matmul is not None and matmul.op_type == "MatMul" else None
    if weight is None or weight.ndim != 2 or (split and split[1].size != weight.shape[1]):
        return None
    bias = split[1].reshape(-1) if split else np.zeros(weight.shape[1], np.float32)
    nodes += [matmul, node] if split else [matmul]
    return matmul.input[0], weight.T, bias


def _output_projection(imp, tensor: str, nodes: list) -> tuple[np.ndarray, np.ndarray] | None:
    """The output projection's (weight, bias), after the heads (N, h, T, d) are put back together as
    (N, T, h·d)."""
    back = _user(imp, tensor, "Transpose")
    joined = _user(imp, back.output[0], "Reshape") if back and list(imp.attr(back, "perm")) == [0, 2, 1, 3] else None
    target = imp.consts.get(joined.input[1]) if joined is not None else None
    if target is None or len(target) != 3 or not imp.reshape_keeps_batch(joined, target):
        return None
    matmul = _user(imp, joined.output[0], "MatMul")
    weight = imp.consts.get(matmul.input[1]) if matmul is not None and matmul.input[0] == joined.output[0] else None
    if weight is None or weight.ndim != 2:
        return None
    nodes += [back, joined, matmul]
    found = _times_constant(imp, matmul.output[0], "Add")
    if found and found[1].size == weight.shape[1]:
        nodes.append(found[0])
        return weight.T, found[1].reshape(-1)
    return weight.T, np.zeros(weight.shape[1], np.float32)


@pattern("InstanceNormalization")
def _groupnorm(imp, norm):
    """x viewed as (N, G, -1), normalised per group without an affine, viewed back, then scaled and
    shifted per channel (how torch exports GroupNorm): groupnorm."""
    split = imp.producer(norm.input[0])
    target = imp.consts.get(split.input[1]) if split is not None and split.op_type == "Reshape" else None
    x = split.input[0] if split is not None else ""
    dims = imp.dims.get(x)
    back = _user(imp, norm.output[0], "Reshape")
    if target is None or len(target) != 3 or target[2] != -1 or dims is None or len(dims) < 3 or None in dims[1:] \
            or back is None or imp.dims.get(back.output[0]) != dims:
        return None
    groups, channels = int(target[1]), dims[1]
    scale, shift = (imp.consts.get(name) for name in norm.input[1:3])
    if scale is None or shift is None or not (np.all(scale == 1) and np.all(shift == 0)) or channels % groups:
        return None
    nodes, tensor, weight, bias = [split, norm, back], back.output[0], None, None
    found = _times_constant(imp, tensor, "Mul")
    if found and (values := _per_channel(found[1], channels, len(dims))) is not None:
        nodes.append(found[0])
        weight, tensor = values, found[0].output[0]
    found = _times_constant(imp, tensor, "Add")
    if found and (values := _per_channel(found[1], channels, len(dims))) is not None:
        nodes.append(found[0])
        bias = values
    params = {"num_groups": groups, "eps": decimal(imp.attr(norm, "epsilon", 1e-5)), "affine": len(nodes) > 3}
    weights = {"weight": np.ones(channels, np.float32) if weight is None else weight,
               "bias": np.zeros(channels, np.float32) if bias is None else bias} if len(nodes) > 3 else None
    return Match(_at(imp, *nodes), "groupnorm", params, [x], weights)


# ---------------------------------------------------------------------- nn.MultiheadAttention
@pattern("Softmax", priority=1)
def _batch_second_attention(imp, softmax):
    """nn.MultiheadAttention (batch_first) as both torch exporters write it: the tokens transposed to
    (T, N, D), one packed q/k/v projection reshaped to (T, N, 3, D) and split, each part reshaped to
    (T, N·h, d), transposed and reshaped to (N, h, T, d) (the heads in the batch dim for a while),
    softmax(q·kᵀ/√d)·v, then back to (T·N, D), the output projection, (T, N, D) and (N, T, D):
    multihead_attention."""
    core = _attention_core(imp, softmax)
    if core is None:
        return None
    nodes, scale, queries, keys, apply = core
    keys = _last_two_swapped(imp, keys, nodes)
    parts = [_packed_part(imp, name, nodes) for name in (queries, keys, apply.input[1])]
    if keys is None or None in parts or [p[0] for p in parts] != [0, 1, 2] or len({p[1:] for p in parts}) != 1:
        return None
    _, packed, heads, head_dim = parts[0]
    projection = _packed_projection(imp, packed, heads * head_dim, nodes)
    out = _batch_second_output(imp, apply.output[0], heads * head_dim, nodes)
    if projection is None or out is None or not _near(np.array(scale), 1 / math.sqrt(head_dim)):
        return None
    x, weight, bias = projection
    weights = {"out_proj.weight": out[0], "out_proj.bias": out[1]}
    for i, name in enumerate("qkv"):
        rows = slice(i * heads * head_dim, (i + 1) * heads * head_dim)
        weights |= {f"{name}_proj.weight": weight[rows], f"{name}_proj.bias": bias[rows]}
    return Match(_at(imp, *nodes), "multihead_attention", {"num_heads": heads}, [x], weights)


def _last_two_swapped(imp, tensor: str, nodes: list) -> str | None:
    """The tensor whose last two dims ``tensor`` swaps (kᵀ), by a Transpose or torch.export's
    Reshape -> Transpose -> Reshape."""
    step = _permutation(imp, tensor)
    if step is None or step[1] != (0, 1, 3, 2):
        return None
    nodes += step[2]
    return step[0]


def _packed_part(imp, tensor: str, nodes: list) -> tuple[int, str, int, int] | None:
    """(which of q/k/v, the packed (3, T, N, D) tensor, heads, head dim) where ``tensor`` is one part
    of it as (N, h, T, d): Gather -> Reshape (T, N·h, d) -> Transpose -> Reshape (N, h, T, d)."""
    heads_first = imp.producer(tensor)
    target = imp.consts.get(heads_first.input[1]) if heads_first is not None and heads_first.op_type == "Reshape" \
        else None
    swap = imp.producer(heads_first.input[0]) if target is not None else None
    merged = imp.producer(swap.input[0]) if swap is not None and swap.op_type == "Transpose" else None
    split = imp.consts.get(merged.input[1]) if merged is not None and merged.op_type == "Reshape" else None
    gather = imp.producer(merged.input[0]) if split is not None else None
    index = imp.consts.get(gather.input[1]) if gather is not None and gather.op_type == "Gather" else None
    if index is None or index.size != 1 or imp.attr(gather, "axis", 0) != 0 \
            or list(imp.attr(swap, "perm")) != [1, 0, 2] or len(target) != 4 or len(split) != 3 \
            or not (target[0] == BATCH or target[0] == -1):
        return None
    _, heads, tokens, head_dim = (int(v) if not isinstance(v, BatchSize) else v for v in target)
    if any(isinstance(v, BatchSize) for v in (heads, tokens, head_dim)) or split[0] != tokens or split[2] != head_dim:
        return None
    nodes += [heads_first, swap, merged, gather]
    return int(index.reshape(())), gather.input[0], heads, head_dim


def _packed_projection(imp, packed: str, width: int, nodes: list) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(x, in_proj weight (3D, D), bias) where ``packed`` is Transpose(x) @ W + b reshaped to
    (T, N, 3, D), unsqueezed, transposed [3, 1, 2, 0, 4] and squeezed to (3, T, N, D)."""
    squeeze = imp.producer(packed)
    moved = imp.producer(squeeze.input[0]) if squeeze is not None and squeeze.op_type == "Squeeze" else None
    unsqueeze = imp.producer(moved.input[0]) if moved is not None and moved.op_type == "Transpose" else None
    split = imp.producer(unsqueeze.input[0]) if unsqueeze is not None and unsqueeze.op_type == "Unsqueeze" else None
    target = imp.consts.get(split.input[1]) if split is not None and split.op_type == "Reshape" else None
    if target is None or list(imp.attr(moved, "perm")) != [3, 1, 2, 0, 4] or len(target) != 4 \
            or list(target[2:]) != [3, width]:
        return None
    found = []
    projection = _input_projection(imp, split.input[0], found)
    matmul = found[0] if found else None
    tokens_first = imp.producer(projection[0]) if projection is not None else None
    if tokens_first is None or tokens_first.op_type != "Transpose" \
            or list(imp.attr(tokens_first, "perm")) != [1, 0, 2] or projection[1].shape != (3 * width, width) \
            or matmul.input[0] != tokens_first.output[0]:
        return None
    nodes += [squeeze, moved, unsqueeze, split, *found, tokens_first]
    return tokens_first.input[0], projection[1], projection[2]


def _batch_second_output(imp, tensor: str, width: int, nodes: list) -> tuple[np.ndarray, np.ndarray] | None:
    """The output projection's (weight, bias) after the heads (N, h, T, d) are transposed to
    (T, N, h, d), reshaped to (T·N, D), projected by a Gemm, reshaped to (T, N, D) and
    transposed to (N, T, D)."""
    back = _user(imp, tensor, "Transpose")
    joined = _user(imp, back.output[0], "Reshape") if back and list(imp.attr(back, "perm")) == [2, 0, 1, 3] else None
    target = imp.consts.get(joined.input[1]) if joined is not None else None
    if target is None or len(target) != 2 or target[1] != width:
        return None
    gemm = _user(imp, joined.output[0], "Gemm")
    projected = _gemm_projection(imp, gemm, width) if gemm is not None else None
    if projected is None:
        return None
    weight, bias = projected
    split = _user(imp, gemm.output[0], "Reshape")
    tokens_second = split and _user(imp, split.output[0], "Transpose")
    target = imp.consts.get(split.input[1]) if split else None
    if not tokens_second or target is None or len(target) != 3 or list(imp.attr(tokens_second, "perm")) != [1, 0, 2] \
            or weight.shape != (width, width):
        return None
    nodes += [back, joined, gemm, split, tokens_second]
    return weight, bias


def _gemm_projection(imp, gemm, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(weight (out, in), bias) of a Gemm x @ Wᵀ (+ b) with constant weights and no scaling."""
    weight = imp.consts.get(gemm.input[1])
    bias = imp.consts.get(gemm.input[2]) if len(gemm.input) > 2 and gemm.input[2] else np.zeros(width, np.float32)
    plain = imp.attr(gemm, "alpha", 1.0) == 1.0 and imp.attr(gemm, "beta", 1.0) == 1.0 and \
        not imp.attr(gemm, "transA", 0)
    if weight is None or bias is None or not plain or bias.size != width or weight.ndim != 2:
        return None
    return (weight if imp.attr(gemm, "transB", 0) else weight.T), bias.reshape(-1)


# ---------------------------------------------------------------------- as_strided
@pattern("Gather")
def _strided_view(imp, gather):
    """torch.export's as_strided: the batch flattened (a Reshape to [-1]) and read by a Gather at
    indices n·P + offset for sample n (P values in a sample), counted from Range(0, N). Each sample
    is then read at the same constant offsets; where they are a strided view of it, that is the
    reshape, slice and permute blocks that read it so (nothing where it reads the sample as it is);
    where they are not, the form is refused in one line, saying why."""
    flat = imp.producer(gather.input[0])
    if flat is None or flat.op_type != "Reshape" or imp.attr(gather, "axis", 0) != 0 or gather.input[1] in imp.consts:
        return None
    x, target = flat.input[0], imp.consts.get(flat.input[1])
    dims = imp.dims.get(x)
    if x not in imp.computed or dims is None or None in dims[1:] or target is None or target.size != 1:
        return None
    size = math.prod(dims[1:])
    chain = _batch_index_chain(imp, gather.input[1])
    if not (target.flat[0] == -1 or target.flat[0] == BATCH * size) or chain is None:
        return None
    offsets = _sample_offsets(imp, chain, gather.input[1], size)
    steps = offsets if offsets is None or isinstance(offsets, str) else _view_steps(dims[1:], offsets)
    if steps is None:
        return None
    nodes = _at(imp, flat, gather, *chain)
    if isinstance(steps, str):
        return Match(nodes, "", {}, [x], why=f"reads the flattened batch (as_strided) {steps}")
    block, params = steps[0] if steps else ("", {})
    return Match(nodes, block, params, [x], then=tuple(steps[1:]))


def _batch_index_chain(imp, tensor: str) -> list | None:
    """The nodes that compute ``tensor`` from constants and one Range(0, N) (the index of each
    sample), each of an op that folding computes; None where it is computed otherwise."""
    chain: dict[int, object] = {}
    todo, ranges = [tensor], 0
    while todo:
        node = imp.producer(todo.pop())
        if node is not None and id(node) in chain:
            continue  # (a tensor used twice on the way)
        if node is None or node.op_type not in FOLDERS or node.op_type == "Shape" or node.output[0] in imp.computed:
            return None
        chain[id(node)] = node
        if node.op_type == "Range":
            bounds = [imp.consts.get(name) for name in node.input]
            if any(b is None or b.size != 1 for b in bounds) or [b.flat[0] for b in bounds] != [0, BATCH, 1]:
                return None
            ranges += 1
        else:
            todo += [name for name in node.input if name and name not in imp.consts]
    return list(chain.values()) if ranges == 1 else None


def _sample_offsets(imp, chain: list, indices: str, size: int) -> np.ndarray | str | None:
    """The offsets at which ``indices`` read each sample of the flattened batch (``size`` values a
    sample), from the indices ``chain`` computes for batches of 2 and 3: sample n must read at
    n·size + the same offsets, inside the sample. Why not where they do not; None where the indices
    cannot be computed, or do not count the samples along their first dim."""
    two, three = (_indices_at(imp, chain, indices, batch) for batch in (2, 3))
    if two is None or three is None or two.ndim == 0 or two.shape[0] != 2 or three.shape != (3, *two.shape[1:]) \
            or not np.array_equal(three[:2], two):
        return None
    offsets = three[0]
    if not all(np.array_equal(three[n], offsets + n * size) for n in (1, 2)):
        return f"at indices that do not move on by one sample ({size} values) from each sample to the next"
    if offsets.min(initial=0) < 0 or offsets.max(initial=0) >= size:
        return f"at offsets outside a sample of {size} values"
    return offsets


def _indices_at(imp, chain: list, indices: str, batch: int) -> np.ndarray | None:
    """``indices`` as ``chain`` computes them for ``batch`` samples (the Range counting them), by
    the folding rules; None where that fails or would pass the import's limit on a tensor."""
    values: dict[str, np.ndarray] = {}
    for node in sorted(chain, key=lambda n: imp.index[id(n)]):
        if node.op_type == "Range":
            values[node.output[0]] = np.arange(batch, dtype=imp.consts[node.input[0]].dtype)
            continue
        inputs = [values.get(name, imp.consts.get(name)) if name else None for name in node.input]
        folder = FOLDERS[node.op_type]
        try:
            if folder.elements(imp, node, inputs) > imp.limits.tensor_elements:
                return None
            result = folder.fold(imp, node, inputs)
        except (ArithmeticError, IndexError, TypeError, ValueError):  # numpy refusing the shapes: no such form
            return None
        values.update(zip(node.output, map(np.asarray, result if isinstance(result, tuple) else (result,))))
    value = values.get(indices)
    return value if value is not None and np.issubdtype(value.dtype, np.integer) else None


def _view_steps(sample: list[int], offsets: np.ndarray) -> list[tuple[str, dict]] | str:
    """The reshape, slice and permute blocks (params of one sample's dims) that read a sample of
    shape ``sample`` at ``offsets`` into its values, flattened: [] where that is the sample as it
    is. They can where the offsets are a strided view (offset = base + Σ index·stride) whose
    strides nest (each a multiple of the next smaller): the sample is reshaped to one dim per
    stride, each sliced to the view's range, permuted to the view's order and reshaped to its
    shape. Else why not, as the end of a sentence ("at offsets that ...")."""
    size, shape = math.prod(sample), [int(n) for n in offsets.shape]
    strided = _strides(offsets)
    if strided is None:
        return "at offsets that are no strided view of a sample (not base + Σ index·stride)"
    base, strides = strided
    if base == 0 and np.array_equal(offsets.reshape(-1), np.arange(size)):
        return [] if shape == [int(n) for n in sample] else [("reshape", {"shape": shape})]
    moving = sorted((j for j, n in enumerate(shape) if n > 1), key=lambda j: -strides[j])  # outermost first
    tower = [strides[j] for j in moving]
    if any(t <= 0 for t in tower):
        return f"with strides {strides}, which read backwards or repeat values"
    if any(a % b or a == b for a, b in zip(tower, tower[1:])):
        return f"with strides {strides}, which do not nest as a sample's dims do (each a multiple of the next)"
    tower += [1] if not tower or tower[-1] != 1 else []  # a dim of single values that the view starts within
    counts = [size // tower[0], *(a // b for a, b in zip(tower, tower[1:]))]
    starts = [base // tower[0], *(base % a // b for a, b in zip(tower, tower[1:]))]
    lengths = [shape[j] for j in moving] + [1] * (len(tower) - len(moving))
    if any(start + n > count for start, n, count in zip(starts, lengths, counts)):
        return f"that run past the end of a sample of {size} values"
    return _view_blocks(sample, shape, moving, counts, starts, lengths)


def _strides(offsets: np.ndarray) -> tuple[int, list[int]] | None:
    """(base, stride per dim) where ``offsets`` = base + Σ index·stride, else None."""
    if offsets.size == 0:
        return None
    base = int(offsets.reshape(-1)[0])
    strides = [int(offsets[tuple(int(k == j) for k in range(offsets.ndim))]) - base if n > 1 else 0
               for j, n in enumerate(offsets.shape)]
    affine = base + np.tensordot(np.indices(offsets.shape), np.array(strides, np.int64), axes=(0, 0))
    return (base, strides) if np.array_equal(offsets, affine) else None


def _view_blocks(sample: list[int], shape: list[int], moving: list[int], counts: list[int], starts: list[int],
                 lengths: list[int]) -> list[tuple[str, dict]]:
    """The blocks of ``_view_steps``: the sample as ``counts`` (one dim per stride, outermost first;
    what does not fill the last outermost step cut off), each dim sliced to ``starts`` and
    ``lengths``, the view's dims (``moving``, by stride) put back in order, reshaped to ``shape``."""
    steps: list[tuple[str, dict]] = []
    size, used = math.prod(sample), math.prod(counts)
    if used != size:
        steps += [("reshape", {"shape": [size]}), ("slice", {"dim": 1, "start": 0, "end": used, "step": 1})]
    if used != size or counts != [int(n) for n in sample]:
        steps.append(("reshape", {"shape": counts}))
    steps += [("slice", {"dim": axis + 1, "start": start, "end": start + n, "step": 1})
              for axis, (start, n, count) in enumerate(zip(starts, lengths, counts)) if (start, n) != (0, count)]
    order = [moving.index(j) for j in sorted(moving)] + list(range(len(moving), len(counts)))
    if order != sorted(order):
        steps.append(("permute", {"dims": [axis + 1 for axis in order]}))
    if [lengths[axis] for axis in order] != shape:
        steps.append(("reshape", {"shape": shape}))
    return steps
