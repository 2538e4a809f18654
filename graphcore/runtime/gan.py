"""Training a GAN (``--task gan``): StyleGAN2's loop over a document's ``generator`` and
``discriminator`` subgraphs, and sampling from a GAN run.

Each step trains the discriminator on a batch of real images and as many generated ones with the
non-saturating logistic loss, softplus(D(fake)) + softplus(-D(real)); every ``r1_every`` steps
it also adds the R1 penalty gamma/2 * |grad D(real)|^2, scaled by ``r1_every`` ("lazy"
regularisation, as StyleGAN2); then it trains the generator with softplus(-D(G(z))). Both use
Adam with betas (0, 0.99). The generator's EMA copy (``ema`` decay) is what samples are drawn
from, and the mean style ``w_avg`` is tracked for truncation. With probability ``style_mixing``
a batch takes the styles of a second latent from a random block on.

``GanTrainer`` is the ``Trainer`` with these steps: the run folder, time budget, events,
checkpoints (``last.pt`` adds the discriminator, its optimizer and ``w_avg``), exact resume and
the NaN stop are the Trainer's. At each epoch's end the EMA generator draws ``JUDGED`` images
that the digits judge (``runtime/judge.py``) reads: ``judge_acc`` (the fraction recognised with
> 0.9 confidence) and ``judge_classes`` (how many digits among them), when training on digits.
Images are in [-1, 1] inside the loop, as the data's [0, 1] mapped by ``DataRange``.

Styles: a generator's ``mapping`` block makes the style w that its StyleGAN blocks take.
``Styles`` hooks into the compiled generator to change w on its way (truncation, a given w for
interpolation) or to give the blocks after a cut a second style (mixing).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from blocks.stylegan import Mapping, ModulatedConv2d, StyleGANBlock, ToRGB
from graphcore.core.compiler import GraphModel, compile
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import load
from graphcore.runtime import diffusion
from graphcore.runtime.config import TrainConfig, gan_part
from graphcore.runtime.data import Dataset
from graphcore.runtime.devices import pick_device
from graphcore.runtime.judge import digits_judge
from graphcore.runtime.train import LAST_PT, WEIGHTS_PT, Trainer, _load_checkpoint, run_checkpoint

BETAS = (0.0, 0.99)  # StyleGAN2's Adam
W_AVG_BETA = 0.995  # how slowly the mean style follows the mapping's outputs
JUDGED = 200  # samples the judge reads at each epoch's end
PREVIEW = 16  # samples in the editor's preview
STYLED = (ModulatedConv2d, ToRGB, StyleGANBlock)  # the blocks that take a style w (their second input)
StyleMap = Callable[[torch.Tensor], torch.Tensor]


def first_output(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The generator's images: its first output (a second one may be w)."""
    return out[0] if isinstance(out, tuple) else out


# ----------------------------------------------------------------------------- styles
class Styles:
    """The style w of a compiled generator: the output of its (first) ``mapping`` block, and the
    blocks that take it, in the order the forward pass runs them."""

    def __init__(self, generator: GraphModel):
        modules = dict(generator.named_children())
        called = [modules[n.target] for n in generator.graph.nodes if n.op == "call_module"]
        self.mapping: nn.Module | None = next((m for m in called if isinstance(m, Mapping)), None)
        self.styled = [m for m in called if isinstance(m, STYLED)]

    @property
    def can_mix(self) -> bool:
        return self.mapping is not None and len(self.styled) > 1

    def needed(self, what: str) -> nn.Module:
        """The mapping block, or one line saying that ``what`` needs one."""
        if self.mapping is None:
            raise GraphError(f"{what} works on the style w, which a 'mapping' block makes; the generator has none")
        return self.mapping

    @contextlib.contextmanager
    def control(self, w: StyleMap | None = None, mix: tuple[torch.Tensor, int] | None = None) -> Iterator[None]:
        """While inside: the mapping's output w becomes ``w(w)``, and with ``mix = (w2, cut)`` the
        styled blocks from number ``cut`` on take ``w2`` instead."""
        handles = []
        if w is not None and self.mapping is not None:
            handles.append(self.mapping.register_forward_hook(lambda module, args, out: w(out)))
        if mix is not None:
            second, cut = mix
            for module in self.styled[cut:]:
                handles.append(module.register_forward_pre_hook(lambda module, args: (args[0], second, *args[2:])))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


# ----------------------------------------------------------------------------- the loop
class GanTrainer(Trainer):
    """Trains a GAN document's generator and discriminator into one run folder (module docstring)."""

    CHECKPOINT = LAST_PT | {"discriminator": dict, "optimizer_d": dict, "w_avg": torch.Tensor}
    FIGURES = ("loss", "loss_d", "loss_g", "r1")  # loss = loss_d + loss_g (the NaN check); r1 NaN where not computed
    DROP_LAST = True  # no smaller last batch: minibatch std reads the batch (and groups of G need N divisible by G)

    def _load_data(self) -> Dataset:
        """The dataset, every sample of it to train on: a GAN has no validation loss (the judge reads
        samples), and a small dataset is what its discriminator overfits."""
        try:
            data = super()._load_data()
        except GraphError as exc:  # the loader speaks of "the graph's input": here it is the generator's output
            raise GraphError(f"graph {self.doc.name!r}: the generator makes {list(self.shape)}, and "
                             f"{exc.diagnostics[0].message}") from None
        data.train_idx = torch.arange(len(data))
        return data

    def _prepare_models(self, train_x: torch.Tensor) -> None:
        cfg = self.config
        if cfg.init:
            raise GraphError("--init (fine-tuning) is not available for GAN runs; resume a GAN run with --resume")
        self.model = compile(gan_part(self.doc, "generator")).init(seed=cfg.seed)
        self.disc = compile(gan_part(self.doc, "discriminator")).init(seed=cfg.seed + 1)
        self.schedule = None
        self.z_dim = _z_dim(self.model)
        self._preflight(train_x[:2])
        layout = self.layout if self.channels_last else torch.preserve_format
        for net in (self.model, self.disc):
            net.to(self.device, memory_format=layout).train()
        self.net = self.model
        self.styles = Styles(self.model)
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = self._adam(self.model)
        self.optimizer_d = self._adam(self.disc)
        self._params, self._d_params = list(self.model.parameters()), list(self.disc.parameters())
        self._ema_params = list(self.ema_model.parameters())
        with torch.no_grad():  # the width of w, which a mapping block's params alone do not say
            w_dim = self.styles.mapping(torch.zeros(1, self.z_dim, device=self.device)).shape[1] \
                if self.styles.mapping is not None else 0
        self.w_avg = torch.zeros(w_dim, device=self.device)
        self._judge = self._judge_for()

    def _adam(self, net: nn.Module) -> torch.optim.Optimizer:
        fused = {"fused": True} if self.device.type == "cuda" else {}
        return torch.optim.Adam(net.parameters(), lr=self.config.lr, betas=BETAS, eps=1e-8, **fused)

    def _judge_for(self) -> Callable | None:
        """The digits judge at the images' size, when the run trains on digits of one channel."""
        if self.config.dataset != "digits" or len(self.shape) != 3 or self.shape[0] != 1:
            return None
        return digits_judge((self.shape[1], self.shape[2])) if self.main else None

    def _trial(self, x: torch.Tensor) -> None:
        """The generator on two latents and the discriminator on its images and on ``x``."""
        self.disc.eval()
        try:
            fake = first_output(self.model(torch.randn(len(x), self.z_dim, device=x.device)))
            self.disc(fake)
            self.disc(self.range.to_model(x))
        finally:
            self.disc.train()

    @staticmethod
    def _new_partial() -> dict:
        return {"loss": 0.0, "loss_d": 0.0, "loss_g": 0.0, "r1": 0.0, "r1_count": 0, "count": 0}

    # ------------------------------------------------------------------ one step
    def _train_step(self, idx: torch.Tensor) -> None:
        """A discriminator step (with R1 every ``r1_every``), a generator step, the EMA and ``w_avg``;
        the losses go to the device buffer like the Trainer's."""
        cfg = self.config
        self._schedule_lr(self.optimizer, self.optimizer_d)
        real = self.range.to_model(self.train_x[idx])  # (B, C, H, W) in [-1, 1]
        if self.channels_last:
            real = real.contiguous(memory_format=self.layout)
        n = len(idx)
        with torch.no_grad(), self._autocast():
            fake, _ = self._generate(n)
        with self._autocast():
            loss_d = (F.softplus(self.disc(fake)) + F.softplus(-self.disc(real))).mean()
        self._descend(loss_d, self.optimizer_d, self._d_params)
        r1 = torch.full((), float("nan"), device=self.device)
        if cfg.r1_gamma > 0 and self.step % cfg.r1_every == 0:
            r1 = self._r1(real)
            self._descend(r1 * (cfg.r1_gamma / 2 * cfg.r1_every), self.optimizer_d, self._d_params, scaled=False)
        self.disc.requires_grad_(False)  # the generator's step needs no gradients of D's weights
        with self._autocast():
            fake, w = self._generate(n)
            loss_g = F.softplus(-self.disc(fake)).mean()
        self._descend(loss_g, self.optimizer, self._params)
        self.disc.requires_grad_(True)
        if self.scaler.is_enabled():
            self.scaler.update()
        with torch.no_grad():
            slot = len(self._sizes)
            for row, value in enumerate((loss_d + loss_g, loss_d, loss_g, r1)):
                self._buffer[row, slot] = value.detach().float()
            decay = min(cfg.ema, (1 + self.step) / (10 + self.step))  # warms up, as the Trainer's EMA
            torch._foreach_lerp_(self._ema_params, self._params, 1.0 - decay)
            if w is not None:
                self.w_avg.lerp_(w.detach().float().mean(dim=0), 1.0 - W_AVG_BETA)
        self._sizes.append(n)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _generate(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` images from the generator being trained, and their style w (None without a mapping
        block); with probability ``style_mixing`` the blocks after a random cut take a second latent's w."""
        z = torch.randn(n, self.z_dim, generator=self.generator, device=self.device)
        kept: list[torch.Tensor] = []
        mix = None
        if self.config.style_mixing > 0 and self.styles.can_mix:
            # drawn on the CPU from (seed, step): the same on resume, and no device sync per step
            choice = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step)
            if torch.rand((), generator=choice).item() < self.config.style_mixing:
                cut = int(torch.randint(1, len(self.styles.styled), (), generator=choice))
                second = torch.randn(n, self.z_dim, generator=self.generator, device=self.device)
                mix = (self.styles.needed("style mixing")(second), cut)

        def keep(w: torch.Tensor) -> torch.Tensor:
            kept.append(w)
            return w

        with self.styles.control(w=keep, mix=mix):
            images = first_output(self.model(z))
        return images, (kept[0] if kept else None)

    def _r1(self, real: torch.Tensor) -> torch.Tensor:
        """R1: the mean squared norm of the discriminator's gradient at the real images (in float32)."""
        real = real.detach().requires_grad_(True)
        score = self.disc(real)
        (grad,) = torch.autograd.grad(score.sum(), real, create_graph=True)
        return grad.square().flatten(1).sum(dim=1).mean()

    def _descend(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                 scaled: bool = True) -> None:
        """One optimizer step on ``loss``; under DDP the gradients are averaged over the ranks by
        hand (the R1 penalty's double backward and the two networks' alternating steps are outside
        what DistributedDataParallel's hooks allow)."""
        optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler if scaled and self.scaler.is_enabled() else None
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if self.world > 1:
            grads = [p.grad for p in params if p.grad is not None]
            flat = torch.cat([g.flatten() for g in grads])
            torch.distributed.all_reduce(flat)
            flat /= self.world
            torch._foreach_copy_(grads, [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]),
                                                                             grads, strict=True)])
        if scaler is not None:
            scaler.step(optimizer)
        else:
            optimizer.step()

    # ------------------------------------------------------------------ figures
    def _accumulate(self, figures: dict[str, float], size: int) -> None:
        for name in ("loss", "loss_d", "loss_g"):
            self.partial[name] += figures[name] * size
        if np.isfinite(figures["r1"]):
            self.partial["r1"] += figures["r1"]
            self.partial["r1_count"] += 1
        self.partial["count"] += size

    def _train_figures(self) -> dict[str, float]:
        count = max(1, self.partial["count"])
        train = {name: self.partial[name] / count for name in ("loss", "loss_d", "loss_g")}
        if self.partial["r1_count"]:
            train["r1"] = self.partial["r1"] / self.partial["r1_count"]
        return train

    def _score(self, val: dict[str, float]) -> float:
        """best.pt: the weights whose samples the judge recognises most (without a judge: the newest)."""
        return -val["judge_acc"] if "judge_acc" in val else -float(self.step)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The judge's reading of ``JUDGED`` images of the EMA generator (fixed latents); {} without a judge."""
        if self._judge is None:
            return {}
        images = generate(self.ema_model, JUDGED, seed=0, device=self.device)
        verdict = self._judge(images)
        return {"judge_acc": verdict.recognised, "judge_classes": float(verdict.classes)}

    @torch.no_grad()
    def _preview(self) -> None:
        if len(self.shape) != 3:
            return
        images = generate(self.ema_model, PREVIEW, seed=0, device=self.device).cpu()
        self._emit({"type": "samples", "epoch": self.epoch, "step": self.step,
                    "images": (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
                    "png": diffusion.png_bytes(images, scale=2)})

    # ------------------------------------------------------------------ checkpoints
    def _weights(self) -> dict:
        return super()._weights() | {
            "discriminator": {k: v.detach().cpu() for k, v in self.disc.state_dict().items()},
            "w_avg": self.w_avg.detach().cpu()}

    def _optimizer_states(self) -> dict:
        return super()._optimizer_states() | {"optimizer_d": self.optimizer_d.state_dict()}

    def _restore_state(self, state: dict, path: Path) -> None:
        super()._restore_state(state, path)
        self.disc._load_checked(state["discriminator"], str(path))
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.w_avg.copy_(state["w_avg"])


# ----------------------------------------------------------------------------- sampling
@dataclass
class GanGenerator:
    """A GAN run's EMA generator, its mean style and its config."""

    model: GraphModel
    w_avg: torch.Tensor
    config: TrainConfig


def load_generator(run_dir: str | os.PathLike, *, checkpoint: str = "last", device: str = "cpu") -> GanGenerator:
    """The EMA generator of a GAN run (and ``w_avg``), in eval mode on ``device``."""
    run_dir = Path(run_dir)
    config, path = run_checkpoint(run_dir, checkpoint)
    if config.task != "gan":
        raise GraphError(f"{run_dir}: this run was trained for {config.task!r}, not as a GAN")
    state = _load_checkpoint(path, WEIGHTS_PT | {"ema": dict, "w_avg": torch.Tensor})
    model = compile(gan_part(load(run_dir / "graph.json"), "generator"))
    model._load_checked(state["ema"], str(path))
    dev = pick_device(device)
    return GanGenerator(model.to(dev).eval(), state["w_avg"].to(dev), config)


def latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """(n, Z) standard normal latents of ``seed``, drawn on the CPU: the same on every device."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(model: GraphModel, n: int, *, seed: int = 0, psi: float = 1.0, w_avg: torch.Tensor | None = None,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` images (n, C, H, W) in [0, 1] from latents of ``seed``; ``psi`` < 1 pulls their styles
    towards ``w_avg`` (truncation; psi = 0: every image is the mean style's)."""
    z = latents(n, _z_dim(model), seed).to(device)
    if psi == 1.0:
        return diffusion.to_unit_range(first_output(model(z)).float())
    styles = Styles(model)
    styles.needed("truncation (psi)")
    mean = w_avg if w_avg is not None else torch.zeros(())
    with styles.control(w=lambda w: torch.lerp(mean.to(w), w, psi)):
        return diffusion.to_unit_range(first_output(model(z)).float())


@torch.no_grad()
def interpolate(model: GraphModel, *, seed_a: int, seed_b: int, frames: int = 8, psi: float = 1.0,
                w_avg: torch.Tensor | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Images (frames, C, H, W) in [0, 1] along the straight line in W between the styles of the
    latents of two seeds (W, not z: StyleGAN's W is where a line stays among images)."""
    styles = Styles(model)
    mapping = styles.needed("interpolation")
    z_dim = _z_dim(model)
    ends = mapping(torch.cat([latents(1, z_dim, seed_a), latents(1, z_dim, seed_b)]).to(device))  # (2, W)
    if psi != 1.0:
        mean = w_avg.to(ends) if w_avg is not None else torch.zeros_like(ends[0])
        ends = torch.lerp(mean, ends, psi)
    alphas = torch.linspace(0.0, 1.0, frames, device=device)[:, None]  # (frames, 1)
    path = torch.lerp(ends[:1], ends[1:], alphas)  # (frames, W)
    with styles.control(w=lambda w: path):
        return diffusion.to_unit_range(first_output(model(torch.zeros(frames, z_dim, device=device))).float())


def _z_dim(model: GraphModel) -> int:
    return int(next(n for n in model.graph.nodes if n.op == "placeholder").meta["shape"][1])
