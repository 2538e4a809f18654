"""NetCanvas building blocks: torch modules and one declarative spec per block type.

Importing this package registers every block family; ``blocks.get(type_id)`` looks one up.
"""

from blocks import (  # noqa: F401  (registers)
    activation,
    attention,
    conv,
    conv_blocks,
    elementwise,
    inception,
    io,
    linear,
    merge,
    norm,
    pool,
    reduce,
    residual,
    stylegan,
    tensor,
    unet,
    video,
)
from blocks.spec import (
    BlockSpec,
    Dtype,
    Example,
    NoParams,
    Params,
    Port,
    Shape,
    ShapeError,
    all_specs,
    get,
    nearest,
    register,
    type_ids,
)

__all__ = [
    "BlockSpec", "Dtype", "Example", "NoParams", "Params", "Port", "Shape", "ShapeError",
    "all_specs", "get", "nearest", "register", "type_ids",
]
