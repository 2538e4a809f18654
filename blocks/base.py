"""Base class of NetCanvas's own block modules."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn


class Block(nn.Module):
    """An ``nn.Module`` that remembers the arguments it was constructed with.

    ``init_kwargs`` holds them by name (only plain values: numbers, strings, bools, None,
    and tuples or lists of those), so that code generation can write the same constructor
    call back out. Subclasses write an ordinary ``__init__``; nothing else is needed.
    """

    init_kwargs: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = recording(cls.__init__)  # type: ignore[method-assign]  # wrapping each subclass's __init__ is the point


def recording(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` (an ``__init__``) made to keep its arguments by name in the instance's ``init_kwargs``."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def recording_init(self: nn.Module, *args: Any, **kw: Any) -> None:
        if "init_kwargs" not in self.__dict__:  # the outermost class records, not its bases
            bound = signature.bind(self, *args, **kw)
            bound.apply_defaults()
            self.__dict__["init_kwargs"] = {k: v for k, v in list(bound.arguments.items())[1:]}
        init(self, *args, **kw)

    return recording_init
