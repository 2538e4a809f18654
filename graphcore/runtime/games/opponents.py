"""Fixed opponents to measure an agent against, and matches between agents.

An agent is a callable ``state -> move``. All opponents are deterministic for their seed:

    random_agent(game, seed)          a uniformly random legal move
    one_ply_agent(game, seed)         takes a win, else blocks an immediate loss, else random
    perfect_agent(game, seed)         exact minimax (tic-tac-toe), a random one of the best moves
    minimax_agent(game, depth, seed)  alpha-beta to ``depth`` plies, open threes and twos at the horizon

    play_match(agent_a, agent_b, game, n=100, seed=0)   # MatchResult(wins, draws, losses) of agent_a

Against uniformly random play a solvable game also has exact figures, free of a match's sampling:

    expected_vs_random(agent, game, side)   # Expectation(win, draw, loss) of a deterministic agent
    best_wins_vs_random(game, side)         # the most wins a player that never loses can expect
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from graphcore.runtime.games.base import EMPTY, Game, GameError, O, State, X

Agent = Callable[[State], int]

WIN_SCORE = 1_000_000.0  # above any heuristic score; a win sooner scores higher
_HORIZON_WEIGHTS = {1: 5.0, 2: 1.0}  # stones missing from an otherwise empty line -> weight (open threes, twos)


def _chooser(game: Game, seed: int) -> tuple[random.Random, Callable[[State], int]]:
    rng = random.Random(seed)
    return rng, lambda state: rng.choice(game.legal_moves(state))


def random_agent(game: Game, seed: int = 0) -> Agent:
    """A uniformly random legal move."""
    return _chooser(game, seed)[1]


def one_ply_agent(game: Game, seed: int = 0) -> Agent:
    """Takes a win if there is one, else blocks the opponent's immediate win, else a random move."""
    rng, pick_random = _chooser(game, seed)

    def agent(state: State) -> int:
        moves = game.legal_moves(state)
        for player in (state.to_play, -state.to_play):  # my win first, then their threat
            hits = [m for m in moves if game.completes_line(state, m, player)]
            if hits:
                return rng.choice(hits)
        return pick_random(state)
    return agent


# -- exact minimax ---------------------------------------------------------------------------------

_TABLES: dict[str, dict[State, int]] = {}


def solve(game: Game, state: State) -> int:
    """The exact value for the side to move (+1 win, 0 draw, -1 loss) with best play; memoised per game."""
    if not game.solvable:
        raise GameError(f"{game.name} is too large to solve exactly; use a depth-limited minimax")
    return _solve(game, _TABLES.setdefault(game.name, {}), state)


def _solve(game: Game, table: dict[State, int], state: State) -> int:
    if state in table:
        return table[state]
    if state.outcome is not None:
        value = state.outcome * state.to_play
    else:
        value = max(-_solve(game, table, game.play(state, m)) for m in game.legal_moves(state))
    table[state] = value
    return value


def perfect_agent(game: Game, seed: int = 0) -> Agent:
    """A best move by exact minimax, chosen at random (seeded) among the equally good ones."""
    solve(game, game.initial())  # fill the table (and refuse a game too large) now, not on the first move
    rng = random.Random(seed)

    def agent(state: State) -> int:
        values = {m: -solve(game, game.play(state, m)) for m in game.legal_moves(state)}
        best = max(values.values())
        return rng.choice([m for m, v in values.items() if v == best])
    return agent


# -- depth-limited alpha-beta ----------------------------------------------------------------------

def horizon_score(game: Game, state: State) -> float:
    """The heuristic at the search horizon, for the side to move: its open lines minus the opponent's.

    A line counts when it holds only one player's stones and lacks one (an open three in connect four)
    or two of them (an open two)."""
    windows = np.asarray(state.board, dtype=np.int8)[_line_cells(game)]  # (L, k)
    mine = (windows == state.to_play).sum(axis=1)
    theirs = (windows == -state.to_play).sum(axis=1)
    score = 0.0
    for missing, weight in _HORIZON_WEIGHTS.items():
        score += weight * (np.sum((theirs == 0) & (mine == game.k - missing))
                           - np.sum((mine == 0) & (theirs == game.k - missing)))
    return float(score)


@functools.cache
def _line_cells(game: Game) -> np.ndarray:
    return np.asarray(game.lines)  # (L, k) cell indices


def minimax_score(game: Game, state: State, depth: int) -> float:
    """Alpha-beta negamax to ``depth`` plies, for the side to move: ±(WIN_SCORE + plies to spare) for a
    forced win or loss within reach, else the horizon heuristic."""
    return _negamax(game, state, depth, -math.inf, math.inf)


def _negamax(game: Game, state: State, depth: int, alpha: float, beta: float) -> float:
    if state.outcome is not None:
        return state.outcome * state.to_play * (WIN_SCORE + depth)  # depth left: a sooner win scores higher
    if depth == 0:
        return horizon_score(game, state)
    best = -math.inf
    for move in _central_first(game, game.legal_moves(state)):  # good moves first prune more
        best = max(best, -_negamax(game, game.play(state, move), depth - 1, -beta, -alpha))
        alpha = max(alpha, best)
        if alpha >= beta:
            break
    return best


def _central_first(game: Game, moves: list[int]) -> list[int]:
    centre = (game.num_moves - 1) / 2
    return sorted(moves, key=lambda m: abs(m - centre))


def minimax_agent(game: Game, depth: int = 2, seed: int = 0) -> Agent:
    """The best move by alpha-beta to ``depth`` plies; ties go to the first in a seeded shuffle."""
    if depth < 1:
        raise GameError(f"minimax depth must be at least 1, got {depth}")
    rng = random.Random(seed)

    def agent(state: State) -> int:
        moves = game.legal_moves(state)
        rng.shuffle(moves)
        best_move, alpha = moves[0], -math.inf
        for move in moves:
            score = -_negamax(game, game.play(state, move), depth - 1, -math.inf, -alpha)
            if score > alpha:
                best_move, alpha = move, score
        return best_move
    return agent


# -- matches ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MatchResult:
    """Games won, drawn and lost by the first agent of a match."""

    wins: int
    draws: int
    losses: int

    @property
    def games(self) -> int:
        return self.wins + self.draws + self.losses

    @property
    def score(self) -> float:
        """Points per game: 1 a win, 1/2 a draw."""
        return (self.wins + self.draws / 2) / self.games if self.games else 0.0


def play_game(game: Game, x_agent: Agent, o_agent: Agent, state: State | None = None) -> int:
    """Plays to the end from ``state`` (the start by default); the outcome, +1 x won, -1 o won, 0 draw."""
    if state is None:
        state = game.initial()
    agents = {X: x_agent, O: o_agent}
    while state.outcome is None:
        state = game.play(state, agents[state.to_play](state))
    return state.outcome


def play_match(agent_a: Agent, agent_b: Agent, game: Game, n: int = 100, seed: int = 0,
               random_plies: int = 0) -> MatchResult:
    """``n`` games, ``agent_a`` playing x in half of them (the order shuffled by ``seed``); each game
    may open with ``random_plies`` random moves (seeded) so that two deterministic agents meet in
    different positions. Returns the first agent's wins, draws and losses."""
    rng = random.Random(seed)
    sides = [X, O] * (n // 2) + [rng.choice((X, O))] * (n % 2)
    rng.shuffle(sides)
    tally = {1: 0, EMPTY: 0, -1: 0}
    for side in sides:
        state = game.initial()
        for _ in range(random_plies):
            if state.outcome is None:
                state = game.play(state, rng.choice(game.legal_moves(state)))
        agents = (agent_a, agent_b) if side == X else (agent_b, agent_a)
        tally[play_game(game, *agents, state=state) * side] += 1
    return MatchResult(tally[1], tally[EMPTY], tally[-1])


# -- exact expectations against uniformly random play --------------------------------------------

@dataclass(frozen=True)
class Expectation:
    """Probabilities of a win, a draw and a loss."""

    win: float
    draw: float
    loss: float


def expected_vs_random(agent: Agent, game: Game, side: int) -> Expectation:
    """The exact chances of ``agent`` (a function of the position, as a trained agent is) playing
    ``side`` against a uniformly random opponent: every random reply is followed, each weighted by
    its probability. For games small enough to enumerate (tic-tac-toe: a few hundred of the agent's
    positions a side)."""
    if not game.solvable:
        raise GameError(f"{game.name} is too large to enumerate; play a match against random_agent")
    memo: dict[State, tuple[float, float, float]] = {}

    def chances(state: State) -> tuple[float, float, float]:
        if state.outcome is not None:
            outcome = state.outcome * side
            return (float(outcome == 1), float(outcome == EMPTY), float(outcome == -1))
        if state not in memo:
            if state.to_play == side:
                memo[state] = chances(game.play(state, agent(state)))
            else:
                replies = [chances(game.play(state, m)) for m in game.legal_moves(state)]
                win, draw, loss = (sum(column) / len(replies) for column in zip(*replies))
                memo[state] = (win, draw, loss)
        return memo[state]
    return Expectation(*chances(game.initial()))


def best_wins_vs_random(game: Game, side: int) -> float:
    """The highest win probability against uniformly random play of a player of ``side`` that never
    loses (it keeps to moves that hold the exact minimax value, and among them takes the likeliest
    win): the ceiling of a sound agent's wins against random."""
    solve(game, game.initial())
    memo: dict[State, float] = {}

    def wins(state: State) -> float:
        if state.outcome is not None:
            return float(state.outcome == side)
        if state not in memo:
            after = [game.play(state, m) for m in game.legal_moves(state)]
            if state.to_play == side:
                best = max(-solve(game, s) for s in after)
                memo[state] = max(wins(s) for s in after if -solve(game, s) == best)
            else:
                memo[state] = sum(wins(s) for s in after) / len(after)
        return memo[state]
    return wins(game.initial())
