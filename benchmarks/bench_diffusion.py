"""Diffusion quality on digits: train ``unet_ddpm_small`` for a CPU time budget, sample with
DDIM, and ask a separately trained digits classifier what it sees.

    .venv/bin/python benchmarks/bench_diffusion.py [--minutes 6] [--samples 200] [--threads 1]

Goal: samples recognised with > 0.9 confidence at least 80% of the time, across all 10 classes.
Prints the figures; the run folders go to a temporary directory (or --keep DIR).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

import graphcore as gc
from graphcore import diffusion
from graphcore.document import Edge, GraphDoc, Node
from graphcore.train import TrainConfig, Trainer, load_run


def judge_graph() -> GraphDoc:
    """A small CNN for 1x16x16 digits, trained on the same data as the judge of the samples."""
    layers = [("x", "input", {"shape": [1, 16, 16]}),
              ("c1", "conv2d", {"out_channels": 32, "kernel_size": 3, "padding": 1}), ("a1", "relu", {}),
              ("p1", "maxpool2d", {"kernel_size": 2}),
              ("c2", "conv2d", {"out_channels": 64, "kernel_size": 3, "padding": 1}), ("a2", "relu", {}),
              ("p2", "maxpool2d", {"kernel_size": 2}), ("flat", "flatten", {}),
              ("fc1", "linear", {"out_features": 128}), ("a3", "relu", {}),
              ("drop", "dropout", {"p": 0.3}), ("fc2", "linear", {"out_features": 10}), ("logits", "output", {})]
    nodes = [Node(id=i, type=t, params=p) for i, t, p in layers]
    edges = [Edge(src=a[0], dst=b[0]) for a, b in zip(layers, layers[1:])]
    return GraphDoc(name="digits_judge16", nodes=nodes, edges=edges)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--keep", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-diffusion-"))
    print(f"torch threads: {torch.get_num_threads()}; runs in {root}")

    t0 = time.monotonic()
    judge = Trainer(judge_graph(), TrainConfig(epochs=25, lr=3e-3, batch_size=32), out=root / "judge").fit()
    print(f"judge classifier: val accuracy {judge.metrics['val']['accuracy']:.4f} ({time.monotonic() - t0:.0f} s)")

    doc = gc.template("unet_ddpm_small")
    # The time budget ends training (speed on a shared CPU is unpredictable, so no step count is
    # planned): a constant lr after a short warm-up, with the weight EMA doing the averaging.
    t0 = time.monotonic()
    config = TrainConfig(task="diffusion", epochs=10_000, batch_size=args.batch_size, lr=args.lr,
                         minutes=args.minutes, schedule="constant", warmup=0.0005)
    result = Trainer(doc, config, out=root / "unet").fit()
    print(f"diffusion training: {result.status}, {result.step} steps in {time.monotonic() - t0:.0f} s; "
          f"val loss {result.metrics.get('val', {}).get('loss', float('nan')):.4f}")

    model, cfg = load_run(root / "unet")
    schedule = diffusion.Schedule(cfg.beta_schedule, cfg.timesteps)
    net = diffusion.denoiser(model)
    t0 = time.monotonic()
    diffusion.sample(net, (1, 16, 16), schedule, n=64, steps=50, sampler="ddim", seed=123)
    print(f"64 DDIM-50 samples: {time.monotonic() - t0:.2f} s (goal < 5 s)")
    samples = diffusion.to_unit_range(
        diffusion.sample(net, (1, 16, 16), schedule, n=args.samples, steps=50, sampler="ddim", seed=0))
    diffusion.save_grid(samples[:64], root / "samples.png", scale=3)

    classifier = gc.compile(judge_graph()).init(root / "judge" / "best.pt").eval()
    with torch.no_grad():
        probs = classifier(samples).softmax(dim=1)  # (N, 10)
    confidence, label = probs.max(dim=1)
    confident = confidence > 0.9
    counts = Counter(label[confident].tolist())
    print(f"samples recognised with > 0.9 confidence: {confident.float().mean().item():.1%} of {args.samples} "
          f"(goal >= 80%)")
    print("confident samples per class: " + ", ".join(f"{c}:{counts.get(c, 0)}" for c in range(10)))
    print(f"classes covered: {sum(1 for c in range(10) if counts.get(c, 0) > 0)}/10; grid: {root / 'samples.png'}")


if __name__ == "__main__":
    main()
