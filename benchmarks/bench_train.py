"""Training, sampling and serving figures on this machine.

    .venv/bin/python benchmarks/bench_train.py [--threads N] [--skip lenet,throughput,ddim,infer]

Prints:
- LeNet-5 on digits: validation accuracy and wall time (goal >= 98% in < 30 s on 2 CPU cores);
- trainer throughput vs a hand-written PyTorch loop on the same model, data, optimizer,
  clipping, lr schedule and loss/accuracy bookkeeping, training phase only (validation and
  checkpoints at epoch ends are excluded on both sides); median of interleaved rounds
  (goal ratio >= 0.97);
- 64 DDIM-50 samples from unet_ddpm_small (goal < 5 s);
- Inferencer with 32 concurrent clients, max_batch=32 vs max_batch=1 (goal >= 4x), with the
  clients in 32 separate processes (as DESIGN means them) and, for comparison, as 32 threads;
  the median ratio of 3 rounds, each client sending enough requests for a steady state.
Timings on a shared machine are noisy: the throughput figure is a median of interleaved rounds,
the others the best of a few repeats.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import graphcore as gc
from graphcore.runtime import diffusion
from graphcore.runtime.config import TrainConfig
from graphcore.runtime.data import load_dataset
from graphcore.runtime.serving import Inferencer
from graphcore.runtime.train import Trainer, lr_factor

LENET = TrainConfig(task="classify", epochs=20, batch_size=32, lr=1e-2)


def bench_lenet(root: Path) -> None:
    for seed in (0, 1, 2):
        start = time.monotonic()
        config = TrainConfig(**(LENET.to_dict() | {"seed": seed}))
        result = Trainer(gc.template("lenet5"), config, out=root / f"lenet-{seed}").fit()
        seconds = time.monotonic() - start
        print(f"lenet5 on digits, seed {seed}: val accuracy {result.metrics['val']['accuracy']:.4f} "
              f"in {seconds:.1f} s ({config.epochs} epochs, batch {config.batch_size}, lr {config.lr})")


def hand_written_loop(epochs: int, log_every: int = LENET.log_every) -> tuple[float, float, int]:
    """What a person would write for the same job: (wall and CPU seconds of the training phase, samples).

    The same work as the Trainer's training phase: data on the device, a shuffled order per
    epoch, the same lr schedule, AdamW, gradient clipping, training loss and accuracy kept on
    the device and read back every ``log_every`` steps (for a log line). Validation and
    checkpoints at epoch ends are left out on both sides."""
    x, y = load_dataset("digits", (1, 28, 28)).split("train")
    model = gc.compile(gc.template("lenet5")).init(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LENET.lr, weight_decay=LENET.weight_decay)
    steps_per_epoch = math.ceil(len(x) / LENET.batch_size)
    total, step, samples, seconds, cpu = epochs * steps_per_epoch, 0, 0, 0.0, 0.0
    losses, corrects = torch.zeros(log_every), torch.zeros(log_every)
    for epoch in range(epochs):
        start, start_cpu = time.perf_counter(), time.process_time()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(steps_per_epoch):
            idx = order[i * LENET.batch_size:(i + 1) * LENET.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = LENET.lr * lr_factor(step, total, LENET.warmup, LENET.schedule)
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), LENET.clip_grad)
            optimizer.step()
            with torch.no_grad():
                losses[step % log_every] = loss.detach()
                corrects[step % log_every] = (logits.argmax(dim=1) == y[idx]).sum()
            step, samples = step + 1, samples + len(idx)
            if step % log_every == 0 or i == steps_per_epoch - 1:
                losses.tolist(), corrects.tolist()
        seconds, cpu = seconds + time.perf_counter() - start, cpu + time.process_time() - start_cpu
    return seconds, cpu, samples


def trainer_loop(root: Path, epochs: int, tag: str) -> tuple[float, float, int]:
    """The Trainer on the same job: (wall and CPU seconds of its training phase, samples). The training phase
    runs from the start of each epoch's loop to the call of its epoch end (validation, metrics
    lines, best.pt and last.pt), which is timed separately and left out."""
    config = TrainConfig(**(LENET.to_dict() | {"epochs": epochs}))
    trainer = Trainer(gc.template("lenet5"), config, out=root / f"throughput-{tag}")
    marks: dict[str, float] = {"train": 0.0, "cpu": 0.0}
    original_order, original_end = trainer._epoch_order, trainer._end_epoch

    def epoch_order(epoch):
        marks["since"], marks["since_cpu"] = time.perf_counter(), time.process_time()
        return original_order(epoch)

    def end_epoch(start):
        marks["train"] += time.perf_counter() - marks["since"]
        marks["cpu"] += time.process_time() - marks["since_cpu"]
        return original_end(start)
    trainer._epoch_order, trainer._end_epoch = epoch_order, end_epoch
    trainer.fit()
    samples = len(load_dataset("digits", (1, 28, 28)).train_idx) * epochs
    return marks["train"], marks["cpu"], samples


def bench_throughput(root: Path, epochs: int = 4, rounds: int = 7) -> None:
    """Samples/s of the training phase by wall clock and by process CPU time (with one torch
    thread the CPU figure is the steadier one on a shared machine)."""
    rates: dict[str, list[tuple[float, float]]] = {"hand": [], "ours": []}
    for r in range(rounds):  # interleaved (alternating which goes first), so load hits both alike
        runs = [("hand", lambda: hand_written_loop(epochs)), ("ours", lambda r=r: trainer_loop(root, epochs, str(r)))]
        for name, run in runs if r % 2 == 0 else runs[::-1]:
            seconds, cpu, samples = run()
            rates[name].append((samples / seconds, samples / cpu))
    for k, what in ((0, "wall clock"), (1, "process CPU time")):
        hand, ours = [x[k] for x in rates["hand"]], [x[k] for x in rates["ours"]]
        ratios = [o / h for o, h in zip(ours, hand)]
        print(f"throughput (training phase, {what}), lenet5 on digits, batch {LENET.batch_size}: hand-written loop "
              f"{statistics.median(hand):.0f} samples/s, Trainer {statistics.median(ours):.0f} samples/s (medians of "
              f"{rounds} interleaved rounds); median ratio {statistics.median(ratios):.3f} "
              f"(all: {', '.join(f'{r:.3f}' for r in ratios)})")


def bench_ddim(repeats: int = 3) -> None:
    model = gc.compile(gc.template("unet_ddpm_small")).init(seed=0).eval()
    schedule, net = diffusion.Schedule("cosine", 1000), diffusion.denoiser(model)
    times = []
    for _ in range(repeats):
        start, cpu = time.monotonic(), time.process_time()
        diffusion.sample(net, (1, 8, 8), schedule, n=64, steps=50, sampler="ddim", seed=0)
        times.append((time.monotonic() - start, time.process_time() - cpu))
    print(f"64 DDIM-50 samples, unet_ddpm_small: {min(times)[0]:.2f} s wall (best of {repeats}, wall/CPU s: "
          f"{', '.join(f'{w:.2f}/{c:.2f}' for w, c in times)})")


def mlp() -> gc.GraphDoc:
    """A wide MLP on flattened 28x28 images (5.8 M weights): at batch 1 it is bound by reading
    its weights, the case where batching concurrent requests pays most on any device."""
    layers = [("x", "input", {"shape": [784]}), ("fc1", "linear", {"out_features": 2048}), ("a1", "relu", {}),
              ("fc2", "linear", {"out_features": 2048}), ("a2", "relu", {}),
              ("fc3", "linear", {"out_features": 10}), ("y", "output", {})]
    return gc.GraphDoc(name="mlp_wide", nodes=[gc.Node(id=i, type=t, params=p) for i, t, p in layers],
                       edges=[gc.Edge(src=a[0], dst=b[0]) for a, b in zip(layers, layers[1:])])


def serve(model, max_batch: int, make_request, clients: int = 32, per_client: int = 8, mode: str = "process",
          device: str = "cpu") -> float:
    """Requests per second with ``clients`` concurrent clients (separate processes, as DESIGN means
    them, or threads of this process), each sending one sample at a time and waiting for it."""
    with Inferencer(model, device=device, max_batch=max_batch) as served:
        served(*make_request(0))  # warm up
        handles = [served.create_client() for _ in range(clients)]
        if mode == "process":
            ctx = mp.get_context("fork")  # the clients only pickle small tensors: fork is safe and quick
            barrier = ctx.Barrier(clients + 1)
            workers = [ctx.Process(target=_client_work, args=(c, barrier, make_request, per_client)) for c in handles]
        else:
            barrier = threading.Barrier(clients + 1)
            workers = [threading.Thread(target=_client_work, args=(c, barrier, make_request, per_client))
                       for c in handles]
        for w in workers:
            w.start()
        barrier.wait()
        start = time.monotonic()
        for w in workers:
            w.join()
        seconds = time.monotonic() - start
        if mode == "process":
            assert all(w.exitcode == 0 for w in workers), [w.exitcode for w in workers]
        stats = served.stats()
    rate = clients * per_client / seconds
    print(f"  max_batch={max_batch}: {rate:.1f} requests/s (mean batch {stats['mean_batch']:.1f})")
    return rate


def _client_work(client, barrier, make_request, per_client: int) -> None:
    barrier.wait()
    for i in range(per_client):
        client(*make_request(i))


LABELS = {"process": "32 processes", "thread": "32 threads of one process"}


def bench_infer(modes: tuple[str, ...] = ("process", "thread"), device: str = "cpu", rounds: int = 3) -> None:
    cases = [
        ("mlp_wide (784-2048-2048-10)", mlp(), lambda i: (torch.randn(784),), 128),
        ("unet_ddpm_small", gc.template("unet_ddpm_small"),
         lambda i: (torch.randn(1, 8, 8), torch.tensor(i * 100)), 16),
    ]
    for name, doc, make_request, per_client in cases:
        model = gc.compile(doc).init(seed=0).eval()
        for mode in modes:
            print(f"Inferencer on {device}, {name}, 32 concurrent clients in {LABELS[mode]}, one sample a request:")
            ratios = []
            for _ in range(rounds):  # the machine's load drifts: one ratio per round, the median reported
                single = serve(model, 1, make_request, per_client=per_client, mode=mode, device=device)
                batched = serve(model, 32, make_request, per_client=per_client, mode=mode, device=device)
                ratios.append(batched / single)
            print(f"  speed-up of max_batch=32 over max_batch=1: median {statistics.median(ratios):.2f}x "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")


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
