"""The digits judge: a small classifier of scikit-learn's digits that says how many generated
images look like digits, and how many kinds of digit they are.

    judge = digits_judge((16, 16))          # trained once per size (seconds), then cached
    verdict = judge(images)                 # (N, 1, H, W) in [0, 1]
    verdict.recognised, verdict.classes     # fraction recognised with > 0.9 confidence, classes among them

The classifier (the recipe of ``benchmarks/bench_diffusion.py``'s judge) is trained, seeded, on
80 % of the digits resized to the size asked for, and on as many images that are no digit (an
eleventh class, so that noise is not confidently a digit); its accuracy on the other 20 % of the
digits is ``judge.accuracy``. Its weights are cached in the temp folder
(``netcanvas-judge/``), so the GAN task's metrics and the benchmark share one.
"""

from __future__ import annotations

import functools
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from graphcore.core.document import write_atomic
from graphcore.runtime.data import load_dataset

CONFIDENCE = 0.9  # a sample is recognised when the judge gives a digit more than this
NO_DIGIT = 10  # the judge's eleventh class: an image that is no digit
VERSION = 1  # of the judge's recipe: a new one is trained rather than an old file loaded
EPOCHS, BATCH, LR, SEED = 30, 64, 2e-3, 0


def _classifier() -> nn.Module:
    """Two 3x3 conv layers with pooling to 4x4 whatever the size, then two linear layers: 11 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(4), nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, NO_DIGIT + 1),
    )


def blurred_noise(n: int, size: tuple[int, int], kernel: int = 5, seed: int = 0) -> torch.Tensor:
    """(n, 1, H, W) blobs of noise in [0, 1]: what an undertrained generator draws."""
    noise = torch.randn(n, 1, size[0] - 1 + kernel, size[1] - 1 + kernel, generator=torch.Generator().manual_seed(seed))
    blobs = F.avg_pool2d(noise, kernel, stride=1)
    return (blobs / blobs.flatten(1).std(1).view(-1, 1, 1, 1) * 0.5 + 0.3).clamp(0, 1)


def no_digits(digits: torch.Tensor, seed: int) -> torch.Tensor:
    """As many images that are no digit as ``digits`` (N, 1, H, W) holds, of the kinds a broken or
    undertrained generator draws: blurred noise, plain noise, two digits on top of each other, a
    digit with its pixels shuffled, a digit drowned in noise."""
    g = torch.Generator().manual_seed(seed)
    n = len(digits)
    other = digits[torch.randperm(n, generator=g)]
    shuffled = digits.flatten(1)[:, torch.randperm(digits[0].numel(), generator=g)].view_as(digits)
    kernel = int(torch.randint(2, 7, (), generator=g))
    kinds = [blurred_noise(n, (digits.shape[-2], digits.shape[-1]), kernel=kernel, seed=seed),
             torch.rand(digits.shape, generator=g),
             torch.maximum(digits, other.flip(-1)),
             shuffled,
             (digits + 0.6 * torch.randn(digits.shape, generator=g)).clamp(0, 1)]
    pick = torch.randint(len(kinds), (n,), generator=g)
    return torch.stack([kinds[k][i] for i, k in enumerate(pick.tolist())])


@dataclass(frozen=True)
class Verdict:
    """What the judge says of a set of images."""

    recognised: float  # fraction recognised with more than CONFIDENCE
    classes: int  # distinct digits among the recognised ones
    labels: torch.Tensor  # (N,) the judge's class for each image (NO_DIGIT: none)
    confidence: torch.Tensor  # (N,) its probability


class Judge:
    """A trained digits classifier at one image size; call it on images (N, 1, H, W) in [0, 1]."""

    def __init__(self, model: nn.Module, size: tuple[int, int], accuracy: float):
        self.model, self.size, self.accuracy = model.eval(), size, accuracy

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Verdict:
        images = images.detach().float().cpu()
        if tuple(images.shape[-2:]) != self.size:
            images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False)
        probabilities = torch.cat([self.model(chunk).softmax(dim=1) for chunk in images.split(256)])  # (N, 11)
        confidence, labels = probabilities.max(dim=1)
        sure = (confidence > CONFIDENCE) & (labels != NO_DIGIT)
        return Verdict(sure.float().mean().item(), int(labels[sure].unique().numel()), labels, confidence)


@functools.lru_cache(maxsize=4)
def digits_judge(size: tuple[int, int], cache: Path | None = None) -> Judge:
    """The judge for ``size`` (H, W) images: loaded from ``cache`` (default: the temp folder) or trained."""
    folder = cache or Path(tempfile.gettempdir()) / "netcanvas-judge"
    path = folder / f"digits-{size[0]}x{size[1]}-v{VERSION}.pt"
    model = _classifier()
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            return Judge(model, size, float(state["accuracy"]))
        except (OSError, RuntimeError, KeyError, EOFError, ValueError):
            pass  # damaged or from another recipe: train again
    accuracy = _train(model, size)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "accuracy": accuracy}, buffer)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    return Judge(model, size, accuracy)


def _train(model: nn.Module, size: tuple[int, int]) -> float:
    """Train ``model`` on 80 % of the digits at ``size`` and as many images that are no digit;
    its accuracy on the held-out 20 % of the digits."""
    data = load_dataset("digits", (1, *size), val_fraction=0.2, split_seed=SEED)
    (x_train, y_train), (x_val, y_val) = data.split("train"), data.split("val")
    assert y_train is not None and y_val is not None, "the digits have labels"
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)  # the layers' initial weights and the dropout
    model.load_state_dict(_classifier().state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    for epoch in range(EPOCHS):
        x = torch.cat([x_train, no_digits(x_train, seed=epoch)])
        y = torch.cat([y_train, torch.full((len(x_train),), NO_DIGIT)])
        for idx in torch.randperm(len(x), generator=generator).split(BATCH):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(x_val).argmax(dim=1) == y_val).float().mean().item()
