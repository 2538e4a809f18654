"""Open a PyTorch module as an editable graph: ``from_torch(module, inputs) -> (GraphDoc, state_dict)``.

The module is traced (``graphcore.interchange.torch_trace``: ``torch.export``, or ``torch.fx``
where that fails) on the example inputs, in eval mode. A submodule call becomes one block where
its module is one: a NetCanvas block's own class or a torch.nn class that a block builds is
matched through the block registry (``graphcore.interchange.module_blocks``), and other classes
through ``MODULES``; every other call is an ATen op converted through ``OPS``
(``graphcore.interchange.torch_ops`` registers both). The weights travel with the blocks, and
the ``nn.Module`` hierarchy becomes subgraphs (``hierarchy.group_by_scope``), laid out in layers.

A call that no block can do is listed with every other such call, each with where it is made, in
one ``GraphError``; so is an imported graph whose outputs differ from the module's.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils import _pytree as pytree

import blocks
from graphcore.core.analysis import RESERVED_IDS, Analysis, check_id, upstream
from graphcore.core.compiler import compile
from graphcore.core.diagnostics import GraphError, error, errors
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.names import Namespace, identifier
from graphcore.interchange.module_blocks import match_module, matchable
from graphcore.interchange.torch_trace import Call, Trace, Value, trace

TRACE_BATCH = 2
"""The batch the module is traced with: at least 2, so that the batch dim is not mistaken for a
dim of size 1 (``x.view(x.size(0), -1)`` is then ``view(2, -1)``)."""
TOLERANCE = 1e-4
"""The imported graph's outputs must equal the module's within TOLERANCE · max(1, |y|max)."""
INPUT_DTYPES = {torch.float32: "float32", torch.int64: "int64"}
MAX_LISTED = 40
"""Calls without a block listed in one error, at most (a model may repeat one op hundreds of times)."""

OpConverter = Callable[["Importer", Call], None]
ModuleConverter = Callable[["Importer", Call], None]
OPS: dict[Any, OpConverter] = {}
"""ATen op (an ``OpOverload``) -> its converter."""
MODULES: dict[type[nn.Module], ModuleConverter] = {}
"""Module class -> its converter, for classes that no block builds but one computes
(``nn.MultiheadAttention``). Classes that blocks build need no entry."""


class Refused(Exception):
    """A call that no block can do: the reason, one line."""


NO_BLOCK = "no block"


@dataclass(frozen=True)
class Problem:
    """A call that no block can do: the module call it is made in (or the module's name), what it
    calls (``aten.matmul``, ``nn.LSTM``), why, and the user's source line where known."""

    place: str
    what: str
    why: str
    at: str = ""

    def __str__(self) -> str:
        at = f" at {self.at}" if self.at else ""
        return f"{self.place} ({self.what}{at}): {self.why}"


class CallsRefused(GraphError):
    """A module that cannot be imported: every call no block can do, one line each (the same call
    at the same place once); ``to_dict()`` gives them as data, as ``onnx_import.ImportRefused`` does."""

    def __init__(self, name: str, problems: list[Problem]):
        self.problems = list(dict.fromkeys(problems))
        count = len(self.problems)
        lines = [error(None, f"{name}: {count} call{'s' if count > 1 else ''} with no NetCanvas block "
                             "(each below: where it is called, what it calls, why)")]
        lines += [error(None, str(p)) for p in self.problems[:MAX_LISTED]]
        if count > MAX_LISTED:
            lines.append(error(None, f"… and {count - MAX_LISTED} more"))
        super().__init__(lines)

    def to_dict(self) -> dict:
        """The calls as plain data, for JSON: ops and modules with no block (with counts), and calls refused."""
        unmapped = collections.Counter(p.what for p in self.problems if p.why == NO_BLOCK)
        return {"unmapped": [{"op": op, "count": count} for op, count in unmapped.items()],
                "refused": [{"op": p.what, "node": p.place, "why": p.why, "at": p.at}
                            for p in self.problems if p.why != NO_BLOCK]}


def converts(*ops: Any) -> Callable[[OpConverter], OpConverter]:
    """Register the converter of ATen ops (one converter per op)."""
    def register(fn: OpConverter) -> OpConverter:
        for op in ops:
            if op in OPS:
                raise ValueError(f"{op} already has a converter")
            OPS[op] = fn
        return fn
    return register


def converts_module(cls: type[nn.Module]) -> Callable[[ModuleConverter], ModuleConverter]:
    """Register the converter of a module class that no block builds."""
    def register(fn: ModuleConverter) -> ModuleConverter:
        if cls in MODULES:
            raise ValueError(f"{cls.__name__} already has a converter")
        MODULES[cls] = fn
        return fn
    return register


def from_torch(module: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], *,
               flat: bool = False) -> tuple[GraphDoc, dict[str, torch.Tensor]]:
    """The graph of ``module`` and its weights (a state_dict that ``gc.compile(doc)`` loads with
    strict=True), traced on ``example_inputs`` (one tensor or one per ``forward`` argument, the
    batch first). ``flat=True`` leaves out the subgraphs that keep the module hierarchy.

    Calls with no block are one ``GraphError`` (``CallsRefused``) that lists them all; the imported
    graph is checked to compute what the module computes. The block classes that a file NetCanvas
    exported carries import as their blocks when the module is built by ``torch_load.load_module``
    (which records their constructor arguments); built otherwise, they import as their ops."""
    name = type(module).__name__
    inputs = _batched(name, example_inputs)
    with _eval(module):
        traced = trace(module, inputs, keep=lambda m: type(m) in MODULES or matchable(type(m)))
        doc, weights, scopes = Importer(name, traced).run()
        _check_outputs(doc, weights, module, inputs)
    if not flat:
        from graphcore.interchange.hierarchy import group_by_scope, layered_layout

        doc, weights = group_by_scope(doc, weights, scopes)
        doc = layered_layout(doc)
    return doc, weights


def _batched(name: str, example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The example inputs with a batch of at least ``TRACE_BATCH``; refused where not tensors of a
    dtype NetCanvas inputs have."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs:
        raise GraphError(f"{name}: needs at least one example input")
    batched = []
    for i, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor) or x.dtype not in INPUT_DTYPES or x.dim() == 0:
            what = f"a {x.dtype} tensor of shape {list(x.shape)}" if isinstance(x, torch.Tensor) else \
                f"a {type(x).__name__}"
            raise GraphError(f"{name}: example input {i} is {what}; NetCanvas inputs are float32 or int64 "
                             "tensors with the batch first")
        if x.shape[0] < TRACE_BATCH:
            x = x[torch.arange(TRACE_BATCH) % x.shape[0]]
        batched.append(x.detach())
    return tuple(batched)


@contextlib.contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode, with each submodule's own mode given back afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def _check_outputs(doc: GraphDoc, weights: dict[str, torch.Tensor], module: nn.Module,
                   inputs: tuple[torch.Tensor, ...]) -> None:
    """Refuse an imported graph whose outputs are not the module's (a NetCanvas bug)."""
    model = compile(doc).eval()
    model.load_state_dict(weights, strict=True)
    expected = [y.cpu() for y in pytree.tree_leaves(module(*inputs)) if isinstance(y, torch.Tensor)]
    got = pytree.tree_leaves(model(*(x.cpu() for x in inputs)))
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        difference = _difference(want, have) if want.shape == have.shape else math.inf
        if difference > TOLERANCE:
            raise GraphError(f"{doc.name}: the imported graph's output {i} differs from the module's by "
                             f"{difference:.3g} (a module that draws random numbers differs every run; else "
                             "this is a NetCanvas bug: please report it with the module)")


def _difference(want: torch.Tensor, have: torch.Tensor) -> float:
    """The largest difference, relative to the largest value where that is above 1."""
    if not want.numel():
        return 0.0
    want, have = want.double(), have.double()
    return float((want - have).abs().max() / max(1.0, float(want.abs().max())))


# ----------------------------------------------------------------------------- the importer
class Importer:
    """Builds the document from a trace. Converters add blocks through ``add`` and read their
    call's arguments through ``value``, ``weight`` and ``shape``; they raise ``Refused``."""

    def __init__(self, name: str, traced: Trace):
        self.name = name
        self.trace = traced
        self.ids = Namespace(RESERVED_IDS)
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.state: dict[str, torch.Tensor] = {}
        self.scopes: dict[str, tuple[str, ...]] = {}
        self.values: dict[str, list[tuple[str, str]]] = {}  # traced value -> the (node id, port)s giving it
        self.lost: set[str] = set()  # values of calls that failed: their users are not reported again
        self.folded: dict[str, torch.Tensor] = {}  # values computed from constants alone
        self.absorbed: set[str] = set()  # results of later calls that a block already gives (``absorb``)
        self.call: Call | None = None  # the call being converted
        self._used: set[str] | None = None

    # -- driver
    def run(self) -> tuple[GraphDoc, dict[str, torch.Tensor], dict[str, tuple[str, ...]]]:
        """The document, its weights, and each node's module path."""
        for name in self.trace.inputs:
            self._input(name)
        problems = self._convert(self.trace.calls)
        if problems:
            raise CallsRefused(self.name, problems)
        self._outputs()
        doc = self._pruned()
        problems = errors(Analysis(doc).diagnostics)
        if problems:
            raise GraphError([error(p.node_id, f"{self.name}: imported graph: {p.message}", p.hint, p.port)
                              for p in problems])
        kept = {node.id for node in doc.nodes}
        return doc, self.state, {k: v for k, v in self.scopes.items() if k in kept}

    def _convert(self, calls: list[Call]) -> list[Problem]:
        problems: list[Problem] = []
        for call in calls:
            if call.outputs and call.outputs[0] in self.absorbed:
                continue  # an earlier call's block computes it too (a class token's positions)
            call = self._resolved(call)
            if any(v.name in self.lost for v in _values(call)):  # after a call that failed
                self.lost.update(o for o in call.outputs if o)
                if not isinstance(call.target, nn.Module) and call.target not in OPS:
                    problems.append(self._unknown(call))  # this one would fail too, whatever it gets
                continue
            if not _values(call):
                if self._fills(call) or any(self.used(name) for name in call.outputs):
                    self._fold(call)
                continue
            if not any(self.used(name) for name in call.outputs):
                continue  # nothing reads its results (an assertion, an unused attention map)
            problem = self._module(call) if isinstance(call.target, nn.Module) else self._op(call)
            if problem is not None:
                problems.append(problem)
                self.lost.update(o for o in call.outputs if o)
        return problems

    def _resolved(self, call: Call) -> Call:
        """``call`` with the values computed from constants alone given as those constants."""
        def constant(arg: Any) -> Any:
            return self.folded.get(arg.name, arg) if isinstance(arg, Value) else arg

        args, kwargs, named = pytree.tree_map(constant, (call.args, call.kwargs, call.named))
        return dataclasses.replace(call, args=args, kwargs=kwargs, named=named)

    def _fills(self, call: Call) -> bool:
        """Does the call write into a constant computed here (Swin's mask, filled in slices), which a
        later call reads? A write into the module's own tensors is left undone: importing changes no module."""
        written = call.args[0] if call.args else None
        return isinstance(call.target, torch._ops.OpOverload) and call.target._schema.is_mutable and \
            any(written is value for value in self.folded.values())

    def _fold(self, call: Call) -> None:
        """Compute a call on constants alone (``torch.ones(3)``, ``self.scale * 2``) now."""
        result = call.target(*call.args, **call.kwargs)
        results = result if isinstance(result, tuple | list) else (result,)
        for name, value in zip(call.outputs, results, strict=False):
            if name is not None and isinstance(value, torch.Tensor):
                self.folded[name] = value.detach()

    def _module(self, call: Call) -> Problem | None:
        module = call.target
        assert isinstance(module, nn.Module)
        try:
            self.call = call
            converter = MODULES.get(type(module), _matched)
            converter(self, call)
            return None
        except Refused as exc:
            reason = str(exc)
        if call.inner and not self._convert(call.inner):
            return None  # its ops, one by one, are blocks
        return Problem(self._place(call), _class_name(module), reason)

    def _op(self, call: Call) -> Problem | None:
        converter = OPS.get(call.target)
        if converter is None:
            return self._unknown(call)
        try:
            self.call = call
            converter(self, call)
            return None
        except Refused as exc:
            return Problem(self._place(call), _op_name(call.target), str(exc), call.where)

    def _unknown(self, call: Call) -> Problem:
        return Problem(self._place(call), _op_name(call.target), NO_BLOCK, call.where)

    def _place(self, call: Call) -> str:
        return call.scope[-1] if call.scope else self.name

    # -- helpers for converters
    def value(self, arg: Any, what: str = "input") -> Value:
        """``arg`` as a computed tensor; a constant there is refused."""
        if not isinstance(arg, Value):
            raise Refused(f"takes a constant as its {what}; NetCanvas blocks take computed tensors there")
        return arg

    def weight(self, arg: Any, what: str) -> torch.Tensor | None:
        """``arg`` as a constant tensor (a weight), or None where absent; a computed one is refused."""
        if isinstance(arg, Value):
            raise Refused(f"computes its {what}; NetCanvas holds {what}s as weights")
        return arg

    def used(self, name: str | None) -> bool:
        """Is the traced value ``name`` used by a call or returned?"""
        if self._used is None:
            self._used = {v.name for call in self._all_calls() for v in _values(call)}
            self._used |= {v.name for v in pytree.tree_leaves(self.trace.outputs) if isinstance(v, Value)}
        return name in self._used

    def sole_user(self, value: Value) -> Call | None:
        """The one op call that reads ``value`` (its constants given), where nothing else does: no
        other call, no module call around it, not the module's outputs."""
        if any(v == value for v in pytree.tree_leaves(self.trace.outputs)):
            return None
        users = [call for call in self._all_calls() if value in _values(call)]
        if len(users) != 1 or isinstance(users[0].target, nn.Module):
            return None
        return self._resolved(users[0])

    def absorb(self, later: Call) -> None:
        """The block just added for this call computes ``later`` as well (a call that reads only
        this call's result and constants): ``later``'s result is that block's, and it is not converted."""
        call = self.call
        assert call is not None and call.outputs[0] is not None and later.outputs[0] is not None
        self.values[later.outputs[0]] = self.values[call.outputs[0]]
        self.absorbed.add(later.outputs[0])

    def shape(self, value: Value) -> tuple[int, ...]:
        """The full shape of a traced value, the batch first."""
        return self.trace.info[value.name].shape

    def dtype(self, value: Value) -> torch.dtype:
        """The dtype of a traced value."""
        return self.trace.info[value.name].dtype

    def add(self, block: str, params: dict[str, Any], inputs: Sequence[Value] | dict[str, Value],
            weights: dict[str, torch.Tensor | None] | None = None, outputs: Sequence[str] = ("out",)) -> str:
        """Add a block fed by ``inputs`` (a list for ports ``in``, or ``in0`` …; or port -> value) with
        ``weights`` (its state_dict, None entries left out); the call's results are its ``outputs`` ports."""
        call = self.call
        assert call is not None, "converters run inside a call"
        node_id = self._node(call, block, params, inputs, weights)
        for name, port in zip(call.outputs, outputs, strict=False):
            if name is not None:
                self.values.setdefault(name, []).append((node_id, port))
        return node_id

    def step(self, block: str, params: dict[str, Any], inputs: Sequence[Value] | dict[str, Value],
             weights: dict[str, torch.Tensor | None] | None = None) -> Value:
        """Add a block on the way to the call's result (a call that several blocks do, as a roll is
        slices and a concat), fed as ``add``'s are; its result, to feed the next one (a value whose
        shape the trace does not hold: the converter knows it)."""
        call = self.call
        assert call is not None, "converters run inside a call"
        node_id = self._node(call, block, params, inputs, weights)
        value = Value(f"{node_id}#out")  # '#' is in no traced name
        self.values[value.name] = [(node_id, "out")]
        return value

    def alias(self, value: Value) -> None:
        """The call's result is ``value`` itself (a copy, a no-op)."""
        call = self.call
        assert call is not None and call.outputs[0] is not None, "converters run inside a call"
        self.values[call.outputs[0]] = self.values[value.name]

    # -- building
    def _node(self, call: Call, block: str, params: dict[str, Any], inputs: Sequence[Value] | dict[str, Value],
              weights: dict[str, torch.Tensor | None] | None) -> str:
        if not isinstance(inputs, dict):
            inputs = {"in": inputs[0]} if len(inputs) == 1 else {f"in{i}": v for i, v in enumerate(inputs)}
        node_id = self._node_id(call, block)
        self.nodes.append(Node(id=node_id, type=block, params=_without_defaults(block, params)))
        self.scopes[node_id] = call.scope
        for port, value in inputs.items():
            self._edge(value, node_id, port)
        for key, tensor in (weights or {}).items():
            if tensor is not None:
                self.state[f"{node_id}.{key}"] = tensor.detach().to("cpu", copy=True)
        return node_id

    def _node_id(self, call: Call, block: str) -> str:
        base = call.scope[-1] if call.scope and isinstance(call.target, nn.Module) else \
            ".".join((*call.scope[-1:], _op_name(call.target).removeprefix("aten.").rstrip("_")))
        node_id = self.ids.name(identifier(base, block))
        return node_id if check_id(node_id) is None else self.ids.name(block)

    def _input(self, name: str) -> None:
        info = self.trace.info[name]
        if info.dtype not in INPUT_DTYPES or not info.shape or 0 in info.shape:
            raise GraphError(f"{self.name}: input {name!r} of shape {list(info.shape)} and {info.dtype} cannot "
                             "be a NetCanvas input (float32 or int64, a batch and no empty dims)")
        node_id = self.ids.name(identifier(name, "x"))
        if check_id(node_id) is not None:
            node_id = self.ids.name("x")
        params: dict[str, Any] = {"shape": list(info.shape[1:])}
        if info.dtype == torch.int64:
            params["dtype"] = "int64"
        self.nodes.append(Node(id=node_id, type="input", params=params))
        self.values[name] = [(node_id, "out")]

    def _outputs(self) -> None:
        results = [v for v in self.trace.outputs if isinstance(v, Value) and v.name not in self.folded]
        if len(results) != len(self.trace.outputs):
            raise GraphError(f"{self.name}: returns something other than tensors computed from its inputs")
        for i, value in enumerate(results):
            node_id = self.ids.name("y" if len(results) == 1 else f"y{i}")
            self.nodes.append(Node(id=node_id, type="output"))
            self._edge(value, node_id, "in")

    def _edge(self, value: Value, dst: str, port: str) -> None:
        src, src_port = self._source(value, port)
        self.edges.append(Edge(src=src, src_port=src_port, dst=dst, dst_port=port))

    def _source(self, value: Value, port: str) -> tuple[str, str]:
        """Where ``value`` comes from. A block that returns one tensor on two ports (a U-Net stage
        without downsampling: out and skip) gives it from the port named like the one it feeds."""
        sources = self.values[value.name]
        return next((s for s in sources if s[1] == port), sources[0])

    def _all_calls(self) -> Iterator[Call]:
        """Every call of the trace, the ops inside module calls too."""
        stack = list(self.trace.calls)
        while stack:
            call = stack.pop()
            yield call
            stack.extend(call.inner)

    def _pruned(self) -> GraphDoc:
        """Drop blocks whose results reach no output."""
        feeding: dict[str, list[str]] = {}
        for edge in self.edges:
            feeding.setdefault(edge.dst, []).append(edge.src)
        live = upstream((n.id for n in self.nodes if n.type == "output"), feeding)
        nodes = [n for n in self.nodes if n.id in live or n.type == "input"]
        edges = [e for e in self.edges if e.dst in live]
        self.state = {k: v for k, v in self.state.items() if k.partition(".")[0] in live}
        return GraphDoc(name=self.name, nodes=nodes, edges=edges, meta={"imported_from": f"torch: {self.name}"})


def _without_defaults(block: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as a hand-written graph holds them: those at their default left out (params that
    are not valid are kept as they are, for the analysis to name)."""
    spec = blocks.get(block)
    assert spec is not None, f"converters add registered blocks ({block!r} is not one)"
    try:
        return spec.params.model_validate(params).model_dump(exclude_defaults=True)
    except ValidationError:
        return params


def _values(call: Call) -> list[Value]:
    return [v for v in pytree.tree_leaves((call.args, call.kwargs)) if isinstance(v, Value)]


def _matched(imp: Importer, call: Call) -> None:
    """A module that a block builds: the block the registry matches, with the module's weights."""
    module = call.target
    assert isinstance(module, nn.Module)
    args = [imp.value(a, f"argument {i}") for i, a in enumerate(call.args)]
    kwargs = {k: imp.value(v, f"argument {k!r}") for k, v in call.kwargs.items() if v is not None}
    match = match_module(module, [imp.shape(a)[1:] for a in args], {k: imp.shape(v)[1:] for k, v in kwargs.items()})
    if isinstance(match, str):
        raise Refused(match)
    inputs = {port: args[key] if isinstance(key, int) else kwargs[key] for key, port in match.ports.items()}
    imp.add(match.type, match.params, inputs, dict(module.state_dict()), match.outputs)


def _class_name(module: nn.Module) -> str:
    cls = type(module)
    return f"nn.{cls.__name__}" if getattr(nn, cls.__name__, None) is cls else f"{cls.__module__}.{cls.__qualname__}"


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", None) or str(target)
    packet = getattr(target, "overloadpacket", None)
    return f"aten.{packet.__name__}" if packet is not None else name


from graphcore.interchange import torch_ops  # noqa: E402, F401  (registers the converters)
