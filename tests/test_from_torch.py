"""PyTorch modules open as editable graphs: ``gc.from_torch`` and ``netcanvas import FILE.py:NAME``.

A user writes (or exports from NetCanvas) a torch module and opens it: the blocks, their params,
the wiring, the weights and the module hierarchy come with it, and the graph computes what the
module computes. What no block can do is listed all at once, each call with where it is made.
"""

from __future__ import annotations

import json
import re
import textwrap

import onnx_zoo
import pytest
import torch
import torch.nn.functional as F
from resnet_style import BasicBlock, randomised_norms
from test_cli_export import run
from test_cli_train import assert_usage_error
from torch import nn

import blocks
import graphcore as gc
from graphcore.core.analysis import Analysis
from graphcore.core.names import identifier
from graphcore.core.subgraphs import PREFIX, boundary
from graphcore.interchange.module_blocks import match_module
from graphcore.interchange.torch_load import load_module

QUICK_TEMPLATES = ("lenet5", "unet_ddpm_small", "video_unet_small")  # the rest take 10-60 s each here


def outputs_match(doc: gc.GraphDoc, weights: dict, module: nn.Module, *inputs: torch.Tensor) -> float:
    """The largest difference between the graph's outputs and the module's, both in eval mode."""
    model = gc.compile(doc)
    model.load_state_dict(weights, strict=True)
    with torch.no_grad():
        got, want = model.eval()(*inputs), module.eval()(*inputs)
    pairs = zip(got, want, strict=True) if isinstance(want, tuple) else [(got, want)]
    return max(float((g - w).abs().max()) for g, w in pairs)


def blocks_of(doc: gc.GraphDoc) -> dict[str, tuple[str, str]]:
    """Each block by id: its type and what its params build (two params that build the same module,
    a max pool's stride left out or equal to its kernel, are the same block)."""
    analysis = Analysis(doc)
    found = {}
    for node in doc.nodes:
        info = analysis.nodes[node.id]
        if node.type == "output" or info.spec is None or info.spec.build is None:
            found[node.id] = (node.type, repr(info.params))
            continue
        with torch.device("meta"):
            module = info.spec.build(info.params, info.inputs)
        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        found[node.id] = (node.type, f"{module!r} {vars(module).get('init_kwargs')} {shapes}")
    return {k: v for k, v in found.items() if v[0] != "output"}


def wiring_of(doc: gc.GraphDoc) -> tuple[list, list]:
    """The edges between blocks, and where each output comes from (output ids are not in the code)."""
    outputs = {n.id for n in doc.nodes if n.type == "output"}
    inner = sorted((e.src, e.src_port, e.dst, e.dst_port) for e in doc.edges if e.dst not in outputs)
    results = [(e.src, e.src_port) for n in doc.nodes if n.type == "output" for e in doc.edges if e.dst == n.id]
    return inner, results


def inlined(doc: gc.GraphDoc) -> gc.GraphDoc:
    """``doc`` with each subgraph node replaced by the subgraph's nodes, named ``NODE_INNER`` as a flat
    import of its exported Python names them (repeated until no subgraph node is left: nested ones too)."""
    doc = doc.model_copy(deep=True)
    while (node := next((n for n in doc.nodes if n.type.startswith(PREFIX)), None)) is not None:
        sub = doc.subgraphs[node.type.removeprefix(PREFIX)]
        port_in = {nid: port for port, nid in boundary(sub, "input")}
        port_out = {nid: port for port, nid in boundary(sub, "output")}
        feeding = {e.dst_port: (e.src, e.src_port) for e in doc.edges if e.dst == node.id}
        renamed = {n.id: f"{node.id}_{n.id}" for n in sub.nodes if n.type not in ("input", "output")}
        source = {(e.src, e.src_port): feeding[port_in[e.src]] if e.src in port_in else (renamed[e.src], e.src_port)
                  for e in sub.edges}  # each inner edge's source, outside
        produced = {port_out[e.dst]: source[e.src, e.src_port] for e in sub.edges if e.dst in port_out}
        at = doc.nodes.index(node)
        doc.nodes[at:at + 1] = [n.model_copy(update={"id": renamed[n.id]}) for n in sub.nodes if n.id in renamed]
        inner = [gc.Edge(src=source[e.src, e.src_port][0], src_port=source[e.src, e.src_port][1],
                         dst=renamed[e.dst], dst_port=e.dst_port) for e in sub.edges if e.dst not in port_out]
        outer = [e.model_copy(update=dict(zip(("src", "src_port"), produced[e.src_port]))) if e.src == node.id
                 else e for e in doc.edges if e.dst != node.id]
        doc.edges = outer + inner
    doc.subgraphs = {}
    return doc


# ----------------------------------------------------------------------------- the templates' Python
# Deeper twins of a template repeat its block types and layout many more times (resnet34/101/152 of
# resnet18 and resnet50, vgg13/16/19 of vgg11, vit_b16 of vit_tiny): each would add a minute of 224x224
# forward passes to the suite and nothing the smaller one does not check.
DEEPER_TWINS = {"resnet34", "resnet101", "resnet152", "vgg13", "vgg16", "vgg19", "vit_b16"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[] if name in QUICK_TEMPLATES else [pytest.mark.slow])
    for name in gc.templates() if name not in DEEPER_TWINS])
def test_a_templates_exported_python_imports_back_to_the_same_graph(name, tmp_path):
    doc = gc.template(name)
    path = tmp_path / f"{name}.py"
    path.write_bytes(gc.to_python(doc).encode("utf-8"))
    loaded = load_module(f"{path}:build_model")

    back, weights = gc.from_torch(loaded.module, loaded.example_inputs, flat=True)

    flat = inlined(doc)  # the subgraphs of the RL and GAN templates, as a flat import draws them
    assert blocks_of(back) == blocks_of(flat)
    assert wiring_of(back) == wiring_of(flat)
    assert outputs_match(back, weights, loaded.module, *loaded.example_inputs) < 1e-5


def test_a_flat_template_stays_flat_with_its_hierarchy_and_gets_positions(tmp_path):
    doc = gc.template("unet_ddpm_small")
    path = tmp_path / "unet.py"
    path.write_bytes(gc.to_python(doc).encode("utf-8"))
    loaded = load_module(f"{path}:build_model")

    back, _ = gc.from_torch(loaded.module, loaded.example_inputs)

    assert back.subgraphs == {} and blocks_of(back) == blocks_of(doc)
    assert set(back.ui["positions"]) == {n.id for n in back.nodes}


# ----------------------------------------------------------------------------- hand-written modules
class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TinyTransformer(nn.Module):
    """Tokens attend to themselves (a residual around nn.MultiheadAttention) and to a context."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.cross = nn.MultiheadAttention(16, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, tokens, context):
        x = self.embed(tokens)
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        c = self.embed(context)
        x = x + self.cross(x, c, c)[0]
        x = x + self.mlp(x)
        return F.softmax(self.head(x[:, 0]), dim=-1)


class TinyUNet(nn.Module):
    """One level of a U-Net: the encoder's features skip to the decoder through ``torch.cat``."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.SiLU())
        self.down = nn.MaxPool2d(2)
        self.mid = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU())
        self.dec = nn.Conv2d(16 + 8, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        skip = self.enc(x)
        h = self.mid(self.down(skip))
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        return self.out(F.relu(self.dec(torch.cat([h, skip], dim=1))))


def test_a_resnet_with_residuals_imports_with_its_stages_as_subgraphs():
    net = randomised_norms(SmallResNet())
    x = torch.randn(2, 3, 16, 16)

    doc, weights = gc.from_torch(net, x[:1])

    assert outputs_match(doc, weights, net, x) < 1e-5
    top = {n.id: n.type for n in doc.nodes}
    assert top["layer1"] == "subgraph:layer1" and top["layer2"] == "subgraph:layer2"
    stage = {n.id: n.type for n in doc.subgraphs["layer1"].nodes}
    assert stage["layer1_0"] == stage["layer1_1"]  # the two identical blocks share one type
    block = doc.subgraphs[stage["layer1_0"].removeprefix("subgraph:")]
    assert sorted(n.type for n in block.nodes if n.type not in ("input", "output")) == \
        ["add", "batchnorm2d", "batchnorm2d", "conv2d", "conv2d", "relu", "relu"]
    assert set(doc.ui["positions"]) == {n.id for n in doc.nodes}


def test_flat_keeps_every_block_at_the_top_named_after_its_module():
    net = randomised_norms(SmallResNet())

    doc, weights = gc.from_torch(net, torch.randn(1, 3, 16, 16), flat=True)

    types = {n.id: n.type for n in doc.nodes}
    assert not doc.subgraphs
    assert types["layer2_0_downsample_0"] == "conv2d" and types["layer1_1_add"] == "add"
    assert types["fc"] == "linear" and types["avgpool"] == "adaptive_avgpool2d"
    assert outputs_match(doc, weights, net, torch.randn(3, 3, 16, 16)) < 1e-5


def test_attention_modules_import_as_attention_blocks():
    net = TinyTransformer()
    tokens, context = torch.randn(2, 5, 6), torch.randn(2, 3, 6)

    doc, weights = gc.from_torch(net, (tokens, context), flat=True)

    attention = {n.id: n.params for n in doc.nodes if n.type == "multihead_attention"}
    assert attention == {"attn": {"num_heads": 4}, "cross": {"num_heads": 2, "separate_inputs": True}}
    assert outputs_match(doc, weights, net, tokens, context) < 1e-5


def test_a_unet_skip_through_cat_imports_as_a_concat():
    net = TinyUNet()
    x = torch.randn(2, 1, 8, 8)

    doc, weights = gc.from_torch(net, x)

    flat, _ = gc.from_torch(net, x, flat=True)
    concat = next(n for n in flat.nodes if n.type == "concat")
    assert concat.params == {}  # two inputs along dim 1: concat's defaults
    sources = {e.dst_port: flat.node(e.src) for e in flat.edges if e.dst == concat.id}
    assert sources["in0"].type == "upsample" and sources["in1"].id == "enc_1"  # the skip from the encoder's SiLU
    assert outputs_match(doc, weights, net, x) < 1e-5


class Functional(nn.Module):
    """Plain function calls on the module's own weights, and element-wise math with numbers."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 3, 3, 3) * 0.2)
        self.scale = nn.Parameter(torch.ones(6))

    def forward(self, x):
        h = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.weight, stride=1)  # (N, 6, H, W)
        h = F.max_pool2d(torch.exp(-h.clamp(-2.0, 2.0)), 2)  # (N, 6, H/2, W/2)
        h = (1 - h) * 0.5 + h / 4  # (N, 6, H/2, W/2)
        h = F.layer_norm(h.permute(0, 2, 3, 1), (6,), self.scale)  # (N, H/2, W/2, 6)
        return F.hardtanh(h.reshape(h.shape[0], -1, 6), 0.0, 6.0)  # (N, H/2 · W/2, 6)


def test_function_calls_and_math_with_numbers_import_as_blocks():
    net = Functional()
    x = torch.randn(2, 3, 8, 8)

    doc, weights = gc.from_torch(net, x, flat=True)

    assert [n.type for n in doc.nodes] == ["input", "pad", "conv2d", "clip", "math", "math", "maxpool2d", "sub",
                                            "mul", "div", "add", "permute", "layernorm", "reshape", "relu6", "output"]
    assert doc.node("rsub").params == {"constant": 1.0, "constant_first": True}
    assert doc.node("conv2d").params == {"out_channels": 6, "bias": False}
    assert outputs_match(doc, weights, net, x) < 1e-5


def test_the_module_keeps_its_training_mode():
    net = TinyUNet().train()
    gc.from_torch(net, torch.randn(1, 1, 8, 8))
    assert all(m.training for m in net.modules())


def inner_blocks(doc: gc.GraphDoc) -> list[tuple[str, dict]]:
    """Each block of a flat graph, in order, with its params: no inputs and outputs."""
    return [(n.type, n.params) for n in doc.nodes if n.type not in ("input", "output")]


class Pieces(nn.Module):
    """Channels cut by chunk, by split into pieces of one size and by split into given sizes."""

    def forward(self, x):  # (N, 6, 4)
        a, b = x.chunk(2, dim=1)  # (N, 3, 4) each
        c, d = x.split([1, 3], dim=-1)  # (N, 6, 1), (N, 6, 3)
        rest = x.split(4, dim=1)[1]  # (N, 2, 4): the second piece of 4 and 2
        return torch.cat([b, a, rest], 1), d * c


def test_chunk_and_split_import_as_split_blocks_with_one_port_per_piece():
    net = Pieces()
    x = torch.randn(2, 6, 4)

    doc, weights = gc.from_torch(net, x, flat=True)

    assert inner_blocks(doc) == [("split", {"sizes": [3, 3]}), ("split", {"sizes": [1, 3], "dim": -1}),
                                 ("split", {"sizes": [4, 2]}), ("concat", {"n": 3}), ("mul", {})]
    assert sorted((e.src_port, e.dst_port) for e in doc.edges if e.dst == "cat") == \
        [("out0", "in1"), ("out1", "in0"), ("out1", "in2")]
    assert outputs_match(doc, weights, net, x) < 1e-6


class Weighted(nn.Module):
    """Tensors times, plus, minus and over learned or constant tensors: an input's mean and spread,
    a per-channel layer scale, a bias along the last dim."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.randn(1, 4, 1, 1))
        self.register_buffer("std", torch.rand(1, 4, 1, 1) + 0.5)
        self.layer_scale = nn.Parameter(torch.rand(4, 1, 1) + 0.5)
        self.bias = nn.Parameter(torch.randn(5))

    def forward(self, x):  # (N, 4, 3, 5)
        x = (x - self.mean) / self.std
        return self.layer_scale * x + self.bias


def test_a_tensor_with_a_constant_tensor_imports_as_scale_or_shift_holding_it():
    net = Weighted()
    x = torch.randn(2, 4, 3, 5)

    doc, weights = gc.from_torch(net, x, flat=True)

    assert inner_blocks(doc) == [("shift", {"shape": [4, 1, 1]}), ("scale", {"shape": [4, 1, 1]}),
                                 ("scale", {"shape": [4, 1, 1]}), ("shift", {"shape": [5]})]
    assert torch.equal(weights["sub.weight"], -net.mean[0]) and torch.equal(weights["mul.weight"], net.layer_scale)
    assert outputs_match(doc, weights, net, x) < 1e-6


class FilledMask(nn.Module):
    """A constant built in ``forward`` by writing into slices of zeros (as Swin builds its shifted windows' mask)."""

    def forward(self, x):  # (N, 2, 4, 4)
        mask = torch.zeros(4, 4)
        mask[:2, 2:] = -100.0
        mask[2:, :2] = -100.0
        return x + mask


def test_a_constant_written_into_in_forward_imports_as_written():
    net = FilledMask()
    x = torch.randn(2, 2, 4, 4)

    doc, weights = gc.from_torch(net, x, flat=True)

    assert inner_blocks(doc) == [("shift", {"shape": [4, 4]})]
    assert torch.equal(weights["add.weight"], net(torch.zeros(1, 1, 4, 4))[0, 0])


class Rolled(nn.Module):
    def forward(self, x):  # (N, 6, 5)
        return torch.roll(x, shifts=(2, -1), dims=(1, 2)) + torch.roll(x, 6, 1)  # the second: a whole turn


def test_a_roll_imports_as_slices_and_a_concat_per_dim():
    net = Rolled()
    x = torch.randn(2, 6, 5)

    doc, weights = gc.from_torch(net, x, flat=True)

    assert inner_blocks(doc) == [("slice", {"start": 4}), ("slice", {"end": 4}), ("concat", {}),
                                 ("slice", {"dim": 2, "start": 1}), ("slice", {"dim": 2, "end": 1}),
                                 ("concat", {"dim": 2}), ("add", {})]
    assert sorted(e.src for e in doc.edges if e.dst == "add") == ["roll_5", "x"]  # a whole turn is x itself
    assert outputs_match(doc, weights, net, x) < 1e-6


class Sliced(nn.Module):
    def forward(self, x):  # (N, 8, 6)
        return x[:, 1:5, ::2], x[:, :][..., -2:]  # (N, 4, 3), (N, 8, 2)


def test_a_slice_imports_as_a_slice_block_and_a_whole_one_as_nothing():
    net = Sliced()
    x = torch.randn(2, 8, 6)

    doc, weights = gc.from_torch(net, x, flat=True)

    assert inner_blocks(doc) == [("slice", {"start": 1, "end": 5}), ("slice", {"dim": 2, "step": 2}),
                                 ("slice", {"dim": 2, "start": -2})]
    assert outputs_match(doc, weights, net, x) < 1e-6


class Reduced(nn.Module):
    def forward(self, x):  # (N, 3, 4, 5)
        per_row = x.sum((1, 3)) + x.amax(1).amin(-1) + x.max(3).values.mean(1) + x.prod(3).min(1).values  # (N, 4)
        return per_row, x.mean(1, keepdim=True)  # (N, 4), (N, 1, 4, 5)


def test_reductions_over_a_samples_dims_import_as_reduce_blocks():
    net = Reduced()
    x = torch.randn(2, 3, 4, 5)

    doc, weights = gc.from_torch(net, x, flat=True)

    assert [params for block, params in inner_blocks(doc) if block == "reduce"] == [
        {"op": "sum", "dims": [1, 3]}, {"op": "max", "dims": [1]}, {"op": "min"}, {"op": "max", "dims": [3]},
        {"dims": [1]}, {"op": "prod", "dims": [3]}, {"op": "min", "dims": [1]}, {"dims": [1], "keepdim": True}]
    assert outputs_match(doc, weights, net, x) < 1e-5


class BareAttention(nn.Module):
    """F.scaled_dot_product_attention on computed queries, keys and values: plain, causal, and with a
    constant boolean mask and a scale of its own."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.register_buffer("mask", (torch.rand(5, 5) > 0.5) | torch.eye(5, dtype=torch.bool))

    def forward(self, x):  # (N, 5, 8)
        q, k, v = (t.unflatten(-1, (2, 4)).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))  # (N, 2, 5, 4)
        plain = F.scaled_dot_product_attention(q, k, v)
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        masked = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, scale=0.3)
        return plain + causal + masked


def test_scaled_dot_product_attention_imports_as_the_blocks_that_compute_it():
    net = BareAttention()
    x = torch.randn(2, 5, 8)

    doc, weights = gc.from_torch(net, x, flat=True)

    attention = [n for n in inner_blocks(doc) if n[0] in ("permute", "matmul", "mul", "shift", "softmax")][3:]
    assert [block for block, _ in attention] == ["permute", "matmul", "mul", "softmax", "matmul"] + \
        ["permute", "matmul", "mul", "shift", "softmax", "matmul"] * 2
    assert attention[2][1] == {"n": 1, "constant": 0.5} and attention[-4][1] == {"n": 1, "constant": 0.3}
    causal = next(weights[f"{n.id}.weight"] for n in doc.nodes if n.type == "shift")
    assert torch.equal(causal.isinf(), torch.ones(5, 5, dtype=torch.bool).triu(1))
    assert outputs_match(doc, weights, net, x) < 1e-5


class ClassToken(nn.Module):
    """ViT's class token put before the tokens, with positions added after (or none)."""

    def __init__(self, positions: bool):
        super().__init__()
        self.class_token = nn.Parameter(torch.randn(1, 1, 6))
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, 6)) if positions else None

    def forward(self, x):  # (N, 4, 6)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)  # (N, 5, 6)
        return x if self.pos_embedding is None else x + self.pos_embedding


@pytest.mark.parametrize("positions", [True, False])
def test_a_class_token_and_its_positions_import_as_pos_embed(positions):
    net = ClassToken(positions)
    x = torch.randn(2, 4, 6)

    doc, weights = gc.from_torch(net, x, flat=True)

    assert inner_blocks(doc) == [("pos_embed", {"cls_token": True})]
    assert torch.equal(weights["cat.class_token"], net.class_token)
    assert torch.equal(weights["cat.pos_embedding"], net.pos_embedding if positions else torch.zeros(1, 5, 6))
    assert outputs_match(doc, weights, net, x) < 1e-6


# ----------------------------------------------------------------------------- torchvision-style classifiers
# The classifiers whose ops other tests here do not import already (split, scale, pos_embed with a class
# token, roll, slice, matmul); the other five take a few seconds each and are marked slow.
QUICK_ZOO = ("shufflenet_v2", "convnext", "vit", "swin")


@pytest.mark.parametrize("name", [pytest.param(name, marks=[] if name in QUICK_ZOO else [pytest.mark.slow])
                                  for name in onnx_zoo.ZOO])
def test_a_torchvision_style_classifier_imports_with_its_modules_as_subgraphs(name):
    model, x = onnx_zoo.build(name), onnx_zoo.example(name)

    doc, weights = gc.from_torch(model, x)

    with torch.no_grad():
        want = model(x)
    assert outputs_match(doc, weights, model, x) <= 1e-4 * max(1.0, float(want.abs().max()))
    top = {n.id for n in doc.nodes if n.type.startswith("subgraph:")}
    assert top and top <= {identifier(child, "m") for child, _ in model.named_children()}
    assert len(doc.subgraphs) > len(top)  # the modules inside them are subgraphs too


# ----------------------------------------------------------------------------- what no block does
class Unmappable(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.rnn = nn.LSTM(4, 4, batch_first=True)
        self.norm = nn.BatchNorm1d(3, track_running_stats=False)

    def forward(self, x):
        h = self.proj(x)  # (N, 3, 4)
        scores = torch.matmul(h[:, 0], h.transpose(1, 2))  # (N, N, 3): each sample's row times every sample's
        ordered = scores.sort(dim=-1).values  # (N, N, 3)
        out, _ = self.rnn(h)  # (N, 3, 4)
        return self.norm(h) + out + ordered[:, :1, :1] + h.sum()  # (N, 3, 4)


def test_every_call_without_a_block_is_listed_at_once_with_where_it_is_made():
    with pytest.raises(gc.GraphError) as refused:
        gc.from_torch(Unmappable(), torch.randn(2, 3, 4))

    message = str(refused.value)
    assert "Unmappable: 5 calls with no NetCanvas block" in message
    for expected in ("Unmappable (aten.matmul at test_from_torch.py:", "Unmappable (aten.sort at test_from_torch.py:",
                     "Unmappable (aten.sum at test_from_torch.py:", "rnn (aten.lstm at ",
                     "norm (nn.BatchNorm1d): track_running_stats=False: a batchnorm1d block has "
                     "track_running_stats=True"):
        assert expected in message, message
    assert "Traceback" not in message and "\n" in message


class LooseParameters(nn.Module):
    """Learned tensors that no block holds: one joined to the features, one that varies along the batch."""

    def __init__(self):
        super().__init__()
        self.extra = nn.Parameter(torch.randn(1, 3, 2))
        self.per_sample = nn.Parameter(torch.randn(2, 3, 1))

    def forward(self, x):  # (N, 3, 4)
        return torch.cat([x, self.extra.expand(x.shape[0], -1, -1)], dim=2), x * self.per_sample


def test_a_parameter_no_block_holds_is_refused_in_one_line_naming_where_it_is_used():
    with pytest.raises(gc.GraphError) as refused:
        gc.from_torch(LooseParameters(), torch.randn(2, 3, 4))

    lines = str(refused.value).splitlines()
    assert lines[0] == "error: LooseParameters: 2 calls with no NetCanvas block (each below: where it is called, " \
                       "what it calls, why)"
    assert re.fullmatch(r"error: LooseParameters \(aten\.cat at test_from_torch\.py:\d+\): joins a constant tensor "
                        r"to computed ones; .* pos_embed", lines[1]), lines[1]
    assert re.fullmatch(r"error: LooseParameters \(aten\.mul at test_from_torch\.py:\d+\): combines a tensor with "
                        r"a constant tensor of shape \[2, 3, 1\] that varies along the batch dim", lines[2]), lines[2]


def test_example_inputs_that_cannot_be_netcanvas_inputs_are_refused():
    for bad, why in ((torch.randn(2, 3, dtype=torch.float64), "torch.float64"), ([1, 2], "a int"),
                     (torch.tensor(1.0), "shape []")):
        with pytest.raises(gc.GraphError, match=re.escape(why)):
            gc.from_torch(nn.Linear(3, 3), bad)


# ----------------------------------------------------------------------------- the machinery
@pytest.mark.parametrize("spec", [s for s in blocks.all_specs() if s.build is not None], ids=lambda s: s.type)
def test_every_block_module_is_recognised_as_its_block(spec):
    for example in spec.examples:
        params = spec.params.model_validate(example.params)
        with torch.device("meta"):
            module = spec.build(params, example.inputs)
        ports = spec.input_ports(params)
        args = [example.inputs[p.name] for p in ports if not p.optional]
        kwargs = {p.name: example.inputs[p.name] for p in ports if p.optional and p.name in example.inputs}

        match = match_module(module, args, kwargs)

        assert not isinstance(match, str), f"{spec.type} {example.params}: {match}"
        assert match.type == spec.type
        with torch.device("meta"):  # params that say the same otherwise (reduce's dims [2] and [-1] of rank 3) build it
            rebuilt = spec.build(spec.params.model_validate(match.params), example.inputs)
        assert repr(rebuilt) == repr(module)


def test_where_torch_export_fails_torch_fx_traces_the_same_graph(monkeypatch):
    net = randomised_norms(SmallResNet())
    x = torch.randn(2, 3, 16, 16)
    exported, _ = gc.from_torch(net, x, flat=True)

    def cannot_export(*args, **kwargs):
        raise RuntimeError("torch.export cannot trace this module")

    monkeypatch.setattr(torch.export, "export", cannot_export)
    traced, weights = gc.from_torch(net, x, flat=True)

    assert traced == exported
    assert outputs_match(traced, weights, net, x) < 1e-5


# ----------------------------------------------------------------------------- the command line
MODEL_PY = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def build_model():
    torch.manual_seed(0)
    return Net()
'''


def test_netcanvas_import_builds_the_module_of_a_python_file(tmp_path, capsys):
    (tmp_path / "model.py").write_text(textwrap.dedent(MODEL_PY))
    graph, state = tmp_path / "g.json", tmp_path / "g.pt"

    code, out, err = run(capsys, "import", f"{tmp_path / 'model.py'}:build_model", "--input-shape", "1x3x16x16",
                         "--out", str(graph), "--weights", str(state))

    assert code == 0 and err == "" and "g.json" in out and "5,354 parameters" in out
    module = load_module(f"{tmp_path / 'model.py'}:build_model").module
    model = gc.compile(gc.load(graph)).init(state)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(model.eval()(x), module.eval()(x), atol=1e-6)


def test_netcanvas_import_builds_a_module_named_by_its_import_path(tmp_path, capsys):
    code, out, err = run(capsys, "import", "test_from_torch:TinyUNet", "--input-shape", "2x1x8x8",
                         "--out", str(tmp_path / "unet.json"))

    assert code == 0 and err == "" and "graph 'TinyUNet'" in out
    assert any(n.type == "concat" for n in gc.load(tmp_path / "unet.json").nodes)


def test_a_python_file_imports_the_modules_beside_it(tmp_path):
    (tmp_path / "from_torch_layers.py").write_text(textwrap.dedent(MODEL_PY))
    (tmp_path / "model.py").write_text("from from_torch_layers import build_model\n")

    loaded = load_module(f"{tmp_path / 'model.py'}:build_model")

    assert type(loaded.module).__name__ == "Net" and loaded.example_inputs is None


def test_netcanvas_import_takes_an_exported_files_own_inputs(tmp_path, capsys):
    code, _, _ = run(capsys, "export", "lenet5", "--python", str(tmp_path / "lenet.py"))
    assert code == 0

    code, out, err = run(capsys, "import", f"{tmp_path / 'lenet.py'}:build_model", "--flat",
                         "--out", str(tmp_path / "back.json"))

    assert code == 0 and err == "", err
    assert blocks_of(gc.load(tmp_path / "back.json")) == blocks_of(gc.template("lenet5"))


def test_netcanvas_import_of_a_bad_target_exits_1_in_one_line(tmp_path, capsys):
    (tmp_path / "model.py").write_text(textwrap.dedent(MODEL_PY))
    (tmp_path / "broken.py").write_text("raise ValueError('no torch here')\n")
    model = tmp_path / "model.py"
    for target, expected in ((f"{model}:nope", "has no function or class 'nope'"),
                             (f"{tmp_path / 'broken.py'}:build", "ValueError: no torch here"),
                             (f"{tmp_path / 'missing.py'}:build", "no file"),
                             (f"{model}:build_model", "give the shape of each input with --input-shape"),
                             ("no_such_package_here:build", "ModuleNotFoundError")):
        code, out, err = run(capsys, "import", target, "--out", str(tmp_path / "g.json"))
        assert code == 1 and expected in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and not (tmp_path / "g.json").exists()


UNMAPPABLE_PY = '''
import torch
from torch import nn


class Net(nn.Module):
    def forward(self, x):
        return torch.matmul(x[:, 0], x.transpose(1, 2)).sort(dim=-1).values


def build_model():
    return Net()
'''


def test_netcanvas_import_json_lists_the_calls_without_a_block_as_data(tmp_path, capsys):
    (tmp_path / "model.py").write_text(textwrap.dedent(UNMAPPABLE_PY))

    code, out, _ = run(capsys, "import", f"{tmp_path / 'model.py'}:build_model", "--input-shape", "1x3x4",
                       "--json", "--out", str(tmp_path / "g.json"))

    report = json.loads(out)
    assert code == 1 and report["ok"] is False and not (tmp_path / "g.json").exists()
    assert report["unmapped"] == [{"op": "aten.sort", "count": 1}]
    assert report["refused"] == [{"op": "aten.matmul", "node": "Net", "at": "model.py:8",
                                  "why": "multiplies computed tensors of shapes (4) and (4, 3) in each sample; "
                                         "NetCanvas's matmul multiplies two of one rank, matrices or stacks of them"}]


def test_netcanvas_import_refuses_bad_input_shapes_and_shapes_for_onnx(tmp_path, capsys):
    out = str(tmp_path / "g.json")
    assert_usage_error(["import", "m.py:build", "--input-shape", "3by32", "--out", out],
                       "argument --input-shape: must be sizes joined by x", tmp_path, capsys)
    assert_usage_error(["import", "m.onnx", "--input-shape", "1x3", "--out", out],
                       "--input-shape goes with a PyTorch module", tmp_path, capsys)
