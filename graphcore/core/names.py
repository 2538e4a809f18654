"""The one place where user text becomes a Python identifier.

Every name that generated code uses comes through ``Namespace.name`` (or ``class_name``):
the result is always a legal, non-keyword, non-dunder identifier, unique in its namespace,
whatever the user typed.
"""

from __future__ import annotations

import builtins
import keyword
import re

_INVALID = re.compile(r"[^0-9A-Za-z_]+")


def identifier(text: str, fallback: str = "x") -> str:
    """A legal identifier that resembles ``text`` (ASCII letters, digits and _)."""
    name = _INVALID.sub("_", text).strip("_") or fallback
    if name[0].isdigit():
        name = f"_{name}"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        name += "_"
    return name


def class_name(text: str, fallback: str = "Net") -> str:
    """A CamelCase class name from free text: 'my resnet-18' -> 'MyResnet18'."""
    words = [w for w in _INVALID.split(text) if w]
    return identifier("".join(w[:1].upper() + w[1:] for w in words), fallback)


class Namespace:
    """Hands out unique identifiers; names already taken get the first free numeric suffix."""

    def __init__(self, reserved: set[str] | frozenset[str] = frozenset(), avoid_builtins: bool = True):
        self._taken = set(reserved) | (set(dir(builtins)) if avoid_builtins else set())
        # Names are never given back, so every suffix below a base's counter is taken: the search
        # resumes there, and 10,000 requests for one name cost 10,000 steps, not 50 million.
        self._next_suffix: dict[str, int] = {}

    def name(self, text: str, fallback: str = "x") -> str:
        """A unique identifier that resembles ``text``; it is taken from then on."""
        base = identifier(text, fallback)
        candidate, i = base, self._next_suffix.get(base, 1)
        if candidate in self._taken:
            while (candidate := f"{base}_{i}") in self._taken:
                i += 1
            self._next_suffix[base] = i + 1
        self._taken.add(candidate)
        return candidate
