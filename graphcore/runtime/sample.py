"""Sampling from a trained diffusion or GAN run (``netcanvas sample RUN_DIR`` on the command line).

Writes ``OUT/grid.png`` and ``OUT/samples.npy`` (float32 (N, C, H, W) in [0, 1]); for a video
graph ``samples.npy`` holds clips (N, C, T, H, W) and ``clip.gif`` shows them playing; for a run
on vector data ``samples.npy`` holds points (N, D) in the data's own units and ``scatter.png``
draws them over the data. A GAN run samples its EMA generator (``psi`` < 1: truncation towards the
mean style); ``interpolate=FRAMES`` draws, in place of ``n`` samples, the path between the seeds
``seed`` and ``seed + 1`` (for a GAN a straight line in W, for diffusion the slerp between noises). Without
an ``out`` folder the samples are kept in the run: ``RUN_DIR/samples/STAMP/`` (STAMP: the UTC
time, ``YYYYmmdd-HHMMSS``, with ``-2``, ``-3``, … when that second already has a folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from graphcore.core.diagnostics import GraphError
from graphcore.runtime import diffusion, gan
from graphcore.runtime.config import GraphIO, read_config
from graphcore.runtime.devices import pick_device
from graphcore.runtime.train import load_run, read_vectors

SCATTER_SIZE = 512  # pixels of scatter.png


@dataclass
class SampleResult:
    samples: np.ndarray  # (N, C, H, W) or (N, C, T, H, W), float32 in [0, 1]; vectors: (N, D) in their units
    files: list[Path]
    folder: Path  # where the files are


def sample_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, sampler: str = "ddim",
               steps: int = 50, n: int = 64, seed: int = 0, checkpoint: str = "last", device: str = "auto",
               frames: int | None = None, overlap: int = 2, psi: float = 1.0, interpolate: int | None = None,
               callback: diffusion.StepCallback | None = None) -> SampleResult:
    """Draw ``n`` samples from a diffusion or GAN run and write them to ``out`` (default: a new
    ``run_dir/samples/STAMP/`` folder)."""
    if n < 1:
        raise GraphError(f"n must be at least 1, got {n}")
    if interpolate is not None and interpolate < 2:
        raise GraphError(f"interpolate takes 2 frames or more, got {interpolate}")
    if (Path(run_dir) / "config.json").is_file() and read_config(Path(run_dir) / "config.json").task == "gan":
        return _sample_gan(run_dir, out, n=n, seed=seed, psi=psi, frames=interpolate, checkpoint=checkpoint,
                           device=device, callback=callback)
    if psi != 1.0:
        raise GraphError(f"{run_dir}: truncation (psi) is for GAN runs; this one was trained for diffusion")
    model, config = load_run(run_dir, checkpoint=checkpoint, device=device)
    if config.task != "diffusion":
        raise GraphError(f"{run_dir}: this run was trained for {config.task!r}; sampling needs a diffusion run")
    dev = pick_device(device)
    shape = GraphIO.of(model.doc).sample_shape("diffusion")
    schedule = diffusion.Schedule(config.beta_schedule, config.timesteps)
    net = diffusion.denoiser(model)
    vectors = read_vectors(run_dir)
    data_range = vectors[0] if vectors is not None else diffusion.DataRange()
    if interpolate is not None and (vectors is not None or len(shape) != 3):
        raise GraphError(f"{run_dir}: interpolation draws images; this run's samples have shape {list(shape)}")
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        if interpolate is not None:
            raw = diffusion.interpolate(net, shape, schedule, seed_a=seed, seed_b=seed + 1, frames=interpolate,
                                        steps=steps, device=dev)
        elif len(shape) == 4 and frames is not None and frames > shape[1]:
            raw = diffusion.sample_long_video(net, shape, schedule, frames=frames, overlap=overlap, n=n, steps=steps,
                                              sampler=sampler, seed=seed, device=dev, callback=callback)
        else:
            raw = diffusion.sample(net, shape, schedule, n=n, steps=steps, sampler=sampler, seed=seed, device=dev,
                                   callback=callback, clip=data_range.clip)
    samples = data_range.to_data(raw.float()).cpu().numpy().astype(np.float32)
    out = _make_folder(Path(out)) if out is not None else new_samples_dir(run_dir)  # after: a stop leaves none
    if vectors is not None:
        files = [out / "samples.npy", out / "scatter.png"]
        np.save(files[0], samples)
        files[1].write_bytes(diffusion.scatter_png(samples, vectors[1], size=SCATTER_SIZE))
        return SampleResult(samples, files, out)
    files = [out / "samples.npy", out / "grid.png"]
    np.save(files[0], samples)
    if len(shape) == 4:  # clips (N, C, T, H, W): the grid shows the first frames, the GIF plays them
        diffusion.save_grid(samples[:, :, 0], files[1], scale=grid_scale(shape[-1]))
        files.append(out / "clip.gif")
        diffusion.save_gif(samples, files[2])
    else:
        diffusion.save_grid(samples, files[1], scale=grid_scale(shape[-1]))
    return SampleResult(samples, files, out)


def _sample_gan(run_dir: str | os.PathLike, out: str | os.PathLike | None, *, n: int, seed: int, psi: float,
                frames: int | None, checkpoint: str, device: str,
                callback: diffusion.StepCallback | None) -> SampleResult:
    """``n`` images of a GAN run's EMA generator, or ``frames`` along W between two seeds."""
    generator = gan.load_generator(run_dir, checkpoint=checkpoint, device=device)
    dev = pick_device(device)
    if frames is not None:
        images = gan.interpolate(generator.model, seed_a=seed, seed_b=seed + 1, frames=frames, psi=psi,
                                 w_avg=generator.w_avg, device=dev)
    else:
        images = gan.generate(generator.model, n, seed=seed, psi=psi, w_avg=generator.w_avg, device=dev)
    if callback is not None:  # one "step": the editor shows the grid as it shows a denoising step's
        callback(0, 1, diffusion.to_model_range(images), diffusion.to_model_range(images))
    samples = images.cpu().numpy().astype(np.float32)  # (N, C, H, W) in [0, 1]
    out = _make_folder(Path(out)) if out is not None else new_samples_dir(run_dir)
    files = [out / "samples.npy", out / "grid.png"]
    np.save(files[0], samples)
    diffusion.save_grid(samples, files[1], scale=grid_scale(samples.shape[-1]))
    return SampleResult(samples, files, out)


def grid_scale(width: int, tile: int = 32) -> int:
    """How much the grid enlarges samples ``width`` pixels wide: to about ``tile`` pixels, at least 2x."""
    return max(2, tile // max(width, 1))


def new_samples_dir(run_dir: str | os.PathLike) -> Path:
    """A new, empty ``run_dir/samples/STAMP/`` folder (created here, so two samplings never share one)."""
    base = Path(run_dir) / "samples" / f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    _make_folder(base.parent)
    path, n = base, 2
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            path, n = base.with_name(f"{base.name}-{n}"), n + 1
        except OSError as exc:
            raise GraphError(f"{path}: cannot create the folder: {exc.strerror or exc}") from None


def _make_folder(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GraphError(f"{path}: cannot create the folder: {exc.strerror or exc}") from None
    return path
