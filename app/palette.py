"""The palette: every block type, grouped by category, with a search field and, on hover, the
block's tooltip (its doc, ports and params). A click adds the block; a drag drops it on the canvas.

One element, drawn in the browser (``static/palette.js``) from one prop that is made once per
registry: an item and a tooltip per block type as NiceGUI elements were half of the server's work
to build a page, and a large part of the browser's to draw it; the search filters in the browser.
Collapsed sections draw no items, and one tooltip serves every item.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from nicegui import ui
from nicegui.element import Element
from nicegui.events import GenericEventArguments

import blocks
from app import forms
from blocks import categories

DRAG_TYPE = "application/x-netcanvas-block"
"""The drag data type of a block dragged from the palette (the canvas's drop reads it)."""
CSS = """
.nc-palette { display: flex; flex-direction: column; gap: 4px; width: 100%; flex: 1 1 0; min-height: 0; }
.nc-palette-scroll { flex: 1 1 0; width: 100%; }
.nc-palette-section { border-left: 4px solid transparent; }  /* its colour: the category's, set on each */
.nc-palette-item { cursor: grab; display: flex; align-items: center; min-height: 28px; padding: 2px 16px;
  font-family: ui-monospace, monospace; font-size: 12px; }
.nc-palette-item:hover { background: rgba(0, 0, 0, 0.06); }
.nc-palette-tip { white-space: pre-line; font-size: 12px; max-width: 340px; line-height: 1.45; }
"""
_made: dict[tuple[int, ...], list[dict]] = {}  # the registry's specs (by id) -> their sections


class Palette(Element, component="static/palette.js"):
    """The block palette; ``on_add(type_id)`` gets each block type the user clicks."""

    def __init__(self, on_add: Callable[[str], Any]) -> None:
        super().__init__()
        ui.add_css(CSS)
        self._props["sections"] = sections()
        self._props["drag-type"] = DRAG_TYPE
        self.on("add", lambda e: self._added(e, on_add))

    @staticmethod
    def _added(event: GenericEventArguments, on_add: Callable[[str], Any]) -> None:
        if isinstance(event.args, str) and blocks.get(event.args) is not None:
            on_add(event.args)


def sections() -> list[dict]:
    """The palette's content: per category in the table's order (``blocks.categories``), its name,
    label, colour, whether it starts open, and its blocks (``type``, ``tip``: the tooltip, ``words``:
    what the search looks in), sorted by type. Made once for the registry as it is, and shared."""
    specs = blocks.all_specs()
    key = tuple(map(id, specs))
    if key not in _made:
        _made.clear()  # the registry changed (a test registered a block): the old content is stale
        _made[key] = _sections(specs)
    return _made[key]


def _sections(specs: list[blocks.BlockSpec]) -> list[dict]:
    by_category: dict[str, list[blocks.BlockSpec]] = defaultdict(list)
    for spec in specs:
        by_category[spec.category].append(spec)
    return [{"name": c.name, "label": c.label, "colour": c.colour, "expanded": c.expanded,
             "blocks": [{"type": s.type, "tip": forms.tooltip(s),
                         "words": f"{s.type} {c.name} {c.label} {s.doc}".lower()}
                        for s in sorted(by_category[c.name], key=lambda s: s.type)]}
            for c in categories.CATEGORIES if c.name in by_category]
