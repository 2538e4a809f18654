"""StyleGAN2 blocks (Karras et al., 2020, "Analyzing and Improving the Image Quality of StyleGAN").

Generator: ``mapping`` turns a latent z into a style vector w; ``const_input`` is the learned
4x4 start; each ``stylegan_block`` doubles the size with two modulated 3x3 convs (the style
scales each input channel of the weight, demodulation brings each output back to unit
variance), each followed by per-pixel noise and a leaky ReLU; ``to_rgb`` (a modulated 1x1 conv)
turns the features of each size into an image, summed with the up-sampled image of the size
before (the "skip" generator). Discriminator: residual ``disc_block``s halve the size, and
``minibatch_std`` appends the standard deviation over a group of samples as a feature, so the
discriminator sees a lack of variety.

Every weight is equalised (``blocks/equalized.py``). Up- and down-sampling are bilinear and
2x2 average pooling, where the paper uses a 4-tap FIR filter.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from blocks.base import Block
from blocks.equalized import EqualizedConv2d, EqualizedLinear, LrMul
from blocks.rules import PosInt, expect_rank
from blocks.shapes import shape_text
from blocks.spec import BlockSpec, Example, Params, Port, Shape, ShapeError, register

NoiseMode = Annotated[Literal["random", "const", "none"], Field(
    description="per-pixel noise: fresh each call ('random', StyleGAN's own), a fixed draw kept with the "
                "weights ('const': the same image every time) or none")]


# ----------------------------------------------------------------------------- helpers
def lrelu_gain(x: torch.Tensor) -> torch.Tensor:
    """StyleGAN's activation: leaky ReLU (slope 0.2) times sqrt(2), which keeps unit variance."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Each sample scaled to unit mean square over dim 1."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


def demod_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / the norm of each sample's modulated filter: weight (O, I, k, k), styles (N, I) -> (N, O)."""
    return torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)


# fx.wrap: torch.fx (BN fusion before an ONNX export) records a call of this function rather
# than tracing into it, where the ONNX test below would be decided once, at trace time.
@torch.fx.wrap
def modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                   padding: int) -> torch.Tensor:
    """x (N, I, H, W) through weight (O, I, k, k) scaled per sample by styles (N, I) on the input
    channels (and demodulated): one grouped conv with a filter per sample -> (N, O, H, W)."""
    if torch.onnx.is_in_onnx_export():
        # ONNX keeps a conv's groups as a constant, which would fix the batch size: the file
        # computes the same with the styles on the activations and one shared filter.
        out = F.conv2d(x * styles[:, :, None, None], weight, padding=padding)  # (N, O, H, W)
        return out * demod_coefficients(weight, styles)[:, :, None, None] if demodulate else out
    n = x.shape[0]
    filters = weight[None] * styles[:, None, :, None, None]  # (N, O, I, k, k)
    if demodulate:
        filters = filters * demod_coefficients(weight, styles)[:, :, None, None, None]
    out = F.conv2d(x.reshape(1, -1, x.shape[2], x.shape[3]), filters.flatten(0, 1), padding=padding,
                   groups=n)  # (1, N·O, H, W)
    return out.reshape(n, -1, out.shape[2], out.shape[3])  # (N, O, H, W)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 2H, 2W), bilinear."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------- modules
class Mapping(Block):
    """z -> w: pixel norm, then ``num_layers`` equalised linears (learning rate times ``lr_mul``),
    each followed by the leaky ReLU."""

    def __init__(self, in_features: int, out_features: int, num_layers: int = 8, lr_mul: float = 0.01,
                 normalize: bool = True):
        super().__init__()
        self.normalize = normalize
        self.layers = nn.ModuleList(
            EqualizedLinear(in_features if i == 0 else out_features, out_features, lr_mul=lr_mul)
            for i in range(num_layers)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, Z) -> (N, W)."""
        x = pixel_norm(z) if self.normalize else z  # (N, Z)
        for layer in self.layers:
            x = lrelu_gain(layer(x))  # (N, W)
        return x


class ConstInput(Block):
    """A learned (C, H, W) tensor, the same for every sample; the input gives only the batch size."""

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        self.const = nn.Parameter(torch.empty(channels, height, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 1), as StyleGAN2."""
        nn.init.normal_(self.const)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, …) -> (N, C, H, W)."""
        return self.const.repeat(x.shape[0], 1, 1, 1)  # (N, C, H, W)


class ModulatedConv2d(Block):
    """A conv whose weight each sample's style scales per input channel (an equalised affine map of
    w), then, with ``demodulate``, per output channel to unit norm; 'same' padding, optionally after
    a 2x up-sampling. Computed as one grouped conv with a filter per sample."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 3,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel_size // 2
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Unit-scale weights and zero bias."""
        nn.init.normal_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W), style (N, W_dim) -> (N, C_out, H, W), or (N, C_out, 2H, 2W) up-sampling."""
        styles = self.affine(w)  # (N, C_in)
        weight = self.weight * self.weight_gain  # (C_out, C_in, k, k)
        if self.upsample:
            x = upsample2x(x)  # (N, C_in, 2H, 2W)
        out = modulated_conv(x, weight, styles, self.demodulate, self.padding)  # (N, C_out, H, W)
        return out + self.bias[None, :, None, None]


class NoiseInjection(Block):
    """Adds Gaussian noise, one value per pixel shared by the channels, times a learned strength
    (one per layer, starting at 0). ``mode``: fresh noise on every call, training or not
    ('random'), a draw kept as a buffer ('const') or none."""

    noise_const: torch.Tensor

    def __init__(self, height: int, width: int, mode: str = "random"):
        super().__init__()
        self.mode = mode
        self.strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.empty(height, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Strength 0 and a new fixed draw."""
        nn.init.zeros_(self.strength)
        nn.init.normal_(self.noise_const)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        if self.mode == "none":
            return x
        noise = self.noise_const if self.mode == "const" else torch.randn_like(x[:, :1])  # (H, W) or (N, 1, H, W)
        return x + noise * self.strength


class ToRGB(Block):
    """A modulated 1x1 conv without demodulation to ``out_channels`` colours, plus the image of
    the size before (``skip``), up-sampled 2x."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, w_dim, kernel_size=1, demodulate=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, H, W), style (N, W_dim), skip (N, C_rgb, H/2, W/2) -> (N, C_rgb, H, W)."""
        rgb = self.conv(x, w)  # (N, C_rgb, H, W)
        return rgb if skip is None else rgb + upsample2x(skip)


class StyleGANBlock(Block):
    """The synthesis block: two modulated 3x3 convs (the first up-sampling 2x), each followed by
    noise and the leaky ReLU; both take the same style."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, height: int, width: int,
                 upsample: bool = True, noise: str = "random"):
        super().__init__()
        self.conv0 = ModulatedConv2d(in_channels, out_channels, w_dim, upsample=upsample)
        self.noise0 = NoiseInjection(height, width, noise)
        self.conv1 = ModulatedConv2d(out_channels, out_channels, w_dim)
        self.noise1 = NoiseInjection(height, width, noise)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(N, C_in, h, w), style (N, W_dim) -> (N, C_out, H, W) (H = 2h when up-sampling)."""
        x = lrelu_gain(self.noise0(self.conv0(x, w)))  # (N, C_out, H, W)
        return lrelu_gain(self.noise1(self.conv1(x, w)))  # (N, C_out, H, W)


class MinibatchStd(Block):
    """Appends ``num_channels`` features: the standard deviation of each feature over a group of
    ``group_size`` samples (0: the whole batch), averaged over the channels and pixels."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C + F, H, W)."""
        n, c, h, w = x.shape
        g = n if self.group_size == 0 else min(self.group_size, n)
        if n % g:
            raise ValueError(f"minibatch_std: a batch of {n} does not split into groups of {g}")
        y = x.reshape(g, -1, self.num_channels, c // self.num_channels, h, w)  # (G, N/G, F, C/F, H, W)
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # (N/G, F, C/F, H, W): each group's variance
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (N/G, F)
        y = y.reshape(-1, self.num_channels, 1, 1).repeat(g, 1, h, w)  # (N, F, H, W): sample i has group i mod N/G
        return torch.cat([x, y], dim=1)  # (N, C + F, H, W)


class DiscBlock(Block):
    """The residual discriminator block: 3x3 conv, 3x3 conv to ``out_channels``, 2x2 average pool,
    plus a pooled 1x1 conv shortcut; the sum over sqrt(2) keeps unit variance."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, (3, 3), padding=(1, 1))
        self.conv1 = EqualizedConv2d(in_channels, out_channels, (3, 3), padding=(1, 1))
        self.skip = EqualizedConv2d(in_channels, out_channels, (1, 1), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H/2, W/2)."""
        h = lrelu_gain(self.conv0(x))  # (N, C_in, H, W)
        h = F.avg_pool2d(lrelu_gain(self.conv1(h)), 2)  # (N, C_out, H/2, W/2)
        return (h + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)  # (N, C_out, H/2, W/2)


# ----------------------------------------------------------------------------- shape rules
def _image(ins: dict[str, Shape], port: str = "in") -> Shape:
    return expect_rank(ins[port], 3, "(C, H, W)", port=port)


def _style(ins: dict[str, Shape]) -> int:
    return expect_rank(ins["w"], 1, "(W,)", port="w")[0]


def _doubled(size: tuple[int, int], up: bool) -> tuple[int, int]:
    return (2 * size[0], 2 * size[1]) if up else size


# ----------------------------------------------------------------------------- mapping
class MappingParams(Params):
    """Params of mapping."""

    out_features: PosInt = Field(512, description="width of the style vector w")
    num_layers: int = Field(8, ge=1, le=16, description="linear layers")
    lr_mul: LrMul = 0.01
    normalize: bool = Field(True, description="scale z to unit mean square first (pixel norm)")


def _mapping_shape(p: MappingParams, ins: dict[str, Shape]) -> Shape:
    expect_rank(ins["in"], 1, "(Z,)")
    return (p.out_features,)


def _mapping_macs(p: MappingParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    return ins["in"][0] * p.out_features + (p.num_layers - 1) * p.out_features ** 2


register(BlockSpec(
    type="mapping",
    category="gan",
    doc="StyleGAN's mapping network z (Z,) -> w (W,): pixel norm, then equalised linears with a "
        "learning-rate multiplier, each with a leaky ReLU.",
    params=MappingParams,
    shape=_mapping_shape,
    build=lambda p, ins: Mapping(ins["in"][0], p.out_features, p.num_layers, p.lr_mul, p.normalize),
    macs=_mapping_macs,
    examples=(Example({"in": (16,)}, {"out_features": 8, "num_layers": 2}),
              Example({"in": (4,)}, {"out_features": 6, "num_layers": 1, "normalize": False, "lr_mul": 1.0})),
))


# ----------------------------------------------------------------------------- const_input
class ConstInputParams(Params):
    """Params of const_input."""

    channels: PosInt = Field(512, description="channels of the learned constant")
    height: PosInt = Field(4, description="its height")
    width: PosInt = Field(4, description="its width")


register(BlockSpec(
    type="const_input",
    category="gan",
    doc="A learned constant (C, H, W), the same for every sample (StyleGAN's start); its input, "
        "w for one, only gives the batch size.",
    params=ConstInputParams,
    inputs=(Port("in", dtype="any", batch_only=True),),
    shape=lambda p, ins: (p.channels, p.height, p.width),
    build=lambda p, ins: ConstInput(p.channels, p.height, p.width),
    examples=(Example({"in": (8,)}, {"channels": 4}), Example({"in": (2, 3, 3)}, {"channels": 3, "width": 2})),
))


# ----------------------------------------------------------------------------- modulated_conv2d
class ModulatedConvParams(Params):
    """Params of modulated_conv2d."""

    out_channels: PosInt = Field(64, description="number of output channels")
    kernel_size: int = Field(3, ge=1, le=7, description="window size (odd: 'same' padding keeps the size)")
    demodulate: bool = Field(True, description="scale each sample's filters back to unit norm")
    upsample: bool = Field(False, description="up-sample the input 2x (bilinear) first")


def _modconv_shape(p: ModulatedConvParams, ins: dict[str, Shape]) -> Shape:
    _, *size = _image(ins)
    _style(ins)
    if p.kernel_size % 2 == 0:
        raise ShapeError(f"kernel_size must be odd, got {p.kernel_size}", hint="use 1, 3, 5 or 7")
    return (p.out_channels, *_doubled((size[0], size[1]), p.upsample))


def _modconv_macs(p: ModulatedConvParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    affine = ins["w"][0] * ins["in"][0]
    return affine + math.prod(outs["out"]) * ins["in"][0] * p.kernel_size ** 2


register(BlockSpec(
    type="modulated_conv2d",
    category="gan",
    doc="StyleGAN2's modulated conv: the style w scales the weight per input channel, demodulation "
        "brings each output channel to unit variance; optionally up-samples 2x first.",
    params=ModulatedConvParams,
    inputs=(Port("in"), Port("w")),
    shape=_modconv_shape,
    build=lambda p, ins: ModulatedConv2d(ins["in"][0], p.out_channels, ins["w"][0], p.kernel_size, p.demodulate,
                                         p.upsample),
    macs=_modconv_macs,
    examples=(Example({"in": (4, 6, 6), "w": (5,)}, {"out_channels": 3}),
              Example({"in": (3, 4, 5), "w": (2,)}, {"out_channels": 2, "upsample": True, "demodulate": False}),
              Example({"in": (2, 5, 5), "w": (3,)}, {"out_channels": 4, "kernel_size": 1})),
))


# ----------------------------------------------------------------------------- noise_injection
class NoiseParams(Params):
    """Params of noise_injection."""

    mode: NoiseMode = "random"


register(BlockSpec(
    type="noise_injection",
    category="gan",
    doc="Adds per-pixel Gaussian noise times a learned strength (StyleGAN), in training and inference.",
    params=NoiseParams,
    shape=lambda p, ins: _image(ins),
    build=lambda p, ins: NoiseInjection(ins["in"][1], ins["in"][2], p.mode),
    # 'const': the registry's tests compare runs, which fresh noise would not repeat.
    examples=(Example({"in": (4, 6, 6)}, {"mode": "const"}), Example({"in": (2, 3, 5)}, {"mode": "const"})),
))


# ----------------------------------------------------------------------------- to_rgb
class ToRgbParams(Params):
    """Params of to_rgb."""

    out_channels: PosInt = Field(3, description="colour channels of the image")


def _to_rgb_shape(p: ToRgbParams, ins: dict[str, Shape]) -> Shape:
    _, h, w = _image(ins)
    _style(ins)
    if "skip" in ins:
        if h % 2 or w % 2:
            raise ShapeError(f"an input of {h}x{w} has no half-size image for the skip",
                             hint="use even H and W, or leave skip unconnected", port="skip")
        half = (p.out_channels, h // 2, w // 2)
        if _image(ins, "skip") != half:
            raise ShapeError(f"skip is {shape_text(ins['skip'])}, but the image of the size before is "
                             f"{shape_text(half)}", hint="connect the to_rgb of the previous (half-size) block",
                             port="skip")
    return (p.out_channels, h, w)


register(BlockSpec(
    type="to_rgb",
    category="gan",
    doc="StyleGAN2's toRGB: a modulated 1x1 conv (no demodulation) to an image, plus the up-sampled "
        "image of the previous block (skip).",
    params=ToRgbParams,
    inputs=(Port("in"), Port("w"), Port("skip", optional=True)),
    shape=_to_rgb_shape,
    build=lambda p, ins: ToRGB(ins["in"][0], p.out_channels, ins["w"][0]),
    macs=lambda p, ins, outs: ins["w"][0] * ins["in"][0] + math.prod(outs["out"]) * ins["in"][0],
    examples=(Example({"in": (8, 8, 8), "w": (6,), "skip": (3, 4, 4)}),
              Example({"in": (4, 4, 6), "w": (5,)}, {"out_channels": 1})),
))


# ----------------------------------------------------------------------------- stylegan_block
class StyleBlockParams(Params):
    """Params of stylegan_block."""

    out_channels: PosInt = Field(64, description="channels after the block")
    upsample: bool = Field(True, description="double H and W (in the first conv)")
    noise: NoiseMode = "random"


def _style_block_shape(p: StyleBlockParams, ins: dict[str, Shape]) -> Shape:
    _, h, w = _image(ins)
    _style(ins)
    return (p.out_channels, *_doubled((h, w), p.upsample))


def _style_block_build(p: StyleBlockParams, ins: dict[str, Shape]) -> nn.Module:
    h, w = _doubled((ins["in"][1], ins["in"][2]), p.upsample)
    return StyleGANBlock(ins["in"][0], p.out_channels, ins["w"][0], h, w, p.upsample, p.noise)


def _style_block_macs(p: StyleBlockParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    affines = ins["w"][0] * (ins["in"][0] + p.out_channels)
    return affines + math.prod(outs["out"]) * 9 * (ins["in"][0] + p.out_channels)


register(BlockSpec(
    type="stylegan_block",
    category="gan",
    doc="StyleGAN2's synthesis block: two modulated 3x3 convs (the first up-sampling 2x), each with "
        "noise and a leaky ReLU, styled by w.",
    params=StyleBlockParams,
    inputs=(Port("in"), Port("w")),
    shape=_style_block_shape,
    build=_style_block_build,
    macs=_style_block_macs,
    examples=(Example({"in": (4, 4, 4), "w": (6,)}, {"out_channels": 3, "noise": "const"}),
              Example({"in": (3, 5, 3), "w": (2,)}, {"out_channels": 2, "upsample": False, "noise": "none"})),
))


# ----------------------------------------------------------------------------- minibatch_std
class MinibatchStdParams(Params):
    """Params of minibatch_std."""

    group_size: int = Field(4, ge=0, le=64, description="samples per group (at most the batch; 0: the whole "
                                                        "batch); the batch must split into groups")
    num_channels: PosInt = Field(1, description="features appended, each over its share of the channels")


def _minibatch_std_shape(p: MinibatchStdParams, ins: dict[str, Shape]) -> Shape:
    c, h, w = _image(ins)
    if c % p.num_channels:
        raise ShapeError(f"{c} channels do not split into num_channels={p.num_channels} groups",
                         hint="pick num_channels that divides the channels")
    return (c + p.num_channels, h, w)


register(BlockSpec(
    type="minibatch_std",
    category="gan",
    doc="Appends the standard deviation of the features over a group of samples as channels "
        "(StyleGAN's discriminator), so that it sees a lack of variety.",
    params=MinibatchStdParams,
    shape=_minibatch_std_shape,
    build=lambda p, ins: MinibatchStd(p.group_size, p.num_channels),
    # The whole batch: ONNX files are checked at batch sizes that groups of 4 do not divide.
    examples=(Example({"in": (4, 4, 4)}, {"group_size": 0}),
              Example({"in": (6, 3, 2)}, {"group_size": 0, "num_channels": 2})),
))


# ----------------------------------------------------------------------------- disc_block
class DiscBlockParams(Params):
    """Params of disc_block."""

    out_channels: PosInt = Field(64, description="channels after the block")


def _disc_block_shape(p: DiscBlockParams, ins: dict[str, Shape]) -> Shape:
    _, h, w = _image(ins)
    if h < 2 or w < 2:
        raise ShapeError(f"cannot halve an input of {shape_text(ins['in'])}", hint="it needs H and W of 2 or more")
    return (p.out_channels, h // 2, w // 2)


def _disc_block_macs(p: DiscBlockParams, ins: dict[str, Shape], outs: dict[str, Shape]) -> int:
    c, h, w = ins["in"]
    return h * w * 9 * c * (c + p.out_channels) + math.prod(outs["out"]) * c


register(BlockSpec(
    type="disc_block",
    category="gan",
    doc="StyleGAN2's residual discriminator block: 3x3 conv, 3x3 conv, 2x2 average pool, plus a pooled "
        "1x1 conv shortcut; the sum over sqrt(2).",
    params=DiscBlockParams,
    shape=_disc_block_shape,
    build=lambda p, ins: DiscBlock(ins["in"][0], p.out_channels),
    macs=_disc_block_macs,
    examples=(Example({"in": (3, 8, 8)}, {"out_channels": 4}), Example({"in": (2, 5, 7)}, {"out_channels": 3})),
))
