"""Convolutions: conv1d/2d/3d (grouped and dilated through params) and conv_transpose2d."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field
from torch import nn

from blocks.equalized import Equalized, EqualizedConv2d, LrMul
from blocks.rules import SPATIAL_NAMES, Pad, PosInt, Size, expect_rank, per_dim, window_out
from blocks.spec import BlockSpec, Example, MacCount, ModuleFactory, Params, Shape, ShapeError, ShapeRule, register


class ConvParams(Params):
    """Params of conv1d, conv2d and conv3d."""

    out_channels: PosInt = Field(16, description="number of output channels (filters)")
    kernel_size: Size = Field(3, description="window size, one int or one per spatial dim")
    stride: Size = Field(1, description="step between windows")
    padding: Pad | Literal["same", "valid"] = Field(
        0, description="zeros added on each side; 'same' keeps the size (stride 1 only)"
    )
    dilation: Size = Field(1, description="spacing between kernel elements")
    groups: PosInt = Field(1, description="split channels into groups (= in_channels: depthwise)")
    bias: bool = Field(True, description="learn an additive bias")


class Conv2dParams(ConvParams):
    """Params of conv2d: those of every conv, and StyleGAN's run-time weight scaling."""

    equalized: Equalized = False
    lr_mul: LrMul = 1.0


class ConvTransposeParams(Params):
    """Params of conv_transpose2d."""

    out_channels: PosInt = Field(16, description="number of output channels")
    kernel_size: Size = Field(2, description="window size, one int or one per spatial dim")
    stride: Size = Field(2, description="upsampling factor")
    padding: Pad = Field(0, description="removed from each side of the output")
    output_padding: Pad = Field(0, description="extra size added to one side (must be < stride)")
    dilation: Size = Field(1, description="spacing between kernel elements")
    groups: PosInt = Field(1, description="split channels into groups")
    bias: bool = Field(True, description="learn an additive bias")


def _layout(n: int) -> str:
    return "(C, " + ", ".join(SPATIAL_NAMES[n]) + ")"


def _check_groups(in_channels: int, p: ConvParams | ConvTransposeParams) -> None:
    for what, channels in (("input channels", in_channels), ("out_channels", p.out_channels)):
        if channels % p.groups:
            raise ShapeError(
                f"{what} ({channels}) must be divisible by groups ({p.groups})",
                hint="pick groups that divides both the input and output channels",
            )


def _conv_shape(n: int) -> ShapeRule[ConvParams]:
    def rule(p: ConvParams, ins: dict[str, Shape]) -> Shape:
        c, *spatial = expect_rank(ins["in"], n + 1, _layout(n))
        _check_groups(c, p)
        kernel = per_dim(p.kernel_size, n, "kernel_size")
        stride = per_dim(p.stride, n, "stride")
        dilation = per_dim(p.dilation, n, "dilation")
        if p.padding == "same":
            if any(s != 1 for s in stride):
                raise ShapeError("padding='same' needs stride 1", hint="set stride to 1 or give padding as ints")
            return (p.out_channels, *spatial)
        padding = per_dim(0 if p.padding == "valid" else p.padding, n, "padding")
        names = SPATIAL_NAMES[n]
        return (p.out_channels, *(
            window_out(spatial[i], kernel[i], stride[i], padding[i], dilation[i], names[i]) for i in range(n)
        ))

    return rule


def _conv_macs(n: int) -> MacCount[ConvParams]:
    def count(p: ConvParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
        in_channels = ins["in"][0]
        return math.prod(outs["out"]) * (in_channels // p.groups) * math.prod(per_dim(p.kernel_size, n, "kernel_size"))

    return count


# Callable: torch types each class's sizes for its own rank; per_dim gives as many as the rank.
_CONV_CLASSES: dict[int, Callable[..., nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_EXAMPLES = {
    1: (Example({"in": (3, 16)}, {"out_channels": 4, "kernel_size": 5, "stride": 2}),),
    2: (Example({"in": (3, 16, 16)}, {"out_channels": 8, "padding": 1}),
        Example({"in": (4, 9, 9)}, {"out_channels": 8, "groups": 4, "dilation": 2, "padding": "same"}),
        Example({"in": (2, 7, 11)}, {"kernel_size": [3, 5], "stride": [1, 2], "padding": "valid"}),
        Example({"in": (4, 8, 8)}, {"out_channels": 6, "padding": 1, "equalized": True})),
    3: (Example({"in": (2, 4, 8, 8)}, {"out_channels": 4, "padding": 1}),),
}


def _conv_args(p: ConvParams, n: int) -> dict[str, Any]:
    """The keyword arguments of torch's conv of rank ``n`` (but the channel counts) for these params."""
    return {"kernel_size": per_dim(p.kernel_size, n, "kernel_size"), "stride": per_dim(p.stride, n, "stride"),
            "padding": p.padding if isinstance(p.padding, str) else per_dim(p.padding, n, "padding"),
            "dilation": per_dim(p.dilation, n, "dilation"), "groups": p.groups, "bias": p.bias}


def _conv_build(n: int) -> ModuleFactory[ConvParams]:
    def build(p: ConvParams, ins: dict[str, Shape]) -> nn.Module:
        return _CONV_CLASSES[n](ins["in"][0], p.out_channels, **_conv_args(p, n))

    return build


def _conv2d_build(p: Conv2dParams, ins: dict[str, Shape]) -> nn.Module:
    """nn.Conv2d, or the run-time-scaled conv when the learning rate is equalised or multiplied."""
    if p.equalized or p.lr_mul != 1:
        return EqualizedConv2d(ins["in"][0], p.out_channels, **_conv_args(p, 2), equalized=p.equalized,
                               lr_mul=p.lr_mul)
    return _conv_build(2)(p, ins)


# conv2d alone has the equalised learning rate (StyleGAN's convs are all 2-D).
_CONV_PARAMS: dict[int, type[ConvParams]] = {1: ConvParams, 2: Conv2dParams, 3: ConvParams}
_CONV_BUILDS: dict[int, ModuleFactory[Any]] = {1: _conv_build(1), 2: _conv2d_build, 3: _conv_build(3)}

for _n in (1, 2, 3):
    register(BlockSpec(
        type=f"conv{_n}d",
        category="conv",
        doc=f"{_n}-D convolution over input {_layout(_n)}; grouped and dilated through params.",
        params=_CONV_PARAMS[_n],
        shape=_conv_shape(_n),
        build=_CONV_BUILDS[_n],
        macs=_conv_macs(_n),
        examples=_CONV_EXAMPLES[_n],
    ))


def _conv_transpose_shape(p: ConvTransposeParams, ins: dict[str, Shape]) -> Shape:
    c, *spatial = expect_rank(ins["in"], 3, _layout(2))
    _check_groups(c, p)
    kernel, stride, padding, out_pad, dilation = (
        per_dim(getattr(p, name), 2, name)
        for name in ("kernel_size", "stride", "padding", "output_padding", "dilation")
    )
    out = []
    for i, axis in enumerate(SPATIAL_NAMES[2]):
        if out_pad[i] >= max(stride[i], dilation[i]):
            raise ShapeError(
                f"output_padding ({out_pad[i]}) must be smaller than stride or dilation along {axis}",
                hint="lower output_padding",
            )
        size = (spatial[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + out_pad[i] + 1
        if size < 1:
            raise ShapeError(f"output size along {axis} would be {size}", hint="lower padding")
        out.append(size)
    return (p.out_channels, *out)


register(BlockSpec(
    type="conv_transpose2d",
    category="conv",
    doc="Transposed 2-D convolution (learned upsampling) over input (C, H, W).",
    params=ConvTransposeParams,
    shape=_conv_transpose_shape,
    build=lambda p, ins: nn.ConvTranspose2d(
        ins["in"][0], p.out_channels, per_dim(p.kernel_size, 2, "kernel_size"),
        stride=per_dim(p.stride, 2, "stride"), padding=per_dim(p.padding, 2, "padding"),
        output_padding=per_dim(p.output_padding, 2, "output_padding"),
        groups=p.groups, bias=p.bias, dilation=per_dim(p.dilation, 2, "dilation"),
    ),
    # Each input element is scattered through the whole kernel into every output channel.
    macs=lambda p, ins, outs: math.prod(ins["in"]) * (p.out_channels // p.groups)
    * math.prod(per_dim(p.kernel_size, 2, "kernel_size")),
    examples=(Example({"in": (8, 5, 5)}, {"out_channels": 4}),
              Example({"in": (4, 6, 6)}, {"kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1})),
))
