"""The graph document (format ``netcanvas.graph``): pydantic models, load, save, migrations.

The document is plain data: no torch, no derived state. Node params stay a raw dict here,
so that a document with a bad param still loads and the editor can show the problem;
``validate`` checks them against each block's spec.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from graphcore.core.diagnostics import Diagnostic, GraphError, error

FORMAT: Final = "netcanvas.graph"
VERSION = 1

Migration = Callable[[dict], dict]
MIGRATIONS: dict[int, Migration] = {}
"""``MIGRATIONS[v]`` turns a version-``v`` document (a dict) into a version ``v + 1`` one."""

MAX_DEPTH = 200
"""How deeply a document's JSON may nest. Enough for any graph, and well inside what the JSON
parser, pydantic and the writer handle, so that every document that loads also saves."""
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # what write_atomic writes to before its rename


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Node(_Model):
    """One block in the graph: its id, block type, raw params and an optional label."""

    id: str
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None


class Edge(_Model):
    """A connection from an output port of one node to an input port of another."""

    src: str
    dst: str
    src_port: str = "out"
    dst_port: str = "in"


class GraphDoc(_Model):
    """A whole graph document: nodes, edges, named subgraphs, and editor and user metadata."""

    format: Literal["netcanvas.graph"] = FORMAT
    version: int = VERSION
    name: str = "untitled"
    nodes: list[Node] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)
    subgraphs: dict[str, GraphDoc] = Field(default_factory=dict)
    ui: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    def node(self, node_id: str) -> Node | None:
        """The node with this id, or None."""
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
    """A document from its parsed JSON form, migrated to the current version; problems raise ``GraphError``."""
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


def _load_problem(data: dict, err: ErrorDetails, source: str) -> Diagnostic:
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
    except RecursionError:  # the parser recurses once per level
        raise GraphError(f"{source}: JSON nested more than {MAX_DEPTH} levels deep") from None
    _check_depth(data, source)
    return from_dict(data, source)


def _check_depth(data: Any, source: str) -> None:
    """Refuse JSON nested deeper than ``MAX_DEPTH``, naming where (its first three keys)."""
    if not _nests_deeper(data, MAX_DEPTH):
        return
    where: list[str] = []
    value, limit = data, MAX_DEPTH
    while len(where) < 3 and isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        key, value = next((k, child) for k, child in items if _nests_deeper(child, limit - 1))
        where.append(str(key))
        limit -= 1
    raise GraphError(f"{source}: JSON nested more than {MAX_DEPTH} levels deep (at {'.'.join(where)}…)")


def _nests_deeper(value: Any, limit: int) -> bool:
    """Do lists and dicts nest more than ``limit`` levels in ``value`` (itself one)? Level by
    level, not recursively: the depth is the user's."""
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        level = [child for v in level for child in (v.values() if isinstance(v, dict) else v)
                 if isinstance(child, dict | list)]
        if not level:
            return False
    return bool(level)


def load(path: str | os.PathLike) -> GraphDoc:
    """Read a graph from a JSON file. Problems raise ``GraphError`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return loads(text, str(path))


COMPACT: dict[str, Any] = {"separators": (",", ":")}
INDENTED: dict[str, Any] = {"indent": 2}


def dumps(doc: GraphDoc, *, compact: bool = False) -> str:
    """The document as JSON text, readable (non-ASCII kept) yet always encodable as UTF-8: a lone
    surrogate (``"\\ud800"`` in a loaded file) is written back as that escape, so it round-trips.
    ``compact``: on one line, for the editor's drafts and change checks, about 3x faster on a big graph
    (indented output goes through the json module's pure-Python encoder)."""
    try:
        text = json.dumps(doc.to_dict(), ensure_ascii=False, **COMPACT if compact else INDENTED)
    except (TypeError, ValueError, RecursionError) as exc:  # too deep, or a value JSON cannot hold
        raise GraphError(f"graph {doc.name!r} cannot be written as JSON: {exc}") from None
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


def save(doc: GraphDoc, path: str | os.PathLike) -> None:
    """Write atomically: a temp file beside the target, then a rename, so a crash never
    leaves half a file and the previous version stays intact until the new one is complete."""
    write_atomic(Path(path), dumps(doc).encode("utf-8"))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file beside it and a rename, so a crash never
    leaves half a file. The file gets the mode a plain ``open`` would give it: the replaced
    file's, or 0o666 less the user's umask for a new one."""
    if not path.name:
        raise GraphError(f"{path}: cannot write: not a file name")
    try:
        fd, tmp = _temp_beside(path)
    except OSError as exc:
        raise GraphError(f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            _keep_mode(tmp, path)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GraphError(f"{path}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def leftover_temp_files(folder: Path) -> list[Path]:
    """The temp files of writes in ``folder`` that never finished (their process was killed)."""
    return [p for p in folder.glob(".*.tmp") if _TEMP_NAME.fullmatch(p.name)]


def _temp_beside(path: Path) -> tuple[int, Path]:
    """A new file next to ``path`` (so the rename is atomic), created with mode 0o666 for the
    kernel to apply the umask to, as ``open`` does (``mkstemp`` would make it 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name")


def _keep_mode(tmp: Path, path: Path) -> None:
    """Give the temp file the permissions of the file it replaces, if there is one."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except FileNotFoundError:
        return
    os.chmod(tmp, mode)
