"""``netcanvas export`` and ``netcanvas import``: the command-line side of codegen and ONNX.

``export`` takes a graph or a run folder (its graph.json and best.pt) and says which weights it
wrote. Both write their files atomically, and where they write two, both or neither, so a failure
leaves no partial output behind.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from graphcore.cli.arguments import int_between, nonempty_path, usage_error
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc, load, write_atomic
from graphcore.core.gallery import open_graph
from graphcore.core.subgraphs import standalone

if TYPE_CHECKING:
    from graphcore.core.inputs import InputSpec
    from graphcore.interchange.weights import Weights


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", help="graph JSON file, template name, or run folder (runs/NAME)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--python", type=nonempty_path, metavar="OUT.py",
                        help="write standalone PyTorch code; with weights, also OUT.pt (a state_dict) beside it")
    target.add_argument("--onnx", type=nonempty_path, metavar="OUT.onnx",
                        help="write ONNX with the weights inside, verified in onnxruntime")
    parser.add_argument("--weights", type=nonempty_path, metavar="best|last|W.pt",
                        help="the weights to export: a run folder's best.pt (its default) or last.pt, or a file "
                             "(a state_dict or a run checkpoint); default for a graph: fresh random weights")
    parser.add_argument("--int8", action="store_true", help="with --onnx: dynamic int8 quantization")
    parser.add_argument("--opset", type=_opset, help="with --onnx: ONNX opset version (what torch.onnx supports)")
    parser.add_argument("--no-fuse", action="store_true", help="with --onnx: keep batch norms as separate ops")
    parser.add_argument("--subgraph", metavar="NAME",
                        help="export only this subgraph of the file, as a graph of its own (a GAN's generator: "
                             "z -> image); from a GAN run, with the weights the run keeps for it")


def export_command(args: argparse.Namespace) -> int:
    if args.python and (args.int8 or args.opset or args.no_fuse):
        raise usage_error("export: --int8, --opset and --no-fuse go with --onnx")
    doc, weights = _graph_and_weights(args.graph, args.weights, args.subgraph)
    if args.python:
        _write_python(doc, weights, Path(args.python))
        return 0
    from graphcore.interchange.onnx_export import export_onnx

    result = export_onnx(weights.model(doc), args.onnx, opset=args.opset, quantize="int8" if args.int8 else None,
                         fuse=not args.no_fuse)
    print(f"{result}\nweights: {weights.description}")
    return 0


def _graph_and_weights(graph: str, choice: str | None, subgraph: str | None = None) -> tuple[GraphDoc, Weights]:
    """The graph to export (or its ``subgraph``) and its weights: a run folder's own graph and checkpoint
    (``choice`` best, the default, or last), or any graph with a weights file (fresh weights without one)."""
    from graphcore.interchange.weights import CHECKPOINTS, read_weights

    run = Path(graph)
    if run.is_dir():
        if not (run / "graph.json").is_file():
            raise GraphError(f"{run}: not a run folder (no graph.json)")
        doc = load(run / "graph.json")
        doc = standalone(doc, subgraph) if subgraph else doc
        if choice in (None, *CHECKPOINTS):
            return doc, read_weights(run, choice or "best", part=subgraph)
        return doc, read_weights(choice, part=subgraph)
    if choice in CHECKPOINTS:
        raise usage_error(f"export: --weights {choice} takes a run folder (runs/NAME) in place of {graph}")
    doc = open_graph(graph)
    return standalone(doc, subgraph) if subgraph else doc, read_weights(choice, part=subgraph)


def _write_python(doc: GraphDoc, weights: Weights, target: Path) -> None:
    """``target`` and, with weights that are not fresh, a state_dict beside it: both files or neither."""
    import torch

    from graphcore.interchange.codegen import to_python

    source = to_python(doc)
    written = f"{target}: Python for graph {doc.name!r} ({len(source.splitlines())} lines)"
    if weights.state is None:
        write_atomic(target, source.encode("utf-8"))
        print(f"{written}; {weights.description}: build_model() makes them, build_model('W.pt') loads saved ones")
        return
    state_file = _state_file_beside(target, weights)
    buffer = io.BytesIO()
    torch.save(weights.model(doc).state_dict(), buffer)  # checked against the graph before anything is written
    _write_both((state_file, buffer.getvalue()), (target, source.encode("utf-8")))
    print(f"{written}\n{state_file}: {weights.description}; load them with build_model({str(state_file)!r})")


def _state_file_beside(target: Path, weights: Weights) -> Path:
    """Where the Python's weights go: beside it, never over the file they come from or a run's checkpoint."""
    from graphcore.interchange.weights import CHECKPOINTS
    from graphcore.runtime.workspace import is_run_dir

    state_file = target.with_suffix(".pt")
    if state_file.exists() and (state_file.resolve() == Path(weights.origin).resolve()
                                or state_file.stem in CHECKPOINTS and is_run_dir(state_file.parent)):
        raise GraphError(f"{state_file}: would replace the run's checkpoint or the weights being exported; "
                         "write the Python elsewhere")
    return state_file


def _write_both(first: tuple[Path, bytes], second: tuple[Path, bytes]) -> None:
    """Write two files atomically, ``first`` first: if ``second`` fails, a new ``first`` is removed again."""
    existed = first[0].exists()
    write_atomic(*first)
    try:
        write_atomic(*second)
    except GraphError:
        if not existed:
            first[0].unlink(missing_ok=True)
        raise


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=nonempty_path,
                        help="an .onnx file, or a PyTorch module: FILE.py:NAME or package.module:NAME, where NAME() "
                             "builds it (traced on --input-shape, or on the file's example_inputs())")
    parser.add_argument("--input-shape", type=_input_shape, action="append", metavar="1x3x32x32[:int64]",
                        help="with a PyTorch module: the shape of an example input, the batch first (once per "
                             "input of forward; :int64 for ids)")
    parser.epilog = ("Importing FILE.py:NAME or package.module:NAME runs that code, as Python would: import only "
                     "code you trust.")
    parser.add_argument("--out", type=nonempty_path, required=True, metavar="G.json", help="where to write the graph")
    parser.add_argument("--weights", type=nonempty_path, metavar="W.pt",
                        help="where to write its weights (a state_dict)")
    parser.add_argument("--flat", action="store_true",
                        help="keep every op a node of the graph (default: the model's modules become subgraphs)")
    parser.add_argument("--json", action="store_true",
                        help="print the outcome as JSON; for a model that cannot be imported, every op NetCanvas "
                             "has no block for and every node it refuses, with why")


def import_command(args: argparse.Namespace) -> int:
    import torch

    from graphcore.core.document import dumps

    try:
        doc, state = _imported(args)
    except GraphError as exc:
        if not args.json:
            raise
        print(json.dumps(_refusal(args.model, exc), indent=2))
        return 1
    graph_path = Path(args.out)
    graph_file = (graph_path, dumps(doc).encode("utf-8"))
    if args.weights:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        _write_both((Path(args.weights), buffer.getvalue()), graph_file)
    else:
        write_atomic(*graph_file)
    params = sum(t.numel() for k, t in state.items() if not k.endswith(("running_mean", "running_var",
                                                                       "num_batches_tracked")))
    if args.json:
        print(json.dumps({"model": args.model, "ok": True, "graph": str(graph_path), "nodes": len(doc.nodes),
                          "subgraph_types": len(doc.subgraphs), "parameters": params, "weights": args.weights,
                          "notes": doc.meta.get("notes", [])}, indent=2))
        return 0
    types = f", {len(doc.subgraphs)} subgraph types" if doc.subgraphs else ""
    print(f"{graph_path}: graph {doc.name!r} ({len(doc.nodes)} nodes{types}, {params:,} parameters)"
          + (f"; weights in {args.weights}" if args.weights else ""))
    for note in doc.meta.get("notes", []):  # what the import changed (a model imported as one sample)
        print(f"note: {note}")
    return 0


def _refusal(model: str, exc: GraphError) -> dict:
    """A failed import as data: its diagnostics and, where the importer found them, the ops with
    no block (with counts) and the nodes or calls refused (op, node, why)."""
    from graphcore.interchange.onnx_import import ImportRefused
    from graphcore.interchange.torch_import import CallsRefused

    blockers = exc.to_dict() if isinstance(exc, ImportRefused | CallsRefused) else {"unmapped": [], "refused": []}
    return {"model": model, "ok": False, **blockers, "diagnostics": [d.to_dict() for d in exc.diagnostics]}


def _imported(args: argparse.Namespace) -> tuple[GraphDoc, dict]:
    """The graph and weights of an .onnx file, or of the PyTorch module a ``FILE.py:NAME`` or
    ``package.module:NAME`` target builds."""
    if args.model.endswith(".onnx") or ":" not in args.model or Path(args.model).is_file():
        if args.input_shape:
            raise usage_error("import: --input-shape goes with a PyTorch module (FILE.py:NAME), not an .onnx file")
        from graphcore.interchange.onnx_import import from_onnx

        return from_onnx(args.model, flat=args.flat)
    from graphcore.interchange.torch_import import from_torch
    from graphcore.interchange.torch_load import load_module

    loaded = load_module(args.model)
    inputs = tuple(spec.random(batch) for batch, spec in args.input_shape or ()) or loaded.example_inputs
    if inputs is None:
        raise GraphError(f"{args.model}: give the shape of each input with --input-shape (e.g. 1x3x224x224), "
                         "or define example_inputs() in the file")
    return from_torch(loaded.module, inputs, flat=args.flat)


def _input_shape(text: str) -> tuple[int, InputSpec]:
    """``1x3x32x32`` (floats) or ``8:int64`` (ids): the batch and the spec of one example input."""
    from graphcore.core.inputs import InputSpec

    shape, _, dtype = text.partition(":")
    sizes = shape.lower().split("x")
    if dtype not in ("", "float32", "int64") or not all(s.isdigit() and int(s) > 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"must be sizes joined by x, the batch first (1x3x32x32), optionally "
                                         f"with :int64, got {text!r}")
    batch, *sample = (int(s) for s in sizes)
    return batch, InputSpec("x", "x", tuple(sample), dtype or "float32")


def _opset(text: str) -> int:
    """An opset torch.onnx can write (imported only when ``--opset`` is given: torch is slow to import)."""
    from graphcore.interchange.onnx_export import supported_opsets

    opsets = supported_opsets()
    return int_between(opsets.start, opsets.stop - 1, "an opset")(text)
