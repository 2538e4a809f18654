"""``netcanvas export`` and ``netcanvas import``: exit 0 / 1 (one line per problem) / 2, no partial files."""

import subprocess
import sys

import pytest
import torch
from onnx import TensorProto, helper
from test_cli_train import assert_usage_error

import graphcore as gc
from graphcore.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_export_python_writes_a_runnable_file(tmp_path, capsys):
    code, out, err = run(capsys, "export", "lenet5", "--python", str(tmp_path / "lenet.py"))
    assert code == 0 and "lenet.py" in out and err == ""
    done = subprocess.run([sys.executable, "-I", "lenet.py"], cwd=tmp_path, capture_output=True, text=True,
                          check=True, timeout=300)
    assert done.stdout.strip() == "(2, 10)"


def test_export_onnx_int8_and_import_back(tmp_path, capsys):
    graph = tmp_path / "g.json"
    gc.save(gc.template("lenet5"), graph)
    code, out, _ = run(capsys, "export", str(graph), "--onnx", str(tmp_path / "m.onnx"), "--int8")
    assert code == 0 and "int8:" in out and "max abs diff" in out

    code, out, _ = run(capsys, "export", str(graph), "--onnx", str(tmp_path / "f.onnx"), "--no-fuse")
    assert code == 0
    code, out, _ = run(capsys, "import", str(tmp_path / "f.onnx"), "--out", str(tmp_path / "back.json"),
                       "--weights", str(tmp_path / "back.pt"))
    assert code == 0 and "61,706 parameters" in out
    model = gc.compile(gc.load(tmp_path / "back.json")).init(tmp_path / "back.pt")
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert run(capsys, "validate", str(tmp_path / "back.json"))[0] == 0


def test_an_invalid_graph_exits_1_naming_the_node_without_output(tmp_path, capsys):
    doc = gc.template("lenet5")
    doc.node("f6").params["out_features"] = "many"
    gc.save(doc, tmp_path / "bad.json")
    for flag, name in (("--python", "out.py"), ("--onnx", "out.onnx")):
        code, out, err = run(capsys, "export", str(tmp_path / "bad.json"), flag, str(tmp_path / name))
        assert code == 1 and "node 'f6'" in err and "Traceback" not in err
        assert not (tmp_path / name).exists()


def test_import_of_unsupported_ops_and_non_onnx_exits_1(tmp_path, capsys):
    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    (tmp_path / "erf.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    (tmp_path / "text.onnx").write_text("not a model")
    for source, message in (("erf.onnx", "Erf ×1"), ("text.onnx", "not an ONNX model")):
        code, _, err = run(capsys, "import", str(tmp_path / source), "--out", str(tmp_path / "g.json"),
                           "--weights", str(tmp_path / "w.pt"))
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "g.json").exists() and not (tmp_path / "w.pt").exists()


def test_an_unwritable_path_exits_1(tmp_path, capsys):
    for flag in ("--python", "--onnx"):
        code, _, err = run(capsys, "export", "lenet5", flag, str(tmp_path / "no" / "dir" / "out"))
        assert code == 1 and "cannot write" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("argv", [
    ["export", "lenet5"],
    ["export", "lenet5", "--python", "a.py", "--onnx", "b.onnx"],
    ["export", "lenet5", "--python", "a.py", "--int8"],
    ["import", "m.onnx"],
])
def test_bad_arguments_exit_2(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, complaint", [
    (["export", "lenet5", "--onnx", "m.onnx", "--opset", "1"], "argument --opset: must be an opset from 7 to"),
    (["export", "lenet5", "--onnx", "m.onnx", "--opset", "999"], "argument --opset: must be an opset from 7 to"),
    (["export", "lenet5", "--python", ""], "argument --python: must name a file or folder"),
    (["export", "lenet5", "--onnx", " "], "argument --onnx: must name a file or folder"),
    (["import", "m.onnx", "--out", ""], "argument --out: must name a file or folder"),
])
def test_values_out_of_range_exit_2_with_one_line(tmp_path, monkeypatch, capsys, argv, complaint):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(argv, complaint, tmp_path, capsys)
