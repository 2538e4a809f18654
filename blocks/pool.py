"""Pooling: max/avg windows over 1, 2 or 3 spatial dims (max pools dilated too), adaptive average,
global average."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pydantic import Field
from torch import nn

from blocks.base import Block
from blocks.rules import SPATIAL_NAMES, Pad, Size, expect_min_rank, expect_rank, per_dim, spatial_layout, window_out
from blocks.shapes import shape_text
from blocks.spec import (
    BlockSpec,
    Example,
    MacCount,
    ModuleFactory,
    Params,
    Shape,
    ShapeError,
    ShapeRule,
    register,
)


class PoolParams(Params):
    """The params max and average pools share; each names a keyword of PyTorch's pool classes."""

    kernel_size: Size = Field(2, description="window size, one int or one per spatial dim")
    stride: Size | None = Field(None, description="step between windows (default: kernel_size)")
    padding: Pad = Field(0, description="padding on each side (at most half the kernel)")
    ceil_mode: bool = Field(False, description="round the output size up instead of down")


class MaxPoolParams(PoolParams):
    """Params of maxpool1d/2d/3d."""

    dilation: Size = Field(1, description="spacing between the window's elements")


class AvgPoolParams(PoolParams):
    """Params of avgpool1d/2d/3d."""

    count_include_pad: bool = Field(True, description="count the padding zeros in each average")


class AdaptivePoolParams(Params):
    """Params of adaptive_avgpool2d."""

    output_size: Size = Field(1, description="output height and width")


def _pool_shape(n: int, kernel_within_input: bool = False) -> ShapeRule[PoolParams]:
    """The rule of an n-D pool; ``kernel_within_input``: the kernel must fit the input without its padding
    (PyTorch's 3-D average pool checks that)."""
    names, layout = SPATIAL_NAMES[n], spatial_layout(n)

    def rule(p: PoolParams, ins: dict[str, Shape]) -> Shape:
        c, *spatial = expect_rank(ins["in"], n + 1, layout)
        kernel = per_dim(p.kernel_size, n, "kernel_size")
        stride = kernel if p.stride is None else per_dim(p.stride, n, "stride")
        padding = per_dim(p.padding, n, "padding")
        dilation = per_dim(getattr(p, "dilation", 1), n, "dilation")  # average pools have none
        for k, pad in zip(kernel, padding):
            if pad * 2 > k:
                raise ShapeError(f"padding {pad} is more than half the kernel ({k})", hint="lower padding")
        if kernel_within_input and any(k > size for k, size in zip(kernel, spatial)):
            raise ShapeError(f"kernel {list(kernel)} is larger than the input {shape_text(tuple(spatial))} "
                             "(padding aside)", hint="use a smaller kernel_size, or downsample less upstream")
        return (c, *(window_out(size, kernel[i], stride[i], padding[i], dilation[i], names[i], p.ceil_mode)
                     for i, size in enumerate(spatial)))

    return rule


_SIZES = ("kernel_size", "stride", "padding", "dilation")


def _pool_args(p: PoolParams, n: int) -> dict:
    """The params by keyword, sizes given one per spatial dim (stride None: the kernel's)."""
    return {k: per_dim(v, n, k) if k in _SIZES and v is not None else v for k, v in p.model_dump().items()}


def _pool_build(cls: Callable[..., nn.Module], n: int) -> ModuleFactory[PoolParams]:
    return lambda p, ins: cls(**_pool_args(p, n))


def _window_macs(n: int) -> MacCount[PoolParams]:
    return lambda p, ins, outs: math.prod(outs["out"]) * math.prod(per_dim(p.kernel_size, n, "kernel_size"))


_POOL_EXAMPLES = {
    1: (Example({"in": (3, 12)}), Example({"in": (2, 11)}, {"kernel_size": 3, "stride": 2, "padding": 1})),
    2: (Example({"in": (3, 8, 8)}),
        Example({"in": (3, 9, 9)}, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True})),
    3: (Example({"in": (2, 4, 6, 6)}), Example({"in": (2, 5, 5, 5)}, {"kernel_size": [3, 1, 3], "stride": 2})),
}
_DILATED_EXAMPLES = {
    1: Example({"in": (2, 20)}, {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 3}),
    2: Example({"in": (3, 10, 10)}, {"kernel_size": 3, "dilation": 2, "padding": 1, "ceil_mode": True}),
    3: Example({"in": (1, 7, 7, 7)}, {"kernel_size": 2, "dilation": [1, 2, 2]}),
}
_UNCOUNTED_PAD = {n: Example({"in": (3, 8, 8, 8)[:n + 1]}, {"kernel_size": 3, "padding": 1, "count_include_pad": False})
                  for n in (1, 2, 3)}
_POOLS: dict[int, tuple[Callable[..., nn.Module], Callable[..., nn.Module]]] = {
    1: (nn.MaxPool1d, nn.AvgPool1d), 2: (nn.MaxPool2d, nn.AvgPool2d), 3: (nn.MaxPool3d, nn.AvgPool3d)}

for _n, (_max, _avg) in _POOLS.items():
    _layout = spatial_layout(_n)
    register(BlockSpec(
        type=f"maxpool{_n}d",
        category="pool",
        doc=f"Max over each window of input {_layout}; dilation spreads the window.",
        params=MaxPoolParams,
        shape=_pool_shape(_n),
        build=_pool_build(_max, _n),
        examples=(*_POOL_EXAMPLES[_n], _DILATED_EXAMPLES[_n]),
    ))
    register(BlockSpec(
        type=f"avgpool{_n}d",
        category="pool",
        doc=f"Average over each window of input {_layout}.",
        params=AvgPoolParams,
        shape=_pool_shape(_n, kernel_within_input=_n == 3),
        build=_pool_build(_avg, _n),
        macs=_window_macs(_n),
        examples=(*_POOL_EXAMPLES[_n], _UNCOUNTED_PAD[_n]),
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
