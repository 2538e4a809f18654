"""Reductions over dims of each sample: ``reduce`` (mean, sum, max, min or prod) and ``matmul``
(the product of two computed tensors).

``reduce`` is one block with an ``op`` choice, as ``math`` is: the five ops differ only in the
function, and generated code reads ``Reduce(op='sum', dims=[2], keepdim=False)``. ``dims`` use
PyTorch's numbering (the batch is dim 0, which a block never reduces); ``keepdim`` keeps each
reduced dim with size 1, so the result broadcasts against the input.

``matmul`` multiplies two computed tensors, sample by sample (``torch.matmul`` over the batch);
a product with a constant matrix is a ``linear`` layer, whose weight is learned.

MACs: a reduction visits each input element once (as global_avgpool counts); a matmul does one
multiply-accumulate per output element and inner index.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from blocks.base import Block
from blocks.rules import broadcast_shapes, torch_dim
from blocks.shapes import shape_text
from blocks.spec import BlockSpec, Example, Params, Port, Shape, ShapeError, promoted, register

ReduceOp = Literal["mean", "sum", "max", "min", "prod"]

class ReduceParams(Params):
    """Params of reduce."""

    op: ReduceOp = Field("mean", description="how the values are combined: mean, sum, max, min or prod")
    dims: list[int] = Field(default_factory=lambda: [-1], min_length=1,
                            description="dims to reduce, PyTorch numbering (batch = 0, never reduced)")
    keepdim: bool = Field(False, description="keep each reduced dim with size 1")


class Reduce(Block):
    """Combines the values of each sample along ``dims`` with ``op``."""

    # op -> the torch function; all but prod take several dims at once (prod is applied dim by dim)
    FUNCTIONS = {"mean": "mean", "sum": "sum", "max": "amax", "min": "amin", "prod": "prod"}

    def __init__(self, op: str, dims: list[int], keepdim: bool):
        super().__init__()
        self.op = op
        self.dims = tuple(dims)
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x reduced along ``dims``."""
        function = getattr(torch, self.FUNCTIONS[self.op])
        if self.op != "prod":
            return function(x, dim=self.dims, keepdim=self.keepdim)
        for dim in sorted(self.dims, reverse=True):  # the last first, so the earlier dims keep their numbers
            x = function(x, dim=dim, keepdim=self.keepdim)
        return x

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"op={self.op!r}, dims={list(self.dims)}, keepdim={self.keepdim}"


def _reduced_axes(p: ReduceParams, shape: Shape) -> list[int]:
    """The per-sample indexes of ``dims``, refused where one is the batch, out of range or repeated."""
    axes = [torch_dim(d, len(shape), "dims") for d in p.dims]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"dims {p.dims} name a dim twice (input {shape_text(shape)})", hint="name each dim once")
    return axes


def _reduce_shape(p: ReduceParams, ins: dict[str, Shape]) -> Shape:
    shape = ins["in"]
    axes = set(_reduced_axes(p, shape))
    if p.keepdim:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_build(p: ReduceParams, ins: dict[str, Shape]) -> Reduce:
    """Dims as non-negative PyTorch numbers (prod reduces them one by one, the last first)."""
    return Reduce(p.op, [a + 1 for a in _reduced_axes(p, ins["in"])], p.keepdim)


register(BlockSpec(
    type="reduce",
    category="math",
    doc="Mean, sum, max, min or product of each sample's values along dims (keepdim keeps them as size 1).",
    params=ReduceParams,
    # a mean of ids is not an id (PyTorch refuses it); the other ops keep the input's dtype
    inputs=lambda p: (Port("in", dtype="float" if p.op == "mean" else "any"),),
    shape=_reduce_shape,
    output_dtype=promoted,
    build=_reduce_build,
    macs=lambda p, ins, outs: math.prod(ins["in"]),
    examples=(Example({"in": (2, 3, 4)}, {"op": "mean", "dims": [2]}),
              Example({"in": (2, 3, 4)}, {"op": "sum", "dims": [1, 3], "keepdim": True}),
              Example({"in": (5, 6)}, {"op": "max", "dims": [1]}),
              Example({"in": (3, 4, 2)}, {"op": "min", "dims": [2, 3]}),
              Example({"in": (3, 4)}, {"op": "prod", "dims": [2], "keepdim": True})),
))


class MatMul(Block):
    """``torch.matmul(in0, in1)`` for each sample: (…, M, K) @ (…, K, P) -> (…, M, P)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The matrix product of the last two dims, the ones before broadcast."""
        return torch.matmul(x, y)


def _matmul_shape(p: Params, ins: dict[str, Shape]) -> Shape:
    a, b = ins["in0"], ins["in1"]
    if len(a) < 2 or len(a) != len(b):
        raise ShapeError(f"multiplies matrices of the same rank, 2 or more per sample: got in0 {shape_text(a)}, "
                         f"in1 {shape_text(b)}", hint="reshape the inputs to (…, M, K) and (…, K, P)")
    if a[-1] != b[-2]:
        raise ShapeError(f"in0 {shape_text(a)} has {a[-1]} columns but in1 {shape_text(b)} has {b[-2]} rows",
                         hint="make the last dim of in0 the size of in1's dim before its last")
    leading = broadcast_shapes({"in0": a[:-2], "in1": b[:-2]})
    return (*leading, a[-2], b[-1])


register(BlockSpec(
    type="matmul",
    category="math",
    doc="Matrix product of two computed tensors, per sample: (…, M, K) @ (…, K, P) -> (…, M, P).",
    inputs=(Port("in0"), Port("in1")),
    shape=_matmul_shape,
    build=lambda p, ins: MatMul(),
    macs=lambda p, ins, outs: math.prod(outs["out"]) * ins["in0"][-1],
    examples=(Example({"in0": (2, 3), "in1": (3, 4)}), Example({"in0": (2, 5, 3), "in1": (1, 3, 4)})),
))
