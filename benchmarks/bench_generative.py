"""Generative templates as a user trains them, each next to a hand-written PyTorch baseline given
the same time budget in the same run.

    .venv/bin/python benchmarks/bench_generative.py [--only diffusion_mlp|stylegan2_digits] [--seconds 60]
        [--gan-minutes 10] [--threads N] [--keep DIR]

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

``stylegan2_digits``: the README's two lines for it (``netcanvas train stylegan2_digits --task gan
…`` for ``--gan-minutes``, default 10, and ``netcanvas sample runs/gan --n 200 …``), then the same
StyleGAN2 written plainly in torch (its modules and loop by hand: Adam (0, 0.99), lazy R1, EMA,
style mixing, the run's lr plan) for the same time. Quality: the share of 200 samples that the
digits judge (``graphcore/runtime/judge.py``, trained on held-out-split digits; its accuracy is
printed) recognises with > 0.9 confidence, and the digits among them (goal: >= 60 % and >= 9 of 10
after 10 minutes on a quiet 2-core CPU). Speed: steps per second, ours / the plain loop's.

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
from graphcore.runtime.judge import digits_judge

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
    return run_lines(work, *readme_commands(dataset, seconds))


def run_lines(work: Path, train: list[str], sample: list[str]) -> tuple[np.ndarray, int, dict]:
    """Run a README train line and sample line in ``work``: (the samples, training steps, the run's config)."""
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


# ----------------------------------------------------------------------------- stylegan2_digits: by hand
GAN_README_LINES = ("netcanvas train stylegan2_digits", "netcanvas sample runs/gan")
GAN_SAMPLES = 200
GAN_GOAL = (0.60, 9)  # recognised with > 0.9 confidence, digits present
Z_DIM, W_DIM, MAPPING_LAYERS, MAPPING_LR_MUL = 64, 128, 4, 0.1  # as tools/make_gan_templates.py makes the template
G_CHANNELS = {4: 64, 8: 64, 16: 32}
D_CHANNELS = {16: 32, 8: 64, 4: 64}
SQRT2 = math.sqrt(2)


class EqLinear(nn.Module):
    """Equalised learning rate: unit-scale stored weights, scaled by lr_mul / sqrt(fan_in) at run time."""

    def __init__(self, fan_in: int, out: int, lr_mul: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out, fan_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((out,), bias_init / lr_mul))
        self.gain, self.lr_mul = lr_mul / math.sqrt(fan_in), lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.gain, self.bias * self.lr_mul)


class EqConv(nn.Module):
    def __init__(self, fan_in: int, out: int, kernel: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out, fan_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out)) if bias else None
        self.gain = 1 / math.sqrt(fan_in * kernel * kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias, padding=self.weight.shape[-1] // 2)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * SQRT2


def up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ModConv(nn.Module):
    """Modulated (and demodulated) conv as one grouped conv with a filter per sample (computed as
    blocks/stylegan.py computes it, so that the speed ratio measures the graph and the loop)."""

    def __init__(self, fan_in: int, out: int, kernel: int = 3, demodulate: bool = True, up: bool = False) -> None:
        super().__init__()
        self.affine = EqLinear(W_DIM, fan_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out, fan_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out))
        self.gain, self.demodulate, self.up = 1 / math.sqrt(fan_in * kernel * kernel), demodulate, up

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, styles, weight = len(x), self.affine(w), self.weight * self.gain
        x = up2(x) if self.up else x
        filters = weight[None] * styles[:, None, :, None, None]  # (N, O, I, k, k)
        if self.demodulate:  # 1 / each modulated filter's norm, as (styles²)·(weight²) summed: the blocks' way
            norms = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)  # (N, O)
            filters = filters * norms[:, :, None, None, None]
        out = F.conv2d(x.reshape(1, -1, *x.shape[2:]), filters.flatten(0, 1), padding=weight.shape[-1] // 2, groups=n)
        return out.reshape(n, -1, *out.shape[2:]) + self.bias[None, :, None, None]


class Layer(nn.Module):
    """A modulated 3x3 conv, fixed per-pixel noise times a learned strength, the activation."""

    def __init__(self, fan_in: int, out: int, size: int, up: bool) -> None:
        super().__init__()
        self.conv = ModConv(fan_in, out, up=up)
        self.register_buffer("noise", torch.randn(size, size))
        self.strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return lrelu(self.conv(x, w) + self.noise * self.strength)


class PlainGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mapping = nn.ModuleList(EqLinear(Z_DIM if i == 0 else W_DIM, W_DIM, lr_mul=MAPPING_LR_MUL)
                                     for i in range(MAPPING_LAYERS))
        self.const = nn.Parameter(torch.randn(G_CHANNELS[4], 4, 4))
        self.layers, self.rgbs, fan_in = nn.ModuleList(), nn.ModuleList(), G_CHANNELS[4]
        for size, channels in G_CHANNELS.items():
            self.layers.append(nn.ModuleList([Layer(fan_in, channels, size, up=size > 4),
                                              Layer(channels, channels, size, up=False)]))
            self.rgbs.append(ModConv(channels, 1, kernel=1, demodulate=False))
            fan_in = channels

    def map(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.mapping:
            x = lrelu(layer(x))
        return x

    def forward(self, z: torch.Tensor,
                mix: tuple[torch.Tensor, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and w; ``mix = (w2, cut)``: the styled modules from number ``cut`` on take w2 (a block
        and its toRGB count as two, as the template's blocks and toRGBs do)."""
        w = self.map(z)
        styles = [w] * (2 * len(self.layers))
        if mix is not None:
            styles[mix[1]:] = [mix[0]] * (len(styles) - mix[1])
        x, rgb = self.const.expand(len(z), -1, -1, -1), None
        for i, ((first, second), to_rgb) in enumerate(zip(self.layers, self.rgbs, strict=True)):
            x = second(first(x, styles[2 * i]), styles[2 * i])
            image = to_rgb(x, styles[2 * i + 1])
            rgb = image if rgb is None else image + up2(rgb)
        return rgb, w


class PlainDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        sizes = sorted(D_CHANNELS, reverse=True)
        self.from_rgb = EqConv(1, D_CHANNELS[sizes[0]], 1)
        self.blocks = nn.ModuleList(nn.ModuleList([EqConv(D_CHANNELS[s], D_CHANNELS[s], 3),
                                                   EqConv(D_CHANNELS[s], D_CHANNELS[s // 2], 3),
                                                   EqConv(D_CHANNELS[s], D_CHANNELS[s // 2], 1, bias=False)])
                                    for s in sizes[:-1])
        self.conv4 = EqConv(D_CHANNELS[4] + 1, D_CHANNELS[4], 3)
        self.fc, self.out = EqLinear(D_CHANNELS[4] * 16, D_CHANNELS[4]), EqLinear(D_CHANNELS[4], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.from_rgb(x), 0.2)
        for conv0, conv1, skip in self.blocks:
            h = F.avg_pool2d(lrelu(conv1(lrelu(conv0(x)))), 2)
            x = (h + skip(F.avg_pool2d(x, 2))) / SQRT2
        n, c, height, width = x.shape
        std = (x.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()  # minibatch std over the whole batch
        x = torch.cat([x, std.expand(n, 1, height, width)], dim=1)
        x = F.leaky_relu(self.conv4(x), 0.2)
        return self.out(F.leaky_relu(self.fc(x.flatten(1)), 0.2))


def gan_baseline(train_x: torch.Tensor, seconds: float, config: dict) -> tuple[torch.Tensor, int]:
    """StyleGAN2's loop in plain torch for ``seconds``, with the run's batch, lr plan, R1, EMA and mixing:
    (GAN_SAMPLES images in [0, 1] from the EMA generator, steps)."""
    start = time.monotonic()
    torch.manual_seed(config["seed"])
    data = train_x * 2 - 1
    g, d = PlainGenerator(), PlainDiscriminator()
    g_ema = copy.deepcopy(g).requires_grad_(False)
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=config["lr"], betas=(0.0, 0.99)) for m in (g, d))
    batch, step, total = config["batch_size"], 0, 10**9
    while step < total:
        warm = round(config["warmup"] * total) if config["warmup"] > 0 else 0
        scale = (step + 1) / warm if step < warm else 1.0 if config["schedule"] == "constant" else \
            0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        for group in (*opt_g.param_groups, *opt_d.param_groups):
            group["lr"] = config["lr"] * scale
        real = data[torch.randint(0, len(data), (batch,))]

        def fake() -> torch.Tensor:
            z, mix = torch.randn(batch, Z_DIM), None
            if torch.rand(()) < config["style_mixing"]:
                mix = (g.map(torch.randn(batch, Z_DIM)), int(torch.randint(1, 2 * len(G_CHANNELS), ())))
            return g(z, mix)

        with torch.no_grad():
            images, _ = fake()
        loss_d = (F.softplus(d(images)) + F.softplus(-d(real))).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        if config["r1_gamma"] > 0 and step % config["r1_every"] == 0:
            real_r1 = real.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(d(real_r1).sum(), real_r1, create_graph=True)
            r1 = grad.square().flatten(1).sum(1).mean() * (config["r1_gamma"] / 2 * config["r1_every"])
            opt_d.zero_grad(set_to_none=True)
            r1.backward()
            opt_d.step()
        d.requires_grad_(False)
        images, _ = fake()
        loss_g = F.softplus(-d(images)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        d.requires_grad_(True)
        with torch.no_grad():
            decay = min(config["ema"], (1 + step) / (10 + step))
            for e, p in zip(g_ema.parameters(), g.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        step += 1
        cost = (time.monotonic() - start) / step
        total = step + int(max(0.0, start + seconds - time.monotonic()) / cost)  # re-planned like the Trainer
    with torch.no_grad():
        images, _ = g_ema(torch.randn(GAN_SAMPLES, Z_DIM, generator=torch.Generator().manual_seed(0)))
    return ((images + 1) / 2).clamp(0, 1), step


def bench_stylegan2(args: argparse.Namespace, root: Path) -> None:
    judge = digits_judge((16, 16))  # trained (or read from its cache) before the runs, which then read the cache
    train_x = load_dataset("digits", (1, 16, 16)).split("train")[0]
    work = Path(tempfile.mkdtemp(prefix="stylegan2-", dir=root))
    seconds = args.gan_minutes * 60
    print(f"--- stylegan2_digits in {work}, {args.gan_minutes:g} min each; the judge: {judge.accuracy:.1%} of "
          f"held-out digits right, {judge(load_dataset('digits', (1, 16, 16)).split('val')[0]).recognised:.1%} "
          f"recognised with > 0.9 (load {_load()})", flush=True)
    samples, steps, config = run_lines(work, *[with_minutes(argv, args.gan_minutes)
                                               for argv in readme_lines(GAN_README_LINES)])
    plain, plain_steps = gan_baseline(train_x, seconds, config)
    print(f"  baseline (plain torch): {plain_steps} steps in {seconds:g} s  (load {_load()})", flush=True)
    for name, images, count in (("netcanvas", torch.from_numpy(samples), steps), ("plain torch", plain, plain_steps)):
        verdict = judge(images)
        meets = verdict.recognised >= GAN_GOAL[0] and verdict.classes >= GAN_GOAL[1]
        print(f"  {name:>11}: {count / seconds:5.2f} steps/s, {len(images)} samples: {verdict.recognised:.1%} "
              f"recognised with > 0.9, {verdict.classes} of 10 digits ({'meets' if meets else 'misses'} the goal "
              f">= {GAN_GOAL[0]:.0%}, >= {GAN_GOAL[1]})", flush=True)
    print(f"  speed, netcanvas / plain torch: {steps / plain_steps:.2f}", flush=True)


MODELS: dict[str, Callable[[argparse.Namespace, Path], None]] = {"diffusion_mlp": bench_diffusion_mlp,
                                                                   "stylegan2_digits": bench_stylegan2}
"""One benchmark per generative template; a new one is a function and an entry here."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(MODELS), action="append", help="run only this model (repeatable)")
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget of each diffusion_mlp run")
    parser.add_argument("--gan-minutes", type=float, default=10.0, help="training budget of each stylegan2_digits run")
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
