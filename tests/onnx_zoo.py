"""Small classifiers written here in torchvision's style and layer structure, for the import tests
and benchmarks/bench_import.py (torchvision itself cannot be installed beside our torch).

Each class follows its torchvision namesake module for module (Conv2dNormActivation,
InvertedResidual, SqueezeExcitation, _DenseLayer, MBConv, ResBottleneckBlock, CNBlock,
EncoderBlock, SwinTransformerBlock ...) and op for op in ``forward`` (ReLU6, hardswish, channel
shuffle by view/transpose/view, chunk, concat of the features so far, layer scale as a per-channel
parameter, class token and positions, nn.MultiheadAttention, window partition and shifted roll),
with widths and depths cut so that each exports and imports in seconds. One departure, in Swin:
torchvision folds the windows into the batch dim (``B * nW``), which NetCanvas's per-sample blocks
cannot hold, so here the windows are a dim of their own, (B, nW, T, C); the ops are the same.

``ZOO``: name -> (builder, input shape without the batch). ``export`` writes a model with either
exporter; ``compare`` imports it and measures its outputs against onnxruntime's.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import graphcore as gc

TOLERANCE = 1e-4  # of max(1, |y|max), absolute


# ---------------------------------------------------------------------- shared parts (torchvision.ops.misc)
class Conv2dNormActivation(nn.Sequential):
    """Conv, BatchNorm, activation (torchvision.ops.misc.Conv2dNormActivation)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 activation_layer: Callable[..., nn.Module] | None = nn.ReLU):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                                             bias=False), nn.BatchNorm2d(cout)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Pool, 1x1 conv, activation, 1x1 conv, scale activation, times the input
    (torchvision.ops.misc.SqueezeExcitation)."""

    def __init__(self, channels: int, squeeze: int, activation: Callable[..., nn.Module] = nn.ReLU,
                 scale_activation: Callable[..., nn.Module] = nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


# ---------------------------------------------------------------------- MobileNet v2
class InvertedResidualV2(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 project (ReLU6), with the input added where shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = round(cin * expand_ratio)
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(cin, hidden, 1, activation_layer=nn.ReLU6))
        layers += [Conv2dNormActivation(hidden, hidden, 3, stride, groups=hidden, activation_layer=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.MobileNetV2 at a fraction of its width and depth."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        settings = [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2), (6, 24, 1, 1)]  # t, c, n, s
        features: list[nn.Module] = [Conv2dNormActivation(3, 8, stride=2, activation_layer=nn.ReLU6)]
        cin = 8
        for t, c, n, s in settings:
            for i in range(n):
                features.append(InvertedResidualV2(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(Conv2dNormActivation(cin, 64, 1, activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------------- MobileNet v3 small
class InvertedResidualV3(nn.Module):
    """Expand, depthwise, squeeze-excite (hardsigmoid), project; ReLU or hardswish."""

    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, use_se: bool, use_hs: bool, stride: int):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        activation = nn.Hardswish if use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(Conv2dNormActivation(cin, expanded, 1, activation_layer=activation))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel, stride, groups=expanded,
                                           activation_layer=activation))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4), scale_activation=nn.Hardsigmoid))
        layers.append(Conv2dNormActivation(expanded, cout, 1, activation_layer=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        return result + x if self.use_res_connect else result


class MobileNetV3Small(nn.Module):
    """torchvision.models.mobilenet_v3_small's structure, narrowed."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        settings = [(16, 3, 16, 16, True, False, 2), (16, 3, 32, 24, False, False, 2),
                    (24, 3, 40, 24, False, False, 1), (24, 5, 48, 32, True, True, 2), (32, 5, 64, 32, True, True, 1)]
        layers: list[nn.Module] = [Conv2dNormActivation(3, 16, stride=2, activation_layer=nn.Hardswish)]
        layers += [InvertedResidualV3(*s) for s in settings]
        layers.append(Conv2dNormActivation(32, 96, 1, activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(96, 64), nn.Hardswish(inplace=True), nn.Dropout(0.2),
                                        nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


# ---------------------------------------------------------------------- ShuffleNet v2
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


class ShuffleUnit(nn.Module):
    """torchvision's shufflenetv2.InvertedResidual: split (or two branches), concat, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        branch = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                         nn.Conv2d(cin, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(True))
        else:
            self.branch1 = nn.Sequential()
        first = cin if stride > 1 else branch
        self.branch2 = nn.Sequential(
            nn.Conv2d(first, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(True),
            nn.Conv2d(branch, branch, 3, stride, 1, groups=branch, bias=False), nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """torchvision.models.ShuffleNetV2, two short stages."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 12, 3, 2, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU(True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stage2 = nn.Sequential(ShuffleUnit(12, 24, 2), ShuffleUnit(24, 24, 1))
        self.stage3 = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1))
        self.conv5 = nn.Sequential(nn.Conv2d(48, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.maxpool(self.conv1(x))))
        return self.fc(self.conv5(x).mean([2, 3]))


# ---------------------------------------------------------------------- DenseNet
class DenseLayer(nn.Module):
    """torchvision's densenet._DenseLayer: concat of all features so far, BN-ReLU-1x1, BN-ReLU-3x3."""

    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        concated = torch.cat(inputs, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(concated))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, cin: int, growth: int, bn_size: int = 2):
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm, self.relu = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    """torchvision.models.DenseNet with two dense blocks of three layers."""

    def __init__(self, num_classes: int = 10, growth: int = 8):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, 16, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(16))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        self.features.add_module("denseblock1", DenseBlock(3, 16, growth))
        self.features.add_module("transition1", Transition(16 + 3 * growth, 20))
        self.features.add_module("denseblock2", DenseBlock(3, 20, growth))
        self.features.add_module("norm5", nn.BatchNorm2d(20 + 3 * growth))
        self.classifier = nn.Linear(20 + 3 * growth, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(F.relu(self.features(x), inplace=True), (1, 1))
        return self.classifier(torch.flatten(out, 1))


# ---------------------------------------------------------------------- EfficientNet
class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: drops whole samples in training, nothing in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class MBConv(nn.Module):
    """torchvision's efficientnet.MBConv: expand, depthwise, SE (SiLU), project, stochastic depth."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand_ratio: int, sd_prob: float):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        expanded = _make_divisible(cin * expand_ratio)
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(Conv2dNormActivation(cin, expanded, 1, activation_layer=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel, stride, groups=expanded,
                                           activation_layer=nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, cin // 4), activation=partial(nn.SiLU, inplace=True)))
        layers.append(Conv2dNormActivation(expanded, cout, 1, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result) + x
        return result


class EfficientNet(nn.Module):
    """torchvision.models.efficientnet_b0's structure, narrowed."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        settings = [(1, 3, 1, 16, 8, 1), (6, 3, 2, 8, 12, 2), (6, 5, 2, 12, 16, 2), (6, 3, 1, 16, 24, 1)]
        layers: list[nn.Module] = [Conv2dNormActivation(3, 16, stride=2, activation_layer=nn.SiLU)]
        total, done = sum(s[-1] for s in settings), 0
        for ratio, kernel, stride, cin, cout, repeats in settings:
            stage = []
            for i in range(repeats):
                stage.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, ratio,
                                    0.2 * done / total))
                done += 1
            layers.append(nn.Sequential(*stage))
        layers.append(Conv2dNormActivation(24, 64, 1, activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------------- RegNet-Y
class BottleneckTransform(nn.Sequential):
    """torchvision's regnet.BottleneckTransform: 1x1, grouped 3x3, SE, 1x1."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int, se_ratio: float):
        super().__init__()
        groups = cout // group_width
        self.a = Conv2dNormActivation(cin, cout, 1)
        self.b = Conv2dNormActivation(cout, cout, 3, stride, groups=groups)
        self.se = SqueezeExcitation(cout, int(round(se_ratio * cin)))
        self.c = Conv2dNormActivation(cout, cout, 1, activation_layer=None)


class ResBottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 8, se_ratio: float = 0.25):
        super().__init__()
        self.proj = None
        if cin != cout or stride != 1:
            self.proj = Conv2dNormActivation(cin, cout, 1, stride, activation_layer=None)
        self.f = BottleneckTransform(cin, cout, stride, group_width, se_ratio)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.proj(x) if self.proj is not None else x
        return self.activation(shortcut + self.f(x))


class RegNetY(nn.Module):
    """torchvision.models.RegNet (Y: with squeeze-excite), two stages."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = Conv2dNormActivation(3, 16, 3, 2)
        self.trunk_output = nn.Sequential(
            nn.Sequential(ResBottleneckBlock(16, 24, 2), ResBottleneckBlock(24, 24, 1)),
            nn.Sequential(ResBottleneckBlock(24, 48, 2), ResBottleneckBlock(48, 48, 1)))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.trunk_output(self.stem(x)))
        return self.fc(x.flatten(start_dim=1))


# ---------------------------------------------------------------------- ConvNeXt
class Permute(nn.Module):
    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class LayerNorm2d(nn.LayerNorm):
    """Layer norm over the channels of (N, C, H, W) (torchvision's convnext.LayerNorm2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """Depthwise 7x7, channels-last layer norm and MLP, times a per-channel layer scale, plus the input."""

    def __init__(self, dim: int, layer_scale: float = 1e-6):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.layer_scale * self.block(x)
        return self.stochastic_depth(result) + x


class ConvNeXt(nn.Module):
    """torchvision.models.ConvNeXt, two stages."""

    def __init__(self, num_classes: int = 10, dims: tuple[int, int] = (16, 32)):
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))]
        layers.append(nn.Sequential(CNBlock(dims[0]), CNBlock(dims[0])))
        layers.append(nn.Sequential(LayerNorm2d(dims[0], eps=1e-6), nn.Conv2d(dims[0], dims[1], 2, 2)))
        layers.append(nn.Sequential(CNBlock(dims[1]), CNBlock(dims[1])))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(dims[1], eps=1e-6), nn.Flatten(1), nn.Linear(dims[1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


# ---------------------------------------------------------------------- ViT
class MLPBlock(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim), nn.Dropout(0.0))


class EncoderBlock(nn.Module):
    """torchvision's vision_transformer.EncoderBlock: pre-norm nn.MultiheadAttention and MLP."""

    def __init__(self, heads: int, dim: int, hidden: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = self.dropout(y) + x
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, tokens: int, layers: int, heads: int, dim: int, hidden: int):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential(*(EncoderBlock(heads, dim, hidden) for _ in range(layers)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    """torchvision.models.VisionTransformer: patch conv, class token, positions, encoder, head."""

    def __init__(self, image_size: int = 32, patch_size: int = 8, dim: int = 32, num_classes: int = 10):
        super().__init__()
        self.patch_size, self.hidden_dim = patch_size, dim
        self.conv_proj = nn.Conv2d(3, dim, patch_size, patch_size)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim))
        self.encoder = Encoder((image_size // patch_size) ** 2 + 1, 2, 4, dim, 2 * dim)
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(dim, num_classes))

    def _process_input(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        x = self.conv_proj(x)
        x = x.reshape(n, self.hidden_dim, (h // self.patch_size) * (w // self.patch_size))
        return x.permute(0, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._process_input(x)
        batch_class_token = self.class_token.expand(x.shape[0], -1, -1)
        x = self.encoder(torch.cat([batch_class_token, x], dim=1))
        return self.heads(x[:, 0])


# ---------------------------------------------------------------------- Swin
class ShiftedWindowAttention(nn.Module):
    """torchvision's swin_transformer.ShiftedWindowAttention: roll, window partition by
    view/permute/reshape, attention with a relative position bias (and the shift's mask), reverse,
    roll back. The windows are a dim of each sample's tensor, (B, nW, T, C), not folded into B."""

    def __init__(self, dim: int, window_size: int, shift_size: int, num_heads: int):
        super().__init__()
        self.window_size, self.shift_size, self.num_heads = window_size, shift_size, num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.randn((2 * window_size - 1) ** 2, num_heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
        coords = torch.flatten(coords, 1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        relative[:, :, 0] += window_size - 1
        relative[:, :, 1] += window_size - 1
        relative[:, :, 0] *= 2 * window_size - 1
        self.register_buffer("relative_position_index", relative.sum(-1).flatten(), persistent=False)

    def _bias(self) -> torch.Tensor:
        t = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index].view(t, t, -1)
        return bias.permute(2, 0, 1).contiguous()  # (heads, T, T)

    def _mask(self, height: int, width: int) -> torch.Tensor:
        """-100 where a shifted window holds pixels that were not neighbours: (nW, 1, T, T)."""
        ws, shift = self.window_size, self.shift_size
        region = torch.zeros(height, width)
        count = 0
        for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                region[h, w] = count
                count += 1
        region = region.view(height // ws, ws, width // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
        mask = region.unsqueeze(1) - region.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws, heads = self.window_size, self.num_heads
        if self.shift_size:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = (h // ws) * (w // ws)
        x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, windows, ws * ws, c)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, windows, ws * ws, heads, c // heads).transpose(2, 3) for t in (q, k, v))
        attn = (q * (c // heads) ** -0.5).matmul(k.transpose(-2, -1)) + self._bias()
        if self.shift_size:
            attn = attn + self._mask(h, w)
        x = attn.softmax(dim=-1).matmul(v).transpose(2, 3).reshape(b, windows, ws * ws, c)
        x = self.proj(x)
        x = x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shift_size:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        return x


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window_size: int, shift_size: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention(dim, window_size, shift_size, heads)
        self.stochastic_depth = StochasticDepth(0.0)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.stochastic_depth(self.attn(self.norm1(x)))
        return x + self.stochastic_depth(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (strided slices), normed, halved by a linear."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x))


class SwinTransformer(nn.Module):
    """torchvision.models.SwinTransformer's structure: patch embedding (conv, permute, norm),
    window and shifted-window blocks, patch merging, norm, pool, head."""

    def __init__(self, num_classes: int = 10, dim: int = 16, window_size: int = 4,
                 depths: tuple[int, ...] = (2, 1), heads: tuple[int, ...] = (2, 4), mlp_ratio: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, dim, 4, 4), Permute([0, 2, 3, 1]), nn.LayerNorm(dim))]
        for stage, (depth, stage_heads) in enumerate(zip(depths, heads, strict=True)):
            if stage:
                layers.append(PatchMerging(dim))
                dim *= 2
            layers.append(nn.Sequential(*(SwinTransformerBlock(dim, stage_heads, window_size, i % 2 * window_size // 2,
                                                               mlp_ratio)
                                          for i in range(depth))))
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.permute = Permute([0, 3, 1, 2])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.permute(self.norm(self.features(x)))
        return self.head(self.flatten(self.avgpool(x)))


# ---------------------------------------------------------------------- the zoo
ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mobilenet_v2": (MobileNetV2, (3, 32, 32)),
    "mobilenet_v3_small": (MobileNetV3Small, (3, 32, 32)),
    "shufflenet_v2": (ShuffleNetV2, (3, 32, 32)),
    "densenet": (DenseNet, (3, 32, 32)),
    "efficientnet_b0": (EfficientNet, (3, 32, 32)),
    "regnet_y": (RegNetY, (3, 32, 32)),
    "convnext": (ConvNeXt, (3, 32, 32)),
    "vit": (VisionTransformer, (3, 32, 32)),
    "swin": (SwinTransformer, (3, 64, 64)),
}
EXPORTERS = ("legacy", "dynamo")
# torchvision's swin_t at full size (28 M parameters, 224 x 224): what benchmarks/bench_canvas.py opens.
SWIN_T = (partial(SwinTransformer, num_classes=1000, dim=96, window_size=7, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24),
                  mlp_ratio=4),
          (3, 224, 224))


def build(name: str, seed: int = 0) -> nn.Module:
    """The model, in eval mode, with random weights, its norms' statistics and layer scales random
    too (so that no part computes nearly nothing, as a fresh layer scale of 1e-6 would)."""
    torch.manual_seed(seed)
    model = ZOO[name][0]().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
            if isinstance(module, CNBlock):
                module.layer_scale.uniform_(0.5, 1.5)
    return model


def example(name: str, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, *ZOO[name][1], generator=torch.Generator().manual_seed(seed))


def export(name: str, exporter: str, path: Path) -> Path:
    """``name`` as ONNX with a dynamic batch, by torch's TorchScript exporter ('legacy', opset 17) or
    its torch.export one ('dynamo', opset 18: the lowest it writes; asked for 17 it writes 18 anyway,
    after a failed conversion that prints a traceback)."""
    model, x = build(name), example(name)
    if exporter == "dynamo":
        with contextlib.redirect_stdout(io.StringIO()):  # its progress lines, which say nothing here
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, input_names=["x"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=18, verbose=False)
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], opset_version=17,
                          dynamic_axes={"x": {0: "batch"}})
    return path


@dataclass(frozen=True)
class Outcome:
    """How one export imported: ``refused`` is '' where it imported; ``diff`` is the largest
    difference from onnxruntime's outputs and ``tolerance`` what it may be."""

    refused: str
    diff: float = math.nan
    tolerance: float = math.nan

    @property
    def matches(self) -> bool:
        return not self.refused and self.diff <= self.tolerance


def compare(path: Path, x: torch.Tensor, *, flat: bool = False) -> tuple[Outcome, gc.GraphDoc | None]:
    """Import ``path`` and run it on ``x`` against onnxruntime; the outcome and the imported graph."""
    import onnxruntime as ort

    try:
        doc, state = gc.from_onnx(path, flat=flat)
    except gc.GraphError as exc:
        return Outcome(str(exc).splitlines()[0] if len(str(exc).splitlines()) == 1 else str(exc)), None
    model = gc.compile(doc).eval()
    model.load_state_dict(state, strict=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        got = model(x).numpy()
    if got.shape != want.shape:
        return Outcome(f"output shape {got.shape}, expected {want.shape}"), doc
    tolerance = TOLERANCE * max(1.0, float(np.abs(want).max()))
    return Outcome("", float(np.abs(got.astype(np.float64) - want).max()), tolerance), doc
