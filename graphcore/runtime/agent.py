"""A trained AlphaZero or MuZero run as a player, for scripts, tests, ``netcanvas play`` and the Play panel.

    agent = gc.load_agent("runs/alphazero_tictactoe", simulations=100, seed=0)
    agent.move("x...o....")          # 2: a cell (tic-tac-toe) or a column (connect4)
    answer = agent.policy("x...o....")  # AgentAnswer: move, probabilities per move, value

Positions are the games package's strings: row-major, ``x``, ``o`` and ``.``, top row first, x
moving first and the side to move implied by the counts. The agent searches with the run's
weights (MCTS without root noise: over the rules for AlphaZero, over the learned model for MuZero)
and plays the most visited move, so an answer is the same for the same position, seed and
simulations. A position that cannot happen or is already decided is a ``GameError`` of one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from torch import nn

from graphcore.core.diagnostics import GraphError
from graphcore.runtime import muzero
from graphcore.runtime.config import TrainConfig
from graphcore.runtime.games import Game, State, get_game
from graphcore.runtime.mcts import AlphaZeroSearch, Evaluate, MuZeroModel, MuZeroSearch
from graphcore.runtime.selfplay import model_evaluate, play_search
from graphcore.runtime.train import load_run, run_checkpoint


@dataclass(frozen=True)
class AgentAnswer:
    """The agent's move in a position, its move probabilities (the visit shares, one per move) and
    its value of the position for the side to move, in [-1, 1]."""

    move: int
    probabilities: np.ndarray
    value: float


class GameAgent:
    """Plays one game with a trained network through MCTS; ``load_agent`` makes one from a run.
    ``evaluate``: an AlphaZero network's ``Evaluate``, or a MuZero model (``initial_inference`` and
    ``recurrent_inference``), which the agent searches with ``MuZeroSearch``."""

    def __init__(self, evaluate: Evaluate | MuZeroModel, game: Game, simulations: int, seed: int = 0):
        self.evaluate, self.game, self.seed = evaluate, game, seed
        self.search_config = play_search(simulations)

    def policy(self, cells: str) -> AgentAnswer:
        """The agent's answer to the position ``cells``; GameError for an impossible or finished one."""
        return self.answer(self.game.position_to_move(cells))

    def move(self, cells: str) -> int:
        """The move the agent plays in the position ``cells`` (a cell or a column)."""
        return self.policy(cells).move

    def answer(self, state: State) -> AgentAnswer:
        """The agent's answer to a position given as a ``State``."""
        search = (MuZeroSearch(self.game, cast(MuZeroModel, self.evaluate), self.search_config, seed=self.seed)
                  if hasattr(self.evaluate, "initial_inference")
                  else AlphaZeroSearch(self.game, cast(Evaluate, self.evaluate), self.search_config, seed=self.seed))
        move, result = search.select_move(state)
        return AgentAnswer(move, result.visits / result.visits.sum(), result.value)

    def __call__(self, state: State) -> int:
        """The agent as the games package's ``Agent`` (``play_match`` takes it)."""
        return self.answer(state).move


def _alphazero_player(run_dir: str | os.PathLike, checkpoint: str, device: str) -> tuple[Evaluate, TrainConfig]:
    model, config = load_run(run_dir, checkpoint=checkpoint, device=device)
    return model_evaluate(model), config


PLAYERS: dict[str, Callable[[str | os.PathLike, str, str], tuple[Any, TrainConfig]]] = {
    "alphazero": _alphazero_player, "muzero": muzero.load_player}
"""Each self-play task -> what makes its run's network a search's model: (run, checkpoint, device) ->
(model, config)."""


def _alphazero_served(run_dir: str | os.PathLike, game: Game) -> tuple[nn.Module, Callable[[Any], Any]]:
    model, _ = load_run(run_dir)
    return model, lambda client: client  # the client is the network's Evaluate


SERVED: dict[str, Callable[[str | os.PathLike, Game], tuple[nn.Module, Callable[[Any], Any]]]] = {
    "alphazero": _alphazero_served, "muzero": muzero.served_network}
"""Each self-play task -> (run, game) -> the run's network for an Inferencer to serve, and what makes a
client of that Inferencer a search's model (the Play panel)."""


def load_agent(run_dir: str | os.PathLike, simulations: int | None = None, seed: int = 0, *,
               checkpoint: str = "last", device: str = "cpu") -> GameAgent:
    """The player an AlphaZero or MuZero run has trained (its ``checkpoint``: last or best), searching
    ``simulations`` per move (default: as many as in its self-play)."""
    config, _ = run_checkpoint(Path(run_dir), checkpoint)
    if config.task not in PLAYERS or config.game is None:
        raise GraphError(f"{run_dir}: a run of task {config.task!r}; an agent plays from an alphazero run "
                         f"or a muzero run")
    if simulations is not None and simulations < 1:
        raise GraphError(f"simulations must be at least 1, got {simulations}")
    model, config = PLAYERS[config.task](run_dir, checkpoint, device)
    return GameAgent(model, get_game(str(config.game)), simulations or config.simulations, seed)
