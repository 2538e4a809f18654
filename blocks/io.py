"""Graph inputs and outputs, and the identity block."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from blocks.rules import PosInt
from blocks.spec import ANY_IN, BlockSpec, Dtype, Example, Params, promoted, register

INPUT_DTYPES: dict[str, Dtype] = {"float32": "float", "int64": "int"}
"""An input node's ``dtype`` param -> the dtype its tensor has in the graph."""


class InputParams(Params):
    """Params of an input node: its per-sample shape, dtype and argument name."""

    shape: list[PosInt] = Field(
        default_factory=lambda: [1, 28, 28],
        description="per-sample shape, batch excluded ([] for a timestep or a class id)",
    )
    dtype: Literal["float32", "int64"] = Field("float32", description="int64 for class ids or timesteps")
    name: str | None = Field(None, description="argument name in forward(); defaults to the node id")


class OutputParams(Params):
    """Params of an output node: its name."""

    name: str | None = Field(None, description="name of this output; defaults to the node id")


register(BlockSpec(
    type="input",
    category="io",
    doc="A model input; the batch dimension is added for you.",
    params=InputParams,
    inputs=(),
    shape=lambda p, ins: tuple(p.shape),
    output_dtype=lambda p, ins: INPUT_DTYPES[p.dtype],
    build=None,
    examples=(Example({}, {"shape": [3, 8, 8]}), Example({}, {"shape": [], "dtype": "int64"})),
))

register(BlockSpec(
    type="output",
    category="io",
    doc="A model output.",
    params=OutputParams,
    inputs=ANY_IN,
    outputs=(),
    shape=lambda p, ins: {},
    build=None,
    examples=(Example({"in": (10,)}),),
))

register(BlockSpec(
    type="identity",
    category="io",
    doc="Passes its input through unchanged.",
    inputs=ANY_IN,
    shape=lambda p, ins: ins["in"],
    output_dtype=promoted,
    build=lambda p, ins: nn.Identity(),
    examples=(Example({"in": (3, 8, 8)}),),
))
