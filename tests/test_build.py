"""The concise builder (``import graphcore.interchange.build as m``): the seed's examples build, validate and run."""

from math import prod

import pytest
import torch

import graphcore as gc
import graphcore.interchange.build as m


class FullyConnected(m.Model):
    """The seed's MNIST MLP, as written there (plus the input shape a graph needs)."""

    def __init__(self, shape_in=(1, 28, 28), n_out=10, dim=128, n_layers=4):
        super().__init__(m.seq(
            m.flatten(),
            m.fc(prod(shape_in), dim, actv="relu"),
            m.repeat(n_layers, m.fc(dim, dim, actv="relu")),
            m.fc(dim, n_out),
        ), input_shape=shape_in)


class ImgAutoencoder(m.Model):
    """The seed's image autoencoder with ResNet blocks."""

    def __init__(self, imsize, bottleneck, nc_img=3, nc_min=32, nc_max=512,
                 enc_block=lambda size, nc1, nc2: m.resblk(nc1, nc2, stride=2),
                 dec_block=lambda size, nc1, nc2: m.resblk(nc1, nc2, stride=0.5)):
        super().__init__(input_shape=(nc_img, imsize, imsize))
        self.encode = m.seq(
            m.conv(nc_img, nc_min, actv="mish"),
            m.pyramid(imsize, bottleneck, nc_min, nc_max, enc_block),
        )
        self.decode = m.seq(
            m.pyramid(bottleneck, imsize, nc_min, nc_max, dec_block),
            m.conv(nc_min, nc_img, actv="tanh"),
        )

    def forward(self, x):
        return self.decode(self.encode(x))


def test_fully_connected_builds_validates_and_runs():
    doc = FullyConnected().graph()
    assert not [d for d in gc.validate(doc) if d.severity == "error"]
    assert [n.type for n in doc.nodes].count("linear") == 6
    net = FullyConnected().init(seed=0)
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    expected = 784 * 128 + 128 + 4 * (128 * 128 + 128) + 128 * 10 + 10
    assert sum(p.numel() for p in net.parameters()) == expected


def test_img_autoencoder_builds_validates_and_runs():
    model = ImgAutoencoder(32, 4)
    doc = model.graph()
    assert not [d for d in gc.validate(doc) if d.severity == "error"]
    shapes = gc.infer_shapes(doc)
    # the bottleneck: 32 -> 4 pixels in three stride-2 blocks, channels 32 -> 256
    encoded = [s for (nid, _), s in shapes.items() if nid.startswith("encode_") and len(s) == 4 and s[1] >= 32]
    assert encoded[-1] == (None, 256, 4, 4)
    assert all(n.id.startswith(("encode_", "decode_")) for n in doc.nodes if n.type not in ("input", "output"))
    net = model.init(seed=0)
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1  # tanh output


def test_graph_round_trips_through_json_and_python_export(tmp_path):
    doc = FullyConnected(n_layers=1).graph()
    gc.save(doc, tmp_path / "fc.json")
    assert gc.load(tmp_path / "fc.json") == doc
    assert "class FullyConnected(nn.Module):" in gc.to_python(doc)


def test_init_loads_saved_weights(tmp_path):
    first = FullyConnected(n_layers=1).init(seed=1)
    first.save(tmp_path / "w.pt")
    again = FullyConnected(n_layers=1).init(tmp_path / "w.pt")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(first(x), again(x))


def test_a_wrong_size_names_the_node():
    wrong = r"node 'linear_1': was written for 100 input features, but its input has 64"
    with pytest.raises(gc.GraphError, match=wrong):
        m.Model(m.seq(m.flatten(), m.fc(16, 64), m.fc(100, 10)), input_shape=(1, 4, 4)).graph()
    with pytest.raises(gc.GraphError, match=r"node 'conv2d': was written for 4 input channels, but its input has 3"):
        m.Model(m.conv(4, 8), input_shape=(3, 8, 8)).graph()


def test_residual_and_resampling_parts():
    model = m.Model(m.seq(m.resblk(8, 16, stride=2, se=True), m.conv(16, 8, stride=0.5, norm="group", actv="silu"),
                          m.res(m.conv(8, 8, actv="relu"))), input_shape=(8, 16, 16))
    types = [n.type for n in model.graph().nodes]
    assert {"add", "mul", "upsample", "avgpool2d", "groupnorm", "silu", "global_avgpool"} <= set(types)
    assert model.init(seed=0)(torch.randn(2, 8, 16, 16)).shape == (2, 8, 16, 16)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown activation 'rleu'"):
        m.fc(4, 4, actv="rleu")
    with pytest.raises(ValueError, match="unknown norm"):
        m.conv(4, 4, norm="instance")
    with pytest.raises(ValueError, match="power of 2"):
        m.pyramid(32, 6, 8, 64, lambda size, a, b: m.resblk(a, b, stride=2))
