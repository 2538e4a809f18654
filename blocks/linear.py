"""Dense layers: linear, embedding, and scale and shift (a learned multiplier or offset per channel
or element, as ConvNeXt's layer scale or a constant tensor an imported model adds)."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from blocks.base import Block
from blocks.equalized import Equalized, EqualizedLinear, LrMul
from blocks.rules import PosInt, expect_min_rank
from blocks.shapes import shape_text
from blocks.spec import BlockSpec, Example, Params, Port, Shape, ShapeError, register


class LinearParams(Params):
    """Params of linear."""

    out_features: PosInt = Field(64, description="size of each output vector")
    bias: bool = Field(True, description="learn an additive bias")
    equalized: Equalized = False
    lr_mul: LrMul = 1.0


class EmbeddingParams(Params):
    """Params of embedding."""

    num_embeddings: PosInt = Field(10, description="number of distinct ids (vocabulary size)")
    embedding_dim: PosInt = Field(64, description="size of each embedding vector")


def _linear_shape(p: LinearParams, ins: dict[str, Shape]) -> Shape:
    shape = expect_min_rank(ins["in"], 1, "(…, F)")
    return (*shape[:-1], p.out_features)


def _linear_build(p: LinearParams, ins: dict[str, Shape]) -> nn.Module:
    """nn.Linear, or the run-time-scaled layer when the learning rate is equalised or multiplied."""
    if p.equalized or p.lr_mul != 1:
        return EqualizedLinear(ins["in"][-1], p.out_features, p.bias, p.equalized, p.lr_mul)
    return nn.Linear(ins["in"][-1], p.out_features, bias=p.bias)


register(BlockSpec(
    type="linear",
    category="dense",
    doc="Fully connected layer on the last dim: y = x W^T + b.",
    params=LinearParams,
    shape=_linear_shape,
    build=_linear_build,
    macs=lambda p, ins, outs: math.prod(outs["out"]) * ins["in"][-1],
    examples=(Example({"in": (20,)}, {"out_features": 7}), Example({"in": (5, 12)}, {"bias": False}),
              Example({"in": (16,)}, {"out_features": 8, "equalized": True, "lr_mul": 0.01})),
))

register(BlockSpec(
    type="embedding",
    category="dense",
    doc="Looks up a learned vector for each integer id (input dtype int64).",
    params=EmbeddingParams,
    inputs=(Port("in", dtype="int"),),
    shape=lambda p, ins: (*ins["in"], p.embedding_dim),
    build=lambda p, ins: nn.Embedding(p.num_embeddings, p.embedding_dim),
    examples=(Example({"in": ()}), Example({"in": (6,)}, {"embedding_dim": 8})),
))


class ScaleParams(Params):
    """Params of scale and shift."""

    shape: list[PosInt] = Field(default_factory=lambda: [1], min_length=1,
                                description="shape of the learned weight, lined up with each sample's last dims "
                                            "([C, 1, 1]: one weight per channel of (C, H, W))")
    init: float = Field(1.0, description="the weights' starting value (ConvNeXt's layer scale starts at 1e-6)")


class ShiftParams(ScaleParams):
    """Params of shift."""

    init: float = Field(0.0, description="the weights' starting value")


class Scale(Block):
    """Multiplies every sample by a learned weight that broadcasts against it."""

    def __init__(self, shape: list[int], init: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x · weight."""
        return x * self.weight


class Shift(Block):
    """Adds a learned weight that broadcasts against every sample."""

    def __init__(self, shape: list[int], init: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + weight."""
        return x + self.weight


def _broadcast_weight(p: ScaleParams, ins: dict[str, Shape]) -> Shape:
    shape = ins["in"]
    lined_up = shape[len(shape) - len(p.shape):]
    if len(p.shape) > len(shape) or any(w not in (1, d) for w, d in zip(p.shape, lined_up)):
        raise ShapeError(f"a weight of shape {p.shape} does not broadcast against {shape_text(shape)}",
                         hint="line its sizes up with the input's last dims, each that size or 1")
    return shape


WEIGHT_EXAMPLES = (Example({"in": (4, 5, 5)}, {"shape": [4, 1, 1]}), Example({"in": (6, 8)}, {"shape": [8]}))

register(BlockSpec(
    type="scale",
    category="dense",
    doc="Multiplies each sample by a learned weight (per channel with shape [C, 1, 1]), as a layer scale.",
    params=ScaleParams,
    shape=_broadcast_weight,
    build=lambda p, ins: Scale(p.shape, p.init),
    examples=WEIGHT_EXAMPLES,
))

register(BlockSpec(
    type="shift",
    category="dense",
    doc="Adds a learned weight to each sample (per channel with shape [C, 1, 1]): a bias of any shape.",
    params=ShiftParams,
    shape=_broadcast_weight,
    build=lambda p, ins: Shift(p.shape, p.init),
    examples=WEIGHT_EXAMPLES,
))
