"""The canvas element: the Vue Flow graph view, built from the repository's ``static/`` into ``app/static/bundle``
(package data, so an installed wheel serves it; ``make bundle`` rebuilds it).

Python state goes down as the ``graph`` prop (a whole document, on load) and as deltas
(``apply``), with the ``categories`` prop (``blocks.categories``: each node's colour) once;
what the user does comes up as ``edit`` events (``{"op": ..., ...}``, the messages of
``graphcore.editing.ops``) and ``select`` events (a list of node ids); after each pan, zoom or
fit a ``view`` event says where the view's centre is (``[x, y]`` in graph coordinates), and a
``viewport`` event where the view is (Vue Flow's pan and zoom, ``{"x", "y", "zoom"}``, what a
reload restores instead of fitting the graph anew). The browser never decides anything about the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from nicegui.element import Element
from nicegui.events import GenericEventArguments

from blocks import categories
from graphcore.editing.session import Delta


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
        self._props["graph"] = {**view, "nodes": tuple(view["nodes"]), "edges": tuple(view["edges"]),
                                "version": self._version, "viewport": viewport}
        if update:
            self.update()

    def apply(self, delta: Delta) -> None:
        """Redraw what an edit changed."""
        if not delta.empty or delta.ids:
            self.run_method("applyDelta", delta.to_dict())

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
