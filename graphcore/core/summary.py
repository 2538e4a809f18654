"""Per-node output shape, parameter count and MACs of a graph, like Keras' ``model.summary()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from blocks.shapes import shape_text
from graphcore.core.analysis import Analysis
from graphcore.core.diagnostics import GraphError, errors
from graphcore.core.document import GraphDoc


@dataclass(frozen=True)
class SummaryRow:
    """One node's line in a summary: its output shape, parameter count and MACs."""

    node_id: str
    type: str
    shape: tuple[int | None, ...] | None  # main output shape, batch as None
    params: int
    macs: int  # multiply-accumulates for one sample


@dataclass(frozen=True)
class Summary:
    """A graph's summary: one row per node that reaches an output, and the totals; ``str()`` gives the table."""

    name: str
    rows: list[SummaryRow]

    @property
    def total_params(self) -> int:
        """Parameters of the whole model."""
        return sum(r.params for r in self.rows)

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of the whole model for one sample."""
        return sum(r.macs for r in self.rows)

    def to_dict(self) -> dict:
        """The summary as plain data, totals included (for JSON output)."""
        return {"name": self.name, "rows": [asdict(r) for r in self.rows],
                "total_params": self.total_params, "total_macs": self.total_macs}

    def __str__(self) -> str:
        header = ("node", "type", "output shape", "params", "MACs")
        body = [(r.node_id, r.type, shape_text(r.shape), f"{r.params:,}", human(r.macs)) for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        align = ("<", "<", "<", ">", ">")
        lines = ["  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths)) for row in [header, *body]]
        rule = "-" * len(lines[0])
        return "\n".join([f"{self.name}", rule, lines[0], rule, *lines[1:], rule,
                          f"total params: {self.total_params:,}    total MACs per sample: {human(self.total_macs)}"])


def human(count: int) -> str:
    """A count in k, M or G with two decimals: 1234567 -> '1.23 M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return str(count)


def summary(doc: GraphDoc, *, analysis: Analysis | None = None) -> Summary:
    """Rows in execution order for the nodes that reach an output; needs a valid graph."""
    analysis = analysis or Analysis(doc)
    problems = errors(analysis.diagnostics)
    if problems:
        raise GraphError(problems)
    rows = []
    for node_id in analysis.order:
        info = analysis.nodes[node_id]
        if node_id not in analysis.live:
            continue
        assert info.spec and info.outputs is not None, "inferred: the graph has no errors"
        inputs = info.inputs or {}  # None for an input node given its shape (inside a subgraph)
        shapes = info.outputs or inputs
        main = next(iter(shapes.values()), None)
        params = info.weights.params if info.weights else 0  # sized by the analysis, on the meta device
        macs = info.spec.count_macs(info.params, inputs, info.outputs)
        rows.append(SummaryRow(node_id, info.node.type, None if main is None else (None, *main), params, macs))
    return Summary(doc.name, rows)
