"""Validation and shape inference, in one pass over the graph, with an incremental update.

``Analysis(doc)`` checks every node (id, type, params), every edge, the ports, cycles and
the presence of inputs and outputs, then infers every port's per-sample shape and dtype
(float, or int for ids) from the blocks' rules in topological order, and checks that each
edge brings the dtype its port takes. A node whose upstream already has a problem is not
inferred and gets no second, derived complaint: each problem is reported once, where it
starts. Dtypes need no shapes, so they are inferred past a shape problem.

The editor keeps one ``Analysis`` per document: after a param edit it calls
``update_node(id)``, which re-checks that node and re-infers only its descendants, stopping
along each path as soon as the shapes come out unchanged.

Cost and size: a subgraph is analysed once per input signature (see ``subgraphs``), so an
analysis grows with the document, not with the expanded graph. Each node's weights are sized on
the meta device, without allocating them; a tensor over ``LIMITS.max_tensor_elements``, weights
over ``LIMITS.max_model_bytes`` or a graph that expands past ``LIMITS.max_expanded_nodes`` is an
error naming the node. A ``Deadline`` stops an analysis cleanly (a ``GraphError``) once passed.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import heapq
import keyword
import reprlib
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import cast

import networkx as nx
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from torch import fx, nn

import blocks
from blocks import BlockSpec, Dtype, Params, Port, Shape, ShapeError
from blocks.io import InputParams
from graphcore.core import limits
from graphcore.core.diagnostics import Diagnostic, GraphError, error, warning
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.limits import Weights, size_text
from graphcore.core.subgraphs import Library

# Ids become attribute names on the compiled model, so they must not shadow its own
# (methods, and instance attributes such as ``training`` or ``_modules``).
RESERVED_IDS = frozenset(dir(fx.GraphModule(nn.Module(), fx.Graph()))) | {"doc", "init", "save", "fuse", "self"}


_BLOCKS_ONLY = Library()

# What each dtype is, and how to get it, for the message when a port gets the other one.
_DTYPE_WORDS: dict[str, str] = {"float": "a float tensor", "int": "an int tensor (ids)"}
_DTYPE_HINTS: dict[str, str] = {
    "int": "feed it ids: an input with dtype int64 (class ids, token ids or timesteps)",
    "float": "ids become float vectors through an embedding block; or give the input dtype float32",
}

# A bad param value is quoted in its message: shortened, since it can be a megabyte of nested lists.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxlong = _QUOTE.maxother = 60
_QUOTE.maxlevel = 3


class Deadline:
    """When analyses must give up: ``Analysis(doc, deadline=Deadline(5))``, or ``with Deadline(5):``
    around code that makes analyses (an ``EditSession``). It is checked between nodes, so a late
    analysis stops cleanly with a ``GraphError`` (nothing is killed); a subgraph's analysis
    inherits the deadline of the analysis that made it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self._tokens: list[Token[Deadline | None]] = []

    def check(self) -> None:
        """Raise ``GraphError`` once the deadline has passed."""
        if time.monotonic() > self.at:
            raise GraphError(f"analysis took longer than {self.seconds:g} s")

    def __enter__(self) -> Deadline:
        self._tokens.append(_DEADLINE.set(self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _DEADLINE.reset(self._tokens.pop())


_DEADLINE: ContextVar[Deadline | None] = ContextVar("netcanvas_analysis_deadline", default=None)


@dataclass(slots=True)
class NodeInfo:
    """What the analysis knows about one node; derived from the document, never stored in it."""

    node: Node
    spec: BlockSpec | None = None
    params: Params | None = None
    input_ports: tuple[Port, ...] | None = None
    output_ports: tuple[str, ...] | None = None  # None while unknown: no type, or ports that follow bad params
    problems: list[Diagnostic] = field(default_factory=list)  # id, type, params
    wiring: list[Diagnostic] = field(default_factory=list)  # edges and ports
    shape_problem: Diagnostic | None = None
    dtype_problems: tuple[Diagnostic, ...] = ()  # edges that bring a dtype their port does not take
    inputs: dict[str, Shape] | None = None  # per-sample shapes arriving at connected ports
    outputs: dict[str, Shape] | None = None  # per-sample shapes leaving each output port
    dtypes: dict[str, Dtype] | None = None  # dtype leaving each output port
    weights: Weights | None = None  # its parameters and buffers, once its shapes are known
    size_problem: Diagnostic | None = None  # weights too large to make
    signature: tuple | None = None  # type and params, hashable: what its results depend on besides its inputs

    def diagnostics(self) -> list[Diagnostic]:
        """Every problem of this node: id, type, params, wiring, dtypes, shape and size."""
        if not (self.problems or self.wiring or self.dtype_problems or self.shape_problem or self.size_problem):
            return []  # most nodes: asked once per node an edit re-infers
        inferred = [p for p in (self.shape_problem, self.size_problem) if p]
        return [*self.problems, *self.wiring, *self.dtype_problems, *inferred]

    def inferred(self) -> tuple:
        """What inference derives for this node, to tell whether an update changed it."""
        return self.outputs, self.dtypes, self.shape_problem, self.dtype_problems, self.size_problem


@functools.lru_cache(maxsize=8192)
def check_id(node_id: str) -> Diagnostic | None:
    """The problem with a node id, or None: it must be a plain identifier the compiled model does not use."""
    if not node_id.isidentifier() or not node_id.isascii():
        return error(node_id, "id is not a valid name",
                     hint="use letters, digits and _ only, not starting with a digit")
    if keyword.iskeyword(node_id) or keyword.issoftkeyword(node_id):
        renamed = "node" if node_id == "_" else f"{node_id}_"  # "__" would be refused below
        return error(node_id, "id is a Python keyword", hint=f"rename it, e.g. to {renamed}")
    if node_id.startswith("__"):
        return error(node_id, "id starts with '__', which Python mangles",
                     hint="rename it without the leading underscores")
    if node_id in RESERVED_IDS:
        return error(node_id, "id clashes with a name the model already uses", hint=f"rename it, e.g. to {node_id}_")
    return None


def check_params(node_id: str, spec: BlockSpec, raw: dict) -> tuple[Params | None, list[Diagnostic]]:
    """Validate a node's raw params against its spec; problems name the param and the fix."""
    try:
        return spec.params.model_validate(raw), []
    except ValidationError as exc:
        by_param: dict[str, list[ErrorDetails]] = {}
        for err in exc.errors():
            by_param.setdefault(str(err["loc"][0]) if err["loc"] else "params", []).append(err)
    fields = spec.params.model_fields
    problems = []
    for name, errs in by_param.items():
        if errs[0]["type"] == "extra_forbidden":
            guess = blocks.nearest(name, fields)
            hint = f"did you mean {guess!r}?" if guess else f"{spec.type} takes: {', '.join(fields) or 'no params'}"
            problems.append(error(node_id, f"unknown param {name!r} for {spec.type}", hint=hint))
            continue
        reasons = " or ".join(dict.fromkeys(e["msg"][0].lower() + e["msg"][1:] for e in errs))
        description = fields[name].description if name in fields else None
        problems.append(error(
            node_id, f"param {name!r} = {_QUOTE.repr(raw.get(name))} is not valid: {reasons}",
            hint=f"{name}: {description}" if description else None,
        ))
    return None, problems


def check_node(node: Node, library: Library | None = None) -> NodeInfo:
    """Everything about a node that needs no other node: id, type, params, ports."""
    library = library or _BLOCKS_ONLY
    info = NodeInfo(node)
    if (problem := check_id(node.id)) is not None:
        info.problems.append(problem)
    spec = library.get(node.type)
    if spec is None:
        message, hint = library.unknown(node.type)
        info.problems.append(error(node.id, message, hint=hint))
        return info
    info.spec = spec
    info.params, problems = check_params(node.id, spec, node.params)
    info.problems += problems
    if info.params is not None:
        info.input_ports, info.output_ports = spec.input_ports(info.params), spec.output_ports(info.params)
    else:
        info.input_ports = None if callable(spec.inputs) else spec.inputs
        info.output_ports = None if callable(spec.outputs) else spec.outputs
    if node.type == "input" and isinstance(info.params, InputParams):
        name = info.params.name or node.id
        if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
            info.problems.append(error(node.id, f"input name {name!r} is not a valid argument name",
                                       hint="use letters, digits and _ only"))
    return info


def upstream(targets: Iterable[str], predecessors: Mapping[str, Iterable[str]]) -> set[str]:
    """The ``targets`` and every node whose results reach one of them (``predecessors``: node id ->
    the ids feeding it). Iterative, so a long chain cannot exhaust the stack."""
    found = set(targets)
    stack = list(found)
    while stack:
        for src in predecessors.get(stack.pop(), ()):
            if src not in found:
                found.add(src)
                stack.append(src)
    return found


class Analysis:
    """Diagnostics and shapes of one document; see the module docstring."""

    def __init__(self, doc: GraphDoc, *, library: Library | None = None,
                 input_shapes: dict[str, Shape] | None = None, deadline: Deadline | None = None):
        """``library`` resolves ``subgraph:NAME`` types (default: ``doc.subgraphs``);
        ``input_shapes`` overrides the shapes of input nodes (how a subgraph is analysed
        with the shapes that reach it); ``deadline`` bounds this analysis (by default, the
        one of an enclosing ``with Deadline(…)``, if any; later updates have only that one)."""
        self.doc = doc
        self.library = library or Library(doc.subgraphs)
        self.input_shapes = input_shapes or {}
        with deadline or contextlib.nullcontext():
            self._build()

    # ----------------------------------------------------------------- full pass
    def _build(self) -> None:
        # The pass allocates many small, acyclic objects; a cyclic GC run in the middle of
        # it would scan the whole heap for nothing (it doubled the time on a 1,000-node graph).
        with gc_paused():
            self._build_all()

    def _build_all(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.graph_problems: list[Diagnostic] = []
        deadline = _DEADLINE.get()
        for node in self.doc.nodes:
            if deadline:
                deadline.check()
            if node.id in self.nodes:
                self.graph_problems.append(error(node.id, "duplicate id: another node already has it",
                                                 hint="give every node its own id"))
                continue
            self.nodes[node.id] = check_node(node, self.library)
        self._wire()
        self._order()
        for node_id in self.order:
            if deadline:
                deadline.check()
            self._infer(node_id)
        self._check_budgets()

    def _wire(self) -> None:
        """Check edges and ports; build the in-edge and successor indexes."""
        self.in_edges: dict[str, dict[str, tuple[str, str]]] = {nid: {} for nid in self.nodes}
        self.successors: dict[str, list[str]] = {nid: [] for nid in self.nodes}
        for edge in self.doc.edges:
            src, dst = self.nodes.get(edge.src), self.nodes.get(edge.dst)
            if src is None or dst is None:
                missing = edge.src if src is None else edge.dst
                owner = edge.dst if dst is not None else (edge.src if src is not None else None)
                self._problem(owner, error(owner, f"{_label(edge)}: node {missing!r} does not exist",
                                           hint="remove the edge or add the node"))
                continue
            if src.output_ports is not None and edge.src_port not in src.output_ports:
                self._problem(src.node.id, error(
                    src.node.id, f"{_label(edge)}: {src.node.type} has no output port {edge.src_port!r}",
                    hint=_ports_hint(src.output_ports, "outputs"), port=edge.src_port))
                continue
            if dst.input_ports is not None and edge.dst_port not in {p.name for p in dst.input_ports}:
                self._problem(dst.node.id, error(
                    dst.node.id, f"{_label(edge)}: {dst.node.type} has no input port {edge.dst_port!r}",
                    hint=_ports_hint([p.name for p in dst.input_ports], "inputs"), port=edge.dst_port))
                continue
            taken = self.in_edges[edge.dst].get(edge.dst_port)
            if taken is not None:
                self._problem(dst.node.id, error(
                    dst.node.id, f"input port {edge.dst_port!r} has two edges (from {taken[0]!r} and {edge.src!r})",
                    hint="a port takes one edge: remove one, or merge them with an add or concat block",
                    port=edge.dst_port))
                continue
            self.in_edges[edge.dst][edge.dst_port] = (edge.src, edge.src_port)
            self.successors[edge.src].append(edge.dst)
        for nid, info in self.nodes.items():
            for port in info.input_ports or ():
                if not port.optional and port.name not in self.in_edges[nid]:
                    info.wiring.append(error(nid, f"input port {port.name!r} has no edge",
                                               hint="connect a block's output to it", port=port.name))
        for kind in ("input", "output"):
            if not any(info.node.type == kind for info in self.nodes.values()):
                self.graph_problems.append(error(None, f"the graph has no {kind} node",
                                                 hint=f"add an {kind!r} block and connect it"))

    def _order(self) -> None:
        """Topological order (Kahn); the nodes of each cycle get one error naming them."""
        indegree = {nid: len(ins) for nid, ins in self.in_edges.items()}
        ready = [nid for nid, d in indegree.items() if d == 0]
        order = []
        while ready:
            nid = ready.pop()
            order.append(nid)
            for succ in self.successors[nid]:
                indegree[succ] -= 1
                if indegree[succ] == 0:
                    ready.append(succ)
        self.order = order
        self.rank = {nid: i for i, nid in enumerate(order)}
        if len(order) < len(self.nodes):
            self._report_cycles()
        self._report_dead_ends()

    def _report_cycles(self) -> None:
        rest = nx.DiGraph((src, dst) for dst, ins in self.in_edges.items() for src, _ in ins.values()
                          if src not in self.rank and dst not in self.rank)
        for component in nx.strongly_connected_components(rest):
            if len(component) == 1 and not rest.has_edge(*(2 * tuple(component))):
                continue
            cycle = [src for src, _ in nx.find_cycle(rest.subgraph(component))]
            path = " -> ".join(cycle + cycle[:1])
            self.graph_problems.append(error(cycle[0], f"the graph has a cycle: {path}",
                                             hint="remove one of these edges; data must flow one way"))

    def _report_dead_ends(self) -> None:
        """Warn about nodes whose results never reach an output (they are not compiled)."""
        predecessors = {nid: [src for src, _ in ins.values()] for nid, ins in self.in_edges.items()}
        live = upstream((nid for nid, info in self.nodes.items() if info.node.type == "output"), predecessors)
        has_output = len(live) > 0
        for nid in self.nodes:
            if has_output and nid not in live:
                self.graph_problems.append(warning(nid, "does not reach any output, so it is left out of the model",
                                                   hint="connect it towards an output, or delete it"))
        self.live = live

    def _infer(self, node_id: str) -> None:
        info = self.nodes[node_id]
        info.inputs = info.outputs = info.dtypes = info.shape_problem = info.weights = info.size_problem = None
        info.dtype_problems = ()
        if info.params is None or info.input_ports is None:
            return
        assert info.spec is not None, "params are checked against a spec"
        edges = self.in_edges[node_id]
        if node_id not in self.input_shapes and self._infer_known(info, edges):
            return  # known results imply that its required ports are connected: they were then
        if any(not p.optional and p.name not in edges for p in info.input_ports):
            return
        self._infer_dtypes(node_id, info)
        if node_id in self.input_shapes:
            info.outputs = {"out": tuple(self.input_shapes[node_id])}
            return
        inputs = self._arriving(edges, "outputs")
        if inputs is None:
            return  # the problem is upstream and is reported there
        info.inputs = inputs
        try:
            info.outputs = info.spec.infer(info.params, inputs)
        except ShapeError as exc:
            info.shape_problem = error(node_id, exc.message, hint=exc.hint, port=exc.port)
        except GraphError:
            raise  # a deadline passed in the analysis of a subgraph: this one stops too
        except Exception as exc:  # a bug in a shape rule: say so, but keep the editor alive
            info.shape_problem = error(node_id, f"internal error in the {info.node.type} shape rule: "
                                       f"{type(exc).__name__}: {exc}", hint="please report this graph")
        else:
            self._weigh(node_id, info)
            self._remember(info)

    def _infer_known(self, info: NodeInfo, edges: dict[str, tuple[str, str]]) -> bool:
        """Take the results of a node inferred before with the same type, params, input shapes and
        dtypes, and no problem (``_remember``). An edit upstream re-infers every node after it, and
        a network repeats a few kinds of layer: most of them are answered here."""
        shapes, dtypes = [], []
        for port, (src, src_port) in edges.items():  # _arriving, both at once: this runs per node per edit
            upstream = self.nodes[src]
            if upstream.outputs is None or upstream.dtypes is None:
                return False
            shapes.append((port, upstream.outputs[src_port]))
            dtypes.append((port, upstream.dtypes[src_port]))
        known = self.library.inferred.get((self._signature(info), tuple(shapes), tuple(dtypes)))
        if known is None or known[2].largest[0] > limits.LIMITS.max_tensor_elements:
            return False
        info.inputs = dict(shapes)
        info.outputs, info.dtypes, info.weights = known
        return True

    def _remember(self, info: NodeInfo) -> None:
        """Keep a node's results for ``_infer_known`` when it has no problem (problems name their node)."""
        if info.weights is None or info.dtype_problems or info.dtypes is None or info.outputs is None:
            return
        assert info.inputs is not None, "inferred nodes only"
        dtypes = self.dtypes_arriving(info.node.id)
        if dtypes is None:
            return
        memo = self.library.inferred
        if len(memo) >= _INFERRED_KEPT:
            memo.clear()
        memo[(self._signature(info), tuple(info.inputs.items()), tuple(dtypes.items()))] = (
            info.outputs, info.dtypes, info.weights)

    @staticmethod
    def _signature(info: NodeInfo) -> tuple:
        """The node's type and params as a hashable key, made once per checked node."""
        if info.signature is None:
            assert info.spec is not None and info.params is not None, "checked nodes only"
            info.signature = limits.signature(info.spec, info.params)
        return info.signature

    def _weigh(self, node_id: str, info: NodeInfo) -> None:
        """Size the node's weights without allocating them; an error for a tensor over the budget."""
        assert info.spec is not None and info.params is not None and info.inputs is not None, "inferred nodes only"
        try:
            weights = self.library.weights(info.spec, info.params, info.inputs)
        except Exception as exc:  # a size that overflows while counting, or a bug in the block's factory
            info.size_problem = _unsizable(node_id, info.node.type, exc)
            return
        numbers, tensor = weights.largest
        cap = limits.LIMITS.max_tensor_elements
        if numbers > cap:  # reported here, and left out of the model's total: reported once
            info.size_problem = error(node_id, f"its {tensor} would hold {numbers:,} numbers, more than the {cap:,} "
                                      "one tensor may hold", hint=_SMALLER)
            return
        info.weights = weights

    def _infer_dtypes(self, node_id: str, info: NodeInfo) -> None:
        """Output dtypes from the dtypes arriving; an error per port that gets the wrong one."""
        edges = self.in_edges[node_id]
        arriving = self._arriving(edges, "dtypes")
        if arriving is None:
            return
        assert info.spec is not None and info.input_ports is not None, "_infer calls this for checked nodes only"
        info.dtypes = info.spec.infer_dtypes(info.params, arriving)
        # cast: the condition below leaves out the ports that take "any"
        info.dtype_problems = tuple(
            self._dtype_problem(node_id, port.name, cast(Dtype, port.dtype), arriving[port.name], edges[port.name])
            for port in info.input_ports
            if port.name in arriving and port.dtype not in ("any", arriving[port.name]))

    def _arriving(self, edges: dict[str, tuple[str, str]], attr: str) -> dict | None:
        """What arrives at each connected port, read from the upstream ``NodeInfo.<attr>``
        ("outputs": shapes, "dtypes"); None when an upstream node has none."""
        arriving = {}
        for port_name, (src, src_port) in edges.items():
            upstream = getattr(self.nodes[src], attr)
            if upstream is None:
                return None
            arriving[port_name] = upstream[src_port]
        return arriving

    @staticmethod
    def _dtype_problem(node_id: str, port: str, takes: Dtype, got: Dtype, source: tuple[str, str]) -> Diagnostic:
        src, src_port = source
        where = src if src_port == "out" else f"{src}.{src_port}"
        return error(node_id, f"port {port!r} takes {_DTYPE_WORDS[takes]}, got {got} from {where!r}",
                     hint=_DTYPE_HINTS[takes], port=port)

    def _problem(self, node_id: str | None, problem: Diagnostic) -> None:
        if node_id is not None and node_id in self.nodes:
            self.nodes[node_id].wiring.append(problem)
        else:
            self.graph_problems.append(problem)

    def _check_budgets(self, reinferred: set[str] | None = None) -> None:
        """The caps on the whole model: nodes once expanded, bytes of weights. Re-checked after
        every update, since a param (a repeat, a width) changes them (``reinferred``: the nodes an
        update inferred again, whose weights alone are counted again). Then the graph-wide problems
        are indexed by the node they name (a node's view reads them: one lookup, not a scan)."""
        self._count_weight_bytes(reinferred)
        self.budget_problems = [p for p in (self._expanded_problem(), self._weights_problem()) if p]
        self._named: dict[str, list[Diagnostic]] = {}
        for problem in self.graph_problems + self.budget_problems:
            if problem.node_id is not None:
                self._named.setdefault(problem.node_id, []).append(problem)

    def _expanded_problem(self) -> Diagnostic | None:
        cap = limits.LIMITS.max_expanded_nodes
        if not self.library.subgraphs and len(self.nodes) <= cap:
            return None
        sizes = {nid: self.library.expanded_size(info.node) for nid, info in self.nodes.items()}
        total = sum(sizes.values())
        if total <= cap:
            return None
        biggest = max(sizes, key=sizes.__getitem__)
        if sizes[biggest] == 1:
            return error(None, f"the graph has {total:,} nodes, more than the {cap:,} a model may have",
                         hint="split it into smaller graphs")
        return error(biggest, f"the graph expands to {total:,} nodes, more than the {cap:,} a model may have",
                     hint=f"this node alone expands to {sizes[biggest]:,}; use fewer copies or smaller subgraphs")

    def _count_weight_bytes(self, reinferred: set[str] | None) -> None:
        """Keep the bytes of each compiled node's weights and their total: after an update, only the
        nodes inferred again are counted again, so an edit costs what it changed, not the graph's size."""
        if reinferred is None:
            self._weight_bytes = {nid: weights.bytes for nid, weights in self._model_weights()}
            self._weight_total = sum(self._weight_bytes.values())
            return
        for nid in reinferred:
            info = self.nodes.get(nid)
            now = info.weights.bytes if info is not None and info.weights is not None and nid in self.live else 0
            self._weight_total += now - self._weight_bytes.pop(nid, 0)
            if now:
                self._weight_bytes[nid] = now

    def _weights_problem(self) -> Diagnostic | None:
        cap = limits.LIMITS.max_model_bytes
        if self._weight_total <= cap:
            return None
        sizes = [(weights.bytes, nid) for nid, weights in self._model_weights()]
        total = sum(n_bytes for n_bytes, _ in sizes)
        biggest, node_id = max(sizes, key=lambda size: size[0])  # the first of the largest
        return error(node_id, f"the model's weights would take {size_text(total)}, more than the "
                     f"{size_text(cap)} budget", hint=f"this block alone takes {size_text(biggest)}; {_SMALLER}")

    def _model_weights(self) -> list[tuple[str, Weights]]:
        """The weights of each node that reaches an output (what is compiled), in execution order."""
        return [(nid, info.weights) for nid in self.order
                if nid in self.live and (info := self.nodes[nid]).weights is not None]

    # ----------------------------------------------------------------- results
    @property
    def diagnostics(self) -> list[Diagnostic]:
        """Every problem in the graph: graph-wide ones first, then each node's."""
        found = [d for info in self.nodes.values() for d in info.diagnostics()]
        return self.graph_problems + self.budget_problems + found

    def weights(self) -> Weights:
        """The weights of the model: those of every node that reaches an output."""
        return limits.total(weights for _, weights in self._model_weights())

    @property
    def ok(self) -> bool:
        """Whether the graph has no errors (warnings allowed)."""
        return not any(d.severity == "error" for d in self.diagnostics)

    def shapes(self) -> dict[tuple[str, str], tuple[int | None, ...]]:
        """Output shapes of every inferred port, with the batch dim as ``None``."""
        return {(nid, port): (None, *shape)
                for nid, info in self.nodes.items() if info.outputs
                for port, shape in info.outputs.items()}

    def dtypes_arriving(self, node_id: str) -> dict[str, Dtype] | None:
        """The dtype arriving at each connected input port of a node; None when one is unknown."""
        return self._arriving(self.in_edges[node_id], "dtypes")

    def node_diagnostics(self, node_id: str) -> list[Diagnostic]:
        """The problems of one node, its own and the graph-wide ones that name it."""
        info = self.nodes.get(node_id)
        own = info.diagnostics() if info else []
        return own + self._named.get(node_id, [])

    # ----------------------------------------------------------------- incremental
    def update_node(self, node_id: str) -> set[str]:
        """Re-check a node whose type or params changed; re-infer only downstream of it.

        Returns the ids whose shapes or problems changed. A change of ports (a new type, or
        a new ``n`` on a variadic block) changes the wiring, so it falls back to ``rebuild``.
        """
        old = self.nodes[node_id]
        new = check_node(old.node, self.library)
        if (new.input_ports, new.output_ports) != (old.input_ports, old.output_ports):
            return self.rebuild()
        new.wiring = old.wiring
        self.nodes[node_id] = new
        with gc_paused():
            changed, reinferred = self._propagate(node_id)
        budget_before = self.budget_problems
        self._check_budgets(reinferred)
        return changed | {d.node_id for d in set(budget_before) ^ set(self.budget_problems) if d.node_id is not None}

    def _propagate(self, node_id: str) -> tuple[set[str], set[str]]:
        """Infer ``node_id`` and what follows it again, as far as its results change; returns the
        ids whose results changed, and every id inferred again."""
        changed = {node_id}
        heap = [(self.rank[node_id], node_id)] if node_id in self.rank else []
        queued = {node_id}
        deadline = _DEADLINE.get()
        while heap:
            if deadline:
                deadline.check()
            _, nid = heapq.heappop(heap)
            info = self.nodes[nid]
            before = info.inferred()
            self._infer(nid)
            after = info.inferred()
            if after != before:
                changed.add(nid)
            if after[:2] != before[:2] or nid == node_id:  # what successors read: shapes and dtypes
                for succ in self.successors[nid]:
                    if succ not in queued and succ in self.rank:
                        queued.add(succ)
                        heapq.heappush(heap, (self.rank[succ], succ))
        return changed, queued

    def rebuild(self) -> set[str]:
        """Full re-analysis after a structural edit; returns the ids whose results changed."""
        before = {nid: (info.outputs, info.dtypes, info.diagnostics()) for nid, info in self.nodes.items()}
        graph_before = self.graph_problems + self.budget_problems
        self._build()
        after = {nid: (info.outputs, info.dtypes, info.diagnostics()) for nid, info in self.nodes.items()}
        changed = {nid for nid in before.keys() | after.keys() if before.get(nid) != after.get(nid)}
        graph_after = self.graph_problems + self.budget_problems
        moved = {d.node_id for d in set(graph_before) ^ set(graph_after) if d.node_id is not None}
        return changed | moved


@contextlib.contextmanager
def gc_paused():
    """Turn the cyclic garbage collector off for the block, and back on after if it was on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_INFERRED_KEPT = 8192  # node signatures remembered per library; a graph repeats a few kinds of layer
_SMALLER = "make it smaller: fewer channels, features or embeddings"


def _unsizable(node_id: str, type_id: str, exc: Exception) -> Diagnostic:
    """The problem of a block whose weights could not be made on the meta device."""
    if isinstance(exc, OverflowError) or "overflow" in str(exc).lower():
        return error(node_id, "its weights would be too large to count (a size overflows 64 bits)", hint=_SMALLER)
    first_line = next(iter(str(exc).splitlines()), "")[:200]
    return error(node_id, f"internal error sizing the {type_id} block: {type(exc).__name__}: {first_line}",
                 hint="please report this graph")


def _label(edge: Edge) -> str:
    return f"edge {edge.src}.{edge.src_port} -> {edge.dst}.{edge.dst_port}"


def _ports_hint(names, kind: str) -> str:
    return f"its {kind}: {', '.join(names)}" if names else f"it has no {kind}"
