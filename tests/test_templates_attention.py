"""The transformer, autoencoder and diffusion templates: each validates, compiles, runs at its
reference input and has its reference size; the U-Nets predict a tensor of the input's shape
and train; tools/make_attention_templates.py reproduces the committed files."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphcore as gc

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["vit_tiny", "vit_b16", "autoencoder", "unet_ddpm_small", "unet_ddpm32", "video_unet_small"]
UNETS = ["unet_ddpm_small", "unet_ddpm32", "video_unet_small"]
REFERENCE_PARAMS = {
    "vit_tiny": 5_717_416,  # timm vit_tiny_patch16_224
    "vit_b16": 86_567_656,  # torchvision vit_b_16
}


def load_generator():
    spec = importlib.util.spec_from_file_location("make_attention_templates",
                                                  ROOT / "tools" / "make_attention_templates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_inputs(doc: gc.GraphDoc, batch: int = 2, device: str = "cpu") -> list[torch.Tensor]:
    """One tensor per input node: images/clips from N(0, 1), timesteps as int64 in [0, 1000)."""
    out = []
    for node in doc.nodes:
        if node.type != "input":
            continue
        if node.params.get("dtype") == "int64":
            out.append(torch.randint(0, 1000, (batch, *node.params["shape"]), device=device))
        else:
            out.append(torch.randn(batch, *node.params["shape"], device=device))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_template_validates_and_runs_on_meta(name):
    doc = gc.template(name)
    assert gc.validate(doc) == []
    with torch.device("meta"):
        model = gc.compile(doc)
    out = model(*reference_inputs(doc, device="meta"))
    (final,) = [node.id for node in doc.nodes if node.type == "output"]
    (last_src,) = [e.src for e in doc.edges if e.dst == final]
    assert (None, *out.shape[1:]) == gc.infer_shapes(doc)[(last_src, "out")]
    assert out.shape[0] == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if n != "vit_b16"])  # vit_b16 runs on meta only
def test_template_forward_on_cpu_is_finite(name):
    doc = gc.template(name)
    model = gc.compile(doc).init(seed=0).eval()
    with torch.no_grad():
        out = model(*reference_inputs(doc, batch=1))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_vit_parameter_counts_equal_the_reference(name):
    doc = gc.template(name)
    with torch.device("meta"):
        model = gc.compile(doc)
    assert gc.summary(doc).total_params == REFERENCE_PARAMS[name]
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[name]


def test_vit_b16_macs_equal_torchvision_figure():
    # torchvision lists ViT-B/16 at 17.56 "GFLOPS", counted by fvcore as multiply-accumulates.
    assert gc.summary(gc.template("vit_b16")).total_macs / 1e9 == pytest.approx(17.56, rel=0.01)


@pytest.mark.parametrize("name", UNETS)
def test_unet_predicts_noise_of_the_input_shape(name):
    doc = gc.template(name)
    x_shape = next(n.params["shape"] for n in doc.nodes if n.type == "input" and n.id == "x")
    with torch.device("meta"):
        model = gc.compile(doc)
    out = model(*reference_inputs(doc, batch=3, device="meta"))
    assert tuple(out.shape) == (3, *x_shape)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet_ddpm_small", "video_unet_small"])
def test_unet_trains_one_step(name):
    """One epsilon-prediction step (linear beta schedule): finite loss, every weight gets a gradient."""
    torch.manual_seed(0)
    doc = gc.template(name)
    model = gc.compile(doc).init(seed=0)
    x0 = torch.rand(4, *next(n.params["shape"] for n in doc.nodes if n.id == "x")) * 2 - 1
    t = torch.randint(0, 1000, (4,))
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), dim=0)[t].view(-1, *[1] * (x0.dim() - 1))
    noise = torch.randn_like(x0)
    xt = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    loss = F.mse_loss(model(xt, t), noise)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    optimizer.step()

    assert torch.isfinite(loss) and loss.item() > 0
    assert not missing, f"no or bad gradient for {missing[:5]}"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "temb.fc1.weight" in changed and "conv_out.weight" in changed


def test_an_unet_up_wired_to_the_wrong_skip_names_the_node():
    doc = gc.template("unet_ddpm_small")
    for edge in doc.edges:
        if edge.dst == "up0" and edge.dst_port == "skip":
            edge.src_port = "out"  # down0.out is half the size the skip must have
    problems = gc.validate(doc)
    assert [(d.node_id, d.port) for d in problems] == [("up0", "skip")]
    assert "8x8" in problems[0].message and "4x4" in problems[0].message


# ----------------------------------------------------------------------------- the autoencoder
class ReferenceAutoencoder(nn.Module):
    """ImgAutoencoder(imsize=64, bottleneck=4) of calvinpelletier/ai (model/ae.py with its resblk, conv and
    pyramid helpers), written out in plain PyTorch; modules are named as the template's nodes."""

    def __init__(self, channels=(32, 64, 128, 256, 512)):
        super().__init__()
        self.stages = [(f"enc{i}", a, b, True) for i, (a, b) in enumerate(zip(channels, channels[1:]))]
        rev = channels[::-1]
        self.stages += [(f"dec{i}", a, b, False) for i, (a, b) in enumerate(zip(rev, rev[1:]))]
        self.add_module("stem", nn.Conv2d(3, channels[0], 3, padding=1))
        for name, c1, c2, down in self.stages:
            reduced = max(1, c2 // 16)
            self.add_module(f"{name}_conv1", nn.Conv2d(c1, c2, 3, stride=2 if down else 1, padding=1, bias=False))
            self.add_module(f"{name}_short", nn.Conv2d(c1, c2, 1))
            self.add_module(f"{name}_bn1", nn.BatchNorm2d(c2))
            self.add_module(f"{name}_conv2", nn.Conv2d(c2, c2, 3, padding=1, bias=False))
            self.add_module(f"{name}_bn2", nn.BatchNorm2d(c2))
            self.add_module(f"{name}_se_reduce", nn.Conv2d(c2, reduced, 1))
            self.add_module(f"{name}_se_expand", nn.Conv2d(reduced, c2, 1))
        self.add_module("head", nn.Conv2d(channels[0], 3, 3, padding=1))

    def forward(self, x):
        m = self._modules
        x = F.mish(m["stem"](x))
        for name, _, _, down in self.stages:
            if down:
                h, short = m[f"{name}_conv1"](x), F.avg_pool2d(x, 2)
            else:
                short = F.interpolate(x, scale_factor=2, mode="nearest")
                h = m[f"{name}_conv1"](short)
            h = m[f"{name}_bn2"](m[f"{name}_conv2"](F.mish(m[f"{name}_bn1"](h))))
            gate = torch.sigmoid(m[f"{name}_se_expand"](F.mish(m[f"{name}_se_reduce"](F.adaptive_avg_pool2d(h, 1)))))
            x = h * gate + m[f"{name}_short"](short)
        return torch.tanh(m["head"](x))


def test_autoencoder_has_the_reference_architecture():
    doc = gc.template("autoencoder")
    reference = ReferenceAutoencoder()
    with torch.device("meta"):
        model = gc.compile(doc)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()}
    assert gc.summary(doc).total_params == sum(p.numel() for p in reference.parameters()) == 7_463_293


@pytest.mark.slow
def test_autoencoder_computes_what_the_reference_computes():
    torch.manual_seed(0)
    reference = ReferenceAutoencoder().eval()
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):  # non-trivial running statistics
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model = gc.compile(gc.template("autoencoder")).eval()
    model.load_state_dict(reference.state_dict())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the generator
@pytest.mark.parametrize("name", NAMES)
def test_generator_reproduces_the_committed_file(name):
    generator = load_generator()
    committed = (ROOT / "graphcore" / "templates" / f"{name}.json").read_text(encoding="utf-8")
    assert generator.render(name) == committed


def test_generator_covers_exactly_these_templates():
    assert sorted(load_generator().TEMPLATES) == sorted(NAMES)
    assert set(NAMES) <= set(gc.templates())
