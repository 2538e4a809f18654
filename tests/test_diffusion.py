"""Diffusion: schedules, noising, DDPM/DDIM sampling (checked against an exact denoiser),
seeded determinism, slerp, autoregressive video, and training + sampling a run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from train_graphs import one_thread, tiny_denoiser  # noqa: F401

import graphcore as gc
from graphcore.runtime import diffusion
from graphcore.runtime.config import TrainConfig
from graphcore.runtime.diffusion import Schedule, sample, sample_long_video, slerp
from graphcore.runtime.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedules_go_from_clean_to_pure_noise(kind):
    schedule = Schedule(kind, 1000)
    ab = schedule.alpha_bar
    assert ab.shape == (1000,) and torch.all(ab[1:] < ab[:-1])
    assert ab[0] > 0.999 and ab[-1] < 1e-4
    assert torch.allclose(ab, torch.cumprod(1 - schedule.betas, 0))


def test_linear_schedule_matches_ho_et_al():
    betas = Schedule("linear", 1000).betas
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)


def test_q_sample_has_the_right_mean_and_variance():
    schedule = Schedule("cosine", 1000)
    x0 = torch.full((20000, 1), 0.5)
    t = torch.full((20000,), 300)
    xt = schedule.q_sample(x0, t, torch.randn(20000, 1, generator=torch.Generator().manual_seed(0)))
    ab = schedule.alpha_bar[300].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.5, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - ab, rel=0.05)


def exact_denoiser(point: torch.Tensor, schedule: Schedule):
    """The true noise predictor when every training sample equals ``point``."""
    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = schedule.ab(t, x)
        return (x - ab.sqrt() * point) / (1 - ab).sqrt()
    return eps


@pytest.mark.parametrize("sampler, steps", [("ddim", 20), ("ddpm", 50), ("ddpm", 1000)])
def test_samplers_land_on_the_data_with_an_exact_denoiser(sampler, steps):
    schedule = Schedule("linear", 1000)
    point = torch.linspace(-0.8, 0.8, 16).view(1, 4, 4)
    out = sample(exact_denoiser(point, schedule), (1, 4, 4), schedule, n=3, steps=steps, sampler=sampler, seed=1)
    assert out.shape == (3, 1, 4, 4)
    assert torch.allclose(out, point.expand(3, 1, 4, 4), atol=1e-3)


def test_sampling_is_deterministic_for_a_seed():
    torch.manual_seed(0)
    model = gc.compile(tiny_denoiser()).init(seed=0).eval()
    net, schedule = diffusion.denoiser(model), Schedule("cosine", 1000)
    for sampler in ("ddim", "ddpm"):
        a = sample(net, (1, 8, 8), schedule, n=4, steps=10, sampler=sampler, seed=7)
        b = sample(net, (1, 8, 8), schedule, n=4, steps=10, sampler=sampler, seed=7)
        c = sample(net, (1, 8, 8), schedule, n=4, steps=10, sampler=sampler, seed=8)
        assert torch.equal(a, b) and not torch.allclose(a, c)


def test_callback_sees_every_step():
    schedule = Schedule("cosine", 1000)
    point = torch.zeros(1, 4, 4)
    seen = []
    sample(exact_denoiser(point, schedule), (1, 4, 4), schedule, n=2, steps=25,
           callback=lambda i, total, x, x0: seen.append((i, total, tuple(x.shape), tuple(x0.shape))))
    assert seen == [(i, 25, (2, 1, 4, 4), (2, 1, 4, 4)) for i in range(25)]
    assert diffusion.timestep_sequence(1000, 5) == [999, 749, 500, 250, 0]


def test_known_region_is_kept():
    schedule = Schedule("cosine", 1000)
    values = torch.rand(2, 1, 4, 4) * 2 - 1
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2] = True
    model = gc.compile(tiny_denoiser(size=4)).init(seed=0).eval()
    out = sample(diffusion.denoiser(model), (1, 4, 4), schedule, n=2, steps=10, known=(mask, values))
    assert torch.equal(out[..., :2], values[..., :2])


def test_slerp_keeps_the_ends_and_the_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 64, generator=g), torch.randn(2, 64, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    middle = slerp(a, b, 0.5)
    assert torch.allclose(middle.norm(dim=1), a.norm(dim=1), rtol=1e-4)  # a straight line would shrink it
    assert torch.allclose(slerp(a, a, 0.3), a, atol=1e-5)


def test_interpolation_runs_from_one_seed_to_the_other():
    schedule = Schedule("cosine", 1000)
    model = gc.compile(tiny_denoiser()).init(seed=0).eval()
    net = diffusion.denoiser(model)
    path = diffusion.interpolate(net, (1, 8, 8), schedule, seed_a=1, seed_b=2, frames=5, steps=10)
    z_a = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    start = sample(net, (1, 8, 8), schedule, n=1, steps=10, x_T=z_a)
    assert path.shape == (5, 1, 8, 8) and torch.allclose(path[0], start[0], atol=1e-5)


def test_long_video_is_continued_from_overlapping_frames(tmp_path):
    schedule = Schedule("cosine", 1000)
    model = gc.compile(tiny_denoiser(size=4, video_frames=4)).init(seed=0).eval()
    net = diffusion.denoiser(model)
    first = sample(net, (1, 4, 4, 4), schedule, n=2, steps=5, seed=3)
    clip = sample_long_video(net, (1, 4, 4, 4), schedule, frames=9, overlap=2, n=2, steps=5, seed=3)
    assert clip.shape == (2, 1, 9, 4, 4)
    assert torch.equal(clip[:, :, :4], first)  # the first chunk is a plain sample; later ones extend it
    diffusion.save_gif(diffusion.to_unit_range(clip), tmp_path / "clip.gif")
    with Image.open(tmp_path / "clip.gif") as gif:
        assert gif.n_frames == 9
    with pytest.raises(gc.GraphError, match="overlap"):
        sample_long_video(net, (1, 4, 4, 4), schedule, frames=9, overlap=4, n=1, steps=2)


@pytest.mark.slow
def test_train_then_sample_a_digits_run(tmp_path):
    run = tmp_path / "run"
    result = Trainer(tiny_denoiser(), TrainConfig(task="diffusion", epochs=2, batch_size=64), out=run).fit()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert result.status == "finished" and lines[-1]["loss"] < 1.0  # predicting zeros scores 1.0
    state = torch.load(run / "last.pt", weights_only=True)
    assert "ema" in state and state["ema"].keys() == state["model"].keys()
    from graphcore.runtime.sample import sample_run
    out = sample_run(run, tmp_path / "samples", n=6, steps=10, seed=0)
    samples = np.load(tmp_path / "samples" / "samples.npy")
    assert samples.shape == (6, 1, 8, 8) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1 and np.array_equal(samples, out.samples)
    with Image.open(tmp_path / "samples" / "grid.png") as grid:
        assert grid.size[0] == (3 * (8 + 1) + 1) * 4  # 3 columns of 8x8 samples with borders, drawn 4x: 32 px each
    kept = sample_run(run, n=2, steps=4, seed=0)  # no folder given: a new one inside the run
    assert kept.folder.parent == run / "samples" and sorted(p.name for p in kept.folder.iterdir()) == \
        ["grid.png", "samples.npy"]
    assert sample_run(run, n=2, steps=4, seed=0).folder != kept.folder  # the same second: still a new folder


def test_the_unet_template_trains_a_few_steps(tmp_path):
    doc = gc.template("unet_ddpm_small")
    stop = __import__("threading").Event()
    hook = lambda trainer: stop.set() if trainer.step == 2 else None  # noqa: E731
    result = Trainer(doc, TrainConfig(task="diffusion", epochs=1, batch_size=8), out=tmp_path / "u",
                     stop_event=stop, on_step=hook).fit()
    assert result.status == "stopped" and result.step == 2
    model = gc.compile(doc).init(tmp_path / "u" / "last.pt").eval()
    out = sample(diffusion.denoiser(model), (1, 8, 8), Schedule("cosine", 1000), n=2, steps=3)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


def test_min_snr_weighting_scales_each_timestep_by_min_snr_over_snr():
    schedule = Schedule("cosine", 1000)
    x0 = torch.zeros(4, 1, 2, 2)

    def constant(x, t):  # predicts 0, so the per-sample error is the mean of noise**2
        return torch.zeros_like(x)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    plain = schedule.loss(constant, x0, g1)
    weighted = schedule.loss(constant, x0, g2, weighting="min_snr")
    g = torch.Generator().manual_seed(3)  # the same draws as inside loss(): t first, then the noise
    t = torch.randint(0, 1000, (4,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    per_sample = noise.pow(2).flatten(1).mean(1)
    snr = schedule.snr[t]
    assert torch.allclose(plain, per_sample.mean())
    assert torch.allclose(weighted, (per_sample * snr.clamp(max=5.0) / snr).mean())
    with pytest.raises(gc.GraphError, match="loss weighting"):
        schedule.loss(constant, x0, weighting="p2")
    with pytest.raises(gc.GraphError, match="loss weighting"):
        TrainConfig(task="diffusion", loss_weighting="p2")


def test_samples_are_ordinary_tensors_outside_inference_mode():
    out = sample(lambda x, t: torch.zeros_like(x), (1, 4, 4), Schedule("cosine", 100), n=2, steps=3)
    assert not out.is_inference()
    out.mul_(2.0)  # in-place use after sampling is allowed
