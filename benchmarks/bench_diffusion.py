"""Diffusion quality on digits as a user gets it: train ``unet_ddpm_small`` and sample it the way
the README and the editor do, then ask a separately trained digits classifier what it sees.

    .venv/bin/python benchmarks/bench_diffusion.py [--path readme|ui|both] [--minutes M] [--samples 200]

``--path readme`` runs the README's own two command lines (``netcanvas train unet_ddpm_small …``
and ``netcanvas sample runs/ddpm …``, read from README.md and run verbatim as subprocesses in a
scratch folder); ``--path ui`` trains with the Train panel's diffusion defaults
(``task_config("diffusion")``) as a background job, the way the editor starts it, and samples 200
with DDIM-50 as a sampling job. ``--minutes`` replaces the README's / the panel's budget (said in
the output). The time budget is the Trainer's: wall time, the lr schedule planned over it.

Goal: >= 80% of the DDIM samples recognised with > 0.9 confidence, all 10 classes present.
The judge is the runtime's digits judge (``graphcore/runtime/judge.py``: a CNN trained on the digits
plus as many images that are no digit as an eleventh class, so that noise and mush do not count as
digits); it is checked on blurred noise (the floor, should be ~0%) and on held-out real digits (the
ceiling) first.
Each figure comes with the wall time, the CPU time of the child processes and the load average
(the machine may be shared: wall-time figures are then pessimistic).
"""

from __future__ import annotations

import argparse
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

import graphcore as gc
from graphcore.runtime.config import task_config
from graphcore.runtime.data import load_dataset
from graphcore.runtime.jobs import start_sampling, start_training
from graphcore.runtime.judge import CONFIDENCE, NO_DIGIT, Judge, blurred_noise, digits_judge

ROOT = Path(__file__).resolve().parent.parent
README_LINES = ("netcanvas train unet_ddpm_small", "netcanvas sample runs/ddpm")


JUDGE_SIZE = (16, 16)  # samples of another size are resized to it


def readme_lines(starts: tuple[str, ...]) -> list[list[str]]:
    """The README's command lines that begin with each of ``starts`` (one each), as argv lists."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()]
    commands = []
    for start in starts:
        found = [line for line in lines if line.startswith(start)]
        if len(found) != 1:
            raise SystemExit(f"README.md: expected one line starting {start!r}, found {len(found)}")
        commands.append(shlex.split(found[0]))
    return commands


def with_minutes(argv: list[str], minutes: float | None) -> list[str]:
    """``argv`` with its ``--minutes`` budget replaced by ``minutes`` (when both are there)."""
    if minutes is not None and "--minutes" in argv:
        argv = [*argv]
        argv[argv.index("--minutes") + 1] = f"{minutes:g}"
    return argv


def readme_commands(minutes: float | None) -> list[list[str]]:
    """The README's train and sample lines for the diffusion example, as argv lists; ``minutes``
    replaces the train line's budget."""
    return [with_minutes(argv, minutes) for argv in readme_lines(README_LINES)]


class Meter:
    """Wall time, CPU time of finished child processes, and the load average over a stretch."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.load = time.monotonic(), _children_cpu(), _load()

    def __str__(self) -> str:
        return (f"{time.monotonic() - self.wall:.0f} s wall, {_children_cpu() - self.cpu:.0f} s CPU; "
                f"load {self.load} -> {_load()}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def readme_path(work: Path, minutes: float | None) -> np.ndarray:
    """Run the README's two lines in ``work``; the samples they wrote."""
    for argv in readme_commands(minutes):
        print("$", shlex.join(argv), flush=True)
        meter = Meter()
        done = subprocess.run([sys.executable, "-m", "graphcore.cli", *argv[1:]], cwd=work, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"exit {done.returncode}: {done.stderr.strip()[-2000:]}")
        print(f"  {done.stdout.strip().splitlines()[-1]}\n  ({meter})", flush=True)
    out = readme_commands(None)[1]
    return np.load(work / out[out.index("--out") + 1] / "samples.npy")


def ui_path(work: Path, minutes: float | None, samples: int) -> np.ndarray:
    """Train with the Train panel's diffusion defaults as a background job, then sample as a job."""
    config = task_config("diffusion", **({"minutes": minutes} if minutes is not None else {}))
    print(f"UI defaults: epochs {config.epochs}, minutes {config.minutes:g}, batch {config.batch_size}, "
          f"lr {config.lr:g}, warm-up {config.warmup}, EMA {config.ema}", flush=True)
    meter = Meter()
    done = _last_event(start_training(gc.template("unet_ddpm_small"), config, out=work / "ui-run"))
    print(f"  training job: {done.get('message')}\n  ({meter})", flush=True)
    meter = Meter()
    done = _last_event(start_sampling(work / "ui-run", sampler="ddim", steps=50, n=samples, seed=0,
                                      preview_every=50))
    print(f"  sampling job: {done.get('message')} ({meter})", flush=True)
    return np.load(Path(done["folder"]) / "samples.npy")


def _last_event(job) -> dict:
    events = list(job.events())
    job.join(60)
    if events[-1]["type"] != "done":
        raise SystemExit(f"job failed: {events[-1].get('message')}")
    return events[-1]


def judge_samples(judge: Judge, samples: torch.Tensor, name: str) -> None:
    verdict = judge(samples)
    counts = Counter(verdict.labels[(verdict.confidence > CONFIDENCE) & (verdict.labels != NO_DIGIT)].tolist())
    print(f"{name}: recognised with > {CONFIDENCE} confidence: {verdict.recognised:.1%} of {len(samples)} "
          f"(goal >= 80%); classes covered {verdict.classes}/10 (goal 10); "
          f"per class: " + ", ".join(f"{c}:{counts.get(c, 0)}" for c in range(10))
          + f"; judged no digit: {(verdict.labels == NO_DIGIT).sum().item()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", choices=["readme", "ui", "both"], default="both")
    parser.add_argument("--minutes", type=float, default=None, help="replace the README's / the panel's budget")
    parser.add_argument("--samples", type=int, default=200, help="UI path only (the README line says its own)")
    parser.add_argument("--keep", default=None, help="keep the runs in this folder")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-diffusion-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"runs in {root}; {torch.get_num_threads()} torch threads; load {_load()}", flush=True)
    if args.minutes is not None:
        print(f"budget replaced: {args.minutes:g} min instead of the README's / the panel's", flush=True)

    start = time.monotonic()
    classifier = digits_judge(JUDGE_SIZE)
    print(f"judge: {classifier.accuracy:.1%} of held-out digits right ({time.monotonic() - start:.0f} s)", flush=True)
    judge_samples(classifier, blurred_noise(args.samples, JUDGE_SIZE), "floor: blurred noise, no digit at all")
    judge_samples(classifier, load_dataset("digits", (1, *JUDGE_SIZE)).split("val")[0][:args.samples],
                  "ceiling: held-out real digits")
    paths = {"readme": lambda work: readme_path(work, args.minutes),
             "ui": lambda work: ui_path(work, args.minutes, args.samples)}
    for name in (paths if args.path == "both" else [args.path]):
        work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))  # a fresh folder: runs/ddpm must not exist
        print(f"--- {name} in {work}", flush=True)
        judge_samples(classifier, torch.from_numpy(paths[name](work)), f"{name} DDIM-50")
    print(f"grids in {root}")


if __name__ == "__main__":
    main()
