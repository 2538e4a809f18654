"""GoogLeNet's Inception block, as torchvision builds it.

Every conv is a BasicConv2d: conv (no bias) → batch norm (eps 0.001) → ReLU. As in torchvision
(and unlike the paper), the "5×5" branch uses a 3×3 kernel, so that parameter counts and MACs
agree with torchvision's GoogLeNet (6,624,904 parameters without the auxiliary heads).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from blocks.base import Block
from blocks.conv_blocks import ConvBnAct, conv_macs
from blocks.rules import PosInt, expect_rank
from blocks.spec import BlockSpec, Example, Params, Shape, register


class Inception(Block):
    """Four parallel branches joined along channels: 1×1; 1×1 → 3×3; 1×1 → 3×3 (torchvision's "5×5");
    3×3 max pool (stride 1) → 1×1. The spatial size is kept."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int):
        super().__init__()
        eps = 0.001  # torchvision's BasicConv2d
        self.branch1 = ConvBnAct(in_channels, ch1x1, 1, padding=0, eps=eps)
        self.branch2 = nn.Sequential(ConvBnAct(in_channels, ch3x3red, 1, padding=0, eps=eps),
                                     ConvBnAct(ch3x3red, ch3x3, 3, padding=1, eps=eps))
        self.branch3 = nn.Sequential(ConvBnAct(in_channels, ch5x5red, 1, padding=0, eps=eps),
                                     ConvBnAct(ch5x5red, ch5x5, 3, padding=1, eps=eps))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     ConvBnAct(in_channels, pool_proj, 1, padding=0, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)."""
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]  # each (N, C_i, H, W)
        return torch.cat(branches, dim=1)  # (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)


class InceptionParams(Params):
    """Params of inception."""

    ch1x1: PosInt = Field(64, description="channels of the 1×1 branch")
    ch3x3red: PosInt = Field(96, description="1×1 reduction before the 3×3 branch")
    ch3x3: PosInt = Field(128, description="channels of the 3×3 branch")
    ch5x5red: PosInt = Field(16, description="1×1 reduction before the '5×5' branch")
    ch5x5: PosInt = Field(32, description="channels of the '5×5' branch (a 3×3 kernel, as in torchvision)")
    pool_proj: PosInt = Field(32, description="1×1 projection after the 3×3 max pool")


def _inception_shape(p: InceptionParams, ins: dict[str, Shape]) -> Shape:
    _, h, w = expect_rank(ins["in"], 3, "(C, H, W)")
    return (p.ch1x1 + p.ch3x3 + p.ch5x5 + p.pool_proj, h, w)


def _inception_macs(p: InceptionParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    c, h, w = ins["in"]
    return (conv_macs((p.ch1x1, h, w), c, (1, 1))
            + conv_macs((p.ch3x3red, h, w), c, (1, 1)) + conv_macs((p.ch3x3, h, w), p.ch3x3red, (3, 3))
            + conv_macs((p.ch5x5red, h, w), c, (1, 1)) + conv_macs((p.ch5x5, h, w), p.ch5x5red, (3, 3))
            + conv_macs((p.pool_proj, h, w), c, (1, 1)))


register(BlockSpec(
    type="inception",
    category="conv",
    doc="GoogLeNet Inception block (torchvision's: the '5×5' branch uses a 3×3 kernel) on (C, H, W).",
    params=InceptionParams,
    shape=_inception_shape,
    build=lambda p, ins: Inception(ins["in"][0], p.ch1x1, p.ch3x3red, p.ch3x3, p.ch5x5red, p.ch5x5, p.pool_proj),
    macs=_inception_macs,
    examples=(Example({"in": (16, 7, 7)}, {"ch1x1": 4, "ch3x3red": 6, "ch3x3": 8, "ch5x5red": 2, "ch5x5": 4,
                                           "pool_proj": 4}),
              Example({"in": (3, 5, 9)}, {"ch1x1": 2, "ch3x3red": 3, "ch3x3": 5, "ch5x5red": 1, "ch5x5": 2,
                                          "pool_proj": 1})),
))
