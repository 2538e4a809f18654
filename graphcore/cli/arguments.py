"""Argument types for the command line: a value out of range is refused by argparse itself, in
one line naming the argument, with exit status 2 (``argument --lr: must be a positive number, got '-1'``)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from graphcore.runtime.config import SEED_MAX


def positive_int(text: str) -> int:
    """A whole number of at least 1: epochs, batch size, processes, samples, steps, frames."""
    value = _parse(int, text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0: a learning rate, a time budget."""
    value = _parse(float, text)
    if value is None or not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def int_between(low: int, high: int, what: str = "a whole number") -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``, both included."""
    def parse(text: str) -> int:
        value = _parse(int, text)
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {what} from {low} to {high}, got {text!r}")
        return value
    return parse


def float_between(low: float, high: float) -> Callable[[str], float]:
    """A number from ``low`` to ``high``, both included: a probability, a truncation psi."""
    def parse(text: str) -> float:
        value = _parse(float, text)
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, got {text!r}")
        return value
    return parse


seed = int_between(0, SEED_MAX)


def nonempty_path(text: str) -> str:
    """A file or folder name: not empty (which would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a file or folder, got an empty string")
    return text


def usage_error(message: str) -> SystemExit:
    """For a check that needs more than one argument's text: print it as argparse would; raise the result."""
    print(f"netcanvas: error: {message}", file=sys.stderr)
    return SystemExit(2)


def _parse(kind: type, text: str) -> int | float | None:
    try:
        return kind(text)
    except ValueError:
        return None
