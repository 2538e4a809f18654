"""Compile a graph document into a ``GraphModel``: an ``nn.Module`` whose forward is
generated Python (a ``torch.fx.GraphModule``), one line per node, with no per-node
interpreter, so it runs like hand-written PyTorch and works with ``torch.compile``."""

from __future__ import annotations

import copy
import io
import operator
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import fx, nn

from blocks.io import InputParams
from graphcore.core import fusion
from graphcore.core.analysis import Analysis
from graphcore.core.diagnostics import GraphError, errors
from graphcore.core.document import GraphDoc, write_atomic
from graphcore.core.keymap import fit_keys
from graphcore.core.names import class_name


class GraphModel(fx.GraphModule):
    """A compiled graph. Submodules are named by node id, so ``state_dict`` keys are stable.

    ``.doc`` is the document it was compiled from (a copy: later edits do not change it).
    """

    def __init__(self, root: nn.Module, graph: fx.Graph, doc: GraphDoc):
        super().__init__(root, graph, class_name=class_name(doc.name))
        self.doc = doc

    def init(self, path: str | os.PathLike | None = None, *, seed: int | None = None) -> GraphModel:
        """Re-initialise every weight (seeded if asked), or load them from ``path``.

        Loading accepts a bare state_dict or a checkpoint dict with a ``"model"`` entry,
        and never unpickles arbitrary objects (``weights_only=True``). A graph whose meta declares
        a torchvision key map (the ResNet, VGG, AlexNet, GoogLeNet and ViT templates) also takes
        the state_dict of its torchvision twin, such as a downloaded ``resnet50-….pth``.
        """
        if path is None:
            with torch.random.fork_rng(enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                # Children before parents, so a block's own reset_parameters has the last word.
                for module in reversed(list(self.modules())):
                    if module is not self and hasattr(module, "reset_parameters"):
                        module.reset_parameters()  # type: ignore[operator]  # torch types module attributes as Tensor | Module
            return self
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise GraphError(f"{path}: cannot load weights: the file holds Python objects, not just tensors; "
                             "NetCanvas loads plain state_dicts only") from None
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            raise GraphError(f"{path}: cannot load weights: {exc}".splitlines()[0]) from None
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        self._load_checked(state, str(path))
        return self

    def _load_checked(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        own = self.state_dict()
        fitted = fit_keys(self.doc, state, own)  # a torchvision file renamed by the graph's key map
        state = fitted.state
        missing = [k for k in own if k not in state]
        unexpected = [fitted.name(k) for k in state if k not in own]
        wrong = [f"{fitted.name(k)} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                 if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
        if missing or unexpected or wrong:
            parts = [f"{label}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                     for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                     if keys]
            read = f" (read as torchvision {fitted.keymap.model} weights)" if fitted.keymap else ""
            raise GraphError(f"{source}: the weights do not fit graph {self.doc.name!r}{read}: {'; '.join(parts)}")
        self.load_state_dict(state)

    def fuse(self) -> GraphModel:
        """An eval-mode copy with every conv+BN and linear+BN folded into one layer, also inside
        blocks; its outputs equal this model's in eval mode. For inference and export only."""
        fused = fusion.fuse(self)
        return GraphModel(fused, fused.graph, self.doc)

    def save(self, path: str | os.PathLike) -> None:
        """Write the state_dict atomically (``init(path)`` reads it back)."""
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        write_atomic(Path(path), buffer.getvalue())

    def __deepcopy__(self, memo):
        name = type(self).__name__  # GraphModule's deepcopy renames the shared class; keep ours
        clone = super().__deepcopy__(memo)
        type(clone).__name__ = name
        clone.doc = copy.deepcopy(self.doc, memo)
        return clone


def compile(doc: GraphDoc, *, analysis: Analysis | None = None, fuse: bool = False) -> GraphModel:  # noqa: A001
    """Build the model; a graph with errors raises ``GraphError`` listing every problem.

    ``fuse=True`` returns the inference model with BatchNorm folded (see ``GraphModel.fuse``).

    The fx graph is the one description of the forward (the Python export writes it out):
    required ports are positional in port order, connected optional ports are keywords, and a
    node with several outputs is one call followed by an ``operator.getitem`` per port. Every fx
    node that holds a tensor has ``meta["shape"]``, batch as ``None`` like ``gc.infer_shapes``;
    module calls have ``meta["label"]`` (the user's label) and getitems ``meta["port"]``.
    """
    analysis = analysis or Analysis(doc)
    problems = errors(analysis.diagnostics)
    if problems:
        raise GraphError(problems)
    root = nn.Module()
    graph = fx.Graph()
    values: dict[tuple[str, str], fx.Node] = {}
    results: dict[str, fx.Node] = {}
    for node in doc.nodes:  # forward's arguments in document order
        if node.type == "input":
            info = analysis.nodes[node.id]
            assert isinstance(info.params, InputParams) and info.outputs is not None, "checked: the graph has no errors"
            values[(node.id, "out")] = _with_shape(graph.placeholder(info.params.name or node.id), info.outputs["out"])
    for node_id in analysis.order:
        info = analysis.nodes[node_id]
        if info.node.type == "input" or node_id not in analysis.live:
            continue
        edges = analysis.in_edges[node_id]
        if info.node.type == "output":
            results[node_id] = values[edges["in"]]
            continue
        assert info.spec and info.spec.build and info.input_ports is not None, "checked: the graph has no errors"
        assert info.inputs is not None and info.outputs is not None, "inferred: the graph has no errors"
        args = tuple(values[edges[p.name]] for p in info.input_ports if not p.optional)
        kwargs: dict[str, fx.node.Argument] = {
            p.name: values[edges[p.name]] for p in info.input_ports if p.optional and p.name in edges
        }
        root.add_module(node_id, info.spec.build(info.params, info.inputs))
        call = graph.call_module(node_id, args, kwargs)
        call.meta["label"] = info.node.label
        ports = info.output_ports
        assert ports is not None, "checked: the graph has no errors"
        if len(ports) == 1:
            values[(node_id, ports[0])] = _with_shape(call, info.outputs[ports[0]])
        else:
            for i, port in enumerate(ports):
                item = graph.create_node("call_function", operator.getitem, (call, i), name=f"{node_id}_{port}")
                item.meta["port"] = port
                values[(node_id, port)] = _with_shape(item, info.outputs[port])
    outputs = [results[n.id] for n in doc.nodes if n.type == "output"]
    graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    graph.lint()
    model = GraphModel(root, graph, doc.model_copy(deep=True))
    return model.fuse() if fuse else model


def _with_shape(node: fx.Node, shape: tuple[int, ...]) -> fx.Node:
    node.meta["shape"] = (None, *shape)
    return node
