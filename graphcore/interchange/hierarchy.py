"""Imported graphs keep their module hierarchy, and open laid out.

Exporters write where each op came from: torch's TorchScript exporter in node names
(``/layer1/layer1.0/conv1/Conv``), its dynamo exporter in node metadata
(``pkg.torch.onnx.name_scopes``). ``onnx_scopes`` reads either as a module path, outermost
first, each module named by its full dotted path as ``nn.Module.named_modules`` names it:
``("layer1", "layer1.0", "layer1.0.conv1")``.

``group_by_scope`` turns a flat imported graph into subgraphs, one per module that holds two or
more nodes (a module holding one node stays that node, named after the module), nested as the
modules are. Modules with the same inside (node types, params and wiring) share one subgraph
type, so a ResNet opens as stem -> stages -> head, and each stage opens to its blocks, each
block type defined once. The weights follow the nodes to their new state_dict keys.

``layered_layout`` places every node, inside subgraphs too, in layers along the edges
(a Sugiyama-style layout: longest-path layers, then barycentre ordering within layers).
"""

from __future__ import annotations

import ast
import collections
import json
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import networkx as nx
import torch

from graphcore.core.analysis import RESERVED_IDS, Analysis
from graphcore.core.diagnostics import GraphError, errors
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.names import Namespace, identifier
from graphcore.core.subgraphs import PREFIX, boundary

Scope = tuple[str, ...]  # module path, outermost first: ("layer1", "layer1.0", "layer1.0.conv1")
Port = tuple[str, str]  # (node id, port)

IO_TYPES = ("input", "output")
# Spacing of the layout: as the editor spaces the columns and rows of nodes it places itself.
COLUMN_WIDTH, ROW_HEIGHT = 300, 130
ORDERING_SWEEPS = 4  # barycentre passes, alternately down and up the layers


# ---------------------------------------------------------------------- scopes written by exporters
def onnx_scopes(model) -> dict[str, Scope]:
    """The module path of each ONNX node that has one, by node name: from dynamo metadata where
    the node carries it, else from a TorchScript-style name ``/layer1/layer1.0/conv1/Conv``."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    scopes = {}
    for node in model.graph.node:
        props = {prop.key: prop.value for prop in node.metadata_props}
        scope = _metadata_scope(props, node, initializers) if props else _name_scope(node.name)
        if scope:
            scopes[node.name] = scope
    return scopes


def _metadata_scope(props: Mapping[str, str], node, initializers: set[str]) -> Scope:
    """A dynamo export's scope: ``name_scopes`` (or the older ``namespace``) lists the root module
    (''), the modules, then the op itself."""
    if "pkg.torch.onnx.name_scopes" in props:
        names = _names(props["pkg.torch.onnx.name_scopes"])
    elif "namespace" in props:  # ": Net/layer1: torch.nn.Sequential/add: aten.add.Tensor"
        names = [part.split(": ")[0] for part in props["namespace"].split("/")]
    else:
        return ()
    scope = tuple(names[1:-1])
    return _owner_of_weights(scope, node, initializers) if "pkg.onnxscript.rewriter.rule_name" in props else scope


def _names(text: str) -> list[str]:
    """The list of names that ``text`` writes as a Python literal; none where it is not one (a file
    is untrusted: its metadata may say anything)."""
    try:
        names = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return []
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else []


def _owner_of_weights(scope: Scope, node, initializers: set[str]) -> Scope:
    """The scope of the module whose weights a node that the exporter's rewriter fused holds, where it
    is a sibling of the node's own: a Conv with the BatchNorm after it folded in has the norm's
    scope, but ``conv1.weight`` says it is ``conv1``."""
    parent = scope[-2] if len(scope) > 1 else ""
    for name in node.input:
        module = name.rpartition(".")[0]
        if name in initializers and module and module.rpartition(".")[0] == parent:
            return (*scope[:-1], module) if scope else (module,)
    return scope


def _name_scope(name: str) -> Scope:
    """Full module paths from a TorchScript node name: '/layer2/layer2.0/downsample/downsample.0/Conv'
    -> ('layer2', 'layer2.0', 'layer2.0.downsample', 'layer2.0.downsample.0'). Each part names a
    module within its parent; a Sequential's child is written 'parent.index'."""
    if not name.startswith("/"):
        return ()
    paths: list[str] = []
    parts = name.split("/")[1:-1]  # the last part is the op
    for i, part in enumerate(parts):
        if not paths:
            paths.append(part)
            continue
        outer = parts[i - 1]
        inner = part[len(outer) + 1:] if part.startswith(outer + ".") else part
        paths.append(f"{paths[-1]}.{inner}")
    return tuple(paths)


# ---------------------------------------------------------------------- grouping by module
def group_by_scope(doc: GraphDoc, weights: dict[str, torch.Tensor], scopes: Mapping[str, Scope], *,
                   analysis: Analysis | None = None) -> tuple[GraphDoc, dict[str, torch.Tensor]]:
    """``doc`` with a subgraph per module of two or more nodes (``scopes``: node id -> module path,
    outermost first, as full dotted paths or as names within the parent), identical modules
    sharing one subgraph type; and ``weights`` under the grouped document's state_dict keys.

    A module whose nodes a path outside it connects (so grouping it would make a cycle) stays
    ungrouped; so does each call of a module called twice, where that call is one node.
    ``analysis``: the document's, where the caller has it (the subgraphs' inputs take its shapes)."""
    grouper = _Grouper(doc, scopes, analysis or Analysis(doc))
    for path in grouper.module_paths():
        grouper.group_module(path)
    return grouper.result(doc, weights)


@dataclass
class _Cut:
    """Nodes cut out of the top level as a subgraph: its document, each node's id inside it, and
    the input (output) node of each outside (inside) tensor that crosses its border."""

    sub: GraphDoc
    inner: dict[str, str]
    inputs: dict[Port, str]
    outputs: dict[Port, str]


class _Grouper:
    """Groups a flat document bottom up, one module at a time, in a working copy of its top level."""

    def __init__(self, doc: GraphDoc, scopes: Mapping[str, Scope], analysis: Analysis):
        problems = errors(analysis.diagnostics)
        if problems:
            raise GraphError(problems)
        self.analysis = analysis  # the shape and dtype of each port, for the subgraphs' input nodes
        self.nodes: dict[str, Node] = {node.id: node for node in doc.nodes}
        self.edges: list[Edge] = list(doc.edges)
        self.owner: dict[str, Scope] = {
            node.id: () if node.type in IO_TYPES else tuple(scopes.get(node.id, ())) for node in doc.nodes}
        # For each top-level node: the flat nodes it holds, each with its path of ids below it.
        self.holds: dict[str, list[tuple[str, Scope]]] = {node.id: [(node.id, ())] for node in doc.nodes}
        self.flat_port: dict[Port, Port] = {}  # a group's output port -> the flat node port behind it
        self.subgraphs = dict(doc.subgraphs)
        self.type_names = Namespace(set(doc.subgraphs), avoid_builtins=False)
        self.types: dict[str, str] = {}  # a subgraph's inside, as text -> its type name
        self.ids = Namespace(set(self.nodes) | RESERVED_IDS)  # top-level ids while grouping

    def module_paths(self) -> list[Scope]:
        """Every module of two or more nodes (others are never grouped), inner ones before the
        modules around them."""
        sizes = collections.Counter(scope[:depth] for scope in self.owner.values()
                                    for depth in range(1, len(scope) + 1))
        return sorted((path for path, size in sizes.items() if size > 1), key=len, reverse=True)

    def group_module(self, path: Scope) -> None:
        """Group the nodes of module ``path``: one subgraph per call (a connected part of them)."""
        members = [nid for nid in self.nodes if self.owner[nid][:len(path)] == path]
        for call in _connected_parts(members, self.edges):
            if len(call) > 1 and self._convex(call):
                self._group(path, call)

    def _convex(self, call: list[str]) -> bool:
        """No path leaves ``call`` and comes back into it (grouping it would make a cycle)."""
        inside = set(call)
        after: dict[str, list[str]] = {}
        for edge in self.edges:
            after.setdefault(edge.src, []).append(edge.dst)
        frontier = [dst for src in call for dst in after.get(src, ()) if dst not in inside]
        seen = set(frontier)
        while frontier:
            for dst in after.get(frontier.pop(), ()):
                if dst in inside:
                    return False
                if dst not in seen:
                    seen.add(dst)
                    frontier.append(dst)
        return True

    def _group(self, path: Scope, call: list[str]) -> None:
        """Replace the nodes ``call`` of module ``path`` by one subgraph node."""
        cut = self._cut(path, call)
        group_id = self.ids.name(path[-1])
        in_port = {nid: port for port, nid in boundary(cut.sub, "input")}
        out_port = {nid: port for port, nid in boundary(cut.sub, "output")}
        self._replace(call, Node(id=group_id, type=PREFIX + self._type_of(cut.sub)),
                      {s: in_port[nid] for s, nid in cut.inputs.items()},
                      {r: out_port[nid] for r, nid in cut.outputs.items()})
        self.owner[group_id] = path
        self.holds[group_id] = [(leaf, (cut.inner[nid], *below)) for nid in call for leaf, below in self.holds.pop(nid)]
        for result, nid in cut.outputs.items():
            self.flat_port[(group_id, out_port[nid])] = self.flat_port.get(result, result)

    def _cut(self, path: Scope, call: list[str]) -> _Cut:
        """The nodes ``call`` as a subgraph document: named as module ``path`` calls them, with an
        input node per outside tensor they take and an output node per tensor used outside."""
        inside = set(call)
        rank = {nid: i for i, nid in enumerate(call)}
        names = Namespace(RESERVED_IDS)
        inner = {nid: names.name(self.relative_name(nid, path) or self.nodes[nid].type) for nid in call}
        # Ports in an order both copies of a module agree on: by the inner node they feed or leave.
        entering = sorted((e for e in self.edges if e.dst in inside and e.src not in inside),
                          key=lambda e: (rank[e.dst], e.dst_port))
        leaving = sorted((e for e in self.edges if e.src in inside and e.dst not in inside),
                         key=lambda e: (rank[e.src], e.src_port))
        sources = list(dict.fromkeys((e.src, e.src_port) for e in entering))
        results = list(dict.fromkeys((e.src, e.src_port) for e in leaving))
        inputs = {s: names.name("x" if len(sources) == 1 else f"x{i}") for i, s in enumerate(sources)}
        outputs = {r: names.name("y" if len(results) == 1 else f"y{i}") for i, r in enumerate(results)}
        nodes = [*(Node(id=inputs[s], type="input", params=self._input_params(s)) for s in sources),
                 *(self.nodes[nid].model_copy(update={"id": inner[nid]}, deep=True) for nid in call),
                 *(Node(id=outputs[r], type="output") for r in results)]
        edges = [e.model_copy(update={"src": inner[e.src], "dst": inner[e.dst]})
                 for e in self.edges if e.src in inside and e.dst in inside]
        edges += [Edge(src=inputs[(e.src, e.src_port)], dst=inner[e.dst], dst_port=e.dst_port) for e in entering]
        edges += [Edge(src=inner[r[0]], src_port=r[1], dst=outputs[r]) for r in results]
        return _Cut(GraphDoc(name=identifier(path[-1]), nodes=nodes, edges=edges), inner, inputs, outputs)

    def _input_params(self, source: Port) -> dict:
        """An input node like the tensor ``source`` gives: its shape and dtype."""
        nid, port = self.flat_port.get(source, source)
        info = self.analysis.nodes[nid]
        assert info.outputs is not None and info.dtypes is not None, "a clean analysis inferred every port"
        return {"shape": list(info.outputs[port]), "dtype": "int64" if info.dtypes[port] == "int" else "float32"}

    def _type_of(self, sub: GraphDoc) -> str:
        """The name of the subgraph type with this inside: one already made, or ``sub`` itself.
        Input shapes are left out of the comparison: a subgraph is re-inferred at every use."""
        inside = json.dumps({
            "nodes": [[n.id, n.type, n.label, {k: v for k, v in n.params.items()
                                               if not (n.type == "input" and k == "shape")}] for n in sub.nodes],
            "edges": sorted([e.src, e.src_port, e.dst, e.dst_port] for e in sub.edges)}, sort_keys=True)
        if inside not in self.types:
            name = self.type_names.name(sub.name, "module")
            self.subgraphs[name] = sub.model_copy(update={"name": name})
            self.types[inside] = name
        return self.types[inside]

    def _replace(self, call: list[str], group: Node, in_port: dict[Port, str], out_port: dict[Port, str]) -> None:
        """Put ``group`` in place of the nodes ``call``, wired through its ports."""
        inside = set(call)
        nodes = {}
        for nid, node in self.nodes.items():
            if nid == call[0]:
                nodes[group.id] = group
            if nid not in inside:
                nodes[nid] = node
        edges, entered = [], set()
        for e in self.edges:
            if e.src in inside and e.dst in inside:
                continue
            if e.dst in inside:
                if (e.src, e.src_port) not in entered:  # one edge per outside tensor, however often used inside
                    entered.add((e.src, e.src_port))
                    edges.append(e.model_copy(update={"dst": group.id, "dst_port": in_port[(e.src, e.src_port)]}))
            elif e.src in inside:
                edges.append(e.model_copy(update={"src": group.id, "src_port": out_port[(e.src, e.src_port)]}))
            else:
                edges.append(e)
        self.nodes, self.edges = nodes, edges
        for nid in call:
            del self.owner[nid]

    def relative_name(self, nid: str, level: Scope) -> str:
        """What node ``nid`` is called inside module ``level``: its module's path below ``level``
        ('layer1.0.conv1' in 'layer1.0' is 'conv1'; a Sequential's 'layer1.0' in 'layer1' is
        'layer1_0'); '' for an op of ``level`` itself."""
        owner = self.owner[nid]
        if len(owner) <= len(level):
            return ""
        outer = level[-1] if level else ""
        name = owner[-1][len(outer) + 1:] if outer and owner[-1].startswith(outer + ".") else owner[-1]
        return f"{outer.rpartition('.')[2]}_{name}" if outer and name[:1].isdigit() else name

    def result(self, doc: GraphDoc, weights: dict[str, torch.Tensor]) -> tuple[GraphDoc, dict[str, torch.Tensor]]:
        """The grouped document, its top-level nodes named after their modules, and the weights renamed."""
        kept = {nid for nid in self.nodes if not self.relative_name(nid, ())}  # io, and ops of no module
        names = Namespace(kept | RESERVED_IDS)
        top = {nid: nid if nid in kept else names.name(self.relative_name(nid, ())) for nid in self.nodes}
        grouped = doc.model_copy(update={
            "nodes": [node.model_copy(update={"id": top[nid]}, deep=True) for nid, node in self.nodes.items()],
            "edges": [e.model_copy(update={"src": top[e.src], "dst": top[e.dst]}) for e in self.edges],
            "subgraphs": self.subgraphs,
            "ui": {k: v for k, v in doc.ui.items() if k != "positions"}})
        prefix = {leaf: ".".join((top[nid], *below)) for nid, held in self.holds.items() for leaf, below in held}
        renamed = {}
        for key, tensor in weights.items():
            leaf, dot, rest = key.partition(".")
            renamed[f"{prefix.get(leaf, leaf)}{dot}{rest}"] = tensor
        return grouped, renamed


def _connected_parts(members: list[str], edges: Iterable[Edge]) -> list[list[str]]:
    """``members`` split into the parts that edges among them connect, each in ``members``' order."""
    graph = nx.Graph()
    graph.add_nodes_from(members)
    graph.add_edges_from((e.src, e.dst) for e in edges if e.src in graph and e.dst in graph)
    part_of = {nid: i for i, part in enumerate(nx.connected_components(graph)) for nid in part}
    parts: dict[int, list[str]] = {}
    for nid in members:
        parts.setdefault(part_of[nid], []).append(nid)
    return list(parts.values())


# ---------------------------------------------------------------------- layered layout
PLACES: dict[str, Callable[[int, float], list[float]]] = {
    "LR": lambda layer, slot: [layer * COLUMN_WIDTH, slot * ROW_HEIGHT],  # layers left to right
    "TB": lambda layer, slot: [slot * COLUMN_WIDTH, layer * ROW_HEIGHT],  # layers top to bottom
}


def layered_layout(doc: GraphDoc, direction: str = "LR") -> GraphDoc:
    """A copy of ``doc`` (sharing its nodes and edges) with a position for every node, inside its
    subgraphs too: each node one layer after the longest path into it, and the nodes of a layer
    ordered by the barycentre of their neighbours, so that edges run one way and cross little."""
    if direction not in PLACES:
        raise ValueError(f"layout direction {direction!r}: use one of {', '.join(PLACES)}")
    return _placed(doc, PLACES[direction])


def _placed(doc: GraphDoc, place: Callable[[int, float], list[float]]) -> GraphDoc:
    layers = _layers(doc)
    slots = _ordered(layers, doc)
    positions = {nid: place(i, slots[nid]) for i, layer in enumerate(layers) for nid in layer}
    return doc.model_copy(update={"ui": {**doc.ui, "positions": positions},
                                  "subgraphs": {name: _placed(sub, place) for name, sub in doc.subgraphs.items()}})


def _layers(doc: GraphDoc) -> list[list[str]]:
    """Nodes by longest path from a source, in document order within a layer. Nodes on a cycle
    (a document being edited may have one) share a layer."""
    graph = nx.DiGraph()
    graph.add_nodes_from(n.id for n in doc.nodes)
    graph.add_edges_from((e.src, e.dst) for e in doc.edges if e.src in graph and e.dst in graph)
    dag = nx.condensation(graph)
    depth = {part: i for i, generation in enumerate(nx.topological_generations(dag)) for part in generation}
    layers: list[list[str]] = [[] for _ in range(len(set(depth.values())))]
    for node in doc.nodes:
        layers[depth[dag.graph["mapping"][node.id]]].append(node.id)
    return layers


def _ordered(layers: list[list[str]], doc: GraphDoc) -> dict[str, float]:
    """Each node's slot across its layer (centred on 0), after sweeps that sort each layer by the
    mean slot of the node's neighbours in the layers before it (going down) or after it (going up)."""
    slot = {nid: i - (len(layer) - 1) / 2 for layer in layers for i, nid in enumerate(layer)}
    before: dict[str, list[str]] = {}
    after: dict[str, list[str]] = {}
    for e in doc.edges:
        if e.src in slot and e.dst in slot:  # an edge being drawn may lack an end
            before.setdefault(e.dst, []).append(e.src)
            after.setdefault(e.src, []).append(e.dst)
    for sweep in range(ORDERING_SWEEPS):
        neighbours, sequence = (before, layers[1:]) if sweep % 2 == 0 else (after, layers[-2::-1])
        for layer in sequence:
            layer.sort(key=lambda nid: _barycentre(neighbours.get(nid, []), slot, slot[nid]))
            slot.update((nid, i - (len(layer) - 1) / 2) for i, nid in enumerate(layer))
    return slot


def _barycentre(neighbours: list[str], slot: dict[str, float], alone: float) -> float:
    """The mean slot of ``neighbours``; ``alone`` for a node with none."""
    return statistics.fmean(slot[m] for m in neighbours) if neighbours else alone
