"""Blocks that join several inputs: add, mul (broadcasting) and concat."""

from __future__ import annotations

import torch
from pydantic import Field

from blocks.base import Block
from blocks.rules import broadcast_shapes, torch_dim
from blocks.shapes import shape_text
from blocks.spec import (
    BlockSpec,
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

    n: int = Arity


class ConcatParams(Params):
    """Params of concat."""

    n: int = Arity
    dim: int = Field(1, description="dim to join along, PyTorch numbering (batch = 0, channels = 1)")


class Add(Block):
    """Sum of all inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The inputs summed (broadcasting)."""
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Mul(Block):
    """Element-wise product of all inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The inputs multiplied element-wise (broadcasting)."""
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


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


def _build_merge(cls: type[Block]) -> ModuleFactory[MergeParams]:
    return lambda p, ins: cls()


for _type, _cls, _doc in (("add", Add, "Sum of its inputs (residual connections)."),
                          ("mul", Mul, "Element-wise product of its inputs (gating).")):
    register(BlockSpec(
        type=_type,
        category="merge",
        doc=_doc + " Shapes must match or be 1 (broadcast).",
        params=MergeParams,
        inputs=variadic_ports,
        shape=lambda p, ins: broadcast_shapes(ins),
        output_dtype=promoted,
        build=_build_merge(_cls),
        examples=(Example({"in0": (3, 4, 4), "in1": (3, 4, 4)}),
                  Example({"in0": (3, 4, 4), "in1": (3, 1, 1), "in2": (1, 4, 4)}, {"n": 3})),
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
