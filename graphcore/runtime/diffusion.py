"""Denoising diffusion: β schedules, forward noising, ε-prediction loss, DDPM/DDIM sampling,
latent interpolation and autoregressive video.

Images live in [-1, 1] inside this module (``to_model_range`` / ``to_unit_range`` convert from
and to the [0, 1] of datasets and images); vector data is standardised per feature instead
(``DataRange``, which also maps samples back to the data's own units). A denoiser is any ``fn(x_t, t) -> eps`` with
``x_t`` (B, *shape) float and ``t`` (B,) int64; ``denoiser(model)`` makes one from a compiled
graph whatever the order of its two inputs.

Sampling is one loop (``sample``) over a strided subsequence of the training timesteps:
``eta = 0`` is DDIM (deterministic given x_T), ``eta = 1`` is DDPM's ancestral sampler (with
``steps == timesteps`` exactly Ho et al.; with fewer steps the "respaced" DDPM of Nichol &
Dhariwal). Noise is drawn on the CPU from a seeded generator and then moved, so a seed gives
the same samples on every device.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from graphcore.core.diagnostics import GraphError

if TYPE_CHECKING:
    from graphcore.runtime.data import Dataset

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
"""``callback(i, steps, x_t, x0_pred)`` after each sampling step; images in [-1, 1]."""

SAMPLERS = {"ddim": 0.0, "ddpm": 1.0}
LOSS_WEIGHTINGS = ("none", "min_snr")


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0 - 1.0


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


@dataclass(frozen=True)
class DataRange:
    """How a dataset's values map to the values the model denoises, and back.

    Images: [0, 1] <-> [-1, 1]. Vector data (``mean``, ``std`` per feature): standardised, so that
    the model sees unit-scale points whatever the data's units, and samples come back in those
    units. ``clip`` bounds the sampler's x0 predictions in the model's values: the data's own
    extent (1 for images; for vectors the largest standardised value), since near t = T an
    unbounded prediction multiplies the denoiser's error by 1/√ᾱ_t (hundreds).
    """

    mean: torch.Tensor | None = None  # (D,); None: images
    std: torch.Tensor | None = None  # (D,)
    clip: float = 1.0

    @classmethod
    def of(cls, dataset: Dataset) -> DataRange:
        if dataset.kind != "vectors":
            return cls()
        mean, std = dataset.mean, dataset.std
        return cls(mean, std, float(((dataset.x - mean) / std).abs().max()))

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return to_model_range(x)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def to_data(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return to_unit_range(x)
        return x * self.std.to(x.device) + self.mean.to(x.device)


class Schedule:
    """β_1…β_T and ᾱ_t = Π(1 - β_s), precomputed in float64 and looked up per batch."""

    def __init__(self, kind: Literal["linear", "cosine"] = "cosine", timesteps: int = 1000):
        if kind not in ("linear", "cosine"):
            raise GraphError(f"unknown beta schedule {kind!r} (use 'linear' or 'cosine')")
        if timesteps < 2:
            raise GraphError(f"a diffusion schedule needs at least 2 timesteps, got {timesteps}")
        self.kind, self.timesteps = kind, timesteps
        if kind == "linear":  # Ho et al. 2020, scaled so that other T keep the same total noise
            scale = 1000.0 / timesteps
            betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
        else:  # Nichol & Dhariwal 2021: ᾱ follows a squared cosine, β capped to avoid a singular end
            s = 0.008
            steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        self.betas = betas  # (T,)
        self.alpha_bar = torch.cumprod(1.0 - betas, dim=0)  # (T,)
        self.snr = (self.alpha_bar / (1.0 - self.alpha_bar)).float()  # (T,) signal-to-noise ratio

    def ab(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ᾱ_t for a batch of timesteps, shaped to broadcast against ``like`` (B, ...)."""
        values = self.alpha_bar.to(t.device)[t].to(like.dtype)  # (B,)
        return values.view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising: x_t = √ᾱ_t · x0 + √(1 - ᾱ_t) · ε."""
        ab = self.ab(t, x0)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise

    def loss(self, model: Denoiser, x0: torch.Tensor, generator: torch.Generator | None = None,
             weighting: str = "none", gamma: float = 5.0) -> torch.Tensor:
        """ε-prediction MSE for a batch x0 (B, *shape) in [-1, 1] at uniformly drawn timesteps.

        ``weighting="min_snr"`` (Hang et al. 2023) weighs each sample by min(SNR_t, γ) / SNR_t,
        so the nearly clean timesteps, which matter little for samples, do not dominate the
        gradient; it converges several times faster than the plain loss."""
        if weighting not in LOSS_WEIGHTINGS:
            raise GraphError(f"unknown loss weighting {weighting!r} (use {' or '.join(LOSS_WEIGHTINGS)})")
        t = torch.randint(0, self.timesteps, (x0.shape[0],), device=x0.device, generator=generator)  # (B,)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        predicted = model(self.q_sample(x0, t, noise), t)
        if weighting == "none":
            return torch.nn.functional.mse_loss(predicted.float(), noise.float())
        per_sample = (predicted.float() - noise.float()).pow(2).flatten(1).mean(1)  # (B,)
        snr = self.snr.to(t.device)[t]  # (B,)
        return (per_sample * snr.clamp(max=gamma) / snr).mean()

    def to_dict(self) -> dict:
        return {"kind": self.kind, "timesteps": self.timesteps}


def denoiser(model: nn.Module, doc=None) -> Denoiser:
    """``fn(x_t, t)`` for a graph with a float input and a timestep input (shape [], int64)."""
    doc = doc if doc is not None else getattr(model, "doc", None)
    order = timestep_position(doc) if doc is not None else 1

    def run(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(t, x) if order == 0 else model(x, t)
    return run


def timestep_position(doc) -> int:
    """Which forward argument is the timestep: the ``input`` of shape [] (exactly two inputs)."""
    inputs = [n for n in doc.nodes if n.type == "input"]
    timesteps = [i for i, n in enumerate(inputs) if list(n.params.get("shape", [1])) == []]
    if len(inputs) != 2 or len(timesteps) != 1:
        raise GraphError(f"graph {doc.name!r}: a diffusion graph needs two inputs, the noisy sample and a "
                         f"timestep of shape [] (int64); it has {len(inputs)} input(s)")
    return timesteps[0]


# ----------------------------------------------------------------------------- sampling
def _noise(shape: Sequence[int], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator).to(device)


def timestep_sequence(timesteps: int, steps: int) -> list[int]:
    """``steps`` training timesteps, evenly spread, from T-1 down to 0."""
    if not 1 <= steps <= timesteps:
        raise GraphError(f"steps must be between 1 and {timesteps}, got {steps}")
    return sorted({round(v) for v in np.linspace(0, timesteps - 1, steps)}, reverse=True)


def sample(model: Denoiser, shape: Sequence[int], schedule: Schedule, *, n: int = 16, steps: int = 50,
           sampler: str = "ddim", eta: float | None = None, seed: int = 0, device: torch.device | str = "cpu",
           callback: StepCallback | None = None, x_T: torch.Tensor | None = None,
           known: tuple[torch.Tensor, torch.Tensor] | None = None, clip: float = 1.0) -> torch.Tensor:
    """Draw ``n`` samples of per-sample ``shape``; returns (n, *shape) in [-clip, clip].

    ``clip`` bounds the x0 predictions: the data's extent in the model's values (``DataRange.clip``).

    ``known = (mask, values)`` fixes part of every sample (inpainting, video continuation):
    after each step the masked region is replaced by ``values`` noised to that step's level.
    The loop runs under ``torch.inference_mode`` with its coefficients precomputed as numbers,
    so a step is the model's forward pass and a few fused element-wise ops, with no host syncs.
    """
    if sampler not in SAMPLERS:
        raise GraphError(f"unknown sampler {sampler!r} (use {' or '.join(SAMPLERS)})")
    eta = SAMPLERS[sampler] if eta is None else eta
    with torch.inference_mode():
        generator = torch.Generator().manual_seed(seed)
        size = (n, *shape)
        x = x_T.to(device) if x_T is not None else _noise(size, generator, device)  # (n, *shape)
        sequence = timestep_sequence(schedule.timesteps, steps)
        alpha_bar = schedule.alpha_bar.tolist()
        if known is not None:
            mask, values = (k.to(device) for k in known)
            start = schedule.q_sample(values, _full(n, sequence[0], device), _noise(size, generator, device))
            x = torch.where(mask, start, x)
        for i, t in enumerate(sequence):
            t_prev = sequence[i + 1] if i + 1 < len(sequence) else -1
            ab = alpha_bar[t]
            ab_prev = alpha_bar[t_prev] if t_prev >= 0 else 1.0
            eps = model(x, _full(n, t, device)).float()  # (n, *shape)
            x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-clip, clip)
            eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)  # consistent with the clipped x0
            sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
            x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * _noise(size, generator, device)
            if known is not None:
                if t_prev >= 0:
                    fixed = schedule.q_sample(values, _full(n, t_prev, device), _noise(size, generator, device))
                else:
                    fixed = values
                x = torch.where(mask, fixed, x)
            if callback is not None:
                callback(i, len(sequence), x, x0)
    return x.clamp(-clip, clip)  # made outside inference mode: a normal tensor again


def _full(n: int, t: int, device) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.long, device=device)


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (per sample), which keeps the norm that
    Gaussian noise has, unlike a straight line through the middle of the ball."""
    a, b = z0.flatten(1), z1.flatten(1)  # (B, D)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)  # (B,)
    omega = torch.arccos(cos.clamp(-1.0, 1.0)).unsqueeze(1)  # (B, 1)
    sin = torch.sin(omega)
    near = sin.abs() < 1e-6  # nearly parallel: a straight line is the same thing
    w0 = torch.where(near, 1.0 - alpha, torch.sin((1.0 - alpha) * omega) / sin.where(~near, 1.0))
    w1 = torch.where(near, torch.full_like(sin, alpha), torch.sin(alpha * omega) / sin.where(~near, 1.0))
    return (w0 * a + w1 * b).view_as(z0)


def interpolate(model: Denoiser, shape: Sequence[int], schedule: Schedule, *, seed_a: int, seed_b: int,
                frames: int = 8, steps: int = 50, device: torch.device | str = "cpu") -> torch.Tensor:
    """DDIM samples along the slerp path between the noises of two seeds: (frames, *shape)."""
    z0 = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed_a))
    z1 = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed_b))
    path = torch.cat([slerp(z0, z1, a) for a in np.linspace(0.0, 1.0, frames)])  # (frames, *shape)
    return sample(model, shape, schedule, n=frames, steps=steps, sampler="ddim", x_T=path, device=device)


# ----------------------------------------------------------------------------- video
def sample_long_video(model: Denoiser, shape: Sequence[int], schedule: Schedule, *, frames: int, overlap: int,
                      n: int = 4, steps: int = 50, sampler: str = "ddim", seed: int = 0,
                      device: torch.device | str = "cpu", callback: StepCallback | None = None) -> torch.Tensor:
    """Clips longer than the graph's T frames: (n, C, frames, H, W) in [-1, 1].

    Each new chunk of T frames is sampled with its first ``overlap`` frames fixed to the last
    ``overlap`` frames of the clip so far, so motion and content carry across the seams.
    """
    channels, chunk, height, width = shape
    if not 0 < overlap < chunk:
        raise GraphError(f"overlap must be between 1 and {chunk - 1} frames (the graph's clips have {chunk})")
    clip = sample(model, shape, schedule, n=n, steps=steps, sampler=sampler, seed=seed, device=device,
                  callback=callback)  # (n, C, T, H, W)
    mask = torch.zeros(1, 1, chunk, 1, 1, dtype=torch.bool)
    mask[:, :, :overlap] = True
    part = 1
    while clip.shape[2] < frames:
        values = torch.zeros(n, channels, chunk, height, width, device=clip.device)
        values[:, :, :overlap] = clip[:, :, -overlap:]
        new = sample(model, shape, schedule, n=n, steps=steps, sampler=sampler, seed=seed + part, device=device,
                     known=(mask, values), callback=callback)  # (n, C, T, H, W)
        clip = torch.cat([clip, new[:, :, overlap:]], dim=2)
        part += 1
    return clip[:, :, :frames]


# ----------------------------------------------------------------------------- pictures
def grid(images: torch.Tensor | np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one uint8 picture (rows·H, cols·W, C) with a thin border."""
    images = torch.as_tensor(images).detach().float().cpu().clamp(0, 1)
    count, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = torch.zeros(channels, rows * (height + pad) + pad, columns * (width + pad) + pad)
    for i in range(count):
        top, left = pad + (i // columns) * (height + pad), pad + (i % columns) * (width + pad)
        canvas[:, top:top + height, left:left + width] = images[i]
    return (canvas.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def _pil(picture: np.ndarray, scale: int = 1):
    from PIL import Image

    image = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


def png_bytes(images: torch.Tensor | np.ndarray, scale: int = 1) -> bytes:
    """A grid of (N, C, H, W) images in [0, 1] as PNG bytes (for the editor's preview)."""
    buffer = io.BytesIO()
    _pil(grid(images), scale).save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(images: torch.Tensor | np.ndarray, path: str | os.PathLike, scale: int = 1) -> None:
    Path(path).write_bytes(png_bytes(images, scale))


def scatter_png(points: torch.Tensor | np.ndarray, data: torch.Tensor | np.ndarray, size: int = 256) -> bytes:
    """Samples (N, D) drawn as blue dots over the data (M, D) in grey, both in the data's units;
    the first two features, the view framed on the data (samples beyond it are left out)."""
    from PIL import Image

    points, data = (_plane(v) for v in (points, data))
    low, high = data.min(axis=0), data.max(axis=0)
    margin = 0.1 * np.maximum(high - low, 1e-6)
    low, high = low - margin, high + margin
    picture = np.full((size, size, 3), 255, dtype=np.uint8)
    for values, colour in ((data, (200, 200, 200)), (points, (31, 90, 200))):
        pixels = np.round((values - low) / (high - low) * (size - 2)).astype(np.int64)  # (N, 2), x then y
        inside = ((pixels >= 0) & (pixels <= size - 2)).all(axis=1)
        cols, rows = pixels[inside, 0], size - 2 - pixels[inside, 1]  # y grows upwards
        for dy in (0, 1):  # 2x2 dots
            for dx in (0, 1):
                picture[rows + dy, cols + dx] = colour
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def _plane(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2) float64: the first two features (a zero second one for D = 1)."""
    array = torch.as_tensor(values).detach().float().cpu().numpy().astype(np.float64)
    return array[:, :2] if array.shape[1] >= 2 else np.concatenate([array, np.zeros_like(array)], axis=1)


def save_gif(clips: torch.Tensor | np.ndarray, path: str | os.PathLike, fps: int = 8, scale: int = 2) -> None:
    """(N, C, T, H, W) clips in [0, 1] -> an animated GIF whose every frame is a grid of the N clips."""
    clips = torch.as_tensor(clips)
    frames = [_pil(grid(clips[:, :, f]), scale) for f in range(clips.shape[2])]
    frames = [frame.convert("P") if frame.mode == "RGB" else frame for frame in frames]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
