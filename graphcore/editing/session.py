"""Edits to a graph document, with undo/redo and incremental re-analysis.

The editor's browser only shows the graph and sends edits; an ``EditSession`` owns the
``GraphDoc`` and its ``Analysis``, applies each edit and returns a ``Delta``: the views of
the nodes whose shapes, problems or params changed, the edges that came and went, and the
positions that moved. Nothing here knows about the UI.

Every edit is a *step* made of primitive operations (add/remove a node or an edge, set
params, rename, move), each of which knows its inverse; undo applies the inverses of the
last step in reverse order, so that a paste or a group delete undoes in one go. Loading
another document (``load``) is a step too: it swaps the document and its analysis, and undo
swaps them back.
A step of param changes only is re-analysed with ``Analysis.update_node`` (the node and
what lies downstream of it); a structural step with ``Analysis.rebuild``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import blocks
from blocks import categories
from blocks.shapes import shape_text
from graphcore.core import subgraphs
from graphcore.core.analysis import Analysis, NodeInfo, check_id
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.names import identifier
from graphcore.editing import grouping

Position = tuple[float, float]
HISTORY_LIMIT = 200
COLUMN_WIDTH, ROW_HEIGHT = 300, 130  # spacing of the automatic layout of unplaced nodes
BAND_GAP = 90  # between the bands of a wrapped layout
WRAP_AFTER = 10  # a graph deeper than this many columns is wrapped into bands...
ASPECT = 1.6  # ...about this much wider than tall, like a screen


class EditError(ValueError):
    """An edit that cannot be applied (unknown node, bad or taken id); the document is unchanged."""


def edge_key(edge: Edge) -> str:
    """A stable id for an edge; unique because an input port takes one edge."""
    return f"{edge.src}.{edge.src_port}->{edge.dst}.{edge.dst_port}"


def edge_view(edge: Edge) -> dict:
    return {"id": edge_key(edge), "source": edge.src, "sourceHandle": edge.src_port,
            "target": edge.dst, "targetHandle": edge.dst_port}


@dataclass
class Delta:
    """What the browser must redraw after an edit."""

    # id -> node view (added or changed); for a node re-analysed only (its params, ports, label and
    # type as last drawn: an edit upstream), a patch of what analysis decides: {"id", "shapes", "problems"}
    nodes: dict[str, dict] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)  # node ids
    edges_added: list[dict] = field(default_factory=list)  # edge views
    edges_removed: list[str] = field(default_factory=list)  # edge ids
    positions: dict[str, list[float]] = field(default_factory=dict)  # id -> [x, y]
    ids: dict[str, str] = field(default_factory=dict)  # pasted id -> new id
    document: bool = False  # another document took this one's place (a load, or its undo): redraw it all

    @property
    def empty(self) -> bool:
        return not (self.nodes or self.removed or self.edges_added or self.edges_removed or self.positions
                    or self.document)

    def to_dict(self) -> dict:
        return {"nodes": self.nodes, "removed": self.removed, "edges_added": self.edges_added,
                "edges_removed": self.edges_removed, "positions": self.positions, "ids": self.ids}


# A primitive operation is a tuple whose first item names it; ``_apply`` returns its inverse.
Op = tuple


class EditSession:
    """One open document: edits, undo/redo and the analysis that stays in step with them."""

    def __init__(self, doc: GraphDoc, *, parent: EditSession | None = None, name: str | None = None):
        """``parent`` and ``name``: this session edits the inside of the parent's subgraph ``name``
        (``doc`` is ``parent.doc.subgraphs[name]``); every edit here re-analyses the parent."""
        self.doc = doc
        self.parent = parent
        self.path: tuple[str, ...] = (*parent.path, name) if parent is not None and name else ()
        self.analysis = Analysis(doc, library=self._library())
        self.undo_stack: list[list[Op]] = []
        self.redo_stack: list[list[Op]] = []
        self.revision = 0  # bumped by every applied step; autosave and panels watch it
        self._faces: dict[str, _Face] = {}  # node id -> its face as last computed
        self._place_unplaced()

    @property
    def root(self) -> EditSession:
        """The session of the whole file (``self`` unless this one edits a subgraph)."""
        return self if self.parent is None else self.parent.root

    def _library(self) -> subgraphs.Library:
        """One library per file: a subgraph resolves its node types from the file's subgraphs."""
        return subgraphs.Library(self.root.doc.subgraphs, self.path)

    def open_subgraph(self, node_id: str) -> EditSession:
        """A session that edits the inside of the subgraph node ``node_id`` (shared by all its uses)."""
        node = self._node(node_id)
        if not node.type.startswith(subgraphs.PREFIX):
            raise EditError(f"{node_id!r} is a {node.type} block, not a subgraph")
        name = node.type.removeprefix(subgraphs.PREFIX)
        inner = self.root.doc.subgraphs.get(name)
        if inner is None:
            raise EditError(f"{node_id!r}: no subgraph named {name!r} in this file")
        return EditSession(inner, parent=self, name=name)

    def _inner_changed(self) -> None:
        """A subgraph used here was edited: re-resolve its ports and re-infer every shape."""
        self.analysis.library = self._library()
        self.analysis.rebuild()
        self.revision += 1
        if self.parent is not None:
            self.parent._inner_changed()

    # ----------------------------------------------------------------- views
    @property
    def positions(self) -> dict[str, list[float]]:
        return self.doc.ui.setdefault("positions", {})

    def node_view(self, node_id: str) -> dict:
        """What the canvas draws for a node: title, key params, ports, output shapes, problems."""
        face, _ = self._face(node_id)
        return {**face, **node_results(self.analysis, node_id), "position": self.positions.get(node_id, [0, 0])}

    def _face(self, node_id: str) -> tuple[dict, bool]:
        """The node's face (``node_face``) and whether it is the one computed last time. Cached by node:
        its key params are most of a view's cost, and an edit upstream re-analyses thousands of
        nodes whose params did not change. A new node object (undo of a removal, a load, a group),
        new params (an edit, its undo), a rename, a type or label change or new ports (a subgraph
        edited) make a new face."""
        info = self.analysis.nodes[node_id]
        cached = self._faces.get(node_id)
        if cached is not None and cached.shows(info):
            return cached.face, True
        face = node_face(self.analysis, node_id)
        self._faces[node_id] = _Face(info.node, dict(info.node.params), info.input_ports, info.output_ports, face)
        return face, False

    def _changed_view(self, node_id: str, touched: bool, structural: bool) -> dict:
        """An edited or added node's whole view; a node only re-analysed, whose face is the one last
        drawn, gets a patch of its analysis results alone (``Delta.nodes``). Only a structural edit
        (a subgraph type replaced) can change the face of a node it did not touch."""
        results = node_results(self.analysis, node_id)
        if not touched and not structural:
            return {"id": node_id, **results}
        face, same = self._face(node_id)
        if same and not touched:
            return {"id": node_id, **results}
        return {**face, **results, "position": self.positions.get(node_id, [0, 0])}

    def view(self) -> dict:
        """The whole graph for the canvas (on load, new, open)."""
        return {"name": self.doc.name, "nodes": [self.node_view(nid) for nid in self.analysis.nodes],
                "edges": [edge_view(e) for e in self.doc.edges]}

    # ----------------------------------------------------------------- edits
    def add_node(self, type_id: str, params: Mapping[str, Any] | None = None,
                 position: Position | None = None, node_id: str | None = None) -> Delta:
        """Add a block; its id is ``node_id`` or a fresh one made from the type (``conv2d_1``)."""
        if blocks.get(type_id) is None and not type_id.startswith("subgraph:"):
            raise EditError(f"unknown block type {type_id!r}")
        node_id = node_id or self.fresh_id(type_id.removeprefix("subgraph:"))
        self._check_new_id(node_id)
        place = _pos(position if position is not None else self._free_position())
        node = Node(id=node_id, type=type_id, params=dict(params or {}))
        return self._do([("add_node", node, place, len(self.doc.nodes))])

    def remove(self, node_ids: Iterable[str] = (), edge_ids: Iterable[str] = ()) -> Delta:
        """Delete nodes (with their edges) and edges, as one undo step."""
        node_ids = set(node_ids)
        for node_id in node_ids:
            self._node(node_id)
        edge_ids = set(edge_ids)
        ops: list[Op] = []
        # Edges first, from the back, so that every recorded index is valid when undone in reverse.
        for index in reversed(range(len(self.doc.edges))):
            edge = self.doc.edges[index]
            if edge.src in node_ids or edge.dst in node_ids or edge_key(edge) in edge_ids:
                ops.append(("remove_edge", edge, index))
        for index in reversed(range(len(self.doc.nodes))):
            node = self.doc.nodes[index]
            if node.id in node_ids:
                ops.append(("remove_node", node, self.positions.get(node.id), index))
        return self._do(ops)

    def remove_nodes(self, node_ids: Iterable[str]) -> Delta:
        return self.remove(node_ids=node_ids)

    def connect(self, src: str, src_port: str | None, dst: str, dst_port: str | None) -> Delta:
        """Wire an output to an input; the input's previous edge, if any, is replaced."""
        self._node(src)
        self._node(dst)
        edge = Edge(src=src, src_port=src_port or "out", dst=dst, dst_port=dst_port or "in")
        ops: list[Op] = [("remove_edge", old, i) for i, old in reversed(list(enumerate(self.doc.edges)))
                         if (old.dst, old.dst_port) == (edge.dst, edge.dst_port)]
        ops.append(("add_edge", edge, len(self.doc.edges) - len(ops)))
        return self._do(ops)

    def disconnect(self, edge_id: str) -> Delta:
        if not any(edge_key(e) == edge_id for e in self.doc.edges):
            raise EditError(f"no edge {edge_id!r}")
        return self.remove(edge_ids=[edge_id])

    def set_params(self, node_id: str, params: Mapping[str, Any], coalesce: bool = False) -> Delta:
        """Replace a node's params. Invalid values are kept and reported, as in a loaded file.

        ``coalesce``: fold this change into the previous step when that step only set this
        node's params too (typing ``128`` in a form is one undo step, not three).
        """
        node = self._node(node_id)
        new = dict(params)
        if new == node.params:
            return Delta()
        last = self.undo_stack[-1] if self.undo_stack else None
        delta = self._do([("set_params", node_id, dict(node.params), new)])
        if coalesce and last is not None and len(last) == 1 and last[0][:2] == ("set_params", node_id):
            self.undo_stack.pop()  # the step just made
            self.undo_stack[-1] = [("set_params", node_id, new, last[0][3])]
        return delta

    def rename(self, node_id: str, new_id: str) -> Delta:
        self._node(node_id)
        if new_id == node_id:
            return Delta()
        self._check_new_id(new_id)
        return self._do([("rename", node_id, new_id)])

    def move(self, node_id: str, x: float, y: float) -> Delta:
        return self.move_many({node_id: (x, y)})

    def move_many(self, positions: Mapping[str, Position]) -> Delta:
        """Move nodes (a drag of a selection, or an auto-layout) as one step."""
        ops = []
        for node_id, position in positions.items():
            self._node(node_id)
            new = _pos(position)
            old = self.positions.get(node_id)
            if old != new:
                ops.append(("move", node_id, old, new))
        return self._do(ops)

    def paste(self, nodes: Iterable[Mapping[str, Any]], edges: Iterable[Mapping[str, Any]] = (),
              offset: Position = (40, 40)) -> Delta:
        """Add copies of nodes (``id``, ``type``, ``params``, ``position``) and the edges between
        them, under new ids where theirs are taken; one undo step. ``Delta.ids`` maps old to new."""
        ids: dict[str, str] = {}
        ops: list[Op] = []
        taken = set(self.analysis.nodes)
        nodes = list(nodes)
        places = [item.get("position") or self._free_position() for item in nodes]
        offset = clear_offset(places, self.positions.values(), offset)
        for item, (x, y) in zip(nodes, places, strict=True):
            type_id = str(item["type"])
            if blocks.get(type_id) is None and not type_id.startswith("subgraph:"):
                raise EditError(f"unknown block type {type_id!r}")
            old_id = str(item.get("id") or type_id)
            new_id = self.fresh_id(old_id, taken, keep=True)
            taken.add(new_id)
            ids[old_id] = new_id
            node = Node(id=new_id, type=type_id, params=dict(item.get("params") or {}), label=item.get("label"))
            ops.append(("add_node", node, _pos((x + offset[0], y + offset[1])), len(self.doc.nodes) + len(ops)))
        n_edges = len(self.doc.edges)
        for item in edges:
            if item["src"] in ids and item["dst"] in ids:
                edge = Edge(src=ids[item["src"]], src_port=item.get("src_port") or "out",
                            dst=ids[item["dst"]], dst_port=item.get("dst_port") or "in")
                ops.append(("add_edge", edge, n_edges))
                n_edges += 1
        delta = self._do(ops)
        delta.ids = ids
        return delta

    def copy(self, node_ids: Iterable[str]) -> dict:
        """The clipboard form of some nodes and the edges between them (what ``paste`` takes)."""
        chosen = set(node_ids)
        nodes = [{"id": n.id, "type": n.type, "params": n.params, "label": n.label,
                  "position": self.positions.get(n.id)} for n in self.doc.nodes if n.id in chosen]
        edges = [e.model_dump() for e in self.doc.edges if e.src in chosen and e.dst in chosen]
        return {"nodes": nodes, "edges": edges}

    def duplicate(self, node_ids: Iterable[str]) -> Delta:
        """Copies of some nodes (and the edges between them) beside them; one undo step."""
        clip = self.copy(node_ids)
        return self.paste(clip["nodes"], clip["edges"])

    def group(self, node_ids: Iterable[str], name: str | None = None) -> Delta:
        """Replace nodes by one ``subgraph:NAME`` node (one undo step); ``NAME`` defaults to ``block_N``."""
        if self.parent is not None:
            raise EditError("close the subgraph first: groups are made at the top level of the file")
        node_ids = list(dict.fromkeys(node_ids))
        for node_id in node_ids:
            self._node(node_id)
        name = name or self.fresh_subgraph_name()
        try:
            grouped = grouping.group(self.doc, node_ids, name)
        except GraphError as exc:
            raise EditError("; ".join(getattr(d, "message", str(d)) for d in exc.diagnostics)) from None
        _place_boundary(grouped.subgraphs[name])
        return self._do([("replace", _contents(self.doc), _contents(grouped))])

    def ungroup(self, node_id: str) -> Delta:
        """Put a subgraph node's nodes back in its place (one set per ``repeat``); one undo step."""
        node = self._node(node_id)
        if not node.type.startswith(subgraphs.PREFIX):
            raise EditError(f"{node_id!r} is a {node.type} block, not a subgraph")
        if self.parent is not None:
            raise EditError("close the subgraph first: ungroup at the top level of the file")
        try:
            ungrouped = grouping.ungroup(self.doc, node_id)
        except GraphError as exc:
            raise EditError("; ".join(getattr(d, "message", str(d)) for d in exc.diagnostics)) from None
        positions = ungrouped.ui.setdefault("positions", {})
        x, y = self.positions.get(node_id, [0.0, 0.0])
        unplaced = [n.id for n in ungrouped.nodes if n.id not in positions]
        for i, nid in enumerate(unplaced):  # a subgraph saved without positions: a row in its place
            positions[nid] = [x + i * COLUMN_WIDTH, y]
        return self._do([("replace", _contents(self.doc), _contents(ungrouped))])

    def load(self, other: EditSession) -> Delta:
        """Put another document in this one's place (New, Open, a template) as one undo step.

        ``other`` is a fresh ``EditSession(doc)``: its document comes analysed and placed (in a
        worker thread, where the editor makes it), so the swap re-analyses nothing, and undo swaps
        the old document and its analysis back as they were.
        """
        if self.parent is not None or other.parent is not None:
            raise EditError("close the subgraph first: a document is loaded at the top level of the file")
        return self._do([("document", other.doc, other.analysis)])

    def fresh_subgraph_name(self) -> str:
        taken = self.root.doc.subgraphs
        n = 1
        while f"block_{n}" in taken:
            n += 1
        return f"block_{n}"

    # ----------------------------------------------------------------- history
    @property
    def can_undo(self) -> bool:
        return bool(self.undo_stack)

    @property
    def can_redo(self) -> bool:
        return bool(self.redo_stack)

    def undo(self) -> Delta:
        return self._replay(self.undo_stack, self.redo_stack)

    def redo(self) -> Delta:
        return self._replay(self.redo_stack, self.undo_stack)

    def _replay(self, source: list[list[Op]], target: list[list[Op]]) -> Delta:
        """Undo the last step of ``source``; the step that undoes that goes onto ``target``."""
        if not source:
            return Delta()
        inverse, delta = self._run(_inverse_ops(source.pop()))
        target.append(inverse)
        return delta

    # ----------------------------------------------------------------- ids and places
    def fresh_id(self, base: str, taken: set[str] | None = None, keep: bool = False) -> str:
        """A readable unused id: ``conv2d_1``, ``conv2d_2``… (``keep``: ``base`` itself when free)."""
        taken = set(self.analysis.nodes) if taken is None else taken
        stem = identifier(base, "node")
        if keep and stem not in taken and check_id(stem) is None:
            return stem
        stem = re.sub(r"_\d+$", "", stem) or "node"
        n = 1
        while f"{stem}_{n}" in taken or check_id(f"{stem}_{n}") is not None:
            n += 1
        return f"{stem}_{n}"

    def _check_new_id(self, node_id: str) -> None:
        problem = check_id(node_id)
        if problem is not None:
            raise EditError(f"{node_id!r}: {problem.message} ({problem.hint})")
        if node_id in self.analysis.nodes:
            raise EditError(f"{node_id!r}: another node already has this id")

    def _node(self, node_id: str) -> Node:
        info = self.analysis.nodes.get(node_id)
        if info is None:
            raise EditError(f"no node {node_id!r}")
        return info.node

    def _free_position(self) -> list[float]:
        """Right of everything placed so far."""
        if not self.positions:
            return [0.0, 0.0]
        return [max(p[0] for p in self.positions.values()) + COLUMN_WIDTH, 0.0]

    def _place_unplaced(self) -> None:
        """Give nodes without a position a place: one column per depth, left to right; a deep
        graph wraps into bands, top to bottom, like lines of text, so that it opens readable."""
        missing = [nid for nid in self.analysis.nodes if nid not in self.positions]
        if not missing:
            return
        depth: dict[str, int] = {}
        for nid in self.analysis.order:
            ins = self.analysis.in_edges[nid].values()
            depth[nid] = max((depth.get(src, 0) + 1 for src, _ in ins), default=0)
        columns: dict[int, list[str]] = {}
        for nid in [*self.analysis.order, *(n for n in self.analysis.nodes if n not in depth)]:
            columns.setdefault(depth.get(nid, 0), []).append(nid)
        for nid, xy in wrapped_columns([columns[c] for c in sorted(columns)]).items():
            if nid in missing:
                self.positions[nid] = xy

    # ----------------------------------------------------------------- machinery
    def _do(self, ops: list[Op]) -> Delta:
        if not ops:
            return Delta()
        inverse, delta = self._run(ops)
        self.undo_stack.append(inverse)
        del self.undo_stack[:-HISTORY_LIMIT]
        self.redo_stack.clear()
        return delta

    def _run(self, ops: list[Op]) -> tuple[list[Op], Delta]:
        """Apply ops in order; return the ops that undo them and the delta to draw."""
        delta = Delta()
        undo: list[Op] = []
        touched: set[str] = set()
        structural = False
        for op in ops:
            undo.append(self._apply(op, delta, touched))
            structural = structural or op[0] not in ("set_params", "move", "document")
        if any(op[0] == "replace" for op in ops):
            self.analysis.library = self._library()
        if structural:
            changed = self.analysis.rebuild()
        else:
            changed = set()
            for node_id in dict.fromkeys(op[1] for op in ops if op[0] == "set_params"):
                changed |= self.analysis.update_node(node_id)
        for node_id in changed | touched:
            if node_id in self.analysis.nodes:
                delta.nodes[node_id] = self._changed_view(node_id, node_id in touched, structural)
        delta.removed = [nid for nid in dict.fromkeys(delta.removed) if nid not in self.analysis.nodes]
        self.revision += 1
        if self.parent is not None and any(op[0] != "move" for op in ops):
            self.parent._inner_changed()
        return undo, delta

    def _apply(self, op: Op, delta: Delta, touched: set[str]) -> Op:
        kind = op[0]
        doc = self.doc
        if kind == "add_node":
            _, node, position, index = op
            doc.nodes.insert(index, node)
            if position is not None:
                self.positions[node.id] = position
            touched.add(node.id)
            return ("remove_node", node, position, index)
        if kind == "remove_node":
            _, node, position, index = op
            assert doc.nodes[index] is node, "history out of step with the document"
            del doc.nodes[index]
            self.positions.pop(node.id, None)
            delta.removed.append(node.id)
            return ("add_node", node, position, index)
        if kind == "add_edge":
            _, edge, index = op
            doc.edges.insert(index, edge)
            delta.edges_added.append(edge_view(edge))
            return ("remove_edge", edge, index)
        if kind == "remove_edge":
            _, edge, index = op
            assert doc.edges[index] is edge, "history out of step with the document"
            del doc.edges[index]
            key = edge_key(edge)
            delta.edges_added = [e for e in delta.edges_added if e["id"] != key]
            delta.edges_removed.append(key)
            return ("add_edge", edge, index)
        if kind == "set_params":
            _, node_id, old, new = op
            self._node(node_id).params = new
            touched.add(node_id)
            return ("set_params", node_id, new, old)
        if kind == "move":
            _, node_id, old, new = op
            if new is None:
                self.positions.pop(node_id, None)
            else:
                self.positions[node_id] = new
                delta.positions[node_id] = new
            return ("move", node_id, new, old)
        if kind == "rename":
            _, old_id, new_id = op
            self._node(old_id).id = new_id
            for index, edge in enumerate(doc.edges):
                if old_id in (edge.src, edge.dst):
                    renamed = edge.model_copy(update={
                        "src": new_id if edge.src == old_id else edge.src,
                        "dst": new_id if edge.dst == old_id else edge.dst})
                    doc.edges[index] = renamed
                    delta.edges_removed.append(edge_key(edge))
                    delta.edges_added.append(edge_view(renamed))
            if old_id in self.positions:
                self.positions[new_id] = self.positions.pop(old_id)
            delta.removed.append(old_id)
            delta.ids[old_id] = new_id
            touched.add(new_id)
            return ("rename", new_id, old_id)
        if kind == "document":
            _, new_doc, new_analysis = op
            inverse = ("document", self.doc, self.analysis)
            self.doc, self.analysis = new_doc, new_analysis
            delta.document = True
            return inverse
        if kind == "replace":
            _, old, new = op
            old_nodes = {n.id: n for n in doc.nodes}
            old_edges = {edge_key(e) for e in doc.edges}
            old_positions = dict(self.positions)
            doc.nodes, doc.edges, doc.subgraphs = new["nodes"], new["edges"], new["subgraphs"]
            doc.ui["positions"] = new["positions"]
            for node in doc.nodes:
                before = old_nodes.get(node.id)
                if before is None or before.type != node.type or before.params != node.params:
                    touched.add(node.id)
            new_ids = {n.id for n in doc.nodes}
            delta.removed.extend(nid for nid in old_nodes if nid not in new_ids)
            keys = {edge_key(e) for e in doc.edges}
            delta.edges_removed.extend(old_edges - keys)
            delta.edges_added.extend(edge_view(e) for e in doc.edges if edge_key(e) not in old_edges)
            for node_id, xy in self.positions.items():
                if old_positions.get(node_id) != xy:
                    delta.positions[node_id] = xy
            return ("replace", new, old)
        raise AssertionError(f"unknown edit operation {kind!r}")


def node_view(analysis: Analysis, node_id: str, position: list[float]) -> dict:
    """What the canvas draws for a node of ``analysis`` at ``position``: title, key params, ports,
    output shapes, problems."""
    return {**node_face(analysis, node_id), **node_results(analysis, node_id), "position": position}


def node_face(analysis: Analysis, node_id: str) -> dict:
    """The part of a node's view that its params, type, label and ports decide: id, title, key params, ports."""
    info = analysis.nodes[node_id]
    node = info.node
    return {"id": node.id, "type": node.type, "label": node.label,
            "category": info.spec.category if info.spec else categories.UNKNOWN, "params": node.params,
            "summary": key_params(node), "inputs": [p.name for p in info.input_ports or ()],
            "outputs": list(info.output_ports or ())}


def node_results(analysis: Analysis, node_id: str) -> dict:
    """The part of a node's view that analysis decides: its output shapes and problems."""
    info = analysis.nodes[node_id]
    return {"shapes": {port: _shape_text(shape) for port, shape in (info.outputs or {}).items()},
            "problems": [{"severity": d.severity, "message": d.message, "hint": d.hint, "port": d.port}
                         for d in analysis.node_diagnostics(node_id)]}


@functools.lru_cache(maxsize=4096)
def _shape_text(shape: tuple[int | None, ...] | None) -> str:
    """A shape's text for the canvas; the thousands of blocks of a big graph share a few shapes."""
    return shape_text(shape, batch=True)


@dataclass
class _Face:
    """A node's face as computed, with what it was computed from: the node, its params and ports."""

    node: Node
    params: dict
    input_ports: Any
    output_ports: Any
    face: dict

    def shows(self, info: NodeInfo) -> bool:
        """Whether the face is still that of ``info``'s node (an unchanged node keeps its ports' tuples)."""
        node, face = info.node, self.face
        return (self.node is node and self.params == node.params and node.id == face["id"]
                and node.type == face["type"] and node.label == face["label"]
                and (self.input_ports is info.input_ports or self.input_ports == info.input_ports)
                and (self.output_ports is info.output_ports or self.output_ports == info.output_ports))


def _inverse_ops(step: list[Op]) -> list[Op]:
    """A recorded step holds the inverses in the order they were made; undo runs them backwards."""
    return list(reversed(step))


def _contents(doc: GraphDoc) -> dict[str, Any]:
    """What a ``replace`` step swaps: the very lists and dicts, so that older steps stay valid."""
    return {"nodes": doc.nodes, "edges": doc.edges, "subgraphs": doc.subgraphs,
            "positions": doc.ui.setdefault("positions", {})}


def wrapped_columns(columns: list[list[str]]) -> dict[str, list[float]]:
    """Positions for columns of node ids (one column per depth): left to right, and when there
    are more than ``WRAP_AFTER`` columns, in bands of about ``ASPECT`` width to height."""
    n = len(columns)
    per_band = n
    if n > WRAP_AFTER:
        band_height = max(len(c) for c in columns) * ROW_HEIGHT + BAND_GAP
        per_band = max(4, round(math.sqrt(ASPECT * n * band_height / COLUMN_WIDTH)))
    positions: dict[str, list[float]] = {}
    top = 0.0
    for start in range(0, n, per_band):
        band = columns[start:start + per_band]
        for i, column in enumerate(band):
            for row, nid in enumerate(column):
                positions[nid] = [float(i * COLUMN_WIDTH), top + row * ROW_HEIGHT]
        top += max(len(c) for c in band) * ROW_HEIGHT + BAND_GAP
    return positions


def _place_boundary(sub: GraphDoc) -> None:
    """A new subgraph's input nodes go left of its blocks and its output nodes right of them."""
    positions = sub.ui.get("positions")
    if not positions:
        return
    xs = [p[0] for p in positions.values()]
    ys = sorted(p[1] for p in positions.values())
    middle = ys[len(ys) // 2]
    for kind, x in (("input", min(xs) - COLUMN_WIDTH), ("output", max(xs) + COLUMN_WIDTH)):
        ids = [n.id for n in sub.nodes if n.type == kind]
        for i, nid in enumerate(ids):
            positions[nid] = [x, middle + (i - (len(ids) - 1) / 2) * ROW_HEIGHT]


def clear_offset(places: list, occupied: Iterable[Iterable[float]], step: Position, first: int = 1) -> Position:
    """The first multiple of ``step`` (from ``first``) that puts no new node exactly where a node
    already is: repeated pastes, duplicates and palette clicks step down and right instead of
    piling up on one another."""
    taken = {tuple(_pos(p)) for p in occupied}
    k = first
    while any(tuple(_pos((x + k * step[0], y + k * step[1]))) in taken for x, y in places):
        k += 1
    return k * step[0], k * step[1]


def _pos(position: Iterable[float]) -> list[float]:
    x, y = position
    return [round(float(x), 1), round(float(y), 1)]


def key_params(node: Node, limit: int = 3) -> str:
    """A short line of the params that are set, for the node's face: ``out_channels=6 kernel_size=5``."""
    items = [(k, v) for k, v in node.params.items() if k != "name"]
    text = " ".join(f"{k}={_compact(v)}" for k, v in items[:limit])
    return text + (" …" if len(items) > limit else "")


def _compact(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    return str(value)
