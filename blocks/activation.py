"""Element-wise activations (and softmax along a dim)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from blocks.rules import torch_dim
from blocks.spec import BlockSpec, Example, NoParams, Params, register


class LeakyReluParams(Params):
    negative_slope: float = Field(0.01, ge=0, description="slope for negative inputs")


class GeluParams(Params):
    approximate: Literal["none", "tanh"] = Field("none", description="'tanh' uses the faster approximation")


class SoftmaxParams(Params):
    dim: int = Field(-1, description="dim to normalise over, PyTorch numbering (batch = 0)")


def _same_shape(p, ins):
    return ins["in"]


def _softmax_shape(p: SoftmaxParams, ins):
    torch_dim(p.dim, len(ins["in"]))
    return ins["in"]


_ACTIVATIONS = {
    # type: (params, shape rule, module factory, doc)
    "relu": (NoParams, _same_shape, lambda p: nn.ReLU(), "max(x, 0)."),
    "leaky_relu": (LeakyReluParams, _same_shape, lambda p: nn.LeakyReLU(p.negative_slope), "x, or slope·x below 0"),
    "gelu": (GeluParams, _same_shape, lambda p: nn.GELU(approximate=p.approximate), "Gaussian error linear unit"),
    "silu": (NoParams, _same_shape, lambda p: nn.SiLU(), "x · sigmoid(x) (swish)."),
    "mish": (NoParams, _same_shape, lambda p: nn.Mish(), "x · tanh(softplus(x))."),
    "tanh": (NoParams, _same_shape, lambda p: nn.Tanh(), "Hyperbolic tangent."),
    "sigmoid": (NoParams, _same_shape, lambda p: nn.Sigmoid(), "1 / (1 + exp(-x))."),
    "softmax": (SoftmaxParams, _softmax_shape, lambda p: nn.Softmax(dim=p.dim), "Probabilities along dim."),
}

for _type, (_params, _rule, _factory, _doc) in _ACTIVATIONS.items():
    register(BlockSpec(
        type=_type,
        category="activation",
        doc=_doc,
        params=_params,
        shape=_rule,
        build=lambda p, ins, factory=_factory: factory(p),
        examples=(Example({"in": (3, 4, 5)}), Example({"in": (7,)})),
    ))
