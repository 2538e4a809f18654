"""Weights saved by torchvision, read into a graph whose layers match them one for one.

A template with a torchvision twin says so in its ``meta``, with the rules that turn the twin's
state_dict keys into the graph's (tools/make_cnn_templates.py and make_attention_templates.py
write them):

    "torchvision": {"model": "resnet18",
                    "keys": {"conv1.": "stem_conv.conv.", "bn1.": "stem_conv.norm.", "layer{i}.{j}.": "layer{i}_{j}."}}

A source that ends in "." renames a module prefix, any other source a whole key; ``{name}`` stands
for one part of a dotted key and the target repeats it. The first rule that matches a key renames
it; a key that no rule matches keeps its name. A list of targets splits the tensor into equal parts
along dim 0 (ViT's fused ``in_proj_weight`` into q, k and v); a null target drops the key (the
auxiliary heads in torchvision's GoogLeNet file, which the template leaves out).

Every weights loader goes through ``fit_keys``: it applies a graph's map only where that makes more
of a file's keys fit the graph than they do as they are, so NetCanvas's own files load as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from graphcore.core.diagnostics import GraphError, one_line
from graphcore.core.document import GraphDoc

META_KEY = "torchvision"
PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
# BatchNorm's step counters. Files saved before PyTorch 0.4.1 (torchvision's first weights) have
# none; like PyTorch's own loader, the model keeps its count for them (used only with momentum=None).
BATCH_COUNTER = ".num_batches_tracked"
State = Mapping[str, torch.Tensor]
Target = str | list[str] | None


@dataclass(frozen=True)
class Rule:
    """One ``source: target`` entry of a key map, compiled."""

    pattern: re.Pattern[str]
    targets: tuple[str, ...]  # () drops the key; several split its tensor along dim 0
    prefix: bool  # the source is a module prefix (it ends in "."), else a whole key

    def rename(self, key: str) -> list[str] | None:
        """The keys ``key`` becomes ([] to drop it), or None where this rule does not match it."""
        found = self.pattern.match(key) if self.prefix else self.pattern.fullmatch(key)
        if found is None:
            return None
        parts, rest = found.groupdict(), key[found.end():]
        return [PLACEHOLDER.sub(lambda m: parts[m.group(1)], target) + rest for target in self.targets]


def compile_rule(source: str, target: Target) -> Rule:
    """The rule ``source: target``; a malformed one raises ``ValueError`` saying what is wrong."""
    targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
    problem = _rule_problem(source, targets, target is not None and not isinstance(target, str))
    if problem:
        raise ValueError(f"{source!r}: {problem}")
    pieces = PLACEHOLDER.split(source)  # literal, name, literal, name, …, literal
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^.]+)" for i, p in enumerate(pieces))
    return Rule(re.compile(regex), targets, source.endswith("."))


def _rule_problem(source: str, targets: tuple[str, ...], split: bool) -> str | None:
    names = PLACEHOLDER.findall(source)
    if not source or source.startswith("."):
        return "a source is a key, or a module prefix ending in '.'"
    if len(set(names)) < len(names):
        return "a placeholder appears twice"
    if split and len(targets) < 2:
        return "a list of targets splits a tensor, so it names at least two"
    for target in targets:
        unknown = sorted(set(PLACEHOLDER.findall(target)) - set(names))
        if unknown:
            return f"target {target!r} uses {{{unknown[0]}}}, which the source does not have"
        if target.endswith(".") != source.endswith("."):
            return f"target {target!r}: a module prefix maps to a module prefix (both end in '.'), a key to a key"
    return None


class KeyMap(BaseModel):
    """How the state_dict keys of a torchvision model become a graph's (a graph's ``meta["torchvision"]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="the torchvision model whose weights these are, e.g. 'resnet18'")
    keys: dict[str, Target] = Field(min_length=1, description="source key or module prefix -> target(s), in order")

    @field_validator("keys")
    @classmethod
    def _rules_compile(cls, keys: dict[str, Target]) -> dict[str, Target]:
        for source, target in keys.items():
            compile_rule(source, target)
        return keys

    @cached_property
    def rules(self) -> tuple[Rule, ...]:
        """The compiled rules, in the order they are tried."""
        return tuple(compile_rule(source, target) for source, target in self.keys.items())

    def rename(self, state: State) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """``state`` with its keys renamed, and for each new key the key it came from."""
        renamed: dict[str, torch.Tensor] = {}
        origin: dict[str, str] = {}
        for key, tensor in state.items():
            new = next((names for names in (rule.rename(key) for rule in self.rules) if names is not None), [key])
            for name, piece in zip(new, _split(tensor, len(new))):
                renamed[name] = piece
                if name != key:
                    origin[name] = key
        return renamed, origin


def _split(tensor: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
    """``parts`` equal slices of ``tensor`` along dim 0; none for a dropped key, the tensor itself for a renamed one.
    A value that cannot be split goes to every part whole, for the shape check to report."""
    if parts > 1 and isinstance(tensor, torch.Tensor) and tensor.dim():
        return tensor.tensor_split(parts)
    return (tensor,) * parts


def declared_keymap(doc: GraphDoc) -> KeyMap | None:
    """The torchvision key map ``doc``'s meta declares, or None; a malformed one is one line naming the entry."""
    raw = doc.meta.get(META_KEY)
    if raw is None:
        return None
    try:
        return KeyMap.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in ("meta", META_KEY, *err["loc"]))
        reason = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"].lower()
        raise GraphError(one_line(f"graph {doc.name!r}: {where}: {reason}")) from None


@dataclass(frozen=True)
class Fitted:
    """Weights keyed as a graph's model loads them; ``keymap`` is the map that renamed them, if one did."""

    state: State
    keymap: KeyMap | None = None
    origin: dict[str, str] = field(default_factory=dict)  # graph key -> the file's key, where renamed

    def name(self, key: str) -> str:
        """``key`` as the file calls it."""
        return self.origin.get(key, key)


def fit_keys(doc: GraphDoc, state: State, own: State) -> Fitted:
    """``state`` for ``doc``'s model (whose state_dict is ``own``): renamed by the doc's torchvision key map
    where that makes more of its keys fit, else as it is."""
    if not isinstance(state, Mapping) or state.keys() == own.keys():  # not a state_dict: the caller says so
        return Fitted(state)
    keymap = declared_keymap(doc)
    if keymap is None:
        return Fitted(state)
    renamed, origin = keymap.rename(state)
    if _fitting(renamed, own) <= _fitting(state, own):
        return Fitted(state)
    for key, counter in own.items():
        if key.endswith(BATCH_COUNTER):
            renamed.setdefault(key, counter)
    return Fitted(renamed, keymap, origin)


def _fitting(state: State, own: State) -> int:
    return sum(key in own for key in state)
