"""Templates against hand-written PyTorch: time to a ready model, and validate + infer time.

    .venv/bin/python benchmarks/bench_blocks.py [--repeat 7]

1. From ``gc.template(name)`` to a ready model (``gc.compile``: load the JSON, validate, infer
   shapes, build every module with its default initialisation, generate the fx code) against
   constructing the hand-written equivalent below, in interleaved runs. Goal: ratio <= 1.2x.
   Done for resnet50, and for vit_b16 when its template exists.
2. ``graphcore.core.analysis.Analysis(doc)`` (validate + infer shapes) for resnet152. Goal: < 10 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import graphcore as gc
from graphcore.core.analysis import Analysis


# --------------------------------------------------------------------------- hand-written ResNet-50
class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))  # (N, 4·width, H', W')


class HandResNet50(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                   nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for stage, blocks in enumerate((3, 4, 6, 3)):
            width = 64 * 2 ** stage
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = 4 * width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))  # (N, classes)


# --------------------------------------------------------------------------- hand-written ViT-B/16
class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)  # (N, T, D)
        x = x + self.attn(y, y, y, need_weights=False)[0]  # (N, T, D)
        return x + self.mlp(self.norm2(x))  # (N, T, D)


class HandViTB16(nn.Module):
    def __init__(self, classes: int = 1000, dim: int = 768, depth: int = 12, heads: int = 12):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 197, dim) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, 4 * dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # (N, 196, D)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos  # (N, 197, D)
        return self.head(self.norm(self.blocks(x))[:, 0])  # (N, classes)


# --------------------------------------------------------------------------- timing
def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Seconds per call of each function, alternating between them (and their order, ABBA) so that
    drift and the cost of freeing the previous model hit both alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up: imports, allocator, first-call caches
        fn()
    for round_ in range(repeat):
        for name, fn in (fns.items() if round_ % 2 == 0 else reversed(fns.items())):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def bench_build(name: str, hand: Callable[[], nn.Module], repeat: int) -> None:
    graph_params, hand_params = n_params(gc.compile(gc.template(name))), n_params(hand())
    note = "" if graph_params == hand_params else f"  (params differ: {graph_params:,} vs {hand_params:,})"
    times = interleaved({"template": lambda: gc.compile(gc.template(name)), "hand": hand}, repeat)
    t_graph, t_hand = statistics.median(times["template"]), statistics.median(times["hand"])
    print(f"{name:10s} template->model median {t_graph * 1e3:7.1f} ms (min {min(times['template']) * 1e3:.1f})   "
          f"hand-written median {t_hand * 1e3:7.1f} ms (min {min(times['hand']) * 1e3:.1f})   "
          f"ratio of medians {t_graph / t_hand:.2f}x (goal <= 1.2x), {graph_params:,} params{note}")


def bench_analysis(name: str, repeat: int) -> None:
    doc = gc.template(name)
    Analysis(doc)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        analysis = Analysis(doc)
        times.append(time.perf_counter() - start)
    assert analysis.ok
    print(f"{name:10s} validate+infer  median {statistics.median(times) * 1e3:.2f} ms, "
          f"worst {max(times) * 1e3:.2f} ms over {repeat} runs, {len(doc.nodes)} nodes "
          f"({len(doc.edges)} edges) (goal < 10 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed runs of each side")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_build("resnet50", HandResNet50, args.repeat)
    if "vit_b16" in gc.templates():
        bench_build("vit_b16", HandViTB16, args.repeat)
    else:
        print("vit_b16    (no template yet: skipped)")
    bench_analysis("resnet152", 10 * args.repeat)


if __name__ == "__main__":
    main()
