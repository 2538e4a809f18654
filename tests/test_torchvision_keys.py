"""torchvision's weights files load into the templates that have a torchvision twin (issue 12, item 8).

torchvision cannot be installed beside our torch, so each twin is written here in torchvision's
style, with its attribute names (conv1/bn1/layer1.0…, features/classifier, conv_proj/encoder…):
the state_dict it saves has the keys and shapes of torchvision's own. Every template's key map is
checked on the meta device against its full-size twin. The smallest template of each family
(ResNet-18, and ResNet-50 for the bottleneck blocks; VGG-11; AlexNet; GoogLeNet; ViT-Ti/16) loads
a random twin's weights through ``init(path)`` and computes what the twin computes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from train_graphs import one_thread  # noqa: F401

import graphcore as gc
from graphcore.core.keymap import fit_keys
from graphcore.runtime.config import TrainConfig
from graphcore.runtime.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = 2e-6


# --------------------------------------------------------------------------- torchvision-style twins
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: the stride on the 3x3
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        width = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != width:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, width, 1, stride, bias=False), nn.BatchNorm2d(width))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = width
        layers += [block(width, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


VGG_CFGS = {  # torchvision's configurations A, B, D and E
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg: list, hidden: int = 4096, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNet(nn.Module):
    def __init__(self, hidden: int = 4096, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(256 * 6 * 6, hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),  # 3x3, as torchvision's
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Only its weights matter here: torchvision's GoogLeNet file carries them, the template has no such head."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet with ``aux_logits=True`` (as its pretrained file) and ``transform_input=False``."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes)
        self.aux2 = InceptionAux(528, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):  # eval mode: the auxiliary heads are not run
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for block in (self.inception4a, self.inception4b, self.inception4c, self.inception4d, self.inception4e):
            x = block(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class EncoderBlock(nn.Module):
    def __init__(self, num_heads: int, hidden_dim: int, mlp_dim: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden_dim, mlp_dim), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(mlp_dim, hidden_dim), nn.Dropout(0.0))

    def forward(self, tokens):
        x = self.ln_1(tokens)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x) + tokens
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, seq_length: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(num_heads, hidden_dim, mlp_dim)) for i in range(num_layers)))
        self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)

    def forward(self, x):
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, num_layers: int, num_heads: int, hidden_dim: int,
                 mlp_dim: int, num_classes: int = 1000):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.conv_proj = nn.Conv2d(3, hidden_dim, patch_size, patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        seq_length = (image_size // patch_size) ** 2 + 1
        self.encoder = Encoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)  # (N, T, D)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)  # (N, 1 + T, D)
        return self.heads(self.encoder(x)[:, 0])


TWINS: dict[str, Callable[[], nn.Module]] = {
    "alexnet": AlexNet,
    **{name: partial(VGG, cfg) for name, cfg in VGG_CFGS.items()},
    "resnet18": partial(ResNet, BasicBlock, [2, 2, 2, 2]),
    "resnet34": partial(ResNet, BasicBlock, [3, 4, 6, 3]),
    "resnet50": partial(ResNet, Bottleneck, [3, 4, 6, 3]),
    "resnet101": partial(ResNet, Bottleneck, [3, 4, 23, 3]),
    "resnet152": partial(ResNet, Bottleneck, [3, 8, 36, 3]),
    "googlenet": GoogLeNet,
    "vit_tiny": partial(VisionTransformer, 224, 16, 12, 3, 192, 768),
    "vit_b16": partial(VisionTransformer, 224, 16, 12, 12, 768, 3072),
}


# --------------------------------------------------------------------------- helpers
def randomised(twin: nn.Module, seed: int = 0) -> nn.Module:
    """``twin`` in eval mode with every tensor random: biases, norms, BatchNorm statistics and the class
    token too (their defaults are 0 or 1, which would hide a tensor loaded into the wrong place)."""
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in twin.state_dict().items():
        if not tensor.is_floating_point():
            continue
        noise = torch.randn(tensor.shape, generator=generator)
        if name.endswith("running_var"):
            tensor.copy_(0.5 + noise.abs())
        elif name.endswith(("bias", "running_mean")) or "token" in name:
            tensor.copy_(0.1 * noise)
        elif tensor.dim() == 1:  # a norm's scale
            tensor.copy_(1 + 0.1 * noise)
        # the weights keep their default initialisation, random already
    return twin.eval()


def saved(state: dict[str, torch.Tensor], tmp_path, name: str = "twin.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def narrowed(doc: gc.GraphDoc, layers: tuple[str, ...], width: int) -> gc.GraphDoc:
    """``doc`` with these linear layers ``width`` wide: a VGG or AlexNet classifier small enough to test quickly."""
    for node_id in layers:
        doc.node(node_id).params["out_features"] = width
    return doc


def assert_same_outputs(model: gc.GraphModel, twin: nn.Module, shape: tuple[int, ...] = (3, 224, 224)) -> None:
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = twin(x), model.eval()(x)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= TOLERANCE


# --------------------------------------------------------------------------- every map, full size
def test_the_templates_with_a_torchvision_map_are_the_twins_here():
    declared = {name for name in gc.templates() if "torchvision" in gc.template(name).meta}
    assert declared == set(TWINS)


@pytest.mark.parametrize("name", TWINS)
def test_the_map_turns_the_twins_keys_into_the_templates_exactly(name):
    doc = gc.template(name)
    with torch.device("meta"):  # full size, no memory for the weights
        own = gc.compile(doc).state_dict()
        twin = TWINS[name]().state_dict()
    fitted = fit_keys(doc, twin, own)
    assert fitted.keymap is not None and fitted.keymap.model
    assert {k: tuple(v.shape) for k, v in fitted.state.items()} == {k: tuple(v.shape) for k, v in own.items()}


# --------------------------------------------------------------------------- weights and outputs
CASES: dict[str, Callable[[], tuple[gc.GraphDoc, nn.Module]]] = {
    "resnet18": lambda: (gc.template("resnet18"), TWINS["resnet18"]()),
    "resnet50": lambda: (gc.template("resnet50"), TWINS["resnet50"]()),
    "vgg11": lambda: (narrowed(gc.template("vgg11"), ("fc1", "fc2"), 64), VGG(VGG_CFGS["vgg11"], hidden=64)),
    "alexnet": lambda: (narrowed(gc.template("alexnet"), ("fc6", "fc7"), 64), AlexNet(hidden=64)),
    "googlenet": lambda: (gc.template("googlenet"), GoogLeNet()),
    "vit_tiny": lambda: (gc.template("vit_tiny"), TWINS["vit_tiny"]()),
}


@pytest.mark.parametrize("name", CASES)
def test_a_twins_weights_file_loads_and_gives_the_twins_outputs(name, tmp_path):
    torch.manual_seed(0)
    doc, twin = CASES[name]()
    twin = randomised(twin)
    model = gc.compile(doc).init(saved(twin.state_dict(), tmp_path))
    assert_same_outputs(model, twin)


def test_older_files_load_too(tmp_path):
    """Files saved before torchvision renamed ViT's MLP (``mlp.linear_1``) or before BatchNorm counted its
    steps (no ``num_batches_tracked``) load like new ones."""
    vit = randomised(TWINS["vit_tiny"]())
    legacy = {k.replace(".mlp.0.", ".mlp.linear_1.").replace(".mlp.3.", ".mlp.linear_2."): v
              for k, v in vit.state_dict().items()}
    assert sum(".mlp.linear_1." in k for k in legacy) == 24
    assert_same_outputs(gc.compile(gc.template("vit_tiny")).init(saved(legacy, tmp_path)), vit)

    resnet = randomised(TWINS["resnet18"]())
    uncounted = {k: v for k, v in resnet.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = gc.compile(gc.template("resnet18")).init(saved(uncounted, tmp_path, "old.pth"))
    assert_same_outputs(model, resnet)
    assert int(model.state_dict()["layer1_0.bn1.num_batches_tracked"]) == 0


def test_a_file_that_partly_fits_names_what_does_not_in_one_line(tmp_path):
    state = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10).state_dict()
    del state["layer4.1.conv2.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(gc.GraphError) as info:
        gc.compile(gc.template("resnet18")).init(saved(state, tmp_path, "partial.pth"))
    [problem] = info.value.diagnostics
    message = problem.message
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'partial.pth'}: the weights do not fit graph 'resnet18' "
                              "(read as torchvision resnet18 weights): ")
    assert "missing: layer4_1.conv2.weight;" in message
    assert "unexpected: layer5.0.conv1.weight;" in message
    assert "wrong shape: fc.weight (10, 512) vs (1000, 512), fc.bias (10,) vs (1000,)" in message


def test_a_fused_attention_of_the_wrong_width_is_named_as_the_file_names_it(tmp_path):
    state = TWINS["vit_tiny"]().state_dict()
    key = "encoder.layers.encoder_layer_3.self_attention.in_proj_weight"
    state[key] = torch.zeros(3 * 192 + 3, 192)  # split in three: 193 rows each
    with pytest.raises(gc.GraphError, match=rf"wrong shape: {key} \(193, 192\) vs \(192, 192\)"):
        gc.compile(gc.template("vit_tiny")).init(saved(state, tmp_path))


def test_netcanvas_files_and_foreign_ones_are_read_as_before(tmp_path):
    model = gc.compile(gc.template("resnet18")).init(seed=3)
    own = tmp_path / "own.pt"
    model.save(own)
    again = gc.compile(gc.template("resnet18")).init(own)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    lenet = tmp_path / "lenet.pt"
    gc.compile(gc.template("lenet5")).init(seed=0).save(lenet)
    with pytest.raises(gc.GraphError) as info:
        gc.compile(gc.template("resnet18")).init(lenet)
    assert "do not fit graph 'resnet18': missing: stem_conv.conv.weight" in str(info.value)
    assert "torchvision" not in str(info.value)  # nothing in it is torchvision's

    torchvision = saved(TWINS["resnet18"]().state_dict(), tmp_path)
    with pytest.raises(gc.GraphError, match="do not fit graph 'lenet5': missing: c1.weight"):
        gc.compile(gc.template("lenet5")).init(torchvision)  # a graph without a map reads keys as they are


def test_a_malformed_map_is_one_line_naming_the_entry(tmp_path):
    doc = gc.template("resnet18")
    doc.meta["torchvision"]["keys"]["layer{i}.{j}."] = "layer{k}_{j}."
    torchvision = saved(TWINS["resnet18"]().state_dict(), tmp_path)
    with pytest.raises(gc.GraphError) as info:
        gc.compile(doc).init(torchvision)
    [problem] = info.value.diagnostics
    assert problem.message == ("graph 'resnet18': meta.torchvision.keys: 'layer{i}.{j}.': "
                               "target 'layer{k}_{j}.' uses {k}, which the source does not have")


@pytest.mark.slow
def test_training_starts_from_a_torchvision_file(tmp_path):
    """The Train panel's "start from" and ``netcanvas train --init`` give TrainConfig.init: the same loader."""
    doc = gc.template("resnet18")
    doc.nodes[0].params["shape"] = [3, 32, 32]
    doc.node("fc").params["out_features"] = 10
    weights = saved(randomised(ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10)).state_dict(), tmp_path)
    runs = iter(range(10))

    def first_loss(graph, **config) -> float:  # the loss of step 0, before any update
        events: list[dict] = []
        stop = threading.Event()
        Trainer(graph, TrainConfig(epochs=1, batch_size=16, log_every=1, **config), out=tmp_path / f"run{next(runs)}",
                events=events.append, stop_event=stop, on_step=lambda trainer: stop.set()).fit()
        return next(e["loss"] for e in events if e["type"] == "step")

    expected = first_loss(gc.compile(doc).init(weights))
    assert first_loss(doc, init=str(weights)) == pytest.approx(expected, abs=1e-6)
    assert first_loss(doc) != pytest.approx(expected, abs=1e-3)  # fresh weights start elsewhere
