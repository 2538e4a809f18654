"""ONNX export time, onnxruntime vs PyTorch CPU latency, and what int8 changes.

    .venv/bin/python benchmarks/bench_export.py [TEMPLATE ...] [--batch 1] [--repeats 20]

Defaults to resnet18 and vit_tiny (LeNet-5 where those templates are missing). For each: the
time of ``gc.export_onnx`` (legacy exporter, which it uses) and of the torch.export-based
exporter, median latency of one batch in PyTorch and in onnxruntime (float32 and int8), and
the int8 file size and output difference. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphcore as gc  # noqa: E402
from graphcore.core.analysis import Analysis  # noqa: E402
from graphcore.core.inputs import input_specs, random_inputs  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def exporter_seconds(model, inputs, names, outputs, path: Path, dynamo: bool) -> float | str:
    """One exporter alone (no verification), with a dynamic batch axis, to one file."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(), redirect_stdout(StringIO()), redirect_stderr(StringIO()):
            warnings.simplefilter("ignore")
            if dynamo:
                batch = torch.export.Dim("batch")
                torch.onnx.export(model, inputs, str(path), dynamo=True, external_data=False, input_names=names,
                                  output_names=outputs, dynamic_shapes={n: {0: batch} for n in names})
            else:
                # (output names are needed: without them the legacy exporter reads GraphModule.graph)
                torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=17, input_names=names,
                                  output_names=outputs, dynamic_axes={n: {0: "batch"} for n in names + outputs})
    except Exception as exc:  # noqa: BLE001  (report, don't stop the benchmark)
        return f"failed ({type(exc).__name__})"
    return time.perf_counter() - start


def bench(name: str, batch: int, repeats: int, workdir: Path) -> None:
    import onnxruntime as ort

    doc = gc.template(name)
    model = gc.compile(doc).init(seed=0).eval()
    specs = input_specs(Analysis(doc), model)
    inputs = random_inputs(specs, batch)
    params = sum(p.numel() for p in model.parameters())

    fp32 = gc.export_onnx(model, workdir / f"{name}.onnx")
    int8 = gc.export_onnx(model, workdir / f"{name}.int8.onnx", quantize="int8")
    example, names = random_inputs(specs, 2), [s.name for s in specs]
    outputs = [n.params.get("name") or n.id for n in doc.nodes if n.type == "output"]
    legacy = exporter_seconds(model, example, names, outputs, workdir / f"{name}.legacy.onnx", dynamo=False)
    dynamo = exporter_seconds(model, example, names, outputs, workdir / f"{name}.dynamo.onnx", dynamo=True)

    def ort_runner(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs)}
        return lambda: session.run(None, feed)

    with torch.inference_mode():
        torch_ms = median_ms(lambda: model(*inputs), repeats)
    ort_ms = median_ms(ort_runner(fp32.path), repeats)
    int8_ms = median_ms(ort_runner(int8.path), repeats)

    q = int8.int8
    def seconds(value: float | str) -> str:
        return f"{value:.2f} s" if isinstance(value, float) else value

    both = isinstance(dynamo, float) and isinstance(legacy, float)
    print(f"\n{name}: {params / 1e6:.2f} M params, batch {batch}, {torch.get_num_threads()} threads")
    print(f"  gc.export_onnx (export + 2 onnxruntime checks): {fp32.seconds:.2f} s")
    print(f"  exporters alone: legacy {seconds(legacy)}, torch.export-based {seconds(dynamo)}"
          + (f" ({dynamo / legacy:.1f}x the legacy time)" if both else ""))
    print(f"  onnxruntime vs torch max abs diff: {fp32.max_diff:.2e} (tolerance {fp32.tolerance:.1e})")
    print(f"  latency: torch {torch_ms:.2f} ms, onnxruntime fp32 {ort_ms:.2f} ms ({torch_ms / ort_ms:.2f}x torch), "
          f"onnxruntime int8 {int8_ms:.2f} ms ({ort_ms / int8_ms:.2f}x fp32)")
    print(f"  int8: size {q.fp32_size / 1e6:.2f} MB -> {q.size / 1e6:.2f} MB ({q.size_ratio:.0%}), "
          f"max abs diff vs torch {q.fp32_max_diff:.2e} -> {q.max_diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("templates", nargs="*")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    names = args.templates or [n for n in ("resnet18", "vit_tiny") if n in gc.templates()] or ["lenet5"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            bench(name, args.batch, args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
