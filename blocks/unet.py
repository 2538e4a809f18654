"""Diffusion U-Net blocks (Ho et al., 2020, "Denoising Diffusion Probabilistic Models"):
a sinusoidal time embedding, and the down, middle and up stages of the noise-predicting U-Net.

Every stage is made of DDPM residual blocks: GroupNorm -> SiLU -> 3x3 conv, plus the time
embedding (SiLU -> Linear) added per channel, then GroupNorm -> SiLU -> dropout -> 3x3 conv,
and a 1x1 conv on the shortcut where the channels change. ``attention`` puts a
``self_attention2d`` after each residual block.

Skips, one per stage: ``unet_down`` returns ``skip`` (its features before downsampling, at the
stage's input size) and ``out`` (downsampled by 2). The matching ``unet_up`` upsamples its
``in`` by 2 and concatenates the ``skip`` of the same size on the channels before its residual
blocks. (DDPM itself keeps a skip after every residual block; one per stage keeps the canvas
readable and costs little.)

The time embedding port ``temb`` is optional: left unconnected, a stage is a plain U-Net stage.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from blocks.attention import Groups, Heads, SelfAttention2d, attention_macs, check_groups, check_heads
from blocks.base import Block
from blocks.rules import DropoutRate, PosInt, expect_rank
from blocks.shapes import shape_text
from blocks.spec import BlockSpec, Example, Params, Port, Shape, ShapeError, register

ResBlocks = Annotated[int, Field(ge=1, le=8, description="residual blocks in the stage")]


# ----------------------------------------------------------------------------- modules
class TimeEmbedding(Block):
    """Sinusoidal embedding of a timestep ``(N,)`` (int or float), then Linear -> SiLU -> Linear.

    Returns ``(N, 4·dim)``, the width DDPM gives its time embedding.
    """

    def __init__(self, dim: int):
        super().__init__()
        assert dim % 2 == 0, f"dim must be even, got {dim}"
        self.dim = dim
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, 4 * dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Timesteps (N,) -> (N, 4·dim)."""
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(10000.0) / half))  # (dim/2,)
        angles = t.float()[:, None] * freqs[None, :]  # (N, dim/2)
        emb = torch.cat([angles.sin(), angles.cos()], dim=1)  # (N, dim)
        return self.fc2(F.silu(self.fc1(emb)))  # (N, 4·dim)


class ResBlock(Block):
    """DDPM residual block over (N, C, H, W), or (N, C, T, H, W) with ``dims=3``.

    ``temb_dim`` None: no time embedding projection (forward ignores ``temb``).
    """

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int | None = None, num_groups: int = 32,
                 dropout: float = 0.0, dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.conv1 = conv(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, out_channels) if temb_dim else None
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.drop = nn.Dropout(dropout)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1)
        self.shortcut = conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C_in, *spatial), time embedding (N, temb_dim) -> (N, C_out, *spatial)."""
        h = self.conv1(F.silu(self.norm1(x)))  # (N, C_out, *spatial)
        if self.temb_proj is not None and temb is not None:
            scale = self.temb_proj(F.silu(temb))  # (N, C_out)
            h = h + scale.view(*scale.shape, *([1] * (h.dim() - 2)))  # (N, C_out, *spatial)
        h = self.conv2(self.drop(F.silu(self.norm2(h))))  # (N, C_out, *spatial)
        return self.shortcut(x) + h  # (N, C_out, *spatial)


class UNetStage(Block):
    """Residual blocks, each followed by self-attention when ``attention`` is set."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int, attention: bool,
                 temb_dim: int | None, num_groups: int, num_heads: int, dropout: float):
        super().__init__()
        self.res = nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, out_channels, temb_dim, num_groups, dropout)
            for i in range(num_res_blocks)
        )
        self.attn = nn.ModuleList(
            SelfAttention2d(out_channels, num_heads, num_groups) if attention else nn.Identity()
            for _ in range(num_res_blocks)
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H, W)."""
        for res, attn in zip(self.res, self.attn):
            x = attn(res(x, temb))  # (N, C_out, H, W)
        return x


class UNetDown(Block):
    """A down stage: residual blocks (and attention), then a stride-2 3x3 conv. Returns (out, skip)."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int = 2, attention: bool = False,
                 downsample: bool = True, temb_dim: int | None = None, num_groups: int = 32, num_heads: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.stage = UNetStage(in_channels, out_channels, num_res_blocks, attention, temb_dim, num_groups,
                               num_heads, dropout)
        self.down = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C_in, H, W) -> downsampled (N, C_out, H/2, W/2) and skip (N, C_out, H, W)."""
        skip = self.stage(x, temb)  # (N, C_out, H, W)
        return self.down(skip), skip  # (N, C_out, H/2, W/2), (N, C_out, H, W)


class UNetMid(Block):
    """The bottom of the U: residual block, self-attention, residual block (DDPM)."""

    def __init__(self, channels: int, attention: bool = True, temb_dim: int | None = None, num_groups: int = 32,
                 num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        self.res1 = ResBlock(channels, channels, temb_dim, num_groups, dropout)
        self.attn = SelfAttention2d(channels, num_heads, num_groups) if attention else nn.Identity()
        self.res2 = ResBlock(channels, channels, temb_dim, num_groups, dropout)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        x = self.attn(self.res1(x, temb))  # (N, C, H, W)
        return self.res2(x, temb)  # (N, C, H, W)


class UNetUp(Block):
    """An up stage: nearest x2 upsampling and a 3x3 conv, concat with the skip, residual blocks."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, num_res_blocks: int = 2,
                 attention: bool = False, upsample: bool = True, temb_dim: int | None = None, num_groups: int = 32,
                 num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        self.upsample = upsample
        self.up_conv = nn.Conv2d(in_channels, in_channels, 3, padding=1) if upsample else nn.Identity()
        self.stage = UNetStage(in_channels + skip_channels, out_channels, num_res_blocks, attention, temb_dim,
                               num_groups, num_heads, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C_in, h, w) and skip (N, C_skip, H, W) -> (N, C_out, H, W)."""
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (N, C_in, 2h, 2w)
        x = torch.cat([self.up_conv(x), skip], dim=1)  # (N, C_in + C_skip, H, W)
        return self.stage(x, temb)  # (N, C_out, H, W)


# ----------------------------------------------------------------------------- time_embedding
class TimeEmbeddingParams(Params):
    """Params of time_embedding."""

    dim: int = Field(128, ge=2, le=4096, multiple_of=2,
                     description="width of the sinusoidal embedding (even); the output is 4·dim wide")


def _time_shape(p: TimeEmbeddingParams, ins: dict[str, Shape]) -> Shape:
    if ins["in"] != ():
        raise ShapeError(
            f"expects one timestep per sample (shape []), got {shape_text(ins['in'])}",
            hint="connect an input with shape [] and dtype int64 (or float32)",
        )
    return (4 * p.dim,)


register(BlockSpec(
    type="time_embedding",
    category="diffusion",
    doc="Timestep t (shape [], int or float) to a vector (4·dim,): sinusoidal embedding, then "
        "Linear -> SiLU -> Linear (DDPM).",
    params=TimeEmbeddingParams,
    inputs=(Port("in", dtype="any"),),
    shape=_time_shape,
    build=lambda p, ins: TimeEmbedding(p.dim),
    macs=lambda p, ins, outs: p.dim * 4 * p.dim + (4 * p.dim) ** 2,
    examples=(Example({"in": ()}, {"dim": 32}), Example({"in": ()}, {"dim": 2})),
))


# ----------------------------------------------------------------------------- shared stage rules
class StageParams(Params):
    """Params shared by unet_down and unet_up."""

    out_channels: PosInt = Field(64, description="channels after the stage")
    num_res_blocks: ResBlocks = 2
    attention: bool = Field(False, description="self-attention after each residual block")
    num_groups: Groups = 32
    num_heads: Heads = 1
    dropout: DropoutRate = 0.0


class DownParams(StageParams):
    """Params of unet_down."""

    downsample: bool = Field(True, description="halve H and W at the end (a stride-2 conv); off for the last stage")


class UpParams(StageParams):
    """Params of unet_up."""

    upsample: bool = Field(True, description="double H and W of 'in' first (nearest + conv); off for the first stage")


class MidParams(Params):
    """Params of unet_mid."""

    attention: bool = Field(True, description="self-attention between the two residual blocks")
    num_groups: Groups = 32
    num_heads: Heads = 1
    dropout: DropoutRate = 0.0


TEMB = Port("temb", optional=True)


def _image(shape: Shape, port: str = "in") -> Shape:
    return expect_rank(shape, 3, "(C, H, W)", port=port)


def _temb_dim(ins: dict[str, Shape]) -> int | None:
    if "temb" not in ins:
        return None
    return expect_rank(ins["temb"], 1, "(E,): a time embedding vector", port="temb")[0]


def _check_stage(p: StageParams | MidParams, in_channels: int, out_channels: int) -> None:
    check_groups(in_channels, p.num_groups, "input channels")
    check_groups(out_channels, p.num_groups, "output channels")
    if p.attention:
        check_heads(out_channels, p.num_heads, "channels")


def _res_macs(in_channels: int, out_channels: int, pixels: int, temb_dim: int | None, kernel: int = 9) -> int:
    macs = pixels * out_channels * kernel * (in_channels + out_channels) + (temb_dim or 0) * out_channels
    return macs + (pixels * in_channels * out_channels if in_channels != out_channels else 0)


def _stage_macs(p: StageParams, in_channels: int, pixels: int, temb_dim: int | None) -> int:
    c = p.out_channels
    macs = _res_macs(in_channels, c, pixels, temb_dim) + (p.num_res_blocks - 1) * _res_macs(c, c, pixels, temb_dim)
    return macs + (p.num_res_blocks * attention_macs(pixels, pixels, c) if p.attention else 0)


# ----------------------------------------------------------------------------- unet_down
def _down_shape(p: DownParams, ins: dict[str, Shape]) -> dict[str, Shape]:
    c, h, w = _image(ins["in"])
    _temb_dim(ins)
    _check_stage(p, c, p.out_channels)
    skip = (p.out_channels, h, w)
    if not p.downsample:
        return {"out": skip, "skip": skip}
    if h % 2 or w % 2:
        raise ShapeError(f"cannot halve an odd size {h}x{w}", hint="use even H and W, or set downsample off")
    return {"out": (p.out_channels, h // 2, w // 2), "skip": skip}


def _down_macs(p: DownParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    c, h, w = ins["in"]
    macs = _stage_macs(p, c, h * w, _temb_dim(ins))
    return macs + (math.prod(outs["out"]) * p.out_channels * 9 if p.downsample else 0)


register(BlockSpec(
    type="unet_down",
    category="diffusion",
    doc="U-Net down stage: residual blocks (+ attention) then a stride-2 conv. 'skip' is the features "
        "before downsampling, for the matching unet_up.",
    params=DownParams,
    inputs=(Port("in"), TEMB),
    outputs=("out", "skip"),
    shape=_down_shape,
    build=lambda p, ins: UNetDown(ins["in"][0], p.out_channels, p.num_res_blocks, p.attention, p.downsample,
                                  _temb_dim(ins), p.num_groups, p.num_heads, p.dropout),
    macs=_down_macs,
    examples=(
        Example({"in": (8, 16, 16), "temb": (32,)}, {"out_channels": 16, "num_groups": 4}),
        Example({"in": (16, 8, 6), "temb": (12,)},
                {"out_channels": 16, "num_res_blocks": 1, "attention": True, "num_heads": 2, "num_groups": 8}),
        Example({"in": (4, 5, 5)}, {"out_channels": 8, "num_groups": 2, "downsample": False, "dropout": 0.1}),
    ),
))


# ----------------------------------------------------------------------------- unet_mid
def _mid_shape(p: MidParams, ins: dict[str, Shape]) -> Shape:
    c, _, _ = _image(ins["in"])
    _temb_dim(ins)
    _check_stage(p, c, c)
    return ins["in"]


def _mid_macs(p: MidParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    c, h, w = ins["in"]
    macs = 2 * _res_macs(c, c, h * w, _temb_dim(ins))
    return macs + (attention_macs(h * w, h * w, c) if p.attention else 0)


register(BlockSpec(
    type="unet_mid",
    category="diffusion",
    doc="U-Net middle: residual block, self-attention, residual block; keeps the shape.",
    params=MidParams,
    inputs=(Port("in"), TEMB),
    shape=_mid_shape,
    build=lambda p, ins: UNetMid(ins["in"][0], p.attention, _temb_dim(ins), p.num_groups, p.num_heads, p.dropout),
    macs=_mid_macs,
    examples=(
        Example({"in": (16, 4, 4), "temb": (32,)}, {"num_groups": 8, "num_heads": 2}),
        Example({"in": (6, 3, 5)}, {"num_groups": 3, "attention": False}),
    ),
))


# ----------------------------------------------------------------------------- unet_up
def _up_shape(p: UpParams, ins: dict[str, Shape]) -> Shape:
    c, h, w = _image(ins["in"])
    c_skip, hs, ws = _image(ins["skip"], "skip")
    _temb_dim(ins)
    size = (2 * h, 2 * w) if p.upsample else (h, w)
    if size != (hs, ws):
        raise ShapeError(
            f"'in' {shape_text(ins['in'])}{' upsampled' if p.upsample else ''} is {size[0]}x{size[1]} "
            f"but 'skip' is {hs}x{ws}",
            hint="connect the skip of the unet_down at the matching level", port="skip",
        )
    _check_stage(p, c + c_skip, p.out_channels)
    return (p.out_channels, hs, ws)


def _up_macs(p: UpParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    c, _, _ = ins["in"]
    c_skip, h, w = ins["skip"]
    macs = _stage_macs(p, c + c_skip, h * w, _temb_dim(ins))
    return macs + (h * w * c * c * 9 if p.upsample else 0)


register(BlockSpec(
    type="unet_up",
    category="diffusion",
    doc="U-Net up stage: upsample 'in' by 2 (nearest + conv), concat 'skip' on the channels, "
        "residual blocks (+ attention).",
    params=UpParams,
    inputs=(Port("in"), Port("skip"), TEMB),
    shape=_up_shape,
    build=lambda p, ins: UNetUp(ins["in"][0], ins["skip"][0], p.out_channels, p.num_res_blocks, p.attention,
                                p.upsample, _temb_dim(ins), p.num_groups, p.num_heads, p.dropout),
    macs=_up_macs,
    examples=(
        Example({"in": (16, 8, 8), "skip": (16, 16, 16), "temb": (32,)}, {"out_channels": 8, "num_groups": 4}),
        Example({"in": (8, 3, 4), "skip": (4, 6, 8), "temb": (5,)},
                {"out_channels": 4, "num_res_blocks": 1, "attention": True, "num_heads": 2, "num_groups": 4}),
        Example({"in": (6, 5, 5), "skip": (3, 5, 5)}, {"out_channels": 9, "upsample": False, "num_groups": 3}),
    ),
))
