"""Classifiers written in torchvision's style (tests/onnx_zoo.py), exported by both of torch's ONNX
exporters, all import and compute what onnxruntime computes from the file (within 1e-4·max(1, |y|max)),
grouped into subgraphs by the model's own modules.
"""

from __future__ import annotations

import pytest
from onnx_zoo import EXPORTERS, ZOO, build, compare, example, export

from graphcore.core.names import identifier

SLOW = pytest.mark.slow


def cases():
    for name in ZOO:
        for exporter in EXPORTERS:
            marks = [SLOW] if exporter == "dynamo" else []
            yield pytest.param(name, exporter, id=f"{name}-{exporter}", marks=marks)


@pytest.mark.filterwarnings("ignore")  # torch's exporters warn about things of their own
@pytest.mark.parametrize(("name", "exporter"), list(cases()))
def test_a_torchvision_style_classifier_imports_grouped_by_module_and_matches_onnxruntime(tmp_path, name, exporter):
    path = export(name, exporter, tmp_path / f"{name}.onnx")
    outcome, doc = compare(path, example(name))
    assert not outcome.refused, outcome.refused
    assert outcome.matches, f"output differs by {outcome.diff:.3g} (tolerance {outcome.tolerance:.3g})"
    modules = {identifier(child, "m") for child, _ in build(name).named_children()}
    grouped = {n.id for n in doc.nodes if n.type.startswith("subgraph:")}
    # each a module of the model, or one inside it (stage2_0: a stage whose ops the grouping split)
    assert grouped and all(any(g == m or g.startswith(f"{m}_") for m in modules) for g in grouped), \
        f"top-level subgraphs {sorted(grouped)}, the model's modules {sorted(modules)}"
