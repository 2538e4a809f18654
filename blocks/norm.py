"""Normalisation: batch norm and instance norm (1/2/3-D), group norm, layer norm, local response norm."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated

from pydantic import Field
from torch import nn

from blocks.rules import PosInt, expect_min_rank, expect_rank, spatial_layout
from blocks.shapes import shape_text
from blocks.spec import BlockSpec, Example, ModuleFactory, Params, Shape, ShapeError, ShapeRule, register

Eps = Annotated[float, Field(gt=0, description="added to the variance for stability")]


class BatchNormParams(Params):
    """Params of batchnorm1d/2d/3d."""

    eps: Eps = 1e-5
    momentum: float = Field(0.1, ge=0, le=1, description="weight of the newest batch in the running stats")
    affine: bool = Field(True, description="learn a scale and a shift")


class GroupNormParams(Params):
    """Params of groupnorm."""

    num_groups: PosInt = Field(8, description="channels are split into this many groups")
    eps: Eps = 1e-5
    affine: bool = Field(True, description="learn a scale and a shift")


class InstanceNormParams(Params):
    """Params of instancenorm1d/2d/3d."""

    eps: Eps = 1e-5
    affine: bool = Field(False, description="learn a scale and a shift per channel")


class LrnParams(Params):
    """Params of lrn."""

    size: PosInt = Field(5, description="number of neighbouring channels each value is normalised over")
    alpha: float = Field(1e-4, ge=0, description="scale of the sum of squares")
    beta: float = Field(0.75, ge=0, description="exponent of the divisor")
    k: float = Field(1.0, gt=0, description="added to the divisor")


class LayerNormParams(Params):
    """Params of layernorm."""

    eps: Eps = 1e-5
    elementwise_affine: bool = Field(True, description="learn a scale and a shift")


def _batchnorm_rule(layouts: dict[int, str]) -> ShapeRule[BatchNormParams]:
    def rule(p: BatchNormParams, ins: dict[str, Shape]) -> Shape:
        shape = ins["in"]
        if len(shape) not in layouts:
            expect_rank(shape, next(iter(layouts)), " or ".join(layouts.values()))
        return shape

    return rule


def _batchnorm_build(cls: Callable[..., nn.Module]) -> ModuleFactory[BatchNormParams]:
    return lambda p, ins: cls(ins["in"][0], eps=p.eps, momentum=p.momentum, affine=p.affine)


_BATCHNORMS = {
    "batchnorm1d": (nn.BatchNorm1d, {1: "(C,)", 2: "(C, L)"}),
    "batchnorm2d": (nn.BatchNorm2d, {3: "(C, H, W)"}),
    "batchnorm3d": (nn.BatchNorm3d, {4: "(C, D, H, W)"}),
}

for _type, (_cls, _layouts) in _BATCHNORMS.items():
    register(BlockSpec(
        type=_type,
        category="norm",
        doc=f"Batch normalisation over channels of input {' or '.join(_layouts.values())}.",
        params=BatchNormParams,
        shape=_batchnorm_rule(_layouts),
        build=_batchnorm_build(_cls),
        examples=tuple(Example({"in": (6, 5, 4, 3)[:rank]}) for rank in _layouts),
    ))


def _groupnorm_shape(p: GroupNormParams, ins: dict[str, Shape]) -> Shape:
    shape = expect_min_rank(ins["in"], 1, "(C, …)")
    if shape[0] % p.num_groups:
        raise ShapeError(
            f"channels ({shape[0]}) must be divisible by num_groups ({p.num_groups})",
            hint="pick num_groups that divides the channel count",
        )
    return shape


register(BlockSpec(
    type="groupnorm",
    category="norm",
    doc="Group normalisation over channel groups of input (C, …).",
    params=GroupNormParams,
    shape=_groupnorm_shape,
    build=lambda p, ins: nn.GroupNorm(p.num_groups, ins["in"][0], eps=p.eps, affine=p.affine),
    examples=(Example({"in": (8, 4, 4)}, {"num_groups": 4}),),
))

register(BlockSpec(
    type="layernorm",
    category="norm",
    doc="Layer normalisation over the last dim.",
    params=LayerNormParams,
    shape=lambda p, ins: expect_min_rank(ins["in"], 1, "(…, F)"),
    build=lambda p, ins: nn.LayerNorm(ins["in"][-1], eps=p.eps, elementwise_affine=p.elementwise_affine),
    examples=(Example({"in": (5, 16)}),),
))


_INSTANCENORMS: dict[int, Callable[..., nn.Module]] = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def _instancenorm_rule(n: int) -> ShapeRule[InstanceNormParams]:
    layout = spatial_layout(n)

    def rule(p: InstanceNormParams, ins: dict[str, Shape]) -> Shape:
        shape = expect_rank(ins["in"], n + 1, layout)
        if math.prod(shape[1:]) == 1:  # PyTorch refuses it while training: the variance of one value
            raise ShapeError(f"each channel of {shape_text(shape)} holds one value, which has no spread to normalise",
                             hint="normalise before pooling down to 1x1, or use batchnorm")
        return shape

    return rule


def _instancenorm_build(cls: Callable[..., nn.Module]) -> ModuleFactory[InstanceNormParams]:
    return lambda p, ins: cls(ins["in"][0], eps=p.eps, affine=p.affine)


for _n, _norm in _INSTANCENORMS.items():
    register(BlockSpec(
        type=f"instancenorm{_n}d",
        category="norm",
        doc=f"Instance normalisation: each channel of each sample of input {spatial_layout(_n)} to mean 0, "
            "variance 1.",
        params=InstanceNormParams,
        shape=_instancenorm_rule(_n),
        build=_instancenorm_build(_norm),
        examples=(Example({"in": (6, 5, 4, 3)[:_n + 1]}), Example({"in": (3, 4, 4, 4)[:_n + 1]}, {"affine": True})),
    ))


def _lrn_shape(p: LrnParams, ins: dict[str, Shape]) -> Shape:
    return expect_min_rank(ins["in"], 2, "(C, …)")


register(BlockSpec(
    type="lrn",
    category="norm",
    doc="Local response normalisation across neighbouring channels (AlexNet, GoogLeNet) of input (C, …).",
    params=LrnParams,
    shape=_lrn_shape,
    build=lambda p, ins: nn.LocalResponseNorm(p.size, alpha=p.alpha, beta=p.beta, k=p.k),
    # the sum of squares over ``size`` channels for every value
    macs=lambda p, ins, outs: math.prod(outs["out"]) * p.size,
    examples=(Example({"in": (8, 5, 5)}), Example({"in": (4, 6)}, {"size": 3, "alpha": 0.001, "k": 2.0})),
))
