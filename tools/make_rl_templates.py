"""Writes the board-game templates ``alphazero_tictactoe``, ``alphazero_connect4`` and
``muzero_tictactoe`` into ``graphcore/templates/``.

    .venv/bin/python tools/make_rl_templates.py

Each takes a position as the games' planes, (3, rows, cols): the side to move's stones, the
opponent's, and a plane of ones when x is to move (``graphcore/runtime/games``).

AlphaZero (Silver et al., 2017), sized for a CPU: a conv-BN-ReLU stem, a tower of ``res_block``
subgraphs (one type, used once per block), a policy head (1x1 conv, BN, ReLU, a linear to one
logit per move) and a value head (1x1 conv, BN, ReLU, two linears, tanh). Outputs: ``policy``
first, ``value`` second.

MuZero (Schrittwieser et al., 2020) for tic-tac-toe: three subgraphs of one document,
``representation`` (planes -> hidden state), ``dynamics`` (hidden state and a one-hot action
plane -> next hidden state and a tanh reward) and ``prediction`` (hidden state -> policy, value).
Every hidden state goes through ``scale_hidden``, the min-max scaling to [0, 1] per sample that
MuZero applies. The file level runs one step of the model: planes -> representation ->
prediction, and the dynamics beside it from the same state and an action plane.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GAMES = {"tictactoe": {"rows": 3, "cols": 3, "moves": 9}, "connect4": {"rows": 6, "cols": 7, "moves": 7}}
PLANES = ("the side to move's stones, the opponent's, and ones when x is to move")
MINMAX_EPS = 1e-5  # MuZero's floor on a hidden state's range, so a constant state does not divide by zero


def _doc(name: str, nodes: list[dict], edges: list[dict], **extra) -> dict:
    return {"format": "netcanvas.graph", "version": 1, "name": name, "nodes": nodes, "edges": edges, **extra}


def _node(node_id: str, type_: str, **params) -> dict:
    return {"id": node_id, "type": type_, **({"params": params} if params else {})}


def _edge(src: str, dst: str, dst_port: str = "in", src_port: str = "out") -> dict:
    """An edge, its ports left out where they are the defaults."""
    edge = {"src": src, "dst": dst, "src_port": src_port, "dst_port": dst_port}
    return {k: v for k, v in edge.items() if not (k == "src_port" and v == "out" or k == "dst_port" and v == "in")}


def _chain(ids: list[str]) -> list[dict]:
    return [_edge(a, b) for a, b in zip(ids, ids[1:])]


def res_block(channels: int, rows: int, cols: int) -> dict:
    """x -> conv-BN-ReLU -> conv-BN -> + x -> ReLU: the tower's residual block."""
    nodes = [_node("x", "input", shape=[channels, rows, cols]),
             _node("conv1", "conv_bn_act", out_channels=channels, kernel_size=3),
             _node("conv2", "conv_bn_act", out_channels=channels, kernel_size=3, act="none"),
             _node("skip", "add", n=2),
             _node("relu", "relu"),
             _node("y", "output")]
    edges = [*_chain(["x", "conv1", "conv2"]), _edge("conv2", "skip", "in0"), _edge("x", "skip", "in1"),
             *_chain(["skip", "relu", "y"])]
    return _doc("res_block", nodes, edges)


def scale_hidden(channels: int, rows: int, cols: int) -> dict:
    """(h - min h) / (max h - min h + eps), min and max over each sample: MuZero's hidden-state scaling."""
    every = [1, 2, 3]
    nodes = [_node("h", "input", shape=[channels, rows, cols]),
             _node("low", "reduce", op="min", dims=every, keepdim=True),
             _node("high", "reduce", op="max", dims=every, keepdim=True),
             _node("shifted", "sub"),
             _node("span", "sub"),
             _node("span_eps", "add", n=1, constant=MINMAX_EPS),
             _node("scaled", "div"),
             _node("out", "output")]
    edges = [_edge("h", "low"), _edge("h", "high"),
             _edge("h", "shifted", "in0"), _edge("low", "shifted", "in1"),
             _edge("high", "span", "in0"), _edge("low", "span", "in1"), _edge("span", "span_eps", "in0"),
             _edge("shifted", "scaled", "in0"), _edge("span_eps", "scaled", "in1"), _edge("scaled", "out")]
    return _doc("scale_hidden", nodes, edges)


def tower(source: str, channels: int, blocks: int, prefix: str = "block") -> tuple[list[dict], list[dict], str]:
    """``blocks`` uses of the ``res_block`` subgraph after ``source``: nodes, edges, the last id."""
    ids = [f"{prefix}{i}" for i in range(1, blocks + 1)]
    return [_node(i, "subgraph:res_block") for i in ids], _chain([source, *ids]), ids[-1]


def policy_head(source: str, moves: int) -> tuple[list[dict], list[dict]]:
    """1x1 conv (2 filters), BN, ReLU, flatten, linear -> one logit per move, output ``policy``."""
    nodes = [_node("policy_conv", "conv_bn_act", out_channels=2, kernel_size=1),
             _node("policy_flat", "flatten"),
             _node("policy_fc", "linear", out_features=moves)]
    return nodes, _chain([source, "policy_conv", "policy_flat", "policy_fc", "policy"])


def scalar_head(source: str, name: str, hidden: int) -> tuple[list[dict], list[dict]]:
    """1x1 conv (1 filter), BN, ReLU, flatten, linear, ReLU, linear -> 1, tanh, output ``name``."""
    ids = [f"{name}_conv", f"{name}_flat", f"{name}_fc1", f"{name}_act", f"{name}_fc2", f"{name}_tanh"]
    nodes = [_node(ids[0], "conv_bn_act", out_channels=1, kernel_size=1),
             _node(ids[1], "flatten"),
             _node(ids[2], "linear", out_features=hidden),
             _node(ids[3], "relu"),
             _node(ids[4], "linear", out_features=1),
             _node(ids[5], "tanh")]
    return nodes, _chain([source, *ids, name])


def alphazero(game: str, channels: int, blocks: int, minutes: int) -> dict:
    """planes -> stem -> ``blocks`` residual blocks -> policy head (``policy``) and value head (``value``)."""
    rows, cols, moves = GAMES[game]["rows"], GAMES[game]["cols"], GAMES[game]["moves"]
    nodes = [_node("planes", "input", shape=[3, rows, cols]),
             _node("stem", "conv_bn_act", out_channels=channels, kernel_size=3)]
    edges = [_edge("planes", "stem")]
    tower_nodes, tower_edges, last = tower("stem", channels, blocks)
    policy_nodes, policy_edges = policy_head(last, moves)
    value_nodes, value_edges = scalar_head(last, "value", channels)
    nodes += [*tower_nodes, *policy_nodes, *value_nodes, _node("policy", "output"), _node("value", "output")]
    edges += [*tower_edges, *policy_edges, *value_edges]
    meta = {"description": f"AlphaZero network for {game} ({rows}x{cols} board, {moves} moves): the planes "
                           f"({PLANES}) -> conv-BN-ReLU stem, {channels} channels -> {blocks} residual blocks "
                           f"(the res_block subgraph) -> policy head ({moves} move logits) and value head "
                           f"(tanh, the side to move's view); {{params}} parameters. Train with --task alphazero "
                           f"--game {game}.",
            "game": game,
            "train": {"task": "alphazero", "minutes": minutes}}
    return _doc(f"alphazero_{game}", nodes, edges, subgraphs={"res_block": res_block(channels, rows, cols)}, meta=meta)


def representation(channels: int, rows: int, cols: int) -> dict:
    """planes -> conv-BN-ReLU -> 2 residual blocks -> scaled hidden state ``state``."""
    nodes = [_node("planes", "input", shape=[3, rows, cols]),
             _node("stem", "conv_bn_act", out_channels=channels, kernel_size=3)]
    tower_nodes, tower_edges, last = tower("stem", channels, 2)
    nodes += [*tower_nodes, _node("scale", "subgraph:scale_hidden"), _node("state", "output")]
    return _doc("representation", nodes, [_edge("planes", "stem"), *tower_edges, *_chain([last, "scale", "state"])])


def dynamics(channels: int, rows: int, cols: int) -> dict:
    """(state, one-hot action plane) -> joined -> conv-BN-ReLU -> 2 residual blocks -> scaled
    ``next_state``; a reward head (tanh) on the same features -> ``reward``."""
    nodes = [_node("state", "input", shape=[channels, rows, cols]),
             _node("action", "input", shape=[1, rows, cols]),
             _node("join", "concat", n=2, dim=1),
             _node("stem", "conv_bn_act", out_channels=channels, kernel_size=3)]
    edges = [_edge("state", "join", "in0"), _edge("action", "join", "in1"), _edge("join", "stem")]
    tower_nodes, tower_edges, last = tower("stem", channels, 2)
    reward_nodes, reward_edges = scalar_head(last, "reward", channels)
    nodes += [*tower_nodes, _node("scale", "subgraph:scale_hidden"), *reward_nodes,
              _node("next_state", "output"), _node("reward", "output")]
    edges += [*tower_edges, *_chain([last, "scale", "next_state"]), *reward_edges]
    return _doc("dynamics", nodes, edges)


def prediction(channels: int, rows: int, cols: int, moves: int) -> dict:
    """state -> 1 residual block -> policy head (``policy``) and value head (``value``)."""
    nodes = [_node("state", "input", shape=[channels, rows, cols])]
    tower_nodes, tower_edges, last = tower("state", channels, 1)
    policy_nodes, policy_edges = policy_head(last, moves)
    value_nodes, value_edges = scalar_head(last, "value", channels)
    nodes += [*tower_nodes, *policy_nodes, *value_nodes, _node("policy", "output"), _node("value", "output")]
    return _doc("prediction", nodes, [*tower_edges, *policy_edges, *value_edges])


def muzero(game: str, channels: int, minutes: int) -> dict:
    """The three networks as subgraphs; the file level: planes -> representation -> prediction, and
    dynamics from the same hidden state and an action plane."""
    rows, cols, moves = GAMES[game]["rows"], GAMES[game]["cols"], GAMES[game]["moves"]
    nodes = [_node("planes", "input", shape=[3, rows, cols]),
             _node("action", "input", shape=[1, rows, cols]),
             _node("representation", "subgraph:representation"),
             _node("prediction", "subgraph:prediction"),
             _node("dynamics", "subgraph:dynamics"),
             _node("policy", "output"), _node("value", "output"),
             _node("next_state", "output"), _node("reward", "output")]
    edges = [_edge("planes", "representation"), _edge("representation", "prediction"),
             _edge("prediction", "policy", src_port="policy"), _edge("prediction", "value", src_port="value"),
             _edge("representation", "dynamics", "state"), _edge("action", "dynamics", "action"),
             _edge("dynamics", "next_state", src_port="next_state"), _edge("dynamics", "reward", src_port="reward")]
    subgraphs = {"res_block": res_block(channels, rows, cols), "scale_hidden": scale_hidden(channels, rows, cols),
                 "representation": representation(channels, rows, cols), "dynamics": dynamics(channels, rows, cols),
                 "prediction": prediction(channels, rows, cols, moves)}
    meta = {"description": f"MuZero networks for {game}: representation (the planes, {PLANES} -> a "
                           f"{channels}x{rows}x{cols} hidden state), dynamics (hidden state + one-hot action plane "
                           f"-> next hidden state, reward in [-1, 1]) and prediction (hidden state -> {moves} move "
                           f"logits, value in [-1, 1]); hidden states min-max scaled to [0, 1] per sample. The file "
                           f"level runs one step: policy and value of the position, next state and reward of the "
                           f"action. {{params}} parameters. Train with --task muzero --game {game}.",
            "game": game,
            "train": {"task": "muzero", "minutes": minutes}}
    # placed by hand: the position's row (planes -> representation -> prediction -> policy, value) on top,
    # the action's row (action -> dynamics -> next state, reward) below it
    grid = [["planes", "representation", "prediction", "policy"], [None, None, None, "value"],
             [None, "action", "dynamics", "next_state"], [None, None, None, "reward"]]
    positions = {node_id: [300 * x, 130 * y] for y, row in enumerate(grid) for x, node_id in enumerate(row) if node_id}
    return _doc(f"muzero_{game}", nodes, edges, subgraphs=subgraphs, ui={"positions": positions}, meta=meta)


# minutes: the budgets for a 2-core CPU (tic-tac-toe 10, connect4 30, MuZero 15)
TEMPLATES = {
    "alphazero_tictactoe": lambda: alphazero("tictactoe", channels=32, blocks=3, minutes=10),
    "alphazero_connect4": lambda: alphazero("connect4", channels=64, blocks=5, minutes=30),
    "muzero_tictactoe": lambda: muzero("tictactoe", channels=32, minutes=15),
}


def render(name: str) -> str:
    """The JSON text of one template, its parameter count written into the description."""
    data = TEMPLATES[name]()
    data["meta"]["description"] = data["meta"]["description"].replace("{params}", f"{_params(data):,}")
    return json.dumps(data, indent=2) + "\n"


def _params(data: dict) -> int:
    """The document's parameter count, as the summary gives it (the tool runs from the repository)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import graphcore as gc

    return gc.summary(gc.GraphDoc.model_validate(data)).total_params


def main() -> int:
    for name in TEMPLATES:
        (ROOT / "graphcore" / "templates" / f"{name}.json").write_text(render(name), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
