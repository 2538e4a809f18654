"""Bundled template graphs (JSON files in ``graphcore/templates/``)."""

from __future__ import annotations

import os
from pathlib import Path

from blocks import nearest
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc, load

TEMPLATE_DIR = Path(__file__).parent.parent / "templates"


def templates() -> list[str]:
    """Names of the bundled templates."""
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.json"))


def template(name: str) -> GraphDoc:
    """A fresh copy of a bundled template."""
    path = TEMPLATE_DIR / f"{name}.json"
    if name not in templates():
        guess = nearest(name, templates())
        hint = f"did you mean {guess!r}?" if guess else f"templates: {', '.join(templates())}"
        raise GraphError(f"no template named {name!r} ({hint})")
    return load(path)


def open_graph(ref: str | os.PathLike) -> GraphDoc:
    """A graph file, or a template name where the file does not exist (as the CLI takes them)."""
    path = Path(ref)
    if path.exists() or path.suffix == ".json" or os.sep in str(ref):
        return load(path)
    return template(str(ref))
