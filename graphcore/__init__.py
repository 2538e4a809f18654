"""NetCanvas graph core: the public Python API.

    import graphcore as gc
    doc = gc.load("graph.json")      # or gc.template("lenet5"), gc.loads(text)
    diags = gc.validate(doc)         # list[Diagnostic]
    shapes = gc.infer_shapes(doc)    # {(node_id, port): (None, C, H, W)}
    model = gc.compile(doc)          # GraphModel (nn.Module)
    print(gc.summary(doc))
    agent = gc.load_agent("runs/alphazero_tictactoe")  # a trained AlphaZero run as a player
"""

from graphcore.core.analysis import Analysis
from graphcore.core.compiler import GraphModel, compile
from graphcore.core.diagnostics import Diagnostic, GraphError
from graphcore.core.document import Edge, GraphDoc, Node, load, loads, save
from graphcore.core.gallery import open_graph, template, templates
from graphcore.core.summary import Summary, SummaryRow, summary
from graphcore.editing.grouping import group, ungroup
from graphcore.interchange.codegen import to_python
from graphcore.interchange.onnx_export import ExportResult, export_onnx
from graphcore.interchange.onnx_import import from_onnx
from graphcore.interchange.torch_import import from_torch
from graphcore.runtime.agent import AgentAnswer, GameAgent, load_agent


def validate(doc: GraphDoc) -> list[Diagnostic]:
    """Every problem in the graph (errors and warnings), each naming its node and port."""
    return Analysis(doc).diagnostics


def infer_shapes(doc: GraphDoc) -> dict[tuple[str, str], tuple[int | None, ...]]:
    """Output shape of every port that can be inferred, batch dim as ``None``.

    Ports downstream of a problem are left out; ``validate`` says what the problem is.
    """
    return Analysis(doc).shapes()


__all__ = [
    "Analysis", "Diagnostic", "Edge", "GraphDoc", "GraphError", "GraphModel", "Node", "Summary",
    "SummaryRow", "compile", "group", "ungroup", "infer_shapes", "load", "loads", "open_graph", "save", "summary",
    "template", "templates", "validate", "to_python", "export_onnx", "from_onnx", "from_torch", "ExportResult",
    "load_agent", "GameAgent", "AgentAnswer",
]
