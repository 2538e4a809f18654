"""Graph core speed: validation + shape inference, incremental re-inference, compiled forward.

    .venv/bin/python benchmarks/bench_core.py [--quick]

Prints medians and the ratio of the compiled ResNet-18 (built from primitive blocks) to the
same network written by hand in PyTorch, timed in interleaved runs on the same input.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import graphcore as gc
from graphcore.core.analysis import Analysis
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.synthetic import residual_tower


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


# ---------------------------------------------------------------- ResNet-18 two ways
def resnet18_doc() -> GraphDoc:
    """ResNet-18 from primitive blocks only (conv2d, batchnorm2d, relu, add, pools, linear)."""
    nodes: list[Node] = [Node(id="x", type="input", params={"shape": [3, 224, 224]})]
    edges: list[Edge] = []

    def add(node_id: str, type_: str, src: str | list[tuple[str, str]], **params) -> str:
        nodes.append(Node(id=node_id, type=type_, params=params))
        if isinstance(src, str):
            edges.append(Edge(src=src, dst=node_id))
        else:
            edges.extend(Edge(src=s, dst=node_id, dst_port=port) for s, port in src)
        return node_id

    last = add("conv1", "conv2d", "x", out_channels=64, kernel_size=7, stride=2, padding=3, bias=False)
    last = add("relu", "relu", add("bn1", "batchnorm2d", last))
    last = add("maxpool", "maxpool2d", last, kernel_size=3, stride=2, padding=1)
    channels = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            name = f"layer{stage}_{block}"
            h = add(f"{name}_conv1", "conv2d", last, out_channels=width, kernel_size=3, stride=stride, padding=1,
                    bias=False)
            h = add(f"{name}_relu1", "relu", add(f"{name}_bn1", "batchnorm2d", h))
            h = add(f"{name}_conv2", "conv2d", h, out_channels=width, kernel_size=3, padding=1, bias=False)
            h = add(f"{name}_bn2", "batchnorm2d", h)
            skip = last
            if stride != 1 or channels != width:
                skip = add(f"{name}_down", "conv2d", last, out_channels=width, kernel_size=1, stride=stride,
                           bias=False)
                skip = add(f"{name}_down_bn", "batchnorm2d", skip)
            last = add(f"{name}_relu2", "relu", add(f"{name}_add", "add", [(h, "in0"), (skip, "in1")]))
            channels = width
    last = add("fc", "linear", add("avgpool", "global_avgpool", last), out_features=1000)
    add("logits", "output", last)
    return GraphDoc(name="resnet18_primitives", nodes=nodes, edges=edges)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + (x if self.down is None else self.down(x)))


class HandResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for stage, width in enumerate((64, 128, 256, 512)):
            for block in range(2):
                blocks.append(BasicBlock(cin, width, 2 if stage and not block else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def forward_ratio(batch: int, rounds: int) -> tuple[float, float, float]:
    torch.manual_seed(0)
    compiled = gc.compile(resnet18_doc()).eval()
    hand = HandResNet18().eval()
    assert sum(p.numel() for p in compiled.parameters()) == sum(p.numel() for p in hand.parameters()) == 11_689_512
    x = torch.randn(batch, 3, 224, 224)
    compiled_times, hand_times = [], []
    with torch.inference_mode():
        for model in (compiled, hand):  # warm-up
            model(x)
        for i in range(rounds):  # interleaved, alternating which goes first
            order = [(compiled, compiled_times), (hand, hand_times)]
            for model, times in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
    ours, theirs = statistics.median(compiled_times) * 1e3, statistics.median(hand_times) * 1e3
    return ours, theirs, ours / theirs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 20 if args.quick else 100

    doc = residual_tower(142)  # 1,001 nodes
    full = median_ms(lambda: Analysis(doc), repeat)
    print(f"validate + infer_shapes, {len(doc.nodes)} nodes: {full:.2f} ms median (goal < 20 ms)")

    analysis = Analysis(doc)
    middle = doc.node("b70_conv1")

    def edit(param: str, values: tuple) -> float:
        state = iter(values * repeat)

        def one_edit():
            middle.params[param] = next(state)
            analysis.update_node(middle.id)

        return median_ms(one_edit, repeat)

    keep = edit("bias", (True, False))
    print(f"incremental, edit keeps shapes (conv bias) in the middle: {keep:.3f} ms median (goal < 2 ms)")
    change = edit("out_channels", (8, 16))
    print(f"incremental, edit changes shapes (conv out_channels) in the middle: {change:.3f} ms median (goal < 2 ms)")
    kernel = edit("padding", (0, 1))
    print(f"incremental, edit shrinks H, W (conv padding) in the middle: {kernel:.3f} ms median (goal < 2 ms)")

    batch, rounds = (2, 6) if args.quick else (8, 20)
    ours, theirs, ratio = forward_ratio(batch, rounds)
    print(f"ResNet-18 forward, batch {batch} at 224x224, {torch.get_num_threads()} threads: compiled {ours:.1f} ms, "
          f"hand-written {theirs:.1f} ms, ratio {ratio:.3f} (goal <= 1.02)")


if __name__ == "__main__":
    main()
