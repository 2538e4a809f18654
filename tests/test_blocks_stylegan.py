"""StyleGAN2 blocks and the equalised learning rate compute what the paper's equations say.

The registry tests (test_block_rules, test_codegen, test_onnx, test_onnx_import) check shapes,
gradients and exports of every block; these check the maths of each.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from block_strategies import single_block_doc
from torch import nn

import blocks
import graphcore as gc
import graphcore.interchange.build as m
from blocks.equalized import GAIN, EqualizedConv2d, EqualizedLinear


def build(type_id: str, inputs: dict, **params) -> nn.Module:
    spec = blocks.get(type_id)
    return spec.build(spec.params.model_validate(params), inputs)


def randomised(module: nn.Module) -> nn.Module:
    """Every parameter random, so that no check passes by a zero or a one."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


# ----------------------------------------------------------------------------- modulated conv
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("upsample", [False, True])
def test_a_modulated_conv_is_a_plain_conv_with_each_samples_modulated_weight(demodulate, upsample):
    conv = randomised(build("modulated_conv2d", {"in": (4, 6, 5), "w": (7,)}, out_channels=3,
                            demodulate=demodulate, upsample=upsample))
    x, w = torch.randn(3, 4, 6, 5), torch.randn(3, 7)
    with torch.no_grad():
        out = conv(x, w)
        for i in range(3):
            styles = conv.affine.weight @ w[i] / math.sqrt(7) + conv.affine.bias  # the equalised affine map
            weight = conv.weight / math.sqrt(4 * 3 * 3) * styles[None, :, None, None]  # (O, I, k, k)
            if demodulate:
                weight = weight / weight.square().sum(dim=(1, 2, 3), keepdim=True).sqrt()
            xi = F.interpolate(x[i:i + 1], scale_factor=2.0, mode="bilinear") if upsample else x[i:i + 1]
            torch.testing.assert_close(out[i:i + 1], F.conv2d(xi, weight, conv.bias, padding=1),
                                       rtol=1e-4, atol=1e-5)


def test_demodulation_gives_unit_variance_outputs_on_unit_variance_inputs():
    torch.manual_seed(0)
    conv = build("modulated_conv2d", {"in": (64, 32, 32), "w": (16,)}, out_channels=32)
    with torch.no_grad():
        conv.affine.weight.normal_(0, 3)  # styles far from 1: the variance must still come out 1
        out = conv(torch.randn(8, 64, 32, 32), torch.randn(8, 16))[:, :, 1:-1, 1:-1]  # inside the zero padding
    per_channel = out.var(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.ones(32), atol=0.1), per_channel


def test_to_rgb_adds_the_up_sampled_skip_and_refuses_one_of_the_wrong_size():
    rgb = randomised(build("to_rgb", {"in": (8, 8, 8), "w": (6,), "skip": (3, 4, 4)}))
    x, w, skip = torch.randn(2, 8, 8, 8), torch.randn(2, 6), torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(rgb(x, w, skip=skip), rgb(x, w) + F.interpolate(skip, scale_factor=2.0,
                                                                                   mode="bilinear"))
    spec = blocks.get("to_rgb")
    doc = single_block_doc(spec, {}, {"in": (8, 8, 8), "w": (6,), "skip": (3, 8, 8)}, spec.input_ports(spec.params()))
    problems = [d for d in gc.validate(doc) if d.severity == "error"]
    assert [(d.node_id, d.port) for d in problems] == [("block", "skip")]
    assert "skip is (3, 8, 8)" in problems[0].message


# ----------------------------------------------------------------------------- equalised learning rate
@pytest.mark.parametrize("equalized,lr_mul", [(True, 1.0), (True, 0.01), (False, 0.5)])
def test_the_effective_weight_is_weight_times_gain_over_sqrt_fan_in_times_lr_mul(equalized, lr_mul):
    linear = randomised(build("linear", {"in": (12,)}, out_features=5, equalized=equalized, lr_mul=lr_mul))
    conv = randomised(build("conv2d", {"in": (4, 6, 6)}, out_channels=3, padding=1, equalized=equalized,
                            lr_mul=lr_mul))
    assert isinstance(linear, EqualizedLinear) and isinstance(conv, EqualizedConv2d)
    scale = (lambda fan_in: GAIN / math.sqrt(fan_in) * lr_mul) if equalized else (lambda fan_in: lr_mul)
    x, image = torch.randn(2, 12), torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(linear(x), F.linear(x, linear.weight * scale(12), linear.bias * lr_mul))
        torch.testing.assert_close(conv(image), F.conv2d(image, conv.weight * scale(4 * 3 * 3), conv.bias * lr_mul,
                                                         padding=1))


def test_an_equalised_layer_stores_unit_weights_over_lr_mul_and_learns_lr_mul_times_as_fast():
    torch.manual_seed(0)
    layer = build("linear", {"in": (400,)}, out_features=300, equalized=True, lr_mul=0.01)
    assert layer.weight.std().item() == pytest.approx(100, rel=0.02)  # N(0, 1) / lr_mul
    assert (layer.weight * layer.weight_gain).std().item() == pytest.approx(1 / math.sqrt(400), rel=0.02)
    assert not layer.bias.any()


def test_plain_linear_and_conv2d_params_still_build_torchs_own_layers():
    assert type(build("linear", {"in": (12,)})) is nn.Linear
    assert type(build("conv2d", {"in": (3, 8, 8)})) is nn.Conv2d


def test_the_builder_takes_lr_mul_and_equalized_and_leaves_plain_layers_as_they_were():
    model = m.Model(m.seq(
        m.conv(1, 4, equalized=True),
        m.flatten(),
        m.fc(4 * 8 * 8, 16, actv="lrelu", equalized=True, lr_mul=0.01),
        m.fc(16, 2),
    ), input_shape=(1, 8, 8))
    doc = model.graph()
    params = {n.type + str(i): n.params for i, n in enumerate(doc.nodes) if n.type in ("conv2d", "linear")}
    assert params == {
        "conv2d1": {"out_channels": 4, "kernel_size": 3, "stride": 1, "padding": 1, "bias": True, "equalized": True},
        "linear3": {"out_features": 16, "bias": True, "equalized": True, "lr_mul": 0.01},
        "linear5": {"out_features": 2, "bias": True},
    }
    net = model.init(seed=0)
    assert [type(mod).__name__ for mod in net.modules() if type(mod).__name__.endswith(("Linear", "Conv2d"))] == \
        ["EqualizedConv2d", "EqualizedLinear", "Linear"]
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 2)


def test_a_bad_lr_mul_is_refused_naming_the_node():
    with pytest.raises(gc.GraphError, match="node 'linear': param 'lr_mul' = 0.0 is not valid: input should be "
                                            "greater than 0"):
        m.Model(m.fc(4, 2, lr_mul=0.0), input_shape=(4,)).graph()


# ----------------------------------------------------------------------------- the other blocks
def test_noise_is_fresh_on_every_call_in_inference_too_and_fixed_in_const_mode():
    random, const = (randomised(build("noise_injection", {"in": (2, 5, 5)}, mode=mode)).eval()
                     for mode in ("random", "const"))
    x = torch.randn(3, 2, 5, 5)
    with torch.no_grad():
        assert not torch.equal(random(x), random(x))
        assert torch.equal(const(x), const(x))
        torch.testing.assert_close(const(x), x + const.noise_const * const.strength)
        assert torch.equal(build("noise_injection", {"in": (2, 5, 5)}, mode="none")(x), x)
    fresh = build("noise_injection", {"in": (2, 5, 5)})
    assert fresh.strength.item() == 0  # StyleGAN2 starts every layer without noise


def test_a_seeded_init_draws_the_same_constant_noise():
    doc = single_block_doc(blocks.get("noise_injection"), {"mode": "const"}, {"in": (2, 4, 4)},
                           blocks.get("noise_injection").inputs)
    first, second = (gc.compile(doc).init(seed=3) for _ in range(2))
    assert torch.equal(first.state_dict()["block.noise_const"], second.state_dict()["block.noise_const"])


def test_mapping_normalises_z_and_multiplies_the_learning_rate():
    mapping = build("mapping", {"in": (16,)}, out_features=8, num_layers=3)
    assert len(mapping.layers) == 3 and all(layer.lr_mul == 0.01 for layer in mapping.layers)
    z = torch.randn(4, 16)
    with torch.no_grad():
        assert torch.allclose(mapping(z), mapping(z * 7.0), atol=1e-5)  # pixel norm: the scale of z is lost


def test_const_input_gives_every_sample_the_same_learned_tensor():
    const = build("const_input", {"in": (6,)}, channels=3, height=4, width=4)
    out = const(torch.randn(5, 6))
    assert out.shape == (5, 3, 4, 4) and all(torch.equal(o, const.const) for o in out)


def test_minibatch_std_appends_the_std_over_each_group():
    std = build("minibatch_std", {"in": (3, 2, 2)}, group_size=2)
    x = torch.randn(4, 3, 2, 2)
    out = std(x)
    assert torch.equal(out[:, :3], x)
    for i in range(4):  # sample i is in the group of i mod 2 (reshape (G, N/G, ...))
        group = x[[i % 2, i % 2 + 2]]
        assert torch.allclose(out[i, 3], (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean().expand(2, 2))
    with pytest.raises(ValueError, match="a batch of 5 does not split into groups of 2"):
        std(torch.randn(5, 3, 2, 2))


def test_a_stylegan_block_doubles_the_size_and_a_disc_block_halves_it():
    block = build("stylegan_block", {"in": (4, 4, 4), "w": (6,)}, out_channels=3)
    image = block(torch.randn(2, 4, 4, 4), torch.randn(2, 6))
    assert image.shape == (2, 3, 8, 8)
    disc = build("disc_block", {"in": (3, 8, 8)}, out_channels=5)
    assert disc(image).shape == (2, 5, 4, 4)
