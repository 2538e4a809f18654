"""Residual blocks (ResNet v1.5 basic and bottleneck, pre-activation ResNet v2), squeeze-and-excite,
and the VGG block.

The ResNet blocks follow torchvision's BasicBlock and Bottleneck layer for layer, with the same
attribute names (``conv1``, ``bn1``, …, ``downsample``), so parameter counts and state_dict keys
inside a block agree with torchvision. MACs count convolutions and linear layers only; norms,
activations, pools and the residual add are not counted.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from blocks.base import Block
from blocks.conv_blocks import check_divisible, conv_macs, spatial_out
from blocks.rules import PosInt, expect_min_rank, expect_rank, window_out
from blocks.spec import BlockSpec, Example, Params, Shape, register

Stride = Field(1, le=4, description="stride of the block's 3×3 conv (2 halves the size)")


class ResidualBasic(Block):
    """ResNet's basic block: 3×3 conv-BN-ReLU, 3×3 conv-BN, add the shortcut, ReLU.

    The shortcut is a 1×1 conv (stride ``stride``) + BN when the stride or channels change.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H', W')."""
        shortcut = x if self.downsample is None else self.downsample(x)  # (N, C_out, H', W')
        out = self.relu(self.bn1(self.conv1(x)))  # (N, C_out, H', W')
        out = self.bn2(self.conv2(out))  # (N, C_out, H', W')
        return self.relu(out + shortcut)  # (N, C_out, H', W')


class ResidualBottleneck(Block):
    """ResNet v1.5 bottleneck: 1×1 conv-BN-ReLU, 3×3 conv (with the stride) -BN-ReLU, 1×1 conv-BN,
    add the shortcut, ReLU. ``groups`` > 1 on the 3×3 conv gives ResNeXt's block."""

    def __init__(self, in_channels: int, bottleneck_channels: int, out_channels: int, stride: int = 1,
                 groups: int = 1):
        super().__init__()
        width = bottleneck_channels
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H', W')."""
        shortcut = x if self.downsample is None else self.downsample(x)  # (N, C_out, H', W')
        out = self.relu(self.bn1(self.conv1(x)))  # (N, width, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (N, width, H', W')
        out = self.bn3(self.conv3(out))  # (N, C_out, H', W')
        return self.relu(out + shortcut)  # (N, C_out, H', W')


class ResidualPreact(Block):
    """Pre-activation basic block (ResNet v2, He et al. 2016): BN-ReLU-3×3 conv, BN-ReLU-3×3 conv,
    plus the shortcut, with no activation after the add.

    When the stride or channels change, the shortcut is a 1×1 conv of the pre-activated input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H', W')."""
        pre = self.relu(self.bn1(x))  # (N, C_in, H, W)
        shortcut = x if self.shortcut is None else self.shortcut(pre)  # (N, C_out, H', W')
        out = self.conv1(pre)  # (N, C_out, H', W')
        out = self.conv2(self.relu(self.bn2(out)))  # (N, C_out, H', W')
        return out + shortcut  # (N, C_out, H', W')


class SqueezeExcite(Block):
    """Squeeze-and-excitation (Hu et al. 2018): scales each channel by a gate computed from the
    channel means through a small bottleneck MLP (C -> C // reduction -> C, ReLU then sigmoid)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) -> (N, C, *spatial), each channel scaled by its gate."""
        squeezed = x.flatten(2).mean(-1)  # (N, C)
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))  # (N, C)
        return x * gate.reshape(*gate.shape, *[1] * (x.dim() - 2))  # (N, C, *spatial)


class VggBlock(Block):
    """VGG stage: ``num_convs`` × (3×3 conv, padding 1, ReLU), then a 2×2 max pool (stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int = 2, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU())
        self.convs = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H // 2, W // 2)."""
        return self.pool(self.convs(x))  # (N, C_out, H // 2, W // 2)


# --------------------------------------------------------------------------- specs
class ResidualParams(Params):
    """Params of residual_basic and residual_preact."""

    out_channels: PosInt = Field(64, description="channels of the block's output")
    stride: PosInt = Stride


class BottleneckParams(Params):
    """Params of residual_bottleneck."""

    bottleneck_channels: PosInt = Field(64, description="channels of the inner 3×3 conv (torchvision's width)")
    out_channels: PosInt = Field(256, description="channels of the block's output (4 × bottleneck in ResNet)")
    stride: PosInt = Stride
    groups: PosInt = Field(1, description="groups of the 3×3 conv (ResNeXt's cardinality)")


class SqueezeExciteParams(Params):
    """Params of squeeze_excite."""

    reduction: PosInt = Field(16, description="the gate's hidden size is channels // reduction (at least 1)")


class VggParams(Params):
    """Params of vgg_block."""

    out_channels: PosInt = Field(64, description="channels of every conv in the stage")
    num_convs: int = Field(2, ge=1, le=8, description="number of 3×3 conv + ReLU layers before the pool")
    batch_norm: bool = Field(False, description="add a batch norm after each conv (torchvision's vgg*_bn)")


def _strided_3x3(ins: dict[str, Shape], out_channels: int, stride: int) -> Shape:
    """Output of a 3×3 conv with padding 1 (and of the matching 1×1 shortcut, which has the same size)."""
    _, h, w = expect_rank(ins["in"], 3, "(C, H, W)")
    return (out_channels, *spatial_out((h, w), (3, 3), (stride, stride), (1, 1)))


def _basic_macs(p: ResidualParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    c, out = ins["in"][0], outs["out"]
    shortcut = conv_macs(out, c, (1, 1)) if p.stride != 1 or c != p.out_channels else 0
    return conv_macs(out, c, (3, 3)) + conv_macs(out, p.out_channels, (3, 3)) + shortcut


def _bottleneck_shape(p: BottleneckParams, ins: dict[str, Shape]) -> Shape:
    check_divisible(p.bottleneck_channels, p.groups, "bottleneck_channels", "groups")
    return _strided_3x3(ins, p.out_channels, p.stride)


def _bottleneck_macs(p: BottleneckParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    (c, h, w), out = ins["in"], outs["out"]
    width = p.bottleneck_channels
    shortcut = conv_macs(out, c, (1, 1)) if p.stride != 1 or c != p.out_channels else 0
    return (conv_macs((width, h, w), c, (1, 1)) + conv_macs((width, *out[1:]), width, (3, 3), p.groups)
            + conv_macs(out, width, (1, 1)) + shortcut)


register(BlockSpec(
    type="residual_basic",
    category="residual",
    doc="ResNet-18/34 basic block (torchvision v1.5) on (C, H, W); 1×1 conv + BN shortcut when the shape changes.",
    params=ResidualParams,
    shape=lambda p, ins: _strided_3x3(ins, p.out_channels, p.stride),
    build=lambda p, ins: ResidualBasic(ins["in"][0], p.out_channels, p.stride),
    macs=_basic_macs,
    examples=(Example({"in": (8, 10, 10)}, {"out_channels": 8}),
              Example({"in": (4, 9, 9)}, {"out_channels": 8, "stride": 2})),
))

register(BlockSpec(
    type="residual_bottleneck",
    category="residual",
    doc="ResNet-50/101/152 bottleneck (torchvision v1.5: stride on the 3×3 conv) on (C, H, W).",
    params=BottleneckParams,
    shape=_bottleneck_shape,
    build=lambda p, ins: ResidualBottleneck(ins["in"][0], p.bottleneck_channels, p.out_channels, p.stride,
                                            p.groups),
    macs=_bottleneck_macs,
    examples=(Example({"in": (16, 8, 8)}, {"bottleneck_channels": 4, "out_channels": 16}),
              Example({"in": (8, 9, 7)}, {"bottleneck_channels": 8, "out_channels": 32, "stride": 2, "groups": 4})),
))

register(BlockSpec(
    type="residual_preact",
    category="residual",
    doc="Pre-activation (ResNet v2) basic block on (C, H, W): BN-ReLU-conv twice, then add; no ReLU after.",
    params=ResidualParams,
    shape=lambda p, ins: _strided_3x3(ins, p.out_channels, p.stride),
    build=lambda p, ins: ResidualPreact(ins["in"][0], p.out_channels, p.stride),
    macs=_basic_macs,  # same convolutions as the basic block (the shortcut has no BN, which is not counted)
    examples=(Example({"in": (8, 6, 6)}, {"out_channels": 8}),
              Example({"in": (3, 11, 8)}, {"out_channels": 6, "stride": 3})),
))


def _se_hidden(channels: int, reduction: int) -> int:
    return max(1, channels // reduction)


def _se_macs(p: SqueezeExciteParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    c = ins["in"][0]
    return 2 * c * _se_hidden(c, p.reduction)


register(BlockSpec(
    type="squeeze_excite",
    category="residual",
    doc="Squeeze-and-excitation: gates each channel of (C, …) by an MLP of the channel means.",
    params=SqueezeExciteParams,
    shape=lambda p, ins: expect_min_rank(ins["in"], 2, "(C, …)"),
    build=lambda p, ins: SqueezeExcite(ins["in"][0], _se_hidden(ins["in"][0], p.reduction)),
    macs=_se_macs,
    examples=(Example({"in": (32, 5, 5)}, {"reduction": 4}), Example({"in": (6, 3, 4, 4)}),
              Example({"in": (16, 9)}, {"reduction": 2})),
))


def _vgg_shape(p: VggParams, ins: dict[str, Shape]) -> Shape:
    _, h, w = expect_rank(ins["in"], 3, "(C, H, W)")
    return (p.out_channels, window_out(h, 2, 2, 0, 1, "H"), window_out(w, 2, 2, 0, 1, "W"))


def _vgg_macs(p: VggParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    c, h, w = ins["in"]
    full = (p.out_channels, h, w)
    return conv_macs(full, c, (3, 3)) + (p.num_convs - 1) * conv_macs(full, p.out_channels, (3, 3))


register(BlockSpec(
    type="vgg_block",
    category="conv",
    doc="VGG stage on (C, H, W): num_convs × (3×3 conv, padding 1, ReLU), then a 2×2 max pool.",
    params=VggParams,
    shape=_vgg_shape,
    build=lambda p, ins: VggBlock(ins["in"][0], p.out_channels, p.num_convs, p.batch_norm),
    macs=_vgg_macs,
    examples=(Example({"in": (3, 8, 8)}, {"out_channels": 8, "num_convs": 2}),
              Example({"in": (4, 7, 5)}, {"out_channels": 6, "num_convs": 3, "batch_norm": True})),
))
