"""Classifiers written in torchvision's style (tests/onnx_zoo.py), exported by both of torch's ONNX
exporters, import and compute what onnxruntime computes from the file (within 1e-4·max(1, |y|max)),
grouped into subgraphs by the model's own modules.

The exports the importer still refuses are listed in ``REFUSED``: why (for the reader), and what
the refusal must name (for the test), so each is a clear message naming the blocking ONNX node,
and one that starts to import fails the test until it is taken off the list.
"""

from __future__ import annotations

import pytest
from onnx_zoo import EXPORTERS, ZOO, build, compare, example, export

from graphcore.core.names import identifier

REFUSED = {  # (model, exporter): (why, what the refusal names)
    ("convnext", "dynamo"): ("torch.export writes the permute after the global average pool as as_strided: a "
                             "Gather from the flattened batch at indices computed from Range(0, N)",
                             "(Range) counts along the batch size"),
    ("swin", "legacy"): ("its shift mask is built by in-place writes (ScatterND), which has no fold rule, and the "
                         "windows' attention adds a constant relative position bias to q·kᵀ, which no pattern rule "
                         "reads as an attention block", "ScatterND"),
    ("swin", "dynamo"): ("the windows' attention multiplies computed tensors (q @ kᵀ) outside any attention block, "
                         "and its slices index through as_strided-style Range arithmetic on the batch",
                         "(Range) counts along the batch size"),
}
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
    if (name, exporter) in REFUSED:
        assert outcome.refused.startswith("error:") and REFUSED[name, exporter][1] in outcome.refused, outcome.refused
        return
    assert not outcome.refused, outcome.refused
    assert outcome.matches, f"output differs by {outcome.diff:.3g} (tolerance {outcome.tolerance:.3g})"
    modules = {identifier(child, "m") for child, _ in build(name).named_children()}
    grouped = {n.id for n in doc.nodes if n.type.startswith("subgraph:")}
    # each a module of the model, or one inside it (stage2_0: a stage whose ops the grouping split)
    assert grouped and all(any(g == m or g.startswith(f"{m}_") for m in modules) for g in grouped), \
        f"top-level subgraphs {sorted(grouped)}, the model's modules {sorted(modules)}"
