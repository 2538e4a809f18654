"""Edit round trip in Python on a large graph: apply an edit, re-analyse, build the delta.

    .venv/bin/python benchmarks/bench_editor.py [--nodes 300] [--repeat 50]

Prints the median and worst time of each kind of edit, and the full analysis for comparison.
The goal (DESIGN.md): an edit round trip well under 100 ms on a 300-node graph.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

from graphcore.core.analysis import Analysis
from graphcore.core.document import GraphDoc
from graphcore.editing.session import EditSession


def residual_chain(n_nodes: int, channels: int = 16, size: int = 32) -> GraphDoc:
    """A ResNet-like chain: input, then units of conv -> batchnorm -> relu -> add(skip), then output."""
    nodes = [{"id": "x", "type": "input", "params": {"shape": [channels, size, size]}}]
    edges = []
    prev = "x"
    i = 0
    while len(nodes) < n_nodes - 1:
        c, b, r, a = f"conv{i}", f"bn{i}", f"relu{i}", f"add{i}"
        nodes += [{"id": c, "type": "conv2d", "params": {"out_channels": channels, "kernel_size": 3, "padding": 1}},
                  {"id": b, "type": "batchnorm2d"}, {"id": r, "type": "relu"}, {"id": a, "type": "add"}]
        edges += [{"src": prev, "dst": c}, {"src": c, "dst": b}, {"src": b, "dst": r},
                  {"src": r, "dst": a, "dst_port": "in0"}, {"src": prev, "dst": a, "dst_port": "in1"}]
        prev = a
        i += 1
    nodes.append({"id": "y", "type": "output"})
    edges.append({"src": prev, "dst": "y"})
    return GraphDoc.model_validate({"name": f"chain{n_nodes}", "nodes": nodes, "edges": edges})


def timed(fn, repeat: int) -> list[float]:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--no-freeze", action="store_true",
                        help="leave the startup objects (torch, pydantic) to the cyclic GC, unlike the editor")
    args = parser.parse_args()
    doc = residual_chain(args.nodes)
    session = EditSession(doc)
    if not args.no_freeze:
        gc.freeze()  # as app.main does at startup: full GC passes over torch's objects cost ~200 ms
    print(f"graph: {len(doc.nodes)} nodes, {len(doc.edges)} edges; times in ms (median / max of {args.repeat})")

    def report(name: str, times: list[float]) -> None:
        print(f"  {name:<42} {statistics.median(times):7.2f} / {max(times):7.2f}")

    report("full Analysis(doc)", timed(lambda i: Analysis(doc), args.repeat))
    report("full view (load into the canvas)", timed(lambda i: json.dumps(session.view()), args.repeat))
    # Resizing the input changes every shape downstream: the worst case for update_node.
    report("set_params on the input (all shapes change)",
           timed(lambda i: json.dumps(session.set_params("x", {"shape": [16, 32 - i % 2 * 4, 32]}).to_dict()),
                 args.repeat))
    report("set_params mid-graph (no shape change)",
           timed(lambda i: json.dumps(session.set_params("bn30", {"eps": 1e-5 * (1 + i)}).to_dict()), args.repeat))
    last = session.doc.nodes[-2].id
    report("add_node", timed(lambda i: json.dumps(session.add_node("relu", position=(0, 900 + i)).to_dict()),
                             args.repeat))
    report("connect (replace an input's edge)",
           timed(lambda i: json.dumps(session.connect("x" if i % 2 else "conv0", "out", "conv5", "in").to_dict()),
                 args.repeat))
    report("move", timed(lambda i: json.dumps(session.move(last, i, i).to_dict()), args.repeat))
    for _ in range(args.repeat):
        session.connect("x", "out", "relu7", "in")
    report("undo (a connect)", timed(lambda i: json.dumps(session.undo().to_dict()), args.repeat))
    report("redo (a connect)", timed(lambda i: json.dumps(session.redo().to_dict()), args.repeat))
    ids = [n.id for n in session.doc.nodes[10:40]]

    def delete_and_undo(i: int) -> None:
        json.dumps(session.remove_nodes(ids).to_dict())
        json.dumps(session.undo().to_dict())

    report("remove 30 nodes + undo (two edits)", timed(delete_and_undo, args.repeat))


if __name__ == "__main__":
    main()
