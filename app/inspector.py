"""The inspector: the selected block's id, type, params form, output shapes and problems."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import ui

from app import forms
from graphcore.core.subgraphs import PREFIX
from graphcore.editing.session import Delta, EditError, EditSession


class Inspector:
    """Shows one node; edits go through ``apply(delta)`` so the canvas and panels follow."""

    def __init__(self, session: EditSession, apply: Callable[[Delta], None], *,
                 on_open: Callable[[str], Any] | None = None, on_ungroup: Callable[[str], Any] | None = None) -> None:
        self.session = session
        self.apply = apply
        self.on_open = on_open
        self.on_ungroup = on_ungroup
        self.node_id: str | None = None
        self.inputs: dict[str, ui.element] = {}
        self.messages: dict[str, ui.label] = {}
        self.container = ui.column().classes("w-full gap-1")
        self.show(None)

    def show(self, node_id: str | None) -> None:
        """Rebuild the form for ``node_id`` (or the empty state)."""
        self.node_id = node_id if node_id in self.session.analysis.nodes else None
        self.container.clear()
        self.inputs.clear()
        self.messages.clear()
        with self.container:
            if self.node_id is None:
                ui.label("Select a block to edit it.").classes("text-grey-7 text-sm")
                return
            info = self.session.analysis.nodes[self.node_id]
            spec = info.spec  # a registered block, or a subgraph of this file
            ui.input("id", value=self.node_id).props("dense outlined").classes("w-full").mark("inspector-id") \
                .on("keydown.enter", lambda e: self._rename(e.sender.value)) \
                .on("blur", lambda e: self._rename(e.sender.value))
            ui.label(info.node.type).classes("text-subtitle2").mark("inspector-type")
            if spec is not None:
                ui.label(spec.doc).classes("text-caption text-grey-8")
            if info.node.type.startswith(PREFIX):
                node_id = self.node_id
                with ui.row().classes("gap-1"):
                    if self.on_open:
                        ui.button("Open", icon="login", on_click=lambda: self.on_open(node_id)) \
                            .props("dense outline no-caps").mark("inspector-open")
                    if self.on_ungroup:
                        ui.button("Ungroup", icon="call_split", on_click=lambda: self.on_ungroup(node_id)) \
                            .props("dense outline no-caps").mark("inspector-ungroup")
            if spec is not None:
                for field in forms.fields(spec):
                    self._field(field, info.node.params)
            self.results = ui.column().classes("w-full gap-0 mt-2")
        self.refresh_results()

    def refresh_results(self) -> None:
        """Output shapes, problems and inline messages of the shown node (after any edit)."""
        if self.node_id is None or self.node_id not in self.session.analysis.nodes:
            return
        view = self.session.node_view(self.node_id)
        spec = self.session.analysis.nodes[self.node_id].spec
        bad = forms.errors(spec, view["params"]) if spec else {}
        for name, label in self.messages.items():
            label.text = bad.get(name, "")
            label.set_visibility(name in bad)
        self.results.clear()
        with self.results:
            for port, shape in view["shapes"].items():
                ui.label(f"{port}: {shape}").classes("font-mono text-sm text-green-9").mark("inspector-shape")
            for problem in view["problems"]:
                if problem["message"].startswith("param "):
                    continue  # shown under its field
                colour = "text-red-8" if problem["severity"] == "error" else "text-orange-9"
                hint = f" ({problem['hint']})" if problem["hint"] else ""
                ui.label(f"{problem['message']}{hint}").classes(f"text-sm {colour}")

    # ----------------------------------------------------------------- fields
    def _field(self, field: forms.Field, params: dict) -> None:
        value = params.get(field.name, field.default)
        on_change = self._changer(field)
        if field.kind == "bool":
            element = ui.switch(field.label, value=bool(value), on_change=on_change)
            ui.label(field.hint).classes("text-caption text-grey-7 -mt-2")
        elif field.kind == "choice":
            element = ui.select(list(field.choices), label=field.label, value=value, on_change=on_change)
            element.props["hint"] = field.hint
        elif field.kind in ("int", "float") and isinstance(value, int | float | None):
            element = ui.number(field.label, value=value, on_change=on_change).without_auto_validation()
            element.props["hint"] = field.hint
        else:
            element = ui.input(field.label, value=forms.display(field, value)).without_auto_validation()
            element.on("keydown.enter", lambda e, f=field: self._set(f, e.sender.value))
            element.on("blur", lambda e, f=field: self._set(f, e.sender.value))
            element.props["hint"] = field.hint
        element.props("dense outlined").classes("w-full").mark(f"param-{field.name}")
        self.inputs[field.name] = element
        self.messages[field.name] = ui.label().classes("text-red-8 text-xs").mark(f"error-{field.name}")
        self.messages[field.name].set_visibility(False)

    def _changer(self, field: forms.Field) -> Callable[[Any], None]:
        return lambda e: self._set(field, e.value)

    def _set(self, field: forms.Field, raw: Any) -> None:
        if self.node_id is None:
            return
        node = self.session.doc.node(self.node_id)
        params = forms.updated(node.params, field, forms.parse(field, raw))
        self.apply(self.session.set_params(self.node_id, params, coalesce=True))

    def _rename(self, new_id: str) -> None:
        if self.node_id is None or new_id == self.node_id:
            return
        try:
            delta = self.session.rename(self.node_id, new_id.strip())
        except EditError as exc:
            ui.notify(str(exc), type="warning")
            return
        self.node_id = delta.ids.get(self.node_id, self.node_id)
        self.apply(delta)
