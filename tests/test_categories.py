"""Block categories: one table (blocks/categories.py) that every spec's category comes from,
and that gives the palette its order and labels and the canvas its colours."""

from __future__ import annotations

import dataclasses

import pytest

import blocks
import graphcore as gc
from blocks import categories
from graphcore.core.document import Node
from graphcore.editing.session import EditSession


@pytest.mark.parametrize("spec", blocks.all_specs(), ids=lambda s: s.type)
def test_every_block_is_in_a_declared_category(spec):
    assert categories.get(spec.category) is not None


def test_a_subgraph_node_and_a_node_of_unknown_type_get_declared_categories():
    session = EditSession(gc.template("lenet5"))
    session.group(["c3", "a3"], "features")
    session.paste([{"id": "mystery", "type": "subgraph:missing"}])
    session.doc.nodes.append(Node(id="typo", type="conv2", params={}))
    session.analysis.rebuild()
    views = {nid: session.node_view(nid) for nid in session.analysis.nodes}
    assert views["features"]["category"] == "subgraph"
    assert views["typo"]["category"] == categories.UNKNOWN
    assert all(categories.get(v["category"]) is not None for v in views.values())


def test_register_refuses_an_undeclared_category():
    spec = dataclasses.replace(blocks.get("relu"), type="relu_again", category="activations")
    with pytest.raises(ValueError, match="block type 'relu_again': unknown category 'activations'"):
        blocks.register(spec)
    assert blocks.get("relu_again") is None


def test_every_category_has_its_own_colour_and_label():
    view = categories.view()
    assert list(view) == categories.names()
    assert len({c["colour"] for c in view.values()}) == len(view)
    assert len({c["label"] for c in view.values()}) == len(view)
