"""Generative templates as a user trains them, each next to a hand-written PyTorch baseline given
the same time budget in the same run.

    .venv/bin/python benchmarks/bench_generative.py [--only diffusion_mlp] [--seconds 60] [--threads N] [--keep DIR]

``diffusion_mlp``: the README's two command lines (``netcanvas train diffusion_mlp … --dataset
swissroll`` and ``netcanvas sample runs/swissroll …``, read from README.md and run verbatim as
subprocesses in a scratch folder; for ``moons`` the same lines with the dataset's name swapped),
then the same MLP and loop written plainly in torch (AdamW, warm-up + cosine planned over the
budget, min-SNR ε loss, EMA, DDIM-50 with x0 clipped to the data's extent), trained for the same
number of seconds. Quality: the mean distance from each of 1,000 DDIM samples to its nearest
training point, divided by the same for 1,000 held-out points (goal: <= 2 after 60 s of CPU
training). Speed: training steps per second, ours / the baseline's. ``--threads`` sets torch's
threads on both sides (``OMP_NUM_THREADS`` for the README's processes): on a shared machine one
thread each keeps the comparison from measuring who wins the fight for cores. Each figure comes
with the load average (the machine may be shared: wall-time figures are then pessimistic).

A model is one entry of ``MODELS``: a function of the parsed arguments and a scratch folder that
prints its figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_diffusion import readme_lines, with_minutes
from torch import nn

from graphcore.runtime.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
README_LINES = ("netcanvas train diffusion_mlp", "netcanvas sample runs/swissroll")
README_DATASET = "swissroll"
DIFFUSION_DATASETS = ("swissroll", "moons")
SAMPLES = 1000
GOAL_RATIO = 2.0


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ----------------------------------------------------------------------------- diffusion_mlp: ours
def readme_commands(dataset: str, seconds: float) -> list[list[str]]:
    """The README's train and sample lines for the diffusion MLP as argv lists, for ``dataset``
    (the README's name swapped), with the budget set to ``seconds``."""
    return [with_minutes([word.replace(README_DATASET, dataset) for word in argv], seconds / 60)
            for argv in readme_lines(README_LINES)]


def ours(work: Path, dataset: str, seconds: float) -> tuple[np.ndarray, int, dict]:
    """Run the README's lines in ``work``: (the samples they wrote, training steps, the config)."""
    train, sample = readme_commands(dataset, seconds)
    env = os.environ | {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    for argv in (train, sample):
        print("$", shlex.join(argv), flush=True)
        done = subprocess.run([sys.executable, "-m", "graphcore.cli", *argv[1:]], cwd=work, capture_output=True,
                              text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"exit {done.returncode}: {done.stderr.strip()[-2000:]}")
        print(f"  {done.stdout.strip().splitlines()[-1]}  (load {_load()})", flush=True)
    run = work / train[train.index("--out") + 1]
    steps = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    config = json.loads((run / "config.json").read_text())
    return np.load(work / sample[sample.index("--out") + 1] / "samples.npy"), steps, config


# ----------------------------------------------------------------------------- diffusion_mlp: the baseline
class TimeEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, 4 * dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half) * (-math.log(10000.0) / half))
        angles = t.float()[:, None] * freqs[None, :]
        return self.fc2(F.silu(self.fc1(torch.cat([angles.sin(), angles.cos()], dim=1))))


class PlainMLP(nn.Module):
    """The diffusion_mlp template written by hand: x and t -> 3 residual SiLU MLP blocks -> noise."""

    def __init__(self, dim: int = 2, width: int = 128, blocks: int = 3) -> None:
        super().__init__()
        self.temb, self.x_in = TimeEmbedding(width // 4), nn.Linear(dim, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
                                    for _ in range(blocks))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.x_in(x) + self.temb(t)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def cosine_alpha_bar(timesteps: int) -> torch.Tensor:
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.cumprod(1 - (1 - f[1:] / f[:-1]).clamp(max=0.999), 0)


def baseline(train_x: torch.Tensor, seconds: float, config: dict) -> tuple[np.ndarray, int]:
    """The same model and loop in plain torch, for ``seconds``: (samples in data units, steps)."""
    start = time.monotonic()
    torch.manual_seed(config["seed"])
    mean, std = train_x.mean(0), train_x.std(0)
    data = (train_x - mean) / std
    clip = float(data.abs().max())
    model = PlainMLP()
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    alpha_bar = cosine_alpha_bar(config["timesteps"]).float()
    snr = alpha_bar / (1 - alpha_bar)
    batch, step, total = config["batch_size"], 0, 10**9
    while step < total:
        lr_scale = min(1.0, (step + 1) / max(1, round(0.05 * total)))
        if step >= round(0.05 * total):
            lr_scale = 0.5 * (1 + math.cos(math.pi * (step - 0.05 * total) / (0.95 * total)))
        for group in optimizer.param_groups:
            group["lr"] = config["lr"] * lr_scale
        x0 = data[torch.randint(0, len(data), (batch,))]
        t = torch.randint(0, config["timesteps"], (batch,))
        noise = torch.randn_like(x0)
        ab = alpha_bar[t][:, None]
        loss = ((model(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t) - noise) ** 2).mean(1)
        loss = (loss * snr[t].clamp(max=5.0) / snr[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(config["ema"], (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        step += 1
        cost = (time.monotonic() - start) / step
        total = step + int(max(0.0, start + seconds - time.monotonic()) / cost)  # re-planned like the Trainer
    return (ddim(ema, alpha_bar, SAMPLES, clip) * std + mean).numpy(), step


@torch.no_grad()
def ddim(model: nn.Module, alpha_bar: torch.Tensor, n: int, clip: float, steps: int = 50) -> torch.Tensor:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    sequence = sorted({round(v) for v in np.linspace(0, len(alpha_bar) - 1, steps)}, reverse=True)
    for i, t in enumerate(sequence):
        ab = float(alpha_bar[t])
        ab_prev = float(alpha_bar[sequence[i + 1]]) if i + 1 < len(sequence) else 1.0
        eps = model(x, torch.full((n,), t))
        x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-clip, clip)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps
    return x


# ----------------------------------------------------------------------------- diffusion_mlp: the figures
def nearest_distance(points: np.ndarray, reference: np.ndarray, chunk: int = 250) -> float:
    """Mean distance from each point to its nearest reference point."""
    found = [np.sqrt(((points[i:i + chunk, None, :] - reference[None]) ** 2).sum(-1)).min(1)
             for i in range(0, len(points), chunk)]
    return float(np.concatenate(found).mean())


def bench_diffusion_mlp(args: argparse.Namespace, root: Path) -> None:
    for dataset in DIFFUSION_DATASETS:
        data = load_dataset(dataset, (2,))
        train_x, val_x = data.split("train")[0], data.split("val")[0][:SAMPLES]
        reference = train_x.numpy()
        held_out = nearest_distance(val_x.numpy(), reference)
        work = Path(tempfile.mkdtemp(prefix=f"{dataset}-", dir=root))
        print(f"--- diffusion_mlp on {dataset} in {work}: held-out points {held_out:.4f} from the nearest "
              f"training point (load {_load()})", flush=True)
        samples, steps, config = ours(work, dataset, args.seconds)
        plain, plain_steps = baseline(train_x, args.seconds, config)
        print(f"  baseline (plain torch): {plain_steps} steps in {args.seconds:g} s  (load {_load()})", flush=True)
        for name, points, count in (("netcanvas", samples, steps), ("plain torch", plain, plain_steps)):
            ratio = nearest_distance(points, reference) / held_out
            verdict = "meets" if ratio <= GOAL_RATIO else "misses"
            print(f"  {name:>11}: {count / args.seconds:6.1f} steps/s, {len(points)} DDIM-50 samples "
                  f"{ratio:.2f}x the held-out distance ({verdict} the goal <= {GOAL_RATIO:g}x)", flush=True)
        print(f"  speed, netcanvas / plain torch: {steps / plain_steps:.2f}", flush=True)


MODELS: dict[str, Callable[[argparse.Namespace, Path], None]] = {"diffusion_mlp": bench_diffusion_mlp}
"""One benchmark per generative template; a new one is a function and an entry here."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(MODELS), action="append", help="run only this model (repeatable)")
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget of each run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on both sides (default: torch's)")
    parser.add_argument("--keep", default=None, help="keep the runs in this folder")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-generative-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"runs in {root}; {torch.get_num_threads()} torch threads; load {_load()}", flush=True)
    for name in args.only or MODELS:
        MODELS[name](args, root)


if __name__ == "__main__":
    main()
