"""Trace a PyTorch module into calls: module calls that may each become one block, and ATen ops.

``trace(module, inputs, keep)`` runs ``torch.export`` (non-strict, the ATen "training" IR, where
``F.linear`` stays ``aten.linear`` and ``torch.flatten`` stays ``aten.flatten``). The outermost
submodules that ``keep`` accepts have their call signatures preserved, so a call knows which
argument is which; the ops inside such a call are kept with it, for when its module turns out to
be no block. Where ``torch.export`` fails, ``torch.fx`` traces instead, with those submodules as
leaves and every other call lowered to the same ATen ops one at a time.

The trace names every tensor a call computes (``Value``), and holds each one's shape and dtype;
weights and other constant tensors appear as the tensors themselves.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.export.graph_signature import InputKind, TensorArgument
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.operator_schemas import normalize_function
from torch.utils import _pytree as pytree

from graphcore.core.diagnostics import GraphError, one_line

Keep = Callable[[nn.Module], bool]
"""Whether a module's calls are kept whole (its class may be a block)."""

_TORCH_DIR = str(Path(torch.__file__).parent)
_CALL_NUMBER = re.compile(r"@\d+$")  # torch.export's suffix for the second, third… call of one module


@dataclass(frozen=True)
class Value:
    """A tensor computed from the inputs, by its name in the trace."""

    name: str


@dataclass(frozen=True)
class TensorInfo:
    """The shape (batch included) and dtype of a traced tensor."""

    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass
class Call:
    """One call in the trace: of a module (``target`` an ``nn.Module``) or of an ATen op.

    ``args``/``kwargs`` hold ``Value`` for computed tensors, tensors for constants (weights) and
    plain values; ``named`` holds an op's arguments by the names its schema gives them, defaults
    filled in. ``outputs`` names each result (None where a result is not used or not a tensor).
    ``scope`` is the module calls it happens in, outermost first (for a module call, ending with its
    own); ``inner`` are the ops of a module call; ``where`` is the user's source line of an op.
    """

    target: nn.Module | torch._ops.OpOverload | Callable
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: tuple[str | None, ...]
    scope: tuple[str, ...]
    inner: list[Call] = field(default_factory=list)
    where: str = ""
    named: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trace:
    """A traced module: its inputs (values, in ``forward`` order), calls in order, outputs and the
    shape and dtype of every value; ``how`` says which tracer made it."""

    inputs: list[str]
    calls: list[Call]
    outputs: list[Any]
    info: dict[str, TensorInfo]
    how: str


def trace(module: nn.Module, inputs: tuple[torch.Tensor, ...], keep: Keep) -> Trace:
    """The calls of ``module`` on ``inputs``; a module neither tracer can follow is a ``GraphError``."""
    with _torch_quiet():
        try:
            return _exported(module, inputs, keep)
        except Exception as exc:  # noqa: BLE001  (torch.export fails in many ways; fx may still trace it)
            export_problem = one_line(str(exc)).split(" Set TORCH_LOGS")[0][:300]
        try:
            return _fx_traced(module, inputs, keep)
        except Exception as exc:  # noqa: BLE001  (as above: the user's code can raise anything while traced)
            raise GraphError(f"{type(module).__name__}: cannot be traced: torch.export: {export_problem}; "
                             f"torch.fx: {one_line(str(exc))[:300]}") from None


@contextlib.contextmanager
def _torch_quiet() -> Iterator[None]:
    """torch's loggers and warnings silent: a failed trace logs its traceback and tracing warns
    about the user's code in torch's terms; the user gets one line instead."""
    names = ["torch", *(n for n in logging.Logger.manager.loggerDict if n.startswith("torch."))]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def outermost(module: nn.Module, keep: Keep) -> list[str]:
    """The paths of the submodules ``keep`` accepts that are not inside another one it accepts."""
    found: list[str] = []
    stack = [("", module)]
    while stack:
        prefix, parent = stack.pop()
        for name, child in parent.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if keep(child):
                found.append(path)
            else:
                stack.append((path, child))
    return sorted(found)


def source_line(stack_trace: str | None) -> str:
    """``file.py:LINE`` of the innermost frame of the user's code in a traced node's stack."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', stack_trace or "")
    users = [(path, line) for path, line in frames if not path.startswith(_TORCH_DIR)]
    return f"{Path(users[-1][0]).name}:{users[-1][1]}" if users else ""


# ----------------------------------------------------------------------------- torch.export
def _exported(module: nn.Module, inputs: tuple[torch.Tensor, ...], keep: Keep) -> Trace:
    whole = keep(module)
    kept = [] if whole else outermost(module, keep)
    program = torch.export.export(module, inputs, strict=False, preserve_module_call_signature=tuple(kept))
    return _ExportReader(module, program, kept, whole).read()


class _ExportReader:
    def __init__(self, module: nn.Module, program: torch.export.ExportedProgram, kept: list[str], whole: bool):
        self.module, self.program, self.whole = module, program, whole
        self.consts: dict[str, torch.Tensor] = {}
        self.inputs: list[str] = []
        self.info: dict[str, TensorInfo] = {}
        self.signatures = {entry.fqn: entry.signature for entry in program.module_call_graph
                           if entry.signature is not None and _CALL_NUMBER.sub("", entry.fqn) in kept}
        self._read_inputs()

    def _read_inputs(self) -> None:
        program = self.program
        for spec in program.graph_signature.input_specs:
            name = getattr(spec.arg, "name", None)
            if spec.kind == InputKind.USER_INPUT:
                self.inputs.append(name)
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                held = program.state_dict if spec.target in program.state_dict else program.constants
                self.consts[name] = held[spec.target].detach()
            else:
                raise GraphError(f"{type(self.module).__name__}: takes a {spec.kind.name.lower()} input, "
                                 "which NetCanvas cannot hold")
        for node in program.graph.nodes:
            if node.op == "get_attr":
                self.consts[node.name] = getattr(program.graph_module, node.target)
            value = node.meta.get("val")
            if isinstance(value, torch.Tensor) and node.name not in self.consts:
                self.info[node.name] = TensorInfo(tuple(int(d) for d in value.shape), value.dtype)

    def read(self) -> Trace:
        calls: list[Call] = []
        groups: dict[str, Call] = {}
        for node in self.program.graph.nodes:
            if node.op != "call_function" or _is_item(node):
                continue
            op = self._op(node)
            owner = self._owner(node)
            if owner is None:
                calls.append(op)
            elif owner in groups:
                groups[owner].inner.append(op)
            else:
                groups[owner] = self._module_call(owner, node)
                groups[owner].inner.append(op)
                calls.append(groups[owner])
        outputs = [self._arg_of(spec.arg) for spec in self.program.graph_signature.output_specs
                   if spec.kind.name == "USER_OUTPUT"]
        if self.whole and calls:
            calls = [Call(self.module, tuple(Value(n) for n in self.inputs), {}, tuple(o.name for o in outputs
                          if isinstance(o, Value)), (), inner=calls)]
        return Trace(self.inputs, calls, outputs, self.info, "torch.export")

    def _owner(self, node: fx.Node) -> str | None:
        """The kept module call that ``node`` happens in, if any."""
        return next((call for call in _scope(node) if call in self.signatures), None)

    def _module_call(self, call_id: str, node: fx.Node) -> Call:
        signature = self.signatures[call_id]
        args, kwargs = pytree.tree_unflatten(signature.inputs, signature.in_spec)
        scope = _scope(node)
        return Call(
            target=self.module.get_submodule(_CALL_NUMBER.sub("", call_id)),
            args=tuple(self._arg_of(a) for a in args),
            kwargs={k: self._arg_of(v) for k, v in kwargs.items()},
            outputs=tuple(a.name if isinstance(a, TensorArgument) else None for a in signature.outputs),
            scope=scope[: scope.index(call_id) + 1],
        )

    def _arg_of(self, spec: Any) -> Any:
        """A signature argument as a call argument: a value, a constant tensor or a plain value."""
        if not isinstance(spec, TensorArgument):
            return getattr(spec, "value", None)
        return self.consts.get(spec.name, Value(spec.name))

    def _op(self, node: fx.Node) -> Call:
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), self._value)
        return Call(node.target, args, kwargs, _outputs(node), _scope(node),
                    where=source_line(node.meta.get("stack_trace")), named=_named_args(node, self._value))

    def _value(self, node: fx.Node) -> Any:
        if node.name in self.consts:
            return self.consts[node.name]
        value = node.meta.get("val")
        return Value(node.name) if isinstance(value, torch.Tensor) else value


def _scope(node: fx.Node) -> tuple[str, ...]:
    """The module calls ``node`` happens in, outermost first: paths, with ``@N`` for a module's
    second, third… call (as torch.export numbers them)."""
    stack = node.meta.get("nn_module_stack") or {}
    calls = []
    for key, (path, _) in stack.items():
        number = _CALL_NUMBER.search(key)
        if path:
            calls.append(path + (number.group() if number else ""))
    return tuple(calls)


def _is_item(node: fx.Node) -> bool:
    """A ``getitem`` that picks one result of a multi-result op (named by that op's call)."""
    return node.target is operator.getitem and isinstance(node.args[0], fx.Node) and \
        isinstance(node.args[0].meta.get("val"), tuple | list)


def _outputs(node: fx.Node) -> tuple[str | None, ...]:
    value = node.meta.get("val")
    if not isinstance(value, tuple | list):
        return (node.name,)
    items = {user.args[1]: user.name for user in node.users if user.target is operator.getitem}
    return tuple(items.get(i) for i in range(len(value)))


def _named_args(node: fx.Node, convert: Callable[[fx.Node], Any]) -> dict[str, Any]:
    """An op's arguments by their schema names (defaults filled in), nodes converted; none for a
    target that is not an ATen op."""
    normal = None
    if isinstance(node.target, torch._ops.OpOverload):
        normal = normalize_function(node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True)
    if normal is None:
        return {}
    return {k: fx.node.map_arg(v, convert) for k, v in normal.kwargs.items()}


# ----------------------------------------------------------------------------- torch.fx
def _fx_traced(module: nn.Module, inputs: tuple[torch.Tensor, ...], keep: Keep) -> Trace:
    if keep(module):
        raise GraphError("a module kept whole needs torch.export")  # nothing to fall back to
    return _FxReader(module, inputs, keep).read()


class _LeafTracer(fx.Tracer):
    def __init__(self, keep: Keep):
        super().__init__()
        self.keep = keep

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return self.keep(m) or super().is_leaf_module(m, module_qualified_name)


class _FxReader:
    """torch.fx with the kept modules as leaves; every other call lowered to ATen with
    ``make_fx(pre_dispatch=True)``, which gives the ops torch.export gives."""

    def __init__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], keep: Keep):
        self.module = module
        self.graph = _LeafTracer(keep).trace(module)
        self.gm = fx.GraphModule(module, self.graph)
        self.values: dict[fx.Node, Any] = {}
        self.names: dict[fx.Node, Any] = {}  # fx node -> Value, constant or plain value
        self.info: dict[str, TensorInfo] = {}
        self.calls: list[Call] = []
        self.counts: dict[str, int] = {}
        self.inputs = inputs

    def read(self) -> Trace:
        placeholders = iter(self.inputs)
        names: list[str] = []
        outputs: list[Any] = []
        for node in self.graph.nodes:
            if node.op == "placeholder":
                self._set(node, next(placeholders), Value(node.name))
                names.append(node.name)
            elif node.op == "get_attr":
                value = _attribute(self.gm, node.target)
                self._set(node, value, value.detach() if isinstance(value, torch.Tensor) else value)
            elif node.op == "call_module":
                self._module_call(node)
            elif node.op in ("call_function", "call_method"):
                self._lowered(node)
            elif node.op == "output":
                outputs = list(pytree.tree_leaves(fx.node.map_arg(node.args[0], self.names.get)))
        return Trace(names, self.calls, outputs, self.info, "torch.fx")

    def _set(self, node: fx.Node, value: Any, name: Any) -> None:
        self.values[node] = value
        self.names[node] = name
        if isinstance(name, Value) and isinstance(value, torch.Tensor):
            self.info[name.name] = TensorInfo(tuple(value.shape), value.dtype)

    def _run(self, node: fx.Node) -> Any:
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), self.values.__getitem__)
        return self._call(node, args, kwargs)

    def _call(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        """Run ``node`` on ``args`` and ``kwargs``, as its graph would."""
        if node.op == "call_module":
            return self.gm.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    def _module_call(self, node: fx.Node) -> None:
        result = self._run(node)
        number = self.counts.get(node.target, 0)
        self.counts[node.target] = number + 1
        call_id = node.target + (f"@{number}" if number else "")
        parts = node.target.split(".")
        scope = (*(".".join(parts[:i]) for i in range(1, len(parts))), call_id)
        results = result if isinstance(result, tuple) else (result,)
        outputs = tuple(f"{node.name}__{i}" if len(results) > 1 else node.name for i in range(len(results)))
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), self.names.__getitem__)
        self.calls.append(Call(self.gm.get_submodule(node.target), args, kwargs, outputs, scope))
        self._set(node, result, Value(node.name) if len(results) == 1 else
                  tuple(Value(o) for o in outputs))
        for out, value in zip(outputs, results, strict=True):
            if isinstance(value, torch.Tensor):
                self.info[out] = TensorInfo(tuple(value.shape), value.dtype)

    def _lowered(self, node: fx.Node) -> None:
        """One fx call as the ATen ops it runs, their values named after it."""
        result = self._run(node)
        # The arguments as values and as names, flattened alike (a module's tuple of results included).
        fixed, spec = pytree.tree_flatten(fx.node.map_arg((node.args, node.kwargs), self.values.__getitem__))
        named = pytree.tree_leaves(fx.node.map_arg((node.args, node.kwargs), self.names.__getitem__))
        tensors = [i for i, (value, name) in enumerate(zip(fixed, named, strict=True))
                   if isinstance(value, torch.Tensor) and isinstance(name, Value)]

        def run(*xs: torch.Tensor) -> Any:
            given = list(fixed)
            for i, x in zip(tensors, xs, strict=True):
                given[i] = x
            args, kwargs = pytree.tree_unflatten(given, spec)
            return self._call(node, args, kwargs)

        lowered = make_fx(run, pre_dispatch=True)(*(fixed[i] for i in tensors))
        names: dict[fx.Node, Any] = {}
        placeholders = iter(tensors)
        scope = _scope(node)
        where = source_line(node.meta.get("stack_trace"))
        for inner in lowered.graph.nodes:
            if inner.op == "placeholder":
                names[inner] = named[next(placeholders)]
            elif inner.op == "get_attr":
                names[inner] = getattr(lowered, inner.target)
            elif inner.op == "call_function" and not _is_item(inner):
                self._lowered_op(node, inner, names, scope, where)
            elif inner.op == "output":
                self._set(node, result, fx.node.map_arg(inner.args[0], names.get))

    def _lowered_op(self, node: fx.Node, inner: fx.Node, names: dict[fx.Node, Any], scope: tuple[str, ...],
                    where: str) -> None:
        prefix = f"{node.name}__"
        value = inner.meta.get("val")
        if isinstance(value, tuple | list):
            outputs = tuple(None if o is None else prefix + o for o in _outputs(inner))
            for user in inner.users:
                names[user] = Value(prefix + user.name)
                item = value[user.args[1]]
                self.info[prefix + user.name] = TensorInfo(tuple(item.shape), item.dtype)
        else:
            outputs = (prefix + inner.name,)
            names[inner] = Value(prefix + inner.name) if isinstance(value, torch.Tensor) else value
            if isinstance(value, torch.Tensor):
                self.info[prefix + inner.name] = TensorInfo(tuple(value.shape), value.dtype)
        args, kwargs = fx.node.map_arg((inner.args, inner.kwargs), names.__getitem__)
        self.calls.append(Call(inner.target, args, kwargs, outputs, scope, where=where,
                               named=_named_args(inner, names.__getitem__)))


def _attribute(root: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(root.get_submodule(owner) if owner else root, name)
