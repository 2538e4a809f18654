"""Budgets that keep one graph from exhausting the machine, and the weight sizes they are checked on.

Every cap lives in ``LIMITS``, read at each use, so that a deployment (or a test) can replace it.
Weights are measured by building a block's module on PyTorch's meta device, whose tensors have a
shape and a dtype but no memory: a block far too big to allocate is measured without allocating it.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from blocks import BlockSpec, Params, Shape


@dataclass(frozen=True)
class Limits:
    """The caps on one graph. Above them validation reports an error naming the node."""

    max_nesting: int = 32  # levels of subgraphs inside subgraphs
    max_expanded_nodes: int = 100_000  # nodes once every subgraph (and repeat) is expanded
    max_tensor_elements: int = 2**32  # numbers in one weight tensor (4 G)
    max_model_bytes: int = 16 * 10**9  # bytes of all the weights (parameters and buffers) of a model


LIMITS = Limits()


@dataclass(frozen=True)
class Weights:
    """The weights of a block, or of a whole graph: learnable numbers (what a summary counts),
    bytes of every tensor (parameters and buffers), and the largest tensor as (numbers, name)."""

    params: int = 0
    bytes: int = 0
    largest: tuple[int, str] = (0, "")

    def __add__(self, other: Weights) -> Weights:
        return Weights(self.params + other.params, self.bytes + other.bytes, max(self.largest, other.largest))


def total(weights: Iterable[Weights]) -> Weights:
    """The sum of several blocks' weights."""
    return functools.reduce(operator.add, weights, Weights())


def size_text(n_bytes: int) -> str:
    """A byte count in kB, MB or GB with one decimal: 17_200_000_000 -> '17.2 GB'."""
    unit, size = next(((u, s) for u, s in (("GB", 1e9), ("MB", 1e6)) if n_bytes >= s), ("kB", 1e3))
    return f"{n_bytes / size:.1f} {unit}"


_MEASURED: dict[tuple, Weights] = {}
_MEASURED_KEPT = 4096  # signatures remembered; a graph repeats the same few blocks
_NO_WEIGHTS = Weights()


def signature(spec: BlockSpec[Any], params: Params) -> tuple:
    """A block's type and params as a hashable key."""
    key: tuple = (spec.type, tuple(params.__dict__.values()))
    try:
        hash(key)
    except TypeError:  # a list value (kernel sizes, a shape) cannot be hashed: its text stands in (any string
        key = (spec.type, repr(key[1]))  # a user typed, lone surrogates too: JSON would refuse those)
    return key


def measure(spec: BlockSpec[Any], params: Params, inputs: Mapping[str, Shape]) -> Weights:
    """The weights ``spec`` builds for these params and input shapes, counted on the meta device.

    Remembered per signature (type, params, shapes): a network repeats a few kinds of layer, and a
    build costs about half a millisecond. Exceptions from the build (a size that overflows) pass.
    """
    if spec.build is None:
        return _NO_WEIGHTS
    key = (signature(spec, params), tuple(inputs.items()))  # ports in edge order: at worst, a miss
    found = _MEASURED.get(key)
    if found is None:
        if len(_MEASURED) >= _MEASURED_KEPT:
            _MEASURED.clear()
        found = _MEASURED[key] = _built(spec, params, inputs)
    return found


def _built(spec: BlockSpec[Any], params: Params, inputs: Mapping[str, Shape]) -> Weights:
    assert spec.build is not None, "measure builds only blocks that have modules"
    with torch.device("meta"), _SkipNormalInit():
        module = spec.build(params, dict(inputs))
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return Weights(
        params=sum(p.numel() for p in module.parameters()),
        bytes=sum(t.numel() * t.element_size() for _, t in tensors),
        largest=max(((t.numel(), f"{name} {tuple(t.shape)}") for name, t in tensors), default=(0, "")),
    )


class _SkipNormalInit(TorchFunctionMode):
    """Skips ``normal_`` on meta tensors. It does nothing to a tensor without data, but its meta
    kernel is written in Python: the first call imports sympy and most of torch._decomp, seconds
    that every embedding or positional embedding would cost the first validation of a process."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "normal_":  # Tensor.normal_(…) or nn.init.normal_(tensor=…)
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)
