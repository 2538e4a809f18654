"""Hypothesis strategies that vary a block's params and input shapes around its examples,
and helpers that run a block for real on meta tensors."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

import torch
from annotated_types import Ge, Gt, Le, Lt
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from blocks import BlockSpec, Example, Params, Port, Shape
from graphcore.core.document import Edge, GraphDoc, Node


def _bounds(metadata) -> tuple[float | None, float | None]:
    lo = hi = None
    for item in metadata:
        inner = item.metadata if isinstance(item, FieldInfo) else [item]
        for bound in inner:
            if isinstance(bound, Ge):
                lo = bound.ge
            elif isinstance(bound, Gt):
                lo = bound.gt + (1 if isinstance(bound.gt, int) else 1e-3)
            elif isinstance(bound, Le):
                hi = bound.le
            elif isinstance(bound, Lt):
                hi = bound.lt
    return lo, hi


def value_strategy(annotation: Any, metadata=()) -> st.SearchStrategy:
    """Small values of a param's type, inside its bounds."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extra = typing.get_args(annotation)
        return value_strategy(base, [*metadata, *extra])
    if origin in (Union, types.UnionType):
        return st.one_of([value_strategy(arg) for arg in typing.get_args(annotation)])
    if origin is Literal:
        return st.sampled_from(typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return st.lists(value_strategy(item), min_size=0, max_size=4)
    if annotation is type(None):
        return st.none()
    if annotation is bool:
        return st.booleans()
    lo, hi = _bounds(metadata)
    if annotation is int:
        lo = -4 if lo is None else int(lo)
        return st.integers(lo, int(hi) if hi is not None else lo + 9)
    if annotation is float:
        lo = -2.0 if lo is None else float(lo)
        return st.floats(lo, float(hi) if hi is not None else lo + 3.0, allow_nan=False)
    if annotation is str:
        return st.sampled_from(["a", "b"])
    raise NotImplementedError(f"no strategy for {annotation!r}")


@st.composite
def params_near(draw, model: type[Params], example: dict) -> dict:
    """The example's params with some fields swapped for random values of their type."""
    params = dict(example)
    for name, field in model.model_fields.items():
        if name == "name":
            continue
        if draw(st.integers(0, 3)) == 0:
            params[name] = draw(value_strategy(field.annotation, field.metadata))
    return params


@st.composite
def shape_near(draw, shape: Shape) -> Shape:
    """Mostly the same shape; sometimes other sizes, a size of 1, or another rank."""
    dims = list(shape)
    for i in range(len(dims)):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            dims[i] = draw(st.integers(1, 17))
        elif choice == 1:
            dims[i] = 1
    rank_change = draw(st.integers(0, 9))
    if rank_change == 0 and dims:
        dims.pop(draw(st.integers(0, len(dims) - 1)))
    elif rank_change == 1:
        dims.insert(draw(st.integers(0, len(dims))), draw(st.integers(1, 6)))
    return tuple(dims)


def example_params(spec: BlockSpec, example: Example) -> Params:
    return spec.params.model_validate(example.params)


def block_call(spec: BlockSpec, params: Params, inputs: dict[str, Shape], make) -> tuple[list, dict]:
    """Positional and keyword arguments for a block's forward; ``make(port, shape)`` builds each tensor."""
    args, kwargs = [], {}
    for port in spec.input_ports(params):
        if port.name not in inputs:
            continue
        tensor = make(port, inputs[port.name])
        if port.optional:
            kwargs[port.name] = tensor
        else:
            args.append(tensor)
    return args, kwargs


def outputs_of(spec: BlockSpec, params: Params, out) -> tuple:
    outs = out if isinstance(out, tuple) else (out,)
    ports = spec.output_ports(params)
    assert len(outs) == len(ports), f"{spec.type} returned {len(outs)} tensors for ports {ports}"
    return outs


def run_on_meta(spec: BlockSpec, params: Params, inputs: dict[str, Shape], batch: int = 2) -> dict[str, Shape]:
    """Build the block's real module on the meta device, run it, return per-sample output shapes."""
    with torch.device("meta"):
        module = spec.build(params, inputs)

    def make(port: Port, shape: Shape) -> torch.Tensor:
        dtype = torch.long if port.dtype == "int" else torch.float32
        return torch.empty((batch, *shape), dtype=dtype, device="meta")

    args, kwargs = block_call(spec, params, inputs, make)
    outs = outputs_of(spec, params, module(*args, **kwargs))
    for t in outs:
        assert t.shape[0] == batch, f"{spec.type} changed the batch dim"
    return {port: tuple(t.shape[1:]) for port, t in zip(spec.output_ports(params), outs)}


def single_block_doc(spec: BlockSpec, params: dict, inputs: dict[str, Shape], ports: tuple[Port, ...]) -> GraphDoc:
    """input nodes -> the block -> one output node per output port."""
    ports = {p.name: p for p in ports}
    nodes = [Node(id="block", type=spec.type, params=params)]
    edges = []
    for i, (port, shape) in enumerate(inputs.items()):
        dtype = "int64" if port in ports and ports[port].dtype == "int" else "float32"
        nodes.append(Node(id=f"x{i}", type="input", params={"shape": list(shape), "dtype": dtype}))
        edges.append(Edge(src=f"x{i}", dst="block", dst_port=port))
    for i, port in enumerate(_output_ports(spec, params)):
        nodes.append(Node(id=f"y{i}", type="output"))
        edges.append(Edge(src="block", src_port=port, dst=f"y{i}"))
    return GraphDoc(name=spec.type, nodes=nodes, edges=edges)


def _output_ports(spec: BlockSpec, params: dict) -> tuple[str, ...]:
    """The block's output ports; those of its defaults where ``params`` do not validate (a block
    whose ports follow its params then has ports that nothing checks)."""
    try:
        return spec.output_ports(spec.params.model_validate(params))
    except ValidationError:
        return spec.output_ports(spec.params())
