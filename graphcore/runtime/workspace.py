"""A workspace: the folder ``netcanvas [DIR]`` works in, holding a user's graphs, runs and weights.

    ws = Workspace(Path("~/nets").expanduser()).create()   # makes graphs/ and runs/ if absent
    ws.save_graph("mnist-cnn", doc)                        # graphs/mnist-cnn.json, atomically
    [g.name for g in ws.graphs()]                          # recent first
    [(r.name, r.status, r.best) for r in ws.runs()]        # runs/*: running | finished | ... | unreadable
    ws.save_draft(tab_id, payload)                         # an editor tab's draft (see below)

Layout::

    ROOT/graphs/NAME.json           graphs saved under a name the user typed
    ROOT/runs/NAME/                 run folders (see graphcore.runtime.train), each with status.json
    ROOT/.netcanvas/weights/KEY.pt  imported weights (an opened .onnx's), KEY = sha256 of their source
    ROOT/.netcanvas/drafts/ID.json  each editor tab's draft: what a reload, or a new tab after a closed one, restores

Nothing is ever written outside ROOT: every path is resolved (links followed) and checked to lie
inside it before anything is written, so a ``graphs`` link pointing elsewhere is refused, not
followed. Every write goes through a temp file and a rename (``write_atomic``).

A run's state lives in ``runs/NAME/status.json`` (``{"status", "pid", "device", "started", "ended",
"message"}``), which the Trainer writes through ``write_status`` when it starts and when it ends.
A "running" status whose process is gone reads as "failed", so a killed job never stays "running".

A draft is the editor's (``app.drafts`` fills it): a JSON object holding the document's JSON text
("document"), its "name", whether it has "unsaved" changes (kept nowhere else) and the "time" it
was written, besides whatever else the editor keeps (the view, the open panel). A damaged draft is
skipped, never a crash; ``prune_drafts`` removes the ones nobody will miss.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from graphcore.core.diagnostics import GraphError, one_line
from graphcore.core.document import GraphDoc, load, save, write_atomic
from graphcore.core.summary import summary

NAME_LIMIT = 100
NAME_RULE = (f"a name is 1-{NAME_LIMIT} characters, starts with neither '.' nor a space, ends without a "
             "space, and has no '/', '\\', '..' or control characters")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")

RUN_MARKER, RUN_FORMAT, RUN_VERSION = ".netcanvas-run", "netcanvas.run", 1  # marks every run folder, written first
STATUS_FILE = "status.json"
RUN_STATUSES = ("running", "finished", "stopped", "failed")  # what status.json may say
TRAINER_STATUS = {"finished": "finished", "time_limit": "finished", "stopped": "stopped", "nan": "failed"}
"""The status a run folder records for each way ``Trainer.fit`` can end (``TrainResult.status``)."""
VANISHED = "the process ended without saying why"
PID_SLACK = 5.0  # seconds: a process begun this long after its run's start time is another one with the same pid
DRAFT_FORMAT = "netcanvas.draft"  # every draft file says so: another JSON file in drafts/ is not one
DRAFT_AGE = 24 * 3600.0
"""Seconds a draft with nothing unsaved (or a damaged one) is kept after it was last written."""
DRAFT_LIMIT = 50
"""The most drafts kept: beyond it the oldest go, those with nothing unsaved first."""


@dataclass(frozen=True)
class GraphEntry:
    """One file in ``graphs/``: its name (the file name less ``.json``), size of the graph, and when
    it was last written (``modified``: what ``save_graph(expected_mtime=...)`` compares). A file that
    cannot be read is listed with ``error`` (one line) and no blocks or params."""

    name: str
    path: Path
    modified: float
    blocks: int | None = None
    params: int | None = None  # None also when the graph has errors that stop its shapes
    error: str | None = None


@dataclass(frozen=True)
class RunEntry:
    """One folder in ``runs/``. ``status`` is running, finished, stopped, failed or unreadable (then
    ``error`` says why); ``best`` holds the best validation figures (lowest loss, highest accuracy);
    ``duration`` is seconds from start to end (to now while running); ``started`` is ISO 8601 UTC."""

    name: str
    path: Path
    status: str
    graph: str | None = None
    task: str | None = None
    best: dict[str, float] = field(default_factory=dict)
    duration: float | None = None
    device: str | None = None
    started: str | None = None
    message: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class DraftEntry:
    """One tab's draft, ``.netcanvas/drafts/ID.json``: the ``payload`` as the editor saved it, and
    what the workspace reads from it: the graph's ``name``, whether it holds ``unsaved`` changes,
    and the ``time`` it was written (seconds since the epoch)."""

    id: str
    path: Path
    name: str
    unsaved: bool
    time: float
    payload: dict[str, Any] = field(repr=False, compare=False)


# ------------------------------------------------------------------ names and paths
def check_name(name: str, what: str = "graph") -> str:
    """``name`` if it is a safe file name for a graph or run, else a GraphError saying what is allowed."""
    if not isinstance(name, str) or not name or len(name) > NAME_LIMIT or name.startswith(".") \
            or "/" in name or "\\" in name or ".." in name or _CONTROL.search(name) or name != name.strip():
        shown = repr(name[:40] + "…" if isinstance(name, str) and len(name) > 40 else name)
        raise GraphError(f"{what} name {shown} is not allowed: {NAME_RULE}")
    return name


def safe_name(text: str) -> str:
    """A valid name made from any text (a graph's own name, say): bad characters become ``_``."""
    cleaned = _CONTROL.sub("_", str(text)).replace("/", "_").replace("\\", "_").replace("..", "_")
    cleaned = cleaned.strip().lstrip(".").strip()[:NAME_LIMIT - 8].strip()  # room for a "-N" suffix
    return cleaned or "untitled"


def weights_key(data: bytes) -> str:
    """The key imported weights are kept under: the sha256 of their source's bytes."""
    return hashlib.sha256(data).hexdigest()


def reason(exc: BaseException) -> str:
    """An exception as the one line a list shows beside an unreadable entry (no "error:" prefix)."""
    if isinstance(exc, GraphError):
        return "; ".join(str(d).removeprefix(f"{d.severity}: ") for d in exc.diagnostics)
    return one_line(str(exc)) or type(exc).__name__


def timestamp() -> str:
    """Now, as status.json records it: ISO 8601 in UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------ the workspace
class Workspace:
    """The folder a user works in. Reads never raise for a damaged file (it is listed with its
    reason); writes refuse bad names, existing names (unless asked) and anything outside ROOT."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.graphs_dir = self.root / "graphs"
        self.runs_dir = self.root / "runs"
        self.weights_dir = self.root / ".netcanvas" / "weights"
        self.drafts_dir = self.root / ".netcanvas" / "drafts"
        self._graph_cache: dict[tuple[str, int, int], GraphEntry] = {}

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def create(self) -> Workspace:
        """Make ROOT, ``graphs/`` and ``runs/`` if absent; refuse a ROOT that is a file."""
        if self.root.exists() and not self.root.is_dir():
            raise GraphError(f"{self.root}: is a file, not a folder")
        for folder in (self.root, self.graphs_dir, self.runs_dir):
            self._make_dir(folder)
        return self

    # ---------------------------------------------------------------- graphs
    def graphs(self) -> list[GraphEntry]:
        """Every ``graphs/*.json``, most recently modified first."""
        if not self._is_inside(self.graphs_dir) or not self.graphs_dir.is_dir():
            return []
        cache, self._graph_cache = self._graph_cache, {}  # only the versions on disk now stay cached
        entries = [self._graph_entry(path, cache) for path in self.graphs_dir.glob("*.json")
                   if not path.name.startswith(".")]
        return sorted((e for e in entries if e is not None), key=lambda e: (-e.modified, e.name))

    def graph_path(self, name: str) -> Path:
        """Where the graph ``name`` is (or would be) kept: ``graphs/NAME.json``, checked inside ROOT."""
        return self._inside(self.graphs_dir / f"{check_name(name)}.json")

    def save_graph(self, name: str, doc: GraphDoc, *, overwrite: bool = False,
                   expected_mtime: float | None = None) -> Path:
        """Write ``doc`` (named ``name``) to ``graphs/NAME.json``. An existing file is replaced only
        with ``overwrite``; with ``expected_mtime`` (the ``modified`` the caller last saw) too, only
        if nobody (another tab) has written it since. Returns the path."""
        path = self.graph_path(name)
        current = _mtime(path)
        if current is not None and not overwrite:
            raise GraphError(f"a graph named {name!r} already exists in {self.graphs_dir}: "
                             "overwrite it or choose another name")
        if current is not None and expected_mtime is not None and abs(current - expected_mtime) > 1e-6:
            raise GraphError(f"graph {name!r} was saved elsewhere (another tab?) since you opened it "
                             f"({_when(current)}): overwrite it anyway or choose another name")
        self._make_dir(self.graphs_dir)
        save(doc.model_copy(update={"name": name}), path)
        return path

    def load_graph(self, name: str) -> GraphDoc:
        """The graph saved as ``name``; a GraphError (one line naming the file) if absent or damaged."""
        path = self.graph_path(name)
        if not path.is_file():
            raise GraphError(f"no graph named {name!r} in {self.graphs_dir}")
        return load(path)

    def rename_graph(self, old: str, new: str) -> Path:
        """Give the graph ``old`` the name ``new`` (file and the name inside); refuses if ``new`` exists."""
        doc = self.load_graph(old)
        if old == new:
            return self.graph_path(old)
        path = self.save_graph(new, doc)  # refuses an existing name
        _remove(self.graph_path(old))
        return path

    def delete_graph(self, name: str) -> None:
        """Remove ``graphs/NAME.json``."""
        path = self.graph_path(name)
        if not path.is_file():
            raise GraphError(f"no graph named {name!r} in {self.graphs_dir}")
        _remove(path)

    def _graph_entry(self, path: Path, cache: dict[tuple[str, int, int], GraphEntry]) -> GraphEntry | None:
        try:
            st = path.stat()
        except OSError:  # removed while listing, or a dangling link
            return None
        key = (path.name, st.st_mtime_ns, st.st_size)
        # a big graph's params cost an analysis: once per version of the file
        entry = cache.get(key) or self._read_graph_entry(path, st.st_mtime)
        self._graph_cache[key] = entry
        return entry

    def _read_graph_entry(self, path: Path, modified: float) -> GraphEntry:
        name = path.name[:-len(".json")]
        try:
            check_name(name)
            self._inside(path)
            doc = load(path)
        except GraphError as exc:
            return GraphEntry(name, path, modified, error=reason(exc))
        try:
            params = summary(doc).total_params
        except (GraphError, ValueError, RuntimeError):  # a graph with errors has no sizes yet
            params = None
        return GraphEntry(name, path, modified, len(doc.nodes), params)

    # ---------------------------------------------------------------- imported weights
    def save_weights(self, key: str, state_dict: dict[str, torch.Tensor]) -> Path:
        """Keep imported weights under ``.netcanvas/weights/KEY.pt`` (KEY: see ``weights_key``);
        the same key again is the same content, so an existing file is kept as it is."""
        path = self.weights_path(key)
        if not path.is_file():
            self._make_dir(self.weights_dir)
            buffer = io.BytesIO()
            torch.save({name: tensor.detach().cpu() for name, tensor in state_dict.items()}, buffer)
            write_atomic(path, buffer.getvalue())
        return path

    def load_weights(self, key: str) -> dict[str, torch.Tensor]:
        """The weights saved under ``key``; a GraphError if they are gone or damaged."""
        path = self.weights_path(key)
        if not path.is_file():
            raise GraphError(f"no saved weights {key!r} in {self.weights_dir} (removed?): open the model again")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file: torch raises several kinds, some with pages of text
            raise GraphError(f"{path}: cannot read the saved weights ({type(exc).__name__}): "
                             "open the model again") from None
        if not isinstance(state, dict):
            raise GraphError(f"{path}: not a state_dict")
        return state

    def weights_path(self, key: str) -> Path:
        """Where the weights ``key`` are kept, checked inside ROOT."""
        return self._inside(self.weights_dir / f"{_check_key(key, 'weights key')}.pt")

    # ---------------------------------------------------------------- drafts
    def save_draft(self, draft_id: str, payload: dict[str, Any]) -> Path:
        """Keep a tab's draft (see the module's notes for ``payload``) in ``.netcanvas/drafts/ID.json``,
        atomically; a payload that could not be read back is refused (ValueError)."""
        path = self.draft_path(draft_id)
        _draft_entry(draft_id, path, payload)
        try:
            data = json.dumps({**payload, "format": DRAFT_FORMAT}).encode()  # ASCII: any text survives
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"draft {draft_id!r} cannot be written as JSON: {exc}") from None
        self._make_dir(self.drafts_dir)
        write_atomic(path, data)
        return path

    def load_draft(self, draft_id: str) -> DraftEntry:
        """The draft ``draft_id``; a GraphError (one line) if it is gone or damaged."""
        path = self.draft_path(draft_id)
        if not path.is_file():
            raise GraphError(f"no draft {draft_id!r} in {self.drafts_dir}")
        try:
            return self._read_draft(path)
        except ValueError as exc:
            raise GraphError(f"{path}: a damaged draft: {exc}") from None

    def drafts(self) -> list[DraftEntry]:
        """Every readable draft, most recently written first; a damaged one is skipped."""
        return _newest_first(self._scan_drafts()[0])

    def delete_draft(self, draft_id: str) -> None:
        """Remove a draft; one that is gone already is no error."""
        path = self.draft_path(draft_id)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise GraphError(f"{path}: cannot delete: {exc.strerror or exc}") from None

    def prune_drafts(self, keep: Collection[str] = (), now: float | None = None) -> list[DraftEntry]:
        """Remove the drafts nobody will miss: one with nothing unsaved, or a damaged one, last written
        more than ``DRAFT_AGE`` ago; then, beyond ``DRAFT_LIMIT``, the oldest (those with nothing
        unsaved first). The drafts in ``keep`` (open tabs') stay. Returns the drafts left, newest first."""
        now = time.time() if now is None else now
        readable, damaged = self._scan_drafts()
        old = now - DRAFT_AGE
        kept = [d for d in readable if d.id in keep]
        wanted = [d for d in readable if d.id not in keep and (d.unsaved or d.time >= old)]
        wanted.sort(key=lambda d: (d.unsaved, d.time), reverse=True)  # the first ones stay
        left = kept + wanted[:max(0, DRAFT_LIMIT - len(kept))]
        doomed = {d.path for d in readable} - {d.path for d in left}
        doomed |= {path for path in damaged if (_mtime(path) or now) < old}
        for path in doomed:
            try:
                path.unlink(missing_ok=True)
            except OSError:  # housekeeping: a file that will not go is tried again next time
                continue
        return _newest_first(left)

    def draft_path(self, draft_id: str) -> Path:
        """Where the draft ``draft_id`` is (or would be) kept, checked inside ROOT."""
        return self._inside(self.drafts_dir / f"{_check_key(draft_id, 'draft id')}.json")

    def _scan_drafts(self) -> tuple[list[DraftEntry], list[Path]]:
        """The drafts in ``drafts/``: those that read, and the damaged files."""
        if not self._is_inside(self.drafts_dir) or not self.drafts_dir.is_dir():
            return [], []
        readable: list[DraftEntry] = []
        damaged: list[Path] = []
        for path in self.drafts_dir.glob("*.json"):
            if path.name.startswith("."):  # a write under way (write_atomic's temp file)
                continue
            try:
                readable.append(self._read_draft(path))
            except ValueError:
                damaged.append(path)
        return readable, damaged

    def _read_draft(self, path: Path) -> DraftEntry:
        """The draft in ``path``; a ValueError saying why it is not one."""
        draft_id = path.name[:-len(".json")]
        if not _KEY.fullmatch(draft_id):
            raise ValueError(f"{draft_id!r} is not a draft id")
        if not self._is_inside(path):
            raise ValueError("it leads outside the workspace (a link?)")
        payload = _read_json(path)
        if not isinstance(payload, dict) or payload.get("format") != DRAFT_FORMAT:
            raise ValueError("not a NetCanvas draft, or torn")
        return _draft_entry(draft_id, path, payload)

    # ---------------------------------------------------------------- runs
    def runs(self) -> list[RunEntry]:
        """Every folder in ``runs/``, most recently started first; one that is not a readable run is
        listed as "unreadable" with the reason."""
        if not self._is_inside(self.runs_dir) or not self.runs_dir.is_dir():
            return []
        entries = [read_run(path) for path in self.runs_dir.iterdir()
                   if not path.name.startswith(".") and path.is_dir()]
        return sorted(entries, key=lambda r: (_parse_time(r.started) or _mtime(r.path) or 0.0, r.name), reverse=True)

    def run(self, name: str) -> RunEntry:
        """The run folder ``runs/NAME``, read as ``runs()`` reads it."""
        path = self.run_path(name)
        if not path.is_dir():
            raise GraphError(f"no run named {name!r} in {self.runs_dir}")
        return read_run(path)

    def run_path(self, name: str) -> Path:
        """``runs/NAME``, checked inside ROOT."""
        return self._inside(self.runs_dir / check_name(name, "run"))

    def delete_run(self, name: str) -> None:
        """Remove the run folder ``name``: refused while it runs, and for a folder NetCanvas did not make."""
        path = self.run_path(name)
        if path.is_symlink() or not path.is_dir():
            raise GraphError(f"no run folder named {name!r} in {self.runs_dir}")
        if not (path / RUN_MARKER).exists() and not (path / STATUS_FILE).exists():
            raise GraphError(f"{path}: not a NetCanvas run folder (no {RUN_MARKER}), so it is left alone; "
                             "delete it yourself if you mean to")
        if read_run(path).status == "running":
            raise GraphError(f"run {name!r} is running: stop it first")
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise GraphError(f"{path}: cannot delete: {exc.strerror or exc}") from None

    def new_run_dir(self, graph_name: str) -> Path:
        """Reserve a new run folder for ``graph_name``: ``runs/NAME``, or ``NAME-2``, ``-3``, … . It is
        made at once (two tabs never get the same one), marked as a run, and its status.json says
        "running" with the caller's pid until the Trainer writes its own; if the job never starts, the
        caller writes ``write_status(path, status="failed", message=...)``."""
        self._make_dir(self.runs_dir)
        base = safe_name(graph_name)
        for n in range(1, 10_000):
            path = self.run_path(base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise GraphError(f"{path}: cannot create the run folder: {exc.strerror or exc}") from None
            mark_run_dir(path)
            write_status(path, status="running", pid=os.getpid(), started=timestamp(), message="starting")
            return path
        raise GraphError(f"{self.runs_dir}: no free run folder name for {graph_name!r}")

    # ---------------------------------------------------------------- containment
    def _inside(self, path: Path) -> Path:
        """``path`` if it (links followed) lies inside ROOT, else a GraphError: nothing is written elsewhere."""
        if not self._is_inside(path):
            raise GraphError(f"{path}: leads outside the workspace {self.root} (a link?); refused")
        return path

    def _is_inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.root)

    def _make_dir(self, folder: Path) -> None:
        self._inside(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise GraphError(f"{folder}: is a file, not a folder") from None
        except OSError as exc:
            raise GraphError(f"{folder}: cannot create the folder: {exc.strerror or exc}") from None
        self._inside(folder)  # made, or already there: still inside (a link made meanwhile?)


def _check_key(key: str, what: str) -> str:
    """``key`` if it is a safe file name stem (a weights key, a draft id), else a GraphError."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise GraphError(f"{what} {key!r} is not allowed: use 1-128 letters, digits, '-' and '_'")
    return key


def _draft_entry(draft_id: str, path: Path, payload: Any) -> DraftEntry:
    """A draft's entry from its payload; a ValueError naming what the payload lacks."""
    fields = {"document": str, "name": str, "unsaved": bool, "time": (int, float)}
    wrong = [key for key, kind in fields.items() if not isinstance(payload.get(key), kind)]
    if wrong or isinstance(payload["time"], bool) or not math.isfinite(payload["time"]):
        raise ValueError(f"the draft has no readable {', '.join(wrong) or 'time'}")
    return DraftEntry(draft_id, path, payload["name"], payload["unsaved"], float(payload["time"]), payload)


def _newest_first(drafts: list[DraftEntry]) -> list[DraftEntry]:
    return sorted(drafts, key=lambda d: (-d.time, d.id))


# ------------------------------------------------------------------ run folders
def mark_run_dir(path: Path) -> None:
    """Write the marker that makes ``path`` a NetCanvas run folder."""
    write_atomic(path / RUN_MARKER, f"{RUN_FORMAT} {RUN_VERSION}\n".encode())


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a NetCanvas run marker."""
    try:
        return (path / RUN_MARKER).read_text(encoding="utf-8").split()[:1] == [RUN_FORMAT]
    except (OSError, UnicodeDecodeError):
        return False


def write_status(run_dir: str | os.PathLike, **fields: Any) -> Path:
    """Merge ``fields`` into ``run_dir/status.json`` (status, pid, device, started, ended, message),
    atomically. The Trainer calls it when a run starts and when it ends."""
    path = Path(run_dir) / STATUS_FILE
    if "status" in fields and fields["status"] not in RUN_STATUSES:
        raise ValueError(f"status {fields['status']!r}: expected one of {', '.join(RUN_STATUSES)}")
    state = _read_json(path) if path.exists() else {}
    merged = (state if isinstance(state, dict) else {}) | fields
    write_atomic(path, (json.dumps(merged, indent=2) + "\n").encode())
    return path


def read_run(path: Path) -> RunEntry:
    """What a run folder holds, never raising: a folder that is not a run, or only half of one, comes
    back "unreadable" with the reason."""
    try:
        return _read_run(path)
    except (OSError, ValueError, TypeError, KeyError) as exc:  # anything odd in a folder we did not write
        return RunEntry(path.name, path, "unreadable", error=reason(exc))


def _read_run(path: Path) -> RunEntry:
    unreadable = RunEntry(path.name, path, "unreadable")
    try:
        check_name(path.name, "run")
    except GraphError as exc:
        return replace(unreadable, error=reason(exc))
    if path.is_symlink():
        return replace(unreadable, error="a link, not a run folder")
    status = _read_json(path / STATUS_FILE) if (path / STATUS_FILE).exists() else None
    config = _read_json(path / "config.json") if (path / "config.json").exists() else None
    graph = _read_json(path / "graph.json") if (path / "graph.json").exists() else None
    found = replace(unreadable, graph=_text(graph, "name"), task=_text(config, "task"),
                    device=_text(config, "device"), best=best_metrics(path / "metrics.jsonl"))
    if status is None:
        return _run_without_status(found, config, graph)
    if not isinstance(status, dict) or status.get("status") not in RUN_STATUSES:
        return replace(found, error=f"{STATUS_FILE} is damaged or not NetCanvas's")
    state, message = status["status"], _text(status, "message")
    started, ended = _parse_time(status.get("started")), _parse_time(status.get("ended"))
    if state == "running" and not _alive(status.get("pid"), started):
        state, message = "failed", VANISHED
    end = time.time() if state == "running" else ended
    return replace(found, status=state, message=message, started=_text(status, "started"),
                   device=_text(status, "device") or found.device,
                   duration=None if started is None or end is None else max(0.0, end - started))


def _run_without_status(found: RunEntry, config: Any, graph: Any) -> RunEntry:
    """A run from before status.json: finished if it has weights and metrics, else unreadable."""
    path = found.path
    has_weights = (path / "best.pt").is_file() or (path / "last.pt").is_file()
    missing = [f for f, present in (("graph.json", isinstance(graph, dict)), ("config.json", isinstance(config, dict)),
                                    ("metrics.jsonl", (path / "metrics.jsonl").is_file()),
                                    ("best.pt or last.pt", has_weights)) if not present]
    if missing:
        kind = "half-written run" if is_run_dir(path) else "not a NetCanvas run folder"
        return replace(found, error=f"{kind}: no readable {', '.join(missing)}")
    begun = (path / "graph.json").stat().st_mtime
    ended = max((path / f).stat().st_mtime for f in ("metrics.jsonl", "best.pt", "last.pt") if (path / f).is_file())
    return replace(found, status="finished", duration=max(0.0, ended - begun),
                   started=datetime.fromtimestamp(begun, UTC).isoformat(timespec="seconds"))


def best_metrics(path: Path) -> dict[str, float]:
    """The best validation figures in a ``metrics.jsonl``: lowest loss, highest accuracy. A torn or
    foreign line (a run killed mid-write) is skipped."""
    best: dict[str, float] = {}
    pick = {"loss": min, "accuracy": max}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return best
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or row.get("split") != "val":
            continue
        for key, better in pick.items():
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                best[key] = better(best.get(key, value), float(value))
    return best


def _alive(pid: Any, started: float | None = None) -> bool:
    """Whether the process ``pid`` that wrote a status at ``started`` still runs on this machine: not
    a zombie, and not a newer process that got the same pid (after a reboot, say)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill would end the process there; trust status.json instead
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    try:  # Linux: /proc tells a zombie (exited, not yet waited for) and when the process began
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        began = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return True
    return fields[0] != "Z" and (started is None or began <= started + PID_SLACK)


def _boot_time() -> float:
    """When this machine booted (Linux), in seconds since the epoch."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def _read_json(path: Path) -> Any:
    """The JSON in ``path``, or None if it cannot be read or parsed (half written, foreign)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _text(data: Any, key: str) -> str | None:
    value = data.get(key) if isinstance(data, dict) else None
    return one_line(str(value))[:200] if isinstance(value, (str, int, float)) and value != "" else None


def _parse_time(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None
    except (ValueError, OverflowError, OSError):
        return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        raise GraphError(f"{path}: cannot delete: {exc.strerror or exc}") from None


def _when(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


__all__ = ["Workspace", "GraphEntry", "RunEntry", "DraftEntry", "write_status", "timestamp", "weights_key",
           "check_name", "safe_name", "reason", "best_metrics", "read_run", "mark_run_dir", "is_run_dir",
           "TRAINER_STATUS", "NAME_RULE"]
