"""The inputs a graph takes, and random batches of them (for exports, checks and examples)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from blocks.io import InputParams
from graphcore.core.analysis import Analysis

DEFAULT_ID_RANGE = 10
"""Integer inputs (class ids, timesteps) are drawn from ``[0, DEFAULT_ID_RANGE)`` unless an
embedding downstream has fewer rows."""


@dataclass(frozen=True)
class InputSpec:
    """One argument of the model's ``forward``: per-sample shape, dtype and, for ids, their range."""

    node_id: str
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32" or "int64"
    high: int = DEFAULT_ID_RANGE

    def random(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random batch of this input: normal floats, or ids in ``[0, high)``."""
        size = (batch, *self.shape)
        if self.dtype == "int64":
            return torch.randint(0, self.high, size, generator=generator)
        return torch.randn(size, generator=generator)


def input_specs(analysis: Analysis, model: nn.Module | None = None) -> list[InputSpec]:
    """The inputs in ``forward`` order (document order). With ``model``, id ranges respect the
    smallest embedding that an integer input feeds directly."""
    specs = []
    for node in analysis.doc.nodes:
        if node.type != "input":
            continue
        params = analysis.nodes[node.id].params
        assert isinstance(params, InputParams), f"input {node.id!r} has invalid params: validate the graph first"
        high = DEFAULT_ID_RANGE
        if params.dtype == "int64" and model is not None:
            for dst, ins in analysis.in_edges.items():
                if any(src == node.id for src, _ in ins.values()) and hasattr(model, dst):
                    rows = [m.num_embeddings for m in getattr(model, dst).modules() if isinstance(m, nn.Embedding)]
                    high = min([high, *rows])
        specs.append(InputSpec(node.id, params.name or node.id, tuple(params.shape), params.dtype, high))
    return specs


def random_inputs(specs: list[InputSpec], batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """One random batch for each input, in order, reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(spec.random(batch, generator) for spec in specs)
