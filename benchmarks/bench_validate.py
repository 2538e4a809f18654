"""Validation of 10,000-node graphs, flat and nested, next to shape propagation written by hand.

    .venv/bin/python benchmarks/bench_validate.py [--quick]

Prints the median time of ``gc.validate`` (checks, shapes, dtypes and weight sizes) on
- a flat residual tower of 10,003 primitive nodes,
- subgraphs nested 11 levels deep, each level using the one below twice (10,240 nodes expanded),
- the hostile cases: doubling to depth 30 (5.4 G nodes expanded: refused) and a chain of 300
  levels (refused), which once took forever and ended in a RecursionError;
next to a hand-written baseline for the same two networks: the PyTorch modules built on the meta
device and a meta tensor run through them (shape propagation as one would write it by hand),
and the forward pass alone on modules built beforehand. Goal: validate < 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import graphcore as gc
from graphcore.core.synthetic import nested_subgraphs, residual_tower


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    return statistics.median(times_ms(fn, repeat))


def times_ms(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


# ----------------------------------------------------------------- the same networks by hand
class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


def hand_tower(num_blocks: int, channels: int = 16) -> nn.Module:
    """``residual_tower(num_blocks)`` written in PyTorch."""
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                         *(Residual(channels) for _ in range(num_blocks)),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def hand_nested(depth: int, features: int = 8) -> nn.Module:
    """``nested_subgraphs(depth)`` written in PyTorch: its 2**depth linear layers in a row."""
    return nn.Sequential(*(nn.Linear(features, features) for _ in range(2**depth)))


def on_meta(build: Callable[[], nn.Module], sample: tuple[int, ...]) -> Callable[[], object]:
    """Build the modules on the meta device and propagate a meta tensor's shape through them."""
    def propagate() -> object:
        with torch.device("meta"):
            return build()(torch.empty(1, *sample)).shape
    return propagate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 3 if args.quick else 9

    tower, nested = residual_tower(1428), nested_subgraphs(11)
    assert gc.validate(tower) == [] and gc.validate(nested) == []  # also: sized once, warm
    expanded = 2 + 5 * 2**11 - 2
    with torch.device("meta"):
        built_tower, built_nested = hand_tower(1428), hand_nested(11)
    rows = [
        (f"flat residual tower, {len(tower.nodes):,} nodes", tower, hand_tower, 1428, (3, 32, 32), built_tower),
        (f"nested subgraphs, {len(nested.subgraphs)} levels, {expanded:,} nodes expanded", nested, hand_nested, 11,
         (8,), built_nested),
    ]
    print(f"{'graph':52s} {'validate: median (min)':>23s} {'by hand: build+propagate':>25s} {'propagate only':>15s}")
    for title, doc, hand, size, sample, built in rows:
        ours = times_ms(lambda doc=doc: gc.validate(doc), repeat)
        theirs = median_ms(on_meta(lambda hand=hand, size=size: hand(size), sample), max(1, repeat // 3))
        x = torch.empty(1, *sample, device="meta")
        forward = median_ms(lambda built=built, x=x: built(x), repeat)
        print(f"{title:52s} {statistics.median(ours):9.1f} ({min(ours):5.1f}) ms "
              f"{theirs:22.1f} ms {forward:12.1f} ms")

    print("hostile documents (refused with one error on the node above):")
    for title, doc in (("doubling to depth 30 (5,368,709,120 nodes expanded)", nested_subgraphs(30)),
                       ("a chain of 300 nested levels", nested_subgraphs(300, uses=1))):
        ours = median_ms(lambda doc=doc: gc.validate(doc), repeat)
        (problem,) = gc.validate(doc)
        print(f"  {title:50s} {ours:8.1f} ms   {problem}")
    print("goal: validate < 200 ms")


if __name__ == "__main__":
    main()
