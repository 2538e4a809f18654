"""The graph document (format ``netcanvas.graph``): pydantic models, load, save, migrations.

The document is plain data: no torch, no derived state. Node params stay a raw dict here,
so that a document with a bad param still loads and the editor can show the problem;
``validate`` checks them against each block's spec.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graphcore.core.diagnostics import GraphError, error

FORMAT = "netcanvas.graph"
VERSION = 1

Migration = Callable[[dict], dict]
MIGRATIONS: dict[int, Migration] = {}
"""``MIGRATIONS[v]`` turns a version-``v`` document (a dict) into a version ``v + 1`` one."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Node(_Model):
    id: str
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None


class Edge(_Model):
    src: str
    dst: str
    src_port: str = "out"
    dst_port: str = "in"


class GraphDoc(_Model):
    format: Literal["netcanvas.graph"] = FORMAT
    version: int = VERSION
    name: str = "untitled"
    nodes: list[Node] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)
    subgraphs: dict[str, GraphDoc] = Field(default_factory=dict)
    ui: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def to_dict(self) -> dict:
        """The JSON form: defaults left out, but format, version, name, nodes and edges always there."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        head = {"format": FORMAT, "version": self.version, "name": self.name, "nodes": [], "edges": []}
        return head | data


def migrate(data: dict, source: str = "<graph>") -> dict:
    """Bring an older document up to ``VERSION``; refuse a newer one."""
    version = data.get("version", VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise GraphError(f"{source}: 'version' must be a whole number, got {version!r}")
    if version > VERSION:
        raise GraphError(
            f"{source}: made by a newer NetCanvas (graph version {version}); this one reads up to "
            f"version {VERSION}. Update NetCanvas to open it."
        )
    while version < VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise GraphError(f"{source}: graph version {version} is too old to open (no migration from it)")
        data = step(dict(data))
        version += 1
        data["version"] = version
    return data


def from_dict(data: Any, source: str = "<graph>") -> GraphDoc:
    if not isinstance(data, dict):
        raise GraphError(f"{source}: a graph must be a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise GraphError(
            f"{source}: not a NetCanvas graph: 'format' is {data.get('format')!r}, expected {FORMAT!r}"
        )
    data = migrate(data, source)
    try:
        return GraphDoc.model_validate(data)
    except ValidationError as exc:
        raise GraphError([_load_problem(data, err, source) for err in exc.errors()]) from None


def _load_problem(data: dict, err: dict, source: str):
    """Turn a pydantic error into a diagnostic that names the node when it can."""
    loc = err["loc"]
    node_id = None
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
        node = data["nodes"][loc[1]]
        node_id = node.get("id") if isinstance(node, dict) and isinstance(node.get("id"), str) else None
    where = ".".join(str(part) for part in loc)
    message = err["msg"].lower() if err["type"] != "extra_forbidden" else "unknown field"
    return error(node_id, f"{source}: {where}: {message}", hint="fix this entry in the file")


def loads(text: str, source: str = "<string>") -> GraphDoc:
    """Parse a graph from JSON text. Problems raise ``GraphError`` with line and column."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    return from_dict(data, source)


def load(path: str | os.PathLike) -> GraphDoc:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return loads(text, str(path))


def dumps(doc: GraphDoc) -> str:
    return json.dumps(doc.to_dict(), indent=2, ensure_ascii=False) + "\n"


def save(doc: GraphDoc, path: str | os.PathLike) -> None:
    """Write atomically: a temp file beside the target, then a rename, so a crash never
    leaves half a file and the previous version stays intact until the new one is complete."""
    write_atomic(Path(path), dumps(doc).encode("utf-8"))


def write_atomic(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise GraphError(f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise GraphError(f"{path}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
