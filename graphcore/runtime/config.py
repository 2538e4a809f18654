"""What a training run computes: its config, its result, and whether a graph fits a task.

``TrainConfig`` is saved as a run's ``config.json``; ``check_task`` says in one line why a graph
or a dataset does not fit a task (classify, reconstruct, diffusion or gan); ``gan_part`` is one of a
GAN document's two networks as a graph of its own.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from graphcore.core.analysis import Analysis
from graphcore.core.diagnostics import GraphError, errors, one_line
from graphcore.core.document import GraphDoc
from graphcore.core.subgraphs import standalone
from graphcore.runtime import diffusion
from graphcore.runtime.data import Dataset

Task = Literal["classify", "reconstruct", "diffusion", "gan", "alphazero", "muzero"]
TASKS = ("classify", "reconstruct", "diffusion", "gan", "alphazero", "muzero")
GAN_PARTS = ("generator", "discriminator")
"""The subgraphs a GAN document must have: z -> image(, w) and image -> logit."""
DEFAULT_LR = {"adamw": 3e-3, "sgd": 0.05}
DEFAULT_EPOCHS = 10  # when neither epochs nor a time budget is given
SEED_MAX = 2**32 - 1  # torch seeds are 64-bit; the trainer multiplies the seed (by 100,003 at most)


@dataclass
class TrainConfig:
    """Everything that decides what a run computes (saved as the run's ``config.json``)."""

    task: Task = "classify"
    dataset: str = "digits"
    epochs: int | None = None  # None: until ``minutes`` is used up (10 when neither is given)
    minutes: float | None = None  # time budget of this invocation; the lr schedule is planned to end with it
    batch_size: int = 64
    lr: float | None = None  # None: 3e-3 for AdamW, 0.05 for SGD
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = 0.01
    momentum: float = 0.9  # SGD only
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup: float = 0.05  # fraction of all steps spent warming up linearly
    clip_grad: float | None = 1.0  # max gradient norm; None or 0 turns clipping off
    seed: int = 0
    device: str = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # mixed precision, CUDA only
    val_fraction: float = 0.2
    beta_schedule: Literal["linear", "cosine"] = "cosine"  # diffusion
    timesteps: int = 1000  # diffusion
    loss_weighting: Literal["none", "min_snr"] = "min_snr"  # diffusion: min(SNR, 5)/SNR per timestep
    ema: float | None = None  # weight EMA decay; None: 0.999 for diffusion, off otherwise
    log_every: int = 10  # steps between "step" events
    preview_every: int = 1  # epochs between preview images (events only)
    checkpoint_minutes: float = 2.0  # also save last.pt this often inside an epoch: what a crash can lose
    init: str | None = None  # start from these weights (a state_dict or a run's checkpoint): fine-tuning
    r1_gamma: float = 0.1  # gan: weight of the R1 penalty on the discriminator's gradient at real images
    r1_every: int = 16  # gan: lazy R1, computed every this many discriminator steps (and scaled up to match)
    style_mixing: float = 0.9  # gan: probability that a batch mixes the styles of two latents
    game: str | None = None  # self-play: tictactoe or connect4 (None: the graph's meta.game)
    workers: int = 2  # self-play: worker processes
    simulations: int = 50  # self-play: MCTS simulations per move, in self-play and evaluation
    replay_size: int = 20_000  # self-play: samples (positions under each symmetry) kept for training
    sample_reuse: float = 4.0  # self-play: training samples drawn per sample self-play has made, at most
    update_every: int = 20  # self-play: steps between weight updates to the self-play Inferencer
    epoch_steps: int = 500  # self-play: steps in an epoch, at whose end the net plays the fixed opponents
    eval_games: int = 20  # self-play: games against each fixed opponent at an epoch's end (half as x)
    unroll_steps: int = 5  # muzero: K, the steps each sample is unrolled through the dynamics in training
    td_steps: int = 9  # muzero: n, the rewards summed in a value target before the search's value bootstraps it

    def __post_init__(self):
        if self.task not in TASKS:
            raise GraphError(f"unknown task {self.task!r} (use {', '.join(TASKS)})")
        if self.optimizer not in DEFAULT_LR:
            raise GraphError(f"unknown optimizer {self.optimizer!r} (use adamw or sgd)")
        if self.loss_weighting not in diffusion.LOSS_WEIGHTINGS:
            raise GraphError(f"unknown loss weighting {self.loss_weighting!r} "
                             f"(use {' or '.join(diffusion.LOSS_WEIGHTINGS)})")
        if self.schedule not in ("cosine", "constant"):
            raise GraphError(f"unknown lr schedule {self.schedule!r} (use cosine or constant)")
        if self.epochs is None and self.minutes is None:
            self.epochs = DEFAULT_EPOCHS
        for name in ("epochs", "batch_size", "timesteps", "log_every", "preview_every", "r1_every", "workers",
                     "simulations", "replay_size", "update_every", "epoch_steps", "eval_games", "unroll_steps",
                     "td_steps"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise GraphError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        for name in ("lr", "minutes", "checkpoint_minutes", "sample_reuse"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise GraphError(f"{name} must be a positive number, got {value}")
        if not (math.isfinite(self.r1_gamma) and self.r1_gamma >= 0):
            raise GraphError(f"r1_gamma must be 0 or more, got {self.r1_gamma}")
        if not 0 <= self.style_mixing <= 1:
            raise GraphError(f"style_mixing is a probability from 0 to 1, got {self.style_mixing}")
        if not 0 <= self.seed <= SEED_MAX:
            raise GraphError(f"seed must be from 0 to {SEED_MAX}, got {self.seed}")
        if self.ema is None and self.task in ("diffusion", "gan"):
            self.ema = 0.999

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainConfig:
        """The config from its JSON form, every value's type checked; unknown keys are ignored. A
        problem is a ``GraphError`` of one line starting with ``source``."""
        if not isinstance(data, dict):
            raise GraphError(f"{source}: a run config must be a JSON object, got {type(data).__name__}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return _CONFIG_TYPES.validate_python(known)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].lower()}" for e in exc.errors())
            raise GraphError(f"{source}: {problems}") from None
        except GraphError as exc:  # a value of the right type out of range
            raise GraphError(f"{source}: {exc.diagnostics[0].message}") from None


TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "classify": {"epochs": 5},
    "reconstruct": {"epochs": 5},
    # no epochs: trains until the budget ends, the lr annealed with it; batch 32: more updates in a CPU
    # budget (bench_diffusion.py, unet_ddpm_small at 8x8 on 2 cores: 3 minutes, ~2,900-3,200 steps,
    # gave 80-83% of DDIM samples recognised as digits; the same model at 16x16, 1,800 steps, gave 60%)
    "diffusion": {"minutes": 3.0, "batch_size": 32},
    # StyleGAN2's lr (its Adam, betas (0, 0.99), without weight decay or clipping, is the task's own) and
    # batch 32 for more updates in a CPU budget; an EMA of about 350 steps' half-life for runs of a few
    # thousand steps (bench_generative.py measures stylegan2_digits with these)
    "gan": {"minutes": 10.0, "batch_size": 32, "lr": 0.002, "ema": 0.998},
    # self-play makes its own data: train until the budget ends, at a constant lr after the warm-up
    "alphazero": {"minutes": 10.0, "batch_size": 64, "lr": 0.002, "weight_decay": 1e-4, "schedule": "constant"},
    # MuZero's unrolled step costs little more at batch 256 than at 64 on the CPU (its small convs are
    # overhead-bound). 5-minute runs on 2 shared cores (load 4), agents at 50 simulations, 50 games against
    # perfect play: batch 64 lr 0.002 lost 72 %, lr 0.005 44 %; lr 0.005 batch 128 12 %, batch 256 2 %
    # (94 % wins against random)
    "muzero": {"minutes": 15.0, "batch_size": 256, "lr": 0.005, "weight_decay": 1e-4, "schedule": "constant"},
}
"""What the editor's Train panel starts from, per task (on top of ``TrainConfig``'s defaults)."""


def task_config(task: str, **overrides: Any) -> TrainConfig:
    """The config the editor's Train panel starts from for ``task``; ``benchmarks/bench_diffusion.py``
    measures the diffusion one."""
    if task not in TASK_DEFAULTS:
        raise GraphError(f"unknown task {task!r} (use {', '.join(TASKS)})")
    return TrainConfig(task=task, **(TASK_DEFAULTS[task] | overrides))


def read_config(path: str | os.PathLike) -> TrainConfig:
    """A run's ``config.json``; whatever is wrong with it is one line naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(f"{path}: cannot read: {one_line(getattr(exc, 'strerror', None) or str(exc))}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise GraphError(f"{path}: invalid JSON: nested too deeply") from None
    return TrainConfig.from_dict(data, str(path))


_CONFIG_TYPES = TypeAdapter(TrainConfig)


@dataclass
class TrainResult:
    status: Literal["finished", "stopped", "time_limit", "nan"]
    message: str
    run_dir: Path | None
    epoch: int
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- graph checks
@dataclass
class GraphIO:
    """A graph's inputs [(name, shape, dtype)] and output shapes, as training needs them."""

    inputs: list[tuple[str, tuple[int, ...], str]]
    outputs: list[tuple[int, ...]]

    @classmethod
    def of(cls, doc: GraphDoc, analysis: Analysis | None = None) -> GraphIO:
        """``doc``'s inputs and outputs (``analysis``: its analysis, if at hand); a GraphError if it has errors."""
        analysis = analysis or Analysis(doc)
        problems = errors(analysis.diagnostics)
        if problems:
            raise GraphError(problems)
        inputs = [(n.id, tuple(analysis.nodes[n.id].params.shape), analysis.nodes[n.id].params.dtype)
                  for n in doc.nodes if n.type == "input"]
        outputs = [tuple(analysis.nodes[n.id].inputs["in"]) for n in doc.nodes if n.type == "output"]
        return cls(inputs, outputs)

    def sample_shape(self, task: str) -> tuple[int, ...]:
        """The per-sample shape of the data input (the non-timestep one for diffusion)."""
        floats = [shape for _, shape, dtype in self.inputs if dtype == "float32" and shape != ()]
        return floats[0] if floats else self.inputs[0][1]


def check_task(doc: GraphDoc, task: str, dataset: Dataset | None = None) -> GraphIO:
    """Does the graph fit the task (and the dataset)? A ``GraphError`` says what does not."""
    if task == "gan":
        return check_gan(doc, dataset)
    io_ = GraphIO.of(doc)
    name = f"graph {doc.name!r}"
    if len(io_.outputs) != 1:
        raise GraphError(f"{name}: training needs exactly one output, it has {len(io_.outputs)}")
    out = io_.outputs[0]
    if task == "diffusion":
        position = diffusion.timestep_position(doc)
        x_name, x_shape, x_dtype = io_.inputs[1 - position]
        t_name, _, t_dtype = io_.inputs[position]
        if t_dtype != "int64":
            raise GraphError(f"{name}: the timestep input {t_name!r} must have dtype int64")
        if x_dtype != "float32" or out != x_shape:
            raise GraphError(f"{name}: diffusion predicts the noise, so the output shape {list(out)} must equal "
                             f"the input {x_name!r} shape {list(x_shape)}")
    else:
        if len(io_.inputs) != 1:
            raise GraphError(f"{name}: task {task!r} needs one input, the graph has {len(io_.inputs)} "
                             f"(use --task diffusion for a graph with a timestep input)")
        x_name, x_shape, x_dtype = io_.inputs[0]
        if x_dtype != "float32":
            raise GraphError(f"{name}: input {x_name!r} has dtype {x_dtype}; task {task!r} feeds it float data")
        if task == "classify" and len(out) != 1:
            raise GraphError(f"{name}: classification needs an output of shape [classes], got {list(out)} "
                             f"(add a flatten and a linear block)")
        if task == "reconstruct" and out != x_shape:
            raise GraphError(f"{name}: reconstruction needs the output shape {list(out)} to equal "
                             f"the input shape {list(x_shape)}")
    if dataset is not None:
        if task == "classify":
            if dataset.y is None:
                raise GraphError(f"dataset {dataset.name!r} has no labels, which classification needs "
                                 f"(an .npz with y, or a folder with one sub-folder per class)")
            if dataset.num_classes > out[0]:
                raise GraphError(f"dataset {dataset.name!r} has {dataset.num_classes} classes but the graph's "
                                 f"output has {out[0]} (set out_features of the last linear block to "
                                 f"{dataset.num_classes})")
        if task == "diffusion" and dataset.kind == "images" and (dataset.x.min() < 0 or dataset.x.max() > 1):
            raise GraphError(f"dataset {dataset.name!r}: diffusion expects values in [0, 1], found "
                             f"[{dataset.x.min():.3g}, {dataset.x.max():.3g}]")
    return io_


# ----------------------------------------------------------------------------- GAN documents
def gan_part(doc: GraphDoc, name: str) -> GraphDoc:
    """The subgraph ``name`` of a GAN document as a graph of its own (with the subgraphs it uses)."""
    if name not in doc.subgraphs:
        missing = [part for part in GAN_PARTS if part not in doc.subgraphs]
        raise GraphError(f"graph {doc.name!r}: a GAN needs two subgraphs, 'generator' (z -> image) and "
                         f"'discriminator' (image -> logit); it has no {' and no '.join(map(repr, missing))} "
                         f"(group the nodes of each into a subgraph of that name)")
    return standalone(doc, name)


def check_gan(doc: GraphDoc, dataset: Dataset | None = None) -> GraphIO:
    """A GAN document: a generator taking one float vector z and making samples (its first output),
    a discriminator taking those samples to one logit, and data of the samples' shape. Returns the
    discriminator's input and the generator's outputs: ``sample_shape`` is the samples' shape."""
    generator, discriminator = (gan_part(doc, name) for name in GAN_PARTS)
    g_io, d_io = GraphIO.of(generator), GraphIO.of(discriminator)
    if len(g_io.inputs) != 1 or g_io.inputs[0][2] != "float32" or len(g_io.inputs[0][1]) != 1:
        raise GraphError(f"graph {doc.name!r}: the generator must take one float32 input z of shape [Z], it takes "
                         f"{[(n, list(s), d) for n, s, d in g_io.inputs]}")
    if not g_io.outputs:
        raise GraphError(f"graph {doc.name!r}: the generator has no output node")
    made = g_io.outputs[0]
    image_node = next(n.id for n in generator.nodes if n.type == "output")
    if len(d_io.inputs) != 1:
        raise GraphError(f"graph {doc.name!r}: the discriminator must have one input (the image), it has "
                         f"{len(d_io.inputs)}")
    d_name, d_shape, _ = d_io.inputs[0]
    if d_shape != made:
        raise GraphError(f"graph {doc.name!r}: the discriminator's input {d_name!r} takes {list(d_shape)}, but the "
                         f"generator's output {image_node!r} makes {list(made)}: give {d_name!r} the shape "
                         f"{list(made)}")
    if len(d_io.outputs) != 1 or d_io.outputs[0] != (1,):
        raise GraphError(f"graph {doc.name!r}: the discriminator must have one output of shape [1] (a logit), "
                         f"it has {[list(o) for o in d_io.outputs]}")
    if dataset is not None:
        if tuple(dataset.x.shape[1:]) != made:
            raise GraphError(f"dataset {dataset.name!r} has samples of shape {list(dataset.x.shape[1:])}, but the "
                             f"generator's output {image_node!r} makes {list(made)}")
        if dataset.kind == "images" and (dataset.x.min() < 0 or dataset.x.max() > 1):
            raise GraphError(f"dataset {dataset.name!r}: a GAN expects image values in [0, 1], found "
                             f"[{dataset.x.min():.3g}, {dataset.x.max():.3g}]")
    return GraphIO([(d_name, made, "float32")], g_io.outputs)  # the data a GAN reads: the discriminator's input


def guess_task(doc: GraphDoc, analysis: Analysis | None = None) -> Task:
    """The task a graph looks made for: a timestep input -> diffusion; output = input -> reconstruct.
    ``analysis``: the graph's analysis, where one is at hand (an editor's), not to analyse it again.
    A task that the graph's ``meta.train`` recommends comes first."""
    recommended = doc.meta.get("train", {}).get("task") if isinstance(doc.meta.get("train"), dict) else None
    if recommended in TASKS:
        return recommended
    if all(part in doc.subgraphs for part in GAN_PARTS):
        return "gan"
    io_ = GraphIO.of(doc, analysis)
    if len(io_.inputs) == 2 and any(shape == () for _, shape, _ in io_.inputs):
        return "diffusion"
    if len(io_.inputs) == 1 and io_.outputs and io_.outputs[0] == io_.inputs[0][1]:
        return "reconstruct"
    return "classify"
