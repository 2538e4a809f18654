"""Dense layers: linear and embedding."""

from __future__ import annotations

import math

from pydantic import Field
from torch import nn

from blocks.rules import PosInt, expect_min_rank
from blocks.spec import BlockSpec, Example, Params, Port, Shape, register


class LinearParams(Params):
    """Params of linear."""

    out_features: PosInt = Field(64, description="size of each output vector")
    bias: bool = Field(True, description="learn an additive bias")


class EmbeddingParams(Params):
    """Params of embedding."""

    num_embeddings: PosInt = Field(10, description="number of distinct ids (vocabulary size)")
    embedding_dim: PosInt = Field(64, description="size of each embedding vector")


def _linear_shape(p: LinearParams, ins: dict[str, Shape]) -> Shape:
    shape = expect_min_rank(ins["in"], 1, "(…, F)")
    return (*shape[:-1], p.out_features)


register(BlockSpec(
    type="linear",
    category="dense",
    doc="Fully connected layer on the last dim: y = x W^T + b.",
    params=LinearParams,
    shape=_linear_shape,
    build=lambda p, ins: nn.Linear(ins["in"][-1], p.out_features, bias=p.bias),
    macs=lambda p, ins, outs: math.prod(outs["out"]) * ins["in"][-1],
    examples=(Example({"in": (20,)}, {"out_features": 7}), Example({"in": (5, 12)}, {"bias": False})),
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
