"""Fold BatchNorm into the conv or linear layer before it, for inference.

The model is traced with torch.fx through NetCanvas's own blocks, so a conv followed by a
BN inside a residual block is folded as well as one wired on the canvas. A block that fx
cannot trace stays as it is (unfused) rather than failing the whole model.
"""

from __future__ import annotations

import copy
from typing import cast

from torch import fx, nn
from torch.fx.experimental.optimization import fuse as fx_fuse

from blocks.base import Block


def _untraceable(model: nn.Module) -> set[str]:
    """Qualified names of blocks that torch.fx cannot trace (kept as leaves)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, Block):
            try:
                fx.symbolic_trace(module)
            except Exception:  # fx raises several types for data-dependent control flow
                names.add(name)
    return names


def fuse(model: nn.Module) -> fx.GraphModule:
    """An eval-mode copy of ``model`` with conv+BN and linear+BN folded; ``model`` is unchanged."""
    model = copy.deepcopy(model).eval()
    leaves = _untraceable(model)

    class Tracer(fx.Tracer):
        def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
            return qualified_name in leaves or super().is_leaf_module(module, qualified_name)

    traced = fx.GraphModule(model, Tracer().trace(model))
    # torch types fuse's result as a plain Module; given a GraphModule and no_trace, it returns one.
    return cast(fx.GraphModule, fx_fuse(traced, inplace=True, no_trace=True).eval())
