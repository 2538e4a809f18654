"""GPU figures: ResNet-18 training with mixed precision, the Trainer against a hand-written loop,
and the Inferencer serving from the GPU.

    python benchmarks/bench_gpu.py [--epochs 4] [--rounds 3] [--skip train,infer] [--device cpu --steps 2]

- ResNet-18 (the template, its input set to 3x32x32) on random 32x32 images with 1000 classes,
  batch 256, bf16 autocast (fp16 + grad scaler where the GPU has no bf16), channels_last, fused
  AdamW, gradient clipping, cosine lr: images/s of the training phase (validation and
  checkpoints at epoch ends left out; the first epoch, with cuDNN's autotuning, left out),
  the Trainer against a hand-written PyTorch loop doing the same work, interleaved rounds;
- the Inferencer on the GPU with 32 concurrent client processes, max_batch=32 against 1.
Prints "no CUDA GPU" and exits 0 on a machine without one; ``--device cpu --steps 2`` runs the
same code on the CPU, small, to check the script itself.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import HandResNet18  # noqa: E402
from bench_train import bench_infer  # noqa: E402

import graphcore as gc  # noqa: E402
from graphcore.runtime.config import TrainConfig  # noqa: E402
from graphcore.runtime.devices import amp_dtype  # noqa: E402
from graphcore.runtime.train import Trainer, lr_factor  # noqa: E402

BATCH, CLASSES = 256, 1000
CONFIG = TrainConfig(task="classify", batch_size=BATCH, lr=1e-3, val_fraction=0.05, device="cuda")


def sync() -> None:
    if CONFIG.device == "cuda":
        torch.cuda.synchronize()


def resnet18_32() -> gc.GraphDoc:
    doc = gc.template("resnet18")
    image = next(n for n in doc.nodes if n.type == "input")
    image.params["shape"] = [3, 32, 32]
    return doc


def random_images(folder: Path, steps: int) -> Path:
    """An .npz of random 32x32 images and labels whose training split is ``steps`` full batches."""
    n = BATCH * steps
    while n - math.ceil(n * CONFIG.val_fraction) < BATCH * steps:  # the split's rule (graphcore.runtime.data)
        n += 1
    rng = np.random.default_rng(0)
    path = folder / "random32.npz"
    np.savez(path, x=rng.random((n, 3, 32, 32), dtype=np.float32), y=rng.integers(0, CLASSES, n))
    return path


def timed_epochs(epochs: int, run_epoch) -> list[float]:
    """Seconds of each epoch's training phase, the GPU synchronised at both ends."""
    times = []
    for epoch in range(epochs):
        sync()
        start = time.perf_counter()
        run_epoch(epoch)
        sync()
        times.append(time.perf_counter() - start)
    return times


def hand_written(data: Path, epochs: int) -> tuple[list[float], int]:
    """What a person would write for the same job; (seconds per epoch, images per epoch)."""
    archive = np.load(data)
    n_train = len(archive["y"]) - math.ceil(len(archive["y"]) * CONFIG.val_fraction)
    device = torch.device(CONFIG.device)
    x = torch.from_numpy(archive["x"][:n_train]).to(device)
    y = torch.from_numpy(archive["y"][:n_train]).long().to(device)
    torch.manual_seed(0)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = HandResNet18().to(device, memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=CONFIG.lr, weight_decay=CONFIG.weight_decay,
                                  fused=device.type == "cuda")
    dtype = amp_dtype(device, "auto")
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    steps = math.ceil(n_train / BATCH)
    total = epochs * steps
    losses, corrects = torch.zeros(CONFIG.log_every, device=device), torch.zeros(CONFIG.log_every, device=device)
    torch.backends.cudnn.benchmark = True
    step = 0

    def run_epoch(epoch: int) -> None:
        nonlocal step
        order = torch.randperm(n_train, device=device)
        for i in range(steps):
            idx = order[i * BATCH:(i + 1) * BATCH]
            for group in optimizer.param_groups:
                group["lr"] = CONFIG.lr * lr_factor(step, total, CONFIG.warmup, CONFIG.schedule)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x[idx].contiguous(memory_format=layout))
                loss = F.cross_entropy(logits.float(), y[idx])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), CONFIG.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():  # the training loss and accuracy a log line shows, as the Trainer keeps them
                losses[step % CONFIG.log_every] = loss.detach()
                corrects[step % CONFIG.log_every] = (logits.argmax(dim=1) == y[idx]).sum()
            step += 1
            if step % CONFIG.log_every == 0:
                losses.tolist(), corrects.tolist()  # a log line's host sync

    model.train()
    return timed_epochs(epochs, run_epoch), n_train


def trainer(data: Path, root: Path, epochs: int, tag: str) -> tuple[list[float], int]:
    """The Trainer on the same job: seconds of each epoch's training phase (its epoch ends —
    validation, metrics lines, checkpoints — are left out), images per epoch."""
    config = TrainConfig(**(CONFIG.to_dict() | {"epochs": epochs, "dataset": str(data)}))
    run = Trainer(resnet18_32(), config, out=root / f"resnet18-{tag}")
    marks: list[float] = []
    original_order, original_end = run._epoch_order, run._end_epoch

    def epoch_order(epoch):
        sync()
        marks.append(time.perf_counter())
        return original_order(epoch)

    def end_epoch(start):
        sync()
        marks.append(time.perf_counter())
        return original_end(start)

    run._epoch_order, run._end_epoch = epoch_order, end_epoch
    result = run.fit()
    assert result.status == "finished", result.message
    return [b - a for a, b in zip(marks[::2], marks[1::2])], len(run.train_x)


def bench_training(epochs: int, rounds: int, steps: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    data = random_images(root, steps)
    rates: dict[str, list[float]] = {"hand": [], "ours": []}
    for r in range(rounds):  # interleaved, alternating which goes first
        runs = [("hand", lambda: hand_written(data, epochs)), ("ours", lambda r=r: trainer(data, root, epochs, str(r)))]
        for name, run in runs if r % 2 == 0 else runs[::-1]:
            seconds, images = run()
            rates[name].append(images * (epochs - 1) / sum(seconds[1:]))  # the first epoch autotunes
            if CONFIG.device == "cuda":
                torch.cuda.empty_cache()
    hand, ours = statistics.median(rates["hand"]), statistics.median(rates["ours"])
    ratios = [o / h for o, h in zip(rates["ours"], rates["hand"])]
    dtype = amp_dtype(torch.device(CONFIG.device), "auto")
    print(f"ResNet-18 at 32x32 on {CONFIG.device}, batch {BATCH}, {str(dtype).removeprefix('torch.')} autocast, "
          f"{epochs - 1} timed epochs of {steps} steps: hand-written loop {hand:,.0f} images/s, "
          f"Trainer {ours:,.0f} images/s (medians of {rounds} interleaved rounds); ratio "
          f"{statistics.median(ratios):.3f} (all: {', '.join(f'{x:.3f}' for x in ratios)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="training steps per epoch")
    parser.add_argument("--skip", default="", help="comma-separated: train, infer")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to measure")
        return
    CONFIG.device = args.device
    skip = set(filter(None, args.skip.split(",")))
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {where}, CUDA {torch.version.cuda}")
    if "train" not in skip:
        bench_training(args.epochs, args.rounds, args.steps)
    if "infer" not in skip:
        bench_infer(modes=("process",), device=args.device)


if __name__ == "__main__":
    main()
