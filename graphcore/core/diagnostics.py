"""Problems found in a graph, as data: the canvas paints them, the CLI prints them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    """One problem, pinned to a node (and port) where it has one."""

    severity: Severity
    node_id: str | None
    port: str | None
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.node_id is not None:
            where = f"node {self.node_id!r}" + (f", port {self.port!r}" if self.port else "") + ": "
        hint = f" ({self.hint})" if self.hint else ""
        return one_line(f"{self.severity}: {where}{self.message}{hint}")

    def to_dict(self) -> dict:
        """The diagnostic as a plain dict, for JSON output."""
        return asdict(self)


def error(node_id: str | None, message: str, hint: str | None = None, port: str | None = None) -> Diagnostic:
    """An error diagnostic: the graph cannot compile until it is fixed."""
    return Diagnostic("error", node_id, port, message, hint)


def warning(node_id: str | None, message: str, hint: str | None = None, port: str | None = None) -> Diagnostic:
    """A warning diagnostic: the graph compiles, but something looks wrong."""
    return Diagnostic("warning", node_id, port, message, hint)


def one_line(text: str) -> str:
    """Collapse newlines so that one problem is always one line."""
    return " ".join(text.split())


def errors(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Only the errors among ``diagnostics``."""
    return [d for d in diagnostics if d.severity == "error"]


class GraphError(Exception):
    """A user-facing problem with a graph (bad file, invalid graph). Carries diagnostics."""

    def __init__(self, diagnostics: list[Diagnostic] | str):
        if isinstance(diagnostics, str):
            diagnostics = [error(None, diagnostics)]
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))
