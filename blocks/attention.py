"""Attention and transformer blocks: multi-head attention, cross-attention, a feed-forward
network, the pre-norm ViT encoder block, patch and position embeddings, and 2-D self-attention
over the pixels of a feature map (as in DDPM's U-Net).

Token inputs are per-sample ``(T, D)``: T tokens of width D (``batch_first`` as in PyTorch).
Every attention here is built on ``Attention``, whose projections hold ``4·D² + 4·D``
parameters for self-attention, exactly as ``nn.MultiheadAttention``.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from blocks.base import Block
from blocks.rules import DropoutRate, PosInt, expect_min_rank, expect_rank
from blocks.shapes import shape_text
from blocks.spec import ANY_IN, BlockSpec, Example, Params, Port, Shape, ShapeError, promoted, register

Heads = Annotated[int, Field(ge=1, le=64, description="number of attention heads (must divide the width)")]
AttnDropoutRate = Annotated[DropoutRate, Field(description="dropout on the attention weights while training")]
Groups = Annotated[int, Field(ge=1, description="GroupNorm groups (must divide the channels)")]


# ----------------------------------------------------------------------------- modules
class Attention(Block):
    """Multi-head scaled dot-product attention with its own q, k, v and output projections.

    Queries ``(N, T, dim)`` attend to keys ``(N, S, kdim)`` and values ``(N, S, vdim)``;
    without keys and values it is self-attention. Returns ``(N, T, dim)``.
    """

    def __init__(self, dim: int, num_heads: int, kdim: int | None = None, vdim: int | None = None,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} must be divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(kdim or dim, dim, bias=bias)
        self.v_proj = nn.Linear(vdim or dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, q: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None) -> torch.Tensor:
        """Queries (N, T, dim), keys and values (N, S, kdim/vdim) -> (N, T, dim)."""
        k = q if k is None else k
        v = k if v is None else v
        n, t, d = q.shape
        s, h = k.shape[1], self.num_heads
        q = self.q_proj(q).view(n, t, h, d // h).transpose(1, 2)  # (N, h, T, D/h)
        k = self.k_proj(k).view(n, s, h, d // h).transpose(1, 2)  # (N, h, S, D/h)
        v = self.v_proj(v).view(n, s, h, d // h).transpose(1, 2)  # (N, h, S, D/h)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (N, h, T, D/h)
        out = out.transpose(1, 2).reshape(n, t, d)  # (N, T, D)
        return self.out_proj(out)  # (N, T, D)


class CrossAttention(Block):
    """Pre-norm cross-attention with a residual: ``x + attn(norm(x), context)``."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, dropout: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, kdim=context_dim, vdim=context_dim, dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Tokens (N, T, D) attend to context (N, S, C) -> (N, T, D)."""
        return x + self.attn(self.norm(x), context)  # (N, T, D)


class FeedForward(Block):
    """Linear -> GELU -> dropout -> Linear -> dropout, on the last dim."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, …, D) -> (N, …, D)."""
        x = self.drop(F.gelu(self.fc1(x)))  # (N, …, hidden)
        return self.drop(self.fc2(x))  # (N, …, D)


class TransformerBlock(Block):
    """Pre-norm encoder block, as torchvision's ViT ``EncoderBlock``:
    ``x + drop(attn(ln1(x)))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, dim: int, num_heads: int, hidden: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, dropout=attention_dropout)
        self.drop = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = FeedForward(dim, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, T, D)."""
        x = x + self.drop(self.attn(self.ln_1(x)))  # (N, T, D)
        return x + self.mlp(self.ln_2(x))  # (N, T, D)


class PatchEmbed(Block):
    """Cuts an image into non-overlapping patches and projects each to a token (a strided conv)."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (N, C, H, W) -> tokens (N, H/p · W/p, D)."""
        x = self.proj(x)  # (N, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (N, T, D)


class PosEmbed(Block):
    """Adds a learned position embedding to the tokens; optionally prepends a learned class token."""

    def __init__(self, num_tokens: int, dim: int, cls_token: bool = False):
        super().__init__()
        self.class_token = nn.Parameter(torch.empty(1, 1, dim)) if cls_token else None
        self.pos_embedding = nn.Parameter(torch.empty(1, num_tokens + int(cls_token), dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draws the embeddings as torchvision's ViT does; zeroes the class token."""
        nn.init.normal_(self.pos_embedding, std=0.02)  # as torchvision's ViT
        if self.class_token is not None:
            nn.init.zeros_(self.class_token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, T, D), or (N, 1 + T, D) with a class token."""
        if self.class_token is not None:
            cls = self.class_token.expand(x.shape[0], -1, -1)  # (N, 1, D)
            x = torch.cat([cls, x], dim=1)  # (N, 1 + T, D)
        return x + self.pos_embedding  # (N, T', D)


class TokenSelect(Block):
    """Picks one token: ``(N, T, D) -> (N, D)`` (token 0 is ViT's class token)."""

    def __init__(self, index: int = 0):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, D)."""
        return x[:, self.index]  # (N, D)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"index={self.index}"


class SelfAttention2d(Block):
    """GroupNorm, then multi-head self-attention among the H·W pixels, plus the input (DDPM)."""

    def __init__(self, channels: int, num_heads: int = 1, num_groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels)
        self.attn = Attention(channels, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        n, c, h, w = x.shape
        y = self.norm(x).flatten(2).transpose(1, 2)  # (N, H·W, C)
        y = self.attn(y).transpose(1, 2).reshape(n, c, h, w)  # (N, C, H, W)
        return x + y  # (N, C, H, W)


# ----------------------------------------------------------------------------- shared rule helpers
def check_heads(width: int, num_heads: int, what: str = "width", port: str | None = None) -> None:
    """Refuse a width that num_heads does not divide."""
    if width % num_heads:
        raise ShapeError(
            f"{what} ({width}) must be divisible by num_heads ({num_heads})",
            hint="pick num_heads that divides it, or change the width upstream", port=port,
        )


def check_groups(channels: int, num_groups: int, what: str = "channels") -> None:
    """Refuse a channel count that num_groups does not divide."""
    if channels % num_groups:
        raise ShapeError(
            f"{what} ({channels}) must be divisible by num_groups ({num_groups})",
            hint="pick num_groups that divides the channel count",
        )


def attention_macs(t: int, s: int, dim: int, kdim: int | None = None, vdim: int | None = None) -> int:
    """MACs of ``Attention``: the four projections, Q·Kᵀ and weights·V (T queries, S keys)."""
    kdim, vdim = kdim or dim, vdim or dim
    projections = t * dim * dim + s * kdim * dim + s * vdim * dim + t * dim * dim
    return projections + 2 * t * s * dim


def _tokens(shape: Shape, port: str = "in") -> Shape:
    return expect_rank(shape, 2, "(T, D): T tokens of width D", port=port)


# ----------------------------------------------------------------------------- multihead_attention
class MultiheadParams(Params):
    """Params of multihead_attention."""

    num_heads: Heads = 8
    separate_inputs: bool = Field(
        False, description="take queries, keys and values on ports q, k, v; off: one input 'in' attends to itself"
    )
    dropout: AttnDropoutRate = 0.0


def _mha_ports(p: MultiheadParams) -> tuple[Port, ...]:
    return (Port("q"), Port("k"), Port("v")) if p.separate_inputs else (Port("in"),)


def _mha_shape(p: MultiheadParams, ins: dict[str, Shape]) -> Shape:
    if not p.separate_inputs:
        t, d = _tokens(ins["in"])
        check_heads(d, p.num_heads)
        return (t, d)
    (t, d), (s, _), (s_v, _) = (_tokens(ins[port], port) for port in ("q", "k", "v"))
    check_heads(d, p.num_heads, "query width", port="q")
    if s != s_v:
        raise ShapeError(
            f"keys and values must have as many tokens: k {shape_text(ins['k'])}, v {shape_text(ins['v'])}",
            hint="connect k and v to sequences of the same length", port="v",
        )
    return (t, d)


def _mha_build(p: MultiheadParams, ins: dict[str, Shape]) -> nn.Module:
    if not p.separate_inputs:
        return Attention(ins["in"][-1], p.num_heads, dropout=p.dropout)
    return Attention(ins["q"][-1], p.num_heads, kdim=ins["k"][-1], vdim=ins["v"][-1], dropout=p.dropout)


def _mha_macs(p: MultiheadParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    if not p.separate_inputs:
        t, d = ins["in"]
        return attention_macs(t, t, d)
    (t, d), (s, kdim), (_, vdim) = ins["q"], ins["k"], ins["v"]
    return attention_macs(t, s, d, kdim, vdim)


register(BlockSpec(
    type="multihead_attention",
    category="attention",
    doc="Multi-head attention over tokens (T, D): self-attention on 'in', or queries q attending to keys k "
        "and values v. No norm, no residual.",
    params=MultiheadParams,
    inputs=_mha_ports,
    shape=_mha_shape,
    build=_mha_build,
    macs=_mha_macs,
    examples=(
        Example({"in": (10, 16)}, {"num_heads": 4}),
        Example({"q": (5, 8), "k": (7, 12), "v": (7, 6)}, {"num_heads": 2, "separate_inputs": True}),
    ),
))


# ----------------------------------------------------------------------------- cross_attention
class CrossAttentionParams(Params):
    """Params of cross_attention."""

    num_heads: Heads = 8
    dropout: AttnDropoutRate = 0.0
    eps: float = Field(1e-5, gt=0, description="LayerNorm epsilon")


def _cross_shape(p: CrossAttentionParams, ins: dict[str, Shape]) -> Shape:
    t, d = _tokens(ins["in"])
    _tokens(ins["context"], "context")
    check_heads(d, p.num_heads)
    return (t, d)


register(BlockSpec(
    type="cross_attention",
    category="attention",
    doc="Tokens 'in' (T, D) attend to 'context' (S, Dc): in + attention(layernorm(in), context), "
        "as in Stable Diffusion's transformer blocks.",
    params=CrossAttentionParams,
    inputs=(Port("in"), Port("context")),
    shape=_cross_shape,
    build=lambda p, ins: CrossAttention(ins["in"][-1], ins["context"][-1], p.num_heads, p.dropout, p.eps),
    macs=lambda p, ins, outs: attention_macs(ins["in"][0], ins["context"][0], ins["in"][1], ins["context"][1],
                                             ins["context"][1]),
    examples=(
        Example({"in": (16, 32), "context": (7, 12)}, {"num_heads": 4}),
        Example({"in": (4, 6), "context": (1, 6)}, {"num_heads": 1}),
    ),
))


# ----------------------------------------------------------------------------- ffn
class FfnParams(Params):
    """Params of ffn."""

    hidden_mult: float = Field(4.0, gt=0, le=64, description="hidden width = int(width · hidden_mult)")
    dropout: DropoutRate = 0.0


def _hidden(width: int, mult: float, name: str) -> int:
    hidden = int(width * mult)
    if hidden < 1:
        raise ShapeError(f"hidden width int({width} · {name}) is 0", hint=f"raise {name}")
    return hidden


def _ffn_shape(p: FfnParams, ins: dict[str, Shape]) -> Shape:
    shape = expect_min_rank(ins["in"], 1, "(…, D)")
    _hidden(shape[-1], p.hidden_mult, "hidden_mult")
    return shape


register(BlockSpec(
    type="ffn",
    category="attention",
    doc="Transformer feed-forward network on the last dim: Linear -> GELU -> Linear (with dropout).",
    params=FfnParams,
    shape=_ffn_shape,
    build=lambda p, ins: FeedForward(ins["in"][-1], _hidden(ins["in"][-1], p.hidden_mult, "hidden_mult"), p.dropout),
    macs=lambda p, ins, outs: 2 * math.prod(ins["in"]) * _hidden(ins["in"][-1], p.hidden_mult, "hidden_mult"),
    examples=(Example({"in": (10, 16)}), Example({"in": (12,)}, {"hidden_mult": 2.5, "dropout": 0.1})),
))


# ----------------------------------------------------------------------------- transformer_block
class TransformerParams(Params):
    """Params of transformer_block."""

    num_heads: Heads = 12
    mlp_ratio: float = Field(4.0, gt=0, le=64, description="MLP hidden width = int(width · mlp_ratio)")
    dropout: DropoutRate = 0.0
    attention_dropout: AttnDropoutRate = 0.0
    eps: float = Field(1e-6, gt=0, description="LayerNorm epsilon (ViT uses 1e-6)")


def _transformer_shape(p: TransformerParams, ins: dict[str, Shape]) -> Shape:
    t, d = _tokens(ins["in"])
    check_heads(d, p.num_heads)
    _hidden(d, p.mlp_ratio, "mlp_ratio")
    return (t, d)


def _transformer_macs(p: TransformerParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    t, d = ins["in"]
    return attention_macs(t, t, d) + 2 * t * d * _hidden(d, p.mlp_ratio, "mlp_ratio")


register(BlockSpec(
    type="transformer_block",
    category="attention",
    doc="Pre-norm transformer encoder block on tokens (T, D), as in ViT: "
        "x + attention(layernorm(x)), then x + mlp(layernorm(x)).",
    params=TransformerParams,
    shape=_transformer_shape,
    build=lambda p, ins: TransformerBlock(ins["in"][-1], p.num_heads, _hidden(ins["in"][-1], p.mlp_ratio, "mlp_ratio"),
                                          p.dropout, p.attention_dropout, p.eps),
    macs=_transformer_macs,
    examples=(
        Example({"in": (17, 24)}, {"num_heads": 3}),
        Example({"in": (5, 8)}, {"num_heads": 2, "mlp_ratio": 2.0, "dropout": 0.1, "attention_dropout": 0.1}),
    ),
))


# ----------------------------------------------------------------------------- patch_embed
class PatchEmbedParams(Params):
    """Params of patch_embed."""

    patch_size: PosInt = Field(16, description="side of each square patch (the conv's kernel and stride)")
    embed_dim: PosInt = Field(768, description="width of each token")


def _patch_shape(p: PatchEmbedParams, ins: dict[str, Shape]) -> Shape:
    _, h, w = expect_rank(ins["in"], 3, "(C, H, W)")
    if h % p.patch_size or w % p.patch_size:
        raise ShapeError(
            f"image size {h}x{w} is not a multiple of patch_size ({p.patch_size})",
            hint="resize or crop the image, or pick a patch_size that divides H and W",
        )
    return ((h // p.patch_size) * (w // p.patch_size), p.embed_dim)


register(BlockSpec(
    type="patch_embed",
    category="attention",
    doc="Image (C, H, W) to tokens (T, D): a conv with kernel = stride = patch_size, T = (H/p)·(W/p).",
    params=PatchEmbedParams,
    shape=_patch_shape,
    build=lambda p, ins: PatchEmbed(ins["in"][0], p.embed_dim, p.patch_size),
    macs=lambda p, ins, outs: math.prod(outs["out"]) * ins["in"][0] * p.patch_size ** 2,
    examples=(
        Example({"in": (3, 32, 32)}, {"patch_size": 8, "embed_dim": 24}),
        Example({"in": (1, 12, 20)}, {"patch_size": 4, "embed_dim": 5}),
    ),
))


# ----------------------------------------------------------------------------- pos_embed
class PosEmbedParams(Params):
    """Params of pos_embed."""

    cls_token: bool = Field(False, description="prepend a learned class token (ViT), so T grows by one")


def _pos_shape(p: PosEmbedParams, ins: dict[str, Shape]) -> Shape:
    t, d = _tokens(ins["in"])
    return (t + int(p.cls_token), d)


register(BlockSpec(
    type="pos_embed",
    category="attention",
    doc="Adds a learned position embedding to tokens (T, D); optionally prepends a learned class token.",
    params=PosEmbedParams,
    shape=_pos_shape,
    build=lambda p, ins: PosEmbed(ins["in"][0], ins["in"][1], p.cls_token),
    examples=(Example({"in": (16, 24)}, {"cls_token": True}), Example({"in": (9, 4)})),
))


# ----------------------------------------------------------------------------- token_select
class TokenSelectParams(Params):
    """Params of token_select."""

    index: int = Field(0, description="which token to keep (0: ViT's class token; -1: the last)")


def _select_shape(p: TokenSelectParams, ins: dict[str, Shape]) -> Shape:
    t, *rest = expect_min_rank(ins["in"], 2, "(T, D)")
    if not -t <= p.index < t:
        raise ShapeError(f"index {p.index} is out of range for {t} tokens", hint=f"use an index from {-t} to {t - 1}")
    return tuple(rest)


register(BlockSpec(
    type="token_select",
    category="attention",
    doc="Keeps one token: (T, D) -> (D,), e.g. the class token for a ViT head.",
    params=TokenSelectParams,
    inputs=ANY_IN,
    shape=_select_shape,
    output_dtype=promoted,
    build=lambda p, ins: TokenSelect(p.index),
    examples=(Example({"in": (17, 8)}), Example({"in": (5, 3)}, {"index": -1})),
))


# ----------------------------------------------------------------------------- self_attention2d
class SelfAttention2dParams(Params):
    """Params of self_attention2d."""

    num_heads: Heads = 1
    num_groups: Groups = 32


def _sa2d_shape(p: SelfAttention2dParams, ins: dict[str, Shape]) -> Shape:
    c, _, _ = expect_rank(ins["in"], 3, "(C, H, W)")
    check_heads(c, p.num_heads, "channels")
    check_groups(c, p.num_groups)
    return ins["in"]


register(BlockSpec(
    type="self_attention2d",
    category="attention",
    doc="Self-attention among the H·W pixels of (C, H, W): x + attention(groupnorm(x)), as in DDPM's U-Net.",
    params=SelfAttention2dParams,
    shape=_sa2d_shape,
    build=lambda p, ins: SelfAttention2d(ins["in"][0], p.num_heads, p.num_groups),
    macs=lambda p, ins, outs: attention_macs(ins["in"][1] * ins["in"][2], ins["in"][1] * ins["in"][2], ins["in"][0]),
    examples=(
        Example({"in": (32, 8, 8)}, {"num_heads": 4, "num_groups": 8}),
        Example({"in": (6, 3, 5)}, {"num_heads": 2, "num_groups": 3}),
    ),
))
