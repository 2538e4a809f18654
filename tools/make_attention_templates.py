"""Write the attention, autoencoder and diffusion templates to graphcore/templates/*.json.

    .venv/bin/python tools/make_attention_templates.py

One function per template lays out its graph. The ViTs follow torchvision's VisionTransformer
(timm's ``vit_tiny_patch16_224`` has the same layers), so their parameter counts are the
published ones; the others state the count this script computes with ``gc.summary``.
tests/test_templates_attention.py checks the counts, that every template runs, and that this
script reproduces the committed files byte for byte. The ViTs declare in their meta how the keys
of torchvision's state_dict become their own (graphcore/core/keymap.py), so that ``init`` reads
torchvision's weights files; tests/test_torchvision_keys.py checks the map.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = ROOT / "graphcore" / "templates"


class Graph:
    """A graph under construction. ``add`` wires its inputs from ``"node"`` or ``"node.port"``."""

    def __init__(self, name: str, description: str):
        self.name = name
        self.description = description
        self.meta: dict[str, Any] = {}  # entries after the description
        self.nodes: list[dict[str, Any]] = []
        self.edges: list[dict[str, str]] = []

    def input(self, node_id: str, shape: list[int], dtype: str = "float32") -> str:
        params: dict[str, Any] = {"shape": shape}
        if dtype != "float32":
            params["dtype"] = dtype
        self.nodes.append({"id": node_id, "type": "input", "params": params})
        return node_id

    def add(self, node_id: str, type_id: str, inputs: str | dict[str, str], **params: Any) -> str:
        """A node fed by one source (port ``in``) or by ``{port: source}``; returns its id."""
        node: dict[str, Any] = {"id": node_id, "type": type_id}
        if params:
            node["params"] = params
        self.nodes.append(node)
        for dst_port, source in ({"in": inputs} if isinstance(inputs, str) else inputs).items():
            src, _, src_port = source.partition(".")
            edge = {"src": src, "dst": node_id}
            if src_port and src_port != "out":
                edge["src_port"] = src_port
            if dst_port != "in":
                edge["dst_port"] = dst_port
            self.edges.append(edge)
        return node_id

    def output(self, node_id: str, source: str) -> str:
        return self.add(node_id, "output", source)

    def to_json(self, params: int) -> str:
        """One node and one edge per line, like the hand-written templates."""
        rows = lambda items: ",\n".join(f"    {json.dumps(item, ensure_ascii=False)}" for item in items)  # noqa: E731
        meta = {"description": f"{self.description} {params:,} parameters.", **self.meta}
        text = json.dumps(meta, indent=2, ensure_ascii=False).replace("\n", "\n  ")  # nested in the document
        return (
            "{\n"
            '  "format": "netcanvas.graph",\n'
            '  "version": 1,\n'
            f'  "name": {json.dumps(self.name)},\n'
            f'  "nodes": [\n{rows(self.nodes)}\n  ],\n'
            f'  "edges": [\n{rows(self.edges)}\n  ],\n'
            f'  "meta": {text}\n'
            "}\n"
        )


# --------------------------------------------------------------------------- vision transformers
# How the keys of torchvision's VisionTransformer become a ViT template's, first match first: its attention
# is nn.MultiheadAttention, whose q, k and v projections are one fused in_proj tensor.
LAYER = "encoder.layers.encoder_layer_{i}."
VIT_KEYS = {
    "conv_proj.": "patches.proj.",
    "class_token": "pos.class_token",
    "encoder.pos_embedding": "pos.pos_embedding",
    f"{LAYER}self_attention.in_proj_weight": ["block{i}.attn.q_proj.weight", "block{i}.attn.k_proj.weight",
                                               "block{i}.attn.v_proj.weight"],
    f"{LAYER}self_attention.in_proj_bias": ["block{i}.attn.q_proj.bias", "block{i}.attn.k_proj.bias",
                                             "block{i}.attn.v_proj.bias"],
    f"{LAYER}self_attention.": "block{i}.attn.",
    f"{LAYER}mlp.0.": "block{i}.mlp.fc1.",
    f"{LAYER}mlp.3.": "block{i}.mlp.fc2.",
    f"{LAYER}mlp.linear_1.": "block{i}.mlp.fc1.",  # older torchvision's names, which its MLPBlock still reads
    f"{LAYER}mlp.linear_2.": "block{i}.mlp.fc2.",
    LAYER: "block{i}.",
    "encoder.ln.": "norm.",
    "heads.head.": "head.",
}


def vit(name: str, description: str, torchvision: str, *, dim: int, depth: int, heads: int, patch: int = 16,
        image: int = 224, classes: int = 1000) -> Graph:
    """torchvision's VisionTransformer: patches + class token + positions, pre-norm blocks, LayerNorm, head.
    ``torchvision`` names the twin whose weights it reads."""
    g = Graph(name, description)
    g.meta["torchvision"] = {"model": torchvision, "keys": VIT_KEYS}
    g.input("image", [3, image, image])
    g.add("patches", "patch_embed", "image", patch_size=patch, embed_dim=dim)
    x = g.add("pos", "pos_embed", "patches", cls_token=True)
    for i in range(depth):
        x = g.add(f"block{i}", "transformer_block", x, num_heads=heads, mlp_ratio=4.0)
    g.add("norm", "layernorm", x, eps=1e-6)
    g.add("cls", "token_select", "norm", index=0)
    g.add("head", "linear", "cls", out_features=classes)
    g.output("logits", "head")
    return g


def vit_tiny() -> Graph:
    return vit("vit_tiny", "ViT-Ti/16 (as timm's vit_tiny_patch16_224): 3x224x224, patch 16, width 192, depth 12, "
                           "3 heads, 1000 classes;",
               "VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, "
               "mlp_dim=768)", dim=192, depth=12, heads=3)


def vit_b16() -> Graph:
    return vit("vit_b16", "ViT-B/16 (Dosovitskiy et al. 2021, as torchvision's vit_b_16): 3x224x224, patch 16, "
                          "width 768, depth 12, 12 heads, 1000 classes;", "vit_b_16", dim=768, depth=12, heads=12)


# --------------------------------------------------------------------------- autoencoder
def resblk(g: Graph, name: str, x: str, channels: int, resample: str) -> str:
    """calvinpelletier/ai's ``resblk(nc1, nc2, stride=2 or .5)``: conv-BN-mish, conv-BN, squeeze-excite
    (reduction 16, mish, sigmoid), plus a shortcut that resamples (avg pool 2 or nearest x2) and
    applies a 1x1 conv with bias. No activation after the sum."""
    if resample == "down":
        g.add(f"{name}_conv1", "conv2d", x, out_channels=channels, kernel_size=3, stride=2, padding=1, bias=False)
        short = g.add(f"{name}_short_pool", "avgpool2d", x, kernel_size=2)
    else:
        x = short = g.add(f"{name}_up", "upsample", x, scale_factor=2.0, mode="nearest")
        g.add(f"{name}_conv1", "conv2d", x, out_channels=channels, kernel_size=3, padding=1, bias=False)
    g.add(f"{name}_short", "conv2d", short, out_channels=channels, kernel_size=1)
    g.add(f"{name}_bn1", "batchnorm2d", f"{name}_conv1")
    g.add(f"{name}_act1", "mish", f"{name}_bn1")
    g.add(f"{name}_conv2", "conv2d", f"{name}_act1", out_channels=channels, kernel_size=3, padding=1, bias=False)
    main = g.add(f"{name}_bn2", "batchnorm2d", f"{name}_conv2")
    g.add(f"{name}_se_pool", "adaptive_avgpool2d", main, output_size=1)
    g.add(f"{name}_se_reduce", "conv2d", f"{name}_se_pool", out_channels=max(1, channels // 16), kernel_size=1)
    g.add(f"{name}_se_act", "mish", f"{name}_se_reduce")
    g.add(f"{name}_se_expand", "conv2d", f"{name}_se_act", out_channels=channels, kernel_size=1)
    g.add(f"{name}_se_gate", "sigmoid", f"{name}_se_expand")
    g.add(f"{name}_se", "mul", {"in0": main, "in1": f"{name}_se_gate"}, n=2)
    return g.add(f"{name}_add", "add", {"in0": f"{name}_se", "in1": f"{name}_short"}, n=2)


def autoencoder(imsize: int = 64, bottleneck: int = 4, nc_min: int = 32, nc_max: int = 512) -> Graph:
    """``ImgAutoencoder(imsize, bottleneck)`` of calvinpelletier/ai (model/ae.py): a mish stem conv, a pyramid
    of stride-2 resblks that doubles the channels (up to nc_max), and the mirror pyramid back, then a tanh conv."""
    g = Graph("autoencoder", f"Image autoencoder (seed 004's ImgAutoencoder, calvinpelletier/ai model/ae.py): "
                             f"3x{imsize}x{imsize} to a {bottleneck}x{bottleneck} bottleneck and back, ResNet blocks "
                             f"with squeeze-excite, channels {nc_min} to {nc_max};")
    levels = int(math.log2(imsize // bottleneck))
    channels = [min(nc_min * 2 ** i, nc_max) for i in range(levels + 1)]
    g.input("image", [3, imsize, imsize])
    g.add("stem", "conv2d", "image", out_channels=nc_min, kernel_size=3, padding=1)
    x = g.add("stem_act", "mish", "stem")
    for i, c in enumerate(channels[1:]):
        x = resblk(g, f"enc{i}", x, c, "down")
    for i, c in enumerate(channels[-2::-1]):
        x = resblk(g, f"dec{i}", x, c, "up")
    g.add("head", "conv2d", x, out_channels=3, kernel_size=3, padding=1)
    g.add("head_act", "tanh", "head")
    g.output("reconstruction", "head_act")
    return g


# --------------------------------------------------------------------------- diffusion U-Nets
def unet(name: str, description: str, *, shape: list[int], base: int, mults: list[int], attention: list[bool],
         num_res_blocks: int, num_groups: int, dropout: float = 0.0) -> Graph:
    """A DDPM noise-prediction U-Net: ``x`` and timestep ``t`` in, ε of x's shape out.

    Level i works at 1/2^i of the input size with ``base·mults[i]`` channels; the last level does not
    downsample. One skip per level goes from unet_down to the unet_up of the same level.
    """
    g = Graph(name, description)
    g.input("x", shape)
    g.input("t", [], dtype="int64")
    g.add("temb", "time_embedding", "t", dim=base)
    x = g.add("conv_in", "conv2d", "x", out_channels=base, kernel_size=3, padding=1)
    stage = dict(num_res_blocks=num_res_blocks, num_groups=num_groups, dropout=dropout)
    last = len(mults) - 1
    for i, (mult, attn) in enumerate(zip(mults, attention)):
        g.add(f"down{i}", "unet_down", {"in": x, "temb": "temb"}, out_channels=base * mult, attention=attn,
              downsample=i < last, **stage)
        x = f"down{i}.out"
    x = g.add("mid", "unet_mid", {"in": x, "temb": "temb"}, attention=True, num_groups=num_groups, dropout=dropout)
    for i in reversed(range(len(mults))):
        x = g.add(f"up{i}", "unet_up", {"in": x, "skip": f"down{i}.skip", "temb": "temb"},
                  out_channels=base * mults[i], attention=attention[i], upsample=i < last, **stage)
    g.add("norm_out", "groupnorm", x, num_groups=num_groups)
    g.add("act_out", "silu", "norm_out")
    g.add("conv_out", "conv2d", "act_out", out_channels=shape[0], kernel_size=3, padding=1)
    g.output("eps", "conv_out")
    return g


def unet_ddpm_small() -> Graph:
    # 8x8 is the digits scans' own size: at 16x16 a step costs ~3x as much for interpolated pixels, and
    # 3 minutes on 2 CPU cores gave 60% recognisable samples where 8x8 reaches the 80% goal.
    return unet("unet_ddpm_small", "Small DDPM U-Net for 1x8x8 digits (the scans' own size): predicts the noise in "
                                   "x at timestep t; 32/64 channels, 2 levels, attention at 4x4;",
                shape=[1, 8, 8], base=32, mults=[1, 2], attention=[False, True], num_res_blocks=1, num_groups=8)


def unet_ddpm32() -> Graph:
    return unet("unet_ddpm32", "DDPM U-Net for 3x32x32 (Ho et al. 2020, CIFAR-10 layout: 128 channels, multipliers "
                               "1,2,2,2, 2 residual blocks per level, attention at 16x16, dropout 0.1; one skip per "
                               "level);",
                shape=[3, 32, 32], base=128, mults=[1, 2, 2, 2], attention=[False, True, False, False],
                num_res_blocks=2, num_groups=32, dropout=0.1)


def video_unet_small() -> Graph:
    """Factorised space-time U-Net for clips (C, T, H, W): 3-D residual blocks, spatial then temporal
    attention at the low resolution, one skip."""
    g = Graph("video_unet_small", "Small video diffusion U-Net for 1x8x16x16 clips (C, T, H, W): predicts the noise "
                                  "at timestep t; conv3d residual blocks, spatial and temporal attention at 8x8;")
    g.input("x", [1, 8, 16, 16])
    g.input("t", [], dtype="int64")
    g.add("temb", "time_embedding", "t", dim=32)
    g.add("conv_in", "conv3d", "x", out_channels=32, kernel_size=3, padding=1)
    res = dict(num_groups=8)
    g.add("res1", "video_res_block", {"in": "conv_in", "temb": "temb"}, out_channels=32, **res)
    g.add("down", "video_res_block", {"in": "res1", "temb": "temb"}, out_channels=64, resample="down", **res)
    g.add("spatial", "spatial_attention", "down", num_heads=1, num_groups=8)
    g.add("temporal", "temporal_attention", "spatial", num_heads=1, num_groups=8)
    g.add("mid", "video_res_block", {"in": "temporal", "temb": "temb"}, out_channels=64, **res)
    g.add("up", "video_res_block", {"in": "mid", "temb": "temb"}, out_channels=32, resample="up", **res)
    g.add("skip", "concat", {"in0": "up", "in1": "res1"}, n=2, dim=1)
    g.add("res2", "video_res_block", {"in": "skip", "temb": "temb"}, out_channels=32, **res)
    g.add("norm_out", "groupnorm", "res2", num_groups=8)
    g.add("act_out", "silu", "norm_out")
    g.add("conv_out", "conv3d", "act_out", out_channels=1, kernel_size=3, padding=1)
    g.output("eps", "conv_out")
    return g


TEMPLATES: dict[str, Callable[[], Graph]] = {
    "vit_tiny": vit_tiny,
    "vit_b16": vit_b16,
    "autoencoder": autoencoder,
    "unet_ddpm_small": unet_ddpm_small,
    "unet_ddpm32": unet_ddpm32,
    "video_unet_small": video_unet_small,
}


def render(name: str) -> str:
    """The JSON text of one template; it must validate with no problems."""
    sys.path.insert(0, str(ROOT))
    import graphcore as gc

    graph = TEMPLATES[name]()
    doc = gc.loads(graph.to_json(0), name)
    problems = gc.validate(doc)
    if problems:
        raise SystemExit(f"{name}: " + "; ".join(f"{d.node_id}: {d.message}" for d in problems))
    return graph.to_json(gc.summary(doc).total_params)


def main() -> None:
    for name in TEMPLATES:
        path = TEMPLATE_DIR / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
