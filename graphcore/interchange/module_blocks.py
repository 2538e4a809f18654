"""Which block a torch module is: the block type and params whose module equals it.

Every block type builds its module from its params (``spec.build``); this runs that the other
way, from the registry alone, so a new block type is recognised with nothing written here. The
module's class names the specs that can build it (found by building each spec's examples on the
meta device). Its constructor arguments (``Block.init_kwargs``), or for a ``torch.nn`` class its
attributes (``out_channels``, ``kernel_size``… are kept under the names the params have), give
the params. A candidate is accepted only if building it again gives the same module: the same
class, constructor arguments, repr and parameter shapes. A param the module does not keep (a
ratio such as ``mlp_ratio``, a switch such as ``separate_inputs``, the ``n`` of a merge) is found
by trying the values it can have, each checked the same way; then every param that can take its
default is given it, so the result reads like a hand-written graph.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import types
import typing
import weakref
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from torch import nn

import blocks
from blocks.base import Block
from blocks.spec import BlockSpec, Params, Shape, ShapeError

MAX_TRIES = 512
"""Candidate params tried per spec; more than any block needs (a few switches and ratios)."""


@dataclass(frozen=True)
class Match:
    """A block equal to a module: its type, its params (defaults left out), the input port of each
    of the call's tensor arguments (positional ones by index, keyword ones by name), and its output
    ports in the order the module returns its results."""

    type: str
    params: dict[str, Any]
    ports: dict[int | str, str]
    outputs: tuple[str, ...]


def matchable(cls: type) -> bool:
    """Is ``cls`` a class that some block type builds (or a copy of one)?"""
    return _own_class(cls) in _specs_by_class(len(blocks.type_ids()))


def match_module(module: nn.Module, args: Sequence[Shape], kwargs: dict[str, Shape]) -> Match | str:
    """The block equal to ``module`` called on tensors of per-sample shapes ``args`` and
    ``kwargs``, or why there is none (one line)."""
    specs = _specs_by_class(len(blocks.type_ids())).get(_own_class(type(module)))
    if not specs:
        return "no block builds this class"
    for spec in specs:
        match = _match_spec(spec, module, args, kwargs)
        if match is not None:
            return match
    return _why_not(specs[0], module, args, kwargs)


@functools.cache
def _specs_by_class(registered: int) -> dict[type, list[BlockSpec[Any]]]:
    """Module class -> the specs that build it. ``registered`` (the registry's size) renews the
    cache when block types are added."""
    index: dict[type, list[BlockSpec[Any]]] = defaultdict(list)
    for spec in blocks.all_specs():
        if spec.build is None:
            continue
        for example in spec.examples:
            params = spec.params.model_validate(example.params)
            with torch.device("meta"):
                cls = type(spec.build(params, example.inputs))
            if spec not in index[cls]:
                index[cls].append(spec)
    return dict(index)


# ----------------------------------------------------------------------------- one spec
def _match_spec(spec: BlockSpec[Any], module: nn.Module, args: Sequence[Shape],
                kwargs: dict[str, Shape]) -> Match | None:
    for raw in _candidates(spec, module, len(args)):
        found = _check(spec, raw, module, args, kwargs)
        if found is not None:
            return _simplest(spec, found, module, args, kwargs)
    return None


def _candidates(spec: BlockSpec[Any], module: nn.Module, arity: int) -> Iterator[dict[str, Any]]:
    """Params to try, the likeliest first (what the module keeps, then defaults), at most MAX_TRIES."""
    choices = {name: _unique(_choices(name, info, module, arity)) for name, info in spec.params.model_fields.items()}
    for values in itertools.islice(itertools.product(*choices.values()), MAX_TRIES):
        yield dict(zip(choices, values, strict=True))


def _check(spec: BlockSpec[Any], raw: dict[str, Any], module: nn.Module, args: Sequence[Shape],
           kwargs: dict[str, Shape]) -> Match | None:
    """The match for params ``raw``, if the block they make is ``module``."""
    built = _built(spec, raw, args, kwargs)
    if built is None or not _same(built[2], module):
        return None
    params, ports, _ = built
    return Match(spec.type, params.model_dump(exclude_defaults=True), ports, spec.output_ports(params))


def _built(spec: BlockSpec[Any], raw: dict[str, Any], args: Sequence[Shape],
           kwargs: dict[str, Shape]) -> tuple[Params, dict[int | str, str], nn.Module] | None:
    """The block params ``raw`` make for this call, on the meta device; None where they are not
    valid params, or the call does not fit the block's ports and shapes."""
    try:
        params = spec.params.model_validate(raw)
    except ValidationError:
        return None
    ports = _bind(spec, params, len(args), set(kwargs))
    if ports is None:
        return None
    shapes = {port: args[key] if isinstance(key, int) else kwargs[key] for key, port in ports.items()}
    try:
        spec.infer(params, shapes)
    except ShapeError:
        return None
    with torch.device("meta"):
        return params, ports, spec.build(params, shapes)


def _why_not(spec: BlockSpec[Any], module: nn.Module, args: Sequence[Shape], kwargs: dict[str, Shape]) -> str:
    """Why ``module`` is no ``spec`` block: the settings it has that the likeliest block has not."""
    built = (_built(spec, raw, args, kwargs) for raw in _candidates(spec, module, len(args)))
    likeliest = next((b for b in built if b is not None), None)
    if likeliest is None:
        return f"its call fits no {spec.type} block"
    theirs, ours = _layout(module)[0][2], _layout(likeliest[2])[0][2]
    differing = [k for k, v in theirs.items() if k in ours and ours[k] != v][:3]
    if not differing:
        return f"it is built otherwise than a {spec.type} block"
    has = ", ".join(f"{k}={theirs[k]!r}" for k in differing)
    wanted = ", ".join(f"{k}={ours[k]!r}" for k in differing)
    return f"{has}: a {spec.type} block has {wanted}"


def _simplest(spec: BlockSpec[Any], match: Match, module: nn.Module, args: Sequence[Shape],
              kwargs: dict[str, Shape]) -> Match:
    """``match`` with every param that can take its default left at it (a max pool's stride
    equal to its kernel is the default stride)."""
    for name in list(match.params):
        trial = {k: v for k, v in match.params.items() if k != name}
        simpler = _check(spec, trial, module, args, kwargs)
        if simpler is not None:
            match = simpler
    return match


def _bind(spec: BlockSpec[Any], params: Params, positional: int, keywords: set[str]) -> dict[int | str, str] | None:
    """Argument -> port, as the compiled model calls a block: required ports positionally, in
    order, and optional ones by keyword; None where the call does not fit the ports."""
    ports = spec.input_ports(params)
    required = [p.name for p in ports if not p.optional]
    optional = {p.name for p in ports if p.optional}
    if positional != len(required) or not keywords <= optional:
        return None
    return {**dict(enumerate(required)), **{name: name for name in sorted(keywords)}}


def _same(rebuilt: nn.Module, module: nn.Module) -> bool:
    """Equal modules: the same classes (a class or its copy) under the same names, with the same
    settings and parameter shapes."""
    return _layout(rebuilt) == _layout(module) and \
        {k: (v.shape, v.dtype) for k, v in rebuilt.state_dict().items()} == \
        {k: (v.shape, v.dtype) for k, v in module.state_dict().items()}


_UNCOMPARED = {"training", "inplace"}
"""Attributes that do not change what a module computes: its mode, and torch.nn's ``inplace``
(whether a ReLU overwrites its input, which a traced graph already accounts for)."""


def _layout(module: nn.Module) -> list[tuple[str, type, dict[str, Any]]]:
    """Each submodule's name, class and plain attributes (numbers, strings, tuples…), a tuple of one
    size read as that size (``kernel_size=(2, 2)`` builds what ``kernel_size=2`` builds)."""
    return [(name, _own_class(type(m)), {k: _one_size(v) for k, v in vars(m).items()
                                         if not k.startswith("_") and k not in _UNCOMPARED and _plain(v)})
            for name, m in module.named_modules()]


def _one_size(value: Any) -> Any:
    if isinstance(value, tuple) and value and len(set(value)) == 1 and type(value[0]) is int:
        return value[0]
    return value


def _plain(value: Any) -> bool:
    if isinstance(value, tuple | list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    return value is None or isinstance(value, bool | int | float | str)


# ----------------------------------------------------------------------------- candidate values
def _choices(name: str, info: FieldInfo, module: nn.Module, arity: int) -> Iterator[Any]:
    """The values worth trying for param ``name``: what the module keeps under that name (as an int
    and as a list where it keeps a tuple), else the values the param can take."""
    if name == "n":  # the arity of a merge: its ports are in0 … in{n-1}
        yield arity
        return
    kept = _kept(module, name, info)
    if kept is not _MISSING:
        yield from _forms(kept)
        return
    yield _default(info)
    yield from _possible(info, module)


_MISSING = object()


def _unique(values: Iterator[Any]) -> list[Any]:
    """The values without repeats, in order (lists among them, so compared by repr)."""
    return list({repr(v): v for v in reversed(list(values))}.values())[::-1]


def _kept(module: nn.Module, name: str, info: FieldInfo) -> Any:
    """The value the module keeps for ``name``: its recorded constructor argument (a NetCanvas
    block), or its attribute (a torch.nn module), where a bool param is kept as a tensor or None
    (``bias``); ``_MISSING`` where it keeps none."""
    recorded = module.__dict__.get("init_kwargs")
    if recorded is not None:
        return recorded.get(name, _MISSING)
    if not hasattr(module, name):
        return _MISSING
    value = getattr(module, name)
    if info.annotation is bool and (value is None or isinstance(value, torch.Tensor)):
        return value is not None
    return _MISSING if isinstance(value, torch.Tensor | nn.Module) else value


def _forms(value: Any) -> Iterator[Any]:
    """``value`` as params hold it: a tuple as one int (when all its entries agree) or as a list."""
    if isinstance(value, tuple | list):
        items = list(value)
        if items and len(set(items)) == 1 and isinstance(items[0], int) and not isinstance(items[0], bool):
            yield items[0]
        yield items
    else:
        yield value


def _default(info: FieldInfo) -> Any:
    return info.get_default(call_default_factory=True)


def _possible(info: FieldInfo, module: nn.Module) -> Iterator[Any]:
    """Other values of a param the module does not keep: each choice of a bool or a Literal, or for
    a number, the ratios of the module's whole-number constructor arguments (a hidden width over
    the width)."""
    kinds = _kinds(info.annotation)
    for kind in kinds:
        if kind is bool:
            yield from (False, True)
        elif typing.get_origin(kind) is typing.Literal:
            yield from typing.get_args(kind)
    sizes = [v for v in module.__dict__.get("init_kwargs", {}).values()
             if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    pairs = [(a, b) for a, b in itertools.permutations(sizes, 2)]
    if float in kinds:
        yield from dict.fromkeys(a / b for a, b in pairs)
    if int in kinds:
        yield from dict.fromkeys(a // b for a, b in pairs if a // b > 0)


def _kinds(annotation: Any) -> list[Any]:
    """The types a param annotation allows (``int | None`` -> int, NoneType)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [k for arg in typing.get_args(annotation) for k in _kinds(arg)]
    if typing.get_origin(annotation) is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    return [annotation]


# ----------------------------------------------------------------------------- copies of block classes
def block_class_of(cls: type) -> type[Block] | None:
    """The NetCanvas block class that ``cls`` is a copy of, or None. A Python file NetCanvas
    exports carries the source of each block class it uses, with ``nn.Module`` for the ``Block``
    base: a class of the same name whose methods and class attributes are the same code."""
    if not isinstance(cls, type) or issubclass(cls, Block) or not issubclass(cls, nn.Module):
        return None
    if cls not in _COPIES:
        _COPIES[cls] = next((own for own in _block_classes().get(cls.__name__, []) if _copies(cls, own)), None)
    return _COPIES[cls]


_COPIES: weakref.WeakKeyDictionary[type, type[Block] | None] = weakref.WeakKeyDictionary()


def _own_class(cls: type) -> type:
    return block_class_of(cls) or cls


def _block_classes() -> dict[str, list[type[Block]]]:
    """Every block class by name (names may repeat across families)."""
    found: dict[str, list[type[Block]]] = defaultdict(list)
    stack = list(Block.__subclasses__())
    while stack:
        cls = stack.pop()
        found[cls.__name__].append(cls)
        stack.extend(cls.__subclasses__())
    return found


def _copies(cls: type, own: type) -> bool:
    """Is ``cls`` the class ``own`` with its ``Block`` base read as ``nn.Module``?"""
    theirs = [b for b in cls.__bases__ if b is not nn.Module]
    ours = [b for b in own.__bases__ if b is not Block]
    if len(theirs) != len(ours) or not all(a is b or _copies(a, b) for a, b in zip(theirs, ours, strict=True)):
        return False
    mine, yours = _body(own), _body(cls)
    return mine.keys() == yours.keys() and all(_same_value(mine[k], yours[k]) for k in mine)


_ADDED_BY_PYTHON = {"__module__", "__dict__", "__weakref__", "__doc__", "__qualname__", "__annotations__",
                    "__firstlineno__", "__static_attributes__", "__orig_bases__", "__parameters__"}


def _body(cls: type) -> dict[str, Any]:
    """What a class statement defined: its attributes but the ones Python adds, functions unwrapped
    (a block's ``__init__`` is wrapped to record its arguments)."""
    return {k: inspect.unwrap(v) if isinstance(v, types.FunctionType) else v for k, v in vars(cls).items()
            if k not in _ADDED_BY_PYTHON}


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, types.FunctionType) and isinstance(b, types.FunctionType):
        return _same_code(a.__code__, b.__code__)
    if isinstance(a, staticmethod | classmethod) and isinstance(b, staticmethod | classmethod):
        return type(a) is type(b) and _same_value(a.__func__, b.__func__)
    if isinstance(a, property) and isinstance(b, property):
        return all(_same_value(x, y) for x, y in zip((a.fget, a.fset), (b.fget, b.fset), strict=True))
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001  (values that cannot be compared are not the same)
        return a is b


def _same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """The same function body: instructions, names and constants (line numbers aside)."""
    if (a.co_code, a.co_names, a.co_varnames, a.co_freevars) != (b.co_code, b.co_names, b.co_varnames, b.co_freevars):
        return False
    if len(a.co_consts) != len(b.co_consts):
        return False
    return all(_same_code(x, y) if isinstance(x, types.CodeType) and isinstance(y, types.CodeType)
               else type(x) is type(y) and x == y for x, y in zip(a.co_consts, b.co_consts, strict=True))
