"""Video blocks for inputs (C, T, H, W): a conv3d residual block with optional time embedding
and spatial resampling, attention across the frames at each pixel, and attention within
each frame. Together they make a factorised space-time U-Net as in Ho et al., 2022,
"Video Diffusion Models".

Temporal attention alone does not know the order of the frames; the 3x3x3 convolutions of the
residual blocks around it do.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from blocks.attention import Attention, Groups, Heads, attention_macs, check_groups, check_heads
from blocks.base import Block
from blocks.rules import DropoutRate, PosInt, expect_rank
from blocks.spec import BlockSpec, Example, Params, Port, Shape, ShapeError, register
from blocks.unet import ResBlock

LAYOUT = "(C, T, H, W)"


# ----------------------------------------------------------------------------- modules
class VideoResBlock(Block):
    """Optional spatial resampling (frames kept), then a DDPM residual block with 3x3x3 convs."""

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int | None = None, num_groups: int = 32,
                 dropout: float = 0.0, resample: str = "none"):
        super().__init__()
        self.resample = resample
        self.block = ResBlock(in_channels, out_channels, temb_dim, num_groups, dropout, dims=3)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C_in, T, H, W) -> (N, C_out, T, H', W')."""
        if self.resample == "down":
            x = F.avg_pool3d(x, (1, 2, 2))  # (N, C, T, H/2, W/2)
        elif self.resample == "up":
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")  # (N, C, T, 2H, 2W)
        return self.block(x, temb)  # (N, C_out, T, H', W')

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"resample={self.resample!r}"


class TemporalAttention(Block):
    """GroupNorm, then self-attention among the T frames at each pixel, plus the input."""

    def __init__(self, channels: int, num_heads: int = 1, num_groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels)
        self.attn = Attention(channels, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) -> (N, C, T, H, W)."""
        n, c, t, h, w = x.shape
        y = self.norm(x).permute(0, 3, 4, 2, 1).reshape(n * h * w, t, c)  # (N·H·W, T, C)
        y = self.attn(y).reshape(n, h, w, t, c).permute(0, 4, 3, 1, 2)  # (N, C, T, H, W)
        return x + y  # (N, C, T, H, W)


class SpatialAttention(Block):
    """GroupNorm, then self-attention among the H·W pixels of each frame, plus the input."""

    def __init__(self, channels: int, num_heads: int = 1, num_groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels)
        self.attn = Attention(channels, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) -> (N, C, T, H, W)."""
        n, c, t, h, w = x.shape
        y = self.norm(x).permute(0, 2, 3, 4, 1).reshape(n * t, h * w, c)  # (N·T, H·W, C)
        y = self.attn(y).reshape(n, t, h, w, c).permute(0, 4, 1, 2, 3)  # (N, C, T, H, W)
        return x + y  # (N, C, T, H, W)


# ----------------------------------------------------------------------------- video_res_block
class VideoResParams(Params):
    """Params of video_res_block."""

    out_channels: PosInt = Field(64, description="channels after the block")
    resample: Literal["none", "down", "up"] = Field(
        "none", description="halve ('down', average) or double ('up', nearest) H and W first; T is kept"
    )
    num_groups: Groups = 32
    dropout: DropoutRate = 0.0


def _video(shape: Shape) -> Shape:
    return expect_rank(shape, 4, LAYOUT)


def _temb_dim(ins: dict[str, Shape]) -> int | None:
    if "temb" not in ins:
        return None
    return expect_rank(ins["temb"], 1, "(E,): a time embedding vector", port="temb")[0]


def _res_shape(p: VideoResParams, ins: dict[str, Shape]) -> Shape:
    c, t, h, w = _video(ins["in"])
    _temb_dim(ins)
    check_groups(c, p.num_groups, "input channels")
    check_groups(p.out_channels, p.num_groups, "out_channels")
    if p.resample == "down":
        if h % 2 or w % 2:
            raise ShapeError(f"cannot halve an odd frame size {h}x{w}", hint="use even H and W, or resample 'none'")
        h, w = h // 2, w // 2
    elif p.resample == "up":
        h, w = 2 * h, 2 * w
    return (p.out_channels, t, h, w)


def _res_macs(p: VideoResParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    c, o = ins["in"][0], p.out_channels
    voxels = outs["out"][1] * outs["out"][2] * outs["out"][3]
    macs = voxels * o * 27 * (c + o) + (_temb_dim(ins) or 0) * o
    return macs + (voxels * c * o if c != o else 0)


register(BlockSpec(
    type="video_res_block",
    category="video",
    doc="Residual block for video (C, T, H, W): GroupNorm -> SiLU -> 3x3x3 conv, + time embedding, "
        "twice; optional spatial down/upsampling first.",
    params=VideoResParams,
    inputs=(Port("in"), Port("temb", optional=True)),
    shape=_res_shape,
    build=lambda p, ins: VideoResBlock(ins["in"][0], p.out_channels, _temb_dim(ins), p.num_groups, p.dropout,
                                       p.resample),
    macs=_res_macs,
    examples=(
        Example({"in": (8, 4, 8, 8), "temb": (16,)}, {"out_channels": 16, "num_groups": 4}),
        Example({"in": (4, 3, 6, 4)}, {"out_channels": 4, "num_groups": 2, "resample": "down"}),
        Example({"in": (6, 2, 3, 5), "temb": (7,)}, {"out_channels": 3, "num_groups": 3, "resample": "up"}),
    ),
))


# ----------------------------------------------------------------------------- temporal / spatial attention
class VideoAttentionParams(Params):
    """Params of temporal_attention and spatial_attention."""

    num_heads: Heads = 1
    num_groups: Groups = 32


def _attention_shape(p: VideoAttentionParams, ins: dict[str, Shape]) -> Shape:
    c, _, _, _ = _video(ins["in"])
    check_heads(c, p.num_heads, "channels")
    check_groups(c, p.num_groups)
    return ins["in"]


_ATTENTION_EXAMPLES = (
    Example({"in": (16, 8, 4, 4)}, {"num_heads": 2, "num_groups": 8}),
    Example({"in": (6, 3, 5, 2)}, {"num_heads": 3, "num_groups": 2}),
)

register(BlockSpec(
    type="temporal_attention",
    category="video",
    doc="Self-attention across the T frames at each pixel of (C, T, H, W): x + attention(groupnorm(x)).",
    params=VideoAttentionParams,
    shape=_attention_shape,
    build=lambda p, ins: TemporalAttention(ins["in"][0], p.num_heads, p.num_groups),
    # H·W independent sequences of T tokens.
    macs=lambda p, ins, outs: ins["in"][2] * ins["in"][3] * attention_macs(ins["in"][1], ins["in"][1], ins["in"][0]),
    examples=_ATTENTION_EXAMPLES,
))

register(BlockSpec(
    type="spatial_attention",
    category="video",
    doc="Self-attention among the H·W pixels within each frame of (C, T, H, W): x + attention(groupnorm(x)).",
    params=VideoAttentionParams,
    shape=_attention_shape,
    build=lambda p, ins: SpatialAttention(ins["in"][0], p.num_heads, p.num_groups),
    # T independent sequences of H·W tokens.
    macs=lambda p, ins, outs: ins["in"][1] * attention_macs(ins["in"][2] * ins["in"][3], ins["in"][2] * ins["in"][3],
                                                            ins["in"][0]),
    examples=_ATTENTION_EXAMPLES,
))
