"""Small helpers that shape rules share: rank checks, per-dimension params, window sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal, overload

from pydantic import Field

from blocks.shapes import shape_text
from blocks.spec import Shape, ShapeError

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Size = PosInt | list[PosInt]
"""An int for every spatial dim, or one int per dim (as PyTorch's ``kernel_size``)."""
Pad = NonNegInt | list[NonNegInt]
DropoutRate = Annotated[float, Field(ge=0, lt=1, description="probability of zeroing an element while training")]
"""Below 1: a rate of 1 would zero every element."""

SPATIAL_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def spatial_layout(n: int) -> str:
    """The per-sample layout of an input with ``n`` spatial dims: ``(C, H, W)`` for 2."""
    return "(C, " + ", ".join(SPATIAL_NAMES[n]) + ")"


def expect_rank(shape: Shape, rank: int, layout: str, port: str | None = None) -> Shape:
    """Refuse an input whose per-sample rank is not ``rank`` (``layout`` names the dims)."""
    if len(shape) != rank:
        raise ShapeError(
            f"expects a per-sample input {layout}, got {shape_text(shape)}",
            hint="add a reshape or flatten block before it, or pick the block for this rank",
            port=port,
        )
    return shape


def expect_min_rank(shape: Shape, rank: int, layout: str) -> Shape:
    """Refuse an input with fewer than ``rank`` per-sample dims (``layout`` names them)."""
    if len(shape) < rank:
        raise ShapeError(
            f"expects a per-sample input of at least {rank} dims {layout}, got {shape_text(shape)}",
            hint="add a reshape block before it",
        )
    return shape


# For 2-D blocks the result is typed as the pair that torch's 2-D layers are typed to take.
@overload
def per_dim(value: int | Sequence[int], n: Literal[2], name: str) -> tuple[int, int]: ...
@overload
def per_dim(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]: ...
def per_dim(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """Expand an int param to ``n`` dims, or check that a list has ``n`` entries."""
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise ShapeError(
            f"{name} has {len(value)} values but the input has {n} spatial dims",
            hint=f"give one int, or {n} ints",
        )
    return tuple(value)


def torch_dim(dim: int, rank: int, name: str = "dim") -> int:
    """Turn a PyTorch dim (batch = 0, negatives from the end) into a per-sample index."""
    full = rank + 1
    if not -full <= dim < full:
        raise ShapeError(
            f"{name}={dim} is out of range for a tensor of {full} dims (batch included)",
            hint=f"use a dim from 1 to {full - 1} (dim 0 is the batch)",
        )
    dim %= full
    if dim == 0:
        raise ShapeError(f"{name}=0 is the batch dimension", hint="use dim 1 or higher")
    return dim - 1


def window_out(
    size: int,
    kernel: int,
    stride: int,
    padding: int,
    dilation: int,
    axis: str,
    ceil_mode: bool = False,
) -> int:
    """Output length of a conv or pooling window along one axis (PyTorch's formula)."""
    span = dilation * (kernel - 1) + 1
    padded = size + 2 * padding
    if span > padded:
        raise ShapeError(
            f"kernel spans {span} along {axis} but the padded input is only {padded}",
            hint="use a smaller kernel_size or dilation, add padding, or downsample less upstream",
        )
    if ceil_mode:
        out = math.ceil((padded - span) / stride) + 1
        if (out - 1) * stride >= size + padding:  # the last window must start inside the input
            out -= 1
        return out
    return (padded - span) // stride + 1


def broadcast_shapes(shapes: dict[str, Shape]) -> Shape:
    """PyTorch broadcasting among same-rank per-sample shapes (each dim equal or 1)."""
    ports = list(shapes)
    ranks = {len(s) for s in shapes.values()}
    if len(ranks) > 1:
        listing = ", ".join(f"{p} {shape_text(s)}" for p, s in shapes.items())
        raise ShapeError(
            f"inputs have different ranks: {listing}",
            hint="reshape the inputs so that they have the same number of dims",
        )
    out = []
    for axis, dims in enumerate(zip(*shapes.values())):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            listing = ", ".join(f"{p} {shape_text(shapes[p])}" for p in ports)
            raise ShapeError(
                f"shapes do not match in dim {axis + 1}: {listing}",
                hint="make the sizes equal (or 1) in that dim, e.g. with a 1x1 conv or a pool",
            )
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)
