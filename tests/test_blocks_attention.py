"""The attention, U-Net and video blocks compute what their PyTorch counterparts compute.

(Shape rules, examples and gradients of every block are covered by test_block_rules.py.)
"""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import blocks

ATTENTION_BLOCKS = [
    "multihead_attention", "cross_attention", "ffn", "transformer_block", "patch_embed", "pos_embed", "token_select",
    "self_attention2d", "time_embedding", "unet_down", "unet_mid", "unet_up", "video_res_block",
    "temporal_attention", "spatial_attention",
]


def build(type_id: str, inputs: dict, **params) -> nn.Module:
    spec = blocks.get(type_id)
    return spec.build(spec.params.model_validate(params), inputs).eval()


def copy_into_torch_mha(ours: nn.Module, mha: nn.MultiheadAttention) -> None:
    attn = ours.attn if hasattr(ours, "attn") else ours
    with torch.no_grad():
        if mha._qkv_same_embed_dim:
            mha.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        else:
            mha.q_proj_weight.copy_(attn.q_proj.weight)
            mha.k_proj_weight.copy_(attn.k_proj.weight)
            mha.v_proj_weight.copy_(attn.v_proj.weight)
        mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        mha.out_proj.weight.copy_(attn.out_proj.weight)
        mha.out_proj.bias.copy_(attn.out_proj.bias)


def test_self_attention_equals_torch_multihead_attention():
    torch.manual_seed(0)
    ours = build("multihead_attention", {"in": (7, 16)}, num_heads=4)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    copy_into_torch_mha(ours, mha)
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(ours(x), mha(x, x, x, need_weights=False)[0])
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in mha.parameters())


def test_separate_q_k_v_equal_torch_multihead_attention_with_kdim_vdim():
    torch.manual_seed(0)
    ours = build("multihead_attention", {"q": (5, 8), "k": (9, 12), "v": (9, 6)}, num_heads=2, separate_inputs=True)
    mha = nn.MultiheadAttention(8, 2, kdim=12, vdim=6, batch_first=True).eval()
    copy_into_torch_mha(ours, mha)
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 9, 12), torch.randn(2, 9, 6)
    torch.testing.assert_close(ours(q, k, v), mha(q, k, v, need_weights=False)[0])


def test_transformer_block_equals_torch_pre_norm_encoder_layer():
    torch.manual_seed(0)
    ours = build("transformer_block", {"in": (6, 24)}, num_heads=3, mlp_ratio=2.0)
    ref = nn.TransformerEncoderLayer(24, 3, dim_feedforward=48, dropout=0.0, activation="gelu",
                                     layer_norm_eps=1e-6, batch_first=True, norm_first=True).eval()
    copy_into_torch_mha(ours, ref.self_attn)
    with torch.no_grad():
        for mine, theirs in ((ours.ln_1, ref.norm1), (ours.ln_2, ref.norm2),
                             (ours.mlp.fc1, ref.linear1), (ours.mlp.fc2, ref.linear2)):
            mine.weight.copy_(torch.randn_like(mine.weight))
            mine.bias.copy_(torch.randn_like(mine.bias))
            theirs.load_state_dict(mine.state_dict())
    x = torch.randn(2, 6, 24)
    torch.testing.assert_close(ours(x), ref(x))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_cross_attention_is_a_residual_around_attention_to_the_context():
    torch.manual_seed(0)
    ours = build("cross_attention", {"in": (4, 8), "context": (6, 10)}, num_heads=2)
    mha = nn.MultiheadAttention(8, 2, kdim=10, vdim=10, batch_first=True).eval()
    copy_into_torch_mha(ours, mha)
    x, context = torch.randn(2, 4, 8), torch.randn(2, 6, 10)
    normed = ours.norm(x)
    torch.testing.assert_close(ours(x, context), x + mha(normed, context, context, need_weights=False)[0])


def test_self_attention2d_attends_over_pixels():
    torch.manual_seed(0)
    ours = build("self_attention2d", {"in": (8, 3, 5)}, num_heads=2, num_groups=4)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    copy_into_torch_mha(ours, mha)
    x = torch.randn(2, 8, 3, 5)
    tokens = ours.norm(x).flatten(2).transpose(1, 2)  # (N, H·W, C)
    expected = x + mha(tokens, tokens, tokens, need_weights=False)[0].transpose(1, 2).reshape(2, 8, 3, 5)
    torch.testing.assert_close(ours(x), expected)


def test_temporal_attention_mixes_frames_but_not_pixels():
    torch.manual_seed(0)
    block = build("temporal_attention", {"in": (4, 5, 3, 3)}, num_groups=2)
    block.norm = nn.Identity()  # the norm's statistics span all pixels; test the attention alone
    x = torch.randn(1, 4, 5, 3, 3)
    changed = x.clone()
    changed[:, :, 2, 0, 0] += 1.0  # one pixel of one frame
    diff = (block(changed) - block(x)).abs().sum(dim=(0, 1))  # (T, H, W)
    assert (diff[:, 0, 0] > 0).all()  # every frame at that pixel sees it
    assert diff[:, 1:, :].sum() == 0 and diff[:, 0, 1:].sum() == 0


def test_spatial_attention_mixes_pixels_but_not_frames():
    torch.manual_seed(0)
    block = build("spatial_attention", {"in": (4, 5, 3, 3)}, num_groups=1)
    block.norm = nn.Identity()  # the norm's statistics span all frames; test the attention alone
    x = torch.randn(1, 4, 5, 3, 3)
    changed = x.clone()
    changed[:, :, 2, 0, 0] += 1.0
    diff = (block(changed) - block(x)).abs().sum(dim=(0, 1))  # (T, H, W)
    assert (diff[2] > 0).all() and diff[[0, 1, 3, 4]].sum() == 0


def test_time_embedding_takes_int_or_float_timesteps():
    block = build("time_embedding", {"in": ()}, dim=16)
    t = torch.tensor([0, 10, 999])
    out = block(t)
    assert out.shape == (3, 64)
    torch.testing.assert_close(out, block(t.float()))
    assert not torch.allclose(out[1], out[2])


@pytest.mark.parametrize("type_id", ATTENTION_BLOCKS)
def test_macs_equal_the_matmuls_and_convs_torch_counts(type_id):
    """Every projection, Q·Kᵀ, weights·V and conv, as torch's FlopCounterMode sees them (2 FLOPs per MAC)."""
    spec = blocks.get(type_id)
    for example in spec.examples:
        params = spec.params.model_validate(example.params)
        with torch.device("meta"):
            module = spec.build(params, example.inputs)
        args, kwargs = [], {}
        for port in spec.input_ports(params):
            if port.name in example.inputs:
                dtype = torch.long if port.dtype == "int" else torch.float
                tensor = torch.zeros((1, *example.inputs[port.name]), dtype=dtype, device="meta")
                if port.optional:
                    kwargs[port.name] = tensor
                else:
                    args.append(tensor)
        with FlopCounterMode(display=False) as counter:
            module(*args, **kwargs)
        outputs = spec.infer(params, example.inputs)
        assert spec.count_macs(params, example.inputs, outputs) == counter.get_total_flops() // 2, example
