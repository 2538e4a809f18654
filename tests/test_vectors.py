"""Vector data and the diffusion MLP: the generated 2-D datasets, .npz vectors, shape checks
against the graph, a short run whose samples land near the data, and what sampling it writes."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from train_graphs import one_thread  # noqa: F401

import graphcore as gc
from graphcore.cli import main
from graphcore.runtime import diffusion
from graphcore.runtime.config import TrainConfig, check_task, guess_task
from graphcore.runtime.data import POINT_CLOUDS, load_dataset
from graphcore.runtime.jobs import _sample_job
from graphcore.runtime.sample import SCATTER_SIZE, sample_run
from graphcore.runtime.train import Trainer, read_vectors

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = {"moons": 2, "circles": 2, "swissroll": 0, "gaussians8": 8}


def nearest_distance(points: np.ndarray, data: np.ndarray) -> float:
    """Mean distance from each point to its nearest data point."""
    return float(np.sqrt(((points[:, None, :] - data[None]) ** 2).sum(-1)).min(1).mean())


# ----------------------------------------------------------------------------- datasets
@pytest.mark.parametrize("name", sorted(POINT_CLOUDS))
def test_generated_datasets_are_fixed_2d_points_in_their_own_units(name):
    data = load_dataset(name, (2,))
    assert data.kind == "vectors" and data.x.shape == (20_000, 2) and data.x.dtype == torch.float32
    assert torch.equal(data.x, load_dataset(name, (2,)).x)  # seeded: the same points every time
    assert data.num_classes == CLASSES[name] and (data.y is None) == (CLASSES[name] == 0)
    assert len(data.val_idx) == 4_000 and torch.isfinite(data.x).all()
    assert data.x.min() < 0 or data.x.max() > 1  # not squeezed into [0, 1]: the data's own units


def test_gaussians8_has_eight_tight_clusters_on_a_circle():
    data = load_dataset("gaussians8", (2,))
    radius = data.x.norm(dim=1)
    assert radius.mean().item() == pytest.approx(2.0, abs=0.02) and radius.std().item() < 0.15
    assert torch.bincount(data.y).min() > 2_000  # every cluster is there, about 2,500 each


def test_npz_vectors_keep_their_units_and_diffusion_standardises_them(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 3)) * [1.0, 50.0, 0.01] + [5.0, -200.0, 0.0]).astype(np.float32)
    np.savez(tmp_path / "v.npz", x=x)
    data = load_dataset(tmp_path / "v.npz", (3,))
    assert data.kind == "vectors" and np.array_equal(data.x.numpy(), x)
    data_range = diffusion.DataRange.of(data)
    model_values = data_range.to_model(data.x)
    assert torch.allclose(model_values.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(model_values.std(0), torch.ones(3), atol=1e-4)
    assert data_range.clip == pytest.approx(float(model_values.abs().max()))
    assert torch.allclose(data_range.to_data(model_values), data.x, rtol=1e-5, atol=1e-4)
    np.savez(tmp_path / "u8.npz", x=rng.integers(0, 256, (10, 64), dtype=np.uint8))
    assert load_dataset(tmp_path / "u8.npz", (64,)).kind == "images"  # bytes are pixels, scaled to [0, 1]


@pytest.mark.parametrize("source, shape, message", [
    ("moons", (1, 8, 8), r"dataset 'moons' gives 2-D points \(shape \[2\]\); the graph's input has shape \[1, 8, 8\]"),
    ("swissroll", (3,), r"gives 2-D points \(shape \[2\]\); the graph's input has shape \[3\]"),
    ("digits", (2,), r"the digits dataset gives images .* the graph's input has shape \[2\]"),
    ("vectors3.npz", (2,), r"x has vectors of shape \[3\], the graph's input takes \[2\]"),
    ("vectors2.npz", (1, 8, 8), r"x has vectors of shape \[2\], the graph's input takes \[1, 8, 8\]"),
    ("images.npz", (2,), r"x has samples of shape \[1, 8, 8\], the graph's input takes \[2\]"),
    ("folder", (2,), r"a folder of images feeds an input of shape \(C, H, W\); the graph's input has shape \[2\]"),
    ("moon", (2,), "not found .*'moons', 'circles', 'swissroll', 'gaussians8'"),
])
def test_data_and_graph_shapes_that_disagree_are_one_line_naming_both(tmp_path, source, shape, message):
    np.savez(tmp_path / "vectors3.npz", x=np.zeros((5, 3), np.float32))
    np.savez(tmp_path / "vectors2.npz", x=np.zeros((5, 2), np.float32))
    np.savez(tmp_path / "images.npz", x=np.zeros((5, 1, 8, 8), np.float32))
    (tmp_path / "folder").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "folder" / "a.png")
    path = source if source in ("moons", "swissroll", "digits", "moon") else tmp_path / source
    with pytest.raises(gc.GraphError, match=message) as info:
        load_dataset(path, shape)
    assert "\n" not in str(info.value)


def test_the_cli_refuses_images_for_the_mlp_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "diffusion_mlp", "--dataset", "digits", "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "the graph's input has shape [2]" in err
    assert not (out / "last.pt").exists()


# ----------------------------------------------------------------------------- the template
def test_the_diffusion_mlp_template_is_a_diffusion_graph_for_2d_points():
    doc = gc.template("diffusion_mlp")
    assert gc.validate(doc) == [] and guess_task(doc) == "diffusion"
    io_ = check_task(doc, "diffusion", load_dataset("swissroll", (2,)))
    assert io_.sample_shape("diffusion") == (2,) and io_.outputs == [(2,)]
    model = gc.compile(doc).init(seed=0)
    assert sum(p.numel() for p in model.parameters()) == 120_450
    assert gc.summary(doc).total_params == 120_450 and "120,450 parameters" in doc.meta["description"]
    eps = diffusion.denoiser(model)(torch.randn(5, 2), torch.tensor([0, 1, 500, 998, 999]))
    assert eps.shape == (5, 2) and torch.isfinite(eps).all()


# ----------------------------------------------------------------------------- a short run and its samples
@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    """diffusion_mlp trained on moons for 20 epochs of 16 steps (a few seconds), with its events."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("moons") / "run"
    events: list[dict] = []
    config = TrainConfig(task="diffusion", dataset="moons", epochs=20, batch_size=1024, lr=1e-2, preview_every=10)
    result = Trainer(gc.template("diffusion_mlp"), config, out=run, events=events.append).fit()
    torch.set_num_threads(threads)
    assert result.status == "finished" and result.step == 320
    yield run, events


def test_a_short_run_samples_near_the_data_in_its_units(moons_run, tmp_path):
    run, events = moons_run
    data = load_dataset("moons", (2,)).split("train")[0].numpy()
    held_out = nearest_distance(load_dataset("moons", (2,)).split("val")[0].numpy()[:500], data)
    result = sample_run(run, tmp_path / "s", n=500, steps=50, seed=0)
    samples = np.load(tmp_path / "s" / "samples.npy")
    assert samples.shape == (500, 2) and samples.dtype == np.float32 and np.array_equal(samples, result.samples)
    trained = nearest_distance(samples, data)
    untrained = gc.compile(gc.template("diffusion_mlp")).init(seed=0).eval()
    data_range, _ = read_vectors(run)
    raw = diffusion.sample(diffusion.denoiser(untrained), (2,), diffusion.Schedule(), n=500, steps=50,
                           clip=data_range.clip)
    assert trained < 8 * held_out < nearest_distance(data_range.to_data(raw).numpy(), data)
    assert abs(samples.mean(0) - data.mean(0)).max() < 0.15  # both moons, not one: the mean is the data's
    previews = [e for e in events if e["type"] == "samples"]
    assert [e["epoch"] for e in previews] == [10, 20] and previews[-1]["points"].shape == (500, 2)
    assert previews[-1]["png"].startswith(b"\x89PNG")


def test_the_run_keeps_its_standardisation_and_points_to_draw_over(moons_run):
    run, _ = moons_run
    data_range, points = read_vectors(run)
    data = load_dataset("moons", (2,))
    assert torch.allclose(data_range.mean, data.mean) and torch.allclose(data_range.std, data.std)
    assert points.shape == (2_000, 2) and torch.isin(points[:, 0], data.split("train")[0][:, 0]).all()
    assert read_vectors(run.parent) is None  # no vectors.npz: a run on images


def test_netcanvas_sample_on_a_vector_run_writes_points_and_a_scatter(moons_run, tmp_path, capsys):
    run, _ = moons_run
    assert main(["sample", str(run), "--n", "40", "--steps", "10", "--out", str(tmp_path / "out")]) == 0
    assert "scatter.png" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["samples.npy", "scatter.png"]
    samples = np.load(tmp_path / "out" / "samples.npy")
    assert samples.shape == (40, 2) and samples.dtype == np.float32
    with Image.open(tmp_path / "out" / "scatter.png") as picture:
        assert picture.size == (SCATTER_SIZE, SCATTER_SIZE)
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in pixels}
    assert (200, 200, 200) in colours and (31, 90, 200) in colours  # the data in grey, the samples in blue


def test_the_sampling_job_shows_the_points_moving_from_noise_to_the_data(moons_run, tmp_path):
    run, _ = moons_run
    events: list[dict] = []
    _sample_job(str(run), str(tmp_path / "job"), {"sampler": "ddim", "steps": 10, "n": 200, "seed": 0,
                                                  "preview_every": 1}, events.append, threading.Event())
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 11)) and all(e["png"].startswith(b"\x89PNG") for e in steps)
    data = load_dataset("moons", (2,)).split("train")[0].numpy()
    first, last = (nearest_distance(steps[i]["points"], data) for i in (0, -1))
    assert last < first / 3  # noise at the start, on the moons at the end
    assert np.allclose(steps[-1]["points"], np.load(tmp_path / "job" / "samples.npy"), atol=1e-5)
    assert events[-1]["type"] == "done" and events[-1]["status"] == "finished"


def test_scatter_png_frames_the_data_and_leaves_far_samples_out():
    data = np.array([[0.0, 0.0], [1.0, 1.0]])
    png = diffusion.scatter_png(np.array([[0.5, 0.5], [100.0, 100.0]]), data, size=64)
    with Image.open(io.BytesIO(png)) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    blue = np.argwhere((pixels == (31, 90, 200)).all(-1))
    assert len(blue) == 4 and abs(blue.mean(0) - 31.5).max() <= 1  # one 2x2 dot in the middle; the far one left out
