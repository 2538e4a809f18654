"""Does a graph fit a game? The networks AlphaZero and MuZero train, checked against the game's
planes and moves before any self-play starts, each misfit one line naming the node and the shape
it should have.

    check_game_graph(gc.template("alphazero_tictactoe"), GAMES["tictactoe"])              # fits
    check_game_graph(gc.template("muzero_tictactoe"), GAMES["tictactoe"], task="muzero")

AlphaZero: one graph, the planes in; ``policy`` (a logit per move) then ``value`` (one number) out.
MuZero: three subgraphs of one document, each checked as a graph of its own (``subgraphs.standalone``):
``representation`` (planes -> hidden state), ``dynamics`` (hidden state, one-hot action plane ->
next hidden state, reward) and ``prediction`` (hidden state -> policy, value).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blocks.io import InputParams
from graphcore.core.analysis import Analysis
from graphcore.core.diagnostics import GraphError, errors
from graphcore.core.document import GraphDoc
from graphcore.core.subgraphs import standalone
from graphcore.runtime.games.base import Game

MUZERO_NETWORKS = ("representation", "dynamics", "prediction")


@dataclass(frozen=True)
class Want:
    """One input or output a network must have: what it holds, and its shape per sample (None: any)."""

    what: str
    shape: tuple[int, ...] | None

    def __str__(self) -> str:
        return f"{self.what}, shape {list(self.shape)}" if self.shape is not None else self.what


def _expect(doc: GraphDoc, where: str, inputs: list[Want], outputs: list[Want]) -> list[tuple[int, ...]]:
    """The shapes reaching ``doc``'s outputs, once its input nodes are ``inputs`` and its output nodes
    ``outputs`` (in document order); else a ``GraphError`` at the first misfit. The inputs are checked
    before the graph's own errors, since a wrong input shape is what makes the rest of it fail."""
    analysis = Analysis(doc)
    declared = [(n.id, analysis.nodes[n.id].params) for n in doc.nodes if n.type == "input"]
    _match(where, "input", [(node_id, tuple(p.shape) if isinstance(p, InputParams) else None)
                            for node_id, p in declared], inputs)
    problems = errors(analysis.diagnostics)
    if problems:
        raise GraphError(f"{where}: {str(problems[0]).removeprefix('error: ')}")
    arriving = []
    for node in doc.nodes:
        if node.type == "output":
            shapes = analysis.nodes[node.id].inputs
            assert shapes is not None, "a graph without errors has every shape inferred"
            arriving.append((node.id, tuple(shapes["in"])))
    _match(where, "output", arriving, outputs)
    return [shape for _, shape in arriving]


def _match(where: str, kind: str, found: Sequence[tuple[str, tuple[int, ...] | None]], wanted: list[Want]) -> None:
    """Raise ``GraphError`` when an input or output node is missing or extra, or has the wrong shape."""
    if len(found) != len(wanted):
        has = ", ".join(repr(node_id) for node_id, _ in found) or "none"
        needs = "; ".join(f"{i + 1}. {want}" for i, want in enumerate(wanted))
        raise GraphError(f"{where} has {len(found)} {kind} node(s) ({has}); it needs {len(wanted)}, "
                         f"in this order: {needs}")
    for (node_id, shape), want in zip(found, wanted):
        if shape is not None and want.shape is not None and shape != want.shape:
            raise GraphError(f"{where}: {kind} {node_id!r} has shape {list(shape)}; it must be {want}")


def _planes(game: Game) -> Want:
    return Want(f"{game.name}'s board planes (side to move, opponent, x to move)", game.planes_shape)


def _heads(game: Game) -> list[Want]:
    return [Want(f"the policy, one logit per move ({game.num_moves})", (game.num_moves,)),
            Want("the value, one number", (1,))]


def _check_alphazero(doc: GraphDoc, game: Game) -> None:
    _expect(doc, f"graph {doc.name!r}", [_planes(game)], _heads(game))


def _check_muzero(doc: GraphDoc, game: Game) -> None:
    missing = [name for name in MUZERO_NETWORKS if name not in doc.subgraphs]
    if missing:
        raise GraphError(f"graph {doc.name!r} has no subgraph {missing[0]!r}; MuZero needs three: representation "
                         f"(planes -> hidden state), dynamics (hidden state, action plane -> next hidden state, "
                         f"reward) and prediction (hidden state -> policy, value)")
    part = {name: standalone(doc, name) for name in MUZERO_NETWORKS}
    [state] = _expect(part["representation"], "subgraph 'representation'", [_planes(game)],
                      [Want("the hidden state", None)])
    hidden = Want("the hidden state that representation makes", state)
    action = Want("the action, a one-hot plane", (1, *game.planes_shape[1:]))
    _expect(part["dynamics"], "subgraph 'dynamics'", [hidden, action], [hidden, Want("the reward, one number", (1,))])
    _expect(part["prediction"], "subgraph 'prediction'", [hidden], _heads(game))


CHECKS: dict[str, Callable[[GraphDoc, Game], None]] = {"alphazero": _check_alphazero, "muzero": _check_muzero}
"""Each self-play task -> what it asks of a graph."""


def check_game_graph(doc: GraphDoc, game: Game, task: str = "alphazero") -> None:
    """Does ``doc`` fit ``game`` for ``task`` (alphazero or muzero)? A ``GraphError``, one line naming
    the node and the shape it should have, says what does not."""
    if task not in CHECKS:
        raise GraphError(f"unknown self-play task {task!r} (use {' or '.join(CHECKS)})")
    CHECKS[task](doc, game)
