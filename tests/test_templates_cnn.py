"""The classic CNN templates: each validates, compiles, runs, infers the shapes its real modules
produce, and has exactly the parameter count of its reference implementation (torchvision's,
and Howard et al.'s for MobileNet v1)."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.fx.passes.shape_prop import ShapeProp

import graphcore as gc

ROOT = Path(__file__).resolve().parent.parent

REFERENCE_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "googlenet": 6_624_904,
    "mobilenet_v1": 4_231_976,
}
NAMES = list(REFERENCE_PARAMS)


def _generator():
    spec = importlib.util.spec_from_file_location("make_cnn_templates", ROOT / "tools" / "make_cnn_templates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _meta_model(doc: gc.GraphDoc) -> gc.GraphModel:
    with torch.device("meta"):  # real layers and shapes, no memory for the weights
        return gc.compile(doc)


def test_every_cnn_template_is_listed():
    assert set(NAMES) <= set(gc.templates())


def test_generator_reproduces_the_committed_files():
    generator = _generator()
    assert set(generator.TEMPLATES) == set(NAMES)
    for name in NAMES:
        committed = (ROOT / "graphcore" / "templates" / f"{name}.json").read_text(encoding="utf-8")
        assert generator.render(name) == committed, f"{name}.json differs: run tools/make_cnn_templates.py"


@pytest.mark.parametrize("name", NAMES)
def test_template_validates_and_has_the_reference_parameter_count(name):
    doc = gc.template(name)
    assert gc.validate(doc) == []
    assert gc.infer_shapes(doc)[(_last_layer(doc), "out")] == (None, 1000)
    assert gc.summary(doc).total_params == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_compiled_template_runs_with_the_inferred_shapes(name):
    doc = gc.template(name)
    model = _meta_model(doc)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[name]
    image = torch.empty(2, 3, 224, 224, device="meta")
    ShapeProp(model).propagate(image)  # runs every node and records the shape it really produced
    inferred = gc.infer_shapes(doc)
    modules = [n for n in model.graph.nodes if n.op == "call_module"]
    assert len(modules) == len(doc.nodes) - 2  # every node but the input and the output
    for node in modules:
        assert tuple(node.meta["tensor_meta"].shape) == (2, *inferred[(node.target, "out")][1:]), node.target
    assert model(image).shape == (2, 1000)


def test_resnet50_macs_match_the_published_figure():
    # Summary MACs: conv and linear multiply-accumulates (plus the global pool's 100k adds);
    # He et al. and torchvision give 4.09 G for ResNet-50 at 224x224.
    total = gc.summary(gc.template("resnet50")).total_macs
    assert total == pytest.approx(4.09e9, rel=0.02)


def test_resnet18_runs_for_real_on_a_small_image():
    doc = gc.template("resnet18")
    doc.nodes[0].params["shape"] = [3, 64, 64]
    assert gc.validate(doc) == []
    assert gc.infer_shapes(doc)[("layer4_1", "out")] == (None, 512, 2, 2)
    model = gc.compile(doc).init(seed=0).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1000)
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1])  # different images give different outputs


def test_resnet18_trains_a_step_for_real():
    doc = gc.template("resnet18")
    doc.nodes[0].params["shape"] = [3, 32, 32]
    model = gc.compile(doc).init(seed=0)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def _last_layer(doc: gc.GraphDoc) -> str:
    return next(e.src for e in doc.edges if e.dst == "logits")
