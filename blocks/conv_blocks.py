"""Composite convolutions: conv → norm → activation, and MobileNet's depthwise separable conv.

MACs count the convolutions' multiply-accumulates only; norms and activations are not
counted (a batch norm folds into the conv at inference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import nn

from blocks.activation import ACT_CLASSES, activation_module
from blocks.base import Block
from blocks.rules import Pad, PosInt, Size, expect_rank, per_dim, window_out
from blocks.spec import BlockSpec, Example, Params, Shape, ShapeError, register

if TYPE_CHECKING:
    Act = str  # a Literal built from a table at runtime is beyond a type checker
else:
    Act = Literal[tuple(ACT_CLASSES)]
Norm = Literal["batch", "group", "none"]
Pair = tuple[int, int]
"""One value for H, one for W."""


class ConvBnAct(Block):
    """A 2-D convolution, a normalisation and an activation, in that order.

    The conv has a bias only when there is no norm: the norm's own shift makes it redundant.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        act: str = "relu",
        norm: str = "batch",
        num_groups: int = 8,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=norm == "none")
        self.norm: nn.Module
        if norm == "batch":
            self.norm = nn.BatchNorm2d(out_channels, eps=eps)
        elif norm == "group":
            self.norm = nn.GroupNorm(num_groups, out_channels, eps=eps)
        else:
            self.norm = nn.Identity()
        self.act = activation_module(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H', W')."""
        return self.act(self.norm(self.conv(x)))  # (N, C_out, H', W')


class DwSeparableConv(Block):
    """MobileNet v1's depthwise separable conv: depthwise k×k conv-BN-ReLU, then pointwise 1×1 conv-BN-ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 1,
    ):
        super().__init__()
        self.depthwise = ConvBnAct(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels)
        self.pointwise = ConvBnAct(in_channels, out_channels, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H', W')."""
        x = self.depthwise(x)  # (N, C_in, H', W')
        return self.pointwise(x)  # (N, C_out, H', W')


def conv_macs(out_shape: Shape, in_channels: int, kernel: tuple[int, ...], groups: int = 1) -> int:
    """Multiply-accumulates of one convolution producing ``out_shape`` (C, H, W)."""
    return math.prod(out_shape) * (in_channels // groups) * math.prod(kernel)


def same_padding(kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Padding that keeps the size at stride 1 for odd kernels: dilation · (k - 1) // 2 (k // 2 when undilated)."""
    (kh, kw), (dh, dw) = kernel, dilation
    return dh * (kh - 1) // 2, dw * (kw - 1) // 2


def spatial_out(
    hw: tuple[int, int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int] = (1, 1),
) -> Shape:
    """Output (H, W) of a 2-D window."""
    return tuple(window_out(hw[i], kernel[i], stride[i], padding[i], dilation[i], "HW"[i]) for i in range(2))


def check_divisible(channels: int, by: int, what: str, by_name: str) -> None:
    """Refuse a channel count that ``by`` does not divide, naming both params."""
    if channels % by:
        raise ShapeError(f"{what} ({channels}) must be divisible by {by_name} ({by})",
                         hint=f"pick {by_name} that divides {what}")


# --------------------------------------------------------------------------- conv_bn_act
class ConvBnActParams(Params):
    """Params of conv_bn_act."""

    out_channels: PosInt = Field(64, description="number of output channels (filters)")
    kernel_size: Size = Field(3, description="window size; padding is dilation·(kernel_size-1)//2 to keep the size")
    stride: Size = Field(1, description="step between windows (2 halves the size)")
    dilation: Size = Field(1, description="spacing between kernel elements")
    groups: PosInt = Field(1, description="split channels into groups (= input channels: depthwise)")
    act: Act = Field("relu", description="activation after the norm")
    norm: Norm = Field("batch", description="normalisation after the conv; 'none' gives the conv a bias")
    num_groups: PosInt = Field(8, description="groups of the group norm (norm='group' only)")
    eps: float = Field(1e-5, gt=0, description="added to the norm's variance for stability")


def _conv_bn_act_geometry(p: ConvBnActParams) -> tuple[Pair, Pair, Pair, Pair]:
    kernel = per_dim(p.kernel_size, 2, "kernel_size")
    dilation = per_dim(p.dilation, 2, "dilation")
    return kernel, per_dim(p.stride, 2, "stride"), same_padding(kernel, dilation), dilation


def _conv_bn_act_shape(p: ConvBnActParams, ins: dict[str, Shape]) -> Shape:
    c, h, w = expect_rank(ins["in"], 3, "(C, H, W)")
    check_divisible(c, p.groups, "input channels", "groups")
    check_divisible(p.out_channels, p.groups, "out_channels", "groups")
    if p.norm == "group":
        check_divisible(p.out_channels, p.num_groups, "out_channels", "num_groups")
    return (p.out_channels, *spatial_out((h, w), *_conv_bn_act_geometry(p)))


def _conv_bn_act_build(p: ConvBnActParams, ins: dict[str, Shape]) -> nn.Module:
    kernel, stride, padding, dilation = _conv_bn_act_geometry(p)
    return ConvBnAct(ins["in"][0], p.out_channels, kernel, stride, padding, dilation, p.groups,
                     act=p.act, norm=p.norm, num_groups=p.num_groups, eps=p.eps)


register(BlockSpec(
    type="conv_bn_act",
    category="conv",
    doc="Conv2d → norm → activation on (C, H, W), padded to keep the size at stride 1 (odd kernels).",
    params=ConvBnActParams,
    shape=_conv_bn_act_shape,
    build=_conv_bn_act_build,
    macs=lambda p, ins, outs: conv_macs(outs["out"], ins["in"][0], per_dim(p.kernel_size, 2, "kernel_size"),
                                        p.groups),
    examples=(
        Example({"in": (3, 16, 16)}, {"out_channels": 8}),
        Example({"in": (4, 15, 15)}, {"out_channels": 8, "kernel_size": 7, "stride": 2, "act": "silu"}),
        Example({"in": (8, 9, 12)}, {"out_channels": 16, "kernel_size": [3, 5], "dilation": 2, "groups": 4,
                                     "norm": "group", "num_groups": 4, "act": "gelu"}),
        Example({"in": (2, 6, 6)}, {"out_channels": 3, "kernel_size": 1, "norm": "none", "act": "none"}),
    ),
))


# --------------------------------------------------------------------------- dw_separable_conv
class DwSeparableParams(Params):
    """Params of dw_separable_conv."""

    out_channels: PosInt = Field(64, description="channels of the pointwise (1×1) conv")
    kernel_size: Size = Field(3, description="window size of the depthwise conv")
    stride: Size = Field(1, description="stride of the depthwise conv (2 halves the size)")
    padding: Pad | None = Field(None, description="padding of the depthwise conv; None: (kernel_size-1)//2")


def _dw_geometry(p: DwSeparableParams) -> tuple[Pair, Pair, Pair]:
    kernel = per_dim(p.kernel_size, 2, "kernel_size")
    padding = same_padding(kernel, (1, 1)) if p.padding is None else per_dim(p.padding, 2, "padding")
    return kernel, per_dim(p.stride, 2, "stride"), padding


def _dw_shape(p: DwSeparableParams, ins: dict[str, Shape]) -> Shape:
    _, h, w = expect_rank(ins["in"], 3, "(C, H, W)")
    return (p.out_channels, *spatial_out((h, w), *_dw_geometry(p)))


def _dw_macs(p: DwSeparableParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    c = ins["in"][0]
    kernel, _, _ = _dw_geometry(p)
    mid = (c, *outs["out"][1:])
    return conv_macs(mid, c, kernel, groups=c) + conv_macs(outs["out"], c, (1, 1))


register(BlockSpec(
    type="dw_separable_conv",
    category="conv",
    doc="MobileNet v1 block on (C, H, W): depthwise conv-BN-ReLU, then pointwise 1×1 conv-BN-ReLU.",
    params=DwSeparableParams,
    shape=_dw_shape,
    build=lambda p, ins: DwSeparableConv(ins["in"][0], p.out_channels, *_dw_geometry(p)),
    macs=_dw_macs,
    examples=(
        Example({"in": (8, 12, 12)}, {"out_channels": 16}),
        Example({"in": (6, 11, 11)}, {"out_channels": 4, "kernel_size": 5, "stride": 2}),
        Example({"in": (3, 7, 9)}, {"out_channels": 5, "kernel_size": [3, 1], "padding": 0}),
    ),
))
