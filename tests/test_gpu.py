"""The CUDA paths: mixed-precision training with channels_last, checkpoints that load on the CPU,
sampling and serving on the GPU. Skipped, with the reason, on a machine without CUDA."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from train_graphs import tiny_classifier, tiny_denoiser

import graphcore as gc
from graphcore.runtime import diffusion
from graphcore.runtime.config import TrainConfig
from graphcore.runtime.devices import pick_device
from graphcore.runtime.serving import Inferencer
from graphcore.runtime.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_auto_picks_the_gpu_and_refuses_one_that_is_not_there():
    assert pick_device("auto").type == "cuda"
    with pytest.raises(gc.GraphError, match="GPU"):
        pick_device(f"cuda:{torch.cuda.device_count()}")


def test_lenet_trains_with_bf16_autocast_and_channels_last(tmp_path):
    seen = {}

    def look(trainer: Trainer) -> None:
        if trainer.step == 1:
            conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
            seen["layout"] = conv.weight.is_contiguous(memory_format=torch.channels_last)
            seen["amp"], seen["device"] = trainer.amp, trainer.device.type

    config = TrainConfig(epochs=3, lr=1e-2, batch_size=32, device="auto")
    result = Trainer(gc.template("lenet5"), config, out=tmp_path / "run", on_step=look).fit()
    assert result.status == "finished", result.message
    assert seen == {"layout": True, "amp": torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
                    "device": "cuda"}
    assert result.metrics["val"]["accuracy"] > 0.85
    # the checkpoint is plain float32 weights that a CPU-only user can load
    model = gc.compile(gc.load(tmp_path / "run" / "graph.json")).init(tmp_path / "run" / "best.pt")
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())


def test_fp16_uses_the_grad_scaler_and_resumes(tmp_path):
    config = TrainConfig(epochs=2, lr=1e-2, batch_size=32, device="cuda", amp="fp16")
    stop = threading.Event()
    trainer = Trainer(tiny_classifier(), config, out=tmp_path / "run", stop_event=stop,
                      on_step=lambda t: stop.set() if t.step == 5 else None)
    result = trainer.fit()
    assert result.status == "stopped" and trainer.scaler.is_enabled()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0  # the scaler's state travels with the checkpoint
    resumed = Trainer.resume(tmp_path / "run").fit()
    assert resumed.status == "finished" and np.isfinite(resumed.metrics["val"]["loss"])


def test_diffusion_trains_and_samples_on_the_gpu(tmp_path):
    run = tmp_path / "run"
    result = Trainer(tiny_denoiser(), TrainConfig(task="diffusion", epochs=2, batch_size=64, device="cuda"),
                     out=run).fit()
    assert result.status == "finished"
    from graphcore.runtime.sample import sample_run
    first = sample_run(run, tmp_path / "a", n=8, steps=10, seed=3, device="cuda").samples
    again = sample_run(run, tmp_path / "b", n=8, steps=10, seed=3, device="cuda").samples
    assert first.shape == (8, 1, 8, 8) and np.allclose(first, again, atol=1e-3)  # seeded
    model = gc.compile(tiny_denoiser()).init(run / "last.pt").cuda().eval()
    x = diffusion.sample(diffusion.denoiser(model), (1, 8, 8), diffusion.Schedule("cosine", 1000), n=4, steps=5,
                         device="cuda")
    assert x.device.type == "cuda" and torch.isfinite(x).all()


def test_inferencer_serves_from_the_gpu():
    model = gc.compile(tiny_classifier()).init(seed=0).eval()
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        want = model(x)
    with Inferencer(model, device="cuda", max_batch=8) as served:
        got = served(x)
        singles = torch.stack([served(x[i]) for i in range(6)])
    assert got.device.type == "cpu"
    assert torch.allclose(got, want, atol=1e-3) and torch.allclose(singles, want, atol=1e-3)
