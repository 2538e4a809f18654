"""The fuzzer as a test: no document, however hostile, gets more than a clear refusal.

Documents come from a seeded RNG: mutated templates, small graphs of every block, random graphs,
hostile subgraphs (doubling, deep, recursive, repeated), hostile names and raw or deeply nested
JSON. Each goes through load, validate, summary, and, when it is clean and small, compile and
Python export. Every outcome must be OK or a ``GraphError`` whose diagnostics are one line each
and name nodes of the document — never another exception, never an "internal error" — within a
time limit per document. The fast suite runs a few hundred in-process; the slow one runs 10,000
in worker processes capped at 2 GB of address space.

    .venv/bin/python tests/test_fuzz.py [COUNT]     # the corpus, with a report of the figures
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

import blocks
import graphcore as gc
from graphcore.core.analysis import Analysis
from graphcore.core.document import loads
from graphcore.core.synthetic import nested_subgraphs

SECONDS_PER_DOCUMENT = 10.0
ADDRESS_SPACE = 2 * 2**30  # bytes, for each worker of the slow corpus
FAST_COUNT = 300
SLOW_COUNT = 10_000
SMALL_NODES, SMALL_PARAMS = 64, 200_000  # compiled and exported only up to this size (expanded)

HOSTILE_TEXTS = [
    "", " ", "x" * 5000, "__init__", "__x", "class", "self", "training", "forward", "doc", "x y", "1abc",
    "ünïcödé", "名前", "\u202eevil", "a\nb", "a\rb", "a\u2028b", "a\x00b", "\ud800", "😀", "_", "type_", "_x_",
    "NaN", "a.b", "subgraph:x", "# coding: utf-7", "+AAo-import os", "'\"\\", "${x}", "<script>", "in", "out",
]
HOSTILE_VALUES: list[Any] = [
    0, -1, 1, 2, 3, 7, 64, 65, 10**6, 10**9, 2**31, 2**63, 10**30, -10**30, 0.5, -0.0, 1e308,
    float("inf"), float("nan"), True, False, None, "", "3", "same", "valid", "x" * 200,
    [], [0], [3, 3], [1, 2, 3, 4, 5], [[3]], [-1], [10**9, 10**9], {}, {"a": 1},
]
UNKNOWN_TYPES = ["conv2", "Linear", "", "subgraph:", "subgraph:nowhere", "relu ", "input\n", "😀"]


# ----------------------------------------------------------------- documents
class Fuzzer:
    """One document from one seed: a family is drawn, then everything in it."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.types = [spec.type for spec in blocks.all_specs()]

    def document(self) -> str:
        make = self.rng.choices(list(FAMILIES.values()), weights=[w for w, _ in FAMILIES.values()])
        made = make[0][1](self)
        if isinstance(made, str):
            return made
        return json.dumps(made, ensure_ascii=self.rng.random() < 0.5)  # NaN and Infinity included

    # -- families
    def template(self) -> dict:
        data = gc.template(self.rng.choice(TEMPLATES)).to_dict()
        return self.mutated(data, self.rng.randint(1, 4))

    def block_graph(self) -> dict:
        """A small graph of one block, from one of its examples: mostly valid, so compile runs."""
        spec = self.rng.choice([s for s in blocks.all_specs() if s.examples and s.type not in ("input", "output")])
        example = self.rng.choice(spec.examples)
        params = spec.params.model_validate(example.params)
        nodes: list[dict] = []
        edges: list[dict] = []
        for port in spec.input_ports(params):
            if port.name in example.inputs:
                dtype = "int64" if port.dtype == "int" else "float32"
                nodes.append(node(f"x_{port.name}", "input", shape=list(example.inputs[port.name]), dtype=dtype))
                edges.append({"src": f"x_{port.name}", "dst": "b", "dst_port": port.name})
        nodes.append(node("b", spec.type, **example.params))
        for port in spec.output_ports(params):
            nodes.append(node(f"y_{port}", "output"))
            edges.append({"src": "b", "src_port": port, "dst": f"y_{port}"})
        data = {"format": "netcanvas.graph", "version": 1, "name": spec.type, "nodes": nodes, "edges": edges}
        return self.mutated(data, self.rng.choice([0, 0, 1, 2]))

    def random_graph(self) -> dict:
        count = self.rng.randint(0, 30)
        nodes = [node(self.node_id(i), self.node_type(), **self.params_for(None)) for i in range(count)]
        for item in nodes:
            spec = blocks.get(item["type"])
            if spec is not None and self.rng.random() < 0.8:
                item["params"] = self.params_for(spec)
        data = {"format": "netcanvas.graph", "version": 1, "name": "random", "nodes": nodes, "edges": []}
        for _ in range(self.rng.randint(0, 2 * count + 1)):
            MUTATIONS["add_edge"](self, data)
        return data

    def subgraphs(self) -> dict:
        kind = self.rng.choice(["doubling", "chain", "wide", "recursive", "repeat"])
        depth = {"doubling": 40, "chain": 400, "wide": 25, "recursive": 10, "repeat": 8}[kind]
        uses = {"chain": 1, "wide": self.rng.randint(3, 4)}.get(kind, 2)
        doc = nested_subgraphs(self.rng.randint(1, depth), uses=uses, features=self.rng.choice([1, 4, 8]))
        if kind == "recursive":
            names = list(doc.subgraphs)
            inner = doc.subgraphs[self.rng.choice(names)]
            self.rng.choice(inner.nodes[1:-1]).type = f"subgraph:{self.rng.choice(names)}"
        if kind == "repeat":
            for sub in [doc, *doc.subgraphs.values()]:
                for item in sub.nodes:
                    if item.type.startswith("subgraph:") and self.rng.random() < 0.5:
                        item.params["repeat"] = self.rng.choice([1, 2, 3, 64, 65, 0, -1, "2", 10**9])
        data = doc.to_dict()
        for sub in data.get("subgraphs", {}).values():
            self.mutated(sub, self.rng.choice([0, 0, 0, 1]))
        return self.mutated(data, self.rng.choice([0, 0, 1]))

    def names(self) -> dict:
        data = self.block_graph() if self.rng.random() < 0.5 else gc.template("lenet5").to_dict()
        renames = {item["id"]: self.rng.choice(HOSTILE_TEXTS) + self.rng.choice(["", "_1", "é"])
                   for item in data["nodes"] if self.rng.random() < 0.5}
        for item in data["nodes"]:
            item["id"] = renames.get(item["id"], item["id"])
            if self.rng.random() < 0.3:
                item["label"] = self.rng.choice(HOSTILE_TEXTS)
            if item["type"] in ("input", "output") and self.rng.random() < 0.3:
                item.setdefault("params", {})["name"] = self.rng.choice(HOSTILE_TEXTS)
        for edge in data["edges"]:
            edge["src"], edge["dst"] = renames.get(edge["src"], edge["src"]), renames.get(edge["dst"], edge["dst"])
        data["name"] = self.rng.choice(HOSTILE_TEXTS)
        return data

    def raw(self) -> str:
        depth = self.rng.choice([50, 150, 199, 200, 201, 1000, 5000, 100_000])
        deep = "[" * depth + "]" * depth
        base = json.dumps(gc.template("lenet5").to_dict())
        texts = [
            base.replace('"params": {"out_channels": 6', f'"params": {{"deep": {deep}, "out_channels": 6', 1),
            base[:-1] + f', "meta": {{"x": {deep}}}}}',
            base[: self.rng.randint(0, len(base))],
            deep, "[]", "42", "null", '"graph"', "{}",
            base.replace('"netcanvas.graph"', '"other"', 1),
            base.replace('"version": 1', self.rng.choice(['"version": -1', '"version": 10000000000000000000000',
                                                          '"version": "1"', '"version": true', '"version": 99'])),
            base.replace('"nodes": [', '"nodes": {"a": [', 1),
            base.replace('"src": "x"', '"src": 1', 1),
            base.replace('"edges": [', '"edges": [{"src": "x"}, ', 1),
            '{"format": "netcanvas.graph", "nodes": [' + ",".join(['{"id": "a", "type": "relu"}'] * 2000) + "]}",
        ]
        return self.rng.choice(texts)

    # -- parts
    def mutated(self, data: dict, count: int) -> dict:
        for _ in range(count):
            self.rng.choice(list(MUTATIONS.values()))(self, data)
        return data

    def node_id(self, i: int) -> str:
        return self.rng.choice(HOSTILE_TEXTS) if self.rng.random() < 0.1 else f"n{i}"

    def node_type(self) -> str:
        roll = self.rng.random()
        if roll < 0.1:
            return self.rng.choice(UNKNOWN_TYPES)
        return self.rng.choice(["input", "output"]) if roll < 0.35 else self.rng.choice(self.types)

    def params_for(self, spec: blocks.BlockSpec | None) -> dict:
        params = dict(self.rng.choice(spec.examples).params) if spec and spec.examples else {}
        fields = list(spec.params.model_fields) if spec else []
        for _ in range(self.rng.randint(0, 3)):
            name = self.rng.choice(fields) if fields and self.rng.random() < 0.9 else self.rng.choice(HOSTILE_TEXTS)
            params[name] = self.value(params.get(name))
        return params

    def value(self, current: Any) -> Any:
        if isinstance(current, int) and not isinstance(current, bool) and self.rng.random() < 0.5:
            return self.rng.choice([current + 1, current * 2, current - 1, -current, current * 10**6])
        return self.rng.choice(HOSTILE_VALUES)


def node(node_id: str, type_id: str, **params: Any) -> dict:
    return {"id": node_id, "type": type_id, "params": params}


def _set_param(fuzzer: Fuzzer, data: dict) -> None:
    if data["nodes"]:
        item = fuzzer.rng.choice(data["nodes"])
        spec = blocks.get(item["type"])
        fields = list(spec.params.model_fields) if spec else []
        params = item.setdefault("params", {})
        name = fuzzer.rng.choice(fields + list(params) + ["repeat", "junk"])
        params[name] = fuzzer.value(params.get(name))


def _set_type(fuzzer: Fuzzer, data: dict) -> None:
    if data["nodes"]:
        names = list(data.get("subgraphs", {}))
        choices = [fuzzer.node_type()] + [f"subgraph:{n}" for n in names]
        fuzzer.rng.choice(data["nodes"])["type"] = fuzzer.rng.choice(choices)


def _drop_node(fuzzer: Fuzzer, data: dict) -> None:
    if data["nodes"]:
        data["nodes"].pop(fuzzer.rng.randrange(len(data["nodes"])))


def _drop_edge(fuzzer: Fuzzer, data: dict) -> None:
    if data["edges"]:
        data["edges"].pop(fuzzer.rng.randrange(len(data["edges"])))


def _add_edge(fuzzer: Fuzzer, data: dict) -> None:
    """Any two nodes, so cycles and self-loops too; now and then a node that does not exist."""
    ids = [item["id"] for item in data["nodes"]] or ["x"]
    src, dst = fuzzer.rng.choice(ids), fuzzer.rng.choice(ids)
    if fuzzer.rng.random() < 0.1:
        src = fuzzer.rng.choice(HOSTILE_TEXTS)
    ports = ["in", "out", "in0", "in1", "temb", "skip", "context", "x"]
    data["edges"].append({"src": src, "dst": dst, "src_port": "out" if fuzzer.rng.random() < 0.8 else
                          fuzzer.rng.choice(ports), "dst_port": fuzzer.rng.choice(ports)})


def _rename(fuzzer: Fuzzer, data: dict) -> None:
    if data["nodes"]:
        fuzzer.rng.choice(data["nodes"])["id"] = fuzzer.rng.choice(HOSTILE_TEXTS)


def _relabel(fuzzer: Fuzzer, data: dict) -> None:
    if data["nodes"]:
        fuzzer.rng.choice(data["nodes"])["label"] = fuzzer.rng.choice(HOSTILE_TEXTS)


def _duplicate(fuzzer: Fuzzer, data: dict) -> None:
    if data["nodes"]:
        data["nodes"].append(json.loads(json.dumps(fuzzer.rng.choice(data["nodes"]))))


MUTATIONS: dict[str, Callable[[Fuzzer, dict], None]] = {
    "set_param": _set_param, "set_param_again": _set_param, "set_type": _set_type, "drop_node": _drop_node,
    "drop_edge": _drop_edge, "add_edge": _add_edge, "rename": _rename, "relabel": _relabel, "duplicate": _duplicate,
}
FAMILIES: dict[str, tuple[float, Callable[[Fuzzer], dict | str]]] = {
    "template": (30, Fuzzer.template), "block_graph": (25, Fuzzer.block_graph),
    "random_graph": (15, Fuzzer.random_graph), "subgraphs": (15, Fuzzer.subgraphs),
    "names": (8, Fuzzer.names), "raw": (7, Fuzzer.raw),
}
# The small templates: a large one is never compiled here, and only slows the corpus down.
TEMPLATES = ["lenet5", "autoencoder", "googlenet", "mobilenet_v1", "resnet18", "unet_ddpm_small",
             "video_unet_small", "vit_tiny", "alexnet"]


# ----------------------------------------------------------------- one document, checked
class BrokenContract(Exception):
    """An outcome that is neither OK nor a clear refusal."""


class Hang(BaseException):
    """Raised by the timer: a BaseException, so that no ``except Exception`` in the code under test eats it."""


@dataclass
class Outcome:
    seed: int
    kind: str  # refused (load), invalid, valid, compiled; or crash, hang, memory
    seconds: float
    detail: str = ""


def exercise(text: str) -> str:
    """Load, validate, summarise, and for a clean small graph compile and export; the outcome's kind."""
    try:
        doc = loads(text, "fuzz.json")
    except gc.GraphError as exc:
        check(exc.diagnostics, None)
        return "refused"
    analysis = Analysis(doc)
    check(analysis.diagnostics, {n.id for n in doc.nodes})
    try:
        table = gc.summary(doc, analysis=analysis)
    except gc.GraphError as exc:
        check(exc.diagnostics, {n.id for n in doc.nodes})
        return "invalid"
    expanded = sum(analysis.library.expanded_size(n) for n in doc.nodes)
    if expanded > SMALL_NODES or table.total_params > SMALL_PARAMS:
        return "valid"
    try:
        gc.compile(doc, analysis=analysis)
        gc.to_python(doc)
    except gc.GraphError as exc:
        check(exc.diagnostics, {n.id for n in doc.nodes})
        return "valid"
    return "compiled"


def check(diagnostics: list[gc.Diagnostic], ids: set[str] | None) -> None:
    """Each problem is one line, names a node of the document (or none), and is not a bug in disguise."""
    for problem in diagnostics:
        line = str(problem)
        if "\n" in line or "\r" in line:
            raise BrokenContract(f"a problem of several lines: {line[:200]!r}")
        if "internal error" in line or "Traceback" in line:
            raise BrokenContract(line[:300])
        if ids is not None and problem.node_id is not None and problem.node_id not in ids:
            raise BrokenContract(f"names a node the document does not have: {line[:200]!r}")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise Hang

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def warm_up() -> None:
    """Pay a process's one-time costs before any document is timed: the first ``normal_`` on a meta
    tensor (the Python export rebuilds modules there) imports sympy and torch's decompositions."""
    import torch

    with torch.device("meta"):
        torch.empty(1).normal_()


def run_one(seed: int) -> Outcome:
    text = Fuzzer(seed).document()
    start = time.perf_counter()
    try:
        with time_limit(SECONDS_PER_DOCUMENT):
            kind, detail = exercise(text), ""
    except Hang:
        kind, detail = "hang", f"over {SECONDS_PER_DOCUMENT:g} s"
    except MemoryError:
        kind, detail = "memory", "MemoryError"
    except Exception as exc:  # noqa: BLE001  (any other exception is what the fuzzer looks for)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        first_line = next(iter(str(exc).splitlines()), "")[:300]  # torch appends its C++ stack
        detail = f"{type(exc).__name__}: {first_line} ({Path(where.filename).name}:{where.lineno})"
        kind = "memory" if "can't allocate memory" in str(exc) else "crash"
    return Outcome(seed, kind, time.perf_counter() - start, detail)


# ----------------------------------------------------------------- the corpus, in capped workers
def worker(start: int, stop: int) -> None:
    """Run seeds ``start`` to ``stop`` under the address-space cap; one JSON outcome per line."""
    import torch

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    torch.set_num_threads(1)
    warm_up()
    for seed in range(start, stop):
        print(json.dumps(asdict(run_one(seed))), flush=True)


def corpus(count: int, workers: int) -> list[Outcome]:
    """Every seed below ``count``, spread over worker processes; a worker that dies (a crash below
    Python) counts its seed as a crash, and a new one carries on after it."""
    bounds = [count * i // workers for i in range(workers + 1)]
    pending = list(zip(bounds, bounds[1:]))
    found: dict[int, Outcome] = {}
    with tempfile.TemporaryDirectory() as folder:
        while pending:
            running = []
            for start, stop in pending:
                log = Path(folder) / f"{start}.jsonl"
                with log.open("w") as out:
                    running.append((start, stop, log, subprocess.Popen(
                        [sys.executable, __file__, "--worker", str(start), str(stop)], stdout=out)))
            pending = []
            for start, stop, log, process in running:
                process.wait()
                for line in log.read_text().splitlines():
                    outcome = Outcome(**json.loads(line))
                    found[outcome.seed] = outcome
                died = next((seed for seed in range(start, stop) if seed not in found), None)
                if died is not None:
                    found[died] = Outcome(died, "crash", 0.0, f"the worker exited with {process.returncode}")
                    pending += [(died + 1, stop)] if died + 1 < stop else []
    return [found[seed] for seed in range(count)]


def report(outcomes: list[Outcome], wall: float) -> str:
    kinds = Counter(o.kind for o in outcomes)
    slowest = max(outcomes, key=lambda o: o.seconds)
    lines = [f"{len(outcomes):,} fuzzed documents in {wall:.0f} s: crashes {kinds['crash']}, "
             f"hangs over {SECONDS_PER_DOCUMENT:g} s {kinds['hang']}, runs over {ADDRESS_SPACE / 2**30:g} GB "
             f"{kinds['memory']}",
             "outcomes: " + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common()),
             f"slowest: seed {slowest.seed}, {slowest.seconds:.2f} s"]
    lines += [f"  seed {o.seed}: {o.kind}: {o.detail}" for o in outcomes if o.kind in ("crash", "hang", "memory")]
    return "\n".join(lines)


# ----------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def warm() -> None:
    warm_up()


@pytest.mark.parametrize("seed", range(FAST_COUNT))
def test_a_fuzzed_document_is_ok_or_refused_clearly(seed: int, warm: None):
    outcome = run_one(seed)
    assert outcome.kind not in ("crash", "hang", "memory"), f"seed {seed}: {outcome.kind}: {outcome.detail}"


def test_the_fast_corpus_reaches_every_stage():
    """The generator is worth its time: every outcome occurs, compile and export included."""
    kinds = Counter(run_one(seed).kind for seed in range(0, FAST_COUNT, 3))
    assert {"refused", "invalid", "valid", "compiled"} <= set(kinds), kinds


@pytest.mark.slow
def test_ten_thousand_fuzzed_documents_in_capped_workers():
    start = time.perf_counter()
    outcomes = corpus(SLOW_COUNT, workers=max(2, os.cpu_count() or 2))
    text = report(outcomes, time.perf_counter() - start)
    print(text)
    assert not [o for o in outcomes if o.kind in ("crash", "hang", "memory")], text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(int(sys.argv[2]), int(sys.argv[3]))
    else:
        began = time.perf_counter()
        results = corpus(int(sys.argv[1]) if len(sys.argv) > 1 else SLOW_COUNT, workers=max(2, os.cpu_count() or 2))
        print(report(results, time.perf_counter() - began))
