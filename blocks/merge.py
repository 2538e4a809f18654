"""Blocks that join several inputs: add, mul (broadcasting) and concat.

add and mul also take a ``constant``: a number added to the sum (multiplied into the product),
so that ``x + 3`` is one add with one input, as ``1 - x`` is one sub (blocks/elementwise.py).
"""

from __future__ import annotations

import torch
from pydantic import Field

from blocks.base import Block
from blocks.rules import broadcast_shapes, torch_dim
from blocks.shapes import shape_text
from blocks.spec import (
    BlockSpec,
    Dtype,
    Example,
    ModuleFactory,
    Params,
    Shape,
    ShapeError,
    promoted,
    register,
    variadic_ports,
)

Arity = Field(2, ge=2, le=64, description="number of inputs (ports in0 … in{n-1})")


class MergeParams(Params):
    """Params of add and mul."""

    n: int = Field(2, ge=1, le=64, description="number of inputs (ports in0 … in{n-1})")
    constant: float | None = Field(None, description="a number combined with the inputs too (x + c, x · c); "
                                                     "one input needs it")


class ConcatParams(Params):
    """Params of concat."""

    n: int = Arity
    dim: int = Field(1, description="dim to join along, PyTorch numbering (batch = 0, channels = 1)")


class Add(Block):
    """Sum of all inputs, and of ``constant`` where there is one."""

    def __init__(self, constant: float | None = None):
        super().__init__()
        self.constant = constant

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The inputs summed (broadcasting)."""
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out if self.constant is None else out + self.constant


class Mul(Block):
    """Element-wise product of all inputs, and of ``constant`` where there is one."""

    def __init__(self, constant: float | None = None):
        super().__init__()
        self.constant = constant

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The inputs multiplied element-wise (broadcasting)."""
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out if self.constant is None else out * self.constant


class Concat(Block):
    """Joins the inputs along ``dim`` (PyTorch numbering)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The inputs joined along ``dim``."""
        return torch.cat(xs, dim=self.dim)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"dim={self.dim}"


def _concat_shape(p: ConcatParams, ins: dict[str, Shape]) -> Shape:
    first = next(iter(ins.values()))
    axis = torch_dim(p.dim, len(first))
    listing = ", ".join(f"{port} {shape_text(s)}" for port, s in ins.items())
    for shape in ins.values():
        if len(shape) != len(first) or any(a != b for i, (a, b) in enumerate(zip(shape, first)) if i != axis):
            raise ShapeError(
                f"inputs must match in every dim but dim {p.dim}: {listing}",
                hint="resize or pool the inputs so that only the joined dim differs",
            )
    return (*first[:axis], sum(s[axis] for s in ins.values()), *first[axis + 1:])


def _merge_shape(p: MergeParams, ins: dict[str, Shape]) -> Shape:
    if p.n == 1 and p.constant is None:
        raise ShapeError("one input and no constant: nothing to combine", hint="set n to 2 or more, or a constant")
    return broadcast_shapes(ins)


def _merge_dtype(p: MergeParams, ins: dict[str, Dtype]) -> Dtype:
    return "float" if p.constant is not None else promoted(p, ins)  # the constant is a float, as in PyTorch


def _build_merge(cls: type[Add | Mul]) -> ModuleFactory[MergeParams]:
    return lambda p, ins: cls(p.constant)


for _type, _cls, _doc in (("add", Add, "Sum of its inputs (residual connections)."),
                          ("mul", Mul, "Element-wise product of its inputs (gating).")):
    register(BlockSpec(
        type=_type,
        category="merge",
        doc=_doc + " Shapes must match or be 1 (broadcast).",
        params=MergeParams,
        inputs=variadic_ports,
        shape=_merge_shape,
        output_dtype=_merge_dtype,
        build=_build_merge(_cls),
        examples=(Example({"in0": (3, 4, 4), "in1": (3, 4, 4)}),
                  Example({"in0": (3, 4, 4), "in1": (3, 1, 1), "in2": (1, 4, 4)}, {"n": 3}),
                  Example({"in0": (5,)}, {"n": 1, "constant": 0.5})),
    ))

register(BlockSpec(
    type="concat",
    category="merge",
    doc="Joins its inputs along dim (channels by default).",
    params=ConcatParams,
    inputs=variadic_ports,
    shape=_concat_shape,
    output_dtype=promoted,
    build=lambda p, ins: Concat(p.dim),
    examples=(Example({"in0": (3, 4, 4), "in1": (5, 4, 4)}), Example({"in0": (2, 6), "in1": (2, 1)}, {"dim": -1})),
))
