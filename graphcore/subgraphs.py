"""Subgraphs: composite blocks that a user makes from a selection of nodes.

A subgraph is a graph document stored under ``doc.subgraphs[NAME]`` and used as a node of
type ``subgraph:NAME``. Its ``input`` nodes become the node's input ports and its ``output``
nodes its output ports: with one input the port is ``in``, with one output ``out`` (so it
wires like any block); with several, each port is named after its input/output node's id.

Shapes are not frozen at grouping time: the subgraph is re-inferred with the shapes that
actually arrive, like a function, so one subgraph can be reused at several sizes. The
``repeat`` param stacks it N times; after the first copy the shape must stay the same.
Subgraphs may use other subgraphs of the same file (one library per file), but not themselves.
A subgraph compiles to its own ``nn.Module`` (a ``GraphModel`` named after it).
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

import blocks
from blocks import BlockSpec, Params, Port, Shape, ShapeError
from graphcore.diagnostics import GraphError, errors
from graphcore.document import Edge, GraphDoc, Node
from graphcore.names import Namespace

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


def subgraph_spec(library: Library, name: str) -> BlockSpec:
    """A block spec made on the fly for ``subgraph:NAME``."""
    sub = library.subgraphs[name]
    inputs, outputs = boundary(sub, "input"), boundary(sub, "output")
    inner_library = library.inside(name)

    def analyse(shapes: dict[str, Shape]):
        from graphcore.analysis import Analysis  # analysis resolves subgraphs through this module

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
        from graphcore.compiler import compile

        copies, _ = repeated(params, ins)
        models = [compile(sub, analysis=a) for a in copies]
        return models[0] if len(models) == 1 else nn.Sequential(*models)

    def macs(params: SubgraphParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
        from graphcore.summary import summary

        copies, _ = repeated(params, ins)
        return sum(summary(sub, analysis=a).total_macs for a in copies)

    return BlockSpec(
        type=f"{PREFIX}{name}",
        category="subgraph",
        doc=f"Subgraph {name!r} ({len(sub.nodes)} nodes).",
        params=SubgraphParams,
        inputs=tuple(Port(port) for port, _ in inputs),
        outputs=tuple(port for port, _ in outputs),
        shape=lambda params, ins: repeated(params, ins)[1],
        build=build,
        macs=macs,
    )


# ---------------------------------------------------------------- group / ungroup
def group(doc: GraphDoc, node_ids: list[str], name: str) -> GraphDoc:
    """A copy of ``doc`` where the nodes ``node_ids`` are replaced by one ``subgraph:NAME`` node.

    Edges that cross the selection become the subgraph's ports: one input per outside
    source, one output per inside source that is used outside.
    """
    from graphcore.analysis import Analysis

    selected = set(node_ids)
    by_id = {n.id: n for n in doc.nodes}
    problems = _group_problems(doc, selected, by_id, name)
    if problems:
        raise GraphError(problems)
    analysis = Analysis(doc)
    doc = doc.model_copy(deep=True)
    names = Namespace(reserved=selected, avoid_builtins=False)

    incoming = [e for e in doc.edges if e.src not in selected and e.dst in selected]
    outgoing = [e for e in doc.edges if e.src in selected and e.dst not in selected]
    sources = list(dict.fromkeys((e.src, e.src_port) for e in incoming))
    results = list(dict.fromkeys((e.src, e.src_port) for e in outgoing))
    input_ids = {s: names.name("x" if len(sources) == 1 else (s[0] if s[1] == "out" else f"{s[0]}_{s[1]}"))
                 for s in sources}
    output_ids = {r: names.name("y" if len(results) == 1 else (r[0] if r[1] == "out" else f"{r[0]}_{r[1]}"))
                  for r in results}

    sub_nodes = []
    for source, input_id in input_ids.items():
        shape = analysis.nodes[source[0]].outputs[source[1]]
        dtype = "int64" if doc.node(source[0]).type == "input" and \
            doc.node(source[0]).params.get("dtype") == "int64" else "float32"
        sub_nodes.append(Node(id=input_id, type="input", params={"shape": list(shape), "dtype": dtype}))
    sub_nodes += [n for n in doc.nodes if n.id in selected]
    sub_nodes += [Node(id=output_id, type="output") for output_id in output_ids.values()]
    sub_edges = [e for e in doc.edges if e.src in selected and e.dst in selected]
    sub_edges += [Edge(src=input_ids[(e.src, e.src_port)], dst=e.dst, dst_port=e.dst_port) for e in incoming]
    sub_edges += [Edge(src=r[0], src_port=r[1], dst=output_id) for r, output_id in output_ids.items()]
    positions = doc.ui.get("positions", {})
    sub = GraphDoc(name=name, nodes=sub_nodes, edges=sub_edges,
                   ui={"positions": {k: v for k, v in positions.items() if k in selected}} if positions else {})

    in_ports = dict(boundary(sub, "input"))
    out_ports = dict(boundary(sub, "output"))
    in_port = {s: next(p for p, nid in in_ports.items() if nid == i) for s, i in input_ids.items()}
    out_port = {r: next(p for p, nid in out_ports.items() if nid == o) for r, o in output_ids.items()}
    group_id = Namespace(reserved={n.id for n in doc.nodes} - selected, avoid_builtins=False).name(name, "group")

    doc.nodes = [n for n in doc.nodes if n.id not in selected]
    doc.nodes.append(Node(id=group_id, type=f"{PREFIX}{name}"))
    doc.edges = [e for e in doc.edges if e.src not in selected and e.dst not in selected]
    doc.edges += [Edge(src=s[0], src_port=s[1], dst=group_id, dst_port=in_port[s]) for s in sources]
    doc.edges += [Edge(src=group_id, src_port=out_port[(e.src, e.src_port)], dst=e.dst, dst_port=e.dst_port)
                  for e in outgoing]
    doc.subgraphs[name] = sub
    if positions:
        picked = [positions[i] for i in selected if i in positions]
        if picked:
            positions[group_id] = [sum(p[0] for p in picked) / len(picked), sum(p[1] for p in picked) / len(picked)]
        doc.ui["positions"] = {k: v for k, v in positions.items() if k not in selected}
    return doc


def _group_problems(doc: GraphDoc, selected: set[str], by_id: dict[str, Node], name: str) -> list[str]:
    problems = []
    if not selected:
        problems.append("select at least one node to group")
    missing = sorted(selected - by_id.keys())
    if missing:
        problems.append(f"no such nodes: {', '.join(missing)}")
    io_nodes = sorted(i for i in selected & by_id.keys() if by_id[i].type in ("input", "output"))
    if io_nodes:
        problems.append(f"input and output nodes cannot be grouped: {', '.join(io_nodes)}")
    if not name.isidentifier() or not name.isascii():
        problems.append(f"subgraph name {name!r} must be letters, digits and _ (not starting with a digit)")
    elif name in doc.subgraphs:
        problems.append(f"a subgraph named {name!r} already exists; pick another name")
    return problems


def ungroup(doc: GraphDoc, node_id: str) -> GraphDoc:
    """A copy of ``doc`` with the subgraph node ``node_id`` replaced by its nodes (one set
    per ``repeat``). The subgraph definition is dropped when no other node uses it."""
    node = doc.node(node_id)
    if node is None or not node.type.startswith(PREFIX):
        raise GraphError(f"node {node_id!r} is not a subgraph node")
    name = node.type[len(PREFIX):]
    if name not in doc.subgraphs:
        raise GraphError(f"node {node_id!r}: no subgraph named {name!r} in this file")
    repeat = SubgraphParams.model_validate(node.params).repeat
    sub = doc.subgraphs[name]
    doc = doc.model_copy(deep=True)
    inputs, outputs = dict(boundary(sub, "input")), dict(boundary(sub, "output"))
    input_ports = {nid: port for port, nid in inputs.items()}
    output_ports = {nid: port for port, nid in outputs.items()}
    names = Namespace(reserved={n.id for n in doc.nodes} - {node_id}, avoid_builtins=False)

    # What feeds each port of the first copy: the outer edges into the group node.
    feeding = {e.dst_port: (e.src, e.src_port) for e in doc.edges if e.dst == node_id}
    positions = doc.ui.get("positions", {})
    origin = positions.get(node_id, [0, 0])
    new_nodes, new_edges = [], []
    for copy_index in range(repeat):
        renamed = {n.id: names.name(n.id if copy_index == 0 else f"{n.id}_{copy_index}")
                   for n in sub.nodes if n.type not in ("input", "output")}
        for n in sub.nodes:
            if n.id in renamed:
                new_nodes.append(n.model_copy(update={"id": renamed[n.id]}, deep=True))
                inner_xy = sub.ui.get("positions", {}).get(n.id)
                if positions and inner_xy:
                    positions[renamed[n.id]] = [origin[0] + inner_xy[0] + 40 * copy_index, origin[1] + inner_xy[1]]

        produced = {}
        for e in sub.edges:
            src, src_port = feeding[input_ports[e.src]] if e.src in input_ports else (renamed[e.src], e.src_port)
            if e.dst in output_ports:
                produced[output_ports[e.dst]] = (src, src_port)
            else:
                new_edges.append(Edge(src=src, src_port=src_port, dst=renamed[e.dst], dst_port=e.dst_port))
        feeding = {"in": produced["out"]} if repeat > 1 else feeding
    outer = [e for e in doc.edges if node_id not in (e.src, e.dst)]
    outer += [Edge(src=produced[e.src_port][0], src_port=produced[e.src_port][1], dst=e.dst, dst_port=e.dst_port)
              for e in doc.edges if e.src == node_id]
    doc.nodes = [n for n in doc.nodes if n.id != node_id] + new_nodes
    doc.edges = outer + new_edges
    if positions:
        positions.pop(node_id, None)
    if not any(n.type == node.type for n in doc.nodes):
        del doc.subgraphs[name]
    return doc
