"""How a tensor shape is printed, in one place: error messages, the canvas, summaries and
generated code all read ``(N, 6, 28, 28)`` the same way."""

from __future__ import annotations

from collections.abc import Iterable

BATCH = "N"
"""The batch dimension's letter, as PyTorch's docs write it."""


def shape_text(shape: Iterable[int | None] | None, *, batch: bool = False) -> str:
    """``(6, 28, 28)`` for a per-sample shape, ``(N, 6, 28, 28)`` with ``batch=True``.

    A ``None`` dim is the batch (as in ``gc.infer_shapes``); a ``None`` shape is unknown: ``?``.
    """
    if shape is None:
        return "?"
    dims = (None, *shape) if batch else tuple(shape)
    return "(" + ", ".join(BATCH if d is None else str(d) for d in dims) + ")"
