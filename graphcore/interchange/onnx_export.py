"""Export a graph to ONNX, verified against PyTorch in onnxruntime before the file appears.

The file is written beside its target under a temporary name, checked, and only then renamed
into place, so a failed export never leaves a file (and never replaces a good one).

Exporter: the legacy TorchScript exporter (``dynamo=False``) is used first: on this project's
graphs it agrees with PyTorch as closely as the torch.export-based one (both ~1e-6), and it is
several times faster (see ``benchmarks/bench_export.py``), which matters for an editor's
Export button. Where it fails, or writes a file onnxruntime cannot run or disagrees with
(a dilated conv with padding='same' becomes an auto_pad Conv that onnxruntime refuses), the
torch.export-based exporter is tried. Every file is verified, so the choice never changes
what a user can rely on.

Tolerance: the largest absolute difference between onnxruntime and PyTorch, over every output
and two batch sizes, must be at most ``RTOL * max(1, max |torch output|)``: 1e-4 absolute for
outputs of order one, relative to the output's scale for larger ones (a deep, randomly
initialised net can have large activations, where float32 rounding alone exceeds 1e-4).
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graphcore.core.analysis import Analysis
from graphcore.core.compiler import GraphModel, compile
from graphcore.core.diagnostics import GraphError, one_line
from graphcore.core.document import GraphDoc
from graphcore.core.inputs import InputSpec, input_specs, random_inputs

RTOL = 1e-4
EXPORT_BATCH = 2
VERIFY_BATCHES = (1, 3)
LEGACY_OPSET = 17
EXPORTERS = ("legacy", "dynamo")  # tried in this order until onnxruntime agrees


@dataclass(frozen=True)
class Int8Report:
    """What dynamic int8 quantization changed."""

    fp32_size: int
    size: int
    max_diff: float  # int8 model vs PyTorch (float32), max abs over outputs and batches
    fp32_max_diff: float

    @property
    def size_ratio(self) -> float:
        return self.size / self.fp32_size


@dataclass(frozen=True)
class ExportResult:
    """A verified ONNX file: where it is, how big, how close to PyTorch, how it was made."""

    path: Path
    size: int
    max_diff: float
    tolerance: float
    batch_sizes: tuple[int, ...]
    opset: int
    exporter: str
    seconds: float
    int8: Int8Report | None = None

    def __str__(self) -> str:
        text = (f"{self.path}: {self.size / 1e6:.2f} MB, opset {self.opset} ({self.exporter} exporter), "
                f"onnxruntime vs torch max abs diff {self.max_diff:.2e} at batch sizes "
                f"{'/'.join(map(str, self.batch_sizes))} (tolerance {self.tolerance:.1e}), {self.seconds:.1f} s")
        if self.int8:
            q = self.int8
            text += (f"; int8: {q.fp32_size / 1e6:.2f} MB -> {q.size / 1e6:.2f} MB ({q.size_ratio:.0%}), "
                     f"max abs diff {q.fp32_max_diff:.2e} -> {q.max_diff:.2e}")
        return text


def supported_opsets() -> range:
    """The ONNX opsets torch.onnx can write (read from torch, which states it in one private place)."""
    from torch.onnx import _constants

    return range(_constants.ONNX_MIN_OPSET, _constants.ONNX_MAX_OPSET + 1)


def export_onnx(
    doc_or_model: GraphDoc | GraphModel,
    path: str | os.PathLike,
    *,
    opset: int | None = None,
    quantize: str | None = None,
    fuse: bool = True,
) -> ExportResult:
    """Write ``doc_or_model`` to ``path`` as ONNX with a dynamic batch axis, in one file.

    A graph document is compiled with fresh random weights; a ``GraphModel`` keeps its own.
    ``fuse`` folds batch norms into convs: it calls the model's ``fuse()`` where it has one and
    lets the exporter fold; ``fuse=False`` keeps one ONNX op group per block (for re-import).
    ``quantize="int8"`` writes onnxruntime's dynamic int8 quantization of the verified model.
    Raises ``GraphError`` for an invalid graph, an export onnxruntime disagrees with, or a path
    that cannot be written; no file is left behind then.
    """
    if quantize not in (None, "int8"):
        raise GraphError(f"quantize must be None or 'int8', got {quantize!r}")
    opsets = supported_opsets()
    if opset is not None and opset not in opsets:
        raise GraphError(f"opset {opset} cannot be written: torch.onnx writes opsets {opsets.start} "
                         f"to {opsets.stop - 1}")
    started = time.perf_counter()
    model, specs, outputs = _prepare(doc_or_model, fuse)
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        exporter, used_opset, max_diff, tolerance = _export_verified(model, specs, outputs, tmp, opset, fuse, path)
        int8 = None
        if quantize == "int8":
            int8 = _quantize(tmp, model, specs, max_diff)
        size = tmp.stat().st_size
        os.replace(tmp, path)
    except OSError as exc:
        raise GraphError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(path, size, max_diff, tolerance, VERIFY_BATCHES, used_opset, exporter,
                        time.perf_counter() - started, int8)


def _export_verified(model: nn.Module, specs: list[InputSpec], outputs: list[str], tmp: Path, opset: int | None,
                     fuse: bool, path: Path) -> tuple[str, int, float, float]:
    """The first exporter whose file onnxruntime runs and agrees with; each failure is kept for the error."""
    problems = []
    for exporter in EXPORTERS:
        try:
            used_opset = _export(exporter, model, specs, outputs, tmp, opset, fuse)
        except Exception as exc:  # noqa: BLE001  (any exporter failure: try the next, then report all)
            problems.append(f"{exporter} exporter: {type(exc).__name__}: {one_line(str(exc))[:300]}")
            continue
        try:
            max_diff, tolerance = _verify(tmp, model, specs)
        except GraphError as exc:
            problems.append(f"{exporter} exporter: {exc.diagnostics[0].message}")
            continue
        if max_diff <= tolerance:
            return exporter, used_opset, max_diff, tolerance
        problems.append(f"{exporter} exporter: onnxruntime disagrees with PyTorch: max abs difference "
                        f"{max_diff:.3g} > tolerance {tolerance:.3g}")
    raise GraphError(f"{path}: ONNX export failed, the file was not written: " + " | ".join(problems))


def _prepare(doc_or_model: GraphDoc | GraphModel, fuse: bool) -> tuple[nn.Module, list[InputSpec], list[str]]:
    """The model to export (in eval mode, fused if asked), its inputs and its output names."""
    if isinstance(doc_or_model, GraphDoc):
        analysis = Analysis(doc_or_model)
        model = compile(doc_or_model, analysis=analysis)
    elif isinstance(doc_or_model, GraphModel):
        analysis = Analysis(doc_or_model.doc)
        model = copy.deepcopy(doc_or_model)  # fuse and eval must not touch the caller's model
    else:
        raise TypeError(f"export_onnx takes a GraphDoc or a GraphModel, not {type(doc_or_model).__name__}")
    model = model.eval()
    if fuse and callable(getattr(model, "fuse", None)):
        model = model.fuse() or model
    outputs = [analysis.nodes[n.id].params.name or n.id for n in analysis.doc.nodes if n.type == "output"]
    return model, input_specs(analysis, model), outputs


def _temp_beside(path: Path) -> Path:
    """A fresh file next to ``path`` (same directory, so the final rename is atomic)."""
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise GraphError(f"{path}: cannot write: {exc.strerror or exc}") from None
    os.close(fd)
    return Path(name)


def _export(exporter: str, model: nn.Module, specs: list[InputSpec], outputs: list[str], target: Path,
            opset: int | None, fuse: bool) -> int:
    """Write the model with one exporter; returns the opset used.

    ``fuse`` lets the exporters fold batch norms into the convs before them (smaller, faster
    files); without it every block's ops stay, so the file maps back onto the graph one to one.
    """
    example = random_inputs(specs, EXPORT_BATCH)
    names = [s.name for s in specs]
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            axes = {name: {0: "batch"} for name in names + outputs}
            mode = torch.onnx.TrainingMode.EVAL if fuse else torch.onnx.TrainingMode.PRESERVE
            torch.onnx.export(model, example, str(target), dynamo=False, opset_version=opset or LEGACY_OPSET,
                              input_names=names, output_names=outputs, dynamic_axes=axes, training=mode)
            return opset or LEGACY_OPSET
        batch = torch.export.Dim("batch")
        program = torch.onnx.export(model, example, dynamo=True, opset_version=opset, input_names=names,
                                    output_names=outputs, dynamic_shapes={name: {0: batch} for name in names},
                                    optimize=fuse, verbose=False)
        program.save(str(target), external_data=False)
        return program.model.opset_imports.get("", opset or 0)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_both(path: Path, model: nn.Module, specs: list[InputSpec], batch: int, seed: int = 1):
    """PyTorch's and onnxruntime's outputs for one random batch, as lists of arrays."""
    inputs = random_inputs(specs, batch, seed)
    with torch.no_grad():
        expected = model(*inputs)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    session = _session(path)
    feed = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs)}
    return expected, session.run(None, feed)


def _max_diff(expected: list[np.ndarray], got: list[np.ndarray]) -> float:
    if len(expected) != len(got) or any(a.shape != b.shape for a, b in zip(expected, got)):
        return float("inf")
    return max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(expected, got))


def _verify(path: Path, model: nn.Module, specs: list[InputSpec]) -> tuple[float, float]:
    """Max abs difference over two batch sizes, and the tolerance it is held to."""
    worst, scale = 0.0, 1.0
    for batch in VERIFY_BATCHES:
        try:
            expected, got = run_both(path, model, specs, batch)
        except Exception as exc:  # noqa: BLE001  (onnxruntime refusing the file is a failed export)
            raise GraphError(f"onnxruntime cannot run the exported model at batch {batch}: "
                             f"{type(exc).__name__}: {one_line(str(exc))[:300]}") from None
        worst = max(worst, _max_diff(expected, got))
        scale = max([scale, *(float(np.max(np.abs(a), initial=0.0)) for a in expected)])
    return worst, RTOL * scale


def _quantize(path: Path, model: nn.Module, specs: list[InputSpec], fp32_diff: float) -> Int8Report:
    """Replace the verified float32 file by its dynamic int8 quantization, and measure both."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_size = path.stat().st_size
    quantized = path.with_name(path.name + ".int8")
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(path, quantized, weight_type=QuantType.QInt8)
        diff = max(_max_diff(*run_both(quantized, model, specs, batch)) for batch in VERIFY_BATCHES)
        os.replace(quantized, path)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001  (a quantizer failure is reported, not a traceback)
        raise GraphError(f"int8 quantization failed: {type(exc).__name__}: {one_line(str(exc))[:300]}") from None
    finally:
        quantized.unlink(missing_ok=True)
    return Int8Report(fp32_size, path.stat().st_size, diff, fp32_diff)
