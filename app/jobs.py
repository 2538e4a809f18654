"""The editor's background jobs belong to the server, not to a tab: one registry, keyed by run folder.

A job started in one tab is seen, followed and stopped from any other tab and after a reload:
each tab's panels read the same job's event history (``Tracked.events``) from their own position.
``pump`` moves the events that arrived from the job processes into those histories; every tab's
timer calls it, and it never blocks.

Training jobs run one at a time: on a CPU two would only halve each other's speed, and a Start
while one is stopping waits for it to save and end (``wait_ended``) instead of doing nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from graphcore.runtime.jobs import Job
from graphcore.runtime.workspace import STATUS_FILE, read_run, timestamp, write_status

STOP_WAIT_SECONDS = 60.0
"""How long a Start waits for a stopping job to save its checkpoint and end."""
DROPPED_KEYS = ("images",)  # bulky arrays in events that no panel shows (the PNG beside them is kept)


@dataclass
class Tracked:
    """One job the server runs: its run folder, what it is, and every event it has sent so far."""

    kind: str  # "training" | "sampling"
    run_dir: Path
    job: Job
    graph: str = ""
    started: float = field(default_factory=time.time)
    events: list[dict] = field(default_factory=list)
    stop_requested: bool = False

    @property
    def active(self) -> bool:
        """Until its terminal event has been read (or its process is gone)."""
        return not self.job.finished

    @property
    def ended(self) -> bool:
        """Its terminal event is read and its process has exited: a new job may use its folder."""
        return self.job.finished and not self.job.running

    def pump(self) -> None:
        for event in self.job.poll():
            self.events.append({k: v for k, v in event.items() if k not in DROPPED_KEYS})
            if event.get("type") == "error" and self.kind == "training":
                record_failure(self.run_dir, event.get("message") or "failed")


class JobBusy(Exception):
    """A job cannot start now; the message says why (one line)."""


class JobRegistry:
    """Every job of this server, by (kind, run folder)."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, Path], Tracked] = {}

    def pump(self) -> None:
        """Collect the events that arrived (never waits)."""
        for tracked in list(self._jobs.values()):
            if tracked.active:
                tracked.pump()

    def get(self, kind: str, run_dir: str | Path) -> Tracked | None:
        return self._jobs.get((kind, _key(run_dir)))

    def active(self, kind: str | None = None) -> list[Tracked]:
        """The jobs still running (of ``kind``), oldest first."""
        return sorted((t for t in self._jobs.values() if t.active and kind in (None, t.kind)),
                      key=lambda t: t.started)

    def unended(self, kind: str) -> list[Tracked]:
        """The jobs of ``kind`` whose process has not exited yet (running, or saving and ending), oldest first."""
        return sorted((t for t in self._jobs.values() if not t.ended and t.kind == kind), key=lambda t: t.started)

    def latest(self, kind: str) -> Tracked | None:
        """The most recently started job of ``kind``, running or not."""
        jobs = [t for t in self._jobs.values() if t.kind == kind]
        return max(jobs, key=lambda t: t.started) if jobs else None

    def start(self, kind: str, run_dir: str | Path, launch: Callable[[], Job], graph: str = "") -> Tracked:
        """Start ``launch()`` for ``run_dir``; ``JobBusy`` when that folder has a job still running,
        or, for training, when another training job runs."""
        key = _key(run_dir)
        previous = self._jobs.get((kind, key))
        if previous is not None and not previous.ended:
            raise JobBusy(f"{key.name} already has a {kind} job running")
        if kind == "training" and (busy := self.unended("training")):
            raise JobBusy(f"run {busy[0].run_dir.name} is training; stop it first (one training job at a time)"
                          if busy[0].active and not busy[0].stop_requested else
                          f"run {busy[0].run_dir.name} is still ending; try again in a moment")
        tracked = Tracked(kind, key, launch(), graph=graph)
        self.forget_ended(kind)  # their runs stay listed from disk; only their event histories go
        self._jobs[(kind, key)] = tracked
        return tracked

    def stop(self, tracked: Tracked) -> None:
        """Ask the job to stop (a training job saves its checkpoint first)."""
        tracked.stop_requested = True
        tracked.job.stop()

    async def wait_ended(self, jobs: list[Tracked], timeout: float = STOP_WAIT_SECONDS) -> bool:
        """Wait (without blocking the event loop) until ``jobs`` have ended; False on timeout."""
        deadline = time.monotonic() + timeout
        while not all(t.ended for t in jobs):
            if time.monotonic() >= deadline:
                return False
            self.pump()
            await asyncio.sleep(0.2)
        self.pump()
        return True

    def forget(self, kind: str, run_dir: str | Path) -> None:
        """Drop an ended job (its run folder was deleted)."""
        tracked = self._jobs.get((kind, _key(run_dir)))
        if tracked is not None and tracked.ended:
            del self._jobs[(kind, tracked.run_dir)]

    def forget_ended(self, kind: str | None = None) -> None:
        """Drop every ended job (of ``kind``) with its event history."""
        for key, tracked in list(self._jobs.items()):
            if tracked.ended and kind in (None, tracked.kind):
                del self._jobs[key]


def record_failure(run_dir: Path, message: str) -> None:
    """A training job that failed before its Trainer could say so (a bad dataset, a graph that does
    not fit the task) leaves status.json "running" under this server's pid: say "failed" instead."""
    if (run_dir / STATUS_FILE).is_file() and read_run(run_dir).status == "running":
        write_status(run_dir, status="failed", ended=timestamp(), message=message)


def _key(run_dir: str | Path) -> Path:
    return Path(run_dir).resolve()


JOBS = JobRegistry()
"""This server's jobs (module-level: one per server process, shared by every tab)."""
