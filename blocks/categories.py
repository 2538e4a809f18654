"""Block categories: the one list of them, with the label, colour and order the editor shows.

A spec's ``category`` must be one of these (``register`` refuses any other), so the palette
groups every block and the canvas colours every node from this table, never from a list of
names kept in the stylesheet. The order here is the palette's order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COLOUR = re.compile(r"#[0-9a-f]{6}")


@dataclass(frozen=True)
class Category:
    """A group of block types: its palette label, and the colour of its nodes' left stripe.

    ``fill`` is the node's background where it differs from the default white (a subgraph
    node looks like a box of blocks); ``expanded``: its palette section starts open.
    """

    name: str
    label: str
    colour: str
    fill: str | None = None
    expanded: bool = False

    def __post_init__(self) -> None:
        assert COLOUR.fullmatch(self.colour), f"category {self.name!r}: colour {self.colour!r} is not #rrggbb"
        assert self.fill is None or COLOUR.fullmatch(self.fill), f"category {self.name!r}: fill {self.fill!r}"


CATEGORIES: tuple[Category, ...] = (
    Category("io", "Input/output", "#0b6e4f", expanded=True),
    Category("conv", "Convolution", "#1976d2", expanded=True),
    Category("dense", "Dense", "#7b1fa2"),
    Category("activation", "Activations", "#f9a825"),
    Category("norm", "Normalisation", "#00897b"),
    Category("pool", "Pooling", "#5d4037"),
    Category("regularisation", "Regularisation", "#9e9d24"),
    Category("reshape", "Reshape", "#90a4ae"),
    Category("merge", "Merge", "#c2185b"),
    Category("math", "Math", "#5e35b1"),
    Category("residual", "Residual", "#3949ab"),
    Category("attention", "Attention", "#e64a19"),
    Category("diffusion", "Diffusion", "#00acc1"),
    Category("gan", "GAN (StyleGAN2)", "#d81b60"),
    Category("video", "Video", "#7cb342"),
    # NetCanvas's own: a file's subgraphs, and nodes whose type no spec declares.
    Category("subgraph", "Subgraphs", "#455a64", fill="#eceff1"),
    Category("unknown", "Unknown type", "#9aa5b1"),
)
UNKNOWN = "unknown"
"""The category the canvas gets for a node whose type is not known."""

_BY_NAME = {c.name: c for c in CATEGORIES}
assert len(_BY_NAME) == len(CATEGORIES), "a category is declared twice"


def get(name: str) -> Category | None:
    """The category called ``name``, or None when there is none."""
    return _BY_NAME.get(name)


def names() -> list[str]:
    """Every category name, in display order."""
    return list(_BY_NAME)


def check(block_type: str, name: str) -> None:
    """Refuse a block type whose category is not declared here."""
    if name not in _BY_NAME:
        raise ValueError(f"block type {block_type!r}: unknown category {name!r} "
                         f"(declare it in blocks/categories.py; known: {', '.join(_BY_NAME)})")


def view() -> dict[str, dict]:
    """What the canvas needs to draw each category: name -> label, colour, fill."""
    return {c.name: {"label": c.label, "colour": c.colour, "fill": c.fill} for c in CATEGORIES}
