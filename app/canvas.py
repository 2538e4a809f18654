"""The canvas element: the Vue Flow graph view, built from the repository's ``static/`` into ``app/static/bundle``
(package data, so an installed wheel serves it; ``make bundle`` rebuilds it).

Python state goes down as the ``graph`` prop (a whole document, on load) and as deltas
(``apply``), with the ``categories`` prop (``blocks.categories``: each node's colour) once;
what the user does comes up as ``edit`` events (``{"op": ..., ...}``, the messages of
``graphcore.editing.ops``) and ``select`` events (a list of node ids); after each pan, zoom or
fit a ``view`` event says where the view's centre is (``[x, y]`` in graph coordinates), and a
``viewport`` event where the view is (Vue Flow's pan and zoom, ``{"x", "y", "zoom"}``, what a
reload restores instead of fitting the graph anew). The browser never decides anything about the graph.

Node views travel compact (``compact``): a field at its default value (``DEFAULTS``: no problems, one
port ``in`` and one ``out``...) is left out; a whole graph sends each distinct face (type, category,
params, key params, ports: ``FACE``) once, in ``faces``, and each node the index of its own (a model's
repeated layers share theirs); an edge goes without its id and default ports (``compact_edge``). The
canvas fills them back in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from nicegui.element import Element
from nicegui.events import GenericEventArguments

from blocks import categories
from graphcore.editing.session import Delta

# What a node view's or an edge view's field is when the canvas gets none (static/src/FlowCanvas.vue's
# DEFAULTS and EDGE_DEFAULTS).
DEFAULTS: dict[str, Any] = {"label": None, "summary": "", "params": {}, "inputs": ["in"], "outputs": ["out"],
                            "shapes": {}, "problems": []}
EDGE_DEFAULTS = {"sourceHandle": "out", "targetHandle": "in"}
FACE = ("type", "category", "params", "summary", "inputs", "outputs")  # what a node's type and params decide


class Canvas(Element, component="static/canvas.js", esm={"netcanvas-flow": "static/bundle"}):
    """A graph canvas; ``on_edit(payload)`` gets each edit the user makes (still to be parsed with
    ``graphcore.editing.ops.parse_edit``), ``on_select(list)`` the selection."""

    def __init__(self, view: dict, *, on_edit: Callable[[Any], Any], on_select: Callable[[list[str]], Any],
                 viewport: dict[str, float] | None = None) -> None:
        super().__init__()
        self._version = 0
        self.center: tuple[float, float] | None = None
        """The middle of what the canvas shows, in graph coordinates (None until it has said)."""
        self.viewport: dict[str, float] | None = None
        """Where the view is, ``{"x", "y", "zoom"}`` (Vue Flow's pan and zoom), as the canvas last said."""
        self._props["categories"] = categories.view()
        self.load(view, viewport=viewport, update=False)
        self.on("edit", lambda e: on_edit(_args(e)))
        self.on("select", lambda e: on_select(list(_args(e) or [])))
        self.on("view", self._viewed)
        self.on("viewport", self._moved)

    def load(self, view: dict, *, viewport: dict[str, float] | None = None, update: bool = True) -> None:
        """Show a whole new document (a new version number makes the browser redraw it), at ``viewport``
        (a reloaded tab's view), or else fitted into the canvas."""
        self._version += 1
        self.viewport = viewport
        # As tuples, the nodes and edges go to the page as they are: NiceGUI would copy a list of
        # dicts into observable ones, node by node (tens of ms for 300 nodes), for a view that is
        # only ever replaced whole.
        self._props["graph"] = {**compact_graph(view), "version": self._version, "viewport": viewport}
        if update:
            self.update()

    def apply(self, delta: Delta) -> None:
        """Redraw what an edit changed."""
        if not delta.empty or delta.ids:
            self.run_method("applyDelta", compact_delta(delta))

    def _viewed(self, event: GenericEventArguments) -> None:
        x, y = _args(event)
        self.center = (float(x), float(y))

    def _moved(self, event: GenericEventArguments) -> None:
        viewport = parse_viewport(_args(event))
        if viewport is not None:
            self.viewport = viewport

    def select(self, node_ids: list[str]) -> None:
        self.run_method("select", node_ids)

    def focus_node(self, node_id: str) -> None:
        self.run_method("focusNode", node_id)

    def auto_layout(self, selection_only: bool = False, direction: str | None = None) -> None:
        """Lay the blocks out in layers (in a Web Worker), towards ``direction`` ("RIGHT" or "DOWN") when given,
        else as last time; the canvas sends the new positions back as a move."""
        self.run_method("autoLayout", selection_only, direction)

    def fit(self) -> None:
        self.run_method("fit")


def compact_graph(view: dict) -> dict:
    """A whole view (``EditSession.view``'s form) as the canvas gets it: compact nodes and edges, and
    each distinct face once (``faces``; a node names its own by index, ``face``)."""
    index: dict[str, int] = {}
    faces: list[dict] = []
    nodes = []
    for node in view["nodes"]:
        face = {key: node[key] for key in FACE if key in node}
        number = index.setdefault(repr(face), len(faces))  # the same fields in the same order: node_face's
        if number == len(faces):
            faces.append(compact(face))
        rest = compact({key: value for key, value in node.items() if key not in FACE})
        rest["face"] = number
        nodes.append(rest)
    return {**view, "nodes": tuple(nodes), "edges": tuple(compact_edge(edge) for edge in view["edges"]),
            "faces": faces}


def compact_delta(delta: Delta) -> dict:
    """A delta as the canvas gets it: its whole node views compact in ``nodes``, its patches (nodes only
    re-analysed) in ``patches``, one per distinct result with the ids that share it (an edit at the top
    of a big graph gives thousands of blocks the same new shape), and its new edges compact."""
    nodes: dict[str, dict] = {}
    patches: dict[tuple, dict] = {}
    for nid, view in delta.nodes.items():
        if "type" in view:
            nodes[nid] = compact(view)
            continue
        shapes, problems = view["shapes"], view["problems"]  # a patch: node_results' fields and the id
        key = (tuple(shapes.items()), repr(problems) if problems else "")
        group = patches.get(key)
        if group is None:
            group = patches[key] = {**compact({"shapes": shapes, "problems": problems}), "ids": []}
        group["ids"].append(nid)
    return {**delta.to_dict(), "nodes": nodes, "patches": list(patches.values()),
            "edges_added": [compact_edge(edge) for edge in delta.edges_added]}


def compact(view: dict) -> dict:
    """A node view (or a delta's patch, or part of a view) without the fields at their default value."""
    return {key: value for key, value in view.items() if not (key in DEFAULTS and value == DEFAULTS[key])}


def compact_edge(edge: dict) -> dict:
    """An edge view without its id where it is the one its ends make, nor its default ports."""
    derived = edge_key(edge)
    return {key: value for key, value in edge.items()
            if not (key in EDGE_DEFAULTS and value == EDGE_DEFAULTS[key]) and not (key == "id" and value == derived)}


def edge_key(edge: dict) -> str:
    """The id the canvas gives an edge view that has none (``graphcore.editing.session.edge_key``'s form)."""
    return f"{edge['source']}.{edge['sourceHandle']}->{edge['target']}.{edge['targetHandle']}"


def parse_viewport(value: Any) -> dict[str, float] | None:
    """A viewport (from the browser, or a draft) as finite numbers, rounded well below a pixel; None
    if ``value`` is not one."""
    try:
        x, y, zoom = (float(value[key]) for key in ("x", "y", "zoom"))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x, y, zoom)) or zoom <= 0:
        return None
    return {"x": round(x, 2), "y": round(y, 2), "zoom": round(zoom, 5)}


def _args(event: GenericEventArguments) -> Any:
    """Vue emits one argument; NiceGUI may pass it bare or in a one-item list."""
    args = event.args
    if isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict | list):
        return args[0]
    return args
