"""What the canvas draws of one level of a file: subgraph nodes collapsed or expanded in place,
and chains of identical subgraphs stacked into one block.

A subgraph node draws collapsed, as one block with its ports and shapes. Expanded (its view id in
``ViewState.expanded``), it draws as a frame at the node's place holding its inner blocks, with the
shapes of that instance (the subgraph's analysis for the shapes reaching this node, one per copy of
its ``repeat``); the edges from and to it go to the inner blocks they feed and come from, and the
nodes right of it and below it move aside by the frame's extra width and height. Expansions nest.
Inner blocks are read-only: their ids are view ids (``outer/inner``, ``outer/2/inner`` for the
second copy of a repeat), which no document holds; the frame says to open the subgraph to edit.

A chain of two or more subgraph nodes of one type, each feeding the next and nothing else (a ViT's
encoder layers), draws as one block with a ``xN`` badge, under the view id of its first node,
until its view id is in ``ViewState.unstacked``.

This is a view: the expanded and unstacked sets are the tab's, not the document's, and
``Projection.document_positions`` turns a drag on the canvas back into document positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from blocks import ShapeError
from graphcore.core.analysis import Analysis
from graphcore.core.document import Edge, Node
from graphcore.core.subgraphs import PREFIX, SubgraphParams, boundary
from graphcore.editing.session import Delta, EditSession, edge_key, node_view

BLOCK = (233.0, 75.0)  # a block's size on the canvas, about: BlockNode's widest and a typical height
PAD, HEADER = 24.0, 40.0  # a frame's margin around its blocks, and the height of its title bar
COPY_GAP = 60.0  # between the copies of a repeated subgraph in one frame
SEP = "/"  # joins an instance's view id and an inner node's id; no document id holds it
End = tuple[str, str]  # (view id, port) of a drawn block
PASS = "<in>"  # an output fed straight from an input of the same subgraph: (PASS, input port)


@dataclass(frozen=True)
class ViewState:
    """A tab's view of one level: which subgraph instances are expanded, which stacks unstacked."""

    expanded: frozenset[str] = frozenset()
    unstacked: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, list[str]]:
        """As a draft keeps it."""
        return {"expanded": sorted(self.expanded), "unstacked": sorted(self.unstacked)}

    @classmethod
    def from_dict(cls, value: Any) -> ViewState:
        """A state read back from a draft; an empty one for anything that is not one."""
        if not isinstance(value, dict):
            return cls()
        sets = [value.get(key) for key in ("expanded", "unstacked")]
        expanded, unstacked = (frozenset(v for v in s if isinstance(v, str)) if isinstance(s, list) else frozenset()
                               for s in sets)
        return cls(expanded, unstacked)


@dataclass
class Projection:
    """The drawn level: node views (frames before what they hold, ``parent`` naming a block's frame),
    edge views, and how far each top-level block was moved aside (view id -> [dx, dy])."""

    nodes: dict[str, dict] = field(default_factory=dict)
    edges: dict[str, dict] = field(default_factory=dict)
    offsets: dict[str, list[float]] = field(default_factory=dict)
    documents: dict[str, str] = field(default_factory=dict)  # top-level view id -> the node it draws
    stacks: dict[str, list[str]] = field(default_factory=dict)  # stack's view id -> members' view ids
    edge_documents: dict[str, str] = field(default_factory=dict)  # a drawn edge of the level -> its edge's id
    plain: bool = False  # nothing expanded and no chain to stack: each node drawn as itself, where it is

    def view(self, name: str) -> dict:
        """The whole view for the canvas (``EditSession.view``'s form)."""
        return {"name": name, "nodes": list(self.nodes.values()), "edges": list(self.edges.values())}

    def document_positions(self, positions: Mapping[str, Iterable[float]]) -> dict[str, tuple[float, float]]:
        """Positions dragged to on the canvas as document positions, for the top-level blocks and
        frames among them (inner blocks do not move)."""
        moved = {}
        for vid, (x, y) in ((v, tuple(p)) for v, p in positions.items()):
            if vid in self.documents:
                dx, dy = self.offsets.get(vid, (0.0, 0.0))
                moved[self.documents[vid]] = (x - dx, y - dy)
        return moved


    def document_edges(self, view_ids: Iterable[str]) -> list[str]:
        """The document edges that drawn edges stand for: an edge into an expanded module is drawn to
        each inner block its port feeds, and deleting any of them deletes it; edges inside a frame
        stand for none (its blocks are read-only here)."""
        return list(dict.fromkeys(self.edge_documents[vid] for vid in view_ids if vid in self.edge_documents))

    def document_ids(self, view_ids: Iterable[str]) -> list[str]:
        """The document nodes that top-level view ids draw: a frame's node, every node of a stack (a
        delete or a duplicate of a stack takes them all); inner blocks draw none."""
        found = []
        for vid in view_ids:
            view = self.nodes.get(vid, {})
            found += self.stacks[vid] if "stack" in view else [self.documents[vid]] if vid in self.documents else []
        return list(dict.fromkeys(found))


def has_subgraphs(session: EditSession) -> bool:
    """Whether a level has anything to collapse or stack (else its projection is its plain view)."""
    return any(node.type.startswith(PREFIX) for node in session.doc.nodes)


def project(session: EditSession, state: ViewState, *, stacks: bool = True) -> Projection:
    """The drawn form of a session's level under ``state`` (``stacks``: stack chains of one subgraph)."""
    projection = Projection()
    level = _Level(session.analysis, session.positions, "", None, state, stacks, projection)
    level.draw()
    projection.plain = not level.children and not projection.stacks
    return projection


def follow(projection: Projection, delta: Delta) -> Delta | None:
    """The session's ``delta`` as the change to a plain projection's drawing, and the projection kept
    up to date with it: in time with what the edit changed, not with the level's size. None where
    the edit may draw the level otherwise (a block added or removed, an edge, a subgraph node's
    params, which may now stack it) and for an empty delta (what a change of the view state sends):
    then ``project`` and ``diff``."""
    if not projection.plain or delta.empty or delta.document or delta.removed or delta.edges_added \
            or delta.edges_removed:
        return None
    views = projection.nodes
    for vid, view in delta.nodes.items():
        if vid not in views or ("type" in view and view["type"].startswith(PREFIX)):
            return None
    change = Delta(ids=delta.ids)
    for vid, view in delta.nodes.items():
        if "type" in view:  # a whole view: the block was edited
            views[vid] = change.nodes[vid] = {**view, "toggles": views[vid]["toggles"]}
        else:  # its analysis results alone
            views[vid].update((key, view[key]) for key in PATCHED)
            change.nodes[vid] = view
    for vid, position in delta.positions.items():
        if vid in views:
            views[vid]["position"] = change.positions[vid] = position
    return change


def toggle(state: ViewState, projection: Projection, op: str, view_id: str) -> ViewState:
    """The state after a click on a block's expand or collapse control: ``expand`` a stack (shows its
    blocks) or a subgraph (in place); ``collapse`` a frame (``id/``) or stack again a stack's block."""
    if op == "expand":
        if view_id in projection.stacks and view_id not in state.unstacked:
            return replace(state, unstacked=state.unstacked | {view_id})
        return replace(state, expanded=state.expanded | {view_id})
    if view_id.endswith(SEP):
        return replace(state, expanded=state.expanded - {view_id[:-1]})
    first = next((s for s, members in projection.stacks.items() if view_id in members), None)
    return replace(state, unstacked=state.unstacked - {first}) if first else state


def expand_all(session: EditSession, depth: int) -> ViewState:
    """Every stack and subgraph instance opened, ``depth`` levels deep."""
    state = ViewState()
    for _ in range(depth):
        shown = project(session, state)
        state = replace(state, unstacked=state.unstacked | set(shown.stacks))
        shown = project(session, state)
        expandable = {vid for vid, view in shown.nodes.items() if "expand" in _toggle_ops(view) and "stack" not in view}
        state = replace(state, expanded=state.expanded | expandable)
    return state


def document_path(view_id: str) -> list[str]:
    """The ids of the nodes to open, outermost first, to edit what a view id draws: ``a/2/b/`` ->
    ``["a", "b"]`` (a copy's number names no node)."""
    return [part for part in view_id.split(SEP) if part and not part.isdigit()]


def diff(old: Projection, new: Projection) -> Delta:
    """What the canvas must change to go from drawing ``old`` to drawing ``new``."""
    delta = Delta()
    for vid, view in new.nodes.items():
        before = old.nodes.get(vid)
        if before is None:
            delta.nodes[vid] = view
        elif _without(before, ("position",)) != _without(view, ("position",)):
            # Only its analysis results changed (an edit upstream): a patch of them, as EditSession sends.
            face = ("position", *PATCHED)
            same_face = _without(before, face) == _without(view, face)
            delta.nodes[vid] = {"id": vid, **{key: view[key] for key in PATCHED}} if same_face else view
        if before is not None and before["position"] != view["position"]:
            delta.positions[vid] = view["position"]
    delta.removed = [vid for vid in old.nodes if vid not in new.nodes]
    delta.edges_added = [e for eid, e in new.edges.items() if eid not in old.edges]
    delta.edges_removed = [eid for eid in old.edges if eid not in new.edges]
    return delta


PATCHED = ("shapes", "problems")  # what analysis decides of a view, all that an edit upstream changes


def _without(view: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in view.items() if k not in keys}


def _toggle_ops(view: dict) -> set[str]:
    return {t["op"] for t in view.get("toggles", ())}


class _Level:
    """One level drawn: the file's, or the inside of one copy of an expanded instance (``prefix``
    its view id and ``/``, ``frame`` its frame's view id). Inner levels leave their input and output
    nodes out: ``ins`` says which drawn ends each input port feeds, ``outs`` which end feeds each
    output port."""

    def __init__(self, analysis: Analysis, positions: Mapping[str, list[float]], prefix: str, frame: str | None,
                 state: ViewState, stacks: bool, out: Projection):
        self.analysis, self.positions, self.prefix, self.frame = analysis, positions, prefix, frame
        self.state, self.stacking, self.out = state, stacks, out
        self.inner = frame is not None
        self.doc = analysis.doc
        self.in_ports = {nid: port for port, nid in boundary(self.doc, "input")} if self.inner else {}
        self.out_ports = {nid: port for port, nid in boundary(self.doc, "output")} if self.inner else {}
        self.ins: dict[str, list[End]] = {port: [] for port in self.in_ports.values()}
        self.outs: dict[str, End] = {}
        self.members: dict[str, list[str]] = {}  # stack's first node id -> its node ids
        self.stack_of: dict[str, str] = {}  # a stacked node id -> its stack's first node id
        self.children: dict[str, _Instance] = {}  # expanded node id -> its instance
        self.views: list[dict] = []
        self.size = BLOCK

    def vid(self, node_id: str) -> str:
        return self.prefix + node_id

    # ------------------------------------------------------------------ drawing
    def draw(self) -> None:
        shown = [n for n in self.doc.nodes if n.id not in self.in_ports and n.id not in self.out_ports]
        self._find_stacks(shown)
        drawn = [n for n in shown if n.id not in self.stack_of or self.stack_of[n.id] == n.id]
        for node in drawn:
            if node.id not in self.stack_of and self.vid(node.id) in self.state.expanded:
                instance = _Instance.of(self, node)
                if instance is not None:
                    self.children[node.id] = instance
        places = self._places(drawn)
        for node in drawn:
            self._draw_node(node, places[node.id])
        self._draw_edges()

    def _places(self, drawn: list[Node]) -> dict[str, list[float]]:
        """Each drawn node's place: its position, moved right past every frame left of it and down
        past every frame above it (as if a row and a column were inserted per frame); an inner
        level's places start at its frame's margin."""
        base = {n.id: list(self.positions.get(n.id, [0.0, 0.0])) for n in drawn}
        places = {nid: list(p) for nid, p in base.items()}
        for eid, instance in self.children.items():
            dx, dy = instance.width - BLOCK[0], instance.height - BLOCK[1]
            for nid, (x, y) in base.items():
                if nid != eid:
                    places[nid][0] += dx if x > base[eid][0] else 0.0
                    places[nid][1] += dy if y > base[eid][1] else 0.0
        if not self.inner:
            for nid, place in places.items():
                vid = self._drawn_vid(nid)
                self.out.offsets[vid] = [place[0] - base[nid][0], place[1] - base[nid][1]]
            return places
        if not places:
            return places
        x0 = min(p[0] for p in places.values())
        y0 = min(p[1] for p in places.values())
        right = max(p[0] - x0 + self._box(nid)[0] for nid, p in places.items())
        bottom = max(p[1] - y0 + self._box(nid)[1] for nid, p in places.items())
        self.size = (right, bottom)
        return {nid: [round(p[0] - x0, 1), round(p[1] - y0, 1)] for nid, p in places.items()}

    def _box(self, node_id: str) -> tuple[float, float]:
        instance = self.children.get(node_id)
        return (instance.width, instance.height) if instance else BLOCK

    def _drawn_vid(self, node_id: str) -> str:
        return self.vid(node_id) + (SEP if node_id in self.children else "")

    def _draw_node(self, node: Node, place: list[float]) -> None:
        vid = self.vid(node.id)
        instance = self.children.get(node.id)
        if instance is not None:
            self._emit(instance.frame_view(place), node.id)
            instance.draw()
            return
        view = node_view(self.analysis, node.id, place)
        view["id"] = vid
        toggles = []
        if node.id in self.members:
            toggles.append(self._stack(view, self.members[node.id]))
        elif node.type.startswith(PREFIX) and self.analysis.library.subgraph(node.type) is not None:
            toggles.append({"op": "expand", "title": "expand in place"})
        opened = next((ms for f, ms in self.out.stacks.items() if vid in ms and f in self.state.unstacked), None)
        if opened is not None:
            toggles.append({"op": "collapse", "title": f"stack the {len(opened)} blocks again"})
        view["toggles"] = toggles
        self._emit(view, node.id)

    def _stack(self, view: dict, members: list[str]) -> dict:
        """A stack's view: its first node's, with the last node's outputs, a badge and a label."""
        last = node_view(self.analysis, members[-1], view["position"])
        view.update(outputs=last["outputs"], shapes=last["shapes"], stack=len(members),
                    label=f"{view['label'] or members[0]} … {last['label'] or members[-1]}",
                    problems=[p for m in members for p in node_view(self.analysis, m, [0, 0])["problems"]])
        return {"op": "expand", "title": f"show the {len(members)} blocks"}

    def _emit(self, view: dict, node_id: str) -> None:
        if self.inner:
            view.update(inner=True, parent=self.frame)
            view["label"] = view.get("label") or node_id
        else:
            self.out.documents[view["id"]] = node_id
        self.views.append(view)
        self.out.nodes[view["id"]] = view

    # ------------------------------------------------------------------ stacks
    def _find_stacks(self, shown: list[Node]) -> None:
        """Chains of two or more nodes of one subgraph type, each one's only edge out going to the
        next one's only input; stacked unless their first node's view id is unstacked."""
        if not self.stacking:
            return
        by_id = {n.id: n for n in shown}
        edges_out: dict[str, list[Edge]] = {}
        edges_in: dict[str, list[Edge]] = {}
        for e in self.doc.edges:
            edges_out.setdefault(e.src, []).append(e)
            edges_in.setdefault(e.dst, []).append(e)
        after = {}
        for node in shown:
            outs = edges_out.get(node.id, [])
            if not node.type.startswith(PREFIX) or len(outs) != 1:
                continue
            nxt = by_id.get(outs[0].dst)
            if nxt is not None and nxt.type == node.type and len(edges_in.get(nxt.id, [])) == 1 \
                    and nxt.params == node.params:
                after[node.id] = nxt.id
        heads = set(after) - set(after.values())
        for head in (n.id for n in shown if n.id in heads):
            chain = [head]
            while chain[-1] in after:
                chain.append(after[chain[-1]])
            vids = [self.vid(m) for m in chain]
            self.out.stacks[self.vid(head)] = vids
            if self.vid(head) not in self.state.unstacked:
                self.members[head] = chain
                self.stack_of.update((m, head) for m in chain)

    # ------------------------------------------------------------------ edges
    def _draw_edges(self) -> None:
        for e in self.doc.edges:
            if e.src in self.stack_of and self.stack_of.get(e.dst) == self.stack_of[e.src]:
                continue  # inside a stack
            source = self.source(e.src, e.src_port)
            for target in self.targets(e.dst, e.dst_port, source):
                if source is not None and source[0] != PASS:
                    drawn = self._edge(source, target)
                    if not self.inner:
                        self.out.edge_documents[drawn] = edge_key(e)

    def _edge(self, source: End, target: End) -> str:
        eid = f"{source[0]}.{source[1]}->{target[0]}.{target[1]}"
        edge = {"id": eid, "source": source[0], "sourceHandle": source[1], "target": target[0],
                "targetHandle": target[1]}
        # Drawn over the frames its ends are in (Vue Flow draws edges under the blocks by default).
        depth = max(len(document_path(source[0])), len(document_path(target[0]))) - 1
        self.out.edges[eid] = {**edge, "zIndex": depth} if depth else edge
        return eid

    def source(self, node_id: str, port: str) -> End | None:
        """The drawn end that output ``port`` of ``node_id`` comes out of."""
        if node_id in self.in_ports:
            return (PASS, self.in_ports[node_id])
        if node_id in self.stack_of:
            return (self.vid(self.stack_of[node_id]), port)
        instance = self.children.get(node_id)
        if instance is None:
            return (self.vid(node_id), port)
        end = instance.outs.get(port)
        if end is None or end[0] != PASS:
            return end
        feeding = next((e for e in self.doc.edges if e.dst == node_id and e.dst_port == end[1]), None)
        return self.source(feeding.src, feeding.src_port) if feeding else None

    def targets(self, node_id: str, port: str, source: End | None) -> list[End]:
        """The drawn ends that input ``port`` of ``node_id`` goes into (recording boundary ends)."""
        if node_id in self.out_ports:
            if source is not None:
                self.outs[self.out_ports[node_id]] = source
            return []
        if node_id in self.stack_of:
            ends = [(self.vid(self.stack_of[node_id]), port)]
        elif node_id in self.children:
            ends = list(self.children[node_id].ins.get(port, []))
        else:
            ends = [(self.vid(node_id), port)]
        if source is not None and source[0] == PASS:
            self.ins[source[1]].extend(ends)
        return ends


class _Instance:
    """An expanded subgraph node: its frame and one inner level per copy, laid left to right."""

    def __init__(self, outer: _Level, node: Node, copies: list[Analysis]):
        self.outer, self.node, self.copies = outer, node, copies
        self.vid = outer.vid(node.id)
        self.frame = self.vid + SEP
        positions = copies[0].doc.ui.get("positions", {})
        many = len(copies) > 1
        self.levels = [_Level(a, positions, f"{self.vid}{SEP}{k + 1}{SEP}" if many else self.vid + SEP, self.frame,
                              outer.state, outer.stacking, outer.out) for k, a in enumerate(copies)]
        # Sizes first (a level's size needs its own expansions), views after the frame's.
        self._sized = [self._size_of(level) for level in self.levels]
        self.width = PAD * 2 + sum(w for w, _ in self._sized) + COPY_GAP * (len(self.levels) - 1)
        self.height = HEADER + PAD + max(h for _, h in self._sized)
        self.ins = self.levels[0].ins
        self.outs = self.levels[-1].outs

    @staticmethod
    def of(outer: _Level, node: Node) -> _Instance | None:
        """The instance of an expandable node, with each copy's analysis for the shapes reaching it
        (or the subgraph's own analysis where they do not resolve); None when it cannot expand."""
        library = outer.analysis.library
        subgraph = library.subgraph(node.type)
        if subgraph is None:
            return None
        arriving = outer.analysis.nodes[node.id].inputs
        try:
            params = SubgraphParams.model_validate(node.params)
            copies = subgraph.expand(params, arriving).copies if arriving is not None else []
        except (ShapeError, ValidationError, KeyError):
            copies = []
        return _Instance(outer, node, copies or [Analysis(subgraph.doc, library=library)])

    def _size_of(self, level: _Level) -> tuple[float, float]:
        """Draw a level into a scratch projection to learn its size (and its ends)."""
        scratch = Projection(stacks=self.outer.out.stacks)
        level.out = scratch
        level.draw()
        return level.size

    def frame_view(self, place: list[float]) -> dict:
        outer = self.outer
        view = node_view(outer.analysis, self.node.id, place)
        view.update(id=self.frame, kind="frame", width=round(self.width), height=round(self.height),
                    inputs=[], outputs=[], shapes={}, node=self.vid, copies=len(self.levels),
                    label=self.node.label or self.node.id,
                    hint="read-only here: double-click to open and edit",
                    toggles=[{"op": "collapse", "title": "collapse"}])
        return view

    def draw(self) -> None:
        """The copies' views, after the frame's, in the real projection; chained copies wired."""
        x = PAD
        for level, (width, _) in zip(self.levels, self._sized, strict=True):
            scratch = level.out
            for view in scratch.nodes.values():
                if view.get("parent") == self.frame:
                    view["position"] = [round(view["position"][0] + x, 1), round(view["position"][1] + HEADER, 1)]
                self.outer.out.nodes[view["id"]] = view
            self.outer.out.edges.update(scratch.edges)
            x += width + COPY_GAP
        for before, after in zip(self.levels, self.levels[1:], strict=False):
            source = before.outs.get("out")
            for target in after.ins.get("in", []):
                if source is not None and source[0] != PASS:
                    self.outer._edge(source, target)
