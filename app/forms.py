"""Inspector form fields, generated from a block's param schema (no UI code here).

Each param of a block spec becomes one ``Field``: an integer or a float (a number box; the
bounds go into the hint rather than clamping, so an out-of-range value is shown and
explained), a boolean (a toggle), a fixed set of choices (a select), or free text for
everything else (lists and unions such as ``kernel_size`` = ``3`` or ``3, 5``, or
``padding`` = ``same``), which ``parse`` turns back into JSON values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from blocks import BlockSpec

Kind = Literal["int", "float", "bool", "choice", "text"]


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    label: str
    hint: str
    default: Any = None
    required: bool = False
    nullable: bool = False
    choices: tuple[Any, ...] = ()


def fields(spec: BlockSpec) -> list[Field]:
    """The form of a block type, in the order its params are declared."""
    schema = spec.params.model_json_schema()
    required = set(schema.get("required", ()))
    return [_field(name, prop, name in required) for name, prop in schema.get("properties", {}).items()]


def _field(name: str, prop: dict, required: bool) -> Field:
    options = prop.get("anyOf", [prop])
    nullable = any(o.get("type") == "null" for o in options)
    options = [o for o in options if o.get("type") != "null"]
    kind: Kind = "text"
    choices: tuple[Any, ...] = ()
    if len(options) == 1:
        only = options[0]
        if "enum" in only:
            kind, choices = "choice", tuple(only["enum"])
        else:
            kind = {"integer": "int", "number": "float", "boolean": "bool"}.get(only.get("type"), "text")
    hint = prop.get("description", "")
    bounds = _bounds(options[0]) if len(options) == 1 else ""
    if bounds:
        hint = f"{hint} ({bounds})" if hint else bounds
    if kind == "text":
        hint = f"{hint}; e.g. {example(prop)}" if example(prop) else hint
    return Field(name=name, kind=kind, label=prop.get("title", name), hint=hint, default=prop.get("default"),
                 required=required, nullable=nullable, choices=choices)


def _bounds(option: dict) -> str:
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


def example(prop: dict) -> str:
    """How to type a value of a text field: the forms its union allows."""
    forms = []
    for option in prop.get("anyOf", [prop]):
        if option.get("type") == "integer":
            forms.append("3")
        elif option.get("type") == "array":
            forms.append("3, 3")
        elif "enum" in option:
            forms.extend(repr(v) if not isinstance(v, str) else v for v in option["enum"])
        elif option.get("type") == "null":
            forms.append("empty for none")
    return " or ".join(forms)


def display(field: Field, value: Any) -> Any:
    """The value as the form shows it."""
    if field.kind != "text":
        return value
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def parse(field: Field, raw: Any) -> Any:
    """The JSON value of what was entered. Never raises: a bad value is kept, validation explains it."""
    if field.kind == "int":
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        return raw
    if field.kind != "text" or not isinstance(raw, str):
        return raw
    text = raw.strip()
    if text == "":
        return None if field.nullable else field.default
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
        found: dict[str, str] = {}
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "params"
            found.setdefault(name, err["msg"])
        return found
    return {}


def updated(params: dict, field: Field, value: Any) -> dict:
    """Params with one value changed; a value equal to the default is left out, as in files."""
    new = dict(params)
    if value == field.default and not field.required:
        new.pop(field.name, None)
    else:
        new[field.name] = value
    return new
