"""``netcanvas export`` and ``netcanvas import``: the command-line side of codegen and ONNX.

Both write their files atomically, so a failure leaves no partial output behind.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from graphcore.cli.arguments import int_between, nonempty_path, usage_error
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import write_atomic
from graphcore.core.gallery import open_graph


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", help="graph JSON file or template name")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--python", type=nonempty_path, metavar="OUT.py", help="write standalone PyTorch code")
    target.add_argument("--onnx", type=nonempty_path, metavar="OUT.onnx", help="write ONNX, verified in onnxruntime")
    parser.add_argument("--int8", action="store_true", help="with --onnx: dynamic int8 quantization")
    parser.add_argument("--weights", type=nonempty_path, metavar="W.pt",
                        help="with --onnx: the weights to export (default: random)")
    parser.add_argument("--opset", type=_opset, help="with --onnx: ONNX opset version (what torch.onnx supports)")
    parser.add_argument("--no-fuse", action="store_true", help="with --onnx: keep batch norms as separate ops")


def export_command(args: argparse.Namespace) -> int:
    if args.python and (args.int8 or args.weights or args.opset or args.no_fuse):
        raise usage_error("export: --int8, --weights, --opset and --no-fuse go with --onnx")
    doc = open_graph(args.graph)
    if args.python:
        from graphcore.interchange.codegen import to_python

        source = to_python(doc)
        write_atomic(Path(args.python), source.encode("utf-8"))
        print(f"{args.python}: Python for graph {doc.name!r} ({len(source.splitlines())} lines)")
        return 0
    from graphcore.core.compiler import compile
    from graphcore.interchange.onnx_export import export_onnx

    model = compile(doc)
    if args.weights:
        model.init(args.weights)
    result = export_onnx(model, args.onnx, opset=args.opset, quantize="int8" if args.int8 else None,
                         fuse=not args.no_fuse)
    print(result)
    return 0


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=nonempty_path, help="an .onnx file")
    parser.add_argument("--out", type=nonempty_path, required=True, metavar="G.json", help="where to write the graph")
    parser.add_argument("--weights", type=nonempty_path, metavar="W.pt",
                        help="where to write its weights (a state_dict)")


def import_command(args: argparse.Namespace) -> int:
    import torch

    from graphcore.core.document import dumps
    from graphcore.interchange.onnx_import import from_onnx

    doc, state = from_onnx(args.model)
    graph_path = Path(args.out)
    if args.weights:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        weights_path = Path(args.weights)
        existed = weights_path.exists()
        write_atomic(weights_path, buffer.getvalue())
        try:
            write_atomic(graph_path, dumps(doc).encode("utf-8"))
        except GraphError:
            if not existed:
                weights_path.unlink(missing_ok=True)  # both files or neither
            raise
    else:
        write_atomic(graph_path, dumps(doc).encode("utf-8"))
    params = sum(t.numel() for k, t in state.items() if not k.endswith(("running_mean", "running_var",
                                                                       "num_batches_tracked")))
    print(f"{graph_path}: graph {doc.name!r} ({len(doc.nodes)} nodes, {params:,} parameters)"
          + (f"; weights in {args.weights}" if args.weights else ""))
    return 0


def _opset(text: str) -> int:
    """An opset torch.onnx can write (imported only when ``--opset`` is given: torch is slow to import)."""
    from torch.onnx import _constants  # private, but the one place torch states the range it writes

    return int_between(_constants.ONNX_MIN_OPSET, _constants.ONNX_MAX_OPSET, "an opset")(text)
