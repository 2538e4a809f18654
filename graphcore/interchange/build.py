"""A concise way to write a graph in Python, in the spirit of ``ai.model`` (calvinpelletier/ai).

    import graphcore.interchange.build as m

    model = m.Model(m.seq(
        m.flatten(),
        m.fc(28 * 28, 128, actv="relu"),
        m.repeat(2, m.fc(128, 128, actv="relu")),
        m.fc(128, 10),
    ), input_shape=(1, 28, 28))
    doc = model.graph()      # a GraphDoc: validate it, save it, open it in the editor
    net = model.init()       # the compiled GraphModel, randomly initialised (or init(path))

Each function returns a *part*: a description that, called on a wire (a tensor-to-be), adds
blocks to the graph and returns the new wire. Parts hold no weights, so ``repeat`` simply
applies one several times. A ``Model`` subclass may set parts as attributes and write
``forward(self, x)`` as with nn.Module; node ids then start with the attribute's name.
Channel and feature counts are written as in PyTorch (``fc(784, 128)``) and checked against
the inferred shapes, so a wrong one is an error naming the node.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from blocks.activation import BUILDER_NAMES as ACTIVATIONS
from graphcore.core.analysis import RESERVED_IDS, Analysis
from graphcore.core.compiler import GraphModel, compile
from graphcore.core.diagnostics import GraphError, error, errors
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.names import Namespace, identifier

NORMS = {"batch": "batchnorm2d", "group": "groupnorm"}


# ----------------------------------------------------------------------------- wires and the builder
@dataclass
class _Check:
    """A size the user wrote (``fc(784, …)``) to compare with the inferred input shape."""

    node_id: str
    what: str
    axis: int  # per-sample axis of the input (0 = channels, -1 = features)
    expected: int


@dataclass
class _Builder:
    name: str
    ids: Namespace = field(default_factory=lambda: Namespace(RESERVED_IDS))
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    checks: list[_Check] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)

    def node(self, kind: str, params: dict, inputs: Sequence[Wire] | dict[str, Wire]) -> Wire:
        node_id = self.ids.name(identifier("_".join([*self.scope, kind])))
        self.nodes.append(Node(id=node_id, type=kind, params=params))
        ports = inputs if isinstance(inputs, dict) else {
            "in" if len(inputs) == 1 and kind not in ("add", "mul", "concat") else f"in{i}": w
            for i, w in enumerate(inputs)}
        for port, wire in ports.items():
            self.edges.append(Edge(src=wire.node_id, src_port=wire.port, dst=node_id, dst_port=port))
        return Wire(self, node_id)


@dataclass(frozen=True)
class Wire:
    """A tensor in the graph being built: a node's output port. ``a + b`` and ``a * b`` add blocks."""

    builder: _Builder
    node_id: str
    port: str = "out"

    def __add__(self, other: Wire) -> Wire:
        return self.builder.node("add", {"n": 2}, [self, other])

    def __mul__(self, other: Wire) -> Wire:
        return self.builder.node("mul", {"n": 2}, [self, other])


class Part:
    """Something that turns a wire into a wire by adding blocks."""

    def __call__(self, x: Wire) -> Wire:
        raise NotImplementedError


class _Fn(Part):
    def __init__(self, fn: Callable[[Wire], Wire], name: str):
        self.fn, self.name = fn, name

    def __call__(self, x: Wire) -> Wire:
        return self.fn(x)

    def __repr__(self) -> str:
        return f"<part {self.name}>"


def _block(kind: str, params: dict | None = None, check: tuple[str, int, int] | None = None) -> Part:
    """One block; ``check`` = (description, axis, size) of the input the user wrote down."""
    def apply(x: Wire) -> Wire:
        out = x.builder.node(kind, dict(params or {}), [x])
        if check is not None:
            x.builder.checks.append(_Check(out.node_id, *check))
        return out
    return _Fn(apply, kind)


# ----------------------------------------------------------------------------- parts
def seq(*parts: Part | None) -> Part:
    """Apply parts in order (``None`` entries are skipped, as for an optional activation)."""
    chosen = [p for p in parts if p is not None]

    def apply(x: Wire) -> Wire:
        for part in chosen:
            x = part(x)
        return x
    return _Fn(apply, "seq")


def repeat(n: int, part: Part) -> Part:
    """``part`` applied ``n`` times in a row (each time with its own weights)."""
    if n < 0:
        raise ValueError(f"repeat needs n >= 0, got {n}")
    return seq(*([part] * n))


def actv(name: str | None) -> Part | None:
    """An activation by name: relu, gelu, silu/swish, mish, tanh, sigmoid, lrelu, softmax."""
    if name is None:
        return None
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(sorted(ACTIVATIONS))}")
    return _block(ACTIVATIONS[name])


def flatten() -> Part:
    """(B, C, H, W) -> (B, C·H·W)."""
    return _block("flatten")


def fc(n_in: int, n_out: int, actv: str | None = None, bias: bool = True, *, equalized: bool = False,
       lr_mul: float = 1.0) -> Part:
    """Fully connected layer from ``n_in`` to ``n_out`` features, then an optional activation.

    ``equalized``: StyleGAN's equalised learning rate (the weight scaled by 1/sqrt(fan_in) at run
    time); ``lr_mul``: the layer learns that many times the optimiser's rate (0.01 in StyleGAN's
    mapping network).
    """
    params = {"out_features": n_out, "bias": bias, **_scaling(equalized, lr_mul)}
    return seq(_block("linear", params, ("input features", -1, n_in)), _activation(actv))


def _scaling(equalized: bool, lr_mul: float) -> dict[str, Any]:
    """The run-time weight scaling params, only those that differ from a plain layer (whose
    params then stay as they were before these existed)."""
    params: dict[str, Any] = {}
    if equalized:
        params["equalized"] = True
    if lr_mul != 1:
        params["lr_mul"] = lr_mul
    return params


def _activation(name: str | None) -> Part | None:
    return actv(name)


def _norm(kind: str | None, channels: int) -> Part | None:
    """A normalisation over channels by name: 'batch' or 'group' (8 groups, or fewer to divide)."""
    if kind is None:
        return None
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose from {', '.join(NORMS)}")
    params = {"num_groups": math.gcd(8, channels)} if kind == "group" else {}
    return _block(NORMS[kind], params)


def conv(
    nc1: int,
    nc2: int,
    k: int = 3,
    stride: int | float = 1,
    actv: str | None = None,
    norm: str | None = None,
    bias: bool = True,
    *,
    equalized: bool = False,
    lr_mul: float = 1.0,
) -> Part:
    """A 'same'-padded 2-D conv, then an optional norm and activation.

    ``stride < 1`` upsamples by ``1/stride`` first (``stride=0.5`` doubles H and W); a 1x1 conv
    with ``stride > 1`` average-pools first, so that no input pixel is skipped. ``equalized`` and
    ``lr_mul`` scale the weight at run time, as for ``fc``.
    """
    resample = None
    if stride < 1:
        resample = _block("upsample", {"scale_factor": float(1 / stride), "mode": "nearest"})
        stride = 1
    elif k == 1 and stride != 1:
        resample = _block("avgpool2d", {"kernel_size": int(stride)})
        stride = 1
    layer = _block("conv2d", {"out_channels": nc2, "kernel_size": k, "stride": int(stride), "padding": (k - 1) // 2,
                              "bias": bias and norm is None, **_scaling(equalized, lr_mul)},
                   ("input channels", 0, nc1))
    return seq(resample, layer, _norm(norm, nc2), _activation(actv))


def res(main: Part, shortcut: Part | None = None) -> Part:
    """``main(x) + shortcut(x)``, or ``main(x) + x`` without a shortcut."""
    def apply(x: Wire) -> Wire:
        return main(x) + (x if shortcut is None else shortcut(x))
    return _Fn(apply, "res")


def _se(nc: int, reduction: int = 16, actv: str = "mish") -> Part:
    """Squeeze-excite: scale each channel by a gate computed from the global average."""
    reduced = max(1, nc // reduction)
    gate = seq(_block("global_avgpool"), fc(nc, reduced, actv=actv), fc(reduced, nc, actv="sigmoid"),
               _block("reshape", {"shape": [nc, 1, 1]}))

    def apply(x: Wire) -> Wire:
        return x * gate(x)
    return _Fn(apply, "se")


def resblk(
    nc1: int,
    nc2: int,
    stride: int | float = 1,
    actv: str | None = "mish",
    norm: str | None = "batch",
    se: bool = True,
) -> Part:
    """ResNet block: two 3x3 convs (with norm, optional squeeze-excite) plus a shortcut.

    The shortcut is a 1x1 conv where channels or size change, else the identity.
    """
    main = seq(conv(nc1, nc2, stride=stride, norm=norm, actv=actv), conv(nc2, nc2, norm=norm),
               _se(nc2, actv=actv or "relu") if se else None)
    shortcut = conv(nc1, nc2, k=1, stride=stride) if nc1 != nc2 or stride != 1 else None
    return res(main, shortcut)


def pyramid(size_start: int, size_end: int, nc_min: int, nc_max: int,
            block: Callable[[int, int, int], Part]) -> Part:
    """Blocks that halve (or double) the image size at each step, from ``size_start`` to
    ``size_end``, while the channels double from ``nc_min`` (capped at ``nc_max``), or halve
    back when growing. ``block(size, nc_in, nc_out)`` makes each step."""
    if nc_min >= nc_max:
        raise ValueError(f"pyramid needs nc_min < nc_max, got {nc_min} and {nc_max}")
    ratio = max(size_start, size_end) / min(size_start, size_end)
    steps = round(math.log2(ratio))
    if 2 ** steps != ratio:
        raise ValueError(f"pyramid sizes must differ by a power of 2, got {size_start} and {size_end}")
    channels = [min(nc_min * 2 ** i, nc_max) for i in range(steps + 1)]
    sizes = [min(size_start, size_end) * 2 ** i for i in range(steps + 1)]
    if size_start < size_end:
        channels.reverse()
    else:
        sizes.reverse()
    return seq(*(block(sizes[i], channels[i], channels[i + 1]) for i in range(steps)))


norm = _norm
se = _se


def global_avg() -> Part:
    """Average over H and W, keeping them as 1x1: (B, C, H, W) -> (B, C, 1, 1)."""
    return _block("adaptive_avgpool2d", {"output_size": 1})


def dropout(p: float = 0.5) -> Part:
    return _block("dropout", {"p": p})


# ----------------------------------------------------------------------------- the model
class Model:
    """A network written with parts: ``Model(part, input_shape=...)``, or a subclass that sets
    parts as attributes and defines ``forward(self, x)``.

    ``graph()`` gives the GraphDoc; ``init(path=None)`` the compiled model, randomly
    initialised or with the weights saved at ``path``.
    """

    def __init__(self, net: Part | None = None, *, input_shape: Sequence[int] = (1, 28, 28),
                 name: str | None = None):
        self.net = net
        self.input_shape = list(input_shape)
        self.name = name or type(self).__name__

    def forward(self, x: Wire) -> Wire | tuple[Wire, ...]:
        if self.net is None:
            raise NotImplementedError("pass a part to Model(...) or define forward(self, x)")
        return self.net(x)

    def graph(self) -> GraphDoc:
        """The graph, checked: any problem raises ``GraphError`` naming the node."""
        builder = _Builder(self.name)
        builder.nodes.append(Node(id="x", type="input", params={"shape": self.input_shape}))
        builder.ids.name("x")
        with _scoped_parts(self, builder):
            result = self.forward(Wire(builder, "x"))
        builder.scope.clear()
        for i, wire in enumerate(result if isinstance(result, tuple) else (result,)):
            out_id = builder.ids.name("y" if i == 0 else f"y{i}")
            builder.nodes.append(Node(id=out_id, type="output"))
            builder.edges.append(Edge(src=wire.node_id, src_port=wire.port, dst=out_id))
        doc = GraphDoc(name=self.name, nodes=builder.nodes, edges=builder.edges)
        analysis = Analysis(doc)
        problems = errors(analysis.diagnostics)
        for check in builder.checks:
            info = analysis.nodes[check.node_id]
            if info.inputs is None:
                continue
            got = info.inputs["in"][check.axis] if info.inputs["in"] else None
            if got != check.expected:
                problems.append(error(check.node_id, f"was written for {check.expected} {check.what}, but its "
                                      f"input has {got}", hint=f"write {got} there, or change the layer before"))
        if problems:
            raise GraphError(problems)
        return doc

    def init(self, path: str | os.PathLike | None = None, *, seed: int | None = None) -> GraphModel:
        """The compiled model, randomly initialised (seeded if asked) or loaded from ``path``."""
        return compile(self.graph()).init(path, seed=seed)


class _scoped_parts:
    """While ``forward`` runs, a part stored as an attribute (``self.encode``) prefixes the ids
    of the blocks it adds with the attribute's name."""

    def __init__(self, model: Model, builder: _Builder):
        self.model, self.builder = model, builder
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> None:
        for attr, value in vars(self.model).items():
            if isinstance(value, Part) and attr != "net":
                self.saved[attr] = value
                setattr(self.model, attr, _Fn(self._wrap(attr, value), attr))

    def _wrap(self, attr: str, part: Part) -> Callable[[Wire], Wire]:
        def apply(x: Wire) -> Wire:
            self.builder.scope.append(attr)
            try:
                return part(x)
            finally:
                self.builder.scope.pop()
        return apply

    def __exit__(self, *exc: object) -> None:
        for attr, value in self.saved.items():
            setattr(self.model, attr, value)
