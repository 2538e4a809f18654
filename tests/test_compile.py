"""Compiling a graph: a real nn.Module with generated forward code, stable names and weights I/O."""

import copy

import pytest
import torch
from torch import nn

import graphcore as gc
from graphcore.core.document import Edge, GraphDoc, Node


class HandLeNet(nn.Module):
    """LeNet-5 written by hand, with the template's attribute names."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5, padding=2)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.f5 = nn.Linear(400, 120)
        self.f6 = nn.Linear(120, 84)
        self.f7 = nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.avg_pool2d(torch.tanh(self.c1(x)), 2)
        x = nn.functional.avg_pool2d(torch.tanh(self.c3(x)), 2).flatten(1)
        return self.f7(torch.tanh(self.f6(torch.tanh(self.f5(x)))))


def test_lenet5_matches_a_hand_written_model_with_the_same_weights():
    model = gc.compile(gc.template("lenet5")).eval()
    hand = HandLeNet().eval()
    hand.load_state_dict(model.state_dict())  # same keys, same shapes
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), hand(x))
    assert sum(p.numel() for p in model.parameters()) == 61_706


def test_forward_is_generated_code_one_line_per_node():
    model = gc.compile(gc.template("lenet5"))
    lines = [line.strip() for line in model.code.splitlines() if "= self." in line]
    assert len(lines) == 12  # every node but the input and the output
    assert lines[0].startswith("c1 = self.c1(x)")
    assert isinstance(model, torch.fx.GraphModule) and type(model).__name__ == "Lenet5"


def test_the_fx_graph_notes_each_values_shape_and_each_modules_label():
    doc = gc.template("unet_ddpm_small")
    doc.node("conv_in").label = "stem"
    graph = gc.compile(doc).graph
    inferred = gc.infer_shapes(doc)
    calls = {n.target: n for n in graph.nodes if n.op == "call_module"}
    assert calls["conv_in"].meta["label"] == "stem"
    assert calls["conv_in"].meta["shape"] == inferred[("conv_in", "out")]
    skip = next(item for item in calls["down0"].users if item.meta["port"] == "skip")
    assert skip.meta["shape"] == inferred[("down0", "skip")] == (None, 32, 8, 8)
    assert [n.meta["shape"] for n in graph.nodes if n.op == "placeholder"] == [(None, 1, 8, 8), (None,)]


def test_submodules_are_named_by_node_id():
    model = gc.compile(gc.template("lenet5"))
    assert list(model.state_dict())[:2] == ["c1.weight", "c1.bias"]
    assert isinstance(model.get_submodule("c3"), nn.Conv2d)


def test_multiple_inputs_and_outputs_in_document_order():
    doc = GraphDoc(name="two heads", nodes=[
        Node(id="a", type="input", params={"shape": [4]}),
        Node(id="b", type="input", params={"shape": [4], "name": "other"}),
        Node(id="s", type="add"),
        Node(id="cat", type="concat", params={"dim": -1}),
        Node(id="sum_out", type="output"),
        Node(id="cat_out", type="output"),
    ], edges=[
        Edge(src="a", dst="s", dst_port="in0"), Edge(src="b", dst="s", dst_port="in1"),
        Edge(src="a", dst="cat", dst_port="in0"), Edge(src="s", dst="cat", dst_port="in1"),
        Edge(src="s", dst="sum_out"), Edge(src="cat", dst="cat_out"),
    ])
    model = gc.compile(doc)
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    total, joined = model(a, other=b)
    assert torch.equal(total, a + b)
    assert torch.equal(joined, torch.cat([a, a + b], dim=-1))


def test_an_input_named_like_a_builtin_still_works():
    doc = GraphDoc(nodes=[Node(id="input", type="input", params={"shape": [3]}), Node(id="y", type="output")],
                   edges=[Edge(src="input", dst="y")])
    x = torch.randn(2, 3)
    assert torch.equal(gc.compile(doc)(x), x)


def test_compile_refuses_a_graph_with_errors_listing_all_of_them():
    doc = gc.template("lenet5")
    doc.node("c1").params["kernel_size"] = 40
    doc.node("f7").params["out_features"] = 0
    with pytest.raises(gc.GraphError) as info:
        gc.compile(doc)
    assert {d.node_id for d in info.value.diagnostics} == {"c1", "f7"}


def test_the_model_keeps_a_copy_of_its_document():
    doc = gc.template("lenet5")
    model = gc.compile(doc)
    doc.name = "edited later"
    assert model.doc.name == "lenet5"
    clone = copy.deepcopy(model)
    assert clone.doc == model.doc and type(clone).__name__ == type(model).__name__ == "Lenet5"


def test_save_and_init_from_path_round_trip(tmp_path):
    model = gc.compile(gc.template("lenet5"))
    model.save(tmp_path / "w.pt")
    other = gc.compile(gc.template("lenet5")).init(seed=1)
    assert not torch.equal(other.c1.weight, model.c1.weight)
    other.init(tmp_path / "w.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key])


def test_init_accepts_a_checkpoint_dict(tmp_path):
    model = gc.compile(gc.template("lenet5"))
    torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "ckpt.pt")
    other = gc.compile(gc.template("lenet5")).init(tmp_path / "ckpt.pt")
    assert torch.equal(other.f7.bias, model.f7.bias)


def test_seeded_init_is_reproducible_and_does_not_touch_the_global_rng():
    a = gc.compile(gc.template("lenet5")).init(seed=3)
    b = gc.compile(gc.template("lenet5"))
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    b.init(seed=3)
    assert torch.rand(1) == expected_next
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_weights_of_another_graph_are_a_clear_error(tmp_path):
    torch.save({"c1.weight": torch.zeros(1), "other.bias": torch.zeros(2)}, tmp_path / "w.pt")
    with pytest.raises(gc.GraphError, match="do not fit graph 'lenet5'.*missing.*unexpected: other.bias.*wrong shape"):
        gc.compile(gc.template("lenet5")).init(tmp_path / "w.pt")


def test_unsafe_or_broken_weight_files_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    model = gc.compile(gc.template("lenet5"))
    for name in ("evil.pt", "junk.pt", "missing.pt"):
        with pytest.raises(gc.GraphError, match="cannot load weights"):
            model.init(tmp_path / name)


@pytest.mark.slow  # torch.compile's first use: seconds of importing and tracing
def test_compiled_model_works_with_torch_compile():
    model = gc.compile(gc.template("lenet5")).eval()
    x = torch.randn(2, 1, 28, 28)
    fast = torch.compile(model, backend="eager")
    assert torch.allclose(fast(x), model(x))


def test_summary_counts_params_and_macs():
    table = gc.summary(gc.template("lenet5"))
    rows = {r.node_id: r for r in table.rows}
    assert table.total_params == 61_706
    assert rows["c1"].params == 156 and rows["c1"].macs == 6 * 28 * 28 * 25
    assert rows["f5"].shape == (None, 120) and rows["f5"].macs == 400 * 120
    assert "total params: 61,706" in str(table)
