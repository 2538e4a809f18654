"""Write the classic CNN templates to graphcore/templates/*.json.

    .venv/bin/python tools/make_cnn_templates.py

Each family is one small function that lays out the architecture as a chain of nodes, built
from NetCanvas's composite blocks where they fit (``residual_basic`` for ResNet-18/34 stages,
``vgg_block`` for VGG stages, ``inception`` for GoogLeNet, …). The layer choices follow the
torchvision models (and, for MobileNet v1, Howard et al. 2017), so parameter counts agree with
them exactly; tests/test_templates_cnn.py checks that, and that this script reproduces the
committed files byte for byte. A template with a torchvision twin declares in its meta how the
twin's state_dict keys become its own (graphcore/core/keymap.py), so that ``init`` reads
torchvision's weights files; tests/test_torchvision_keys.py checks each map.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "graphcore" / "templates"
IMAGE = [3, 224, 224]
CLASSES = 1000


class Chain:
    """A graph under construction where each new node takes the previous node's output."""

    def __init__(self, name: str, description: str, shape: list[int] = IMAGE):
        self.name = name
        self.meta: dict[str, Any] = {"description": description}
        self.nodes: list[dict[str, Any]] = []
        self.edges: list[dict[str, str]] = []
        self.add("image", "input", shape=shape)

    def add(self, node_id: str, type_id: str, **params: Any) -> Chain:
        node: dict[str, Any] = {"id": node_id, "type": type_id}
        if params:
            node["params"] = params
        if self.nodes:
            self.edges.append({"src": self.nodes[-1]["id"], "dst": node_id})
        self.nodes.append(node)
        return self

    def to_json(self) -> str:
        """The document as JSON text: one node and one edge per line, like the hand-written templates."""
        self.add("logits", "output")
        rows = lambda items: ",\n".join(f"    {json.dumps(item, ensure_ascii=False)}" for item in items)  # noqa: E731
        meta = json.dumps(self.meta, indent=2, ensure_ascii=False).replace("\n", "\n  ")  # nested in the document
        return (
            "{\n"
            '  "format": "netcanvas.graph",\n'
            '  "version": 1,\n'
            f'  "name": {json.dumps(self.name)},\n'
            f'  "nodes": [\n{rows(self.nodes)}\n  ],\n'
            f'  "edges": [\n{rows(self.edges)}\n  ],\n'
            f'  "meta": {meta}\n'
            "}\n"
        )


def torchvision_twin(g: Chain, model: str, keys: dict[str, str | None]) -> None:
    """Declare ``g``'s torchvision twin: how the keys of ``model``'s state_dict become ``g``'s (rules in
    order; see graphcore/core/keymap.py). Keys that no rule renames are the same in both."""
    g.meta["torchvision"] = {"model": model, "keys": keys}


def classifier_head(g: Chain) -> Chain:
    """Global average pool and the final linear layer (ResNet, GoogLeNet, MobileNet)."""
    return g.add("pool", "global_avgpool").add("fc", "linear", out_features=CLASSES)


# --------------------------------------------------------------------------- families
def alexnet() -> Chain:
    g = Chain("alexnet", "AlexNet (Krizhevsky et al. 2012) as in torchvision, with its 6x6 adaptive average pool; "
                         "3x224x224 input, 61,100,840 parameters.")
    features = [(64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False), (256, 3, 1, 1, False),
                (256, 3, 1, 1, True)]
    keys, index = {}, 0  # torchvision's features: conv, relu and maybe a pool per layer
    for i, (channels, kernel, stride, padding, pool) in enumerate(features, start=1):
        g.add(f"conv{i}", "conv2d", out_channels=channels, kernel_size=kernel, stride=stride, padding=padding)
        g.add(f"relu{i}", "relu")
        if pool:
            g.add(f"pool{i}", "maxpool2d", kernel_size=3, stride=2)
        keys[f"features.{index}."] = f"conv{i}."
        index += 3 if pool else 2
    g.add("avgpool", "adaptive_avgpool2d", output_size=6).add("flatten", "flatten")
    g.add("drop6", "dropout", p=0.5).add("fc6", "linear", out_features=4096).add("relu6", "relu")
    g.add("drop7", "dropout", p=0.5).add("fc7", "linear", out_features=4096).add("relu7", "relu")
    torchvision_twin(g, "alexnet", keys | {"classifier.1.": "fc6.", "classifier.4.": "fc7.", "classifier.6.": "fc8."})
    return g.add("fc8", "linear", out_features=CLASSES)


VGG_CONVS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
VGG_PARAMS = {"vgg11": "132,863,336", "vgg13": "133,047,848", "vgg16": "138,357,544", "vgg19": "143,667,240"}


def vgg(name: str) -> Chain:
    depth = name.removeprefix("vgg")
    g = Chain(name, f"VGG-{depth} (Simonyan & Zisserman 2014) as in torchvision, without batch norm; "
                    f"3x224x224 input, {VGG_PARAMS[name]} parameters.")
    keys, index = {}, 0  # torchvision's features: conv, relu per conv and a pool per stage
    for stage, (channels, convs) in enumerate(zip((64, 128, 256, 512, 512), VGG_CONVS[name]), start=1):
        g.add(f"block{stage}", "vgg_block", out_channels=channels, num_convs=convs)
        for conv in range(convs):
            keys[f"features.{index + 2 * conv}."] = f"block{stage}.convs.{2 * conv}."
        index += 2 * convs + 1
    g.add("avgpool", "adaptive_avgpool2d", output_size=7).add("flatten", "flatten")
    g.add("fc1", "linear", out_features=4096).add("relu1", "relu").add("drop1", "dropout", p=0.5)
    g.add("fc2", "linear", out_features=4096).add("relu2", "relu").add("drop2", "dropout", p=0.5)
    torchvision_twin(g, name, keys | {"classifier.0.": "fc1.", "classifier.3.": "fc2.", "classifier.6.": "fc3."})
    return g.add("fc3", "linear", out_features=CLASSES)


RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3),
                 "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}
RESNET_PARAMS = {"resnet18": "11,689,512", "resnet34": "21,797,672", "resnet50": "25,557,032",
                 "resnet101": "44,549,160", "resnet152": "60,192,808"}


def resnet(name: str) -> Chain:
    depth = int(name.removeprefix("resnet"))
    bottleneck = depth >= 50
    g = Chain(name, f"ResNet-{depth} (He et al. 2015), torchvision's v1.5 ({'bottleneck' if bottleneck else 'basic'} "
                    f"blocks, stride on the 3x3 conv); 3x224x224 input, {RESNET_PARAMS[name]} parameters.")
    g.add("stem_conv", "conv_bn_act", out_channels=64, kernel_size=7, stride=2)
    g.add("stem_pool", "maxpool2d", kernel_size=3, stride=2, padding=1)
    for stage, count in enumerate(RESNET_BLOCKS[name], start=1):
        width = 64 * 2 ** (stage - 1)
        for i in range(count):
            stride = 2 if stage > 1 and i == 0 else 1
            if bottleneck:
                g.add(f"layer{stage}_{i}", "residual_bottleneck", bottleneck_channels=width, out_channels=4 * width,
                      stride=stride)
            else:
                g.add(f"layer{stage}_{i}", "residual_basic", out_channels=width, stride=stride)
    torchvision_twin(g, name, {"conv1.": "stem_conv.conv.", "bn1.": "stem_conv.norm.",
                               "layer{i}.{j}.": "layer{i}_{j}."})
    return classifier_head(g)


# torchvision's GoogLeNet: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj) per Inception block.
INCEPTIONS = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}
INCEPTION_FIELDS = ("ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5", "pool_proj")


def googlenet() -> Chain:
    g = Chain("googlenet", "GoogLeNet / Inception v1 (Szegedy et al. 2014) as in torchvision, without the "
                           "auxiliary heads (its '5x5' branches use 3x3 kernels); 3x224x224 input, "
                           "6,624,904 parameters.")
    g.add("conv1", "conv_bn_act", out_channels=64, kernel_size=7, stride=2, eps=0.001)
    g.add("pool1", "maxpool2d", kernel_size=3, stride=2, ceil_mode=True)
    g.add("conv2", "conv_bn_act", out_channels=64, kernel_size=1, eps=0.001)
    g.add("conv3", "conv_bn_act", out_channels=192, kernel_size=3, eps=0.001)
    g.add("pool2", "maxpool2d", kernel_size=3, stride=2, ceil_mode=True)
    pools_after = {"3b": ("pool3", 3), "4e": ("pool4", 2)}
    for block, channels in INCEPTIONS.items():
        g.add(f"inception{block}", "inception", **dict(zip(INCEPTION_FIELDS, channels)))
        if block in pools_after:
            pool_id, kernel = pools_after[block]
            g.add(pool_id, "maxpool2d", kernel_size=kernel, stride=2, ceil_mode=True)
    g.add("pool", "global_avgpool").add("dropout", "dropout", p=0.2)
    # torchvision's BasicConv2d calls its norm "bn"; its weights file has the auxiliary heads too.
    torchvision_twin(g, "googlenet", {"conv{n}.bn.": "conv{n}.norm.",
                                      "inception{b}.branch1.bn.": "inception{b}.branch1.norm.",
                                      "inception{b}.branch{k}.{m}.bn.": "inception{b}.branch{k}.{m}.norm.",
                                      "aux{n}.": None})
    return g.add("fc", "linear", out_features=CLASSES)


# (out_channels, stride) of MobileNet v1's 13 depthwise separable blocks (width multiplier 1.0).
MOBILENET_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]


def mobilenet_v1() -> Chain:
    g = Chain("mobilenet_v1", "MobileNet v1 (Howard et al. 2017), width 1.0; 3x224x224 input, "
                              "4,231,976 parameters.")
    g.add("stem_conv", "conv_bn_act", out_channels=32, kernel_size=3, stride=2)
    for i, (channels, stride) in enumerate(MOBILENET_BLOCKS, start=1):
        g.add(f"dw{i}", "dw_separable_conv", out_channels=channels, stride=stride)
    return classifier_head(g)


TEMPLATES: dict[str, Callable[[], Chain]] = {
    "alexnet": alexnet,
    **{name: (lambda name=name: vgg(name)) for name in VGG_CONVS},
    **{name: (lambda name=name: resnet(name)) for name in RESNET_BLOCKS},
    "googlenet": googlenet,
    "mobilenet_v1": mobilenet_v1,
}


def render(name: str) -> str:
    """The JSON text of one template."""
    return TEMPLATES[name]().to_json()


def main(names: list[str]) -> None:
    for name in names or TEMPLATES:
        path = TEMPLATE_DIR / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
