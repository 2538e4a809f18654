"""Datasets: digits resized to any input, folders of images, .npz files, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from train_graphs import tiny_autoencoder, tiny_classifier

import graphcore as gc
from graphcore.runtime.config import check_task
from graphcore.runtime.data import load_dataset


def test_digits_fill_the_lenet_input_with_a_fixed_split():
    data = load_dataset("digits", (1, 28, 28))
    assert data.x.shape == (1797, 1, 28, 28) and data.x.dtype == torch.float32
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert data.num_classes == 10 and sorted(set(data.y.tolist())) == list(range(10))
    assert len(data.train_idx) + len(data.val_idx) == 1797
    assert not set(data.train_idx.tolist()) & set(data.val_idx.tolist())
    again = load_dataset("digits", (1, 28, 28))
    assert torch.equal(again.val_idx, data.val_idx)  # the same split every time


def test_digits_take_other_shapes():
    assert load_dataset("digits", (3, 16, 16)).x.shape == (1797, 3, 16, 16)
    assert load_dataset("digits", (64,)).x.shape == (1797, 64)
    clips = load_dataset("digits", (1, 6, 16, 16)).x
    assert clips.shape == (1797, 1, 6, 16, 16)
    moving = (clips[:, :, 0] - clips[:, :, -1]).abs().flatten(1).amax(1) > 0.1
    assert moving.float().mean() > 0.5  # most digits drift between the first and last frame
    with pytest.raises(gc.GraphError, match="digits"):
        load_dataset("digits", (10,))


def _write_images(folder, count, size=(12, 10), color=True, value=128):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        mode = "RGB" if color else "L"
        Image.new(mode, size, (value, i * 20, 0) if color else value).save(folder / f"{i}.png")


def test_a_folder_of_class_folders(tmp_path):
    _write_images(tmp_path / "cats", 3, value=200)
    _write_images(tmp_path / "dogs", 4, color=False, value=50)
    data = load_dataset(tmp_path, (1, 8, 8))
    assert data.x.shape == (7, 1, 8, 8)
    assert data.classes == ["cats", "dogs"] and data.y.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert data.x[3:].sub(50 / 255).abs().max() < 1e-6  # grey 50 stays 50 after resizing
    rgb = load_dataset(tmp_path, (3, 8, 8))
    assert rgb.x.shape == (7, 3, 8, 8) and rgb.x[0, 0].sub(200 / 255).abs().max() < 1e-6


def test_folder_problems_are_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(gc.GraphError, match="empty"):
        load_dataset(tmp_path / "empty", (1, 8, 8))
    _write_images(tmp_path / "some" / "a", 2)
    (tmp_path / "some" / "b").mkdir()
    with pytest.raises(gc.GraphError, match="class folder 'b' has no images"):
        load_dataset(tmp_path / "some", (1, 8, 8))
    _write_images(tmp_path / "broken" / "a", 2)
    (tmp_path / "broken" / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(gc.GraphError, match="bad.png: cannot read this image"):
        load_dataset(tmp_path / "broken", (1, 8, 8))
    with pytest.raises(gc.GraphError, match="1, 3 or 4 channels"):
        load_dataset(tmp_path / "some", (2, 8, 8))
    with pytest.raises(gc.GraphError, match="not found"):
        load_dataset(tmp_path / "missing", (1, 8, 8))


def test_npz_files(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), y=np.arange(20) % 4)
    data = load_dataset(tmp_path / "d.npz", (1, 8, 8))
    assert data.x.shape == (20, 1, 8, 8) and data.x.max() <= 1.0 and data.num_classes == 4
    np.savez(tmp_path / "unlabelled.npz", x=rng.random((10, 3, 4, 4), dtype=np.float32))
    assert load_dataset(tmp_path / "unlabelled.npz", (3, 4, 4)).y is None


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((5, 2, 8, 8), np.float32)}, r"samples of shape \[2, 8, 8\]"),
    ({"x": np.zeros((5, 1, 8, 8), np.float32), "y": np.zeros(4, np.int64)}, "y must have shape"),
    ({"x": np.zeros((5, 1, 8, 8), np.float32), "y": np.zeros(5, np.float32)}, "integer class ids"),
    ({"images": np.zeros((5, 1, 8, 8), np.float32)}, "no array named 'x'"),
    ({"x": np.full((5, 1, 8, 8), np.nan, np.float32)}, "sample 0 has NaN"),
    ({"x": np.zeros((1, 1, 8, 8), np.float32)}, "at least 2"),
    ({"x": np.zeros((5, 1, 8, 8), np.float32), "y": np.array([0, 1, 2, 3, 2**40])}, "class id 1099511627776"),
])
def test_npz_problems_are_clear(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(gc.GraphError, match=message):
        load_dataset(tmp_path / "bad.npz", (1, 8, 8))


def test_a_corrupt_npz_is_a_clear_error(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(gc.GraphError, match="cannot read this .npz"):
        load_dataset(tmp_path / "c.npz", (1, 8, 8))


def test_graph_and_dataset_must_agree(tmp_path):
    digits = load_dataset("digits", (1, 8, 8))
    with pytest.raises(gc.GraphError, match="10 classes but the graph's output has 3"):
        check_task(tiny_classifier(classes=3), "classify", digits)
    with pytest.raises(gc.GraphError, match="output shape .* to equal"):
        check_task(tiny_classifier(), "reconstruct")
    with pytest.raises(gc.GraphError, match="timestep"):
        check_task(tiny_classifier(), "diffusion")
    np.savez(tmp_path / "u.npz", x=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(gc.GraphError, match="no labels"):
        check_task(tiny_classifier(), "classify", load_dataset(tmp_path / "u.npz", (1, 8, 8)))
    assert check_task(tiny_autoencoder(), "reconstruct", digits).outputs == [(1, 8, 8)]
