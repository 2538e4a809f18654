"""Blocks that move or drop values without learning: dropout, flatten, reshape, permute, upsample.

Flatten, reshape and permute only move values, so they take ids as well as floats and keep
the dtype; dropout and upsample take floats only (PyTorch refuses int tensors there, dropout
while training).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from blocks.base import Block
from blocks.rules import DropoutRate, expect_rank, torch_dim
from blocks.shapes import shape_text
from blocks.spec import ANY_IN, BlockSpec, Example, Params, Shape, ShapeError, promoted, register


class DropoutParams(Params):
    """Params of dropout and dropout2d."""

    p: DropoutRate = 0.5


class FlattenParams(Params):
    """Params of flatten."""

    start_dim: int = Field(1, description="first dim to flatten, PyTorch numbering (batch = 0)")
    end_dim: int = Field(-1, description="last dim to flatten")


class ReshapeParams(Params):
    """Params of reshape."""

    shape: list[int] = Field(default_factory=lambda: [-1], description="per-sample shape; one -1 is inferred")


class PermuteParams(Params):
    """Params of permute."""

    dims: list[int] = Field(
        default_factory=lambda: [1],
        description="new order of the non-batch dims, PyTorch numbering: [2, 3, 1] is NCHW -> NHWC",
    )


class UpsampleParams(Params):
    """Params of upsample."""

    scale_factor: float = Field(2.0, gt=0, description="multiplier for every spatial size")
    mode: Literal["nearest", "linear", "bilinear", "bicubic", "trilinear"] = Field(
        "nearest", description="interpolation"
    )


register(BlockSpec(
    type="dropout",
    category="regularisation",
    doc="Zeroes random elements while training.",
    params=DropoutParams,
    shape=lambda p, ins: ins["in"],
    build=lambda p, ins: nn.Dropout(p.p),
    examples=(Example({"in": (10,)}, {"p": 0.1}),),
))

register(BlockSpec(
    type="dropout2d",
    category="regularisation",
    doc="Zeroes whole random channels of input (C, H, W) while training.",
    params=DropoutParams,
    shape=lambda p, ins: expect_rank(ins["in"], 3, "(C, H, W)"),
    build=lambda p, ins: nn.Dropout2d(p.p),
    examples=(Example({"in": (3, 4, 4)}),),
))


def _flatten_shape(p: FlattenParams, ins: dict[str, Shape]) -> Shape:
    shape = ins["in"]
    start = torch_dim(p.start_dim, len(shape), "start_dim")
    end = torch_dim(p.end_dim, len(shape), "end_dim")
    if start > end:
        raise ShapeError(f"start_dim ({p.start_dim}) comes after end_dim ({p.end_dim})", hint="swap them")
    return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])


register(BlockSpec(
    type="flatten",
    category="reshape",
    doc="Joins dims start_dim…end_dim into one: (C, H, W) -> (C·H·W,).",
    params=FlattenParams,
    inputs=ANY_IN,
    shape=_flatten_shape,
    output_dtype=promoted,
    build=lambda p, ins: nn.Flatten(p.start_dim, p.end_dim),
    examples=(Example({"in": (3, 4, 5)}), Example({"in": (3, 4, 5)}, {"start_dim": 2})),
))


class Reshape(Block):
    """Reshapes every sample; the batch dimension is kept."""

    def __init__(self, shape: list[int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, …) -> (N, *shape)."""
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"shape={self.shape}"


def _reshape_shape(p: ReshapeParams, ins: dict[str, Shape]) -> Shape:
    size = math.prod(ins["in"])
    unknown = [i for i, d in enumerate(p.shape) if d == -1]
    if len(unknown) > 1 or any(d == 0 or d < -1 for d in p.shape):
        raise ShapeError(f"shape {p.shape} is not valid", hint="use positive sizes and at most one -1")
    known = math.prod(d for d in p.shape if d != -1)
    if unknown and size % known == 0:
        return tuple(size // known if d == -1 else d for d in p.shape)
    if not unknown and known == size:
        return tuple(p.shape)
    raise ShapeError(
        f"cannot reshape {shape_text(ins['in'])} ({size} values) to {p.shape}",
        hint="the sizes must multiply to the same number of values; use -1 for one dim",
    )


register(BlockSpec(
    type="reshape",
    category="reshape",
    doc="Gives each sample a new shape with the same number of values.",
    params=ReshapeParams,
    inputs=ANY_IN,
    shape=_reshape_shape,
    output_dtype=promoted,
    build=lambda p, ins: Reshape(p.shape),
    examples=(Example({"in": (12,)}, {"shape": [3, 4]}), Example({"in": (2, 3, 4)}, {"shape": [-1, 2]})),
))


class Permute(Block):
    """Reorders the non-batch dims; ``dims`` uses PyTorch numbering (batch = 0)."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, …) -> (N, …) with the non-batch dims reordered."""
        return x.permute(0, *self.dims)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"dims={self.dims}"


def _permute_shape(p: PermuteParams, ins: dict[str, Shape]) -> Shape:
    shape = ins["in"]
    if sorted(p.dims) != list(range(1, len(shape) + 1)):
        raise ShapeError(
            f"dims {p.dims} is not an order of dims 1…{len(shape)} for input {shape_text(shape)}",
            hint=f"list each of 1…{len(shape)} once (the batch dim 0 stays first)",
        )
    return tuple(shape[d - 1] for d in p.dims)


register(BlockSpec(
    type="permute",
    category="reshape",
    doc="Reorders the dims of each sample.",
    params=PermuteParams,
    inputs=ANY_IN,
    shape=_permute_shape,
    output_dtype=promoted,
    build=lambda p, ins: Permute(p.dims),
    examples=(Example({"in": (3, 4, 5)}, {"dims": [2, 3, 1]}),),
))

_UPSAMPLE_RANKS = {"linear": {2}, "bilinear": {3}, "bicubic": {3}, "trilinear": {4}, "nearest": {2, 3, 4}}


def _upsample_shape(p: UpsampleParams, ins: dict[str, Shape]) -> Shape:
    shape = ins["in"]
    if len(shape) not in _UPSAMPLE_RANKS[p.mode]:
        ranks = " or ".join(str(r) for r in sorted(_UPSAMPLE_RANKS[p.mode]))
        raise ShapeError(
            f"mode {p.mode!r} needs a per-sample input of {ranks} dims (C, spatial…), got {shape_text(shape)}",
            hint="pick the mode for this input: linear (C, L), bilinear (C, H, W), trilinear (C, D, H, W)",
        )
    spatial = tuple(math.floor(d * p.scale_factor) for d in shape[1:])
    if min(spatial) < 1:
        raise ShapeError(f"scale_factor {p.scale_factor} shrinks {shape_text(shape)} to nothing", hint="raise it")
    return (shape[0], *spatial)


register(BlockSpec(
    type="upsample",
    category="reshape",
    doc="Resizes the spatial dims by scale_factor (C, spatial…).",
    params=UpsampleParams,
    shape=_upsample_shape,
    build=lambda p, ins: nn.Upsample(scale_factor=p.scale_factor, mode=p.mode),
    examples=(Example({"in": (3, 4, 4)}, {"mode": "bilinear"}),
              Example({"in": (2, 5)}, {"mode": "linear", "scale_factor": 1.5})),
))
