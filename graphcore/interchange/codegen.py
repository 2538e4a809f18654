"""Export a graph as a standalone Python file that needs only PyTorch.

The file holds the block classes the graph uses (their own source, with NetCanvas's ``Block``
base replaced by ``nn.Module``, and any block classes or helpers they use, dependencies first),
the network class named after the graph, ``build_model()``, ``example_inputs()`` (random inputs
of the graph's shapes, which ``netcanvas import FILE.py:build_model`` traces with) and a
``__main__`` that runs one forward pass. Submodules are named after node ids, as in the compiled
model, so a state_dict saved in NetCanvas loads into the generated code with ``strict=True``. Every ``forward`` (the
network's and each subgraph's) is written from the compiled model's fx graph, one line per module
call with its output shapes as a comment, so the file calls modules exactly as the model does.

Safety: every identifier comes through ``graphcore.core.names``, and attribute names are node ids
that ``check_id`` accepted; user text (graph name, labels, subgraph names) only enters inside a
comment, escaped onto one line and never an encoding declaration, and never on the first two
lines, where Python reads one. The finished file is checked as Python reads its UTF-8 bytes.

Nothing here needs a weight, so the model is compiled on the meta device: exporting a graph with
huge layers takes no more memory than exporting a small one.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import math
import operator
import re
import sys
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from blocks.base import Block
from blocks.shapes import shape_text
from graphcore.core.analysis import Analysis, check_id
from graphcore.core.compiler import GraphModel, compile
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc
from graphcore.core.inputs import InputSpec, input_specs
from graphcore.core.names import Namespace, class_name

INDENT = "    "
_FILENAME = "<generated>"
EXAMPLE_BATCH = 2

# Constructor arguments that a torch.nn module keeps under another attribute.
_ATTRIBUTE_OF = {
    (nn.MultiheadAttention, "bias"): lambda m: m.in_proj_bias is not None,
    (nn.MultiheadAttention, "add_bias_kv"): lambda m: m.bias_k is not None,
}
_SKIPPED_ARGS = {"device", "dtype"}

Line = tuple[str, str]
"""A line of a generated ``forward``: its code and its shape comment ("" for none)."""


def to_python(doc: GraphDoc) -> str:
    """Standalone Python source for ``doc``; raises ``GraphError`` if the graph does not compile.

    Write it to a file as UTF-8 (``source.encode("utf-8")``): that is how it was checked."""
    analysis = Analysis(doc)
    with torch.device("meta"):  # the writer reads module structure, never a weight
        model = compile(doc, analysis=analysis)
    return _Writer(analysis, model).source()


# ----------------------------------------------------------------------------- user text
# What makes a comment an encoding declaration (PEP 263), matched more widely than Python does.
_DECLARATION = re.compile(r"(coding)([:=])", re.IGNORECASE)


def comment(text: Any, limit: int = 120) -> str:
    """User text made safe for a ``#`` comment: escaped, one line, shortened, no encoding declaration.

    ``repr`` escapes every character that is not printable, which takes in every line break
    (``\\r \\n \\x0b \\x0c \\x1c-\\x1e \\x85 \\u2028 \\u2029``), NUL and lone surrogates. The ``:``
    or ``=`` after ``coding`` is escaped as well (``coding\\x3a``): a declaration would make Python
    decode the file another way (as UTF-7, where ``+AAo-`` in a comment is a new line of code).
    """
    escaped = _DECLARATION.sub(lambda m: f"{m[1]}\\x{ord(m[2]):02x}", repr(str(text))[1:-1])
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def literal(value: Any) -> str:
    """A Python literal for a plain value (what ``Block.init_kwargs`` and torch args hold)."""
    if value is None or isinstance(value, bool | int | str):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '-float("inf")'
        return repr(value)
    if isinstance(value, tuple):
        items = ", ".join(literal(v) for v in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict) and all(isinstance(k, str | int) for k in value):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"{type(value).__name__} value {value!r} cannot be written as a literal")


# ----------------------------------------------------------------------------- module constructors
@dataclass
class _Definitions:
    """Top-level code that the network needs: imports, constants, helpers and block classes."""

    namespace: Namespace
    imports: dict[str, str] = field(default_factory=dict)  # bound name -> import line
    defs: dict[str, object] = field(default_factory=dict)  # bound name -> object, in dependency order
    code: dict[str, str] = field(default_factory=dict)  # bound name -> its source
    _visiting: set[int] = field(default_factory=set)

    def bind(self, name: str, obj: object, source_of: str) -> None:
        """Make ``name`` mean ``obj`` at the top level of the file."""
        if name in self.imports or name in self.defs:
            known = self.defs.get(name)
            if known is obj or (known is None and self._import_line(name, obj) == self.imports.get(name)):
                return
            raise GraphError(f"cannot export: {source_of} uses the name {name!r}, which another block "
                             "already uses for something else")
        if obj is Block:  # used other than as a base (say, in isinstance): it is an nn.Module there
            self._claim(name, source_of)
            self.bind("nn", nn, source_of)
            self.defs[name] = obj
            self.code[name] = f"{name} = nn.Module"
            return
        if isinstance(obj, types.ModuleType) or _is_library(obj):
            line = self._import_line(name, obj)
            if self.namespace.name(name) != name:
                raise GraphError(f"cannot export: name {name!r} (used by {source_of}) clashes with another")
            self.imports[name] = line
            return
        if isinstance(obj, type) and issubclass(obj, nn.Module) or isinstance(obj, types.FunctionType):
            self._add_source(name, obj)
            return
        try:
            text = literal(obj)
        except TypeError:
            raise GraphError(f"cannot export: {source_of} uses {name!r}, a {type(obj).__name__}, "
                             "which is neither torch, a block class, a helper function nor a plain value") from None
        self._claim(name, source_of)
        self.defs[name] = obj
        self.code[name] = f"{name} = {text}"

    def _claim(self, name: str, source_of: str) -> None:
        if self.namespace.name(name) != name:
            raise GraphError(f"cannot export: name {name!r} (used by {source_of}) clashes with another")

    @staticmethod
    def _import_line(name: str, obj: object) -> str:
        if isinstance(obj, types.ModuleType):
            full = obj.__name__
            if full == name:
                return f"import {full}"
            parent, _, last = full.rpartition(".")
            return f"from {parent} import {last}" if parent and last == name else f"import {full} as {name}"
        module, attr = obj.__module__, obj.__name__
        suffix = "" if attr == name else f" as {name}"
        return f"from {module} import {attr}{suffix}"

    def _add_source(self, name: str, obj: type | types.FunctionType) -> None:
        if id(obj) in self._visiting:
            raise GraphError(f"cannot export: {obj.__qualname__} depends on itself through its helpers")
        if name != obj.__name__:
            raise GraphError(f"cannot export: {obj.__qualname__} is used under another name ({name!r})")
        if "<locals>" in obj.__qualname__:
            raise GraphError(f"cannot export: {obj.__qualname__} is defined inside a function")
        self._visiting.add(id(obj))
        try:
            source = textwrap.dedent(inspect.getsource(obj))
        except (OSError, TypeError):
            raise GraphError(f"cannot export: the source of {obj.__qualname__} is not available") from None
        top = ast.parse(source).body[0]
        if isinstance(top, ast.ClassDef):
            source = self._rebase(source, top, obj)
        tree = ast.parse(source)
        scope = vars(sys.modules[obj.__module__])
        for free in _free_names(tree):
            if free == "nn" and scope.get(free, nn) is nn:  # maybe brought in by the rebase
                self.bind("nn", nn, obj.__qualname__)
            elif free in scope:
                self.bind(free, scope[free], obj.__qualname__)
            elif not hasattr(builtins, free):
                raise GraphError(f"cannot export: {obj.__qualname__} uses {free!r}, which is not defined")
        self._visiting.discard(id(obj))
        self._claim(name, obj.__qualname__)
        self.defs[name] = obj
        self.code[name] = source.rstrip()

    def _rebase(self, source: str, tree: ast.ClassDef, cls: type) -> str:
        """Replace the ``Block`` base by ``nn.Module`` (the generated file has no NetCanvas)."""
        lines = source.splitlines(keepends=True)
        scope = vars(sys.modules[cls.__module__])
        for base in reversed(tree.bases):
            if isinstance(base, ast.Name) and scope.get(base.id) is Block:
                line = lines[base.lineno - 1]
                lines[base.lineno - 1] = line[: base.col_offset] + "nn.Module" + line[base.end_col_offset:]
        return "".join(lines)

    def lines(self) -> list[str]:
        """Import lines: the standard library, a blank line, then torch."""
        def key(line: str) -> tuple:
            return (line.split()[1].startswith("torch"), line.startswith("from"), line)
        ordered = sorted(set(self.imports.values()), key=key)
        split = next((i for i, line in enumerate(ordered) if key(line)[0]), len(ordered))
        return ordered[:split] + ([""] if 0 < split < len(ordered) else []) + ordered[split:]

    def bodies(self) -> list[str]:
        return [self.code[name] for name in self.defs]


def _is_library(obj: object) -> bool:
    """Torch or the standard library, which the generated file imports rather than copies."""
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or not hasattr(obj, "__name__"):
        return False
    root = module.partition(".")[0]
    if root not in ("torch", *sys.stdlib_module_names):
        return False
    try:
        return getattr(importlib.import_module(module), obj.__name__) is obj
    except (ImportError, AttributeError):
        return False


def _free_names(tree: ast.AST) -> list[str]:
    """Names a definition reads but does not bind itself (annotations are not evaluated)."""
    bound: set[str] = set()
    loads: dict[str, None] = {}

    class Visitor(ast.NodeVisitor):
        def visit_Name(self, node: ast.Name) -> None:
            if isinstance(node.ctx, ast.Load):
                loads.setdefault(node.id)
            else:
                bound.add(node.id)

        def visit_arg(self, node: ast.arg) -> None:
            bound.add(node.arg)  # its annotation is skipped

        def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            bound.add(node.name)
            for child in (*node.decorator_list, node.args, *node.body):
                self.visit(child)

        visit_FunctionDef = visit_AsyncFunctionDef = _function

        def visit_ClassDef(self, node: ast.ClassDef) -> None:
            bound.add(node.name)
            for child in (*node.decorator_list, *node.bases, *node.keywords, *node.body):
                self.visit(child)

        def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
            for child in (node.target, node.value):
                if child is not None:
                    self.visit(child)

        def visit_alias(self, node: ast.alias) -> None:
            bound.add((node.asname or node.name).partition(".")[0])

        def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
            if node.name:
                bound.add(node.name)
            self.generic_visit(node)

    Visitor().visit(tree.body[0] if isinstance(tree, ast.Module) else tree)
    return [name for name in loads if name not in bound]


def _builtin_call(module: nn.Module, node_id: str, collapse: bool) -> tuple[list[str], list[str]]:
    """Positional and keyword argument texts that rebuild a torch.nn module from its attributes."""
    cls = type(module)
    positional, keywords = [], []
    for name, param in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in _SKIPPED_ARGS or name.startswith("_"):
            continue
        getter = _ATTRIBUTE_OF.get((cls, name))
        if getter is not None:
            value = getter(module)
        elif hasattr(module, name):
            value = getattr(module, name)
            if isinstance(value, torch.Tensor) or (value is None and isinstance(param.default, bool)):
                value = value is not None  # ``bias=True`` is kept as the bias Parameter itself
        elif param.default is param.empty:
            raise GraphError(f"node {node_id!r}: cannot write {cls.__name__} back as code (no attribute {name!r})")
        else:
            continue  # not kept: the default is assumed, and the check below catches a wrong guess
        if collapse and isinstance(value, tuple) and value and len(set(value)) == 1 and isinstance(value[0], int):
            value = value[0]  # kernel_size=(5, 5) -> 5
        if param.default is not param.empty and _equal(value, param.default):
            continue
        try:
            text = literal(value)
        except TypeError as exc:
            raise GraphError(f"node {node_id!r}: cannot write {cls.__name__}({name}=…) as code: {exc}") from None
        if param.default is param.empty and param.kind != param.KEYWORD_ONLY and not keywords:
            positional.append(text)
        else:
            keywords.append(f"{name}={text}")
    return positional, keywords


def _equal(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001  (a comparison that cannot be made is not equal)
        return False


_UNIFORM_TUPLE = re.compile(r"\((-?\d+)(?:, \1)+\)")


def _signature_of(module: nn.Module) -> tuple[str, dict[str, tuple]]:
    """What two modules must share to be interchangeable: their repr (where ``(2, 2)`` and ``2``
    mean the same window) and their parameter and buffer shapes."""
    return (_UNIFORM_TUPLE.sub(r"\1", repr(module)),
            {k: tuple(v.shape) for k, v in module.state_dict().items()})


def _call_line(node: fx.Node, values: dict[fx.Node, str], local: Namespace) -> Line:
    """``("c1 = self.c1(x)", "(N, 6, 28, 28)")``: a module call and its output shapes; a node with
    several outputs unpacks its getitems."""
    call = [values[a] for a in node.args] + [f"{k}={values[v]}" for k, v in node.kwargs.items()]
    items = sorted((u for u in node.users if u.target is operator.getitem), key=lambda u: u.args[1])
    if items:
        for item in items:
            values[item] = local.name(f"{node.target}_{item.meta['port']}")
        shapes = ", ".join(f"{item.meta['port']} {shape_text(item.meta['shape'])}" for item in items)
    else:
        values[node] = local.name(node.target)
        shapes = shape_text(node.meta["shape"])
    targets = ", ".join(values[item] for item in items or [node])
    return f"{targets} = self.{node.target}({', '.join(call)})", shapes


def _lines(forward: list[Line], shapes: bool = True) -> list[str]:
    """The lines' text, with or without their shape comments."""
    return [f"{code}  # {comment}" if shapes and comment else code for code, comment in forward]


# ----------------------------------------------------------------------------- the writer
class _Writer:
    def __init__(self, analysis: Analysis, model: GraphModel):
        self.analysis = analysis
        self.model = model
        self.doc = analysis.doc
        self.top = Namespace({"annotations", "build_model", "example_inputs", "model", "out", "y"})
        self.defs = _Definitions(self.top)
        self._subgraph_classes: dict[str, tuple[str, str]] = {}  # code -> class name, body
        self.defs.bind("torch", torch, "the network")
        self.defs.bind("nn", nn, "the network")
        self.defs.bind("sys", sys, "the network")

    # -- constructors
    def constructor(self, module: nn.Module, node_id: str) -> str:
        """An expression that builds a module equal to ``module`` (checked on the meta device)."""
        expr = self._expression(module, node_id)
        scope: dict[str, Any] = {"torch": torch, "nn": nn}
        for line in self.defs.imports.values():
            exec(line, scope)  # noqa: S102  (our own import lines: torch or the standard library)
        for name, obj in self.defs.defs.items():
            if isinstance(obj, GraphModel):  # a subgraph: its class exists only as generated code
                exec(self.defs.code[name], scope)  # noqa: S102
            else:
                scope[name] = obj
        with torch.device("meta"):
            rebuilt = eval(expr, scope)  # noqa: S307  (an expression we generated from literals)
        nested = any(isinstance(m, GraphModel) for m in module.modules())
        same = (_signature_of(rebuilt)[1] == _signature_of(module)[1] if nested else
                type(rebuilt) is type(module) and _signature_of(rebuilt) == _signature_of(module))
        if not same:
            raise GraphError(f"node {node_id!r}: the generated constructor does not rebuild its "
                             f"{type(module).__name__} exactly: {expr}")
        return expr

    def _subgraph_class(self, model: GraphModel, node_id: str) -> str:
        """A class for a subgraph's compiled model (held by the node ``node_id``).

        Uses with the same code share one class; its shape comments stay only while every use
        has the same shapes, since a subgraph reused at several sizes has no one true shape."""
        init, args, forward = self._module_code(model, node_id)

        def body(shapes: bool) -> str:
            return "\n".join([
                f'{INDENT}"""A subgraph of the network: a block made of blocks."""',
                "",
                f"{INDENT}def __init__(self):",
                f"{INDENT * 2}super().__init__()",
                *(INDENT * 2 + line for line in init),
                "",
                f"{INDENT}def forward(self, {', '.join(args)}):",
                *(INDENT * 2 + line for line in _lines(forward, shapes)),
            ])

        plain, commented = body(shapes=False), body(shapes=True)
        if plain in self._subgraph_classes:
            name, written = self._subgraph_classes[plain]
            if written != commented:
                self._define_subgraph(plain, name, self.defs.defs[name], plain)
            return name
        name = self.top.name(class_name(model.doc.name), fallback="Subgraph")
        self._define_subgraph(plain, name, model, commented)
        return name

    def _define_subgraph(self, key: str, name: str, model: GraphModel, body: str) -> None:
        self._subgraph_classes[key] = (name, body)
        self.defs.defs[name] = model
        self.defs.code[name] = "\n".join([f"# The subgraph {comment(repr(model.doc.name))}.",
                                          f"class {name}(nn.Module):", body])

    def _expression(self, module: nn.Module, node_id: str) -> str:
        cls = type(module)
        if isinstance(module, GraphModel):
            return f"{self._subgraph_class(module, node_id)}()"
        if isinstance(module, Block):
            self.defs.bind(cls.__name__, cls, f"node {node_id!r}")
            return f"{cls.__name__}({self._block_args(module, node_id)})"
        if cls in (nn.Sequential, nn.ModuleList):
            names = list(module._modules)
            if names != [str(i) for i in range(len(names))]:
                raise GraphError(f"node {node_id!r}: a {cls.__name__} with named children cannot be exported")
            inner = ", ".join(self._expression(child, node_id) for child in module)
            return f"nn.{cls.__name__}({inner})" if cls is nn.Sequential else f"nn.ModuleList([{inner}])"
        if getattr(nn, cls.__name__, None) is cls:
            for collapse in (True, False):
                positional, keywords = _builtin_call(module, node_id, collapse)
                expr = f"nn.{cls.__name__}({', '.join(positional + keywords)})"
                with torch.device("meta"):
                    rebuilt = eval(expr, {"nn": nn, "float": float})  # noqa: S307  (literals only)
                if _signature_of(rebuilt) == _signature_of(module):
                    return expr
            raise GraphError(f"node {node_id!r}: cannot write {cls.__name__} back as code exactly")
        raise GraphError(f"node {node_id!r}: a {cls.__module__}.{cls.__qualname__} module cannot be exported "
                         "(only torch.nn modules and NetCanvas blocks can)")

    def _block_args(self, module: Block, node_id: str) -> str:
        signature = inspect.signature(type(module).__init__)
        params = list(signature.parameters.values())[1:]
        recorded = module.__dict__.get("init_kwargs", {})  # a block without its own __init__ takes none
        parts = []
        for param in params:
            if param.name not in recorded:
                continue
            value = recorded[param.name]
            try:
                text = literal(value)
            except TypeError as exc:
                raise GraphError(f"node {node_id!r}: {type(module).__name__}({param.name}=…): {exc}") from None
            if param.kind == param.VAR_POSITIONAL:
                parts.extend(literal(v) for v in value)
            elif param.kind == param.VAR_KEYWORD:
                parts.extend(f"{k}={literal(v)}" for k, v in value.items())
            elif param.default is param.empty and param.kind != param.KEYWORD_ONLY:
                parts.append(text)
            elif not _equal(value, param.default):
                parts.append(f"{param.name}={text}")
        return ", ".join(parts)

    # -- the forward
    def _module_code(self, model: GraphModel, owner: str | None = None) -> tuple[list[str], list[str], list[Line]]:
        """Constructor lines, forward's arguments and forward's lines of a compiled model, written
        from its fx graph, so the export calls every module exactly as the compiled model does.
        Errors name ``owner`` (the node that holds a subgraph), or else the node at fault."""
        local = Namespace({"self"})
        init: list[str] = []
        args: list[str] = []
        forward: list[Line] = []
        values: dict[fx.Node, str] = {}
        for node in model.graph.nodes:
            if node.op == "placeholder":
                values[node] = local.name(node.target)
                args.append(values[node])
            elif node.op == "call_module":
                init.append(self._init_line(model, node, owner or node.target))
                forward.append(_call_line(node, values, local))
            elif node.op == "call_function" and node.target is operator.getitem:
                continue  # named by the call line that unpacks it
            elif node.op == "output":
                results = node.args[0] if isinstance(node.args[0], tuple) else (node.args[0],)
                forward.append(("return " + ", ".join(values[result] for result in results), ""))
            else:
                raise GraphError(f"node {owner or node.name!r}: step {node.op} {node.target} cannot be exported")
        return init, args, forward

    def _init_line(self, model: GraphModel, node: fx.Node, owner: str) -> str:
        # The attribute is the node id unchanged (state_dict keys must match), so it must pass the
        # rule validation applies: every id that validates exports, and no other text becomes code.
        if check_id(node.target) is not None:
            raise GraphError(f"node {node.target!r}: id cannot be used as an attribute name")
        label = node.meta["label"]
        note = f"  # {comment(label)}" if label else ""
        return f"self.{node.target} = {self.constructor(model.get_submodule(node.target), owner)}{note}"

    # -- the file
    def source(self) -> str:
        init_lines, args, forward = self._module_code(self.model)
        specs = input_specs(self.analysis, self.model)
        net = self.top.name(class_name(self.doc.name), fallback="Net")
        out: list[str] = [
            # Fixed text: Python reads an encoding declaration on the first two lines.
            "# Generated by NetCanvas. Needs only PyTorch.",
            "# Run it to check it: python this_file.py [weights.pt]",
            f"# {net} is the network of the graph {comment(repr(self.doc.name))}.",
            "",
            "from __future__ import annotations",
            "",
            *self.defs.lines(),
        ]
        for body in self.defs.bodies():
            out += ["", "", body]
        out += [
            "", "",
            f"class {net}(nn.Module):",
            f'{INDENT}"""The network; submodules are named after the graph\'s node ids."""',
            "",
            f"{INDENT}def __init__(self):",
            f"{INDENT * 2}super().__init__()",
            *(INDENT * 2 + line for line in init_lines),
            "",
            f"{INDENT}def forward(self, {', '.join(args)}):",
            *(INDENT * 2 + line for line in _lines(forward)),
            "", "",
            f"def build_model(weights: str | None = None) -> {net}:",
            f'{INDENT}"""The network, randomly initialised, or with the weights in the file ``weights``: a bare',
            f"{INDENT}state_dict, or a NetCanvas run checkpoint (a run's best.pt or last.pt), of which the \"ema\"",
            f'{INDENT}entry is used where there is one (a diffusion run\'s averaged weights), else "model"."""',
            f"{INDENT}model = {net}()",
            f"{INDENT}if weights is not None:",
            f'{INDENT * 2}state = torch.load(weights, map_location="cpu", weights_only=True)',
            f'{INDENT * 2}if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a run checkpoint',
            f'{INDENT * 3}state = state["ema"] if isinstance(state.get("ema"), dict) else state["model"]',
            f"{INDENT * 2}model.load_state_dict(state)",
            f"{INDENT}return model",
            "", "",
            f"def example_inputs(batch: int = {EXAMPLE_BATCH}) -> tuple[torch.Tensor, ...]:",
            f'{INDENT}"""Random inputs for the network, in the order forward takes them, ``batch`` samples each."""',
            f"{INDENT}return {_tuple_text([_random_input(spec) for spec in specs])}",
            "", "",
            'if __name__ == "__main__":',
            f"{INDENT}model = build_model(sys.argv[1] if len(sys.argv) > 1 else None).eval()",
            f"{INDENT}with torch.no_grad():",
            f"{INDENT * 2}out = model(*example_inputs())",
        ]
        if sum(node.type == "output" for node in self.doc.nodes) == 1:
            out.append(f"{INDENT}print(tuple(out.shape))")
        else:
            out.append(f"{INDENT}for y in out:")
            out.append(f"{INDENT * 2}print(tuple(y.shape))")
        return _read_as_written("\n".join(out) + "\n")


def _tuple_text(items: list[str]) -> str:
    """The text of a tuple of the expressions ``items``: ``(a,)``, ``(a, b)``."""
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _random_input(spec: InputSpec) -> str:
    """An expression for a random batch of ``batch`` samples of one input."""
    size = _tuple_text(["batch", *(str(d) for d in spec.shape)])
    if spec.dtype == "int64":
        return f"torch.randint(0, {spec.high}, {size})"
    return f"torch.randn({size})"


def _read_as_written(source: str) -> str:
    """``source``, once Python is known to read its UTF-8 bytes as exactly this program.

    The bytes are what Python runs, and it decodes them by any encoding declaration they hold, so
    parsing the text alone would not see a comment turn into code. A bug here must never reach a
    user as a broken or hostile file."""
    as_read = ast.parse(source.encode("utf-8"), _FILENAME)
    if ast.dump(as_read) != ast.dump(ast.parse(source, _FILENAME)):
        raise GraphError("cannot export: Python would read the generated file as another program "
                         "(a NetCanvas bug: please report it with this graph)")
    builtins.compile(as_read, _FILENAME, "exec")  # what ast.parse lets through: say, a misplaced return
    return source
