"""Open an ONNX model as an editable graph: ``from_onnx(path) -> (GraphDoc, state_dict)``.

An import runs in three passes over the ONNX nodes, in graph order:

1. **Folding.** Every node whose inputs are all constants is computed now (``FOLDERS``, in
   ``onnx_fold``): weights that a model computes (ConstantOfShape, a transposed initializer) and
   the shape arithmetic that exporters write for a dynamic batch (Shape -> Gather -> Div ->
   Concat -> Reshape). The batch size is the symbol ``N`` (``BATCH``, a ``BatchSize``) inside
   folded shape values, so a Reshape to ``[N, -1]`` is known to keep the batch.
2. **Patterns.** Rules in ``PATTERNS`` (``onnx_patterns``) find the fused forms exporters write
   for one block (GELU as Div/Erf/Add/Mul/Mul, LayerNorm as ReduceMean/Sub/Pow/...) and claim
   their nodes for that block.
3. **Conversion.** Each remaining op maps onto a block (``CONVERTERS``: Conv -> conv2d, Gemm ->
   linear, ...); its initializers become the block's weights.

Nothing stops at the first problem: a model that cannot be imported is an ``ImportRefused``
listing every ONNX op NetCanvas has no block for (with how often each occurs) and every node it
refuses (op, node name and why), in one error.

A file is untrusted input: tensors stored in files of their own are read from the model's folder
only, and every tensor is sized from its shape against ``ImportLimits`` before it is allocated.
Weights are read straight from the file into the arrays that become the state_dict (see
``onnx_stream``), so an import holds them once.
"""

from __future__ import annotations

import collections
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

import blocks
from blocks.activation import ONNX_OPS as _ACTIVATIONS
from graphcore.core.analysis import RESERVED_IDS, Analysis, check_id, upstream
from graphcore.core.compiler import compile
from graphcore.core.diagnostics import GraphError, error, errors, one_line
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.names import Namespace, identifier
from graphcore.interchange.hierarchy import group_by_scope, layered_layout, onnx_scopes
from graphcore.interchange.onnx_stream import MalformedModel, Streamed, skeleton

Converter = Callable[["_Importer", "onnx.NodeProto"], None]  # noqa: F821  (onnx is imported lazily)
CONVERTERS: dict[str, Converter] = {}
ONE_SAMPLE_OPS: set[str] = set()
"""Op types whose converters also read a model imported as one sample (see ``from_onnx``): element-wise
ones, and those that number their dims through ``_Importer.axis``. Any other op in such a model is
refused: a rule written for a batch in dim 0 would read that model's dims one place off."""


class Folder(NamedTuple):
    """How an op is computed on constants, and how many elements its result will hold, known from
    its inputs' shapes before the result is allocated. ``view``: the result is a view of its input
    (a broadcast), which allocates nothing, so only the limit on one tensor's size applies."""

    fold: Callable
    elements: Callable
    view: bool = False


FOLDERS: dict[str, Folder] = {}


class Match(NamedTuple):
    """What a pattern rule found: the ONNX nodes it covers (indexes in graph order; the last one
    computes the result) and the block they are. A form that is several blocks in a row (a strided
    view read as reshape, slice and permute) names the first in ``block`` and the rest in ``then``,
    each fed by the one before; ``block`` '' is a form that computes its input unchanged. ``why``:
    a form recognised that cannot be imported, refused in one line at its last node (rather than
    one refusal per op it is made of)."""

    nodes: tuple[int, ...]
    block: str
    params: dict
    inputs: list[str] | dict[str, str]
    weights: dict[str, np.ndarray] | None = None
    then: tuple[tuple[str, dict], ...] = ()
    why: str = ""


Pattern = Callable[["_Importer", "onnx.NodeProto"], Match | None]  # noqa: F821
# anchor op type -> (priority, rule); a sweep over the graph per priority, highest first, so a form
# that contains another (attention contains linear layers) claims its nodes before the smaller one.
PATTERNS: dict[str, list[tuple[int, Pattern]]] = collections.defaultdict(list)

# Element types whose arrays torch can hold as weights (bfloat16, float8 or int4 it cannot).
READABLE_TYPES = ("FLOAT", "DOUBLE", "FLOAT16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                  "UINT64", "BOOL")
# Input element types -> the input block's dtype: NetCanvas computes in float32, and ids are int64.
INPUT_DTYPES = {1: "float32", 10: "float32", 11: "float32", 6: "int64", 7: "int64"}
STANDARD_DOMAINS = ("", "ai.onnx")
ONE_SAMPLE_NOTE = ("this model's inputs do not share a batch dim: imported as one sample (each input's whole shape "
                   "is one sample's, with the batch added in front)")
FLOAT64_NOTE = "float64 inputs are computed in float32, as NetCanvas computes: values beyond ±3.4e38 overflow"


@dataclass(frozen=True)
class BatchSize:
    """A size computed from the batch size N: ``scale·N + offset``. Exporters compute with N for a
    dynamic batch (``x.view(x.size(0) // 2, ...)``); folding keeps it exact, and a Reshape whose
    first size is N itself keeps the batch."""

    scale: Fraction = Fraction(1)
    offset: Fraction = Fraction(0)

    def _linear(self, scale: Fraction, offset: Fraction) -> BatchSize | int:
        if scale == 0:
            return int(offset) if offset.denominator == 1 else float(offset)
        return BatchSize(scale, offset)

    @staticmethod
    def _number(other) -> Fraction:
        if isinstance(other, BatchSize):
            raise TypeError("combines two sizes that depend on the batch")
        return Fraction(int(other)) if float(other).is_integer() else Fraction(float(other))

    def __add__(self, other) -> BatchSize | int:
        return self._linear(self.scale, self.offset + self._number(other))

    __radd__ = __add__

    def __sub__(self, other) -> BatchSize | int:
        return self._linear(self.scale, self.offset - self._number(other))

    def __rsub__(self, other) -> BatchSize | int:
        return self._linear(-self.scale, self._number(other) - self.offset)

    def __mul__(self, other) -> BatchSize | int:
        factor = self._number(other)
        return self._linear(self.scale * factor, self.offset * factor)

    __rmul__ = __mul__

    def __truediv__(self, other) -> BatchSize | int:
        divisor = self._number(other)
        return self._linear(self.scale / divisor, self.offset / divisor)

    __floordiv__ = __truediv__  # sizes divide exactly where a model works at all

    def __neg__(self) -> BatchSize | int:
        return self._linear(-self.scale, -self.offset)

    def __int__(self) -> int:
        raise TypeError(f"the size {self} depends on the batch")

    def __str__(self) -> str:
        text = "N" if self.scale == 1 else f"{self.scale}·N"
        return text + (f" + {self.offset}" if self.offset > 0 else f" - {-self.offset}" if self.offset else "")

    __repr__ = __str__


BATCH = BatchSize()  # the batch size N inside folded shape values


@dataclass(frozen=True)
class ImportLimits:
    """How much an import may allocate. A few KB of ONNX (Concats that double a constant) would
    otherwise have constant folding ask for terabytes, so sizes are checked before allocating."""

    tensor_elements: int = 2**28  # any one initializer or folded constant (1 GiB of float32)
    folded_elements: int = 2**27  # all folded constants together (initializers are bounded by the files)


@dataclass(frozen=True)
class Refusal:
    """One ONNX node the import refuses: its op, its name ('' where it has none) and why, as the
    end of a sentence about it ("reshapes across the batch dim")."""

    op: str
    node: str
    why: str


class ImportRefused(GraphError):
    """A model that cannot be imported, with everything that stops it, grouped: the ONNX ops that
    no block stands for, with how often each occurs, and every node refused, with why. One line
    (diagnostic) per group; ``to_dict()`` gives them as data."""

    def __init__(self, model: str, unmapped: dict[str, int], refused: list[Refusal]):
        self.model, self.unmapped, self.refused = model, unmapped, refused
        super().__init__([error(None, line) for line in _blocker_lines(model, unmapped, refused)])

    def to_dict(self) -> dict:
        """The blockers as plain data, for JSON."""
        return {"unmapped": [{"op": op, "count": count} for op, count in self.unmapped.items()],
                "refused": [asdict(r) for r in self.refused]}


class Refused(Exception):
    """Raised by a converter, fold or pattern (``_Importer.fail``): this node cannot be imported."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def converts(*op_types: str, one_sample: bool = False) -> Callable[[Converter], Converter]:
    """Register the converter of ONNX op types (one converter per op type); ``one_sample``: it also
    converts them in a model imported as one sample (``ONE_SAMPLE_OPS``)."""
    def register(fn: Converter) -> Converter:
        for op in op_types:
            if op in CONVERTERS:
                raise ValueError(f"ONNX op {op} already has a converter")
            CONVERTERS[op] = fn
            if one_sample:
                ONE_SAMPLE_OPS.add(op)
        return fn
    return register


def folds(*op_types: str, elements: Callable | None = None, view: bool = False):
    """Register how ONNX op types are folded on constants, and how many elements the result holds
    (default: as many as the first input). A rule returns one array, or a tuple for several outputs."""
    def register(fn):
        for op in op_types:
            if op in FOLDERS:
                raise ValueError(f"ONNX op {op} already has a folding rule")
            FOLDERS[op] = Folder(fn, elements or _first_input, view)
        return fn
    return register


def pattern(*anchors: str, priority: int = 0) -> Callable[[Pattern], Pattern]:
    """Register a pattern rule, tried at every node of the ``anchors`` op types before conversion;
    rules of a higher ``priority`` go over the whole graph first."""
    def register(fn: Pattern) -> Pattern:
        for anchor in anchors:
            PATTERNS[anchor].append((priority, fn))
        return fn
    return register


def _first_input(imp, node, inputs) -> int:
    return inputs[0].size


# ---------------------------------------------------------------------- entry point
def from_onnx(path: str | os.PathLike, limits: ImportLimits = ImportLimits(), *,
              flat: bool = False) -> tuple[GraphDoc, dict[str, torch.Tensor]]:
    """The graph and its weights (a state_dict that ``gc.compile(doc)`` loads with strict=True),
    laid out in layers. The exporter's modules become subgraphs (see ``hierarchy``); ``flat``
    keeps every op a node of the graph itself.

    ``limits`` bounds the tensors the import may create; a file that needs more is a ``GraphError``.
    A model with ops or uses NetCanvas cannot import is an ``ImportRefused`` that lists them all.

    NetCanvas graphs put a batch dim N before each sample. A model whose inputs cannot share one
    (fixed first sizes that differ: a (2, 3) @ (3, 4) product) is imported **as one sample**: each
    input's whole shape is a sample's, the batch is added in front, and the graph computes what the
    model computes, at batch 1, for every sample. So is a model of fixed shapes that cannot be
    imported with its first dim as the batch (it splits or reduces along it) but can as one sample.
    What the import changed is said in ``doc.meta["notes"]``."""
    path = Path(path)
    model, streamed = _load(path)
    one_sample = _unshared_batch(model)
    result = _attempt(model, streamed, path, limits, one_sample)
    if isinstance(result, GraphError) and not one_sample and _fixed_shapes(model):
        again = _attempt(model, streamed, path, limits, one_sample=True)
        result = result if isinstance(again, GraphError) else again  # the batch's reasons are the ones to show
    if isinstance(result, GraphError):
        raise result
    doc, state, analysis, origin = result
    if not flat:
        by_onnx_node = onnx_scopes(model)
        scopes = {nid: by_onnx_node.get(name, ()) for nid, name in origin.items()}
        doc, state = group_by_scope(doc, state, scopes, analysis=analysis)
    return layered_layout(doc), state


def _attempt(model, streamed: dict[str, Streamed], path: Path, limits: ImportLimits, one_sample: bool):
    """(the flat graph, its weights, its analysis, block id -> ONNX node), or the GraphError that
    refuses it (without its traceback, which would keep the importer and its weights alive)."""
    try:
        importer = _Importer(model, streamed, path, limits, one_sample)
        doc, state = importer.run()
        analysis = Analysis(doc)
        problems = errors(analysis.diagnostics)
        if problems:
            raise GraphError([p.__class__(p.severity, p.node_id, p.port, f"{path.name}: imported graph: {p.message}",
                                          p.hint) for p in problems])
        _check_weights(doc, analysis, state, path)  # on the flat graph: one module to build, not one per subgraph
    except GraphError as exc:
        return exc.with_traceback(None)
    return doc, state, analysis, importer.origin


def _graph_inputs(model) -> list:
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def _input_dims(value) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _unshared_batch(model) -> bool:
    """Whether the inputs' first sizes are fixed and differ, so that no one of them is a batch."""
    firsts = [(_input_dims(v) or [None])[0] for v in _graph_inputs(model)]
    return None not in firsts and len(set(firsts)) > 1


def _fixed_shapes(model) -> bool:
    """Whether every input has a fixed size in every dim (the batch's included)."""
    return all(None not in _input_dims(v) for v in _graph_inputs(model))


def _check_weights(doc: GraphDoc, analysis: Analysis, state: dict[str, torch.Tensor], path: Path) -> None:
    """The weights fit the graph, checked on a model built on the meta device, which allocates
    nothing: a model as large again as the weights would double the import's memory."""
    with torch.device("meta"):
        model = compile(doc, analysis=analysis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns that loading into meta tensors does nothing
        model._load_checked(state, str(path))


def _load(path: Path):
    """The model's skeleton (large weights left in the file), checked and with inferred shapes,
    and where those weights are."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        data, streamed = skeleton(path)
    except OSError as exc:
        raise GraphError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except MalformedModel:
        data, streamed = b"", {}
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError):
        model = None
    if model is None or not model.ir_version or not model.graph.node:
        raise GraphError(f"{path}: not an ONNX model (it does not parse as an ONNX ModelProto with a graph)")
    try:
        checkable, outside = _without_outside_data(model)
        onnx.checker.check_model(checkable)
        inferred = onnx.shape_inference.infer_shapes(checkable)
    except Exception as exc:  # noqa: BLE001  (onnx raises several kinds for a broken model)
        raise GraphError(f"{path}: not a valid ONNX model: {one_line(str(exc))[:300]}") from None
    added = {t.name for t in outside} - {v.name for v in model.graph.input}
    kept_inputs = [v for v in inferred.graph.input if v.name not in added]
    del inferred.graph.input[:]
    inferred.graph.input.extend(kept_inputs)
    inferred.graph.initializer.extend(outside)
    return inferred, streamed


def _without_outside_data(model):
    """A copy of ``model`` whose initializers kept outside it (in the model file past the skeleton,
    or in files of their own) are typed graph inputs instead, and those initializers. Their types
    and shapes are all that checking and shape inference read, and the checker, given a model
    rather than a path, would look for their files in the working directory; ``_Importer.array``
    reads them, from the model's folder only."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers = list(copy.graph.initializer)
    outside = [t for t in initializers if onnx.external_data_helper.uses_external_data(t)]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(t for t in initializers if not onnx.external_data_helper.uses_external_data(t))
    inputs = {v.name for v in copy.graph.input}
    copy.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                            for t in outside if t.name not in inputs)
    return copy, outside


class _Importer:
    def __init__(self, model, streamed: dict[str, Streamed], path: Path, limits: ImportLimits,
                 one_sample: bool = False):
        import onnx
        from onnx import numpy_helper

        self.onnx, self.numpy_helper = onnx, numpy_helper
        self.path, self.limits, self.streamed = path, limits, streamed
        # dims NetCanvas puts before the model's own: none, or the batch of a model imported as one
        # sample, whose computed tensors' dims are then kept with a 1 in front, as if it had a batch
        self.lead = int(one_sample)
        self.notes: list[str] = [ONE_SAMPLE_NOTE] if one_sample else []  # what the import changed, for the user
        self.folded = 0  # elements in all folded constants so far
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), 13)
        self.opset_imports, self.ir_version = list(model.opset_import), model.ir_version
        self.consts: dict[str, np.ndarray] = {i.name: self.array(i, f"initializer {i.name!r}")
                                              for i in self.graph.initializer}
        self.values: dict[str, tuple[str, str]] = {}  # ONNX tensor -> (node id, port)
        self.dims: dict[str, list] = {}  # ONNX tensor -> its dims (ints, or None where unknown)
        self.elem_types: dict[str, int] = {}  # ONNX tensor -> its element type
        for info in [*self.graph.value_info, *self.graph.input, *self.graph.output]:
            tensor_type = info.type.tensor_type
            self.elem_types[info.name] = tensor_type.elem_type
            if tensor_type.HasField("shape"):
                self.dims[info.name] = self._batched([d.dim_value if d.HasField("dim_value") else None
                                                      for d in tensor_type.shape.dim], info.name)
        self.nodes_in_order = list(self.graph.node)
        self.index = {id(node): i for i, node in enumerate(self.nodes_in_order)}
        self.users: dict[str, list[int]] = collections.defaultdict(list)  # ONNX tensor -> consuming nodes
        self.producers: dict[str, int] = {}  # ONNX tensor -> index of the node that computes it
        for i, node in enumerate(self.nodes_in_order):
            for name in node.input:
                self.users[name].append(i)
            self.producers.update(dict.fromkeys(node.output, i))
        self.graph_outputs = {value.name for value in self.graph.output}
        self.computed = _computed_from_inputs(self.graph, self.consts, self.nodes_in_order)
        self.batch = _fixed_batch(self.graph, self.consts, self.dims)
        self.handled: set[int] = set()  # nodes folded, or claimed by a pattern other than its last node
        self.folded_nodes: set[int] = set()  # (a Shape node reads only the size of what it reads)
        # nodes of constants that did not fold -> why: refused when converted, unless a pattern claims them
        # (the Range over the batch in torch.export's as_strided)
        self.unfolded: dict[int, str] = {}
        self.matches: dict[int, Match] = {}  # index of a pattern's last node -> what it found
        self.anchors: dict[int, int] = {}  # index of a pattern's last node -> the node it was found at
        self.unmapped: collections.Counter[str] = collections.Counter()
        self.refused: list[Refusal] = []
        self.poisoned: set[str] = set()  # tensors of refused nodes: their users are not refused again
        self.ids = Namespace(RESERVED_IDS)
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.state: dict[str, torch.Tensor] = {}
        self.origin: dict[str, str] = {}  # block id -> the ONNX node it came from (its module scope)

    def _batched(self, dims: list, name: str) -> list:
        """A computed tensor's dims as the converters read them: with the batch first."""
        return [1, *dims] if self.lead and name not in self.consts else dims

    # ------------------------------------------------------------------ driver
    def run(self) -> tuple[GraphDoc, dict[str, torch.Tensor]]:
        for value in self.graph.input:
            if value.name not in self.consts:
                self._input(value)
        self._fold_constants()
        self._match_patterns()
        self._convert()
        for value in self.graph.output:
            self._output(value)
        if self.unmapped or self.refused:
            raise ImportRefused(self.path.name, dict(self.unmapped.most_common()), self.refused)
        return self._pruned(), self.state

    def _fold_constants(self) -> None:
        """Fold every node that can be, in rounds. Shape inference cannot size what follows a Reshape
        to a computed target, and a Shape node may read such a size; so after a round that folded
        something while sizes are missing, shapes are inferred again and the rest is retried. What
        does not fold stays for the patterns (``unfolded``)."""
        failed: dict[int, str] = {}
        while True:
            progress = False
            for i, node in enumerate(self.nodes_in_order):
                if i in self.handled or not self._foldable(node):
                    continue
                try:
                    self._fold(node)
                except Refused as refusal:
                    failed[i] = refusal.why
                    continue
                self.handled.add(i)
                self.folded_nodes.add(i)
                failed.pop(i, None)
                progress = True
            if not progress:
                break
            learned = self._sizes_missing() and self._infer_again()
            if not failed and not learned:  # (a node that failed may fold now that others have)
                break
        self.unfolded = failed

    def _sizes_missing(self) -> bool:
        """Whether a node left to convert computes a tensor of sizes not known (batch aside)."""
        return any(None in self.dims.get(out, [None])[1:] or out not in self.dims
                   for i, node in enumerate(self.nodes_in_order) if i not in self.handled for out in node.output)

    def _foldable(self, node) -> bool:
        return _standard(node) and node.op_type in FOLDERS and (
            node.op_type == "Shape" or all(n in self.consts for n in node.input if n))

    def _infer_again(self) -> bool:
        """Infer shapes again on the nodes not folded, with the folded values as initializers
        (large ones as typed inputs, sizes of the batch as 0, which a Reshape reads as "keep this
        size"); True where that found a size not known before."""
        onnx = self.onnx
        remaining = [n for i, n in enumerate(self.nodes_in_order) if i not in self.handled]
        used = {name for n in remaining for name in n.input if name in self.consts}
        initializers, typed = [], []
        for name in used:
            value = self.consts[name]
            known = value if value.dtype != object else _reshape_target(value)
            if known is not None and known.size <= 64:
                initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(known), name))
            else:
                elem = onnx.helper.np_dtype_to_tensor_dtype(value.dtype if known is not None else np.dtype(np.int64))
                typed.append(onnx.helper.make_tensor_value_info(name, elem, list(value.shape)))
        inputs = [v for v in self.graph.input if v.name not in self.consts]
        reshaped = [info for n in remaining if n.op_type == "Reshape" and (info := self._reshaped_info(n)) is not None]
        graph = onnx.helper.make_graph(remaining, self.graph.name or "g", inputs + typed, list(self.graph.output),
                                       initializers, value_info=reshaped)
        model = onnx.helper.make_model(graph, opset_imports=self.opset_imports, ir_version=self.ir_version)
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001  (what inference cannot do now stays unknown, as before)
            return False
        learned = False
        for info in [*inferred.graph.value_info, *inferred.graph.output]:
            shape = info.type.tensor_type.shape
            dims = self._batched([d.dim_value if d.HasField("dim_value") else None for d in shape.dim], info.name)
            known = self.dims.get(info.name)
            if info.type.tensor_type.HasField("shape") and (known is None or dims != known and all(
                    k is None or k == d for k, d in zip(known, dims))) and len(dims) == len(known or dims):
                learned |= known != dims
                self.dims[info.name] = dims
        return learned

    def _reshaped_info(self, node):
        """The result of a Reshape to a folded target with N in it elsewhere than first (which
        inference cannot be given: a 0 there would copy another size), typed with N's sizes unknown."""
        target, elem = self.consts.get(node.input[1]), self.elem_types.get(node.input[0])
        if target is None or target.dtype != object or target.ndim != 1 or _reshape_target(target) is not None \
                or not elem or not all(isinstance(d, BatchSize) or d > 0 for d in target):
            return None
        dims = [None if isinstance(d, BatchSize) else int(d) for d in target]
        return self.onnx.helper.make_tensor_value_info(node.output[0], elem, dims)

    def _match_patterns(self) -> None:
        if self.lead:  # the rules read dims as a batch's; a model imported as one sample goes op by op
            return
        for priority in sorted({p for rules in PATTERNS.values() for p, _ in rules}, reverse=True):
            for i, node in enumerate(self.nodes_in_order):
                if i in self.handled or i in self.matches or not _standard(node):
                    continue
                for rule in (rule for p, rule in PATTERNS.get(node.op_type, ()) if p == priority):
                    try:
                        match = rule(self, node)
                    except Refused:  # a rule that does not fit here is no reason to refuse the node
                        match = None
                    if match is not None and self._claim(match):
                        self.anchors[max(match.nodes)] = i
                        break

    def _claim(self, match: Match) -> bool:
        """Take the nodes of ``match`` for its block, unless another rule has them, a tensor inside
        it is used outside it (other than by a folded Shape), or the block type is not registered."""
        covered = set(match.nodes) | self.folded_nodes
        last = max(match.nodes)
        inner = [out for i in set(match.nodes) - {last} for out in self.nodes_in_order[i].output]
        unknown = match.block and not match.why and blocks.get(match.block) is None
        if set(match.nodes) & (self.handled | set(self.matches)) or unknown or any(
                out in self.graph_outputs or not set(self.users[out]) <= covered for out in inner):
            return False
        self.handled |= set(match.nodes) - {last}
        self.matches[last] = match
        return True

    def _convert(self) -> None:
        for i, node in enumerate(self.nodes_in_order):
            if i in self.handled:
                continue
            match = self.matches.get(i)
            if match is None and i in self.unfolded:
                self._refuse(node, self.unfolded[i])
            elif match is None and (not _standard(node) or node.op_type not in CONVERTERS):
                self.unmapped[_op_label(node)] += 1  # (ops that fold on constants included)
                self._poison(node)
            elif self.lead and node.op_type not in ONE_SAMPLE_OPS:
                self._refuse(node, "has no rule for a model imported as one sample")
            elif any(name in self.poisoned for name in (_tensors(match.inputs) if match else node.input)):
                self._poison(node)  # what it would compute from a refused node's result is not known
            elif match is not None:
                covers = tuple(self.nodes_in_order[j] for j in (self.anchors[i], *match.nodes))
                self._attempt(node, lambda node=node, m=match, c=covers: self._add_match(node, m, c))
            else:
                self._attempt(node, lambda node=node: CONVERTERS[node.op_type](self, node))

    def _add_match(self, node, match: Match, covers: tuple) -> None:
        """The blocks of a form a pattern found at ``node``, its last node (see ``Match``)."""
        if match.why:
            self.fail(node, match.why)
        if not match.block:
            self.alias(node, _tensors(match.inputs)[0])
            return
        steps = [(match.block, match.params, match.weights), *((block, params, None) for block, params in match.then)]
        inputs = match.inputs
        for i, (block, params, weights) in enumerate(steps):
            output = node.output[0] if i == len(steps) - 1 else f"{node.output[0]}#{i}"
            self.add(node, block, params, inputs, weights, output=output, covers=covers)
            inputs = [output]

    def _attempt(self, node, step: Callable[[], object]) -> None:
        """Run one fold or conversion; a refusal is recorded, unless it only follows from an input
        that was refused already."""
        try:
            step()
        except Refused as refusal:
            self._refuse(node, refusal.why)

    def _refuse(self, node, why: str) -> None:
        if not any(name in self.poisoned for name in node.input):
            self.refused.append(Refusal(_op_label(node), node.name, why))
        self._poison(node)

    def _poison(self, node) -> None:
        for name in node.output:
            self.poisoned.add(name)
            self.values[name] = ("", "out")  # no block: the import is refused before a graph is made

    def _output(self, value) -> None:
        if value.name in self.poisoned:
            return
        if value.name not in self.values:
            self.refused.append(Refusal("output", value.name, "is a constant, not computed from the inputs"))
            return
        node_id = self._valid(self.ids.name(identifier(value.name, "y")), "y")
        self.nodes.append(Node(id=node_id, type="output"))
        self._edge(value.name, node_id)

    def _pruned(self) -> GraphDoc:
        """Drop blocks whose results no output uses (say, a Sigmoid absorbed into a SiLU)."""
        feeding = collections.defaultdict(list)
        for edge in self.edges:
            feeding[edge.dst].append(edge.src)
        live = upstream((n.id for n in self.nodes if n.type == "output"), feeding)
        nodes = [n for n in self.nodes if n.id in live or n.type == "input"]
        edges = [e for e in self.edges if e.dst in live]
        for key in [k for k in self.state if k.split(".")[0] not in live]:
            del self.state[key]
        exporter_default = self.graph.name in ("", "main_graph", "torch_jit", "torch-jit-export")
        name = self.path.stem if exporter_default else self.graph.name
        meta = {"imported_from": self.path.name, "opset": self.opset} | ({"notes": self.notes} if self.notes else {})
        return GraphDoc(name=name, nodes=nodes, edges=edges, meta=meta)

    # ------------------------------------------------------------------ reading tensors
    def array(self, tensor, owner: str, place: Streamed | None = None) -> np.ndarray:
        """``tensor`` as an array, refused before anything is allocated where it is too big, of a type
        torch cannot hold, or stored anywhere but exactly where it should be, at the length it should
        have. ``place``: where in the model file an initializer left out of the skeleton lies."""
        where = f"{self.path.name}: {owner}"
        size = self._size(tensor, where)
        if place is not None:
            if place.length != size:
                raise GraphError(f"{where}: the model file holds {place.length:,} bytes for it, but its shape "
                                 f"{list(tensor.dims)} needs {size:,}")
            return self._read(self.path, place.offset, tensor)
        if self.onnx.external_data_helper.uses_external_data(tensor):
            return self._external(tensor, where, size)
        self._check_inline(tensor, where, size)
        return self.numpy_helper.to_array(tensor)

    def _size(self, tensor, where: str) -> int:
        """The bytes ``tensor`` needs, from its shape and type alone."""
        dims, type_name = list(tensor.dims), self.onnx.TensorProto.DataType.Name(tensor.data_type)
        count = math.prod(dims)
        if count > self.limits.tensor_elements:
            raise GraphError(f"{where} has {count:,} elements (shape {dims}), over the import limit of "
                             f"{self.limits.tensor_elements:,} per tensor")
        if type_name not in READABLE_TYPES:
            raise GraphError(f"{where} has element type {type_name}; NetCanvas reads {', '.join(READABLE_TYPES)}")
        return count * self.onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize

    def _check_inline(self, tensor, where: str, size: int) -> None:
        if tensor.HasField("raw_data"):
            held, needed, unit = len(tensor.raw_data), size, "bytes"
        else:  # the typed field, which holds one value per element in every readable type
            field = self.onnx.helper.tensor_dtype_to_field(tensor.data_type)
            held, needed, unit = len(getattr(tensor, field)), math.prod(tensor.dims), "values"
        if held != needed:
            raise GraphError(f"{where}: the model file holds {held:,} {unit} for it, but its shape "
                             f"{list(tensor.dims)} needs {needed:,}")

    def _external(self, tensor, where: str, size: int) -> np.ndarray:
        """``tensor`` read from the ``size`` bytes it keeps in a file of its own."""
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        file = _data_file(self.path.parent, location)
        if file is None:
            raise GraphError(f"{where} keeps its data in {location!r}, which is not a file in the model's folder")
        offset, length = _byte_count(entries, "offset", where) or 0, _byte_count(entries, "length", where)
        available = max(0, file.stat().st_size - offset)
        span = available if length is None else length  # what the file is said to hold for the tensor
        held = span if span != size else min(available, size)
        if held != size:
            raise GraphError(f"{where}: {location!r} holds {held:,} bytes for it at offset {offset:,}, but its "
                             f"shape {list(tensor.dims)} needs {size:,} bytes")
        return self._read(file, offset, tensor)

    def _read(self, file: Path, offset: int, tensor) -> np.ndarray:
        """The tensor's little-endian bytes at ``offset`` in ``file``, read into the array that keeps them."""
        dtype = np.dtype(self.onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
        array = np.empty(math.prod(tensor.dims), dtype)
        try:
            with file.open("rb") as data:
                data.seek(offset)
                read = data.readinto(memoryview(array).cast("B"))
        except OSError as exc:
            raise GraphError(f"{file}: cannot read: {exc.strerror or exc}") from None
        if read != array.nbytes:  # the file changed since it was measured
            raise GraphError(f"{file}: ended after {read:,} of the {array.nbytes:,} bytes of tensor {tensor.name!r}")
        return array.reshape(list(tensor.dims)).astype(dtype.newbyteorder("="), copy=False)

    # ------------------------------------------------------------------ helpers for converters and patterns
    def fail(self, node, message: str) -> None:
        """Refuse ``node``: ``message`` completes "ONNX node 'x' (Op) ...". The import goes on, to
        find every other problem, and is refused at its end."""
        raise Refused(message)

    def attr(self, node, name: str, default=None):
        """The node's attribute ``name`` (floats as the decimals they were written as)."""
        for attribute in node.attribute:
            if attribute.name == name:
                value = self.onnx.helper.get_attribute_value(attribute)
                if isinstance(value, bytes):
                    return value.decode()
                if isinstance(value, list) and value and isinstance(value[0], float):
                    return [decimal(v) for v in value]
                return decimal(value) if isinstance(value, float) else value
        return default

    def const(self, node, index: int, what: str) -> np.ndarray | None:
        """Input ``index`` as a constant array (None where absent); a computed one is refused."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.consts:
            self.fail(node, f"needs a constant {what}, but it is computed")
        return self.consts[name]

    def rank(self, name: str) -> int | None:
        dims = self.dims.get(name)
        return None if dims is None else len(dims)

    def axis(self, node, axis: int, tensor: str) -> int:
        """ONNX ``axis`` of ``tensor`` as the dim of the block, PyTorch's numbering (batch = 0),
        non-negative: the same dim, one further on in a model imported as one sample."""
        rank = self.rank(tensor)
        if rank is None:
            self.fail(node, "works along a dim of a tensor whose rank is not known when importing")
        own = rank - self.lead  # the model's own dims
        if not -own <= int(axis) < own:
            self.fail(node, f"names dim {int(axis)} of a tensor of {own} dims")
        return int(axis) % own + self.lead

    def producer(self, tensor: str):
        """The node that computes ``tensor`` (None for inputs and initializers)."""
        index = self.producers.get(tensor)
        return None if index is None else self.nodes_in_order[index]

    def sole_user(self, tensor: str):
        """The one node that uses ``tensor``, where exactly one does and it is no graph output (a
        folded Shape node, which reads only its size, does not count)."""
        users = [i for i in self.users.get(tensor, []) if i not in self.folded_nodes]
        if len(users) != 1 or tensor in self.graph_outputs:
            return None
        return self.nodes_in_order[users[0]]

    def split_constant(self, node) -> tuple[str, np.ndarray] | None:
        """(the computed input, the constant one) of a binary node with one of each, else None."""
        if len(node.input) != 2:
            return None
        a, b = node.input
        if b in self.consts and a not in self.consts:
            return a, self.consts[b]
        if a in self.consts and b not in self.consts:
            return b, self.consts[a]
        return None

    def keeps_batch(self, first, tensor: str) -> bool:
        """Whether a target shape's first size is the batch of ``tensor``: the symbol N, or the fixed
        batch of an export made at one batch size (``[1, 400]`` from ``torch.flatten(x, 1)``)."""
        if isinstance(first, BatchSize):
            return first == BATCH
        dims = self.dims.get(tensor) or [None]
        return self.batch is not None and first == self.batch and dims[0] == self.batch

    def reshape_keeps_batch(self, node, shape) -> bool:
        """Whether Reshape ``node`` to ``shape`` keeps its input's batch as the first dim: a first size
        that is the batch (``keeps_batch``), 0 (copy the size there), or -1 where the other sizes
        hold one whole sample ([-1, 400], as the torch.export exporter writes x.view(N, 400))."""
        dims = self.dims.get(node.input[0]) or []
        first, rest = (shape[0], list(shape[1:])) if len(shape) else (None, [])
        if self.keeps_batch(first, node.input[0]) or (first == 0 and not self.attr(node, "allowzero", 0)):
            return True
        whole = dims and None not in dims[1:] and all(isinstance(d, int | np.integer) and d > 0 for d in rest)
        return bool(first == -1 and whole and math.prod(rest) == math.prod(dims[1:]))

    def add(self, node, block: str, params: dict, inputs: list[str] | dict[str, str],
            weights: dict[str, np.ndarray] | None = None, output: str | None = None, covers: tuple = ()) -> str:
        """Add a block fed by ONNX tensors; its output is ``output`` (default: the node's first).
        ``covers``: all the nodes a pattern made it from, the one it was found at first; they name it
        and place it in the exporter's module hierarchy."""
        ports = inputs if isinstance(inputs, dict) else {"in": inputs[0]} if len(inputs) == 1 else \
            {f"in{i}": name for i, name in enumerate(inputs)}
        for name in ports.values():
            if name not in self.values:
                self.fail(node, f"takes {name!r} as a tensor input, but it is a constant")
        base = _weight_prefix(self, weights, list(covers) or [node]) or block
        node_id = self._valid(self.ids.name(identifier(base, block)), block)
        self.nodes.append(Node(id=node_id, type=block, params=params))
        self.origin[node_id] = (covers[0] if covers else node).name
        for port, name in ports.items():
            self._edge(name, node_id, port)
        for key, array in (weights or {}).items():
            self.state[f"{node_id}.{key}"] = _tensor(array)
        self.values[output or node.output[0]] = (node_id, "out")
        return node_id

    def step(self, node, block: str, params: dict, inputs: list[str] | dict[str, str], output: str) -> str:
        """A block that computes a part of ``node`` (not its result): its output is the tensor ``output``,
        a name of the import's own (``node.output[0] + '#t'``). Returns that name."""
        if output not in self.values:
            self.add(node, block, params, inputs, output=output)
        return output

    def same_rank(self, node, tensors: list[str], rank: int | None = None) -> list[str]:
        """``tensors`` as an element-wise block takes them, all of one rank. In a model imported as
        one sample, one of fewer dims than ``rank`` (default: the most of theirs) is reshaped with
        dims of size 1 in front, as ONNX broadcasts it. (With a batch, fewer dims would line another
        dim up with the batch: the block's shape check refuses that.)"""
        ranks = [self.rank(t) for t in tensors]
        if not self.lead or None in ranks:
            return tensors
        rank = rank or max(ranks)
        return [t if r >= rank else self._ones_in_front(node, t, rank) for t, r in zip(tensors, ranks)]

    def _ones_in_front(self, node, tensor: str, rank: int) -> str:
        dims = self.dims[tensor]
        shape = [1] * (rank - len(dims)) + dims[1:]  # one sample's
        if None in shape:
            self.fail(node, "broadcasts a tensor whose shape is not known when importing")
        name = self.step(node, "reshape", {"shape": [int(d) for d in shape]}, [tensor], f"{tensor}#rank{rank}")
        self.dims[name] = [1, *shape]
        return name

    def alias(self, node, source: str) -> None:
        self.values[node.output[0]] = self.values[source]

    def _valid(self, node_id: str, fallback: str) -> str:
        return node_id if check_id(node_id) is None else self.ids.name(fallback)

    def _edge(self, tensor: str, dst: str, port: str = "in") -> None:
        src, src_port = self.values[tensor]
        self.edges.append(Edge(src=src, src_port=src_port, dst=dst, dst_port=port))

    def _input(self, value) -> None:
        """An input block, or a refusal (the input's users are then not checked)."""
        dims = self.dims.get(value.name) or []
        elem_type = value.type.tensor_type.elem_type
        dtype = INPUT_DTYPES.get(elem_type)
        why = None
        if not dims or any(d is None for d in dims[1:]):
            got = sizes_text(dims) if dims else "no shape"
            why = f"needs a fixed size in every dim but the first (the batch), got {got}"
        elif dtype is None:
            why = (f"has element type {self.onnx.TensorProto.DataType.Name(elem_type)}; NetCanvas inputs are floats "
                   "(computed in float32) or integer ids (int64)")
        if why is not None:
            self.refused.append(Refusal("input", value.name, why))
            self.poisoned.add(value.name)
            self.values[value.name] = ("", "out")
            return
        if elem_type == self.onnx.TensorProto.DOUBLE and FLOAT64_NOTE not in self.notes:
            self.notes.append(FLOAT64_NOTE)
        node_id = self._valid(self.ids.name(identifier(value.name, "x")), "x")
        self.nodes.append(Node(id=node_id, type="input", params={"shape": dims[1:], "dtype": dtype}))
        self.values[value.name] = (node_id, "out")

    # ------------------------------------------------------------------ constant and shape folding
    def _fold(self, node) -> None:
        folder = FOLDERS[node.op_type]
        inputs = [self.consts.get(n) if n else None for n in node.input]
        try:
            self._reserve(node, folder.elements(self, node, inputs), folder.view)
            result = folder.fold(self, node, inputs)
        except (GraphError, Refused):
            raise
        except Exception as exc:  # noqa: BLE001  (numpy refusing odd shapes: a clear error, not a traceback)
            self.fail(node, f"cannot be folded: {type(exc).__name__}: {one_line(str(exc))}")
        for name, value in zip(node.output, result if isinstance(result, tuple) else (result,)):
            self.consts[name] = _normalised(value)

    def _reserve(self, node, elements: int, view: bool = False) -> None:
        """Count a folded constant against the budget before it is allocated."""
        where = f"{self.path.name}: {_label(node)}"
        if elements > self.limits.tensor_elements:
            raise GraphError(f"{where} would make a constant of {elements:,} elements, over the import limit of "
                             f"{self.limits.tensor_elements:,} per tensor")
        if view:
            return
        self.folded += elements
        if self.folded > self.limits.folded_elements:
            raise GraphError(f"{where} would bring the folded constants to {self.folded:,} elements, over the "
                             f"import limit of {self.limits.folded_elements:,} in all")


def _reshape_target(value: np.ndarray) -> np.ndarray | None:
    """Sizes [N, 4, 10] as a Reshape reads them without N: [0, 4, 10] (0 keeps the input's size
    there); None for sizes with N elsewhere."""
    rest = value[1:] if value.ndim == 1 and value.size else [BATCH]
    if value.ndim != 1 or not value.size or value[0] != BATCH or any(isinstance(v, BatchSize) for v in rest):
        return None
    return np.array([0, *rest], np.int64)


def decimal(value) -> float:
    """A float32 as the shortest decimal that reads back as it: 0.01, not 0.009999999776482582, so
    that params read as they were written."""
    return float(str(np.float32(value)))


def _computed_from_inputs(graph, consts: dict, nodes: list) -> set[str]:
    """The tensors computed from the graph's inputs, whose first dim is the batch; a Shape's result
    is not one (it holds sizes), nor is anything computed from constants and sizes alone."""
    computed = {v.name for v in graph.input if v.name not in consts}
    for node in nodes:
        if node.op_type != "Shape" and any(name in computed for name in node.input):
            computed.update(node.output)
    return computed


def _fixed_batch(graph, consts: dict, dims: dict) -> int | None:
    """The batch size of an export made at one batch size: the first dim shared by every input."""
    firsts = {(dims.get(v.name) or [None])[0] for v in graph.input if v.name not in consts}
    return firsts.pop() if len(firsts) == 1 and None not in firsts else None


def _normalised(result) -> np.ndarray:
    """A folded value as an array: numbers as a numeric array, sizes that depend on the batch as objects."""
    array = np.asarray(result) if not isinstance(result, BatchSize) else np.array(result, dtype=object)
    if array.dtype == object and not any(isinstance(v, BatchSize) for v in array.flat):
        array = np.array(array.tolist())
    return array


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A weight as a tensor that shares the array's memory where it can, so the import holds each
    weight once; a constant fill (ConstantOfShape) stays one value, expanded."""
    if array.ndim and array.size and not any(array.strides):
        tensor = torch.tensor(array.flat[0]).expand(array.shape)
    elif array.flags.writeable and array.dtype.isnative and min(array.strides, default=0) >= 0:
        tensor = torch.from_numpy(array)
    else:
        tensor = torch.from_numpy(array.copy())
    return tensor.float() if tensor.is_floating_point() else tensor


def _data_file(folder: Path, location: str) -> Path | None:
    """The regular file ``location`` names relative to the model's folder; None where it is not one or
    lies outside the folder (an absolute path, ``..``, a link out), so no file is read from elsewhere,
    the working directory included."""
    try:
        folder = folder.resolve()
        file = (folder / location).resolve()
        return file if location and file.is_relative_to(folder) and file.is_file() else None
    except (OSError, ValueError):  # a name the file system refuses: too long, a NUL byte
        return None


def _tensors(inputs: list[str] | dict[str, str]) -> list[str]:
    return list(inputs.values()) if isinstance(inputs, dict) else inputs


def _standard(node) -> bool:
    return node.domain in STANDARD_DOMAINS


def _op_label(node) -> str:
    return node.op_type if _standard(node) else f"{node.domain}.{node.op_type}"


def _label(node) -> str:
    return f"ONNX node {node.name or node.op_type!r} ({node.op_type})"


def sizes_text(values) -> str:
    """Sizes as a user reads them in a message: ``[N, 3, 4]``, never ``np.int64(3)``."""
    return "[" + ", ".join(str(int(v)) if isinstance(v, np.integer | int) else str(v) for v in values) + "]"


def _blocker_lines(model: str, unmapped: dict[str, int], refused: list[Refusal]) -> list[str]:
    """One line for the unmapped ops, and one per group of nodes refused for the same reason."""
    lines = []
    if unmapped:
        lines.append(f"{model}: no NetCanvas block for these ONNX ops: "
                     + ", ".join(f"{op} ×{count}" for op, count in unmapped.items()))
    groups: dict[tuple[str, str], list[str]] = {}
    for r in refused:
        groups.setdefault((r.op, r.why), []).append(r.node or r.op)
    for (op, why), names in groups.items():
        what = f"{op} {names[0]!r}" if op in ("input", "output") else f"ONNX node {names[0]!r} ({op})"
        line = f"{model}: {what} {why}"
        if len(names) > 1:
            shown = ", ".join(repr(n) for n in names[1:5])
            line += f"; so do {shown}" + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        lines.append(line)
    return lines


def _byte_count(entries: dict[str, str], key: str, where: str) -> int | None:
    """An external-data offset or length (None where absent)."""
    text = entries.get(key)
    if text is not None and not text.isdecimal():
        raise GraphError(f"{where} has an external data {key} of {text!r}, which is not a number of bytes")
    return None if text is None else int(text)


def _weight_prefix(imp: _Importer, weights: dict | None, nodes: list) -> str | None:
    """'layer1_0.conv1' from an initializer named 'layer1_0.conv1.weight' (exporters keep PyTorch's
    module path), so that re-imported blocks keep their names; for a block made of several nodes,
    the module their initializers share ('block' for block.q_proj.weight and block.k_proj.weight)."""
    if not weights:
        return None
    modules = [n.rsplit(".", 1)[0].split(".") for node in nodes for n in node.input if n in imp.consts and "." in n]
    return "_".join(os.path.commonprefix(modules)) if modules else None  # (commonprefix compares lists too)


# ---------------------------------------------------------------------- op converters
def _spatial(node, imp, name: str, n: int, default: int) -> list[int]:
    value = imp.attr(node, name)
    return [default] * n if value is None else list(value)


def _symmetric_pads(imp, node, n: int) -> list[int]:
    auto_pad = imp.attr(node, "auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        imp.fail(node, f"uses auto_pad={auto_pad}; NetCanvas needs explicit pads")
    pads = _spatial(node, imp, "pads", 2 * n, 0)
    if pads[:n] != pads[n:]:
        imp.fail(node, f"pads {pads} are not the same on both sides, which PyTorch cannot express in one layer")
    return pads[:n]


def _size(values: list[int]) -> int | list[int]:
    """One int when every spatial dim agrees (as in a hand-written graph), else the list."""
    values = [int(v) for v in values]
    return values[0] if len(set(values)) == 1 else values


@converts("Conv")
def _conv(imp, node):
    weight, bias = imp.const(node, 1, "weight"), imp.const(node, 2, "bias")
    n = weight.ndim - 2
    if n not in (1, 2, 3):
        imp.fail(node, f"is a {n}-D convolution")
    groups = imp.attr(node, "group", 1)
    params = {"out_channels": int(weight.shape[0]), "kernel_size": _size(list(weight.shape[2:])),
              "stride": _size(_spatial(node, imp, "strides", n, 1)), "padding": _size(_symmetric_pads(imp, node, n)),
              "dilation": _size(_spatial(node, imp, "dilations", n, 1)), "groups": groups, "bias": bias is not None}
    weights = {"weight": weight} | ({"bias": bias} if bias is not None else {})
    imp.add(node, f"conv{n}d", params, [node.input[0]], weights)


@converts("ConvTranspose")
def _conv_transpose(imp, node):
    weight, bias = imp.const(node, 1, "weight"), imp.const(node, 2, "bias")
    if weight.ndim != 4 or imp.attr(node, "output_shape") is not None:
        imp.fail(node, "is not a 2-D transposed convolution with explicit pads")
    groups = imp.attr(node, "group", 1)
    params = {"out_channels": int(weight.shape[1]) * groups, "kernel_size": _size(list(weight.shape[2:])),
              "stride": _size(_spatial(node, imp, "strides", 2, 1)), "padding": _size(_symmetric_pads(imp, node, 2)),
              "output_padding": _size(_spatial(node, imp, "output_padding", 2, 0)),
              "dilation": _size(_spatial(node, imp, "dilations", 2, 1)), "groups": groups, "bias": bias is not None}
    imp.add(node, "conv_transpose2d", params, [node.input[0]],
            {"weight": weight} | ({"bias": bias} if bias is not None else {}))


def _matrix(imp, node, index: int) -> np.ndarray:
    """The constant matrix of x @ W (a computed one makes a matmul instead)."""
    weight = imp.consts[node.input[index]]
    if weight.ndim != 2:
        imp.fail(node, f"multiplies by a constant of shape {sizes_text(weight.shape)}, which is not a matrix")
    return weight


def linear_weights(imp, node, weight: np.ndarray, bias: np.ndarray | None) -> dict[str, np.ndarray]:
    """A linear layer's weights from an (out, in) weight and a bias that broadcasts to (1, out)
    (PyTorch's (out,), or (1, out) as some exporters write it)."""
    weights = {"weight": weight}
    if bias is not None:
        if bias.size not in (1, weight.shape[0]) or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
            imp.fail(node, f"adds a bias of shape {sizes_text(bias.shape)}, which is not one value per output "
                           f"({weight.shape[0]})")
        weights["bias"] = np.broadcast_to(bias.reshape(-1), (weight.shape[0],))
    return weights


@converts("Gemm", one_sample=True)
def _gemm(imp, node):
    if imp.attr(node, "transA", 0):
        imp.fail(node, "transposes its input (transA=1)")
    if node.input[1] not in imp.consts:
        _gemm_of_tensors(imp, node)
        return
    weight = _matrix(imp, node, 1)
    weight = weight if imp.attr(node, "transB", 0) else weight.T
    alpha, beta = imp.attr(node, "alpha", 1.0), imp.attr(node, "beta", 1.0)
    weight = weight if alpha == 1 else weight * alpha
    bias = imp.const(node, 2, "bias")
    bias = bias if bias is None or beta == 1 else bias * beta
    weights = linear_weights(imp, node, weight, bias)
    imp.add(node, "linear", {"out_features": int(weight.shape[0]), "bias": bias is not None}, [node.input[0]], weights)


def _gemm_of_tensors(imp, node) -> None:
    """alpha · A @ B (+ beta · C) of a computed B: a matmul (B transposed first for transB), then a
    mul by alpha and an add of C where they change anything."""
    a, b = node.input[0], node.input[1]
    if not imp.lead:  # Gemm's B is 2-D: with a batch, its rows would be the samples
        imp.fail(node, "multiplies two computed tensors along the batch dim; NetCanvas's matmul multiplies each "
                       "sample's matrices")
    if imp.attr(node, "transB", 0):
        b = imp.step(node, "permute", {"dims": [2, 1]}, [b], f"{node.output[0]}#t")  # (P, K) -> (K, P)
    result = imp.step(node, "matmul", {}, {"in0": a, "in1": b}, f"{node.output[0]}#mm")
    alpha, beta = imp.attr(node, "alpha", 1.0), imp.attr(node, "beta", 1.0)
    if alpha != 1:
        result = imp.step(node, "mul", {"n": 1, "constant": alpha}, [result], f"{node.output[0]}#alpha")
    c = node.input[2] if len(node.input) > 2 and node.input[2] and beta != 0 else None
    if c is not None and c in imp.consts:
        imp.add(node, "add", {"n": 1, "constant": single_number(imp, node, imp.consts[c] * beta)}, [result])
    elif c is not None:
        c = c if beta == 1 else imp.step(node, "mul", {"n": 1, "constant": beta}, [c], f"{node.output[0]}#beta")
        imp.add(node, "add", {"n": 2}, {"in0": result, "in1": imp.same_rank(node, [c], imp.rank(node.output[0]))[0]})
    else:
        imp.alias(node, result)


@converts("MatMul", one_sample=True)
def _matmul(imp, node):
    if node.input[1] not in imp.consts:  # a product of two computed tensors, per sample
        ranks = {imp.rank(name) for name in node.input}
        if len(ranks) != 1 or None in ranks or ranks.pop() < 3:
            imp.fail(node, "multiplies two computed tensors that are not matrices of the same rank in each sample")
        imp.add(node, "matmul", {}, {"in0": node.input[0], "in1": node.input[1]})
        return
    weight = _matrix(imp, node, 1)
    imp.add(node, "linear", {"out_features": int(weight.shape[1]), "bias": False}, [node.input[0]],
            {"weight": weight.T})


def check_legacy_broadcast(imp, node, inputs: list[str]) -> None:
    """Before opset 7 a binary op could line its second input up at ``axis`` rather than at the
    last dims; that is refused, the numpy-style broadcast kept."""
    if imp.opset < 7 and imp.attr(node, "broadcast", 0) and imp.attr(node, "axis") is not None:
        a, b = (imp.rank(name) for name in inputs)
        if a is None or b is None or imp.attr(node, "axis") % max(a, 1) + b != a:
            imp.fail(node, "lines its second input up at an axis (opset 6 broadcast), not at the last dims")


def single_number(imp, node, constant: np.ndarray) -> float:
    """The one number an element-wise op combines a tensor with; refused for a bigger constant."""
    if constant.size != 1:
        imp.fail(node, f"combines a tensor with a constant of shape {sizes_text(constant.shape)}; NetCanvas "
                       "combines tensors with a single number (a per-channel constant is a layer's weight)")
    return decimal(constant.reshape(()))


@converts("Add", "Mul", "Sum", one_sample=True)
def _merge(imp, node):
    inputs = [name for name in node.input if name]
    if len(inputs) == 1:
        imp.alias(node, inputs[0])  # a sum of one tensor is that tensor
        return
    check_legacy_broadcast(imp, node, inputs)
    constants = [imp.consts[name] for name in inputs if name in imp.consts]
    tensors = [name for name in inputs if name not in imp.consts]
    params = {"n": len(tensors)}
    if len(constants) > 1:
        imp.fail(node, f"combines a tensor with {len(constants)} constants; NetCanvas combines tensors with one number")
    if node.op_type in WEIGHT_BLOCKS and len(tensors) == 1 and constants and constants[0].size > 1:
        _weight_block(imp, node, tensors[0], constants[0])
        return
    if constants:
        params["constant"] = single_number(imp, node, constants[0])
    tensors = imp.same_rank(node, tensors)
    imp.add(node, "mul" if node.op_type == "Mul" else "add", params, {f"in{i}": t for i, t in enumerate(tensors)})


WEIGHT_BLOCKS = {"Mul": "scale", "Add": "shift"}
"""A tensor times or plus a constant of more than one value: the block whose weight it becomes."""


def _weight_block(imp, node, tensor: str, weight: np.ndarray) -> None:
    """A tensor times or plus a constant of more than one value (ConvNeXt's layer scale, (C, 1, 1)):
    a scale or shift block whose weight is that constant, where it broadcasts against each sample alone."""
    rank = imp.rank(tensor)
    while weight.ndim and rank is not None and weight.ndim >= rank and weight.shape[0] == 1:
        weight = weight.reshape(weight.shape[1:])  # a leading 1 lines up with the batch
    if rank is None or weight.ndim >= rank:
        imp.fail(node, f"combines a tensor with a constant of shape {sizes_text(weight.shape)} that varies along "
                       "the batch dim")
    imp.add(node, WEIGHT_BLOCKS[node.op_type], {"shape": [int(d) for d in weight.shape]}, [tensor], {"weight": weight})


def batchnorm_parts(imp, node) -> tuple[str, dict, dict[str, np.ndarray]]:
    """The block type, params and weights of a BatchNormalization node."""
    if imp.attr(node, "training_mode", 0):
        imp.fail(node, "is in training mode")
    scale, bias, mean, var = (imp.const(node, i, what) for i, what in
                              enumerate(("scale", "bias", "mean", "variance"), start=1))
    rank = imp.rank(node.input[0])
    block = {2: "batchnorm1d", 3: "batchnorm1d", 4: "batchnorm2d", 5: "batchnorm3d"}.get(rank)
    if block is None:
        imp.fail(node, f"normalises a tensor of rank {rank}")
    params = {"eps": float(imp.attr(node, "epsilon", 1e-5)), "momentum": round(1 - imp.attr(node, "momentum", 0.9), 6)}
    return block, params, {"weight": scale, "bias": bias, "running_mean": mean, "running_var": var,
                           "num_batches_tracked": np.array(0, dtype=np.int64)}


@converts("BatchNormalization")
def _batchnorm(imp, node):
    block, params, weights = batchnorm_parts(imp, node)
    imp.add(node, block, params, [node.input[0]], weights)


@converts(*_ACTIVATIONS, one_sample=True)
def _activation(imp, node):
    imp.add(node, _ACTIVATIONS[node.op_type], {}, [node.input[0]])


@converts("LeakyRelu", one_sample=True)
def _leaky_relu(imp, node):
    imp.add(node, "leaky_relu", {"negative_slope": float(imp.attr(node, "alpha", 0.01))}, [node.input[0]])


@converts("Gelu", one_sample=True)
def _gelu(imp, node):
    imp.add(node, "gelu", {"approximate": imp.attr(node, "approximate", "none")}, [node.input[0]])


@converts("Softmax", "LogSoftmax", one_sample=True)
def _softmax(imp, node):
    """softmax or logsoftmax (the blocks are named as the ops, lower case)."""
    axis = imp.attr(node, "axis", -1 if imp.opset >= 13 else 1)
    dim = imp.axis(node, axis, node.input[0])
    dims = imp.dims.get(node.input[0]) or []
    if imp.opset < 13 and any(d != 1 for d in dims[dim + 1:]):  # over flattened dims, where more than one has a size
        imp.fail(node, "uses the pre-opset-13 softmax over flattened dims")
    if dim == 0:
        imp.fail(node, "normalises over the batch dim")
    imp.add(node, node.op_type.lower(), {"dim": dim if axis >= 0 else int(axis)}, [node.input[0]])


def _pool(imp, node, kind: str):
    """MaxPool or AveragePool over 1, 2 or 3 spatial dims: maxpool{n}d or avgpool{n}d."""
    dims = imp.dims.get(node.input[0]) or []
    n = len(dims) - 2
    if n not in (1, 2, 3):
        imp.fail(node, f"pools a tensor of rank {len(dims) or 'unknown'}; NetCanvas pools (N, C, L), (N, C, H, W) "
                       "or (N, C, D, H, W)")
    kernel, strides = list(imp.attr(node, "kernel_shape")), _spatial(node, imp, "strides", n, 1)
    dilations = _spatial(node, imp, "dilations", n, 1)
    if kind == "avg" and n == 2 and _one_window_over_all(imp, node, dims[2:], kernel, strides):
        imp.add(node, "adaptive_avgpool2d", {"output_size": 1}, [node.input[0]])
        return
    padding, ceil_mode = _pool_padding(imp, node, dims[2:], kernel, strides, dilations)
    params = {"kernel_size": _size(kernel), "stride": _size(strides), "padding": _size(padding), "ceil_mode": ceil_mode}
    if kind == "max":
        params["dilation"] = _size(dilations)
    elif any(d != 1 for d in dilations):
        imp.fail(node, "averages with dilation, which PyTorch's average pools do not")
    else:  # without padding it makes no difference: PyTorch's default then
        params["count_include_pad"] = bool(imp.attr(node, "count_include_pad", 0)) or not any(padding)
    imp.add(node, f"{kind}pool{n}d", params, [node.input[0]])


def _one_window_over_all(imp, node, sizes: list, kernel: list[int], strides: list[int]) -> bool:
    """Whether an average pool is one window over the whole input, its padding left out of the
    average: a global average (Caffe's GoogLeNet pools 6x6 with a 7x7 kernel padded at the end)."""
    pads = _spatial(node, imp, "pads", 2 * len(kernel), 0)
    begin, end = pads[:len(kernel)], pads[len(kernel):]
    if None in sizes or (any(pads) and imp.attr(node, "count_include_pad", 0)):
        return False
    return all(b + size + e - k < s and b + size <= k and b < k
               for size, b, e, k, s in zip(sizes, begin, end, kernel, strides))


def _pool_padding(imp, node, sizes: list, kernel: list[int], strides: list[int],
                  dilations: list[int]) -> tuple[list[int], bool]:
    """PyTorch's (padding, ceil_mode) for a pool's ONNX pads. Caffe's pools pad the end more than the
    start; PyTorch's ceil_mode adds that last window, so where it gives the same output size the
    extra end padding becomes ceil_mode (the window's padded part is ignored either way)."""
    n = len(kernel)
    auto_pad = imp.attr(node, "auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        imp.fail(node, f"uses auto_pad={auto_pad}; NetCanvas needs explicit pads")
    pads = _spatial(node, imp, "pads", 2 * n, 0)
    begin, end, ceil_mode = pads[:n], pads[n:], bool(imp.attr(node, "ceil_mode", 0))
    if begin == end:
        return begin, ceil_mode
    counted = node.op_type == "AveragePool" and imp.attr(node, "count_include_pad", 0)
    windows = [(size + b + e - (k - 1) * d - 1) // s + 1 if size is not None else None
               for size, b, e, k, s, d in zip(sizes, begin, end, kernel, strides, dilations)]
    same = [w is not None and e >= b and w == _ceil_windows(size, b, k, s, d)
            for w, size, b, e, k, s, d in zip(windows, sizes, begin, end, kernel, strides, dilations)]
    if ceil_mode or counted or not all(same):
        imp.fail(node, f"pads {pads} are not the same on both sides, which PyTorch cannot express in one layer")
    return begin, True


def _ceil_windows(size: int, pad: int, kernel: int, stride: int, dilation: int) -> int:
    """How many windows PyTorch's pools make with ceil_mode (the last starts inside the input or its
    start padding)."""
    windows = -(-(size + 2 * pad - (kernel - 1) * dilation - 1) // stride) + 1
    return windows - 1 if (windows - 1) * stride >= size + pad else windows


@converts("MaxPool")
def _maxpool(imp, node):
    if len(node.output) > 1 and node.output[1]:
        imp.fail(node, "returns indices")
    _pool(imp, node, "max")


@converts("AveragePool")
def _avgpool(imp, node):
    _pool(imp, node, "avg")


@converts("GlobalAveragePool")
def _global_avgpool(imp, node):
    if imp.rank(node.input[0]) != 4:
        imp.fail(node, "pools a tensor that is not (N, C, H, W)")
    imp.add(node, "adaptive_avgpool2d", {"output_size": 1}, [node.input[0]])


def reduce_axes(imp, node) -> list[int] | None:
    """The sorted dims a Reduce* node reduces, as the block numbers them (``_Importer.axis``): an
    attribute before opset 18 (ReduceSum's 13), an input after; None where they or the input's rank
    are not known (or where none are given)."""
    rank = imp.rank(node.input[0])
    axes = imp.const(node, 1, "axes") if len(node.input) > 1 else imp.attr(node, "axes")
    return sorted(imp.axis(node, a, node.input[0]) for a in np.ravel(axes)) if axes is not None and rank else None


@converts("Flatten")
def _flatten(imp, node):
    if imp.attr(node, "axis", 1) != 1:
        imp.fail(node, "flattens the batch dim too (axis != 1)")
    if imp.rank(node.input[0]) == 1:  # (N,) -> (N, 1): each sample's one value as a vector
        imp.add(node, "reshape", {"shape": [1]}, [node.input[0]])
    else:
        imp.add(node, "flatten", {"start_dim": 1, "end_dim": -1}, [node.input[0]])


@converts("Reshape", one_sample=True)
def _reshape(imp, node):
    shape = [BATCH] * imp.lead + list(imp.const(node, 1, "shape"))  # one sample's target: the batch goes first
    dims = imp.dims.get(node.input[0]) or []
    rest = shape[1:]
    copies = not imp.attr(node, "allowzero", 0)  # 0 copies the input's size there
    if not imp.reshape_keeps_batch(node, shape):
        imp.fail(node, f"reshapes across the batch dim (target shape {sizes_text(shape)})")
    rest = [dims[i + 1] if d == 0 and copies and i + 1 < len(dims) else d for i, d in enumerate(rest)]
    if any(not isinstance(d, int | np.integer) or d == 0 for d in rest):
        imp.fail(node, f"has a target shape NetCanvas cannot fix when importing: {sizes_text(shape)}")
    rest = [int(d) for d in rest]
    start = _flatten_start(rest, dims)
    if start is not None:
        imp.add(node, "flatten", {"start_dim": start, "end_dim": -1}, [node.input[0]])
    else:
        imp.add(node, "reshape", {"shape": rest}, [node.input[0]])


def _flatten_start(rest: list[int], dims: list) -> int | None:
    """The start_dim of the flatten that a per-sample target shape is, where it is one: the input's
    leading sizes kept and two or more after them made one (``x.flatten(2)`` exports as a Reshape to
    ``[N, C, -1]``)."""
    if rest == [-1]:
        return 1 if len(dims) != 2 else None
    sizes, kept = dims[1:], len(rest) - 1
    if not rest or None in sizes or len(sizes) - kept < 2 or rest[:kept] != sizes[:kept]:
        return None
    return kept + 1 if rest[kept] in (-1, math.prod(sizes[kept:])) else None


@converts("Unsqueeze", "Squeeze", one_sample=True)
def _unsqueeze(imp, node):
    """A computed tensor given dims of size 1, or stripped of them: a reshape to the size inferred."""
    axes = imp.const(node, 1, "axes") if len(node.input) > 1 else imp.attr(node, "axes")
    out = imp.dims.get(node.output[0])
    tensor = node.output[0] if node.op_type == "Unsqueeze" else node.input[0]  # whose dims the axes number
    if axes is None or imp.rank(tensor) is None or any(imp.axis(node, a, tensor) == 0 for a in np.ravel(axes)):
        imp.fail(node, "adds or removes the batch dim (or dims not known when importing)")
    if out is None or any(d is None for d in out[1:]):
        imp.fail(node, "makes a shape that is not known when importing")
    imp.add(node, "reshape", {"shape": [int(d) for d in out[1:]]}, [node.input[0]])


@converts("Transpose", one_sample=True)
def _transpose(imp, node):
    perm = list(imp.attr(node, "perm") or [])
    perm = [0, *(p + 1 for p in perm)] if imp.lead and perm else perm  # one sample's dims come after the batch
    if not perm or perm[0] != 0:
        imp.fail(node, f"moves the batch dim (perm {perm})")
    imp.add(node, "permute", {"dims": [int(p) for p in perm[1:]]}, [node.input[0]])


@converts("Concat", one_sample=True)
def _concat(imp, node):
    if len(node.input) == 1:
        imp.alias(node, node.input[0])  # a concat of one tensor is that tensor
        return
    axis = imp.attr(node, "axis")
    dim = imp.axis(node, axis, node.output[0])
    if dim == 0:
        imp.fail(node, "joins along the batch dim")
    imp.add(node, "concat", {"n": len(node.input), "dim": int(axis) if axis < 0 else dim}, list(node.input))


@converts("Identity", "Dropout", one_sample=True)
def _pass_through(imp, node):
    imp.alias(node, node.input[0])  # dropout does nothing at inference, which is what ONNX holds


@converts("Cast", one_sample=True)
def _cast(imp, node):
    """A cast that keeps the kind of values (float to float, integer to integer) changes nothing
    here: NetCanvas computes in float32 and counts ids in int64."""
    target = INPUT_DTYPES.get(imp.attr(node, "to"))
    if target is None or target != INPUT_DTYPES.get(imp.elem_types.get(node.input[0])):
        name = imp.onnx.TensorProto.DataType.Name(imp.attr(node, "to"))
        imp.fail(node, f"casts a computed tensor to {name}, which NetCanvas cannot express")
    imp.alias(node, node.input[0])


@converts("Resize")
def _resize(imp, node):
    rank = imp.rank(node.input[0])
    scales = imp.const(node, 2, "scales") if len(node.input) > 2 else None
    if scales is None or scales.size == 0 or rank is None:
        imp.fail(node, "resizes to fixed sizes; NetCanvas's upsample takes a scale factor")
    factors = {float(s) for s in scales[2:]}
    if list(scales[:2]) != [1, 1] or len(factors) != 1:
        imp.fail(node, f"scales {list(map(float, scales))} are not one factor for every spatial dim")
    mode = imp.attr(node, "mode", "nearest")
    transform = imp.attr(node, "coordinate_transformation_mode", "half_pixel")
    nearest = imp.attr(node, "nearest_mode", "round_prefer_floor")
    if mode == "nearest" and transform == "asymmetric" and nearest == "floor":
        torch_mode = "nearest"
    elif mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel"):
        torch_mode = {3: "linear", 4: "bilinear", 5: "trilinear"}.get(rank)
    else:
        torch_mode = None
    if torch_mode is None:
        imp.fail(node, f"uses mode={mode} with coordinate_transformation_mode={transform}")
    imp.add(node, "upsample", {"scale_factor": factors.pop(), "mode": torch_mode}, [node.input[0]])


@converts("LayerNormalization")
def _layernorm(imp, node):
    rank = imp.rank(node.input[0])
    axis = imp.attr(node, "axis", -1)
    if rank is None or axis % rank != rank - 1:
        imp.fail(node, "normalises over more than the last dim")
    scale, bias = imp.const(node, 1, "scale"), imp.const(node, 2, "bias")
    bias = np.zeros_like(scale) if bias is None else bias
    imp.add(node, "layernorm", {"eps": float(imp.attr(node, "epsilon", 1e-5))}, [node.input[0]],
            {"weight": scale, "bias": bias})


@converts("Gather")
def _gather(imp, node):
    """A lookup in a constant table (an embedding), or one token picked from computed tokens."""
    axis = imp.attr(node, "axis", 0)
    if node.input[0] not in imp.consts:
        index = imp.consts.get(node.input[1])
        if imp.rank(node.input[0]) != 3 or axis % 3 != 1 or index is None or index.ndim != 0:
            imp.fail(node, "picks from a computed tensor other than one token of (N, T, D)")
        imp.add(node, "token_select", {"index": int(index)}, [node.input[0]])
        return
    table = imp.consts[node.input[0]]
    if table.ndim != 2 or axis != 0:
        imp.fail(node, "is not an embedding lookup (a 2-D table indexed along dim 0)")
    params = {"num_embeddings": int(table.shape[0]), "embedding_dim": int(table.shape[1])}
    imp.add(node, "embedding", params, [node.input[1]], {"weight": table})


# ---------------------------------------------------------------------- block types that do not come back as themselves
IMPORTED_AS_OTHERS: dict[str, str] = {
    # Composite blocks: their export is the ops of their parts, which import as those parts' blocks
    # (with the same outputs); from_onnx groups them into a subgraph per module (see hierarchy).
    "conv_bn_act": "composite: its conv, norm and activation",
    "dw_separable_conv": "composite: two conv-norm-activation stages",
    "inception": "composite: four conv branches and a pool, joined",
    "residual_basic": "composite: convs, norms and an add",
    "residual_bottleneck": "composite: convs, norms and an add",
    "residual_preact": "composite: norms, convs and an add",
    "squeeze_excite": "composite: a pool, two linears, a sigmoid and a mul",
    "vgg_block": "composite: convs, activations and a pool",
    "ffn": "composite: linear, gelu and linear",
    "transformer_block": "composite: layer norms, multi-head attention, an ffn and adds",
    "cross_attention": "composite: a layer norm, attention over a context and an add",
    "self_attention2d": "composite: a group norm, reshapes, multi-head attention and an add",
    "unet_down": "composite: residual blocks, attention and a downsampling conv",
    "unet_mid": "composite: residual blocks and attention",
    "unet_up": "composite: residual blocks, attention and an upsampling conv",
    # Blocks that do nothing at inference, which is what ONNX holds.
    "identity": "does nothing: imports as a connection",
    "dropout": "does nothing at inference: imports as a connection",
    "dropout2d": "does nothing at inference: imports as a connection",
    "pad": "circular padding exports as Slices and a Concat, which import as slice and concat blocks",
    # Run-time weight scaling is folded into the exported weight: a plain layer with the effective weight.
    "linear": "equalized or lr_mul: imports as a plain linear holding the effective weight",
    "conv2d": "equalized or lr_mul: imports as a plain conv2d holding the effective weight",
    # StyleGAN2 blocks: composites of the ops they compute.
    "mapping": "composite: a pixel norm's arithmetic, linears and leaky ReLUs",
    "modulated_conv2d": "composite: a linear (the styles), muls, a conv and the demodulation's arithmetic",
    "noise_injection": "its fixed noise times the strength is a constant: imports as a shift",
    "to_rgb": "composite: a modulated 1x1 conv's ops, a resize and an add",
    "stylegan_block": "composite: two modulated convs, shifts (the noise) and leaky ReLUs",
    "disc_block": "composite: convs, leaky ReLUs, average pools and an add",
}
"""Block types whose ONNX export imports as other blocks, and why."""

EXPORT_ONLY: dict[str, str] = {
    "adaptive_avgpool2d": "an output size that does not divide the input exports as index arithmetic (GatherND)",
    "lrn": "PyTorch exports LocalResponseNorm as its arithmetic around an If on the input's rank; ONNX's LRN op "
           "imports as lrn",
    "time_embedding": "its sinusoids (Sin, Cos) have no block",
    "temporal_attention": "it folds the pixels into the batch dim (a Reshape across the batch)",
    "spatial_attention": "it folds the frames into the batch dim (a Reshape across the batch)",
    "video_res_block": "upsampling only H and W of (C, T, H, W) is a Resize with two factors",
    "const_input": "repeating the constant over the batch is a Tile whose repeats depend on the batch size",
    "minibatch_std": "it reduces over the batch dim (ReduceMean over dim 0)",
}
"""Block types some of whose ONNX exports cannot be imported at all, and why.

The round-trip test (tests/test_onnx_import.py) exports every example of every block type: one
not listed in either table must import back as itself, with the same params and outputs."""


# Rule modules register their folds, patterns and converters (onnx_ops: the math, norm and reshaping
# blocks) when this module loads (they import from it).
from graphcore.interchange import onnx_fold, onnx_ops, onnx_patterns  # noqa: E402,F401
