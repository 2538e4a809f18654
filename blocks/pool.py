"""Pooling: max/avg windows, adaptive average, global average."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from blocks.base import Block
from blocks.rules import Pad, Size, expect_min_rank, expect_rank, per_dim, window_out
from blocks.spec import BlockSpec, Example, Params, Shape, ShapeError, register


class PoolParams(Params):
    """Params of maxpool2d and avgpool2d."""

    kernel_size: Size = Field(2, description="window size")
    stride: Size | None = Field(None, description="step between windows (default: kernel_size)")
    padding: Pad = Field(0, description="padding on each side (at most half the kernel)")
    ceil_mode: bool = Field(False, description="round the output size up instead of down")


class AdaptivePoolParams(Params):
    """Params of adaptive_avgpool2d."""

    output_size: Size = Field(1, description="output height and width")


def _pool_shape(p: PoolParams, ins: dict[str, Shape]) -> Shape:
    c, h, w = expect_rank(ins["in"], 3, "(C, H, W)")
    kernel = per_dim(p.kernel_size, 2, "kernel_size")
    stride = kernel if p.stride is None else per_dim(p.stride, 2, "stride")
    padding = per_dim(p.padding, 2, "padding")
    for k, pad in zip(kernel, padding):
        if pad * 2 > k:
            raise ShapeError(f"padding {pad} is more than half the kernel ({k})", hint="lower padding")
    return (c, *(window_out(size, kernel[i], stride[i], padding[i], 1, "HW"[i], p.ceil_mode)
                 for i, size in enumerate((h, w))))


def _pool_args(p: PoolParams) -> dict:
    return dict(
        kernel_size=per_dim(p.kernel_size, 2, "kernel_size"),
        stride=None if p.stride is None else per_dim(p.stride, 2, "stride"),
        padding=per_dim(p.padding, 2, "padding"),
        ceil_mode=p.ceil_mode,
    )


_POOL_EXAMPLES = (
    Example({"in": (3, 8, 8)}),
    Example({"in": (3, 9, 9)}, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
)


def _window_macs(p: PoolParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    return math.prod(outs["out"]) * math.prod(per_dim(p.kernel_size, 2, "kernel_size"))


register(BlockSpec(
    type="maxpool2d",
    category="pool",
    doc="Max over each window of input (C, H, W).",
    params=PoolParams,
    shape=_pool_shape,
    build=lambda p, ins: nn.MaxPool2d(**_pool_args(p)),
    examples=_POOL_EXAMPLES,
))

register(BlockSpec(
    type="avgpool2d",
    category="pool",
    doc="Average over each window of input (C, H, W).",
    params=PoolParams,
    shape=_pool_shape,
    build=lambda p, ins: nn.AvgPool2d(**_pool_args(p)),
    macs=_window_macs,
    examples=_POOL_EXAMPLES,
))


def _adaptive_shape(p: AdaptivePoolParams, ins: dict[str, Shape]) -> Shape:
    c, _, _ = expect_rank(ins["in"], 3, "(C, H, W)")
    return (c, *per_dim(p.output_size, 2, "output_size"))


register(BlockSpec(
    type="adaptive_avgpool2d",
    category="pool",
    doc="Average pooling to a fixed output size, whatever the input size.",
    params=AdaptivePoolParams,
    shape=_adaptive_shape,
    build=lambda p, ins: nn.AdaptiveAvgPool2d(per_dim(p.output_size, 2, "output_size")),
    macs=lambda p, ins, outs: math.prod(ins["in"]),
    examples=(Example({"in": (4, 9, 7)}, {"output_size": [2, 3]}),),
))


class GlobalAvgPool(Block):
    """Mean over every spatial dim: (N, C, *spatial) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) -> (N, C)."""
        return x.mean(dim=tuple(range(2, x.dim())))  # (N, C)


register(BlockSpec(
    type="global_avgpool",
    category="pool",
    doc="Averages over all spatial positions: (C, …) -> (C,).",
    shape=lambda p, ins: expect_min_rank(ins["in"], 2, "(C, …)")[:1],
    build=lambda p, ins: GlobalAvgPool(),
    examples=(Example({"in": (4, 5, 5)}), Example({"in": (4, 6)})),
    macs=lambda p, ins, outs: math.prod(ins["in"]),
))
