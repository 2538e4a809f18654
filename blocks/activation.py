"""Activations: the one table of them, and a block type for each (softmax along a dim included).

``ACTIVATIONS`` is the only list of activation names. The blocks registered here, the ``act``
param of composite blocks (``ACT_CLASSES``), the names the Python builder's ``m.actv`` takes
(``BUILDER_NAMES``) and the ONNX ops the importer maps (``ONNX_OPS``, ``ONNX_FIXED_ATTRS``) are
all read from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal

from pydantic import Field
from torch import nn

from blocks.rules import PosInt, expect_min_rank, torch_dim
from blocks.spec import BlockSpec, Example, ModuleFactory, NoParams, P, Params, Shape, ShapeError, ShapeRule, register


class LeakyReluParams(Params):
    """Params of leaky_relu."""

    negative_slope: float = Field(0.01, ge=0, description="slope for negative inputs")


class GeluParams(Params):
    """Params of gelu."""

    approximate: Literal["none", "tanh"] = Field("none", description="'tanh' uses the faster approximation")


class SoftmaxParams(Params):
    """Params of softmax and logsoftmax."""

    dim: int = Field(-1, description="dim to normalise over, PyTorch numbering (batch = 0)")


class EluParams(Params):
    """Params of elu."""

    alpha: float = Field(1.0, description="the value that large negative inputs approach is -alpha")


class PReluParams(Params):
    """Params of prelu."""

    num_parameters: PosInt = Field(1, description="learned slopes: 1 shared, or one per input channel")
    init: float = Field(0.25, description="starting value of the slopes")


def _same_shape(p: Params, ins: dict[str, Shape]) -> Shape:
    return ins["in"]


def _softmax_shape(p: SoftmaxParams, ins: dict[str, Shape]) -> Shape:
    torch_dim(p.dim, len(ins["in"]))
    return ins["in"]


def _prelu_shape(p: PReluParams, ins: dict[str, Shape]) -> Shape:
    shape = ins["in"]
    if p.num_parameters != 1:
        channels = expect_min_rank(shape, 1, "(C, …)")[0]
        if p.num_parameters != channels:
            raise ShapeError(f"num_parameters ({p.num_parameters}) must be 1 or the input's channels ({channels})",
                             hint=f"set num_parameters to 1 or {channels}")
    return shape


@dataclass(frozen=True)
class Activation(Generic[P]):
    """One activation function, with params of class ``P``.

    ``torch_class`` names the ``torch.nn`` class that computes it; the params go to that class
    by keyword, so they are named as in PyTorch. ``onnx`` is the ONNX op that computes it, where
    there is one; ``onnx_attrs`` are the values of that op's attributes that PyTorch's class
    computes (an ONNX node with other values is another function). ``aliases`` are other names
    the builder takes. ``block=False``: only composite blocks use it, it has no block type of its
    own. ``elementwise=False`` (softmax): it mixes the values along a dim, so composite blocks do
    not offer it. ``examples`` are tried besides the two every activation gets.
    """

    torch_class: str
    doc: str
    params: type[P] = NoParams  # type: ignore[assignment]  # as BlockSpec.params
    shape: ShapeRule[P] = _same_shape
    onnx: str | None = None
    onnx_attrs: dict[str, float] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    block: bool = True
    elementwise: bool = True
    examples: tuple[Example, ...] = ()

    def module(self, params: P) -> nn.Module:
        """The ``torch.nn`` module, given the params by keyword."""
        return getattr(nn, self.torch_class)(**params.model_dump())


ACTIVATIONS: dict[str, Activation[Any]] = {
    "relu": Activation("ReLU", "max(x, 0).", onnx="Relu"),
    # ONNX has no ReLU6: it is Clip(0, 6), which the Clip converter maps here.
    "relu6": Activation("ReLU6", "min(max(x, 0), 6) (MobileNet v2)."),
    "leaky_relu": Activation("LeakyReLU", "x, or slope·x below 0", LeakyReluParams, onnx="LeakyRelu",
                             aliases=("lrelu",)),
    "prelu": Activation("PReLU", "x, or a learned slope·x below 0 (one slope, or one per channel).", PReluParams,
                        _prelu_shape, onnx="PRelu",
                        examples=(Example({"in": (3, 4, 5)}, {"num_parameters": 3}),)),
    "elu": Activation("ELU", "x, or alpha·(exp(x) - 1) below 0.", EluParams, onnx="Elu"),
    "selu": Activation("SELU", "Scaled ELU with the fixed constants of self-normalising networks.", onnx="Selu",
                       onnx_attrs={"alpha": 1.6732632423543772, "gamma": 1.0507009873554805}),
    "gelu": Activation("GELU", "Gaussian error linear unit", GeluParams, onnx="Gelu"),
    "silu": Activation("SiLU", "x · sigmoid(x) (swish).", aliases=("swish",)),
    "mish": Activation("Mish", "x · tanh(softplus(x)).", onnx="Mish"),
    "softplus": Activation("Softplus", "log(1 + exp(x)), a smooth relu.", onnx="Softplus"),
    "hardswish": Activation("Hardswish", "x · relu6(x + 3) / 6 (MobileNet v3).", onnx="HardSwish"),
    "hardsigmoid": Activation("Hardsigmoid", "relu6(x + 3) / 6 (MobileNet v3).", onnx="HardSigmoid",
                              onnx_attrs={"alpha": 1 / 6, "beta": 0.5}),
    "tanh": Activation("Tanh", "Hyperbolic tangent.", onnx="Tanh"),
    "sigmoid": Activation("Sigmoid", "1 / (1 + exp(-x)).", onnx="Sigmoid"),
    "softmax": Activation("Softmax", "Probabilities along dim.", SoftmaxParams, _softmax_shape, onnx="Softmax",
                          elementwise=False),
    "logsoftmax": Activation("LogSoftmax", "Log of the probabilities along dim (for NLL loss).", SoftmaxParams,
                             _softmax_shape, onnx="LogSoftmax", elementwise=False),
}

ACT_CLASSES = {name: a.torch_class for name, a in ACTIVATIONS.items() if a.elementwise} | {"none": "Identity"}
"""The ``act`` choices of composite blocks -> their torch.nn class ("none": no activation).
A plain dict, so that generated code can carry it along with ``activation_module``."""

BUILDER_NAMES = {alias: name for name, a in ACTIVATIONS.items() if a.block for alias in (name, *a.aliases)}
"""Every name ``m.actv`` takes (aliases included) -> its block type."""

ONNX_OPS = {a.onnx: name for name, a in ACTIVATIONS.items()
            if a.onnx and a.block and a.params is NoParams and not a.onnx_attrs}
"""ONNX ops that import as an activation block with nothing to carry over; ops with attributes
(LeakyRelu's alpha, Gelu's approximate, Softmax's axis) have converters of their own."""

ONNX_FIXED_ATTRS = {a.onnx: name for name, a in ACTIVATIONS.items() if a.onnx and a.block and a.onnx_attrs}
"""ONNX ops that import as an activation block only where their attributes have PyTorch's values
(Selu's alpha and gamma, HardSigmoid's alpha and beta)."""


def activation_module(name: str) -> nn.Module:
    """The module for an ``act`` choice, with PyTorch's default settings."""
    return getattr(nn, ACT_CLASSES[name])()


def _activation_build(act: Activation[P]) -> ModuleFactory[P]:
    return lambda p, ins: act.module(p)


for _name, _act in ACTIVATIONS.items():
    if _act.block:
        register(BlockSpec(
            type=_name,
            category="activation",
            doc=_act.doc,
            params=_act.params,
            shape=_act.shape,
            build=_activation_build(_act),
            examples=(Example({"in": (3, 4, 5)}), Example({"in": (7,)}), *_act.examples),
        ))
