"""Which weights an exported model carries: fresh ones, a weights file, a run's checkpoint, or imported ones.

    model = load_weights(doc, "runs/lenet")          # the run's best.pt
    weights = read_weights("runs/lenet", "last")     # the state and a line saying where it came from
    weights.description                              # 'run runs/lenet last.pt (epoch 7)'
    model = weights.model(doc)

A weights file is a bare state_dict or a NetCanvas run checkpoint (``best.pt`` / ``last.pt``: a dict
with ``"model"`` and, for a diffusion or GAN run, ``"ema"``; a GAN run's also ``"discriminator"``,
the weights of its subgraph of that name, which ``part`` picks). Of a checkpoint, the ``"ema"`` weights are
used where there are some (the averaged weights, which sampling and ``load_run`` use too), else
``"model"``; the exported Python's ``build_model`` makes the same choice. Files are read with
``weights_only=True``, so loading never runs code a file holds. Run checkpoints are read here
directly rather than through the runtime, which interchange does not depend on.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from graphcore.core.compiler import GraphModel, compile
from graphcore.core.diagnostics import GraphError, one_line
from graphcore.core.document import GraphDoc

CHECKPOINTS = ("best", "last")
FRESH_SEED = 0
State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Weights:
    """Weights for a graph's model (``state`` None: a fresh initialisation, seeded) and one line saying
    where they come from, for the user to see. ``origin`` is what errors name: the file, or the import."""

    state: State | None
    description: str
    origin: str = ""

    def model(self, doc: GraphDoc) -> GraphModel:
        """``doc`` compiled with these weights; weights that do not fit it are one line naming ``origin``."""
        model = compile(doc)
        if self.state is None:
            return model.init(seed=FRESH_SEED)
        model._load_checked(self.state, self.origin)  # the check GraphModel.init and load_run use
        return model


FRESH = Weights(None, f"fresh random weights (seed {FRESH_SEED})")


def imported(state: Mapping[str, torch.Tensor], name: str) -> Weights:
    """Weights that came with an imported model (say, the initialisers of ``name``, an .onnx file)."""
    return Weights(dict(state), f"imported weights from {name}", name)


def read_weights(source: str | os.PathLike | None, checkpoint: str = "best", part: str | None = None) -> Weights:
    """The weights ``source`` names: None for fresh ones, a .pt file (a state_dict or a run checkpoint),
    or a run folder, whose ``checkpoint`` ("best" or "last") is read; ``part``: the subgraph being
    exported, whose own weights a checkpoint may hold under its name. A problem is one line naming the file."""
    if source is None:
        return FRESH
    path = Path(source)
    run = path.is_dir()
    file = _checkpoint_file(path, checkpoint) if run else path
    state, details = _read_file(file, part)
    label = f"run {path} {file.name}" if run else str(file) if details else f"weights from {file}"
    return Weights(state, f"{label} ({', '.join(details)})" if details else label, str(file))


def load_weights(doc: GraphDoc, source: str | os.PathLike | None = None, checkpoint: str = "best") -> GraphModel:
    """``doc`` compiled with the weights ``source`` names (see ``read_weights``)."""
    return read_weights(source, checkpoint).model(doc)


def _checkpoint_file(run_dir: Path, checkpoint: str) -> Path:
    if checkpoint not in CHECKPOINTS:
        raise GraphError(f"{run_dir}: the checkpoint must be 'best' or 'last', got {checkpoint!r}")
    file = run_dir / f"{checkpoint}.pt"
    if not file.is_file():
        raise GraphError(f"{run_dir}: no {file.name} (not a run folder, or none of its epochs has ended yet)")
    return file


def _read_file(path: Path, part: str | None = None) -> tuple[State, list[str]]:
    """The state_dict in the file ``path`` (of a checkpoint: its ``part``'s, where it holds one) and,
    for a run checkpoint, what it says of itself."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a pickle of Python objects, or no pickle at all
        raise GraphError(f"{path}: cannot load weights: not a file of plain tensors "
                         "(a state_dict or a NetCanvas checkpoint)") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise GraphError(one_line(f"{path}: cannot load weights: {getattr(exc, 'strerror', None) or exc}")) from None
    state, details = content, []
    if isinstance(content, dict) and isinstance(content.get("model"), dict):  # a run checkpoint
        entry = part if part is not None and isinstance(content.get(part), dict) else \
            "ema" if isinstance(content.get("ema"), dict) else "model"
        state, details = content[entry], _checkpoint_details(content, entry)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise GraphError(f"{path}: cannot load weights: it holds a {type(state).__name__}, not a state_dict "
                         "(names to tensors) or a NetCanvas checkpoint")
    return state, details


def _checkpoint_details(checkpoint: dict, entry: str) -> list[str]:
    """What a run checkpoint says of itself: its epoch, its validation loss, EMA weights."""
    details = []
    epoch, val = checkpoint.get("epoch"), checkpoint.get("val")
    if isinstance(epoch, int):
        details.append(f"epoch {epoch}")
    if isinstance(val, dict) and isinstance(val.get("loss"), float):
        details.append(f"val loss {val['loss']:.4g}")
    if entry == "ema":
        details.append("EMA weights")
    return details
