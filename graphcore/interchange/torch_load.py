"""Build the PyTorch module a target names: ``FILE.py:NAME`` or ``package.module:NAME``.

``NAME`` is called with no arguments and returns the module. Loading runs the user's code: that is
what the user asked for. A file that defines ``example_inputs()`` (as every file NetCanvas
exports does) gives the inputs to trace the module with.

A file NetCanvas exported carries the source of each block class it uses, with ``nn.Module`` for
the ``Block`` base, so its classes do not remember their constructor arguments as blocks do.
While the module is built, those copies record them too (``init_kwargs``), so that each imports
as its block with its exact params.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from blocks.base import recording
from graphcore.core.diagnostics import GraphError, one_line
from graphcore.interchange.module_blocks import block_class_of


@dataclass(frozen=True)
class Loaded:
    """A module built from a target, and the example inputs its file gives (None where it gives none)."""

    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...] | None


def load_module(target: str) -> Loaded:
    """Import the file or module of ``target`` and call its ``NAME``; problems are a ``GraphError``
    naming the target (the user's code may raise anything: it is reported in one line)."""
    source, colon, name = target.rpartition(":")
    if not colon or not source or not name.isidentifier():
        raise GraphError(f"{target}: expected FILE.py:NAME or package.module:NAME (NAME builds the module)")
    folder = Path(source).parent if source.endswith(".py") else None
    with _importable(folder):  # as `python FILE.py` would, the file imports modules beside it
        namespace = _imported(source, target)
        builder = getattr(namespace, name, None)
        if not callable(builder):
            raise GraphError(f"{target}: {source} has no function or class {name!r}")
        with _recording_copies(namespace), _reported(target, f"{name}()"):
            module = builder()
        if not isinstance(module, nn.Module):
            raise GraphError(f"{target}: {name}() returned a {type(module).__name__}, not a torch nn.Module")
        return Loaded(module, _example_inputs(namespace, target))


@contextlib.contextmanager
def _importable(folder: Path | None) -> Iterator[None]:
    """Modules in ``folder`` importable meanwhile (nothing changes for None)."""
    entry = str(folder.resolve()) if folder is not None else None
    if entry is not None:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry is not None:
            sys.path.remove(entry)


def _imported(source: str, target: str) -> ModuleType:
    path = Path(source)
    if source.endswith(".py"):
        if not path.is_file():
            raise GraphError(f"{target}: no file {source}")
        spec = importlib.util.spec_from_file_location(f"netcanvas_user.{path.stem}", path)
        assert spec is not None and spec.loader is not None, "a .py file has a source loader"
        namespace = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = namespace  # dataclasses and pickling look classes up there
        with _reported(target, f"running {path.name}"):
            spec.loader.exec_module(namespace)
        return namespace
    with _reported(target, f"importing {source}"):
        return importlib.import_module(source)


@contextlib.contextmanager
def _reported(target: str, doing: str) -> Iterator[None]:
    """Turn whatever the user's code raises into one line naming the target."""
    try:
        yield
    except GraphError:
        raise
    except BaseException as exc:  # noqa: BLE001  (the user's code: anything, even SystemExit)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise GraphError(f"{target}: {doing} failed: {type(exc).__name__}: {one_line(str(exc))[:300]}") from None


@contextlib.contextmanager
def _recording_copies(namespace: ModuleType) -> Iterator[None]:
    """Copies of block classes in ``namespace`` record their constructor arguments meanwhile."""
    copies = [cls for cls in vars(namespace).values()
              if isinstance(cls, type) and block_class_of(cls) is not None and "__init__" in vars(cls)]
    originals = {cls: vars(cls)["__init__"] for cls in copies}
    for cls, init in originals.items():
        cls.__init__ = recording(init)  # type: ignore[misc]  # put back below
    try:
        yield
    finally:
        for cls, init in originals.items():
            cls.__init__ = init  # type: ignore[misc]


def _example_inputs(namespace: ModuleType, target: str) -> tuple[torch.Tensor, ...] | None:
    make = getattr(namespace, "example_inputs", None)
    if not callable(make):
        return None
    with _reported(target, "example_inputs()"):
        made = make()
    inputs = (made,) if isinstance(made, torch.Tensor) else tuple(made) if isinstance(made, tuple | list) else None
    if inputs is None or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise GraphError(f"{target}: example_inputs() must return a tensor or a tuple of tensors")
    return inputs
