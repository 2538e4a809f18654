"""Export with trained weights: a run's best.pt goes into ONNX and beside the exported Python, the
exported ``build_model`` loads a run checkpoint itself, and ``netcanvas export runs/NAME`` works.

One tiny classifier is trained for one epoch (a second on the CPU) into ``runs/lenet`` and shared
by every test; each export is checked against the run's own model (``load_run``)."""

import pickle
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from train_graphs import tiny_autoencoder, tiny_classifier

import graphcore as gc
from graphcore.cli import main
from graphcore.core.diagnostics import GraphError
from graphcore.interchange.codegen import to_python
from graphcore.interchange.onnx_export import export_onnx
from graphcore.interchange.weights import imported, load_weights, read_weights
from graphcore.runtime.config import TrainConfig
from graphcore.runtime.train import Trainer, load_run

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5

# Runs an exported file in a fresh interpreter where NetCanvas cannot be imported; one output per weights file.
DRIVER = """
import importlib.util, sys
sys.modules["graphcore"] = sys.modules["blocks"] = None  # the file must need only torch
import torch
spec = importlib.util.spec_from_file_location("generated", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
x = torch.load(sys.argv[2])
outs = []
for weights in sys.argv[4:]:
    with torch.no_grad():
        outs.append(module.build_model(weights).eval()(x))
torch.save(outs, sys.argv[3])
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder holding ``runs/lenet``: a tiny classifier trained for one epoch on digits."""
    root = tmp_path_factory.mktemp("workspace")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine's cores are shared
    try:
        result = Trainer(tiny_classifier(), TrainConfig(epochs=1, batch_size=128), out=root / "runs" / "lenet").fit()
    finally:
        torch.set_num_threads(threads)
    assert result.status == "finished", result.message
    return root


@pytest.fixture(scope="module")
def run(workspace) -> Path:
    return workspace / "runs" / "lenet"


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def want(run, x) -> torch.Tensor:
    """The run's own model's output: what every export must reproduce."""
    model, _ = load_run(run, checkpoint="best")
    with torch.no_grad():
        return model(x)


def onnx_output(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def run_exported(tmp_path: Path, source_file: Path, x: torch.Tensor, *weights: Path) -> list[torch.Tensor]:
    """``build_model(w)(x)`` for each weights file, computed by ``source_file`` in ``python -I``."""
    (tmp_path / "driver.py").write_text(DRIVER)
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-I", "driver.py", str(source_file), "x.pt", "outs.pt", *map(str, weights)],
                   cwd=tmp_path, check=True, capture_output=True, timeout=300)
    return torch.load(tmp_path / "outs.pt")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- the library
def test_onnx_with_the_runs_weights_matches_the_runs_model(run, x, want, tmp_path):
    model = load_weights(gc.load(run / "graph.json"), run)
    export_onnx(model, tmp_path / "m.onnx")
    got = onnx_output(tmp_path / "m.onnx", x)
    assert max_diff(got, want) <= TOLERANCE
    fresh = load_weights(gc.load(run / "graph.json"), None).eval()
    with torch.no_grad():
        assert max_diff(fresh(x), want) > 1e-2  # the trained weights made it in, not fresh ones


def test_the_exported_python_loads_the_runs_checkpoint_in_a_fresh_interpreter(run, x, want, tmp_path):
    (tmp_path / "net.py").write_text(to_python(gc.load(run / "graph.json")), encoding="utf-8")
    best, last = run_exported(tmp_path, tmp_path / "net.py", x, run / "best.pt", run / "last.pt")
    assert max_diff(best, want) <= TOLERANCE
    assert max_diff(last, want) <= TOLERANCE  # one epoch: best and last are the same weights


def test_build_model_prefers_the_ema_weights_of_a_checkpoint_and_says_so(tmp_path):
    doc = tiny_classifier()
    raw, ema = (gc.compile(doc).init(seed=seed).state_dict() for seed in (1, 2))
    torch.save({"model": raw, "ema": ema, "epoch": 3, "step": 30}, tmp_path / "diffusion.pt")
    source = to_python(doc)
    assert '"ema"' in source and '"model"' in source  # the docstring says which entry it uses
    namespace = {"__name__": "generated"}
    exec(compile(source, "generated.py", "exec"), namespace)
    generated = namespace["build_model"](str(tmp_path / "diffusion.pt"))
    for key, tensor in ema.items():
        assert torch.equal(generated.state_dict()[key], tensor)
    weights = read_weights(tmp_path / "diffusion.pt")
    assert "EMA" in weights.description and "epoch 3" in weights.description
    assert all(torch.equal(weights.state[key], tensor) for key, tensor in ema.items())


def test_each_source_says_what_was_used(run, tmp_path):
    doc = gc.load(run / "graph.json")
    best = torch.load(run / "best.pt", weights_only=True)
    assert read_weights(None).description.startswith("fresh random weights")
    text = read_weights(run).description
    assert re.fullmatch(rf"run {re.escape(str(run))} best\.pt \(epoch 1, val loss \d\.\d+\)", text), text
    assert read_weights(run, "last").description.startswith(f"run {run} last.pt (epoch 1")
    assert read_weights(run / "best.pt").description.startswith(f"{run / 'best.pt'} (epoch 1, val loss ")
    torch.save(best["model"], tmp_path / "w.pt")
    assert read_weights(tmp_path / "w.pt").description == f"weights from {tmp_path / 'w.pt'}"
    model = imported(best["model"], "model.onnx").model(doc)
    assert imported(best["model"], "model.onnx").description == "imported weights from model.onnx"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best["model"].items())
    # Fresh weights are seeded: the same every time.
    a, b = (load_weights(doc, None).state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_weights_are_one_line_naming_the_file(run, tmp_path):
    doc = gc.load(run / "graph.json")
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(run / "graph.json", half / "graph.json")
    torch.save({"model": gc.compile(tiny_autoencoder()).state_dict()}, tmp_path / "other.pt")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Path("x")))
    torch.save([1, 2], tmp_path / "list.pt")
    (tmp_path / "text.pt").write_text("not weights")
    cases = [
        (half, "no best.pt"),
        (tmp_path / "missing.pt", "missing.pt"),
        (tmp_path / "other.pt", "do not fit graph 'tiny_classifier'"),
        (tmp_path / "evil.pt", "not a file of plain tensors"),
        (tmp_path / "list.pt", "not a state_dict"),
        (tmp_path / "text.pt", "cannot load weights"),
    ]
    for source, message in cases:
        with pytest.raises(GraphError) as info:
            load_weights(doc, source)
        text = str(info.value)
        assert message in text and "\n" not in text, text
    with pytest.raises(GraphError, match="'best' or 'last'"):
        read_weights(run, "newest")


# ----------------------------------------------------------------------------- the command line
def test_cli_exports_a_run_to_onnx_with_its_best_weights(run, x, want, tmp_path, capsys):
    code, out, err = cli(capsys, "export", str(run), "--onnx", str(tmp_path / "out.onnx"))
    assert code == 0 and err == "", err
    assert f"weights: run {run} best.pt (epoch 1, val loss" in out
    assert max_diff(onnx_output(tmp_path / "out.onnx", x), want) <= TOLERANCE


def test_cli_exports_python_with_a_weights_file_beside_it(run, x, want, tmp_path, capsys):
    code, out, err = cli(capsys, "export", str(run), "--python", str(tmp_path / "net.py"), "--weights", "last")
    assert code == 0 and err == "", err
    assert str(tmp_path / "net.py") in out and str(tmp_path / "net.pt") in out and "last.pt" in out
    state = torch.load(tmp_path / "net.pt", weights_only=True)
    assert set(state) == set(gc.compile(tiny_classifier()).state_dict())  # a bare state_dict
    (got,) = run_exported(tmp_path, tmp_path / "net.py", x, tmp_path / "net.pt")
    assert max_diff(got, want) <= TOLERANCE


def test_cli_takes_a_graph_file_with_weights_or_fresh_ones(run, x, want, tmp_path, capsys):
    code, out, _ = cli(capsys, "export", str(run / "graph.json"), "--onnx", str(tmp_path / "w.onnx"),
                       "--weights", str(run / "best.pt"))
    assert code == 0 and f"weights: {run / 'best.pt'} (epoch 1" in out
    assert max_diff(onnx_output(tmp_path / "w.onnx", x), want) <= TOLERANCE
    code, out, _ = cli(capsys, "export", str(run / "graph.json"), "--onnx", str(tmp_path / "f.onnx"))
    assert code == 0 and "weights: fresh random weights" in out
    code, out, _ = cli(capsys, "export", str(run / "graph.json"), "--python", str(tmp_path / "f.py"))
    assert code == 0 and "fresh random weights" in out and not (tmp_path / "f.pt").exists()


def test_cli_problems_are_one_line_and_leave_no_files(run, tmp_path, capsys, monkeypatch):
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(run / "graph.json", half / "graph.json")
    torch.save(gc.compile(tiny_autoencoder()).state_dict(), tmp_path / "other.pt")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cases = [
        ([str(half), "--onnx", str(out_dir / "m.onnx")], "no best.pt"),
        ([str(half), "--python", str(out_dir / "m.py")], "no best.pt"),
        ([str(tmp_path), "--onnx", str(out_dir / "m.onnx")], "not a run folder (no graph.json)"),
        ([str(run), "--onnx", str(out_dir / "m.onnx"), "--weights", str(tmp_path / "other.pt")], "do not fit"),
        ([str(run), "--python", str(out_dir / "m.py"), "--weights", str(tmp_path / "other.pt")], "do not fit"),
        ([str(run), "--python", str(run / "best.py")], "run's checkpoint"),
    ]
    for argv, message in cases:
        code, out, err = cli(capsys, "export", *argv)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
        assert out == "" and "Traceback" not in err
    assert list(out_dir.iterdir()) == [] and not (run / "best.py").exists()
    assert set(torch.load(run / "best.pt", weights_only=True)) >= {"model", "epoch", "val"}  # untouched

    monkeypatch.chdir(out_dir)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run / "graph.json"), "--onnx", "m.onnx", "--weights", "best"])
    assert exit_info.value.code == 2 and "run folder" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []


def readme_export_lines() -> list[str]:
    """The README's command lines that export a run, without their comments."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line.split("#")[0].strip() for line in text.splitlines() if line.startswith("netcanvas export runs/")]
    assert lines, "the README shows how to export a run"
    return lines


def test_the_readmes_run_export_lines_work_as_written(workspace, x, want, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    for line in readme_export_lines():
        argv = shlex.split(line)
        code, out, err = cli(capsys, *argv[1:])
        assert code == 0 and err == "", f"{line}: {err}"
        target = Path(argv[argv.index("--onnx" if "--onnx" in argv else "--python") + 1])
        if target.suffix == ".onnx":
            got = onnx_output(target, x)
        else:
            got = gc.compile(gc.load("runs/lenet/graph.json")).init(target.with_suffix(".pt")).eval()(x).detach()
        assert max_diff(got, want) <= TOLERANCE, line


@pytest.mark.slow
def test_netcanvas_export_of_a_run_in_a_subprocess(run, x, want, tmp_path):
    done = subprocess.run([sys.executable, "-m", "graphcore.cli", "export", str(run), "--onnx", "out.onnx"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "best.pt (epoch 1" in done.stdout
    assert np.allclose(onnx_output(tmp_path / "out.onnx", x).numpy(), want.numpy(), rtol=0, atol=TOLERANCE)
