"""Inspector form fields, generated from a block's param schema (no UI code here).

Each param of a block spec becomes one ``Field``: an integer or a float (a number box; the
bounds go into the hint rather than clamping, so an out-of-range value is shown and
explained), a boolean (a toggle), a fixed set of choices (a select), a list of whole numbers
(a shape such as ``1x28x28``), or free text for everything else (unions such as
``kernel_size`` = ``3`` or ``3x5``, or ``padding`` = ``same``), which ``parse`` turns back
into JSON values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from blocks import BlockSpec

Kind = Literal["int", "float", "bool", "choice", "ints", "text"]

INT_LIST = re.compile(r"[\[(]?\s*(?:-?\d+(?:\s*[x×,\s]\s*-?\d+)*)?\s*,?\s*[\])]?")
"""Whole numbers separated by ``x``, commas or spaces, in optional brackets: ``1x28x28``, ``[1, 28, 28]``."""
BARE_INT = re.compile(r"-?\d+")
LIST_FORMS: tuple[Callable[[list[str]], str], ...] = (
    "x".join, ",".join, " ".join, lambda items: f"[{', '.join(items)}]",
)
"""The ways a list of whole numbers may be typed (``parse`` reads each), as hints show them."""


@dataclass(frozen=True)
class Field:
    """One param of a block's form, as the inspector draws it and reads it back."""

    name: str
    kind: Kind
    label: str
    hint: str
    default: Any = None
    required: bool = False
    nullable: bool = False
    choices: tuple[Any, ...] = ()
    bounds: str = ""
    int_list: bool = False  # the schema takes a list of whole numbers (a shape, a kernel size)
    forms: str = ""  # every way of typing a value, for the message about an unreadable one


def fields(spec: BlockSpec) -> list[Field]:
    """The form of a block type, in the order its params are declared."""
    schema = spec.params.model_json_schema()
    required = set(schema.get("required", ()))
    # A default made by a factory (a list) is missing from the JSON schema: take it from the model.
    defaults = {name: info.get_default(call_default_factory=True)
                for name, info in spec.params.model_fields.items() if not info.is_required()}
    return [_field(name, prop, name in required, prop.get("default", defaults.get(name)))
            for name, prop in schema.get("properties", {}).items()]


def _field(name: str, prop: dict, required: bool, default: Any) -> Field:
    options = prop.get("anyOf", [prop])
    nullable = any(o.get("type") == "null" for o in options)
    options = [o for o in options if o.get("type") != "null"]
    int_list = any(_is_int_list(o) for o in options)
    kind: Kind = "text"
    choices: tuple[Any, ...] = ()
    if len(options) == 1:
        only = options[0]
        if "enum" in only:
            kind, choices = "choice", tuple(only["enum"])
        elif int_list:
            kind = "ints"
        else:
            kind = {"integer": "int", "number": "float", "boolean": "bool"}.get(only.get("type"), "text")
    bounds = next((b for b in map(_bounds, options) if b), "")
    hint = prop.get("description", "")
    if bounds:
        hint = f"{hint} ({bounds})" if hint else bounds
    sample = _sample(default)
    if kind in ("text", "ints"):
        shown = _join(_forms(prop, sample, every_list_form=kind == "ints"))
        hint = f"{hint}; e.g. {shown}" if shown else hint
    return Field(name=name, kind=kind, label=prop.get("title", name), hint=hint, default=default,
                 required=required, nullable=nullable, choices=choices, bounds=bounds, int_list=int_list,
                 forms=_join(_forms(prop, sample, every_list_form=True)))


def _is_int_list(option: dict) -> bool:
    return option.get("type") == "array" and option.get("items", {}).get("type") == "integer"


def _bounds(option: dict) -> str:
    if option.get("type") == "array":
        inner = _bounds(option.get("items", {}))
        return f"each {inner}" if inner else ""
    parts = []
    if "minimum" in option:
        parts.append(f"≥ {option['minimum']}")
    if "exclusiveMinimum" in option:
        parts.append(f"> {option['exclusiveMinimum']}")
    if "maximum" in option:
        parts.append(f"≤ {option['maximum']}")
    if "exclusiveMaximum" in option:
        parts.append(f"< {option['exclusiveMaximum']}")
    return ", ".join(parts)


def _sample(default: Any) -> list[int]:
    """A list to show the list forms with: the default when it is one, else ``3x3``."""
    if isinstance(default, list) and len(default) >= 2 and all(isinstance(v, int) for v in default):
        return default
    return [3, 3]


def _forms(prop: dict, sample: list[int], *, every_list_form: bool) -> list[str]:
    """How to type a value of a text field: the forms its union allows."""
    items = [str(v) for v in sample]
    forms: list[str] = []
    for option in prop.get("anyOf", [prop]):
        if option.get("type") == "integer":
            forms.append(items[0])
        elif _is_int_list(option):
            forms.extend(form(items) for form in (LIST_FORMS if every_list_form else LIST_FORMS[:1]))
        elif option.get("type") == "array":
            forms.append(", ".join(items))
        elif "enum" in option:
            forms.extend(repr(v) if not isinstance(v, str) else v for v in option["enum"])
        elif option.get("type") == "null":
            forms.append("empty for none")
    return forms


def _join(forms: list[str]) -> str:
    if len(forms) < 2:
        return "".join(forms)
    return f"{', '.join(forms[:-1])} or {forms[-1]}"


def display(field: Field, value: Any) -> Any:
    """The value as the form shows it."""
    if field.kind not in ("text", "ints"):
        return value
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        # An empty list is a value (a timestep's shape []), not an empty field (the default).
        return ", ".join(str(v) for v in value) if value else "[]"
    return str(value)


def parse(field: Field, raw: Any) -> Any:
    """The JSON value of what was entered. Never raises: a bad value is kept, validation explains it."""
    if field.kind == "int":
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        return raw
    if field.kind not in ("text", "ints") or not isinstance(raw, str):
        return raw
    text = raw.strip()
    if text == "":
        return None if field.nullable else field.default
    if field.int_list and INT_LIST.fullmatch(text):
        numbers = [int(t) for t in BARE_INT.findall(text)]
        # In a union, a bare number is the number itself (kernel_size 3); in a list field, one dim.
        if field.kind == "ints" or not BARE_INT.fullmatch(text):
            return numbers
    if field.kind == "ints":
        return text  # unreadable: kept as typed, and ``errors`` says which forms are read
    if "," in text or text.startswith("["):
        items = [t for t in re.split(r"[\s,\[\]()]+", text) if t]
        return [_scalar(t) for t in items]
    return _scalar(text)


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text.strip("'\"")


def errors(spec: BlockSpec, params: dict) -> dict[str, str]:
    """Param name -> why its value is refused (for inline messages)."""
    try:
        spec.params.model_validate(params)
    except ValidationError as exc:
        by_name = {f.name: f for f in fields(spec)}
        found: dict[str, str] = {}
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "params"
            found.setdefault(name, _reason(by_name.get(name), params.get(name), err["msg"]))
        return found
    return {}


def _reason(field: Field | None, value: Any, message: str) -> str:
    """The schema's message, or for text that ``parse`` could not read, the forms it reads."""
    if field is not None and field.int_list and isinstance(value, str):
        return f"cannot read {value!r}: write {field.forms}"
    return message


def updated(params: dict, field: Field, value: Any) -> dict:
    """Params with one value changed; a value equal to the default is left out, as in files."""
    new = dict(params)
    if value == field.default and not field.required:
        new.pop(field.name, None)
    else:
        new[field.name] = value
    return new


def tooltip(spec: BlockSpec) -> str:
    """What a block type is, in lines: its doc, its ports with their dtypes, and its params with
    their defaults and bounds (the palette shows it on hover)."""
    params = spec.params()
    ports = spec.input_ports(params)
    lines = [spec.doc]
    if ports:
        lines.append("inputs: " + ", ".join(
            f"{p.name}: {p.dtype}{' (optional)' if p.optional else ''}" for p in ports))
    outputs = spec.output_ports(params)
    if outputs:
        out = spec.output_dtype if isinstance(spec.output_dtype, str) else "follows its params and inputs"
        lines.append("outputs: " + ", ".join(f"{name}: {out}" for name in outputs))
    for f in fields(spec):
        shown = "none" if f.default is None else display(f, f.default)
        lines.append(f"{f.name} = {shown}{f' ({f.bounds})' if f.bounds else ''}")
    return "\n".join(lines)
