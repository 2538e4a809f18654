"""Read an ONNX file without holding its weights twice: the model's *skeleton*, and where each
large initializer's bytes lie in the file.

Parsing a whole model with protobuf keeps every weight in the parsed message, and shape
inference copies that message again, so a 500 MB model would cost gigabytes before a single
weight is converted. Instead the file is walked at the protobuf wire level (it is memory-mapped,
so only the bytes of the headers are read): every field is copied as it is, except the
``raw_data`` of initializers over ``STREAM_BYTES``, which is left out of the skeleton and marked as
external data of the model file itself. The importer then reads each such tensor straight from
the file into the array it keeps (``Streamed``), once.

Only ``ModelProto.graph`` (field 7), ``GraphProto.initializer`` (field 5) and
``TensorProto.raw_data`` (field 9) are looked into; everything else is copied byte for byte.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import NamedTuple

STREAM_BYTES = 1024  # smaller tensors (shapes, axes, scalars) stay in the skeleton for shape inference

_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_TENSOR_RAW_DATA, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 9, 13, 14
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_EXTERNAL = 1  # TensorProto.EXTERNAL


class Streamed(NamedTuple):
    """Where an initializer's bytes lie in the model file."""

    offset: int
    length: int


class MalformedModel(ValueError):
    """The file is not a well-formed protobuf message."""


def skeleton(path: Path) -> tuple[bytes, dict[str, Streamed]]:
    """The model in ``path`` without the bytes of its large initializers, and where those bytes are
    (by initializer name). Raises ``MalformedModel`` for bytes that are not a protobuf message."""
    with path.open("rb") as file:
        if path.stat().st_size == 0:
            return b"", {}
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            streamed: dict[str, Streamed] = {}
            out = bytearray()
            for number, kind, start, end, tag in _fields(data, 0, len(data)):
                if number == _MODEL_GRAPH and kind == _BYTES:
                    out += _bytes_field(number, _graph(data, start, end, path.name, streamed))
                else:
                    out += data[tag:end]
            return bytes(out), streamed


def _graph(data: mmap.mmap, start: int, end: int, location: str, streamed: dict[str, Streamed]) -> bytes:
    out = bytearray()
    for number, kind, field_start, field_end, tag in _fields(data, start, end):
        if number == _GRAPH_INITIALIZER and kind == _BYTES:
            out += _bytes_field(number, _tensor(data, field_start, field_end, location, streamed))
        else:
            out += data[tag:field_end]
    return bytes(out)


def _tensor(data: mmap.mmap, start: int, end: int, location: str, streamed: dict[str, Streamed]) -> bytes:
    """The tensor's bytes, with a large ``raw_data`` replaced by a reference into the model file."""
    fields = list(_fields(data, start, end))
    raw = [(s, e) for number, kind, s, e, _ in fields if number == _TENSOR_RAW_DATA and kind == _BYTES]
    external = any(number == _TENSOR_EXTERNAL_DATA for number, *_ in fields)
    name = _name(data, fields)
    if len(raw) != 1 or raw[0][1] - raw[0][0] <= STREAM_BYTES or external or name is None or name in streamed:
        return bytes(data[start:end])  # as it is: small, odd, or named twice (the checker will say so)
    out = bytearray()
    for number, _, _, field_end, tag in fields:
        if number not in (_TENSOR_RAW_DATA, _TENSOR_DATA_LOCATION):
            out += data[tag:field_end]
    offset, stop = raw[0]
    for key, text in (("location", location), ("offset", str(offset)), ("length", str(stop - offset))):
        entry = _bytes_field(1, key.encode()) + _bytes_field(2, text.encode())
        out += _bytes_field(_TENSOR_EXTERNAL_DATA, entry)
    out += _varint((_TENSOR_DATA_LOCATION << 3) | _VARINT) + _varint(_EXTERNAL)
    streamed[name] = Streamed(offset, stop - offset)
    return bytes(out)


def _name(data: mmap.mmap, fields: list) -> str | None:
    names = [bytes(data[s:e]) for number, kind, s, e, _ in fields if number == 8 and kind == _BYTES]
    try:
        return names[-1].decode() if names else None
    except UnicodeDecodeError:
        return None


def _fields(data: mmap.mmap, start: int, end: int):
    """(field number, wire type, value start, value end, tag start) of each field in ``data[start:end]``;
    for a length-delimited field the value is its payload."""
    position = start
    while position < end:
        tag_start = position
        key, position = _read_varint(data, position, end)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            _, value_end = _read_varint(data, position, end)
            value_start = position
        elif kind == _BYTES:
            length, value_start = _read_varint(data, position, end)
            value_end = value_start + length
        elif kind in (_FIXED64, _FIXED32):
            value_start, value_end = position, position + (8 if kind == _FIXED64 else 4)
        else:
            raise MalformedModel(f"wire type {kind} at byte {tag_start}")
        if number == 0 or value_end > end:
            raise MalformedModel(f"field at byte {tag_start} runs past its message")
        yield number, kind, value_start, value_end, tag_start
        position = value_end


def _read_varint(data: mmap.mmap, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= end or shift > 63:
            raise MalformedModel(f"bad varint at byte {position}")
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        shift += 7
        if byte < 0x80:
            return value, position


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | _BYTES) + _varint(len(payload)) + payload

