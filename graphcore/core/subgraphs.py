"""Subgraphs: composite blocks that a user makes from a selection of nodes.

A subgraph is a graph document stored under ``doc.subgraphs[NAME]`` and used as a node of
type ``subgraph:NAME``. Its ``input`` nodes become the node's input ports and its ``output``
nodes its output ports: with one input the port is ``in``, with one output ``out`` (so it
wires like any block); with several, each port is named after its input/output node's id.

Shapes are not frozen at grouping time: the subgraph is re-inferred with the shapes that
actually arrive, like a function, so one subgraph can be reused at several sizes. Dtypes
are fixed by the subgraph itself: each input port takes its input node's dtype, and each
output has the dtype that reaches its output node. The ``repeat`` param stacks it N times; after the first copy the
shape and dtype must stay the same.
Subgraphs may use other subgraphs of the same file (one library per file), but not themselves.
A subgraph compiles to its own ``nn.Module`` (a ``GraphModel`` named after it).

Cost: a subgraph is analysed once per input signature (the shapes that reach it, and its
repeat), however often and however deeply it is used, so analysis grows with the document,
not with the expanded graph. What can only be known expanded is computed from counts per
subgraph type: a type nested deeper than ``LIMITS.max_nesting`` levels, or that would expand to
more than ``LIMITS.max_expanded_nodes`` nodes, is refused on the node that uses it. The depth
is bounded before any analysis recurses into a subgraph, so no document can exhaust the stack.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import networkx as nx
from pydantic import Field, ValidationError
from torch import nn

import blocks
from blocks import BlockSpec, Dtype, Params, Port, Shape, ShapeError
from blocks.spec import PortDtype
from graphcore.core import limits
from graphcore.core.diagnostics import GraphError, errors
from graphcore.core.document import GraphDoc, Node
from graphcore.core.limits import Weights

if TYPE_CHECKING:
    from graphcore.core.analysis import Analysis

PREFIX = "subgraph:"
T = TypeVar("T")


class SubgraphParams(Params):
    """Params of every subgraph node: how many copies to stack."""

    repeat: int = Field(1, ge=1, le=64, description="stack it this many times (the shape must stay the same)")


def boundary(sub: GraphDoc, kind: str) -> list[tuple[str, str]]:
    """(port name, node id) of a subgraph's inputs or outputs, in document order."""
    ids = [n.id for n in sub.nodes if n.type == kind]
    default = "in" if kind == "input" else "out"
    return [(default, ids[0])] if len(ids) == 1 else [(node_id, node_id) for node_id in ids]


def repeat_of(node: Node) -> int:
    """A subgraph node's repeat; 1 while its params are not valid (validation reports them)."""
    try:
        return SubgraphParams.model_validate(node.params).repeat
    except ValidationError:
        return 1


def standalone(doc: GraphDoc, name: str) -> GraphDoc:
    """Subgraph ``name`` of ``doc`` as a document of its own, carrying the subgraphs it uses (directly
    or through others): it validates, compiles, summarises and exports like any graph, its inputs
    taking the shapes that its input nodes declare. How a network of a multi-network file (MuZero's
    dynamics, a GAN's generator) is compiled alone."""
    if name not in doc.subgraphs:
        raise GraphError(f"graph {doc.name!r} has no subgraph named {name!r} "
                         f"(subgraphs: {', '.join(doc.subgraphs) or 'none'})")
    used: set[str] = set()
    todo = [name]
    while todo:  # a loop, not recursion: the nesting is the user's
        for node in doc.subgraphs[todo.pop()].nodes:
            inner = node.type.removeprefix(PREFIX)
            if node.type.startswith(PREFIX) and inner in doc.subgraphs and inner not in used:
                used.add(inner)
                todo.append(inner)
    library = {k: v.model_copy(deep=True) for k, v in doc.subgraphs.items() if k in used and k != name}
    return doc.subgraphs[name].model_copy(update={"name": name, "subgraphs": library}, deep=True)


@dataclass(frozen=True)
class Structure:
    """What the file's subgraphs are, read from the documents alone, without analysing them:
    which use themselves (directly or through others), how many levels each nests (itself
    included), and how many nodes each expands to. A use of an unknown or self-using subgraph
    counts as one plain node: it is refused where it is used."""

    cyclic: frozenset[str]
    depth: Mapping[str, int]
    size: Mapping[str, int]


def structure(subgraphs: Mapping[str, GraphDoc]) -> Structure:
    """Depths and sizes over the graph of which subgraph uses which, leaves first (one pass,
    no recursion: the nesting is the user's)."""
    uses = nx.DiGraph()
    uses.add_nodes_from(subgraphs)
    for name, sub in subgraphs.items():
        uses.add_edges_from((name, node.type[len(PREFIX):]) for node in sub.nodes
                            if node.type.startswith(PREFIX) and node.type[len(PREFIX):] in subgraphs)
    cyclic = frozenset(name for component in nx.strongly_connected_components(uses)
                       if len(component) > 1 or uses.has_edge(*(2 * tuple(component))) for name in component)
    depth: dict[str, int] = {}
    size: dict[str, int] = {}
    for name in reversed(list(nx.topological_sort(uses.subgraph(set(subgraphs) - cyclic)))):
        nodes = subgraphs[name].nodes
        used = [(node.type[len(PREFIX):], node) for node in nodes  # known and not cyclic: sized already
                if node.type.startswith(PREFIX) and node.type[len(PREFIX):] in depth]
        depth[name] = 1 + max((depth[u] for u, _ in used), default=0)
        size[name] = len(nodes) - len(used) + sum(size[u] * repeat_of(node) for u, node in used)
    return Structure(cyclic, depth, size)


class Library:
    """Resolves node types: the registered blocks, then the file's own subgraphs.

    One library serves a whole file, at every level of nesting, so that each subgraph type is
    resolved once and its analyses are shared by all its uses."""

    def __init__(self, subgraphs: dict[str, GraphDoc] | None = None, outer: tuple[str, ...] = ()):
        self.subgraphs = subgraphs or {}
        self.outer = outer  # the subgraphs an editor has opened around this level: not usable here
        self._resolved: dict[str, Subgraph | None] = {}
        # A node's results by (type and params, input shapes, input dtypes), for nodes without
        # problems (see ``Analysis._infer_known``); kept per library, since subgraph types change with it.
        self.inferred: dict[tuple, tuple] = {}

    @functools.cached_property
    def structure(self) -> Structure:
        """Nesting depth, expanded size and self-use of every subgraph of the file, worked out once."""
        return structure(self.subgraphs)

    def get(self, type_id: str) -> BlockSpec[Any] | None:
        """The spec of a block type or ``subgraph:NAME``; None when it is unknown or refused (see ``unknown``)."""
        if not type_id.startswith(PREFIX):
            return blocks.get(type_id)
        subgraph = self.subgraph(type_id)
        return subgraph.spec if subgraph else None

    def subgraph(self, type_id: str) -> Subgraph | None:
        """The usable subgraph of type ``subgraph:NAME``, or None."""
        if type_id not in self._resolved:
            name = type_id[len(PREFIX):]
            self._resolved[type_id] = Subgraph(self, name) if self._refusal(name) is None else None
        return self._resolved[type_id]

    def unknown(self, type_id: str) -> tuple[str, str]:
        """Message and hint for a type that ``get`` could not resolve."""
        if not type_id.startswith(PREFIX):
            guess = blocks.nearest(type_id, blocks.type_ids())
            return f"unknown block type {type_id!r}", (f"did you mean {guess!r}?" if guess else
                                                      "see the palette for the block types")
        refusal = self._refusal(type_id[len(PREFIX):])
        assert refusal is not None, "get resolves every subgraph that is not refused"
        return refusal

    def _refusal(self, name: str) -> tuple[str, str] | None:
        """Why subgraph ``name`` cannot be used here (message, hint); None when it can."""
        if name not in self.subgraphs:
            return f"no subgraph named {name!r} in this file", f"subgraphs here: {', '.join(self.subgraphs) or 'none'}"
        facts, caps = self.structure, limits.LIMITS
        if name in self.outer or name in facts.cyclic:
            return f"subgraph {name!r} contains itself", "a subgraph cannot use itself, directly or through another"
        if facts.depth[name] > caps.max_nesting:
            return (f"subgraph {name!r} nests {facts.depth[name]} levels deep, more than the {caps.max_nesting} "
                    "a model may have", "ungroup some of its levels")
        if facts.size[name] > caps.max_expanded_nodes:
            return (f"subgraph {name!r} expands to {facts.size[name]:,} nodes, more than the "
                    f"{caps.max_expanded_nodes:,} a model may have", "use it fewer times, or with fewer copies")
        return None

    def expanded_size(self, node: Node) -> int:
        """How many nodes ``node`` stands for once every subgraph is expanded (1 for a block)."""
        subgraph = self.subgraph(node.type) if node.type.startswith(PREFIX) else None
        return subgraph.size * repeat_of(node) if subgraph else 1

    def weights(self, spec: BlockSpec[Any], params: Params, inputs: dict[str, Shape]) -> Weights:
        """The weights of a node: summed over a subgraph's copies, measured for a block."""
        subgraph = self._resolved.get(spec.type) if spec.type.startswith(PREFIX) else None
        if subgraph is None:
            return limits.measure(spec, params, inputs)
        return subgraph.expand(cast(SubgraphParams, params), inputs).weights


def input_dtype(node: Node) -> PortDtype:
    """The dtype an input node gives its tensor; "any" while its params are not valid (the
    analysis of the subgraph reports them)."""
    spec = blocks.get("input")
    assert spec is not None, "blocks.io registers the input block"
    try:
        params = spec.params.model_validate(node.params)
    except ValidationError:
        return "any"
    dtypes = spec.infer_dtypes(params, {})
    assert dtypes is not None, "an input's dtype comes from its params alone"
    return dtypes["out"]


@dataclass
class Expansion:
    """A subgraph node expanded for one input signature: the analysis of each copy, in order
    (copies that get the same shapes share one), and the shapes leaving it."""

    copies: list[Analysis]
    outputs: dict[str, Shape]

    @functools.cached_property
    def weights(self) -> Weights:
        """The weights of all the copies (``repeat``), each copy's counted once."""
        each = {id(a): a.weights() for a in self.copies}
        return limits.total(each[id(a)] for a in self.copies)

    @functools.cached_property
    def macs(self) -> int:
        """Multiply-accumulates of all the copies for one sample."""
        from graphcore.core.summary import summary  # the summary reads the analysis, which reads this module

        each = {id(a): summary(a.doc, analysis=a).total_macs for a in self.copies}
        return sum(each[id(a)] for a in self.copies)


class Subgraph:
    """One subgraph type of a file: its block spec, and its analyses remembered per input
    signature (failures included, so that a broken subgraph used twice per level is not
    re-analysed twice per level)."""

    def __init__(self, library: Library, name: str):
        self.library = library
        self.name = name
        self.doc = library.subgraphs[name]
        self.size = library.structure.size[name]
        self.inputs, self.outputs = boundary(self.doc, "input"), boundary(self.doc, "output")
        self._analyses: dict[tuple, Analysis | ShapeError] = {}
        self._expansions: dict[tuple, Expansion | ShapeError] = {}
        # cast: boundary's ids are the subgraph's own nodes, so doc.node finds each one
        self.ports = tuple(Port(port, dtype=input_dtype(cast(Node, self.doc.node(nid)))) for port, nid in self.inputs)
        self.spec: BlockSpec[SubgraphParams] = BlockSpec(
            type=f"{PREFIX}{name}",
            category="subgraph",
            doc=f"Subgraph {name!r} ({len(self.doc.nodes)} nodes).",
            params=SubgraphParams,
            inputs=self.ports,
            outputs=tuple(port for port, _ in self.outputs),
            shape=lambda params, ins: self.expand(params, ins).outputs,
            output_dtype=lambda params, ins: self.output_dtypes,
            build=self.build,
            macs=lambda params, ins, outs: self.expand(params, ins).macs,
        )

    @functools.cached_property
    def output_dtypes(self) -> dict[str, Dtype] | None:
        """The dtype reaching each output node; they do not depend on the outer graph, since the
        input ports take only their input nodes' dtypes. None when the inside cannot tell."""
        from graphcore.core.analysis import Analysis  # analysis resolves subgraphs through this module

        analysis = Analysis(self.doc, library=self.library)
        arriving = [(analysis.dtypes_arriving(nid) or {}).get("in") for _, nid in self.outputs]
        known = cast("list[Dtype]", arriving)  # read only when None is not among them
        return None if None in arriving else {port: dtype for (port, _), dtype in zip(self.outputs, known)}

    def expand(self, params: SubgraphParams, ins: Mapping[str, Shape]) -> Expansion:
        """The copies for these input shapes (raises ``ShapeError`` for a problem inside)."""
        key = (params.repeat, self._signature(ins))
        return _remembered(self._expansions, key, lambda: self._expand(params.repeat, ins))

    def _expand(self, repeat: int, ins: Mapping[str, Shape]) -> Expansion:
        if repeat > 1 and (len(self.inputs) != 1 or len(self.outputs) != 1):
            raise ShapeError("repeat needs a subgraph with one input and one output", hint="set repeat to 1")
        if repeat > 1 and (dtypes := self.output_dtypes) not in (None, {"out": self.ports[0].dtype}):
            raise ShapeError(f"repeat: each copy takes {self.ports[0].dtype} but gives {dtypes['out']}",
                             hint="repeat stacks copies that keep the dtype; set repeat to 1")
        shapes, copies = dict(ins), []
        for i in range(repeat):
            analysis = self._analyse(shapes)
            outs = self._leaving(analysis)
            if i and outs["out"] != shapes["in"]:
                raise ShapeError(f"repeat: copy {i + 1} would change the shape {shapes['in']} -> {outs['out']}",
                                 hint="repeat stacks copies that keep the shape; set repeat to 1")
            copies.append(analysis)
            shapes = {"in": outs["out"]} if repeat > 1 else outs
        return Expansion(copies, outs)

    def _analyse(self, shapes: Mapping[str, Shape]) -> Analysis:
        return _remembered(self._analyses, self._signature(shapes), lambda: self._analysed(shapes))

    def _analysed(self, shapes: Mapping[str, Shape]) -> Analysis:
        from graphcore.core.analysis import Analysis  # analysis resolves subgraphs through this module

        analysis = Analysis(self.doc, library=self.library,
                            input_shapes={nid: shapes[port] for port, nid in self.inputs})
        problems = errors(analysis.diagnostics)
        if problems:
            first = problems[0]
            where = f"node {first.node_id!r}: " if first.node_id else ""
            raise ShapeError(f"inside subgraph {self.name!r}: {where}{first.message}",
                             hint=first.hint or "open the subgraph to fix it")
        return analysis

    def _leaving(self, analysis: Analysis) -> dict[str, Shape]:
        """The shape reaching each output node (a clean analysis has inferred them all)."""
        shapes = {}
        for port, nid in self.outputs:
            arriving = analysis.nodes[nid].inputs
            assert arriving is not None, "a clean analysis inferred every node"
            shapes[port] = arriving["in"]
        return shapes

    def _signature(self, shapes: Mapping[str, Shape]) -> tuple:
        return tuple(tuple(shapes[port]) for port, _ in self.inputs)

    def build(self, params: SubgraphParams, ins: dict[str, Shape]) -> nn.Module:
        """The compiled subgraph for these input shapes: one model, or a Sequential of ``repeat`` copies."""
        from graphcore.core.compiler import compile  # the compiler reads the analysis, which reads this module

        models = [compile(self.doc, analysis=a) for a in self.expand(params, ins).copies]
        return models[0] if len(models) == 1 else nn.Sequential(*models)


def _remembered(memory: dict[tuple, T | ShapeError], key: tuple, compute: Callable[[], T]) -> T:
    """``compute()`` once per key; a ``ShapeError`` is remembered too, and raised afresh each time."""
    if key not in memory:
        try:
            memory[key] = compute()
        except ShapeError as exc:
            memory[key] = exc
    found = memory[key]
    if isinstance(found, ShapeError):
        raise ShapeError(found.message, hint=found.hint, port=found.port)
    return found
