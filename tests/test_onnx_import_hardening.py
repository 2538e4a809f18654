"""Importing a hostile or unusual ONNX file: external data is read from the model's own folder
only, no import allocates more than its budget, and many ops sharing one name import quickly.
"""

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphcore as gc
from graphcore.core.names import Namespace
from graphcore.interchange.onnx_import import ImportLimits, from_onnx

WEIGHT = np.arange(12, dtype=np.float32).reshape(4, 3)


def value(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def model(nodes, initializers=(), inputs=(("x", ["N", 4]),), outputs=(("y", ["N", 3]),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "hand_made", [value(*i) for i in inputs], [value(*o) for o in outputs],
                              list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def projection_with_external_weight(folder: Path, location: str = "w.bin") -> Path:
    """x (N, 4) @ w (4, 3), with w stored in a file of its own beside the model."""
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    proto = model([helper.make_node("MatMul", ["x", "w"], ["y"], name="project")],
                  [numpy_helper.from_array(WEIGHT, "w")])
    onnx.save_model(proto, path, save_as_external_data=True, location=location, size_threshold=0)
    assert (folder / location).stat().st_size == WEIGHT.nbytes
    return path


def set_external(path: Path, **entries: str) -> None:
    """Rewrite the external-data entries (location, length, ...) of initializer 'w'."""
    proto = onnx.load_model(path, load_external_data=False)
    (tensor,) = proto.graph.initializer
    for entry in tensor.external_data:
        if entry.key in entries:
            entry.value = entries.pop(entry.key)
    for key, text in entries.items():
        tensor.external_data.add(key=key, value=text)
    onnx.save_model(proto, path)


def only_weight(state) -> np.ndarray:
    (weight,) = state.values()
    return weight.numpy()


def one_line(error: gc.GraphError) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    return text


# ------------------------------------------------------------------ external data
def test_external_data_is_read_beside_the_model_whatever_the_working_directory(tmp_path, monkeypatch):
    path = projection_with_external_weight(tmp_path / "model")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    np.full_like(WEIGHT, 7).tofile(elsewhere / "w.bin")  # a decoy of the same name and size
    monkeypatch.chdir(elsewhere)
    for given in (path, Path("../model/model.onnx")):
        _, state = gc.from_onnx(given)
        np.testing.assert_array_equal(only_weight(state), WEIGHT.T)


def test_a_model_with_its_data_file_beside_it_imports_from_an_empty_folder(tmp_path, monkeypatch):
    path = projection_with_external_weight(tmp_path / "model", location="weights/w.bin")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    doc, state = gc.from_onnx(path)
    assert [n.type for n in doc.nodes] == ["input", "linear", "output"]
    np.testing.assert_array_equal(only_weight(state), WEIGHT.T)


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_external_data_outside_the_models_folder_is_refused(tmp_path, monkeypatch, where):
    path = projection_with_external_weight(tmp_path / "model")
    outside = tmp_path / "secret.bin"
    np.full_like(WEIGHT, 7).tofile(outside)
    location = {"absolute": str(outside), "parent": "../secret.bin", "symlink": "link.bin"}[where]
    if where == "symlink":
        (tmp_path / "model" / "link.bin").symlink_to(outside)
    set_external(path, location=location)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(gc.GraphError) as caught:
        gc.from_onnx(path)
    assert "model.onnx" in one_line(caught.value) and "w" in str(caught.value)


@pytest.mark.parametrize("damage", ["file cut short", "length field wrong", "file too long"])
def test_external_data_of_the_wrong_length_names_the_tensor_and_the_file(tmp_path, monkeypatch, damage):
    path = projection_with_external_weight(tmp_path / "model")
    data = tmp_path / "model" / "w.bin"
    if damage == "file cut short":
        data.write_bytes(data.read_bytes()[:20])
    elif damage == "length field wrong":
        set_external(path, length="20")
    else:
        data.write_bytes(data.read_bytes() + bytes(8))  # no length field: the data runs to the end
        proto = onnx.load_model(path, load_external_data=False)
        (tensor,) = proto.graph.initializer
        kept = [(e.key, e.value) for e in tensor.external_data if e.key == "location"]
        del tensor.external_data[:]
        for key, text in kept:
            tensor.external_data.add(key=key, value=text)
        onnx.save_model(proto, path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(gc.GraphError, match=r"initializer 'w'.*'w\.bin'.*48 bytes") as caught:
        gc.from_onnx(path)
    assert one_line(caught.value).startswith("error: model.onnx:")


@pytest.mark.parametrize("stored", ["raw bytes", "typed values"])
def test_inline_data_longer_than_its_shape_names_the_initializer(tmp_path, stored):
    if stored == "raw bytes":
        tensor = numpy_helper.from_array(WEIGHT, "w")
        tensor.raw_data += bytes(8)
    else:
        tensor = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], WEIGHT.ravel().tolist())
        tensor.float_data.extend([0.0, 0.0])
    path = tmp_path / "model.onnx"
    onnx.save_model(model([helper.make_node("MatMul", ["x", "w"], ["y"])], [tensor]), path)
    with pytest.raises(gc.GraphError, match=r"initializer 'w': the model file holds (56 bytes|14 values)") as caught:
        gc.from_onnx(path)
    one_line(caught.value)


def test_an_element_type_torch_cannot_hold_is_named(tmp_path):
    tensor = helper.make_tensor("w", TensorProto.BFLOAT16, [4, 3], WEIGHT.ravel().tolist())
    path = tmp_path / "model.onnx"
    onnx.save_model(model([helper.make_node("MatMul", ["x", "w"], ["y"])], [tensor]), path)
    with pytest.raises(gc.GraphError, match=r"initializer 'w' has element type BFLOAT16; NetCanvas reads FLOAT"):
        gc.from_onnx(path)


# ------------------------------------------------------------------ sizes and the memory budget
def test_an_initializer_over_the_per_tensor_limit_is_refused_before_it_is_read(tmp_path):
    path = projection_with_external_weight(tmp_path / "model")
    with pytest.raises(gc.GraphError, match=r"initializer 'w' has 12 elements .*limit of 10 per tensor"):
        from_onnx(path, limits=ImportLimits(tensor_elements=10))
    _, state = from_onnx(path, limits=ImportLimits(tensor_elements=12))
    np.testing.assert_array_equal(only_weight(state), WEIGHT.T)


def concat_bomb(path: Path, doublings: int = 40) -> Path:
    """Two KB whose constant folding doubles a 16-element constant ``doublings`` times
    (16 * 2**40 floats); the graph itself is a single Relu."""
    nodes = [helper.make_node("Concat", [f"c{i}", f"c{i}"], [f"c{i + 1}"], axis=0, name=f"double{i}")
             for i in range(doublings)]
    nodes.append(helper.make_node("Relu", ["x"], ["y"], name="act"))
    proto = model(nodes, [numpy_helper.from_array(np.ones(16, np.float32), "c0")], outputs=(("y", ["N", 4]),))
    onnx.save_model(proto, path)
    assert path.stat().st_size < 4096
    return path


def test_constant_folding_stops_at_the_budget_naming_the_node(tmp_path):
    path = concat_bomb(tmp_path / "bomb.onnx", doublings=12)
    limits = ImportLimits(tensor_elements=2**20, folded_elements=1000)  # 32 + ... + 512 = 992 fit, 1,024 more do not
    with pytest.raises(gc.GraphError, match=r"'double5' \(Concat\).*limit of 1,000") as caught:
        from_onnx(path, limits=limits)
    one_line(caught.value)
    limits = ImportLimits(tensor_elements=300, folded_elements=10**6)
    with pytest.raises(gc.GraphError, match=r"'double4' \(Concat\).*512 elements.*limit of 300 per tensor"):
        from_onnx(path, limits=limits)


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))


@pytest.mark.slow
def test_a_concat_bomb_ends_with_one_line_under_a_2_gb_address_space_limit(tmp_path):
    path = concat_bomb(tmp_path / "bomb.onnx")
    command = [sys.executable, "-c", "import sys; from graphcore.cli.main import main; sys.exit(main(sys.argv[1:]))",
               "import", str(path), "--out", str(tmp_path / "bomb.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, preexec_fn=_limit_address_space,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "'double" in done.stderr and "(Concat)" in done.stderr, done.stderr
    assert "import limit" in done.stderr and "MemoryError" not in done.stderr, done.stderr  # the budget, not the OS
    assert not (tmp_path / "bomb.json").exists()


# ------------------------------------------------------------------ many ops with one name
def relu_chain(path: Path, ops: int) -> Path:
    names = ["x", *(f"t{i}" for i in range(1, ops)), "y"]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]], name="relu") for i in range(ops)]
    onnx.save_model(model(nodes, outputs=(("y", ["N", 4]),)), path)
    return path


def test_a_chain_of_2000_ops_with_one_name_imports_with_unique_ids(tmp_path):
    doc, _ = gc.from_onnx(relu_chain(tmp_path / "chain.onnx", 2000))
    ids = [n.id for n in doc.nodes]
    assert len(set(ids)) == len(ids) == 2002
    assert sum(n.type == "relu" for n in doc.nodes) == 2000
    assert gc.validate(doc) == []


def test_namespace_gives_each_name_the_first_free_suffix():
    names = Namespace({"relu_1"}, avoid_builtins=False)
    assert [names.name("relu") for _ in range(4)] == ["relu", "relu_2", "relu_3", "relu_4"]
    assert [names.name("relu_2"), names.name("relu_1"), names.name("relu")] == ["relu_2_1", "relu_1_1", "relu_5"]
    assert [names.name("9 lives"), names.name("9 lives")] == ["_9_lives", "_9_lives_1"]
    assert Namespace().name("list") == "list_1"  # builtins are taken unless told otherwise
