"""ONNX import cases that the tests and benchmarks/bench_import.py share.

The ONNX project's backend test data, shipped inside the ``onnx`` wheel: each model imported with
``from_onnx`` and run, against the outputs the data holds. ``pytorch-converted`` and
``pytorch-operator`` keep inputs and outputs as ``test_data_set_0``; the ``light`` model zoo keeps
only the expected output, for the input that onnx's own runner makes
(``arange(n).reshape(shape) / n``, see ``onnx/backend/test/runner``).

A large model and the peak memory its import adds, measured in a fresh process.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

import graphcore as gc
from graphcore.interchange.onnx_import import ONE_SAMPLE_NOTE

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
SUITES = ("pytorch-converted", "pytorch-operator", "light")
GOALS = {"pytorch-converted": 78, "pytorch-operator": 30, "light": 9}  # models of each suite that must import
TOLERANCE = 1e-4  # of max(1, |expected| max), absolute


@dataclass(frozen=True)
class Case:
    """One model of a suite."""

    suite: str
    name: str
    model: Path

    def inputs_and_outputs(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self.suite == "light":
            return _light_inputs(self.model), [_tensor(self.model.with_name(f"{self.name}_output_0.pb"))]
        data = self.model.parent / "test_data_set_0"
        return ([_tensor(p) for p in sorted(data.glob("input_*.pb"))],
                [_tensor(p) for p in sorted(data.glob("output_*.pb"))])


def cases(suite: str) -> list[Case]:
    folder = DATA / suite
    if suite == "light":
        return [Case(suite, p.stem, p) for p in sorted(folder.glob("*.onnx"))]
    return [Case(suite, p.name, p / "model.onnx") for p in sorted(folder.iterdir()) if (p / "model.onnx").is_file()]


def check(case: Case) -> str:
    """'' where the model imports and its outputs equal the expected ones; else why not (one line).
    A GraphError is a refusal; anything else propagates (a crash is a bug)."""
    inputs, expected = case.inputs_and_outputs()
    try:
        doc, state = gc.from_onnx(case.model, flat=True)
    except gc.GraphError as exc:
        return str(exc).splitlines()[0]
    model = gc.compile(doc).eval()
    model.load_state_dict(state)
    dtypes = [torch.int64 if n.params.get("dtype") == "int64" else torch.float32 for n in doc.nodes
              if n.type == "input"]
    one_sample = ONE_SAMPLE_NOTE in doc.meta.get("notes", [])  # each input is one sample: a batch of 1
    with torch.no_grad():
        got = model(*(torch.from_numpy(np.array(x)).to(dtype)[(None,) * one_sample]
                      for x, dtype in zip(inputs, dtypes, strict=True)))
    got = tuple(out[0] if one_sample else out for out in (got if isinstance(got, tuple) else (got,)))
    for want, out in zip(expected, got, strict=True):
        out = out.numpy()
        if out.shape != want.shape:
            return f"output shape {out.shape}, expected {want.shape}"
        if not np.array_equal(np.isnan(out), np.isnan(want)):
            return "output has NaN elsewhere than expected"
        numbers = ~np.isnan(want)  # (the square root of a negative input is NaN, here and there)
        tolerance = TOLERANCE * max(1.0, float(np.abs(want[numbers]).max(initial=0)))
        diff = float(np.abs(out[numbers].astype(np.float64) - want[numbers]).max(initial=0))
        if not diff <= tolerance:
            return f"output differs by {diff:.3g} (tolerance {tolerance:.3g})"
    return ""


def _tensor(path: Path) -> np.ndarray:
    return numpy_helper.to_array(onnx.load_tensor(str(path)))


def _light_inputs(path: Path) -> list[np.ndarray]:
    model = onnx.load(path, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name not in initializers:
            shape = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
            n = int(np.prod(shape))
            inputs.append((np.arange(n).reshape(shape) / n).astype(np.float32))
    return inputs


def gemm_model(path: Path, megabytes: int, width: int = 2048) -> Path:
    """x (N, width) through Gemm layers of (width, width) float32 weights, about ``megabytes`` in all."""
    layers = max(1, round(megabytes * 2**20 / (4 * width * width)))
    rng = np.random.default_rng(0)
    names = ["x", *(f"h{i}" for i in range(1, layers)), "y"]
    nodes = [helper.make_node("Gemm", [names[i], f"w{i}", f"b{i}"], [names[i + 1]], transB=1) for i in range(layers)]
    weights = [numpy_helper.from_array(rng.standard_normal((width, width), np.float32), f"w{i}") for i in range(layers)]
    biases = [numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}") for i in range(layers)]
    graph = helper.make_graph(nodes, "gemms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])], weights + biases)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


_PEAK = """
import re, sys
import graphcore as gc

def memory(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

gc.from_onnx(sys.argv[2], flat=sys.argv[3] == "flat")  # warm-up: the imports, the first compile
before = memory("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here (Linux)
gc.from_onnx(sys.argv[1], flat=sys.argv[3] == "flat")
print(memory("VmHWM") - before)
"""


def peak_import_memory(path: Path, flat: bool = False) -> int:
    """Bytes that importing ``path`` adds to the peak resident memory of a fresh process (after a
    warm-up import of a small model: the imports and the first compile are not the import's)."""
    small = gemm_model(path.with_name(f"{path.stem}_warm_up.onnx"), 1, width=64)
    done = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(small), "flat" if flat else "grouped"],
                          capture_output=True, text=True, check=True, timeout=600, cwd=Path(__file__).parent.parent)
    return int(done.stdout.split()[-1])
