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
"""

from __future__ import annotations

import contextlib
import functools
import gc
import heapq
import keyword
from dataclasses import dataclass, field

import networkx as nx
from pydantic import ValidationError
from torch import fx, nn

import blocks
from blocks import BlockSpec, Dtype, Params, Port, Shape, ShapeError
from graphcore.core.diagnostics import Diagnostic, error, warning
from graphcore.core.document import Edge, GraphDoc, Node
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


@dataclass(slots=True)
class NodeInfo:
    """What the analysis knows about one node; derived from the document, never stored in it."""

    node: Node
    spec: BlockSpec | None = None
    params: Params | None = None
    input_ports: tuple[Port, ...] | None = None
    problems: list[Diagnostic] = field(default_factory=list)  # id, type, params
    wiring: list[Diagnostic] = field(default_factory=list)  # edges and ports
    shape_problem: Diagnostic | None = None
    dtype_problems: tuple[Diagnostic, ...] = ()  # edges that bring a dtype their port does not take
    inputs: dict[str, Shape] | None = None  # per-sample shapes arriving at connected ports
    outputs: dict[str, Shape] | None = None  # per-sample shapes leaving each output port
    dtypes: dict[str, Dtype] | None = None  # dtype leaving each output port

    @property
    def output_ports(self) -> tuple[str, ...]:
        return self.spec.outputs if self.spec else ()

    def diagnostics(self) -> list[Diagnostic]:
        shape = [self.shape_problem] if self.shape_problem else []
        return [*self.problems, *self.wiring, *self.dtype_problems, *shape]

    def inferred(self) -> tuple:
        """What inference derives for this node, to tell whether an update changed it."""
        return self.outputs, self.dtypes, self.shape_problem, self.dtype_problems


@functools.lru_cache(maxsize=8192)
def check_id(node_id: str) -> Diagnostic | None:
    if not node_id.isidentifier() or not node_id.isascii():
        return error(node_id, "id is not a valid name",
                     hint="use letters, digits and _ only, not starting with a digit")
    if keyword.iskeyword(node_id) or keyword.issoftkeyword(node_id):
        return error(node_id, "id is a Python keyword", hint=f"rename it, e.g. to {node_id}_")
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
        by_param: dict[str, list[dict]] = {}
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
            node_id, f"param {name!r} = {raw.get(name)!r} is not valid: {reasons}",
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
        info.input_ports = spec.input_ports(info.params)
    elif not callable(spec.inputs):
        info.input_ports = spec.inputs
    if node.type == "input" and info.params is not None:
        name = info.params.name or node.id
        if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
            info.problems.append(error(node.id, f"input name {name!r} is not a valid argument name",
                                       hint="use letters, digits and _ only"))
    return info


class Analysis:
    """Diagnostics and shapes of one document; see the module docstring."""

    def __init__(self, doc: GraphDoc, *, library: Library | None = None,
                 input_shapes: dict[str, Shape] | None = None):
        """``library`` resolves ``subgraph:NAME`` types (default: ``doc.subgraphs``);
        ``input_shapes`` overrides the shapes of input nodes (how a subgraph is analysed
        with the shapes that reach it)."""
        self.doc = doc
        self.library = library or Library(doc.subgraphs)
        self.input_shapes = input_shapes or {}
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
        for node in self.doc.nodes:
            if node.id in self.nodes:
                self.graph_problems.append(error(node.id, "duplicate id: another node already has it",
                                                 hint="give every node its own id"))
                continue
            self.nodes[node.id] = check_node(node, self.library)
        self._wire()
        self._order()
        for node_id in self.order:
            self._infer(node_id)

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
            if src.spec and edge.src_port not in src.output_ports:
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
        live = {nid for nid, info in self.nodes.items() if info.node.type == "output"}
        stack = list(live)
        while stack:
            for src in predecessors[stack.pop()]:
                if src not in live:
                    live.add(src)
                    stack.append(src)
        has_output = len(live) > 0
        for nid in self.nodes:
            if has_output and nid not in live:
                self.graph_problems.append(warning(nid, "does not reach any output, so it is left out of the model",
                                                   hint="connect it towards an output, or delete it"))
        self.live = live

    def _infer(self, node_id: str) -> None:
        info = self.nodes[node_id]
        info.inputs = info.outputs = info.dtypes = info.shape_problem = None
        info.dtype_problems = ()
        if info.params is None or info.input_ports is None:
            return
        edges = self.in_edges[node_id]
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
        except Exception as exc:  # a bug in a shape rule: say so, but keep the editor alive
            info.shape_problem = error(node_id, f"internal error in the {info.node.type} shape rule: "
                                       f"{type(exc).__name__}: {exc}", hint="please report this graph")

    def _infer_dtypes(self, node_id: str, info: NodeInfo) -> None:
        """Output dtypes from the dtypes arriving; an error per port that gets the wrong one."""
        edges = self.in_edges[node_id]
        arriving = self._arriving(edges, "dtypes")
        if arriving is None:
            return
        info.dtypes = info.spec.infer_dtypes(info.params, arriving)
        info.dtype_problems = tuple(
            self._dtype_problem(node_id, port.name, port.dtype, arriving[port.name], edges[port.name])
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

    # ----------------------------------------------------------------- results
    @property
    def diagnostics(self) -> list[Diagnostic]:
        found = [d for info in self.nodes.values() for d in info.diagnostics()]
        return self.graph_problems + found

    @property
    def ok(self) -> bool:
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
        info = self.nodes.get(node_id)
        own = info.diagnostics() if info else []
        return own + [d for d in self.graph_problems if d.node_id == node_id]

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
            return self._propagate(node_id)

    def _propagate(self, node_id: str) -> set[str]:
        changed = {node_id}
        heap = [(self.rank[node_id], node_id)] if node_id in self.rank else []
        queued = {node_id}
        while heap:
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
        return changed

    def rebuild(self) -> set[str]:
        """Full re-analysis after a structural edit; returns the ids whose results changed."""
        before = {nid: (info.outputs, info.dtypes, info.diagnostics()) for nid, info in self.nodes.items()}
        graph_before = list(self.graph_problems)
        self._build()
        after = {nid: (info.outputs, info.dtypes, info.diagnostics()) for nid, info in self.nodes.items()}
        changed = {nid for nid in before.keys() | after.keys() if before.get(nid) != after.get(nid)}
        moved = {d.node_id for d in set(graph_before) ^ set(self.graph_problems) if d.node_id is not None}
        return changed | moved


@contextlib.contextmanager
def gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _label(edge: Edge) -> str:
    return f"edge {edge.src}.{edge.src_port} -> {edge.dst}.{edge.dst_port}"


def _ports_hint(names, kind: str) -> str:
    return f"its {kind}: {', '.join(names)}" if names else f"it has no {kind}"
