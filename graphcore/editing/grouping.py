"""Group a selection of nodes into a subgraph node, and ungroup it back (see ``core.subgraphs``)."""

from __future__ import annotations

from graphcore.core.analysis import Analysis
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.names import Namespace
from graphcore.core.subgraphs import PREFIX, SubgraphParams, boundary


def group(doc: GraphDoc, node_ids: list[str], name: str) -> GraphDoc:
    """A copy of ``doc`` where the nodes ``node_ids`` are replaced by one ``subgraph:NAME`` node.

    Edges that cross the selection become the subgraph's ports: one input per outside
    source, one output per inside source that is used outside.
    """
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
        dtype = "int64" if analysis.nodes[source[0]].dtypes[source[1]] == "int" else "float32"
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
