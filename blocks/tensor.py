"""Blocks that move or drop values without learning: dropout, flatten, reshape, permute, upsample,
pad, tile, split and slice.

Flatten, reshape, permute, pad, tile, split and slice only move values, so they take ids as well as
floats and keep the dtype; dropout and upsample take floats only (PyTorch refuses int tensors
there, dropout while training).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from blocks.base import Block
from blocks.rules import DropoutRate, NonNegInt, PosInt, expect_rank, torch_dim
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


class PadParams(Params):
    """Params of pad."""

    padding: NonNegInt | list[NonNegInt] = Field(
        1, description="one int: both sides of every spatial dim; a list: (left, right, top, bottom, front, back) "
                       "as in PyTorch's F.pad, last dim first")
    mode: Literal["constant", "reflect", "replicate", "circular"] = Field(
        "constant", description="what fills the border: value, a mirror image, the edge value, or the far side")
    value: float = Field(0.0, description="the fill of constant mode")


class Pad(Block):
    """Pads every sample: ``padding`` in F.pad's order (last dim first, two sides each)."""

    def __init__(self, padding: list[int], mode: str = "constant", value: float = 0.0):
        super().__init__()
        self.padding = tuple(padding)
        self.mode = mode
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, …) -> (N, …) with each padded dim longer by its two sides."""
        return F.pad(x, self.padding, self.mode, self.value if self.mode == "constant" else None)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"padding={self.padding}, mode={self.mode!r}, value={self.value}"


def _pad_sides(p: PadParams, shape: Shape) -> list[int]:
    """``padding`` as F.pad's list; an int pads every dim after the channels (a 1-D input's one dim)."""
    if isinstance(p.padding, int):
        return [p.padding] * 2 * max(len(shape) - 1, 1)
    if len(p.padding) % 2 or not p.padding:
        raise ShapeError(f"padding {p.padding} is not pairs of sides", hint="give two values for each padded dim")
    return p.padding


# How far a side may reach where the fill is read from the input: a mirror image stops short of
# the edge value, a wrap-around reads the far side once at most. Replicate repeats the edge: any.
_PAD_LIMITS = {"reflect": ("smaller than", lambda pad, size: pad < size),
               "circular": ("at most", lambda pad, size: pad <= size)}


def _pad_shape(p: PadParams, ins: dict[str, Shape]) -> Shape:
    shape = ins["in"]
    sides = _pad_sides(p, shape)
    dims = len(sides) // 2
    if dims > len(shape):
        raise ShapeError(f"padding {sides} pads {dims} dims but the input {shape_text(shape)} has {len(shape)}",
                         hint="give two values for each padded dim, last dim first")
    if p.mode != "constant":
        spatial = max(len(shape) - 1, 1)
        if len(shape) > 4 or dims != spatial:
            raise ShapeError(f"mode {p.mode!r} pads every spatial dim of an input of 1 to 4 dims: {2 * spatial} "
                             f"values for {shape_text(shape)}, got {len(sides)}",
                             hint="give two values for each spatial dim, or use constant mode")
        limit, fits = _PAD_LIMITS.get(p.mode, ("any", lambda pad, size: True))
        for i in range(dims):
            size, pair = shape[-1 - i], sides[2 * i:2 * i + 2]
            if not all(fits(pad, size) for pad in pair):
                raise ShapeError(f"mode {p.mode!r} pads a dim of size {size} by {pair}; each side must be {limit} "
                                 "the size", hint="pad less, or use constant mode")
    out = list(shape)
    for i in range(dims):
        out[-1 - i] += sides[2 * i] + sides[2 * i + 1]
    return tuple(out)


register(BlockSpec(
    type="pad",
    category="reshape",
    doc="Pads the sides of each sample: zeros (or value), a mirror image, the edge, or the far side.",
    params=PadParams,
    inputs=ANY_IN,
    shape=_pad_shape,
    output_dtype=promoted,
    build=lambda p, ins: Pad(_pad_sides(p, ins["in"]), p.mode, p.value),
    examples=(Example({"in": (3, 5, 5)}),
              Example({"in": (3, 6, 6)}, {"padding": [1, 2, 0, 3], "mode": "reflect"}),
              Example({"in": (2, 4)}, {"padding": [2, 1], "mode": "replicate"}),
              Example({"in": (2, 3, 4)}, {"padding": [0, 0, 0, 0, 1, 1], "value": 0.5}),
              Example({"in": (2, 3, 3, 3)}, {"padding": 1, "mode": "circular"})),
))


class TileParams(Params):
    """Params of tile."""

    repeats: list[PosInt] = Field(
        default_factory=lambda: [2], min_length=1,
        description="copies along each of the last dims (PyTorch's torch.tile, batch left alone)")


class Tile(Block):
    """Repeats every sample along its dims; ``repeats`` has one entry per non-batch dim."""

    def __init__(self, repeats: list[int]):
        super().__init__()
        self.repeats = tuple(repeats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d1, …) -> (N, d1·r1, …)."""
        return x.repeat(1, *self.repeats)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"repeats={self.repeats}"


def _tile_repeats(p: TileParams, shape: Shape) -> list[int]:
    """One repeat per dim: ``repeats`` names the last dims, the ones before it are kept."""
    if len(p.repeats) > len(shape):
        raise ShapeError(f"repeats {p.repeats} has {len(p.repeats)} values but the input {shape_text(shape)} has "
                         f"{len(shape)} dims (the batch is never repeated)", hint="give one value per dim or fewer")
    return [1] * (len(shape) - len(p.repeats)) + p.repeats


register(BlockSpec(
    type="tile",
    category="reshape",
    doc="Repeats each sample along its dims (repeats for the last dims; the batch is left alone).",
    params=TileParams,
    inputs=ANY_IN,
    shape=lambda p, ins: tuple(d * r for d, r in zip(ins["in"], _tile_repeats(p, ins["in"]))),
    output_dtype=promoted,
    build=lambda p, ins: Tile(_tile_repeats(p, ins["in"])),
    examples=(Example({"in": (3, 4)}), Example({"in": (2, 3, 4)}, {"repeats": [3, 1, 2]})),
))


class SplitParams(Params):
    """Params of split."""

    sizes: list[PosInt] = Field(default_factory=lambda: [1, 1], min_length=1, max_length=64,
                                description="size of each piece (ports out0, out1, …); they add up to the dim")
    dim: int = Field(1, description="dim to cut along, PyTorch numbering (batch = 0, channels = 1)")


class Split(Block):
    """Cuts every sample along ``dim`` into pieces of ``sizes``."""

    def __init__(self, sizes: list[int], dim: int):
        super().__init__()
        self.sizes = list(sizes)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One tensor per piece, in order."""
        return torch.split(x, self.sizes, dim=self.dim)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"sizes={self.sizes}, dim={self.dim}"


def _split_ports(p: SplitParams) -> tuple[str, ...]:
    return tuple(f"out{i}" for i in range(len(p.sizes)))


def _split_shape(p: SplitParams, ins: dict[str, Shape]) -> dict[str, Shape]:
    shape = ins["in"]
    axis = torch_dim(p.dim, len(shape))
    if sum(p.sizes) != shape[axis]:
        raise ShapeError(f"sizes {p.sizes} add up to {sum(p.sizes)}, but dim {p.dim} of {shape_text(shape)} is "
                         f"{shape[axis]}", hint=f"make the sizes add up to {shape[axis]}")
    return {port: (*shape[:axis], size, *shape[axis + 1:]) for port, size in zip(_split_ports(p), p.sizes)}


register(BlockSpec(
    type="split",
    category="reshape",
    doc="Cuts each sample along dim into pieces, one output each (out0, out1, …).",
    params=SplitParams,
    inputs=ANY_IN,
    outputs=_split_ports,
    shape=_split_shape,
    output_dtype=promoted,
    build=lambda p, ins: Split(p.sizes, p.dim),
    examples=(Example({"in": (2, 4, 4)}), Example({"in": (3, 10)}, {"sizes": [2, 3, 5], "dim": -1})),
))


class SliceParams(Params):
    """Params of slice."""

    dim: int = Field(1, description="dim to take a range of, PyTorch numbering (batch = 0, channels = 1)")
    start: int = Field(0, description="first index taken (negative: from the end)")
    end: int | None = Field(None, description="index where the range stops, not taken (none: the end)")
    step: PosInt = Field(1, description="take every step-th index")


class Slice(Block):
    """Takes ``x[..., start:end:step, ...]`` along ``dim`` of every sample."""

    def __init__(self, dim: int, start: int, end: int | None, step: int):
        super().__init__()
        self.dim, self.range = dim, slice(start, end, step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The range along dim; the other dims whole."""
        return x[(slice(None),) * (self.dim % x.ndim) + (self.range,)]

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"dim={self.dim}, start={self.range.start}, end={self.range.stop}, step={self.range.step}"


def _slice_shape(p: SliceParams, ins: dict[str, Shape]) -> Shape:
    shape = ins["in"]
    axis = torch_dim(p.dim, len(shape))
    size = len(range(*slice(p.start, p.end, p.step).indices(shape[axis])))
    if size == 0:
        raise ShapeError(f"start {p.start}, end {p.end} take nothing of dim {p.dim} of {shape_text(shape)}",
                         hint=f"take a range inside 0…{shape[axis]}")
    return (*shape[:axis], size, *shape[axis + 1:])


register(BlockSpec(
    type="slice",
    category="reshape",
    doc="Takes a range of indices (start:end:step) along one dim of each sample.",
    params=SliceParams,
    inputs=ANY_IN,
    shape=_slice_shape,
    output_dtype=promoted,
    build=lambda p, ins: Slice(p.dim, p.start, p.end, p.step),
    examples=(Example({"in": (6, 4)}, {"start": 1, "end": 4}),
              Example({"in": (3, 8, 8)}, {"dim": 2, "start": 1, "step": 2}),
              Example({"in": (2, 10)}, {"dim": 2, "start": -3})),
))
