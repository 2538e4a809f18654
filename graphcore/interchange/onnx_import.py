"""Open an ONNX model as an editable graph: ``from_onnx(path) -> (GraphDoc, state_dict)``.

Each ONNX op maps onto a block (Conv -> conv2d, Gemm -> linear, MatMul + Add -> linear,
BatchNormalization -> batchnorm2d, ...), its initializers become the block's weights, and
shape arithmetic that depends only on the batch size (Shape -> Gather -> Concat -> Reshape, as
exporters write for a dynamic batch) is folded into the block's params. An op with no mapping
is a ``GraphError`` that lists every such op and how often it occurs, before anything is built.

A file is untrusted input: tensors stored in files of their own are read from the model's folder
only, and every tensor is sized from its shape against ``ImportLimits`` before it is allocated.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from blocks.activation import ONNX_OPS as _ACTIVATIONS
from graphcore.core.analysis import RESERVED_IDS, Analysis, check_id, upstream
from graphcore.core.compiler import compile
from graphcore.core.diagnostics import GraphError, errors, one_line
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.names import Namespace, identifier

BATCH = "N"  # the symbolic batch size inside folded shape values

Converter = Callable[["_Importer", "onnx.NodeProto"], None]  # noqa: F821  (onnx is imported lazily)
CONVERTERS: dict[str, Converter] = {}


class Folder(NamedTuple):
    """How an op is computed on constants, and how many elements its result will hold, known from
    its inputs' shapes before the result is allocated."""

    fold: Callable
    elements: Callable


FOLDERS: dict[str, Folder] = {}

# Element types whose arrays torch can hold as weights (bfloat16, float8 or int4 it cannot).
READABLE_TYPES = ("FLOAT", "DOUBLE", "FLOAT16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                  "UINT64", "BOOL")


@dataclass(frozen=True)
class ImportLimits:
    """How much an import may allocate. A few KB of ONNX (Concats that double a constant) would
    otherwise have constant folding ask for terabytes, so sizes are checked before allocating."""

    tensor_elements: int = 2**28  # any one initializer or folded constant (1 GiB of float32)
    folded_elements: int = 2**27  # all folded constants together (initializers are bounded by the files)


def converts(*op_types: str) -> Callable[[Converter], Converter]:
    """Register the converter of ONNX op types (one converter per op type)."""
    def register(fn: Converter) -> Converter:
        for op in op_types:
            if op in CONVERTERS:
                raise ValueError(f"ONNX op {op} already has a converter")
            CONVERTERS[op] = fn
        return fn
    return register


def from_onnx(path: str | os.PathLike,
              limits: ImportLimits = ImportLimits()) -> tuple[GraphDoc, dict[str, torch.Tensor]]:
    """The graph and its weights (a state_dict that ``gc.compile(doc)`` loads with strict=True).

    ``limits`` bounds the tensors the import may create; a file that needs more is a ``GraphError``."""
    path = Path(path)
    model = _load(path)
    doc, state = _Importer(model, path, limits).run()
    analysis = Analysis(doc)
    problems = errors(analysis.diagnostics)
    if problems:
        raise GraphError([p.__class__(p.severity, p.node_id, p.port, f"{path.name}: imported graph: {p.message}",
                                      p.hint) for p in problems])
    compile(doc, analysis=analysis)._load_checked(state, str(path))
    return doc, state


def _load(path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GraphError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError):
        model = None
    if model is None or not model.ir_version or not model.graph.node:
        raise GraphError(f"{path}: not an ONNX model (it does not parse as an ONNX ModelProto with a graph)")
    try:
        onnx.checker.check_model(str(path))  # given the path, it checks external data in the model's folder
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001  (onnx raises several kinds for a broken model)
        raise GraphError(f"{path}: not a valid ONNX model: {one_line(str(exc))[:300]}") from None


class _Importer:
    def __init__(self, model, path: Path, limits: ImportLimits):
        import onnx
        from onnx import numpy_helper

        self.onnx, self.numpy_helper = onnx, numpy_helper
        self.path, self.limits = path, limits
        self.folded = 0  # elements in all folded constants so far
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.consts: dict[str, np.ndarray] = {i.name: self.array(i, f"initializer {i.name!r}")
                                              for i in self.graph.initializer}
        self.values: dict[str, tuple[str, str]] = {}  # ONNX tensor -> (node id, port)
        self.dims: dict[str, list] = {}  # ONNX tensor -> its dims (ints, or None where unknown)
        for info in [*self.graph.value_info, *self.graph.input, *self.graph.output]:
            shape = info.type.tensor_type.shape
            if info.type.tensor_type.HasField("shape"):
                self.dims[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
        self.consumers: dict[str, list] = collections.defaultdict(list)
        self.producers: dict[str, int] = {}  # ONNX tensor -> index of the node that computes it
        for index, node in enumerate(self.graph.node):
            for name in node.input:
                self.consumers[name].append(node)
            self.producers.update(dict.fromkeys(node.output, index))
        for out in self.graph.output:
            self.consumers[out.name].append(None)
        self.skip: set[int] = set()  # nodes already absorbed into an earlier block (MatMul + Add)
        self.ids = Namespace(RESERVED_IDS)
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.state: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ driver
    def run(self) -> tuple[GraphDoc, dict[str, torch.Tensor]]:
        self._check_ops()
        for value in self.graph.input:
            if value.name not in self.consts:
                self._input(value)
        for index, node in enumerate(self.graph.node):
            if index in self.skip:
                continue
            if node.op_type in FOLDERS and (node.op_type == "Shape" or all(self._known(n) for n in node.input if n)):
                self._fold(node)
            elif node.op_type in CONVERTERS:
                CONVERTERS[node.op_type](self, node)
            else:
                self.fail(node, "works on computed tensors here; NetCanvas can only fold it on constants")
        for value in self.graph.output:
            if value.name not in self.values:
                raise GraphError(f"{self.path.name}: output {value.name!r} is a constant, not computed from inputs")
            node_id = self.ids.name(identifier(value.name, "y"))
            self.nodes.append(Node(id=self._valid(node_id, "y"), type="output"))
            self._edge(value.name, self.nodes[-1].id)
        return self._pruned(), self.state

    def _check_ops(self) -> None:
        def label(node) -> str:
            return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"

        unmapped = collections.Counter(label(node) for node in self.graph.node
                                       if node.op_type not in CONVERTERS and node.op_type not in FOLDERS
                                       or node.domain not in ("", "ai.onnx"))
        if unmapped:
            listing = ", ".join(f"{op} ×{count}" for op, count in unmapped.most_common())
            raise GraphError(f"{self.path.name}: no NetCanvas block for these ONNX ops: {listing}")

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
        return GraphDoc(name=name, nodes=nodes, edges=edges,
                        meta={"imported_from": self.path.name, "opset": self.opset})

    # ------------------------------------------------------------------ reading tensors
    def array(self, tensor, owner: str) -> np.ndarray:
        """``tensor`` as an array, refused before anything is allocated where it is too big, of a type
        torch cannot hold, or stored anywhere but exactly where it should be, at the length it should have."""
        where = f"{self.path.name}: {owner}"
        size = self._size(tensor, where)
        if self.onnx.external_data_helper.uses_external_data(tensor):
            tensor = self._with_external_data(tensor, where, size)
        else:
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

    def _with_external_data(self, tensor, where: str, size: int):
        """A copy of ``tensor`` holding the ``size`` bytes it keeps in a file of its own."""
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
        loaded = self.onnx.TensorProto()
        loaded.CopyFrom(tensor)
        del loaded.external_data[:]
        loaded.data_location = self.onnx.TensorProto.DEFAULT
        with file.open("rb") as data:
            data.seek(offset)
            loaded.raw_data = data.read(size)
        return loaded

    # ------------------------------------------------------------------ helpers for converters
    def fail(self, node, message: str) -> None:
        raise GraphError(f"{self.path.name}: {_label(node)} {message}")

    def attr(self, node, name: str, default=None):
        for attribute in node.attribute:
            if attribute.name == name:
                value = self.onnx.helper.get_attribute_value(attribute)
                return value.decode() if isinstance(value, bytes) else value
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

    def add(self, node, block: str, params: dict, inputs: list[str] | dict[str, str],
            weights: dict[str, np.ndarray] | None = None, output: str | None = None) -> str:
        """Add a block fed by ONNX tensors; its output is ``output`` (default: the node's first)."""
        base = _weight_prefix(self, weights, node) or block
        node_id = self._valid(self.ids.name(identifier(base, block)), block)
        self.nodes.append(Node(id=node_id, type=block, params=params))
        ports = inputs if isinstance(inputs, dict) else {"in": inputs[0]} if len(inputs) == 1 else \
            {f"in{i}": name for i, name in enumerate(inputs)}
        for port, name in ports.items():
            if name not in self.values:
                self.fail(node, f"takes {name!r} as a tensor input, but it is a constant")
            self._edge(name, node_id, port)
        for key, array in (weights or {}).items():
            tensor = torch.from_numpy(np.array(array, copy=True))
            self.state[f"{node_id}.{key}"] = tensor.float() if tensor.is_floating_point() else tensor
        self.values[output or node.output[0]] = (node_id, "out")
        return node_id

    def alias(self, node, source: str) -> None:
        self.values[node.output[0]] = self.values[source]

    def _valid(self, node_id: str, fallback: str) -> str:
        return node_id if check_id(node_id) is None else self.ids.name(fallback)

    def _edge(self, tensor: str, dst: str, port: str = "in") -> None:
        src, src_port = self.values[tensor]
        self.edges.append(Edge(src=src, src_port=src_port, dst=dst, dst_port=port))

    def _input(self, value) -> None:
        tensor_type = value.type.tensor_type
        dims = self.dims.get(value.name) or []
        if not dims or any(d is None for d in dims[1:]):
            raise GraphError(f"{self.path.name}: input {value.name!r} needs a fixed size in every dim but the "
                             f"first (the batch), got {dims or 'no shape'}")
        dtype = {1: "float32", 7: "int64"}.get(tensor_type.elem_type)
        if dtype is None:
            raise GraphError(f"{self.path.name}: input {value.name!r} has element type {tensor_type.elem_type}; "
                             "NetCanvas inputs are float32 or int64")
        node_id = self._valid(self.ids.name(identifier(value.name, "x")), "x")
        self.nodes.append(Node(id=node_id, type="input", params={"shape": dims[1:], "dtype": dtype}))
        self.values[value.name] = (node_id, "out")
        self.dims[value.name] = dims

    # ------------------------------------------------------------------ constant and shape folding
    def _known(self, name: str) -> bool:
        return name in self.consts

    def _fold(self, node) -> None:
        folder = FOLDERS[node.op_type]
        inputs = [self.consts.get(n) if n else None for n in node.input]
        try:
            self._reserve(node, folder.elements(self, node, inputs))
            result = folder.fold(self, node, inputs)
        except GraphError:
            raise
        except Exception as exc:  # noqa: BLE001  (numpy refusing odd shapes: a clear error, not a traceback)
            self.fail(node, f"cannot be folded: {type(exc).__name__}: {exc}")
        if isinstance(result, np.generic):
            result = np.asarray(result)
        elif not isinstance(result, np.ndarray):  # the batch symbol picked out of a shape
            result = np.array(result, dtype=object)
        self.consts[node.output[0]] = result

    def _reserve(self, node, elements: int) -> None:
        """Count a folded constant against the budget before it is allocated."""
        if elements > self.limits.tensor_elements:
            self.fail(node, f"would make a constant of {elements:,} elements, over the import limit of "
                            f"{self.limits.tensor_elements:,} per tensor")
        self.folded += elements
        if self.folded > self.limits.folded_elements:
            self.fail(node, f"would bring the folded constants to {self.folded:,} elements, over the import limit "
                            f"of {self.limits.folded_elements:,} in all")


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


def _label(node) -> str:
    return f"ONNX node {node.name or node.op_type!r} ({node.op_type})"


def _byte_count(entries: dict[str, str], key: str, where: str) -> int | None:
    """An external-data offset or length (None where absent)."""
    text = entries.get(key)
    if text is not None and not text.isdecimal():
        raise GraphError(f"{where} has an external data {key} of {text!r}, which is not a number of bytes")
    return None if text is None else int(text)


def _weight_prefix(imp: _Importer, weights: dict | None, node) -> str | None:
    """'layer1_0.conv1' from an initializer named 'layer1_0.conv1.weight' (exporters keep
    PyTorch's module path), so that re-imported blocks keep their names."""
    if not weights:
        return None
    name = next((n for n in node.input if n in imp.consts and n.count(".")), None)
    return name.rsplit(".", 1)[0].replace(".", "_") if name else None


# ---------------------------------------------------------------------- folding rules
def _first_input(imp, node, inputs) -> int:
    """Ops whose result holds no more elements than their first input."""
    return inputs[0].size


def _read_from_file(imp, node, inputs) -> int:
    """A value the file holds: bounded by the file, and sized by ``_Importer.array`` per tensor."""
    return 0


def folds(*op_types: str, elements: Callable = _first_input):
    """Register how ONNX op types are folded on constants, and the size of the result."""
    def register(fn):
        for op in op_types:
            FOLDERS[op] = Folder(fn, elements)
        return fn
    return register


@folds("Constant", elements=_read_from_file)
def _constant(imp, node, inputs):
    for attribute in node.attribute:
        value = imp.onnx.helper.get_attribute_value(attribute)
        if attribute.name == "value":
            return imp.array(value, _label(node))
        if attribute.name in ("value_float", "value_int"):
            return np.array(value)
        if attribute.name in ("value_floats", "value_ints"):
            return np.array(list(value))
    imp.fail(node, "has a kind of value NetCanvas cannot read")


@folds("Identity", "Cast")
def _identity(imp, node, inputs):
    if node.op_type == "Cast" and inputs[0].dtype != object:
        return inputs[0].astype(imp.onnx.helper.tensor_dtype_to_np_dtype(imp.attr(node, "to")))
    return inputs[0]


@folds("Shape", elements=lambda imp, node, inputs: len(imp.dims.get(node.input[0]) or ()))
def _shape(imp, node, inputs):
    dims = imp.dims.get(node.input[0])
    if dims is None or any(d is None for d in dims[1:]):
        imp.fail(node, "reads a shape that is not known when importing")
    values = np.array([BATCH, *dims[1:]], dtype=object)
    start, end = imp.attr(node, "start", 0), imp.attr(node, "end", None)
    return values[start:end]


def _gathered(imp, node, inputs) -> int:
    data, indices = inputs
    axis = imp.attr(node, "axis", 0) % max(data.ndim, 1)
    return math.prod(data.shape[:axis] + data.shape[axis + 1:]) * indices.size


@folds("Gather", elements=_gathered)
def _gather(imp, node, inputs):
    return np.take(inputs[0], inputs[1].astype(np.int64), axis=imp.attr(node, "axis", 0))


@folds("Unsqueeze")
def _unsqueeze(imp, node, inputs):
    axes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else imp.attr(node, "axes")
    result = inputs[0]
    for axis in sorted(int(a) % (result.ndim + len(axes)) for a in axes):
        result = np.expand_dims(result, axis)
    return result


@folds("Squeeze")
def _squeeze(imp, node, inputs):
    axes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else imp.attr(node, "axes")
    return np.squeeze(inputs[0], axis=None if axes is None else tuple(int(a) for a in axes))


@folds("Concat", elements=lambda imp, node, inputs: sum(a.size for a in inputs))
def _concat_fold(imp, node, inputs):
    return np.concatenate(inputs, axis=imp.attr(node, "axis"))


@folds("Slice")
def _slice(imp, node, inputs):
    data, starts, ends = inputs[0], inputs[1], inputs[2]
    axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else range(len(starts))
    steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        big = np.iinfo(np.int64).max // 2
        index[int(axis)] = slice(int(np.clip(start, -big, big)), int(np.clip(end, -big, big)), int(step))
    return data[tuple(index)]


def _numeric(array: np.ndarray) -> bool:
    return array.dtype != object


@folds("Reshape")
def _reshape_fold(imp, node, inputs):
    if not _numeric(inputs[0]) or not _numeric(inputs[1]):
        imp.fail(node, "reshapes a shape value")
    return inputs[0].reshape([int(d) for d in inputs[1]])


@folds("Transpose")
def _transpose_fold(imp, node, inputs):
    return np.transpose(inputs[0], imp.attr(node, "perm"))


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
    return values[0] if len(set(values)) == 1 else list(values)


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


@converts("Gemm")
def _gemm(imp, node):
    if imp.attr(node, "transA", 0):
        imp.fail(node, "transposes its input (transA=1)")
    weight = imp.const(node, 1, "weight")
    weight = weight if imp.attr(node, "transB", 0) else weight.T
    weight = weight * imp.attr(node, "alpha", 1.0)
    bias = imp.const(node, 2, "bias")
    weights = {"weight": weight}
    if bias is not None:
        weights["bias"] = np.broadcast_to(bias * imp.attr(node, "beta", 1.0), (weight.shape[0],))
    imp.add(node, "linear", {"out_features": int(weight.shape[0]), "bias": bias is not None}, [node.input[0]], weights)


@converts("MatMul")
def _matmul(imp, node):
    weight = imp.const(node, 1, "weight (x @ W with W constant)")
    if weight.ndim != 2:
        imp.fail(node, "multiplies by a constant that is not a matrix")
    weights, output = {"weight": weight.T}, node.output[0]
    after = imp.consumers.get(output, [])
    if len(after) == 1 and after[0] is not None and after[0].op_type == "Add":
        add = after[0]
        other = add.input[1] if add.input[0] == output else add.input[0]
        bias = imp.consts.get(other)
        if bias is not None and bias.size == weight.shape[1] and bias.ndim <= 2:
            weights["bias"] = bias.reshape(-1)
            output = add.output[0]
            imp.skip.add(imp.producers[add.output[0]])
    imp.add(node, "linear", {"out_features": int(weight.shape[1]), "bias": "bias" in weights}, [node.input[0]],
            weights, output)


@converts("Add", "Mul", "Sum")
def _merge(imp, node):
    inputs = list(node.input)
    if node.op_type == "Mul" and len(inputs) == 2:
        for x, gate in (inputs, inputs[::-1]):
            producer = _producer(imp, gate)
            if producer is not None and producer.op_type == "Sigmoid" and producer.input[0] == x:
                imp.add(node, "silu", {}, [x])  # x * sigmoid(x)
                return
    constant = [name for name in inputs if name in imp.consts]
    if constant:
        imp.fail(node, "combines a tensor with a constant; NetCanvas has no block for a learned-free constant")
    block = "mul" if node.op_type == "Mul" else "add"
    imp.add(node, block, {"n": len(inputs)}, inputs)


def _producer(imp, tensor: str):
    index = imp.producers.get(tensor)
    return None if index is None else imp.graph.node[index]


@converts("BatchNormalization")
def _batchnorm(imp, node):
    if imp.attr(node, "training_mode", 0):
        imp.fail(node, "is in training mode")
    scale, bias, mean, var = (imp.const(node, i, what) for i, what in
                              enumerate(("scale", "bias", "mean", "variance"), start=1))
    rank = imp.rank(node.input[0])
    block = {2: "batchnorm1d", 3: "batchnorm1d", 4: "batchnorm2d", 5: "batchnorm3d"}.get(rank)
    if block is None:
        imp.fail(node, f"normalises a tensor of rank {rank}")
    params = {"eps": float(imp.attr(node, "epsilon", 1e-5)), "momentum": round(1 - imp.attr(node, "momentum", 0.9), 6)}
    imp.add(node, block, params, [node.input[0]], {
        "weight": scale, "bias": bias, "running_mean": mean, "running_var": var,
        "num_batches_tracked": np.array(0, dtype=np.int64)})


@converts(*_ACTIVATIONS)
def _activation(imp, node):
    imp.add(node, _ACTIVATIONS[node.op_type], {}, [node.input[0]])


@converts("LeakyRelu")
def _leaky_relu(imp, node):
    imp.add(node, "leaky_relu", {"negative_slope": float(imp.attr(node, "alpha", 0.01))}, [node.input[0]])


@converts("Gelu")
def _gelu(imp, node):
    imp.add(node, "gelu", {"approximate": imp.attr(node, "approximate", "none")}, [node.input[0]])


@converts("Softmax")
def _softmax(imp, node):
    rank = imp.rank(node.input[0])
    axis = imp.attr(node, "axis", -1 if imp.opset >= 13 else 1)
    if imp.opset < 13 and rank is not None and axis % rank != rank - 1:
        imp.fail(node, "uses the pre-opset-13 softmax over flattened dims")
    if rank is not None and axis % rank == 0:
        imp.fail(node, "normalises over the batch dim")
    imp.add(node, "softmax", {"dim": int(axis)}, [node.input[0]])


def _pool(imp, node, block: str):
    rank = imp.rank(node.input[0])
    if rank != 4:
        imp.fail(node, f"pools a tensor of rank {rank}; NetCanvas pools (N, C, H, W)")
    if any(d != 1 for d in _spatial(node, imp, "dilations", 2, 1)):
        imp.fail(node, "has dilation")
    kernel = list(imp.attr(node, "kernel_shape"))
    pads = _symmetric_pads(imp, node, 2)
    if block == "avgpool2d" and any(pads) and not imp.attr(node, "count_include_pad", 0):
        imp.fail(node, "leaves padding out of its averages (count_include_pad=0), which PyTorch's default does not")
    params = {"kernel_size": _size(kernel), "stride": _size(_spatial(node, imp, "strides", 2, 1)),
              "padding": _size(pads), "ceil_mode": bool(imp.attr(node, "ceil_mode", 0))}
    imp.add(node, block, params, [node.input[0]])


@converts("MaxPool")
def _maxpool(imp, node):
    if len(node.output) > 1 and node.output[1]:
        imp.fail(node, "returns indices")
    _pool(imp, node, "maxpool2d")


@converts("AveragePool")
def _avgpool(imp, node):
    _pool(imp, node, "avgpool2d")


@converts("GlobalAveragePool")
def _global_avgpool(imp, node):
    if imp.rank(node.input[0]) != 4:
        imp.fail(node, "pools a tensor that is not (N, C, H, W)")
    imp.add(node, "adaptive_avgpool2d", {"output_size": 1}, [node.input[0]])


@converts("ReduceMean")
def _reduce_mean(imp, node):
    rank = imp.rank(node.input[0])
    axes = imp.const(node, 1, "axes") if len(node.input) > 1 else imp.attr(node, "axes")
    axes = sorted(int(a) % rank for a in axes) if axes is not None and rank else None
    keepdims = imp.attr(node, "keepdims", 1)
    if rank is None or rank < 3 or axes != list(range(2, rank)):
        imp.fail(node, "averages over dims other than all the spatial ones")
    if keepdims:
        if rank != 4:
            imp.fail(node, "keeps the averaged dims of a tensor that is not (N, C, H, W)")
        imp.add(node, "adaptive_avgpool2d", {"output_size": 1}, [node.input[0]])
    else:
        imp.add(node, "global_avgpool", {}, [node.input[0]])


@converts("Flatten")
def _flatten(imp, node):
    if imp.attr(node, "axis", 1) != 1:
        imp.fail(node, "flattens the batch dim too (axis != 1)")
    imp.add(node, "flatten", {"start_dim": 1, "end_dim": -1}, [node.input[0]])


@converts("Reshape")
def _reshape(imp, node):
    shape = list(imp.const(node, 1, "shape"))
    rank = imp.rank(node.input[0])
    first = shape[0] if shape else None
    if first == BATCH or (first == 0 and not imp.attr(node, "allowzero", 0)):
        rest = shape[1:]
    elif first == -1 and -1 not in shape[1:]:
        rest = shape[1:]  # [-1, 400]: the exporter's way of keeping the batch
    else:
        imp.fail(node, f"reshapes across the batch dim (shape {shape})")
    if any(not isinstance(d, int | np.integer) or d == 0 for d in rest):
        imp.fail(node, f"has a target shape NetCanvas cannot fix when importing: {shape}")
    rest = [int(d) for d in rest]
    if rank == 4 and rest and len(rest) == 1 and rest[0] in (-1,):
        imp.add(node, "flatten", {"start_dim": 1, "end_dim": -1}, [node.input[0]])
    else:
        imp.add(node, "reshape", {"shape": rest}, [node.input[0]])


@converts("Transpose")
def _transpose(imp, node):
    perm = list(imp.attr(node, "perm") or [])
    if not perm or perm[0] != 0:
        imp.fail(node, f"moves the batch dim (perm {perm})")
    imp.add(node, "permute", {"dims": [int(p) for p in perm[1:]]}, [node.input[0]])


@converts("Concat")
def _concat(imp, node):
    rank = imp.rank(node.output[0])
    axis = imp.attr(node, "axis")
    if rank is not None and axis % rank == 0:
        imp.fail(node, "joins along the batch dim")
    imp.add(node, "concat", {"n": len(node.input), "dim": int(axis)}, list(node.input))


@converts("Identity", "Dropout")
def _pass_through(imp, node):
    imp.alias(node, node.input[0])  # dropout does nothing at inference, which is what ONNX holds


@converts("Resize")
def _resize(imp, node):
    rank = imp.rank(node.input[0])
    scales = imp.const(node, 2, "scales") if len(node.input) > 2 else None
    if scales is None or scales.size == 0 or rank is None:
        imp.fail(node, "resizes to fixed sizes; NetCanvas's upsample takes a scale factor")
    factors = {float(s) for s in scales[2:]}
    if list(scales[:2]) != [1, 1] or len(factors) != 1:
        imp.fail(node, f"scales {list(scales)} are not one factor for every spatial dim")
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
def _embedding(imp, node):
    table = imp.const(node, 0, "table")
    if table.ndim != 2 or imp.attr(node, "axis", 0) != 0:
        imp.fail(node, "is not an embedding lookup (a 2-D table indexed along dim 0)")
    params = {"num_embeddings": int(table.shape[0]), "embedding_dim": int(table.shape[1])}
    imp.add(node, "embedding", params, [node.input[1]], {"weight": table})
