"""Block specs: one declaration per block type, and the registry that holds them.

A spec says everything the rest of NetCanvas needs to know about a block type: its typed
params (a pydantic model with defaults, bounds and a one-line description per field), its
ports and the dtype each takes, a shape rule, its output dtypes, a module factory, an optional
MAC count, a category and a doc line.
The inspector form, validation, shape inference, compile and codegen all read the spec;
nothing re-lists a block's params anywhere else.

Shapes are per sample: the batch dimension is implicit, so a conv2d input is ``(C, H, W)``.
Dimension *params* (``dim``, ``start_dim``, ``dims``) use PyTorch's numbering, where the
batch is dim 0, so that they mean what they mean in hand-written PyTorch.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict
from torch import nn

from blocks import categories

Shape = tuple[int, ...]
"""A per-sample tensor shape (no batch dimension)."""

Dtype = Literal["float", "int"]
"""The kind of values a tensor holds: floats, or integer ids (int64)."""

PortDtype = Literal["float", "int", "any"]
"""What an input port takes; ``"any"`` for blocks that only move values (flatten, reshape, add…)."""


class ShapeError(Exception):
    """A block cannot accept the shapes it is given (a user problem, not a bug)."""

    def __init__(self, message: str, hint: str | None = None, port: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.port = port


class Params(BaseModel):
    """Base of every block's params: strict types, unknown names refused, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoParams(Params):
    """For blocks without params."""


@dataclass(frozen=True)
class Port:
    """An input port. Optional ports may stay unconnected; they are passed by keyword.

    ``dtype`` is the kind of tensor the port expects: ``"float"``, ``"int"`` for ids, or
    ``"any"`` where the block works on both. ``batch_only``: the block reads nothing from the
    port but its batch size (StyleGAN's learned constant input), so no gradient flows into it.
    """

    name: str
    optional: bool = False
    dtype: PortDtype = "float"
    batch_only: bool = False


@dataclass(frozen=True)
class Example:
    """A valid use of a block: input shapes per port, and params (defaults where left out).

    Tests start from the examples to check the shape rule against the real module, so
    every block type has at least one.
    """

    inputs: dict[str, Shape]
    params: dict[str, Any] = field(default_factory=dict)


P = TypeVar("P", bound=Params)
"""A block type's params class; the rules of its spec get params of that class."""

ShapeRule = Callable[[P, dict[str, Shape]], "Shape | dict[str, Shape]"]
ModuleFactory = Callable[[P, dict[str, Shape]], nn.Module]
MacCount = Callable[[P, dict[str, Shape], dict[str, Shape]], int]
PortList = Callable[[P], tuple[Port, ...]]
PortNames = Callable[[P], tuple[str, ...]]
DtypeRule = Callable[[P, dict[str, Dtype]], "Dtype | dict[str, Dtype] | None"]

IN = (Port("in"),)
ANY_IN = (Port("in", dtype="any"),)
OUT = ("out",)


def promoted(params: Params, inputs: dict[str, Dtype]) -> Dtype:
    """The output dtype of a block that keeps its inputs' values: float if any input is float
    (PyTorch's type promotion), else int. Identity, reshapes and merges use it."""
    return "float" if "float" in inputs.values() else "int"


@dataclass(frozen=True)
class BlockSpec(Generic[P]):
    """Everything about one block type, its rules typed over its params class ``P``.

    ``shape(params, inputs)`` gets the per-sample shapes of the connected input ports and
    returns the output shape (or a dict port -> shape for several outputs); it raises
    ``ShapeError`` for shapes the block cannot take. ``build(params, inputs)`` returns the
    ``nn.Module``; its ``forward`` takes the required ports positionally, in order, and the
    connected optional ports as keywords, and returns one tensor, or a tuple in the order
    of ``outputs``. ``macs`` counts multiply-accumulates for one sample. ``inputs`` and
    ``outputs`` are fixed, or rules of the params (a block with as many ports as a param says).

    ``output_dtype`` is the dtype of every output (float by default), or a rule that gets the
    params and the dtypes arriving at the connected input ports and returns one dtype, a dict
    port -> dtype, or None when it cannot tell.
    """

    type: str
    category: str
    doc: str
    shape: ShapeRule[P]
    build: ModuleFactory[P] | None
    # builtins.type: the field ``type`` above shadows the builtin in the class body. The ignore:
    # a default cannot be typed as type[P] for every P; specs that leave params out use NoParams.
    params: builtins.type[P] = NoParams  # type: ignore[assignment]
    inputs: tuple[Port, ...] | PortList[P] = IN
    outputs: tuple[str, ...] | PortNames[P] = OUT
    macs: MacCount[P] | None = None
    examples: tuple[Example, ...] = ()
    output_dtype: Dtype | DtypeRule[P] = "float"

    def input_ports(self, params: P) -> tuple[Port, ...]:
        """The input ports for these params (some blocks have as many ports as a param says)."""
        return self.inputs(params) if callable(self.inputs) else self.inputs

    def output_ports(self, params: P) -> tuple[str, ...]:
        """The output port names for these params (split has as many as its sizes)."""
        return self.outputs(params) if callable(self.outputs) else self.outputs

    def infer(self, params: P, inputs: dict[str, Shape]) -> dict[str, Shape]:
        """Output shapes by port name."""
        result = self.shape(params, inputs)
        if isinstance(result, dict):
            return result
        return {self.output_ports(params)[0]: tuple(result)}

    def infer_dtypes(self, params: P, inputs: dict[str, Dtype]) -> dict[str, Dtype] | None:
        """Output dtypes by port name, from the dtypes of the connected input ports."""
        rule = self.output_dtype
        result = rule(params, inputs) if callable(rule) else rule
        if result is None or isinstance(result, dict):
            return result
        return dict.fromkeys(self.output_ports(params), result)

    def count_macs(self, params: P, inputs: dict[str, Shape], outputs: dict[str, Shape]) -> int:
        """Multiply-accumulates for one sample (0 for blocks that declare no count)."""
        return self.macs(params, inputs, outputs) if self.macs else 0


_REGISTRY: dict[str, BlockSpec[Any]] = {}


def register(spec: BlockSpec[P]) -> BlockSpec[P]:
    """Add a spec to the registry; a type id can be registered once only, in a declared category."""
    if spec.type in _REGISTRY:
        raise ValueError(f"block type {spec.type!r} is already registered")
    categories.check(spec.type, spec.category)
    _REGISTRY[spec.type] = spec
    return spec


def get(type_id: str) -> BlockSpec[Any] | None:
    """The spec of a type id, or None when there is none."""
    return _REGISTRY.get(type_id)


def all_specs() -> list[BlockSpec[Any]]:
    """Every registered spec, in registration order."""
    return list(_REGISTRY.values())


def type_ids() -> list[str]:
    """Every registered type id, in registration order."""
    return list(_REGISTRY)


def nearest(name: str, choices: Iterable[str]) -> str | None:
    """The closest spelling of ``name`` among ``choices``, for 'did you mean' hints."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return match[0] if match else None


class Variadic(Protocol):
    """Params with an ``n``: the number of input ports."""

    @property
    def n(self) -> int:
        """How many inputs the block takes."""


def variadic_ports(params: Variadic) -> tuple[Port, ...]:
    """Ports ``in0`` … ``in{n-1}`` for blocks with an ``n`` param; each takes any dtype
    (the merges promote, as PyTorch does)."""
    return tuple(Port(f"in{i}", dtype="any") for i in range(params.n))
