"""ONNX import of many ops that share one name: a chain of Relu nodes all named "relu".

    .venv/bin/python benchmarks/bench_onnx_import.py [--ops 10000]

Every imported block needs a unique id; this times ``gc.from_onnx`` on such a chain, where a
namespace that tries suffixes one by one makes the import quadratic in the number of ops.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper

import graphcore as gc


def relu_chain(path: Path, ops: int) -> Path:
    """x (N, 4) -> Relu -> Relu -> ... -> y, every node named "relu"."""
    names = ["x", *(f"t{i}" for i in range(1, ops)), "y"]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]], name="relu") for i in range(ops)]
    graph = helper.make_graph(nodes, "relu_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000, help="length of the Relu chain")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = relu_chain(Path(tmp) / "relu_chain.onnx", args.ops)
        wall, cpu = time.perf_counter(), time.process_time()
        doc, _ = gc.from_onnx(path)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ids = [n.id for n in doc.nodes]
    assert len(set(ids)) == len(ids), "imported ids are not unique"
    # CPU time as well: on a shared machine the wall time also counts other processes' turns.
    print(f"import of {args.ops:,} Relu nodes all named 'relu': {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"({len(doc.nodes):,} nodes, {torch.get_num_threads()} torch threads)")


if __name__ == "__main__":
    main()
