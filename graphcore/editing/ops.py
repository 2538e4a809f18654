"""The edit protocol: one typed message per ``op`` that the canvas sends as ``{"op": ..., ...}``.

``parse_edit(payload)`` turns a payload into its message, or raises ``EditError`` with a
one-line reason (an unknown op, a missing or mistyped field). A message is one of two kinds:

- a ``SessionEdit`` changes the document: ``edit.apply(session)`` calls the one
  ``EditSession`` method it stands for and returns the ``Delta`` to draw;
- a ``Request`` asks the editor for what needs the user first (a name for a group or a
  rename) or changes what is shown (open a subgraph); the editor answers it.

Each message class registers its op name with ``@edit_op``, and ``EditMessage``, the
discriminated union on ``op``, is made from that registry. The canvas names the ops in
static/src/editOps.js; tests/test_edits.py keeps that table equal to ``OPS``.
"""

from __future__ import annotations

import functools
import json
import operator
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from blocks import nearest
from graphcore.editing.session import Delta, EditError, EditSession

Point = tuple[float, float]


class EditOp(BaseModel):
    """A message from the canvas; ``op`` names its kind, and a field it does not declare is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OPS: dict[str, type[EditOp]] = {}
"""Every message class, by its op name."""
M = TypeVar("M", bound=type[EditOp])


def edit_op(cls: M) -> M:
    """Register a message class under the value of its ``op`` field; an op name is taken once only."""
    name = cls.model_fields["op"].default
    if name in OPS:
        raise ValueError(f"edit op {name!r} is already registered by {OPS[name].__name__}")
    OPS[name] = cls
    return cls


class SessionEdit(EditOp):
    """A message that edits the document through one ``EditSession`` method."""

    def apply(self, session: EditSession) -> Delta:
        """Make the edit; raises ``EditError`` (document unchanged) when it cannot be made."""
        raise NotImplementedError


class Request(EditOp):
    """A message the editor answers itself (a dialog, a change of view): no edit by itself."""


class ClipNode(BaseModel):
    """A node on the clipboard: what ``EditSession.copy`` gives and ``paste`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str | None = None
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None
    position: Point | None = None


class ClipEdge(BaseModel):
    """An edge between two clipboard nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    src: str
    src_port: str | None = None
    dst: str
    dst_port: str | None = None


# ------------------------------------------------------------------ edits
@edit_op
class AddNode(SessionEdit):
    """A block dropped from the palette at ``(x, y)``."""

    op: Literal["add"] = "add"
    type: str
    x: float
    y: float

    def apply(self, session: EditSession) -> Delta:
        return session.add_node(self.type, position=(self.x, self.y))


@edit_op
class Connect(SessionEdit):
    """A wire drawn from an output port to an input port (no port: ``out`` / ``in``)."""

    op: Literal["connect"] = "connect"
    src: str
    src_port: str | None = None
    dst: str
    dst_port: str | None = None

    def apply(self, session: EditSession) -> Delta:
        return session.connect(self.src, self.src_port, self.dst, self.dst_port)


@edit_op
class Remove(SessionEdit):
    """Nodes (with their edges) and edges deleted together."""

    op: Literal["remove"] = "remove"
    nodes: list[str] = Field(default_factory=list)
    edges: list[str] = Field(default_factory=list)

    def apply(self, session: EditSession) -> Delta:
        # The browser may repeat a deletion it has not yet seen applied: skip what is gone.
        return session.remove([n for n in self.nodes if n in session.analysis.nodes], self.edges)


@edit_op
class Move(SessionEdit):
    """Nodes dragged (or laid out) to new positions."""

    op: Literal["move"] = "move"
    positions: dict[str, Point]

    def apply(self, session: EditSession) -> Delta:
        return session.move_many(self.positions)


@edit_op
class Paste(SessionEdit):
    """The clipboard's nodes and the edges between them, pasted under fresh ids."""

    op: Literal["paste"] = "paste"
    nodes: list[ClipNode]
    edges: list[ClipEdge] = Field(default_factory=list)

    def apply(self, session: EditSession) -> Delta:
        return session.paste([n.model_dump() for n in self.nodes], [e.model_dump() for e in self.edges])


@edit_op
class Duplicate(SessionEdit):
    """Copies of some nodes beside them."""

    op: Literal["duplicate"] = "duplicate"
    ids: list[str]

    def apply(self, session: EditSession) -> Delta:
        return session.duplicate([n for n in self.ids if n in session.analysis.nodes])


@edit_op
class SetParams(SessionEdit):
    """A node's params replaced (invalid values are kept and reported, as in a loaded file)."""

    op: Literal["set_params"] = "set_params"
    id: str
    params: dict[str, Any]

    def apply(self, session: EditSession) -> Delta:
        return session.set_params(self.id, self.params)


@edit_op
class Rename(SessionEdit):
    """A node given a new id."""

    op: Literal["rename"] = "rename"
    id: str
    new_id: str

    def apply(self, session: EditSession) -> Delta:
        return session.rename(self.id, self.new_id)


@edit_op
class Ungroup(SessionEdit):
    """A subgraph node replaced by its nodes."""

    op: Literal["ungroup"] = "ungroup"
    id: str

    def apply(self, session: EditSession) -> Delta:
        return session.ungroup(self.id)


@edit_op
class Undo(SessionEdit):
    """The last step undone."""

    op: Literal["undo"] = "undo"

    def apply(self, session: EditSession) -> Delta:
        return session.undo()


@edit_op
class Redo(SessionEdit):
    """The last undone step made again."""

    op: Literal["redo"] = "redo"

    def apply(self, session: EditSession) -> Delta:
        return session.redo()


# ------------------------------------------------------------------ requests
@edit_op
class GroupRequest(Request):
    """Group these nodes (none: the selection) into a subgraph, once the user has named it."""

    op: Literal["group"] = "group"
    ids: list[str] = Field(default_factory=list)


@edit_op
class OpenSubgraph(Request):
    """Show the inside of a subgraph node."""

    op: Literal["open"] = "open"
    id: str


@edit_op
class Expand(Request):
    """Draw a subgraph node's inside in place, or a stack's blocks one by one (a view change only)."""

    op: Literal["expand"] = "expand"
    id: str


@edit_op
class Collapse(Request):
    """Draw an expanded subgraph node (its frame's id) as one block again, or stack a stack's blocks again."""

    op: Literal["collapse"] = "collapse"
    id: str


@edit_op
class RenameRequest(Request):
    """Rename a node, once the user has typed its new id."""

    op: Literal["rename_request"] = "rename_request"
    id: str


MAX_PARTS = 64
"""Parts a split message may have: 25 MB of JSON at the canvas's 400,000 characters a part."""


@edit_op
class Part(Request):
    """One part of a message too long to send at once (NiceGUI drops a websocket message over 1 MB,
    a paste of thousands of blocks is longer): the canvas splits the message's JSON text into parts
    sent in order, and ``Parts`` joins them into the message."""

    op: Literal["part"] = "part"
    index: int = Field(ge=0)
    count: int = Field(ge=2, le=MAX_PARTS)
    text: str


class Parts:
    """Joins the parts of one split message at a time, as they arrive in order."""

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._count = 0

    def add(self, part: Part) -> EditOp | None:
        """Take the next part; the whole message once its last part is in (else None). ``EditError``
        for a part out of order (the parts so far are dropped) or a whole that is not a message."""
        if part.index == 0:
            self._texts, self._count = [], part.count
        if part.index != len(self._texts) or part.count != self._count or part.index >= part.count:
            self._texts = []
            raise EditError(f"part {part.index + 1} of {part.count} of a long message came out of order; "
                            "it was dropped: do it again")
        self._texts.append(part.text)
        if len(self._texts) < self._count:
            return None
        text, self._texts = "".join(self._texts), []
        try:
            payload = json.loads(text)
        except ValueError:
            raise EditError(f"a long message's {self._count} parts are not JSON when joined") from None
        if isinstance(payload, dict) and payload.get("op") == Part.model_fields["op"].default:
            raise EditError("a long message's parts hold another split message")
        return parse_edit(payload)


# ------------------------------------------------------------------ parsing
EditMessage = Annotated[functools.reduce(operator.or_, OPS.values()), Field(discriminator="op")]
"""Any message from the canvas, told apart by its ``op``."""
_MESSAGE = TypeAdapter(EditMessage)


def parse_edit(payload: Any) -> EditOp:
    """The typed message of a payload from the canvas; ``EditError`` with a one-line reason if it is none."""
    op = payload.get("op") if isinstance(payload, dict) else None
    if not isinstance(op, str):
        raise EditError(f"an edit is an object with an 'op' field, got {_brief(payload)}")
    if op not in OPS:
        guess = nearest(op, OPS)
        raise EditError(f"unknown edit op {op!r}" + (f" (did you mean {guess!r}?)" if guess else "")
                        + f"; known: {', '.join(OPS)}")
    try:
        return _MESSAGE.validate_python(payload)
    except ValidationError as exc:
        raise EditError(f"edit {op!r}: {_reason(exc)}") from None


def _reason(exc: ValidationError, shown: int = 3) -> str:
    """The payload's problems, each with its field: ``x: Input should be a valid number; y: Field required``."""
    errors = exc.errors(include_url=False)
    # A location starts with the op (the union's tag); the rest is the field's path.
    parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'payload'}: {e['msg']}" for e in errors[:shown]]
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return "; ".join(parts) + more


def _brief(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
