"""MuZero by self-play (``--task muzero --game tictactoe``): AlphaZero's workers, Inferencer, replay
ring, evaluation and run folder (``SelfPlayTrainer``), searching over a learned model instead of the
rules.

    trainer = MuZeroTrainer(gc.template("muzero_tictactoe"),
                            TrainConfig(task="muzero", game="tictactoe", minutes=15), out="runs/muzero")
    result = trainer.fit()

**The network.** The document's three subgraphs (``representation``: planes -> hidden state;
``dynamics``: hidden state, action plane -> next hidden state, reward; ``prediction``: hidden state ->
policy logits, value) become one graph, ``network_doc``, which is what the trainer trains, the run's
checkpoints hold and the one Inferencer serves. The Inferencer runs one forward pass per batch, so
that graph answers both of the search's calls at once: inputs ``planes``, ``state``, ``action`` and
``initial`` (1 for an initial inference, 0 for a recurrent one, per sample); the hidden state is
``initial · representation(planes) + (1 - initial) · dynamics(state, action)``, and prediction runs on
it; outputs ``hidden``, ``reward``, ``policy``, ``value``. A request fills the inputs it does not use
with zeros (``ServedMuZero``), so initial and recurrent requests of all workers share batches, at the
cost of running the unused half on zeros. The trainer (``LocalMuZero``, the losses) calls the three
networks alone, through their modules in that graph.

**Self-play.** Each worker plays whole games with ``MuZeroSearch`` (root noise and temperature as
AlphaZero's) and keeps the trajectory: observations' planes, actions, the mover's rewards, the root
visit distributions and values, and who was to move (``Trajectory``). The worker turns it into
training samples (``unroll_targets``), one per position and symmetry of the board: the position's
planes, the K actions played from it, and the targets of the K + 1 positions the unroll reaches.

**Targets** (``unroll_targets``), from the view of the player to move at each position: the value
z_t = sum_{i<n} γ^i · u_{t+i} · s_i + γ^n · v_{t+n} · s_n (u the mover's reward, v the search's root
value, s = +1 where the same player moves as at t, else -1; the sum stops at the game's end), as the
search backs values up; n = ``td_steps`` (9: to the end of a tic-tac-toe game), γ = 1. Past the
game's end the positions are absorbing: value 0, reward 0, the policy not trained (masked), and the
unroll takes random actions, as in the paper's pseudocode.

**Losses.** Policy cross-entropy against the visit distribution, value and reward MSE on the tanh
scalars, summed over the K + 1 steps; the unrolled steps' losses are weighted 1/K and the gradient
into each hidden state the dynamics makes is halved, as in the paper. The hidden states are min-max
scaled to [0, 1] by the template's networks themselves (the search's own min-max normalisation is
of values); AdamW's weight decay on top.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.core.subgraphs import standalone
from graphcore.runtime.config import GraphIO, TrainConfig
from graphcore.runtime.games import Game, get_game
from graphcore.runtime.games.check import MUZERO_NETWORKS
from graphcore.runtime.mcts import MuZeroModel, MuZeroSearch, SearchConfig
from graphcore.runtime.selfplay import Player, SampleRing, SelfPlayTrainer
from graphcore.runtime.train import load_run

DISCOUNT = 1.0  # a board game's reward comes at its end: nothing to discount
HIDDEN_GRADIENT = 0.5  # the paper's scale on the gradient into each hidden state the dynamics makes
NETWORK_OUTPUTS = ("hidden", "reward", "policy", "value")


# ----------------------------------------------------------------------------- the network
def hidden_shape(doc: GraphDoc) -> tuple[int, ...]:
    """The shape of one hidden state: what the document's representation makes."""
    return GraphIO.of(standalone(doc, "representation")).outputs[0]


def _ports(doc: GraphDoc, kind: str) -> list[str]:
    """The ports of a subgraph's instance on its ``kind`` side (input or output): its nodes' ids, or the
    default port where there is one node."""
    ids = [node.id for node in doc.nodes if node.type == kind]
    return ids if len(ids) > 1 else [{"input": "in", "output": "out"}[kind]]


def network_doc(doc: GraphDoc) -> GraphDoc:
    """The MuZero networks of ``doc`` (checked by ``check_game_graph(..., task="muzero")``) as one graph
    the Inferencer can serve (see the module docstring); its weights are named ``representation.*``,
    ``dynamics.*`` and ``prediction.*``."""
    part = {name: standalone(doc, name) for name in MUZERO_NETWORKS}
    _, planes_shape, _ = GraphIO.of(part["representation"]).inputs[0]
    state_shape = hidden_shape(doc)
    _, action_shape, _ = GraphIO.of(part["dynamics"]).inputs[1]
    state_port, action_port = _ports(part["dynamics"], "input")
    next_port, reward_port = _ports(part["dynamics"], "output")
    policy_port, value_port = _ports(part["prediction"], "output")
    nodes = [
        Node(id="planes", type="input", params={"shape": list(planes_shape)}),
        Node(id="state", type="input", params={"shape": list(state_shape)}),
        Node(id="action", type="input", params={"shape": list(action_shape)}),
        Node(id="initial", type="input", params={"shape": [1] * len(state_shape)}),
        Node(id="representation", type="subgraph:representation"),
        Node(id="dynamics", type="subgraph:dynamics"),
        Node(id="recurrent", type="sub", params={"constant": 1.0, "constant_first": True}),  # 1 - initial
        Node(id="from_planes", type="mul"),
        Node(id="from_state", type="mul"),
        Node(id="chosen", type="add"),
        Node(id="prediction", type="subgraph:prediction"),
        *(Node(id=name, type="output") for name in NETWORK_OUTPUTS),
    ]
    edges = [
        Edge(src="planes", dst="representation", dst_port=_ports(part["representation"], "input")[0]),
        Edge(src="state", dst="dynamics", dst_port=state_port),
        Edge(src="action", dst="dynamics", dst_port=action_port),
        Edge(src="initial", dst="recurrent", dst_port="in0"),
        Edge(src="initial", dst="from_planes", dst_port="in0"),
        Edge(src="representation", dst="from_planes", src_port=_ports(part["representation"], "output")[0],
             dst_port="in1"),
        Edge(src="recurrent", dst="from_state", dst_port="in0"),
        Edge(src="dynamics", dst="from_state", src_port=next_port, dst_port="in1"),
        Edge(src="from_planes", dst="chosen", dst_port="in0"),
        Edge(src="from_state", dst="chosen", dst_port="in1"),
        Edge(src="chosen", dst="prediction", dst_port=_ports(part["prediction"], "input")[0]),
        Edge(src="chosen", dst="hidden"),
        Edge(src="dynamics", dst="reward", src_port=reward_port),
        Edge(src="prediction", dst="policy", src_port=policy_port),
        Edge(src="prediction", dst="value", src_port=value_port),
    ]
    return GraphDoc(name=f"{doc.name}_network", nodes=nodes, edges=edges,
                    subgraphs={k: v.model_copy(deep=True) for k, v in doc.subgraphs.items()}, meta=dict(doc.meta))


def action_planes(game: Game, actions: torch.Tensor) -> torch.Tensor:
    """Actions (B,) as the dynamics' input planes (B, 1, rows, cols), on the actions' device: a one-hot
    cell, or for a game whose moves are columns, the column filled with ones."""
    rows, cols = game.rows, game.cols
    actions = torch.as_tensor(actions)
    planes = torch.zeros(len(actions), rows, cols, device=actions.device)
    index = torch.arange(len(actions), device=actions.device)
    if game.num_moves == rows * cols:
        planes.view(len(actions), -1)[index, actions] = 1.0
    else:
        planes[index, :, actions] = 1.0
    return planes[:, None]  # (B, 1, rows, cols)


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` as it is, its gradient multiplied by ``scale``."""
    return x * scale + x.detach() * (1 - scale)


class LocalMuZero:
    """A ``MuZeroModel`` over the three networks of a compiled ``network_doc``, in this process (the
    evaluation matches, ``gc.load_agent``): no gradients, in whatever mode the model is."""

    def __init__(self, model: nn.Module, game: Game):
        self.game = game
        self.representation, self.dynamics, self.prediction = (model.get_submodule(n) for n in MUZERO_NETWORKS)
        self.device = next(model.parameters()).device

    def initial_inference(self, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            hidden = self.representation(planes.to(self.device))
            logits, value = self.prediction(hidden)
        return hidden, logits, value

    def recurrent_inference(self, hidden: torch.Tensor,
                            actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            after, reward = self.dynamics(hidden.to(self.device), action_planes(self.game, actions).to(self.device))
            logits, value = self.prediction(after)
        return after, reward, logits, value


class ServedMuZero:
    """A ``MuZeroModel`` over the whole ``network_doc`` graph: ``network(planes, state, action, initial)``,
    an Inferencer client (the self-play workers) or the compiled graph itself. Each call fills the inputs
    it does not use with zeros."""

    def __init__(self, network: Callable[..., Any], game: Game, state_shape: tuple[int, ...]):
        self.network, self.game, self.state_shape = network, game, state_shape

    def _run(self, planes: torch.Tensor, state: torch.Tensor, action: torch.Tensor, initial: float) -> Any:
        flag = torch.full((len(planes), *[1] * len(self.state_shape)), initial)  # (B, 1, ...)
        return self.network(planes, state, action, flag)

    def initial_inference(self, planes: torch.Tensor) -> tuple[Any, Any, Any]:
        rows = len(planes)
        hidden, _, logits, value = self._run(planes, torch.zeros(rows, *self.state_shape),
                                             torch.zeros(rows, 1, self.game.rows, self.game.cols), 1.0)
        return hidden, logits, value

    def recurrent_inference(self, hidden: torch.Tensor, actions: torch.Tensor) -> tuple[Any, Any, Any, Any]:
        planes = torch.zeros(len(hidden), *self.game.planes_shape)
        return self._run(planes, torch.as_tensor(hidden).float(), action_planes(self.game, actions), 0.0)


# ----------------------------------------------------------------------------- games and their targets
@dataclass
class Trajectory:
    """One self-play game as the search played it, one row per position (T positions, then the end)."""

    planes: np.ndarray  # (T, 3, H, W) uint8, the observation of each position
    actions: np.ndarray  # (T,) int64, the move played there
    rewards: np.ndarray  # (T,) float32, the mover's reward for it (+1 for the winning move, else 0)
    policies: np.ndarray  # (T, A) float32, the root's visit distribution
    values: np.ndarray  # (T,) float32, the root's value for the side to move
    to_play: np.ndarray  # (T,) int8, who moves there (+1 x, -1 o)


def play_trajectory(game: Game, search: MuZeroSearch) -> Trajectory:
    """Plays one game against itself with ``search``; the game as a ``Trajectory``."""
    state = game.initial()
    rows: list[tuple[torch.Tensor, int, float, np.ndarray, float, int]] = []
    while state.outcome is None:
        move, result = search.select_move(state)
        after = game.play(state, move)
        reward = float(after.outcome * state.to_play) if after.outcome is not None else 0.0
        rows.append((game.encode(state), move, reward, result.policy(1.0), result.value, state.to_play))
        state = after
    planes, actions, rewards, policies, values, to_play = zip(*rows)
    return Trajectory(torch.stack(planes).to(torch.uint8).numpy(), np.asarray(actions, dtype=np.int64),
                      np.asarray(rewards, dtype=np.float32), np.stack(policies).astype(np.float32),
                      np.asarray(values, dtype=np.float32), np.asarray(to_play, dtype=np.int8))


def value_targets(trajectory: Trajectory, td_steps: int, discount: float = DISCOUNT) -> np.ndarray:
    """The n-step value target of every position (T,), for its side to move (see the module docstring)."""
    count = len(trajectory.actions)
    targets = np.zeros(count, dtype=np.float32)
    for t in range(count):
        side = trajectory.to_play[t]
        end = min(t + td_steps, count)
        for i in range(t, end):
            targets[t] += discount ** (i - t) * trajectory.rewards[i] * (1 if trajectory.to_play[i] == side else -1)
        if t + td_steps < count:
            bootstrap = t + td_steps
            sign = 1 if trajectory.to_play[bootstrap] == side else -1
            targets[t] += discount ** td_steps * trajectory.values[bootstrap] * sign
    return targets


def unroll_targets(trajectory: Trajectory, unroll_steps: int, td_steps: int, rng: np.random.Generator,
                   discount: float = DISCOUNT) -> dict[str, np.ndarray]:
    """One training sample per position t of ``trajectory``, as ``UnrollBuffer`` keeps them: ``planes``
    (3, H, W) of t; ``actions`` (K,) played from t on; for the K + 1 positions t..t+K the ``values``,
    ``policies`` and ``policy_mask`` targets; ``rewards`` (K,) the mover's reward of each action. Past
    the game's end: value 0, reward 0, policy masked, random actions."""
    count, num_moves = trajectory.policies.shape
    z = value_targets(trajectory, td_steps, discount)
    steps = np.arange(count)[:, None] + np.arange(unroll_steps + 1)[None, :]  # (T, K+1) the positions reached
    inside = steps < count
    clipped = np.minimum(steps, count - 1)
    actions = np.where(inside[:, :-1], trajectory.actions[clipped[:, :-1]],
                       rng.integers(num_moves, size=(count, unroll_steps)))
    return {
        "planes": trajectory.planes,
        "actions": actions.astype(np.int64),
        "values": np.where(inside, z[clipped], 0.0).astype(np.float32),
        "rewards": np.where(inside[:, :-1], trajectory.rewards[clipped[:, :-1]], 0.0).astype(np.float32),
        "policies": np.where(inside[..., None], trajectory.policies[clipped], 0.0).astype(np.float32),
        "policy_mask": inside.astype(np.float32),
    }


def symmetric_samples(game: Game, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``unroll_targets``' samples under every symmetry of the board (identity first): the planes turned,
    the actions and policies following their moves."""
    moves = torch.arange(game.num_moves, dtype=torch.float32)
    turned = [[pair for pair in game.symmetries(torch.from_numpy(p), moves)] for p in samples["planes"]]
    orders = [perm.long().numpy() for _, perm in turned[0]]  # new move j is old move orders[s][j]
    out: dict[str, list[np.ndarray]] = {name: [] for name in samples}
    for s, order in enumerate(orders):
        out["planes"].append(np.stack([row[s][0].numpy() for row in turned]))
        out["actions"].append(np.argsort(order)[samples["actions"]])  # old move a is new move argsort(order)[a]
        out["policies"].append(samples["policies"][..., order])
        for name in ("values", "rewards", "policy_mask"):
            out[name].append(samples[name])
    return {name: np.concatenate(parts) for name, parts in out.items()}


@dataclass
class MuZeroRecord:
    """One self-play game as training samples (``unroll_targets`` under every symmetry)."""

    samples: dict[str, np.ndarray]
    moves: int  # positions played (before the symmetries)

    def __len__(self) -> int:
        return len(self.samples["actions"])


def muzero_player(game: Game, network: Any, search: SearchConfig, seed: int, *, state_shape: tuple[int, ...],
                  unroll_steps: int, td_steps: int) -> Callable[[], MuZeroRecord]:
    """A worker's MuZero self-play (a ``Player`` once its keywords are bound): ``MuZeroSearch`` over the
    served network (``network``: the worker's Inferencer client), each game sent as its samples."""
    searcher = MuZeroSearch(game, ServedMuZero(network, game, state_shape), search, seed=seed)
    rng = np.random.default_rng(seed)

    def play() -> MuZeroRecord:
        trajectory = play_trajectory(game, searcher)
        samples = unroll_targets(trajectory, unroll_steps, td_steps, rng)
        return MuZeroRecord(symmetric_samples(game, samples), len(trajectory.actions))
    return play


class UnrollBuffer(SampleRing):
    """MuZero's samples (``unroll_targets``' fields), the last ``capacity`` of them."""

    def __init__(self, capacity: int, game: Game, unroll_steps: int):
        k, a = unroll_steps, game.num_moves
        super().__init__(capacity, {
            "planes": (game.planes_shape, torch.uint8), "actions": ((k,), torch.int64),
            "values": ((k + 1,), torch.float32), "rewards": ((k,), torch.float32),
            "policies": ((k + 1, a), torch.float32), "policy_mask": ((k + 1,), torch.float32)})

    def add(self, record: MuZeroRecord) -> None:
        self.add_samples(record.samples)


# ----------------------------------------------------------------------------- the trainer
def unrolled_losses(model: nn.Module, game: Game, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The losses of a batch of ``UnrollBuffer`` samples for a compiled ``network_doc``: ``loss`` (what is
    minimised) and its parts, ``policy_loss``, ``value_loss`` and ``reward_loss`` (see the module docstring)."""
    representation, dynamics, prediction = (model.get_submodule(n) for n in MUZERO_NETWORKS)
    device = batch["planes"].device
    steps = batch["actions"].shape[1]
    hidden = representation(batch["planes"].float())  # (B, C, H, W)
    losses = dict.fromkeys(("policy_loss", "value_loss", "reward_loss"), torch.zeros((), device=device))
    for k in range(steps + 1):
        weight = 1.0 if k == 0 else 1.0 / steps
        if k > 0:
            actions = action_planes(game, batch["actions"][:, k - 1])  # (B, 1, H, W), on the batch's device
            hidden, reward = dynamics(hidden, actions)
            hidden = scale_gradient(hidden, HIDDEN_GRADIENT)
            losses["reward_loss"] = losses["reward_loss"] + weight * F.mse_loss(
                reward.float().reshape(-1), batch["rewards"][:, k - 1])
        logits, value = prediction(hidden)  # (B, A), (B, 1)
        cross_entropy = -(batch["policies"][:, k] * F.log_softmax(logits.float(), dim=1)).sum(dim=1)  # (B,)
        losses["policy_loss"] = losses["policy_loss"] + weight * (cross_entropy * batch["policy_mask"][:, k]).mean()
        losses["value_loss"] = losses["value_loss"] + weight * F.mse_loss(value.float().reshape(-1),
                                                                           batch["values"][:, k])
    return {"loss": losses["policy_loss"] + losses["value_loss"] + losses["reward_loss"], **losses}


class MuZeroTrainer(SelfPlayTrainer):
    """Trains MuZero's networks by self-play into one run folder (see the module docstring)."""

    FIGURES = ("loss", "policy_loss", "value_loss", "reward_loss")
    TASK = "muzero"
    GAMES_AT_ONCE = 1  # MuZero's search runs in one piece (no steps to interleave)

    def _network_doc(self) -> GraphDoc:
        self.state_shape = hidden_shape(self.doc)
        return network_doc(self.doc)

    def _make_buffer(self) -> UnrollBuffer:
        return UnrollBuffer(self.config.replay_size, self.game, self.config.unroll_steps)

    def _player(self) -> Player:
        return functools.partial(muzero_player, state_shape=self.state_shape, unroll_steps=self.config.unroll_steps,
                                 td_steps=self.config.td_steps)

    def _trial(self, x: torch.Tensor) -> None:
        """The preflight: the served graph's initial and recurrent inference on two positions."""
        served = ServedMuZero(self.model, self.game, self.state_shape)
        hidden, _, _ = served.initial_inference(x)
        served.recurrent_inference(hidden, torch.arange(len(x)))

    def _search(self, config: SearchConfig) -> MuZeroSearch:
        return MuZeroSearch(self.game, LocalMuZero(self.model, self.game), config)

    def _losses(self) -> dict[str, torch.Tensor]:
        batch = {k: v.to(self.device) for k, v in self.buffer.draw(self.config.batch_size, self.generator).items()}
        return unrolled_losses(self.model, self.game, batch)


# ----------------------------------------------------------------------------- a run as a player
def served_network(run_dir: str | os.PathLike, game: Game) -> tuple[nn.Module, Callable[[Any], MuZeroModel]]:
    """A MuZero run's networks as the one graph an Inferencer serves (last.pt), and what makes a client
    of that Inferencer the search's model (the Play panel)."""
    model, _ = load_run(Path(run_dir), network=network_doc)
    state_shape = hidden_shape(model.doc)  # the served graph keeps the three networks as its subgraphs
    return model, lambda client: ServedMuZero(client, game, state_shape)


def load_player(run_dir: str | os.PathLike, checkpoint: str, device: str) -> tuple[MuZeroModel, TrainConfig]:
    """A MuZero run's networks with its ``checkpoint``'s weights, as the search's model; its config."""
    model, config = load_run(Path(run_dir), checkpoint=checkpoint, device=device, network=network_doc)
    return LocalMuZero(model, get_game(str(config.game))), config
