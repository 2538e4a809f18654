"""BatchNorm folding for inference: same outputs in eval mode, no BatchNorm left."""

import pytest
import torch
from torch import nn

import graphcore as gc
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.synthetic import residual_tower


def trained_stats(model: nn.Module, shape: tuple) -> nn.Module:
    """A few train-mode passes so that the BN running statistics are not the defaults."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, *shape) * 3 + 1)
    return model.eval()


def batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_fusing_a_graph_of_primitives():
    model = trained_stats(gc.compile(residual_tower(3, size=12)), (3, 12, 12))
    fused = model.fuse()
    x = torch.randn(2, 3, 12, 12)
    assert batchnorms(model) == 7 and batchnorms(fused) == 0
    assert torch.allclose(fused(x), model(x), atol=1e-5)
    assert isinstance(fused, gc.GraphModel) and fused.doc == model.doc and not fused.training


@pytest.mark.slow  # resnet18 at 64x64: seconds of forward passes
def test_fusing_inside_composite_blocks():
    model = trained_stats(gc.compile(gc.template("resnet18")), (3, 64, 64))
    fused = model.fuse()
    x = torch.randn(2, 3, 64, 64)
    assert batchnorms(model) == 20 and batchnorms(fused) == 0
    assert torch.allclose(fused(x), model(x), atol=1e-5)


def test_linear_then_batchnorm1d_is_folded_and_the_original_is_untouched():
    doc = GraphDoc(name="mlp", nodes=[
        Node(id="x", type="input", params={"shape": [6]}), Node(id="fc", type="linear", params={"out_features": 5}),
        Node(id="bn", type="batchnorm1d"), Node(id="y", type="output")],
        edges=[Edge(src="x", dst="fc"), Edge(src="fc", dst="bn"), Edge(src="bn", dst="y")])
    model = trained_stats(gc.compile(doc), (6,))
    fused = gc.compile(doc, fuse=False).fuse()  # fresh BN stats: a plain fold must still agree
    assert batchnorms(fused) == 0 and batchnorms(model) == 1
    x = torch.randn(3, 6)
    assert torch.allclose(model.fuse()(x), model(x), atol=1e-5)
    assert batchnorms(gc.compile(doc, fuse=True)) == 0
