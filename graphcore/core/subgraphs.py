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
"""

from __future__ import annotations

import functools

from pydantic import Field, ValidationError
from torch import nn

import blocks
from blocks import BlockSpec, Dtype, Params, Port, Shape, ShapeError
from blocks.spec import PortDtype
from graphcore.core.diagnostics import errors
from graphcore.core.document import GraphDoc, Node

PREFIX = "subgraph:"


class SubgraphParams(Params):
    repeat: int = Field(1, ge=1, le=64, description="stack it this many times (the shape must stay the same)")


def boundary(sub: GraphDoc, kind: str) -> list[tuple[str, str]]:
    """(port name, node id) of a subgraph's inputs or outputs, in document order."""
    ids = [n.id for n in sub.nodes if n.type == kind]
    default = "in" if kind == "input" else "out"
    return [(default, ids[0])] if len(ids) == 1 else [(node_id, node_id) for node_id in ids]


class Library:
    """Resolves node types: the registered blocks, then the file's own subgraphs."""

    def __init__(self, subgraphs: dict[str, GraphDoc] | None = None, outer: tuple[str, ...] = ()):
        self.subgraphs = subgraphs or {}
        self.outer = outer  # the subgraphs we are inside of, to refuse recursion
        self._specs: dict[str, BlockSpec | None] = {}

    def get(self, type_id: str) -> BlockSpec | None:
        if not type_id.startswith(PREFIX):
            return blocks.get(type_id)
        if type_id not in self._specs:
            name = type_id[len(PREFIX):]
            usable = name in self.subgraphs and name not in self.outer
            self._specs[type_id] = subgraph_spec(self, name) if usable else None
        return self._specs[type_id]

    def unknown(self, type_id: str) -> tuple[str, str]:
        """Message and hint for a type that ``get`` could not resolve."""
        if not type_id.startswith(PREFIX):
            guess = blocks.nearest(type_id, blocks.type_ids())
            return f"unknown block type {type_id!r}", (f"did you mean {guess!r}?" if guess else
                                                      "see the palette for the block types")
        name = type_id[len(PREFIX):]
        if name in self.outer:
            return f"subgraph {name!r} contains itself", "a subgraph cannot use itself, directly or through another"
        known = ", ".join(self.subgraphs) or "none"
        return f"no subgraph named {name!r} in this file", f"subgraphs here: {known}"

    def inside(self, name: str) -> Library:
        return Library(self.subgraphs, (*self.outer, name))


def input_dtype(node: Node) -> PortDtype:
    """The dtype an input node gives its tensor; "any" while its params are not valid (the
    analysis of the subgraph reports them)."""
    spec = blocks.get("input")
    try:
        params = spec.params.model_validate(node.params)
    except ValidationError:
        return "any"
    return spec.infer_dtypes(params, {})["out"]


def subgraph_spec(library: Library, name: str) -> BlockSpec:
    """A block spec made on the fly for ``subgraph:NAME``."""
    sub = library.subgraphs[name]
    inputs, outputs = boundary(sub, "input"), boundary(sub, "output")
    ports = tuple(Port(port, dtype=input_dtype(sub.node(nid))) for port, nid in inputs)
    inner_library = library.inside(name)

    @functools.cache
    def output_dtypes() -> dict[str, Dtype] | None:
        """The dtype reaching each output node; they do not depend on the outer graph, since the
        input ports take only their input nodes' dtypes. None when the inside cannot tell."""
        from graphcore.core.analysis import Analysis

        analysis = Analysis(sub, library=inner_library)
        arriving = [(analysis.dtypes_arriving(nid) or {}).get("in") for _, nid in outputs]
        return None if None in arriving else {port: dtype for (port, _), dtype in zip(outputs, arriving)}

    def analyse(shapes: dict[str, Shape]):
        from graphcore.core.analysis import Analysis  # analysis resolves subgraphs through this module

        analysis = Analysis(sub, library=inner_library, input_shapes={nid: shapes[port] for port, nid in inputs})
        problems = errors(analysis.diagnostics)
        if problems:
            first = problems[0]
            where = f"node {first.node_id!r}: " if first.node_id else ""
            raise ShapeError(f"inside subgraph {name!r}: {where}{first.message}",
                             hint=first.hint or "open the subgraph to fix it")
        return analysis

    def repeated(params: SubgraphParams, ins: dict[str, Shape]):
        """The analysis of each copy, in order."""
        if params.repeat > 1 and (len(inputs) != 1 or len(outputs) != 1):
            raise ShapeError("repeat needs a subgraph with one input and one output", hint="set repeat to 1")
        if params.repeat > 1 and output_dtypes() not in (None, {"out": ports[0].dtype}):
            raise ShapeError(f"repeat: each copy takes {ports[0].dtype} but gives {output_dtypes()['out']}",
                             hint="repeat stacks copies that keep the dtype; set repeat to 1")
        shapes, copies = ins, []
        for i in range(params.repeat):
            analysis = analyse(shapes)
            outs = {port: analysis.nodes[nid].inputs["in"] for port, nid in outputs}
            if i and outs["out"] != shapes["in"]:
                raise ShapeError(f"repeat: copy {i + 1} would change the shape {shapes['in']} -> {outs['out']}",
                                 hint="repeat stacks copies that keep the shape; set repeat to 1")
            copies.append(analysis)
            shapes = {"in": outs["out"]} if params.repeat > 1 else outs
        return copies, outs

    def build(params: SubgraphParams, ins: dict[str, Shape]) -> nn.Module:
        from graphcore.core.compiler import compile

        copies, _ = repeated(params, ins)
        models = [compile(sub, analysis=a) for a in copies]
        return models[0] if len(models) == 1 else nn.Sequential(*models)

    def macs(params: SubgraphParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
        from graphcore.core.summary import summary

        copies, _ = repeated(params, ins)
        return sum(summary(sub, analysis=a).total_macs for a in copies)

    return BlockSpec(
        type=f"{PREFIX}{name}",
        category="subgraph",
        doc=f"Subgraph {name!r} ({len(sub.nodes)} nodes).",
        params=SubgraphParams,
        inputs=ports,
        outputs=tuple(port for port, _ in outputs),
        shape=lambda params, ins: repeated(params, ins)[1],
        output_dtype=lambda params, ins: output_dtypes(),
        build=build,
        macs=macs,
    )
