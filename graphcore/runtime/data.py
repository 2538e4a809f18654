"""Datasets for training: everything in memory as tensors, checked against the graph first.

A source is one of

- ``digits``: scikit-learn's 1,797 real 8×8 handwritten digits (shipped in its wheel, so
  nothing downloads), resized to the graph's input shape. A video input ``(C, T, H, W)`` gets
  clips of each digit drifting across the frame.
- a folder of class sub-folders of images (``DIR/cat/1.png``, ``DIR/dog/2.jpg``), or a folder
  of images with no sub-folders (unlabelled: for reconstruct and diffusion);
- ``moons``, ``circles``, ``swissroll``, ``gaussians8``: 2-D point clouds generated from a fixed
  seed (``kind == "vectors"``), in their own units; diffusion standardises them (``Dataset.mean``,
  ``Dataset.std``) and maps samples back;
- an ``.npz`` file with ``x`` (N, *shape) and optionally ``y`` (N,) integer labels; ``x`` of shape
  (N, D) with a float dtype is vector data, kept in its own units.

Images become float32 in [0, 1]; the train/val split is fixed (its own seed, independent of the
training seed) so that every run of a graph on a dataset is validated on the same samples.
Every mismatch is a ``GraphError`` with a one-line message, raised before training starts.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from graphcore.core.diagnostics import GraphError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
MAX_CLASSES = 1_000_000  # ids at or above this are a mistake, not a dataset (the output needs one unit each)
MIN_STD = 1e-6  # a constant feature is not divided by zero when standardised
POINTS = 20_000  # samples of each generated 2-D dataset
POINTS_SEED = 0  # the generated datasets are fixed: every run on "moons" sees the same points
DataKind = Literal["images", "vectors"]


@dataclass
class Dataset:
    """Samples ``x`` (N, *shape) float32, labels ``y`` (N,) int64 or None, and a fixed split."""

    name: str
    x: torch.Tensor
    y: torch.Tensor | None
    classes: list[str] = field(default_factory=list)
    kind: DataKind = "images"  # images: values in [0, 1]; vectors: (N, D) in the data's own units
    train_idx: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    val_idx: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self.train_idx if which == "train" else self.val_idx
        return self.x[idx], (self.y[idx] if self.y is not None else None)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def mean(self) -> torch.Tensor:
        """Per-feature mean (D,) over all samples: where diffusion centres vector data."""
        return self.x.mean(dim=0)

    @property
    def std(self) -> torch.Tensor:
        """Per-feature standard deviation (D,), at least ``MIN_STD``: diffusion's unit for vector data."""
        return self.x.std(dim=0).clamp_min(MIN_STD)


def load_dataset(source: str | os.PathLike, shape: Sequence[int], *, val_fraction: float = 0.2,
                 split_seed: int = 0) -> Dataset:
    """Load ``source`` for a graph input of per-sample ``shape`` and split it into train/val."""
    shape = tuple(int(d) for d in shape)
    text = str(source)
    if text == "digits":
        dataset = _digits(shape)
    elif text in POINT_CLOUDS:
        dataset = _points(text, shape)
    else:
        path = Path(source)
        if not path.exists():
            raise GraphError(f"dataset {text!r} not found (use {SOURCES})")
        if path.is_dir():
            dataset = _folder(path, shape)
        elif path.suffix == ".npz":
            dataset = _npz(path, shape)
        else:
            raise GraphError(f"dataset {text!r}: expected {SOURCES}")
    _check_finite(dataset)
    _split(dataset, val_fraction, split_seed)
    return dataset


# ----------------------------------------------------------------------------- digits
def _digits(shape: tuple[int, ...]) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    labels = torch.tensor(bunch.target, dtype=torch.long)  # (N,)
    classes = [str(c) for c in range(10)]
    if len(shape) == 1 and shape[0] == 64:
        x = images.flatten(1)  # (N, 64)
    elif len(shape) == 3:
        x = _resize(images, shape[1:]).expand(-1, shape[0], -1, -1).contiguous()  # (N, C, H, W)
    elif len(shape) == 4:
        x = _drifting_clips(images, shape)  # (N, C, T, H, W)
    else:
        raise GraphError(f"the digits dataset gives images (C, H, W), clips (C, T, H, W) or 64 features; "
                         f"the graph's input has shape {list(shape)}")
    return Dataset("digits", x, labels, classes)


def _resize(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, H, W), bilinear, values kept in [0, 1]."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    antialias = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    out = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)
    return out.clamp_(0.0, 1.0)


def _drifting_clips(images: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Each digit drifts by one pixel a frame in a fixed random direction: (N, 1, 8, 8) -> (N, C, T, H, W)."""
    channels, frames, height, width = shape
    base = _resize(images, (height, width))  # (N, 1, H, W)
    rng = np.random.default_rng(1)
    velocity = rng.integers(-1, 2, size=(len(base), 2))  # (N, 2): dy, dx in {-1, 0, 1}
    pad = frames
    padded = F.pad(base, (pad, pad, pad, pad))  # (N, 1, H + 2p, W + 2p)
    clips = torch.empty(len(base), 1, frames, height, width)
    for f in range(frames):
        shift = f - frames // 2
        for i, (vy, vx) in enumerate(velocity):
            top, left = pad - shift * vy, pad - shift * vx
            clips[i, :, f] = padded[i, :, top:top + height, left:left + width]
    return clips.expand(-1, channels, -1, -1, -1).contiguous()


# ----------------------------------------------------------------------------- 2-D point clouds
def _moons(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    from sklearn.datasets import make_moons

    return make_moons(POINTS, noise=0.05, random_state=int(rng.integers(2**31)))


def _circles(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    from sklearn.datasets import make_circles

    return make_circles(POINTS, factor=0.5, noise=0.04, random_state=int(rng.integers(2**31)))


def _swissroll(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(POINTS, noise=0.3, random_state=int(rng.integers(2**31)))
    return points[:, [0, 2]], None  # the roll seen along its axis: a 2-D spiral; no classes


def _gaussians8(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Eight Gaussians (std 0.1) on a circle of radius 2; the label is the Gaussian."""
    labels = rng.integers(0, 8, POINTS)
    angles = labels * (2 * math.pi / 8)
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (N, 2)
    return centres + 0.1 * rng.standard_normal((POINTS, 2)), labels


POINT_CLOUDS = {"moons": _moons, "circles": _circles, "swissroll": _swissroll, "gaussians8": _gaussians8}
"""The generated 2-D datasets: ``make(rng) -> (points (N, 2), labels (N,) or None)``."""
SOURCES = f"'digits', {', '.join(repr(name) for name in POINT_CLOUDS)}, a folder of images or an .npz file"


def _points(name: str, shape: tuple[int, ...]) -> Dataset:
    if shape != (2,):
        raise GraphError(f"dataset {name!r} gives 2-D points (shape [2]); the graph's input has shape {list(shape)}")
    points, labels = POINT_CLOUDS[name](np.random.default_rng(POINTS_SEED))
    x = torch.from_numpy(points.astype(np.float32))  # (N, 2)
    if labels is None:
        return Dataset(name, x, None, kind="vectors")
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(name, x, y, [str(c) for c in range(int(y.max()) + 1)], kind="vectors")


# ----------------------------------------------------------------------------- folders
def _folder(path: Path, shape: tuple[int, ...]) -> Dataset:
    if len(shape) != 3:
        raise GraphError(f"{path}: a folder of images feeds an input of shape (C, H, W); "
                         f"the graph's input has shape {list(shape)}")
    channels, height, width = shape
    if channels not in PIL_MODES:
        raise GraphError(f"{path}: images have 1, 3 or 4 channels; the graph's input has {channels}")
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        groups = [(d.name, _image_files(d)) for d in subdirs]
        empty = [name for name, files in groups if not files]
        if empty:
            raise GraphError(f"{path}: class folder {empty[0]!r} has no images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    else:
        groups = [("", _image_files(path))]
        if not groups[0][1]:
            raise GraphError(f"{path}: the folder is empty: put images in it, or one sub-folder of images per class")
    images, labels = [], []
    for label, (_, files) in enumerate(groups):
        for file in files:
            images.append(_read_image(file, PIL_MODES[channels], (width, height)))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).float().div_(255.0)  # (N, H, W, C)
    x = x.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    if subdirs:
        return Dataset(path.name, x, torch.tensor(labels, dtype=torch.long), [name for name, _ in groups])
    return Dataset(path.name, x, None, [])


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(file: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image = image.convert(mode)
            if image.size != size:
                image = image.resize(size, Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise GraphError(f"{file}: cannot read this image: {exc}".splitlines()[0]) from None
    return array.reshape(size[1], size[0], -1)  # (H, W, C), also for mode "L"


# ----------------------------------------------------------------------------- npz
def _npz(path: Path, shape: tuple[int, ...]) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise GraphError(f"{path}: cannot read this .npz file: {exc}".splitlines()[0]) from None
    if "x" not in arrays:
        raise GraphError(f"{path}: no array named 'x' (found: {', '.join(arrays) or 'nothing'})")
    raw = arrays["x"]
    if raw.ndim == len(shape) and len(shape) == 3 and shape[0] == 1:
        raw = raw[:, None]  # (N, H, W) for a one-channel input
    if tuple(raw.shape[1:]) != shape:
        what = "vectors" if raw.ndim == 2 else "samples"
        raise GraphError(f"{path}: x has {what} of shape {list(raw.shape[1:])}, "
                         f"the graph's input takes {list(shape)}")
    if len(raw) == 0:
        raise GraphError(f"{path}: x has no samples")
    if raw.dtype == np.uint8:
        x = torch.from_numpy(raw.astype(np.float32) / 255.0)
    elif np.issubdtype(raw.dtype, np.number) and not np.iscomplexobj(raw):
        x = torch.from_numpy(raw.astype(np.float32))
    else:
        raise GraphError(f"{path}: x must hold numbers, got dtype {raw.dtype}")
    y, classes = None, []
    if "y" in arrays:
        labels = arrays["y"]
        if labels.shape != (len(raw),):
            raise GraphError(f"{path}: y must have shape ({len(raw)},) to match x, got {list(labels.shape)}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise GraphError(f"{path}: y must hold integer class ids, got dtype {labels.dtype}")
        if labels.min() < 0:
            raise GraphError(f"{path}: y has a negative class id ({labels.min()})")
        if labels.max() >= MAX_CLASSES:
            raise GraphError(f"{path}: y has class id {labels.max()}; class ids must be below {MAX_CLASSES:,} "
                             "(number the classes 0, 1, 2, …)")
        y = torch.from_numpy(labels.astype(np.int64))
        classes = [str(c) for c in range(int(labels.max()) + 1)]
    kind: DataKind = "vectors" if raw.ndim == 2 and raw.dtype != np.uint8 else "images"
    return Dataset(path.stem, x.contiguous(), y, classes, kind=kind)


# ----------------------------------------------------------------------------- checks and split
def _check_finite(dataset: Dataset) -> None:
    bad = ~torch.isfinite(dataset.x.flatten(1)).all(dim=1)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise GraphError(f"dataset {dataset.name!r}: sample {first} has NaN or infinite values "
                         f"({int(bad.sum())} such samples)")


def _split(dataset: Dataset, val_fraction: float, seed: int) -> None:
    n = len(dataset)
    if n < 2:
        raise GraphError(f"dataset {dataset.name!r} has {n} sample(s); training needs at least 2")
    if not 0.0 < val_fraction < 1.0:
        raise GraphError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    n_val = min(n - 1, max(1, math.ceil(n * val_fraction)))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    dataset.val_idx, dataset.train_idx = order[:n_val].sort().values, order[n_val:].sort().values
