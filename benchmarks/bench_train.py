"""Training, sampling and serving figures on this machine.

    .venv/bin/python benchmarks/bench_train.py [--threads N] [--skip lenet,throughput,ddim,infer]

Prints:
- LeNet-5 on digits: validation accuracy and wall time (goal >= 98% in < 30 s on 2 CPU cores);
- trainer throughput vs a hand-written PyTorch loop on the same model, data, optimizer,
  clipping and lr schedule (goal ratio >= 0.97);
- 64 DDIM-50 samples from unet_ddpm_small (goal < 5 s);
- Inferencer with 32 concurrent clients, max_batch=32 vs max_batch=1 (goal >= 4x).
Timings on a shared machine are noisy: each timed figure is the best of a few repeats.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import graphcore as gc
from graphcore import diffusion
from graphcore.data import load_dataset
from graphcore.infer import Inferencer
from graphcore.train import TrainConfig, Trainer, lr_factor

LENET = TrainConfig(task="classify", epochs=20, batch_size=32, lr=1e-2)


def bench_lenet(root: Path) -> None:
    for seed in (0, 1, 2):
        start = time.monotonic()
        config = TrainConfig(**(LENET.to_dict() | {"seed": seed}))
        result = Trainer(gc.template("lenet5"), config, out=root / f"lenet-{seed}").fit()
        seconds = time.monotonic() - start
        print(f"lenet5 on digits, seed {seed}: val accuracy {result.metrics['val']['accuracy']:.4f} "
              f"in {seconds:.1f} s ({config.epochs} epochs, batch {config.batch_size}, lr {config.lr})")


def hand_written_loop(epochs: int) -> tuple[float, int]:
    """What a person would write for the same job: (seconds for the training steps, samples)."""
    x, y = load_dataset("digits", (1, 28, 28)).split("train")
    model = gc.compile(gc.template("lenet5")).init(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LENET.lr, weight_decay=LENET.weight_decay)
    steps_per_epoch = math.ceil(len(x) / LENET.batch_size)
    total, step, samples = epochs * steps_per_epoch, 0, 0
    start = time.monotonic()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(steps_per_epoch):
            idx = order[i * LENET.batch_size:(i + 1) * LENET.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = LENET.lr * lr_factor(step, total, LENET.warmup, LENET.schedule)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), LENET.clip_grad)
            optimizer.step()
            loss.item()
            step, samples = step + 1, samples + len(idx)
    return time.monotonic() - start, samples


def trainer_loop(root: Path, epochs: int, tag: str) -> tuple[float, int]:
    """The Trainer on the same job, timed from its first to its last step (validation and
    checkpoints at each epoch's end included)."""
    marks: list[float] = []
    config = TrainConfig(**(LENET.to_dict() | {"epochs": epochs}))
    trainer = Trainer(gc.template("lenet5"), config, out=root / f"throughput-{tag}",
                      on_step=lambda t: marks.append(time.monotonic()))
    start_holder: list[float] = []
    original = trainer._train_step

    def first_step(idx):
        if not start_holder:
            start_holder.append(time.monotonic())
        return original(idx)
    trainer._train_step = first_step
    trainer.fit()
    samples = len(load_dataset("digits", (1, 28, 28)).train_idx) * epochs
    return marks[-1] - start_holder[0], samples


def bench_throughput(root: Path, epochs: int = 5, repeats: int = 3) -> None:
    hand, ours = [], []
    for r in range(repeats):  # interleaved, so that load from other processes hits both alike
        seconds, samples = hand_written_loop(epochs)
        hand.append(samples / seconds)
        seconds, samples = trainer_loop(root, epochs, str(r))
        ours.append(samples / seconds)
    print(f"throughput, lenet5 on digits, batch {LENET.batch_size}: hand-written loop {max(hand):.0f} samples/s, "
          f"Trainer {max(ours):.0f} samples/s, ratio {max(ours) / max(hand):.3f} (best of {repeats}; "
          f"all ratios {', '.join(f'{o / h:.3f}' for o, h in zip(ours, hand))})")


def bench_ddim(repeats: int = 3) -> None:
    model = gc.compile(gc.template("unet_ddpm_small")).init(seed=0).eval()
    schedule, net = diffusion.Schedule("cosine", 1000), diffusion.denoiser(model)
    times = []
    for _ in range(repeats):
        start = time.monotonic()
        diffusion.sample(net, (1, 16, 16), schedule, n=64, steps=50, sampler="ddim", seed=0)
        times.append(time.monotonic() - start)
    print(f"64 DDIM-50 samples, unet_ddpm_small: {min(times):.2f} s (best of {repeats}: "
          f"{', '.join(f'{t:.2f}' for t in times)})")


def mlp() -> gc.GraphDoc:
    """A wide MLP on flattened 28x28 images (5.8 M weights): at batch 1 it is bound by reading
    its weights, the case where batching concurrent requests pays most on any device."""
    layers = [("x", "input", {"shape": [784]}), ("fc1", "linear", {"out_features": 2048}), ("a1", "relu", {}),
              ("fc2", "linear", {"out_features": 2048}), ("a2", "relu", {}),
              ("fc3", "linear", {"out_features": 10}), ("y", "output", {})]
    return gc.GraphDoc(name="mlp_wide", nodes=[gc.Node(id=i, type=t, params=p) for i, t, p in layers],
                       edges=[gc.Edge(src=a[0], dst=b[0]) for a, b in zip(layers, layers[1:])])


def serve(model, max_batch: int, make_request, clients: int = 32, per_client: int = 8) -> float:
    """Requests per second with ``clients`` threads, each sending one sample at a time."""
    with Inferencer(model, max_batch=max_batch) as served:
        served(*make_request(0))  # warm up
        handles = [served.create_client() for _ in range(clients)]
        barrier = threading.Barrier(clients + 1)

        def work(client) -> None:
            barrier.wait()
            for i in range(per_client):
                client(*make_request(i))

        threads = [threading.Thread(target=work, args=(c,)) for c in handles]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.monotonic()
        for t in threads:
            t.join()
        seconds = time.monotonic() - start
        stats = served.stats()
    rate = clients * per_client / seconds
    print(f"  max_batch={max_batch}: {rate:.1f} requests/s (mean batch {stats['mean_batch']:.1f})")
    return rate


def bench_infer() -> None:
    cases = [
        ("mlp_wide (784-2048-2048-10)", mlp(), lambda i: (torch.randn(784),), 32),
        ("unet_ddpm_small", gc.template("unet_ddpm_small"),
         lambda i: (torch.randn(1, 16, 16), torch.tensor(i * 100)), 8),
    ]
    for name, doc, make_request, per_client in cases:
        model = gc.compile(doc).init(seed=0).eval()
        print(f"Inferencer, {name}, 32 concurrent clients, one sample a request:")
        single = serve(model, 1, make_request, per_client=per_client)
        batched = serve(model, 32, make_request, per_client=per_client)
        print(f"  speed-up of max_batch=32 over max_batch=1: {batched / single:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip", default="", help="comma-separated: lenet, throughput, ddim, infer")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; the CPU may be shared, so times are noisy")
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    if "lenet" not in skip:
        bench_lenet(root)
    if "throughput" not in skip:
        bench_throughput(root)
    if "ddim" not in skip:
        bench_ddim()
    if "infer" not in skip:
        bench_infer()


if __name__ == "__main__":
    main()
