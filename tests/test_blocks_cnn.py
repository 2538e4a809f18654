"""What the CNN composite blocks compute, beyond their shapes (tests/test_block_rules.py covers those)."""

import pytest
import torch
from torch import nn

import blocks
from blocks.conv_blocks import ConvBnAct, DwSeparableConv
from blocks.inception import Inception
from blocks.residual import ResidualBasic, ResidualBottleneck, ResidualPreact, SqueezeExcite, VggBlock


def build(type_id: str, in_shape: tuple[int, ...], **params) -> nn.Module:
    spec = blocks.get(type_id)
    return spec.build(spec.params.model_validate(params), {"in": in_shape})


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_identity_shortcut_passes_the_input_when_the_residual_branch_is_silenced():
    x = torch.randn(2, 8, 6, 6)
    basic = build("residual_basic", (8, 6, 6), out_channels=8).eval()
    bottleneck = build("residual_bottleneck", (8, 6, 6), bottleneck_channels=2, out_channels=8).eval()
    assert basic.downsample is None and bottleneck.downsample is None
    with torch.no_grad():
        basic.bn2.weight.zero_()
        basic.bn2.bias.zero_()
        bottleneck.bn3.weight.zero_()
        bottleneck.bn3.bias.zero_()
        assert torch.equal(basic(x), torch.relu(x))  # ReLU after the add
        assert torch.equal(bottleneck(x), torch.relu(x))


def test_preact_block_adds_without_a_final_activation():
    x = torch.randn(2, 4, 5, 5)
    block = build("residual_preact", (4, 5, 5), out_channels=4)
    with torch.no_grad():
        block.conv2.weight.zero_()
        assert torch.equal(block(x), x)


def test_downsample_is_a_strided_1x1_conv_with_batch_norm_as_in_torchvision():
    block = build("residual_basic", (64, 56, 56), out_channels=128, stride=2)
    conv, bn = block.downsample
    assert (conv.kernel_size, conv.stride, conv.bias) == ((1, 1), (2, 2), None)
    assert isinstance(bn, nn.BatchNorm2d)
    # torchvision's layer2.0 of ResNet-18: 2 convs + 2 BNs + the 1x1 shortcut and its BN.
    assert n_params(block) == 64 * 128 * 9 + 128 * 128 * 9 + 64 * 128 + 3 * 2 * 128
    bottleneck = build("residual_bottleneck", (256, 56, 56), bottleneck_channels=128, out_channels=512, stride=2)
    assert bottleneck.conv2.stride == (2, 2) and bottleneck.conv1.stride == (1, 1)  # v1.5: stride on the 3x3


def test_squeeze_excite_scales_channels_by_the_gate():
    x = torch.randn(2, 16, 3, 3)
    se = build("squeeze_excite", (16, 3, 3), reduction=4)
    assert se.fc1.out_features == 4
    with torch.no_grad():
        se.fc2.weight.zero_()
        se.fc2.bias.fill_(torch.logit(torch.tensor(0.25)).item())
        assert torch.allclose(se(x), 0.25 * x)


def test_conv_bn_act_pads_to_keep_the_size_and_has_a_bias_only_without_a_norm():
    block = build("conv_bn_act", (3, 10, 10), out_channels=5, kernel_size=5, dilation=2)
    assert block.conv.padding == (4, 4) and block.conv.bias is None
    assert block(torch.randn(2, 3, 10, 10)).shape == (2, 5, 10, 10)
    plain = build("conv_bn_act", (3, 10, 10), out_channels=5, norm="none", act="none")
    assert plain.conv.bias is not None and n_params(plain) == 3 * 5 * 9 + 5
    x = torch.randn(2, 3, 10, 10)
    assert torch.equal(plain(x), plain.conv(x))
    assert isinstance(build("conv_bn_act", (3, 8, 8), norm="group", num_groups=4).norm, nn.GroupNorm)


def test_dw_separable_conv_is_depthwise_then_pointwise():
    block = build("dw_separable_conv", (32, 112, 112), out_channels=64)
    assert block.depthwise.conv.groups == 32 and block.depthwise.conv.weight.shape == (32, 1, 3, 3)
    assert block.pointwise.conv.weight.shape == (64, 32, 1, 1)
    assert n_params(block) == 32 * 9 + 2 * 32 + 32 * 64 + 2 * 64


def test_vgg_block_convs_then_halves_the_size():
    block = build("vgg_block", (3, 8, 8), out_channels=4, num_convs=3)
    assert sum(isinstance(m, nn.Conv2d) for m in block.modules()) == 3
    assert block(torch.randn(1, 3, 8, 8)).shape == (1, 4, 4, 4)


def test_inception_matches_torchvision_inception_3a():
    block = build("inception", (192, 28, 28))  # defaults are GoogLeNet's inception3a
    # torchvision's inception3a, branch by branch: conv weights + BN scale and shift; the '5x5'
    # branch has a 3x3 kernel there (a true 5x5 would give 16 * 32 * 25 weights).
    branch1 = 192 * 64 + 2 * 64
    branch2 = 192 * 96 + 2 * 96 + 96 * 128 * 9 + 2 * 128
    branch3 = 192 * 16 + 2 * 16 + 16 * 32 * 9 + 2 * 32
    branch4 = 192 * 32 + 2 * 32
    assert n_params(block) == branch1 + branch2 + branch3 + branch4 == 155_872
    assert block.branch3[1].conv.kernel_size == (3, 3)
    assert all(m.eps == 0.001 for m in block.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("cls, args", [
    (ConvBnAct, (3, 4, 3, 1, 1)), (DwSeparableConv, (4, 8)), (ResidualBasic, (4, 8, 2)),
    (ResidualBottleneck, (4, 2, 8, 1, 2)), (ResidualPreact, (4, 4)), (SqueezeExcite, (8, 2)),
    (VggBlock, (3, 4, 2)), (Inception, (8, 2, 2, 4, 2, 4, 2)),
])
def test_blocks_record_plain_constructor_args_for_code_export(cls, args):
    block = cls(*args)
    plain = (int, float, bool, str, type(None), tuple, list)
    assert all(isinstance(v, plain) for v in block.init_kwargs.values())
    clone = cls(**block.init_kwargs)
    assert [p.shape for p in clone.parameters()] == [p.shape for p in block.parameters()]
