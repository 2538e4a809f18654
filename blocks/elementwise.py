"""Element-wise math: ``math`` (functions of one tensor), the binary ops and ``clip``.

How the family is cut, and why:

- ``math`` is one block with an ``op`` choice (neg, abs, exp, log, sqrt, reciprocal). These are
  small functions without params; one palette entry with a choice keeps the palette short, and
  generated code reads ``Unary(op='exp')``.
- The binary ops are a block type each (``sub``, ``div``, ``pow``, ``minimum``, ``maximum``), as
  ``add`` and ``mul`` are (blocks/merge.py): their names are what a user looks for in the palette,
  and generated code reads ``Sub()``, ``Pow(constant=2.0)``. Each combines two tensors (ports
  ``in0``, ``in1``, broadcasting) or, with ``constant`` set, a tensor and that number (port ``in0``
  only, so the edge into it stays when the constant is set); ``constant_first`` puts the number on
  the left (``1 - x``, ``2 / x``). ``add`` and ``mul`` take a ``constant`` the same way.
- ``clip`` bounds the values (either bound may stay open). ReLU6, ``clip(0, 6)``, is an activation.

A constant is a number in the params, not a tensor with weights: a per-channel constant is a
learned layer (a norm's affine, a conv's bias), not arithmetic.

MACs: like add, mul and the activations, element-wise ops count no multiply-accumulates; the
model's MACs are those of its matrix and window ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from blocks.base import Block
from blocks.rules import broadcast_shapes
from blocks.spec import BlockSpec, Example, ModuleFactory, Params, Port, Shape, ShapeError, register

UnaryOp = Literal["neg", "abs", "exp", "log", "sqrt", "reciprocal"]
"""Each is the ``torch`` function of that name."""


class MathParams(Params):
    """Params of math."""

    op: UnaryOp = Field("exp", description="the function: neg, abs, exp, log, sqrt or reciprocal (1/x)")


class BinaryParams(Params):
    """Params of sub, div, pow, minimum and maximum."""

    constant: float | None = Field(None, description="the second operand as a number (one input), or none "
                                                     "for a second input in1")
    constant_first: bool = Field(False, description="put the constant first: constant ∘ in0 (as in 1 - x)")


class ClipParams(Params):
    """Params of clip."""

    min: float | None = Field(0.0, description="lowest value kept (none: no lower bound)")
    max: float | None = Field(1.0, description="highest value kept (none: no upper bound)")


class Unary(Block):
    """``torch.<op>(x)`` element-wise."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The function applied to every element."""
        return getattr(torch, self.op)(x)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"op={self.op!r}"


class Binary(Block):
    """``function(in0, in1)`` element-wise (broadcasting), or with a number in place of ``in1``.

    Subclasses name the ``torch`` function."""

    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __init__(self, constant: float | None = None, constant_first: bool = False):
        super().__init__()
        self.constant = constant
        self.constant_first = constant_first

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The op on the two inputs, or on the input and the constant."""
        if y is None:
            assert self.constant is not None, "checked by the shape rule: one input comes with a constant"
            y = torch.full((), self.constant, dtype=x.dtype, device=x.device)
            if self.constant_first:
                x, y = y, x
        return self.function(x, y)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        if self.constant is None:
            return ""
        return f"constant={self.constant}" + (", constant_first=True" if self.constant_first else "")


class Sub(Binary):
    """in0 - in1."""

    function = staticmethod(torch.sub)


class Div(Binary):
    """in0 / in1."""

    function = staticmethod(torch.div)


class Pow(Binary):
    """in0 ** in1."""

    function = staticmethod(torch.pow)


class Minimum(Binary):
    """The smaller of in0 and in1."""

    function = staticmethod(torch.minimum)


class Maximum(Binary):
    """The larger of in0 and in1."""

    function = staticmethod(torch.maximum)


class Clip(Block):
    """Values below ``min`` become ``min``, above ``max`` become ``max``."""

    def __init__(self, min: float | None, max: float | None):  # noqa: A002  (torch.clamp's names)
        super().__init__()
        self.min = min
        self.max = max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x clipped to [min, max]."""
        return torch.clamp(x, self.min, self.max)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"min={self.min}, max={self.max}"


register(BlockSpec(
    type="math",
    category="math",
    doc="A function of each element: neg, abs, exp, log, sqrt or reciprocal.",
    params=MathParams,
    shape=lambda p, ins: ins["in"],
    build=lambda p, ins: Unary(p.op),
    examples=(Example({"in": (3, 4)}, {"op": "exp"}), Example({"in": (5,)}, {"op": "abs"}),
              Example({"in": (2, 3, 3)}, {"op": "neg"})),
))


def _binary_ports(p: BinaryParams) -> tuple[Port, ...]:
    return (Port("in0"),) if p.constant is not None else (Port("in0"), Port("in1"))


def _binary_shape(p: BinaryParams, ins: dict[str, Shape]) -> Shape:
    return ins["in0"] if p.constant is not None else broadcast_shapes(ins)


def _binary_build(cls: type[Binary]) -> ModuleFactory[BinaryParams]:
    return lambda p, ins: cls(p.constant, p.constant_first)


_BINARY: dict[str, tuple[type[Binary], str, tuple[Example, ...]]] = {
    "sub": (Sub, "in0 - in1, or in0 - constant.",
            (Example({"in0": (3, 4), "in1": (3, 4)}),
             Example({"in0": (6,)}, {"constant": 1.0, "constant_first": True}))),
    "div": (Div, "in0 / in1, or in0 / constant.",
            (Example({"in0": (3, 4), "in1": (1, 4)}), Example({"in0": (2, 5)}, {"constant": 6.0}))),
    # Examples with a constant exponent or base: random inputs raised to random powers are NaN.
    "pow": (Pow, "in0 ** in1, or in0 ** constant (constant ** in0 with constant_first).",
            (Example({"in0": (3, 4)}, {"constant": 2.0}),
             Example({"in0": (5,)}, {"constant": 2.0, "constant_first": True}))),
    "minimum": (Minimum, "The smaller of in0 and in1 (or constant), element-wise.",
                (Example({"in0": (3, 4), "in1": (3, 1)}), Example({"in0": (4,)}, {"constant": 0.5}))),
    "maximum": (Maximum, "The larger of in0 and in1 (or constant), element-wise.",
                (Example({"in0": (3, 4), "in1": (3, 4)}), Example({"in0": (4,)}, {"constant": -0.5}))),
}

for _type, (_cls, _doc, _examples) in _BINARY.items():
    register(BlockSpec(
        type=_type,
        category="math",
        doc=_doc + " Shapes must match or be 1 (broadcast).",
        params=BinaryParams,
        inputs=_binary_ports,
        shape=_binary_shape,
        build=_binary_build(_cls),
        examples=_examples,
    ))


def _clip_shape(p: ClipParams, ins: dict[str, Shape]) -> Shape:
    if p.min is None and p.max is None:
        raise ShapeError("clip has neither a min nor a max", hint="set min, max or both")
    if p.min is not None and p.max is not None and p.min > p.max:
        raise ShapeError(f"min ({p.min}) is above max ({p.max})", hint="swap them")
    return ins["in"]


register(BlockSpec(
    type="clip",
    category="math",
    doc="Bounds every value to [min, max]; either bound may be left open.",
    params=ClipParams,
    shape=_clip_shape,
    build=lambda p, ins: Clip(p.min, p.max),
    examples=(Example({"in": (3, 4)}), Example({"in": (6,)}, {"min": None, "max": 0.5})),
))
