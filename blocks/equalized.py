"""Equalised learning rate (Karras et al., ProGAN and StyleGAN): layers that scale their weights at
run time rather than at initialisation.

The stored weight is drawn from N(0, 1) / lr_mul and multiplied in every forward pass by
``gain / sqrt(fan_in) * lr_mul``, so every layer's effective weight starts at He scale while its
stored weight, the thing Adam updates, has unit scale: all layers then learn at the same speed,
``lr_mul`` times the optimiser's rate. Without ``equalized`` only ``lr_mul`` scales the weight
(stored divided by it, multiplied back at run time). The bias is stored divided by ``lr_mul`` too.

``linear`` and ``conv2d`` build these modules when their ``equalized`` or ``lr_mul`` params are
set, and the StyleGAN2 blocks (``blocks/stylegan.py``) are made of them.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from blocks.base import Block

GAIN = 1.0
"""The effective weight's scale over He's: 1, as in StyleGAN2, whose activations carry the sqrt(2)."""

LrMul = Annotated[float, Field(gt=0, le=10, description="learning-rate multiplier: the weight is stored divided "
                                                        "by it and multiplied back at run time (0.01 in "
                                                        "StyleGAN's mapping network)")]
Equalized = Annotated[bool, Field(description="equalised learning rate: weights stored at unit scale and scaled by "
                                              "1/sqrt(fan_in) at run time (StyleGAN)")]


def weight_gain(fan_in: int, equalized: bool, lr_mul: float) -> float:
    """What the stored weight is multiplied by at run time."""
    return (GAIN / math.sqrt(fan_in) if equalized else 1.0) * lr_mul


def reset_scaled(weight: torch.Tensor, bias: torch.Tensor | None, equalized: bool, lr_mul: float,
                 bias_init: float = 0.0) -> None:
    """Draw a scaled layer's stored weights: N(0, 1) when equalised, else torch's default
    (Kaiming-uniform), either divided by ``lr_mul``; the effective bias starts at ``bias_init``."""
    with torch.no_grad():
        if equalized:
            nn.init.normal_(weight)
        else:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # what nn.Linear and nn.Conv2d draw
        weight.div_(lr_mul)
        if bias is not None:
            bias.fill_(bias_init / lr_mul)


class EqualizedLinear(Block):
    """A linear layer whose weight is scaled at run time: y = x (W·gain)^T + b·lr_mul.
    ``bias_init``: the effective bias it starts with (1 for StyleGAN's styles)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, equalized: bool = True,
                 lr_mul: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.equalized, self.lr_mul, self.bias_init = equalized, lr_mul, bias_init
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.weight_gain = weight_gain(in_features, equalized, lr_mul)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Stored weights at unit (equalised) or torch's scale, over lr_mul."""
        reset_scaled(self.weight, self.bias, self.equalized, self.lr_mul, self.bias_init)

    def extra_repr(self) -> str:
        """Sizes and scaling, as nn.Linear shows its sizes."""
        out_features, in_features = self.weight.shape
        return f"{in_features}, {out_features}, equalized={self.equalized}, lr_mul={self.lr_mul}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, …, in_features) -> (N, …, out_features)."""
        bias = None if self.bias is None else self.bias * self.lr_mul
        return F.linear(x, self.weight * self.weight_gain, bias)


class EqualizedConv2d(Block):
    """A 2-D convolution whose weight is scaled at run time (fan_in = in_channels/groups · kh · kw)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] | str = (0, 0),
                 dilation: tuple[int, int] = (1, 1), groups: int = 1, bias: bool = True, equalized: bool = True,
                 lr_mul: float = 1.0):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.equalized, self.lr_mul = equalized, lr_mul
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.weight_gain = weight_gain(in_channels // groups * kernel_size[0] * kernel_size[1], equalized, lr_mul)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Stored weights at unit (equalised) or torch's scale, over lr_mul."""
        reset_scaled(self.weight, self.bias, self.equalized, self.lr_mul)

    def extra_repr(self) -> str:
        """Sizes, window and scaling, as nn.Conv2d shows them."""
        out_channels, in_per_group, *kernel = self.weight.shape
        return (f"{in_per_group * self.groups}, {out_channels}, kernel_size={tuple(kernel)}, stride={self.stride}, "
                f"padding={self.padding}, equalized={self.equalized}, lr_mul={self.lr_mul}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H', W')."""
        bias = None if self.bias is None else self.bias * self.lr_mul
        return F.conv2d(x, self.weight * self.weight_gain, bias, self.stride, self.padding, self.dilation,
                        self.groups)
