"""The inspector's form, generated from each block's param schema: what a field shows, what it
reads back, and what it says about a value it cannot read. Loops over the registry where it can."""

from __future__ import annotations

import pytest

import blocks
from app import forms


def field(type_id: str, name: str) -> forms.Field:
    spec = blocks.get(type_id)
    assert spec is not None
    return next(f for f in forms.fields(spec) if f.name == name)


INT_LISTS = [(spec.type, f.name) for spec in blocks.all_specs() for f in forms.fields(spec) if f.kind == "ints"]


def test_every_list_of_int_param_is_an_ints_field():
    assert ("input", "shape") in INT_LISTS
    assert ("reshape", "shape") in INT_LISTS
    assert ("permute", "dims") in INT_LISTS


def test_every_field_knows_its_default_even_from_a_default_factory():
    assert field("input", "shape").default == [1, 28, 28]
    assert field("reshape", "shape").default == [-1]
    for spec in blocks.all_specs():
        defaults = spec.params().model_dump()
        for f in forms.fields(spec):
            assert f.default == defaults[f.name], (spec.type, f.name)


@pytest.mark.parametrize("text", ["1x28x28", "1 x 28 x 28", "1×28×28", "1,28,28", "1, 28, 28", "1 28 28",
                                  "[1, 28, 28]", "(1, 28, 28)", " [1,28,28] "])
def test_a_shape_is_read_in_every_usual_form(text):
    assert forms.parse(field("input", "shape"), text) == [1, 28, 28]


def test_a_shape_shows_its_value_and_reads_back_the_same():
    shape = field("input", "shape")
    assert forms.display(shape, [1, 28, 28]) == "1, 28, 28"
    assert forms.parse(shape, forms.display(shape, [1, 28, 28])) == [1, 28, 28]
    assert forms.display(shape, []) == "[]"  # a timestep's shape is not an empty (default) field
    assert forms.parse(shape, "[]") == []
    assert forms.parse(shape, "784") == [784]  # one number is a one-dim shape
    assert forms.parse(shape, "") == [1, 28, 28]  # emptied: back to the default


def test_reshape_takes_minus_one_in_every_form():
    shape = field("reshape", "shape")
    assert forms.parse(shape, "-1x7x7") == [-1, 7, 7]
    assert forms.parse(shape, "16 -1") == [16, -1]
    assert forms.parse(shape, "[16,-1]") == [16, -1]


def test_a_union_with_a_list_takes_the_shape_forms_and_its_words():
    kernel = field("conv2d", "kernel_size")
    assert forms.parse(kernel, "3") == 3
    assert forms.parse(kernel, "3x5") == [3, 5]
    assert forms.parse(kernel, "3 5") == [3, 5]
    padding = field("conv2d", "padding")
    assert forms.parse(padding, "same") == "same"
    assert forms.parse(padding, "1x2") == [1, 2]


def test_a_name_is_never_split_into_a_list():
    name = field("input", "name")
    assert forms.parse(name, "1x28") == "1x28"
    assert forms.parse(name, "") is None


@pytest.mark.parametrize("text", ["1x28xa", "one", "1;28", "1x-"])
def test_an_unreadable_shape_is_explained_with_the_forms_it_takes(text):
    spec = blocks.get("input")
    value = forms.parse(field("input", "shape"), text)
    message = forms.errors(spec, {"shape": value})["shape"]
    assert text in message
    for form in ("1x28x28", "1,28,28", "1 28 28", "[1, 28, 28]"):
        assert form in message
    assert "valid list" not in message


def test_a_readable_but_refused_shape_keeps_the_schema_reason():
    spec = blocks.get("input")
    value = forms.parse(field("input", "shape"), "1x0x28")
    assert value == [1, 0, 28]
    assert "greater than or equal to 1" in forms.errors(spec, {"shape": value})["shape"]


def test_the_hint_of_a_shape_names_its_forms():
    hint = field("input", "shape").hint
    assert "per-sample shape" in hint and "1x28x28" in hint


def test_every_ints_field_reads_back_what_it_shows():
    for type_id, name in INT_LISTS:
        f = field(type_id, name)
        value = f.default
        assert forms.parse(f, forms.display(f, value)) == value, (type_id, name)


def test_the_palette_tooltip_tells_doc_ports_with_dtypes_and_params_with_defaults_and_bounds():
    text = forms.tooltip(blocks.get("conv2d"))
    lines = text.splitlines()
    assert lines[0] == blocks.get("conv2d").doc
    assert "in: float" in text and "out: float" in text
    assert "out_channels = 16 (≥ 1)" in text
    assert "kernel_size = 3" in text
    embedding = forms.tooltip(blocks.get("embedding"))
    assert "in: int" in embedding
    assert "shape = 1, 28, 28" in forms.tooltip(blocks.get("input"))


def test_every_block_has_a_tooltip_naming_each_param():
    for spec in blocks.all_specs():
        text = forms.tooltip(spec)
        assert text.startswith(spec.doc)
        for f in forms.fields(spec):
            assert f"{f.name} = " in text, (spec.type, f.name)
    assert "stride = none (≥ 1)" in forms.tooltip(blocks.get("maxpool2d"))


# ----------------------------------------------------------------- in the inspector (NiceGUI's user)
async def open_and_select(user, node_id: str) -> None:
    await user.open("/")
    await user.should_see(marker="canvas", retries=30)
    user.find("canvas").trigger("select", [node_id])
    await user.should_see(marker="inspector-type")


def shown(user, marker: str):
    return next(iter(user.find(marker).elements)).value


async def test_the_input_shape_shows_its_value_and_takes_1x28x28(user):
    from app.editor import EDITORS

    await open_and_select(user, "x")  # lenet5's input, shape [1, 28, 28]
    assert shown(user, "param-shape") == "1, 28, 28"
    user.find("param-shape").clear().type("1x32x32").trigger("keydown.enter")
    session = EDITORS[user.client.id].session
    assert session.doc.node("x").params["shape"] == [1, 32, 32]
    await user.should_see("out: (N, 1, 32, 32)")
    user.find("param-shape").clear().type("[1, 28, 28]").trigger("blur")
    assert session.doc.node("x").params.get("shape", [1, 28, 28]) == [1, 28, 28]
    await user.should_see("out: (N, 1, 28, 28)")


async def test_an_unreadable_shape_says_which_forms_are_read(user):
    await open_and_select(user, "x")
    user.find("param-shape").clear().type("1x28xa").trigger("keydown.enter")
    await user.should_see("cannot read '1x28xa': write 1x28x28, 1,28,28, 1 28 28 or [1, 28, 28]")
    await user.should_not_see("Input should be a valid list")
    user.find("param-shape").clear().type("1 28 28").trigger("keydown.enter")
    await user.should_not_see("cannot read")


async def test_a_new_input_block_shows_its_default_shape(user):
    from app.editor import EDITORS

    await open_and_select(user, "x")
    user.find("palette").trigger("add", "input")
    editor = EDITORS[user.client.id]
    assert editor.inspector.node_id == "input_1"
    assert shown(user, "param-shape") == "1, 28, 28"


async def test_each_palette_item_has_the_tooltip_of_its_block(user):
    from app import palette

    await user.open("/")
    await user.should_see(marker="canvas", retries=30)
    sections = next(iter(user.find("palette").elements)).props["sections"]
    tips = {block["type"]: block["tip"] for section in sections for block in section["blocks"]}
    assert tips == {spec.type: forms.tooltip(spec) for spec in blocks.all_specs()}
    assert palette.sections() is palette.sections()  # made once, not for each page
