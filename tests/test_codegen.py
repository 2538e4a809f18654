"""A graph exported as Python runs with only torch and computes what the compiled model does.

Loops over the block registry (every block type, in-process) and the template gallery (every
template, in a fresh ``python -I`` that cannot import NetCanvas), so new entries are covered.
"""

import ast
import io
import re
import subprocess
import sys
import tokenize

import pytest
import torch
from block_strategies import example_params, single_block_doc

import blocks
import graphcore as gc
from graphcore.core.analysis import Analysis
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.inputs import input_specs, random_inputs
from graphcore.interchange.codegen import comment, literal

QUICK_TEMPLATES = {"lenet5", "diffusion_mlp"}
SLOW = pytest.mark.slow

# Runs a generated file in a fresh interpreter where NetCanvas cannot be imported.
DRIVER = """
import importlib.util, sys
sys.modules["graphcore"] = sys.modules["blocks"] = None  # the file must need only torch
import torch
spec = importlib.util.spec_from_file_location("generated", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.build_model(sys.argv[2]).eval()
with torch.no_grad():
    out = model(*torch.load(sys.argv[3]))
torch.save(out, sys.argv[4])
"""


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def load_source(source: str):
    namespace = {"__name__": "generated"}
    exec(compile(source, "generated.py", "exec"), namespace)
    return namespace


def block_cases() -> list:
    return [pytest.param(spec, example, id=f"{spec.type}-{i}")
            for spec in blocks.all_specs() if spec.build is not None
            for i, example in enumerate(spec.examples)]


@pytest.mark.parametrize("spec,example", block_cases())
def test_every_block_type_exports_and_matches(spec, example):
    doc = single_block_doc(spec, example.params, example.inputs, spec.input_ports(example_params(spec, example)))
    compiled = gc.compile(doc).eval()
    generated = load_source(gc.to_python(doc))["build_model"]().eval()

    assert list(generated.state_dict()) == list(compiled.state_dict())
    generated.load_state_dict(compiled.state_dict(), strict=True)
    inputs = random_inputs(input_specs(Analysis(doc), compiled), 3)
    with torch.no_grad():
        for want, got in zip(as_tuple(compiled(*inputs)), as_tuple(generated(*inputs)), strict=True):
            assert torch.equal(want, got)


def run_fresh(tmp_path, doc):
    """Export ``doc``, run it in ``python -I`` with the compiled model's weights; both outputs."""
    model = gc.compile(doc).init(seed=0).eval()
    (tmp_path / "net.py").write_text(gc.to_python(doc))
    (tmp_path / "driver.py").write_text(DRIVER)
    model.save(tmp_path / "w.pt")
    inputs = random_inputs(input_specs(Analysis(doc), model), 3)
    torch.save(inputs, tmp_path / "in.pt")
    subprocess.run([sys.executable, "-I", "driver.py", "net.py", "w.pt", "in.pt", "out.pt"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=600)
    with torch.no_grad():
        want = as_tuple(model(*inputs))
    return want, as_tuple(torch.load(tmp_path / "out.pt"))


@pytest.mark.parametrize("name", [n if n in QUICK_TEMPLATES else pytest.param(n, marks=SLOW) for n in gc.templates()])
def test_template_runs_in_a_fresh_interpreter_with_the_same_output(tmp_path, name):
    want, got = run_fresh(tmp_path, gc.template(name))
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_main_runs_one_forward_pass_and_prints_the_output_shape(tmp_path):
    (tmp_path / "lenet.py").write_text(gc.to_python(gc.template("lenet5")))
    done = subprocess.run([sys.executable, "-I", "lenet.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=True)
    assert done.stdout.strip() == "(2, 10)"


def test_the_code_reads_like_hand_written_pytorch():
    source = gc.to_python(gc.template("lenet5"))
    assert "class Lenet5(nn.Module):" in source
    assert "self.c1 = nn.Conv2d(1, 6, 5, padding=2)" in source
    assert "c1 = self.c1(x)  # (N, 6, 28, 28)" in source
    assert "f7 = self.f7(a6)  # (N, 10)" in source
    assert "def build_model(" in source
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all("graphcore" not in line and "blocks" not in line for line in imports)


CALL_LINE = re.compile(r"= self\.(\w+)\(.*\)  # (.*)$")
SHAPE_COMMENT = re.compile(r"(?:(\w+) )?\(([^()]*)\)")  # "(N, 6, 28, 28)" or "out (N, 8), skip (N, 4)"


def network_forward(source: str) -> list[str]:
    """The lines of the network class's forward (the last class in the file)."""
    net = [node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)][-1]
    forward = next(f for f in net.body if isinstance(f, ast.FunctionDef) and f.name == "forward")
    return source.splitlines()[forward.body[0].lineno - 1: forward.end_lineno]


@pytest.mark.parametrize("doc", [gc.template("lenet5"), gc.template("unet_ddpm_small"),
                                 gc.group(gc.template("lenet5"), ["c3", "a3", "s4"], "conv_stage")],
                         ids=["lenet5", "unet_ddpm_small (two outputs)", "lenet5 with a subgraph"])
def test_forward_lines_follow_the_fx_graph_and_comment_the_inferred_shapes(doc):
    model = gc.compile(doc)
    lines = network_forward(gc.to_python(doc))
    calls = [CALL_LINE.search(line).groups() for line in lines[:-1]]
    assert [module for module, _ in calls] == [n.target for n in model.graph.nodes if n.op == "call_module"]
    assert lines[-1].strip().startswith("return ")
    inferred = gc.infer_shapes(doc)
    for module, text in calls:
        want = {port: shape for (node_id, port), shape in inferred.items() if node_id == module}
        got = {port: tuple(None if d == "N" else int(d) for d in dims.split(", "))
               for port, dims in SHAPE_COMMENT.findall(text)}
        if list(got) == [""]:  # one output: the comment is its shape alone
            got = {next(iter(want)): got[""]}
        assert got == want, module


def test_composite_block_classes_come_with_their_dependencies_and_no_block_base():
    composites = [s for s in blocks.all_specs() if s.build is not None and any(
        isinstance(m, blocks.base.Block) and any(isinstance(c, blocks.base.Block) for c in m.modules() if c is not m)
        for m in [_module_of(s)])]
    if not composites:
        pytest.fail("no composite block that uses another block class is registered")
    spec = composites[0]
    example = spec.examples[0]
    source = gc.to_python(single_block_doc(spec, example.params, example.inputs,
                                           spec.input_ports(example_params(spec, example))))
    tree = ast.parse(source)
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            assert all(ast.unparse(base) != "Block" for base in node.bases)
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            # every block class a class uses is defined above it
            assert all(classes.index(dep) < classes.index(node.name) for dep in used & set(classes) - {node.name})


def _module_of(spec):
    example = spec.examples[0]
    return spec.build(example_params(spec, example), example.inputs)


HOSTILE = [
    "x'); __import__('os').system('touch PWNED'); ('",
    'x"""\nimport os; os.system("touch PWNED")\n"""',
    "line1\nimport os\nos.system('touch PWNED')  # \r\n\x0c\u2028",
    "héllo 🔥 网络 \\",
    "",
]


@pytest.mark.slow  # a fresh interpreter (that imports torch) per case
@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_names_labels_and_notes_never_become_code(tmp_path, text):
    def graph(text):
        return GraphDoc(
            name=text,
            nodes=[Node(id="x", type="input", params={"shape": [4]}, label=text),
                   Node(id="fc", type="linear", params={"out_features": 2}, label=text),
                   Node(id="y", type="output", label=text)],
            edges=[Edge(src="x", dst="fc"), Edge(src="fc", dst="y")],
            meta={"notes": text, "description": text},
            ui={"positions": {"fc": [0, 0]}, "note": text},
        )

    def code_shape(source):
        """The program without its comments, with the class name (made from the graph name) masked."""
        tree = ast.parse(source)
        net = next(n.name for n in tree.body if isinstance(n, ast.ClassDef))
        return ast.dump(tree).replace(repr(net), "'NET'")

    source = gc.to_python(graph(text))
    note = f"  # {comment(text)}" if text else ""
    assert f"self.fc = nn.Linear(4, 2){note}\n" in source  # the label stays, escaped, as a comment
    # the hostile graph compiles to exactly the same program as a plain one: user text added no code
    assert code_shape(source) == code_shape(gc.to_python(graph("plain")))
    # outside the class name (an identifier made by graphcore.core.names), user text is in comments only
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if "PWNED" in token.string and token.type != tokenize.COMMENT:
            assert token.type == tokenize.NAME and token.string.isidentifier() and token.line.startswith(
                ("class ", "def build_model", "    model = "))
    (tmp_path / "net.py").write_text(source)
    subprocess.run([sys.executable, "-I", "net.py"], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name", ["os", "__import__('os')", "class", "a b", "ünï"])
def test_a_hostile_input_name_is_refused_naming_the_node(name):
    doc = GraphDoc(name="g", nodes=[Node(id="x", type="input", params={"shape": [4], "name": name}),
                                    Node(id="y", type="output")], edges=[Edge(src="x", dst="y")])
    if name.isidentifier() and name.isascii() and name != "class":
        assert "def forward(self, os)" in gc.to_python(doc)
        return
    with pytest.raises(gc.GraphError, match="node 'x'"):
        gc.to_python(doc)


def test_an_invalid_graph_is_refused_naming_the_node():
    doc = gc.template("lenet5")
    doc.node("f5").params["out_features"] = -3
    with pytest.raises(gc.GraphError, match="node 'f5'"):
        gc.to_python(doc)


def test_literals_round_trip_through_python():
    for value in [1, -2.5, float("inf"), -float("inf"), "a'b\"c\n", (1,), (1, 2), [3, [4]], {"k": None}, True]:
        assert eval(literal(value), {"float": float}) == value  # noqa: S307
    assert str(eval(literal(float("nan")), {"float": float})) == "nan"  # noqa: S307
    with pytest.raises(TypeError):
        literal(object())


def test_subgraphs_become_classes_of_their_own():
    doc = gc.group(gc.template("lenet5"), ["c3", "a3", "s4"], "conv_stage")
    doc = gc.group(doc, ["a5"], "squash")
    doc.node("squash").params["repeat"] = 3  # an nn.Sequential of three compiled copies
    compiled = gc.compile(doc).init(seed=0).eval()
    source = gc.to_python(doc)
    generated = load_source(source)["build_model"]().eval()
    generated.load_state_dict(compiled.state_dict(), strict=True)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(generated(x), compiled(x))
    assert "self.conv_stage = Conv_stage()" in source
    assert "nn.Sequential(Squash(), Squash(), Squash())" in source
    assert "        c3 = self.c3(x)  # (N, 16, 10, 10)\n" in source  # subgraph forwards carry shapes too
    assert "        a5 = self.a5(x)  # (N, 120)\n" in source  # three copies, one shape: kept


def test_a_subgraph_reused_at_several_sizes_is_one_class_without_shape_comments():
    doc = gc.group(gc.template("lenet5"), ["a1"], "act")
    for node_id in ("a3", "a5"):  # the same tanh subgraph at (6, 28, 28), (16, 10, 10) and (120)
        doc.node(node_id).type, doc.node(node_id).params = "subgraph:act", {}
    source = gc.to_python(doc)
    assert [line.strip() for line in source.splitlines() if "= Act(" in line] == [
        "self.act = Act()", "self.a3 = Act()", "self.a5 = Act()"]
    assert "        a1 = self.a1(x)\n" in source  # no one shape is true for every use
    compiled = gc.compile(doc).eval()
    generated = load_source(source)["build_model"]().eval()
    generated.load_state_dict(compiled.state_dict(), strict=True)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(generated(x), compiled(x))
