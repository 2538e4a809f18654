"""Normalisation: batch norm (1/2/3-D), group norm, layer norm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import Field
from torch import nn

from blocks.rules import PosInt, expect_min_rank, expect_rank
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
