"""The GAN task: StyleGAN2's loop over a document's generator and discriminator subgraphs, its
checkpoints, exact resume and NaN stop, the refusals before training, sampling (truncation,
interpolation in W), the digits judge, and the generator's export.

Training runs use a tiny StyleGAN2 for 8x8 digits made by the template's own generator
(``tools/make_gan_templates.py``); they and the judge's training are slow tests."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_graphs import one_thread  # noqa: F401

import graphcore as gc
from graphcore.cli.main import main
from graphcore.runtime import gan
from graphcore.runtime.config import TrainConfig, check_task, gan_part, guess_task
from graphcore.runtime.data import load_dataset
from graphcore.runtime.gan import GanTrainer
from graphcore.runtime.train import Trainer, _load_checkpoint, train

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")
FAST = {"task": "gan", "batch_size": 256, "lr": 2e-3, "schedule": "constant", "warmup": 0.0}  # 7 steps an epoch


def _maker():
    spec = importlib.util.spec_from_file_location("make_gan_templates", ROOT / "tools" / "make_gan_templates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_gan(name: str = "tiny_gan") -> gc.GraphDoc:
    """StyleGAN2 for 1x8x8 images: z 8 -> w 16, blocks at 4 and 8 with 8 channels; D 8 -> 4."""
    data = _maker().stylegan2(name, z_dim=8, w_dim=16, g_channels={4: 8, 8: 8}, d_channels={8: 8, 4: 16},
                              mapping_layers=2)
    return gc.loads(json.dumps(data))


def _same_weights(a: Path, b: Path) -> None:
    state_a, state_b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for key in ("model", "ema", "discriminator"):
        assert state_a[key].keys() == state_b[key].keys()
        for name in state_a[key]:
            assert torch.equal(state_a[key][name], state_b[key][name]), f"{key}.{name} differs"
    assert torch.equal(state_a["w_avg"], state_b["w_avg"])


# ----------------------------------------------------------------------------- the template
def test_the_template_file_is_what_its_generator_writes():
    committed = (ROOT / "graphcore" / "templates" / "stylegan2_digits.json").read_text(encoding="utf-8")
    assert _maker().render("stylegan2_digits") == committed, "run tools/make_gan_templates.py"


def test_the_template_is_a_gan_of_16x16_digits():
    doc = gc.template("stylegan2_digits")
    assert guess_task(doc) == "gan" and not gc.validate(doc)
    assert check_task(doc, "gan").sample_shape("gan") == (1, 16, 16)
    image, w = gc.compile(gan_part(doc, "generator"))(torch.randn(3, 64))
    assert image.shape == (3, 1, 16, 16) and w.shape == (3, 128)
    assert gc.compile(doc)(torch.randn(4, 64)).shape == (4, 1)  # the file level: z -> generator -> discriminator


# ----------------------------------------------------------------------------- bad input
def test_a_gan_without_its_two_subgraphs_is_refused_in_one_line():
    doc = tiny_gan()
    doc.subgraphs.pop("discriminator")
    with pytest.raises(gc.GraphError, match="a GAN needs two subgraphs, 'generator' .* it has no 'discriminator'"):
        check_task(doc, "gan")
    with pytest.raises(gc.GraphError, match="it has no 'generator' and no 'discriminator'"):
        check_task(gc.template("lenet5"), "gan")


def test_a_discriminator_that_does_not_take_the_generators_images_is_refused(tmp_path):
    doc = tiny_gan()
    doc.subgraphs["discriminator"].node("image").params["shape"] = [1, 16, 16]
    with pytest.raises(gc.GraphError) as info:
        train(doc, TrainConfig(epochs=1, **FAST), out=tmp_path / "run")
    assert str(info.value) == ("error: graph 'tiny_gan': the discriminator's input 'image' takes [1, 16, 16], but the "
                               "generator's output 'image' makes [1, 8, 8]: give 'image' the shape [1, 8, 8]")
    assert not (tmp_path / "run").exists()


def test_data_of_another_shape_than_the_generators_images_is_refused(tmp_path):
    np.savez(tmp_path / "big.npz", x=np.random.rand(64, 1, 12, 12).astype(np.float32))
    config = TrainConfig(epochs=1, dataset=str(tmp_path / "big.npz"), **FAST)
    with pytest.raises(gc.GraphError, match=r"the generator makes \[1, 8, 8\], and .*big.npz: x has samples of shape "
                                            r"\[1, 12, 12\], the graph's input takes \[1, 8, 8\]"):
        GanTrainer(tiny_gan(), config, out=tmp_path / "run").fit()
    data = load_dataset("digits", (1, 4, 4))  # the check itself, as the CLI runs it before training
    with pytest.raises(gc.GraphError, match=r"samples of shape \[1, 4, 4\], but the generator's output 'image' "
                                            r"makes \[1, 8, 8\]"):
        check_task(tiny_gan(), "gan", data)


# ----------------------------------------------------------------------------- sampling helpers
def test_truncation_to_psi_0_gives_one_image_for_every_seed():
    model = gc.compile(gan_part(tiny_gan(), "generator")).init(seed=0).eval()
    w_avg = torch.randn(16)
    images = torch.cat([gan.generate(model, 3, seed=s, psi=0.0, w_avg=w_avg) for s in range(3)])  # (9, 1, 8, 8)
    assert torch.allclose(images, images[:1].expand_as(images), atol=1e-6)
    free = gan.generate(model, 3, seed=0)
    assert not torch.allclose(free[0], free[1]) and 0 <= free.min() and free.max() <= 1


def test_interpolation_runs_in_w_from_one_seed_to_the_other():
    model = gc.compile(gan_part(tiny_gan(), "generator")).init(seed=0).eval()
    path = gan.interpolate(model, seed_a=3, seed_b=4, frames=5)
    assert path.shape == (5, 1, 8, 8)
    assert torch.allclose(path[0], gan.generate(model, 1, seed=3)[0], atol=1e-5)
    assert torch.allclose(path[-1], gan.generate(model, 1, seed=4)[0], atol=1e-5)


def test_style_mixing_gives_the_blocks_after_the_cut_the_second_style():
    model = gc.compile(gan_part(tiny_gan(), "generator")).init(seed=0).eval()
    styles = gan.Styles(model)
    assert styles.can_mix and len(styles.styled) == 4  # two synthesis blocks, two toRGBs
    z, other = torch.randn(2, 8), torch.randn(2, 8)
    with torch.no_grad(), styles.control(mix=(styles.mapping(other), 0)):
        mixed_from_start = model(z)[0]
    assert torch.allclose(mixed_from_start, model(other)[0], atol=1e-6)


# ----------------------------------------------------------------------------- training
@pytest.mark.slow
def test_a_few_gan_steps_on_digits_write_both_networks(tmp_path):
    events = []
    config = TrainConfig(epochs=2, r1_every=4, **FAST)  # R1 at steps 0, 4, 8 and 12
    result = train(tiny_gan(), config, out=tmp_path / "run", events=events.append)
    assert result.status == "finished" and result.step == 14  # all 1,797 digits: a GAN keeps none back
    train_line, val_line = result.metrics["train"], result.metrics["val"]
    assert all(np.isfinite(train_line[k]) for k in ("loss_d", "loss_g", "r1"))
    assert 0 <= val_line["judge_acc"] <= 1 and 0 <= val_line["judge_classes"] <= 10
    state = _load_checkpoint(tmp_path / "run" / "last.pt", GanTrainer.CHECKPOINT)
    assert {"model", "ema", "discriminator", "optimizer", "optimizer_d", "w_avg"} <= state.keys()
    assert any(k.startswith("mapping.") for k in state["model"]) and "down8.conv0.weight" in state["discriminator"]
    steps = [e for e in events if e["type"] == "step"]
    assert steps and all({"loss_d", "loss_g", "r1"} <= e.keys() for e in steps)
    assert any(e["type"] == "samples" and e["images"].shape == (16, 8, 8, 1) for e in events)


@pytest.mark.slow
def test_n_epochs_then_resuming_to_2n_equals_2n_straight(tmp_path):
    train(tiny_gan(), TrainConfig(epochs=4, **FAST), out=tmp_path / "straight")
    train(tiny_gan(), TrainConfig(epochs=2, **FAST), out=tmp_path / "split")
    resumed = Trainer.resume(tmp_path / "split", epochs=4)
    assert isinstance(resumed, GanTrainer)
    assert resumed.fit().step == 28
    _same_weights(tmp_path / "straight" / "last.pt", tmp_path / "split" / "last.pt")
    straight, split = ((tmp_path / run / "metrics.jsonl").read_text() for run in ("straight", "split"))
    assert straight == split


@pytest.mark.slow
def test_a_nan_stops_the_gan_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(trainer: GanTrainer) -> None:
        if trainer.step == 9:  # epoch 2: the discriminator's next forward pass gives NaN
            with torch.no_grad():
                trainer.disc.logit.weight.fill_(float("nan"))

    result = GanTrainer(tiny_gan(), TrainConfig(epochs=3, **FAST), out=tmp_path / "run", on_step=poison).fit()
    assert result.status == "nan" and "the loss became nan at step 10" in result.message
    assert "kept the last good checkpoint" in result.message and "(step 7)" in result.message
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 7 and all(torch.isfinite(v).all() for v in state["discriminator"].values())


@pytest.mark.slow
def test_sampling_a_gan_run_writes_the_grid_and_the_samples(tmp_path, capsys):
    gc.save(tiny_gan(), tmp_path / "g.json")
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "g.json"), "--task", "gan", "--epochs", "1", "--batch-size", "256",
                 "--out", str(run)]) == 0
    assert main(["sample", str(run), "--n", "6", "--seed", "2", "--out", str(tmp_path / "s")]) == 0
    samples = np.load(tmp_path / "s" / "samples.npy")
    assert samples.shape == (6, 1, 8, 8) and samples.dtype == np.float32
    assert 0 <= samples.min() and samples.max() <= 1 and (tmp_path / "s" / "grid.png").is_file()
    assert main(["sample", str(run), "--n", "6", "--seed", "2", "--out", str(tmp_path / "again")]) == 0
    assert np.array_equal(np.load(tmp_path / "again" / "samples.npy"), samples)
    assert main(["sample", str(run), "--psi", "0", "--n", "4", "--out", str(tmp_path / "mean")]) == 0
    mean = np.load(tmp_path / "mean" / "samples.npy")
    assert np.allclose(mean, mean[:1], atol=1e-6)
    assert main(["sample", str(run), "--interpolate", "5", "--seed", "2", "--out", str(tmp_path / "path")]) == 0
    assert main(["sample", str(run), "--n", "1", "--seed", "3", "--out", str(tmp_path / "three")]) == 0
    path = np.load(tmp_path / "path" / "samples.npy")
    assert path.shape == (5, 1, 8, 8) and np.allclose(path[-1], np.load(tmp_path / "three" / "samples.npy")[0],
                                                      atol=1e-5)
    from app.runs import _interpolation_frames  # the editor's Samples panel: the same path, as PNG frames

    frames = _interpolation_frames(str(run), 2, steps=50, frames=5)
    assert len(frames) == 5 and all(f.startswith("data:image/png;base64,") for f in frames)
    # the run's own weights for each part: the EMA generator, the discriminator
    for part in ("generator", "discriminator"):
        assert main(["export", str(run), "--subgraph", part, "--python", str(tmp_path / f"{part}.py")]) == 0
    state = torch.load(run / "best.pt", weights_only=True)
    for part, key in (("generator", "ema"), ("discriminator", "discriminator")):
        exported = torch.load(tmp_path / f"{part}.pt", weights_only=True)
        assert all(torch.equal(exported[name], state[key][name]) for name in state[key])


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_trains_one_gan(tmp_path):
    gc.save(tiny_gan(), tmp_path / "g.json")
    run = tmp_path / "ddp"
    done = subprocess.run(
        [sys.executable, "-m", "graphcore.cli", "train", str(tmp_path / "g.json"), "--task", "gan", "--epochs", "2",
         "--batch-size", "256", "--nproc", "2", "--device", "cpu", "--out", str(run)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("finished 2 epochs") == 1  # only rank 0 speaks
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 2 * (math.ceil(1797 / 2) // 128)  # each rank takes half of every batch
    assert all(np.isfinite(line["loss_d"]) for line in lines if line["split"] == "train")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_the_gan_trains_under_autocast_on_a_gpu_and_resumes(tmp_path, amp):
    config = TrainConfig(epochs=1, device="cuda", amp=amp, **FAST)
    result = train(tiny_gan(), config, out=tmp_path / "run")
    assert result.status == "finished" and np.isfinite(result.metrics["train"]["loss_g"])
    assert Trainer.resume(tmp_path / "run", epochs=2).fit().step == 14


# ----------------------------------------------------------------------------- the judge
@pytest.mark.slow
def test_the_digits_judge_recognises_held_out_digits_and_not_noise(tmp_path):
    from graphcore.runtime.judge import blurred_noise, digits_judge

    judge = digits_judge((16, 16), cache=tmp_path)
    assert judge.accuracy > 0.9
    x, y = load_dataset("digits", (1, 16, 16)).split("val")
    verdict = judge(x)
    assert verdict.recognised > 0.85 and verdict.classes == 10
    assert judge(blurred_noise(200, (16, 16))).recognised < 0.05
    again = digits_judge.__wrapped__((16, 16), cache=tmp_path)  # the cached file, not a new training
    assert again.accuracy == judge.accuracy


# ----------------------------------------------------------------------------- export
def test_the_generator_subgraph_exports_to_onnx_and_matches_in_onnxruntime(tmp_path, capsys):
    import onnxruntime as ort

    gc.save(tiny_gan(), tmp_path / "g.json")
    graph = str(tmp_path / "g.json")
    assert main(["export", graph, "--subgraph", "generator", "--onnx", str(tmp_path / "g.onnx")]) == 0
    assert "fresh random weights" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    z = torch.randn(5, 8)
    image, w = session.run(None, {session.get_inputs()[0].name: z.numpy()})
    expected = gc.compile(gan_part(tiny_gan(), "generator")).init(seed=0).eval()(z)
    assert image.shape == (5, 1, 8, 8) and w.shape == (5, 16)
    assert np.allclose(image, expected[0].detach().numpy(), atol=1e-4)
    assert main(["summary", graph, "--subgraph", "discriminator"]) == 0
    assert "total params: " in capsys.readouterr().out
    assert main(["export", graph, "--subgraph", "critic", "--onnx", str(tmp_path / "c.onnx")]) == 1
    assert "has no subgraph named 'critic' (subgraphs: generator, discriminator)" in capsys.readouterr().err
