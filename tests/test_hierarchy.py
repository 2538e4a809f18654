"""An imported model keeps its module hierarchy: a ResNet-18 written here in the torchvision style,
exported by either of torch's exporters, opens as stem -> layer1..layer4 -> head, each stage
opens to its two blocks, blocks with the same inside share one subgraph type, and it computes
what the torch module does. Every node gets a place from a layered layout."""

from __future__ import annotations

import pytest
import torch
from nicegui.elements.upload_files import SmallFileUpload
from nicegui.testing import User
from onnx import TensorProto, helper
from resnet_style import BasicBlock, randomised_norms
from test_app_user import editor_of, open_editor
from torch import nn

import graphcore as gc
from graphcore.cli.main import main
from graphcore.interchange.hierarchy import group_by_scope, layered_layout, onnx_scopes

STAGES = ("layer1", "layer2", "layer3", "layer4")
EXPORTERS = ("torchscript", pytest.param("dynamo", marks=pytest.mark.slow))


class ResNet18(nn.Module):
    def __init__(self, width: int = 8, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = width
        for i, name in enumerate(STAGES):
            out = width * 2**i
            setattr(self, name, nn.Sequential(BasicBlock(channels, out, 1 if i == 0 else 2), BasicBlock(out, out)))
            channels = out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    net = randomised_norms(ResNet18(), affine=True)  # trained-looking norms
    return net.eval()


def export(net: nn.Module, path, exporter: str):
    x = torch.randn(2, 3, 64, 64)
    if exporter == "dynamo":
        torch.onnx.export(net, (x,), str(path), dynamo=True, external_data=False, input_names=["x"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    else:
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return path


@pytest.fixture(scope="module", params=EXPORTERS)
def exported(request, resnet, tmp_path_factory):
    return export(resnet, tmp_path_factory.mktemp(request.param) / "resnet18.onnx", request.param)


def assert_computes_like(doc, state, net):
    model = gc.compile(doc).eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=1e-5, atol=1e-5)


def inside(doc, node_id, level=None):
    """The subgraph that node ``node_id`` of ``level`` (default: the top) uses."""
    return doc.subgraphs[(level or doc).node(node_id).type.removeprefix("subgraph:")]


def test_a_resnet_opens_as_stem_stages_and_head_with_blocks_inside(exported, resnet):
    doc, state = gc.from_onnx(exported)
    assert gc.validate(doc) == []

    top = [(n.id, n.type) for n in doc.nodes if n.type not in ("input", "output")]
    assert top[:3] == [("conv1", "conv2d"), ("relu", "relu"), ("maxpool", "maxpool2d")]  # the stem (norm folded)
    assert [nid for nid, _ in top[3:7]] == list(STAGES)
    assert all(t.startswith("subgraph:") for _, t in top[3:7])
    assert top[-1] == ("fc", "linear")
    for stage in STAGES:
        blocks = [n for n in inside(doc, stage).nodes if n.type.startswith("subgraph:")]
        assert [n.id for n in blocks] == [f"{stage}_0", f"{stage}_1"]
    layer1, layer2 = inside(doc, "layer1"), inside(doc, "layer2")
    assert layer1.node("layer1_0").type == layer1.node("layer1_1").type  # two blocks alike: one type, used twice
    block = inside(doc, "layer1_0", layer1)
    assert [n.id for n in block.nodes] == ["x", "conv1", "relu", "conv2", "add", "relu_1", "y"]  # relu called twice
    assert "downsample_0" in [n.id for n in inside(doc, "layer2_0", layer2).nodes]
    assert "layer2.layer2_0.downsample_0.weight" in state
    assert_computes_like(doc, state, resnet)


def test_flat_keeps_one_node_per_op(exported, resnet):
    doc, state = gc.from_onnx(exported, flat=True)
    assert doc.subgraphs == {}
    assert sum(n.type == "conv2d" for n in doc.nodes) == 1 + 4 * 4 + 3  # stem, two convs per block, 3 downsamples
    assert_computes_like(doc, state, resnet)
    assert set(doc.ui["positions"]) == {n.id for n in doc.nodes}


def edges_run_along_the_layers(doc, axis: int) -> bool:
    places = doc.ui["positions"]
    return all(places[e.src][axis] < places[e.dst][axis] for e in doc.edges)


@pytest.mark.parametrize("flat", [False, True])
def test_every_node_has_a_place_and_every_edge_runs_left_to_right(exported, flat):
    doc, _ = gc.from_onnx(exported, flat=flat)
    for graph in [doc, *doc.subgraphs.values()]:
        assert set(graph.ui["positions"]) == {n.id for n in graph.nodes}
        assert edges_run_along_the_layers(graph, axis=0)
        places = {tuple(p) for p in graph.ui["positions"].values()}
        assert len(places) == len(graph.nodes)  # no two nodes on one spot


def test_top_to_bottom_layout_runs_down(exported):
    doc = layered_layout(gc.from_onnx(exported)[0], direction="TB")
    assert all(edges_run_along_the_layers(graph, axis=1) for graph in [doc, *doc.subgraphs.values()])
    with pytest.raises(ValueError, match="use one of LR, TB"):
        layered_layout(doc, direction="diagonal")


def test_the_command_line_imports_grouped_or_flat(exported, tmp_path, capsys):
    assert main(["import", str(exported), "--out", str(tmp_path / "g.json")]) == 0
    assert "subgraph types" in capsys.readouterr().out
    assert main(["import", str(exported), "--out", str(tmp_path / "flat.json"), "--flat"]) == 0
    assert "subgraph types" not in capsys.readouterr().out
    grouped, flat = gc.load(tmp_path / "g.json"), gc.load(tmp_path / "flat.json")
    assert len(grouped.nodes) < 15 < len(flat.nodes)


async def test_the_editor_opens_an_onnx_model_with_its_modules_as_subgraphs(user: User, exported):
    await open_editor(user)
    user.find("open").click()
    upload = next(iter(user.find("open-upload").elements))
    await upload.handle_uploads([SmallFileUpload("resnet18.onnx", "application/octet-stream", exported.read_bytes())])
    await user.should_see("Opened resnet18.onnx with its weights", retries=100)
    doc = editor_of(user).session.doc
    assert [n.id for n in doc.nodes if n.type.startswith("subgraph:")] == list(STAGES)
    places = doc.ui["positions"]
    assert places["conv1"][0] < places["layer1"][0] < places["layer4"][0] < places["fc"][0]
    await user.should_see("Problems (0)")


# ---------------------------------------------------------------------- scopes and grouping, by hand
def test_scopes_come_from_torchscript_names_and_dynamo_metadata():
    named = helper.make_node("Relu", ["x"], ["a"], name="/layer2/layer2.0/downsample/downsample.0/Relu")
    tagged = helper.make_node("Relu", ["a"], ["b"], name="node_relu")
    helper.set_metadata_props(tagged, {"pkg.torch.onnx.name_scopes": "['', 'layer1', 'layer1.0', 'relu_3']"})
    root = helper.make_node("Relu", ["b"], ["c"], name="/Relu")
    garbled = helper.make_node("Relu", ["c"], ["y"], name="node_garbled")
    helper.set_metadata_props(garbled, {"pkg.torch.onnx.name_scopes": "['', 'a', __import__('os')]"})
    value = helper.make_tensor_value_info
    graph = helper.make_graph([named, tagged, root, garbled], "g", [value("x", TensorProto.FLOAT, ["N", 4])],
                              [value("y", TensorProto.FLOAT, ["N", 4])])
    assert onnx_scopes(helper.make_model(graph)) == {
        named.name: ("layer2", "layer2.0", "layer2.0.downsample", "layer2.0.downsample.0"),
        "node_relu": ("layer1", "layer1.0")}


def chain(*types: str) -> gc.GraphDoc:
    """x -> one node per type -> y, ids n0, n1, ..."""
    ids = ["x", *(f"n{i}" for i in range(len(types))), "y"]
    nodes = [gc.Node(id="x", type="input", params={"shape": [4]}),
             *(gc.Node(id=nid, type=t, params={"out_features": 4} if t == "linear" else {})
               for nid, t in zip(ids[1:-1], types, strict=True)),
             gc.Node(id="y", type="output")]
    return gc.GraphDoc(nodes=nodes, edges=[gc.Edge(src=a, dst=b) for a, b in zip(ids, ids[1:])])


FULL_PATHS = {"n0": ("blocks", "blocks.0", "blocks.0.fc"), "n1": ("blocks", "blocks.0"),
              "n2": ("blocks", "blocks.1", "blocks.1.fc"), "n3": ("blocks", "blocks.1")}
NAMES_IN_PARENT = {"n0": ("blocks", "blocks.0", "fc"), "n1": ("blocks", "blocks.0"),
                   "n2": ("blocks", "blocks.1", "fc"), "n3": ("blocks", "blocks.1")}


@pytest.mark.parametrize("scopes", [FULL_PATHS, NAMES_IN_PARENT], ids=["full-paths", "names-in-parent"])
def test_repeated_modules_share_a_type_and_their_weights_move_with_them(scopes):
    doc = chain("linear", "relu", "linear", "relu")
    model = gc.compile(doc).init(seed=0)
    grouped, state = group_by_scope(doc, model.state_dict(), scopes)

    assert [(n.id, n.type) for n in grouped.nodes] == [("x", "input"), ("blocks", "subgraph:blocks"), ("y", "output")]
    inside = grouped.subgraphs["blocks"]
    assert [(n.id, n.type) for n in inside.nodes if n.type != "input" and n.type != "output"] == [
        ("blocks_0", "subgraph:blocks_0"), ("blocks_1", "subgraph:blocks_0")]
    assert [n.id for n in grouped.subgraphs["blocks_0"].nodes] == ["x", "fc", "relu", "y"]
    assert sorted(state) == ["blocks.blocks_0.fc.bias", "blocks.blocks_0.fc.weight",
                             "blocks.blocks_1.fc.bias", "blocks.blocks_1.fc.weight"]
    again = gc.compile(grouped).eval()
    again.load_state_dict(state, strict=True)
    x = torch.randn(2, 4)
    torch.testing.assert_close(again(x), model.eval()(x))


def test_a_module_that_a_path_outside_it_connects_stays_flat():
    """n0 and n2 are one module, but n0 -> n1 -> n2 runs through n1 outside it: as one node it
    would be both before and after n1."""
    doc = chain("relu", "sigmoid", "tanh")
    grouped, _ = group_by_scope(doc, {}, {"n0": ("m", "m.a"), "n2": ("m", "m.b")})
    assert grouped.subgraphs == {}
    assert [n.id for n in grouped.nodes] == ["x", "m_a", "n1", "m_b", "y"]
    assert gc.validate(grouped) == []


def test_module_names_that_are_not_python_names_become_safe_ids():
    doc = chain("relu", "sigmoid", "tanh")
    scopes = {"n0": ("self", "self.for"), "n1": ("self", "self.0"), "n2": ("__class__",)}
    grouped, _ = group_by_scope(doc, {}, scopes)
    assert gc.validate(grouped) == []
    assert [n.id for n in grouped.nodes] == ["x", "self_1", "class_", "y"]
    assert [n.id for n in grouped.subgraphs["self"].nodes] == ["x", "for_", "self_0", "y"]
    x = torch.randn(2, 4)
    torch.testing.assert_close(gc.compile(grouped)(x), torch.tanh(torch.sigmoid(torch.relu(x))))
