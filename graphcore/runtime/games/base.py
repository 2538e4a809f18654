"""Two-player games on a grid where the first to line up ``k`` stones wins: the interface and the registry.

A ``State`` is immutable and hashable (minimax tables key on it). Boards are row-major tuples
(+1 x, -1 o, 0 empty); x moves first. A game's planes are what a graph's input takes:

    plane 0  the side to move's stones      (1 where they are, else 0)
    plane 1  the opponent's stones
    plane 2  all ones when x is to move, else all zeros
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

X, O, EMPTY = 1, -1, 0  # noqa: E741  (the players are called x and o)
SYMBOLS = {X: "x", O: "o", EMPTY: "."}
_STONES = {symbol: stone for stone, symbol in SYMBOLS.items()}
_OUTCOME_TEXT = {X: "x won", O: "o won", EMPTY: "a draw"}

TensorOp = Callable[[torch.Tensor], torch.Tensor]  # acts on the last (one or two) grid dimensions


class GameError(ValueError):
    """A bad position or move; the message is one line that says what is wrong."""


@dataclass(frozen=True, slots=True)
class State:
    """A position: the board (row-major, +1 x, -1 o, 0 empty), the side to move (+1 x, -1 o), and
    once the game is over its outcome (+1 x won, -1 o won, 0 draw); ``None`` while it goes on."""

    board: tuple[int, ...]
    to_play: int
    outcome: int | None = None


def _windows(rows: int, cols: int, k: int) -> tuple[tuple[int, ...], ...]:
    """Every run of ``k`` cells in a row, a column or a diagonal, as cell indices."""
    lines = []
    for r in range(rows):
        for c in range(cols):
            for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
                if 0 <= r + dr * (k - 1) < rows and 0 <= c + dc * (k - 1) < cols:
                    lines.append(tuple((r + dr * i) * cols + c + dc * i for i in range(k)))
    return tuple(lines)


class Game:
    """A k-in-a-row game; a subclass sets the size, says which cell a move fills, and lists its symmetries."""

    name: ClassVar[str]
    rows: ClassVar[int]
    cols: ClassVar[int]
    k: ClassVar[int]  # stones in a line that win
    num_moves: ClassVar[int]
    solvable: ClassVar[bool] = False  # small enough for a full minimax table
    full_text: ClassVar[str]  # why a move is illegal, formatted with ``move``
    policy_grid: ClassVar[tuple[int, ...]]  # the policy's shape that the symmetry ops act on

    def __init__(self) -> None:
        self.lines = _windows(self.rows, self.cols, self.k)
        through: list[list[tuple[int, ...]]] = [[] for _ in range(self.rows * self.cols)]
        for line in self.lines:
            for cell in line:
                through[cell].append(line)
        self._through = tuple(tuple(lines) for lines in through)

    # -- what a subclass supplies ------------------------------------------------------------------

    def target(self, board: tuple[int, ...], move: int) -> int | None:
        """The cell that ``move`` fills, or None when it cannot be played."""
        raise NotImplementedError

    def symmetry_ops(self) -> tuple[TensorOp, ...]:
        """Board transforms that keep the rules (identity first); each also maps the policy grid."""
        raise NotImplementedError

    def board_problem(self, board: tuple[int, ...]) -> str | None:
        """Why a parsed board cannot happen in this game beyond the stone counts, or None."""
        return None

    # -- rules ---------------------------------------------------------------------------------------

    @property
    def planes_shape(self) -> tuple[int, int, int]:
        return (3, self.rows, self.cols)

    def initial(self) -> State:
        """The empty board, x to move."""
        return State((EMPTY,) * (self.rows * self.cols), X)

    def legal_moves(self, state: State) -> list[int]:
        """The moves that can be played, ascending; none once the game is over."""
        if state.outcome is not None:
            return []
        return [m for m in range(self.num_moves) if self.target(state.board, m) is not None]

    def play(self, state: State, move: int) -> State:
        """The position after the side to move plays ``move``; GameError if it cannot."""
        if state.outcome is not None:
            raise GameError(f"{self.name}: the game is over ({_OUTCOME_TEXT[state.outcome]}); no move can be played")
        if not isinstance(move, int | np.integer) or not 0 <= move < self.num_moves:
            raise GameError(f"{self.name}: move {move!r} is not a move; moves are 0 to {self.num_moves - 1}")
        cell = self.target(state.board, int(move))
        if cell is None:
            raise GameError(f"{self.name}: move {move} is illegal: " + self.full_text.format(move=move))
        board = list(state.board)
        board[cell] = state.to_play
        if self._completes(board, cell, state.to_play):
            outcome: int | None = state.to_play
        else:
            outcome = EMPTY if EMPTY not in board else None
        return State(tuple(board), -state.to_play, outcome)

    def is_terminal(self, state: State) -> bool:
        return state.outcome is not None

    def winner(self, state: State) -> int:
        """+1 if x won, -1 if o won, 0 for a draw; GameError while the game goes on."""
        if state.outcome is None:
            raise GameError(f"{self.name}: the game is not over; it has no winner yet")
        return state.outcome

    def move_number(self, state: State) -> int:
        """How many moves have been played (stones never leave the board)."""
        return sum(1 for stone in state.board if stone != EMPTY)

    def completes_line(self, state: State, move: int, player: int) -> bool:
        """Whether ``player``'s stone on the cell ``move`` fills would complete a line (whoever is to move)."""
        cell = self.target(state.board, move)
        return cell is not None and self._completes(state.board, cell, player)

    def _completes(self, board: tuple[int, ...] | list[int], cell: int, player: int) -> bool:
        """Whether a stone of ``player`` on ``cell`` makes a line; only the lines through ``cell`` can change."""
        return any(all(board[i] == player or i == cell for i in line) for line in self._through[cell])

    def _line_owners(self, board: tuple[int, ...]) -> set[int]:
        return {board[line[0]] for line in self.lines
                if board[line[0]] != EMPTY and all(board[i] == board[line[0]] for i in line)}

    # -- planes ----------------------------------------------------------------------------------------

    def encode(self, state: State) -> torch.Tensor:
        """The position as float32 planes (3, rows, cols), from the side to move's view."""
        board = np.asarray(state.board, dtype=np.int8).reshape(self.rows, self.cols)  # (H, W)
        planes = np.stack([board == state.to_play, board == -state.to_play,
                           np.full_like(board, state.to_play == X, dtype=bool)])  # (3, H, W)
        return torch.from_numpy(planes.astype(np.float32))

    def decode(self, planes: torch.Tensor) -> State:
        """The position that ``encode`` turned into ``planes``."""
        planes = torch.as_tensor(planes)
        to_play = X if float(planes[2].mean()) > 0.5 else O
        board = (planes[0] > 0.5).to(torch.int8) * to_play - (planes[1] > 0.5).to(torch.int8) * to_play
        stones = tuple(int(v) for v in board.reshape(-1))
        return State(stones, to_play, self._outcome(stones))

    def symmetries(self, planes: torch.Tensor, policy: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(planes, policy) under every symmetry of the board (identity first); policy entries follow their moves."""
        planes, policy = torch.as_tensor(planes), torch.as_tensor(policy)
        if tuple(planes.shape) != self.planes_shape or tuple(policy.shape) != (self.num_moves,):
            raise GameError(f"{self.name}: symmetries take planes {self.planes_shape} and a policy "
                            f"({self.num_moves},), got {tuple(planes.shape)} and {tuple(policy.shape)}")
        grid = policy.reshape(self.policy_grid)
        return [(op(planes), op(grid).reshape(-1)) for op in self.symmetry_ops()]

    # -- position strings (the agent API) ----------------------------------------------------------------

    def format(self, state: State) -> str:
        """The position as a string: row-major, ``x``, ``o`` and ``.``, top row first."""
        return "".join(SYMBOLS[stone] for stone in state.board)

    def parse(self, cells: str) -> State:
        """The position a string describes; GameError, one line, for one that cannot happen in this game."""
        size = self.rows * self.cols
        if not isinstance(cells, str) or len(cells) != size:
            got = f"{len(cells)} characters" if isinstance(cells, str) else type(cells).__name__
            raise GameError(f"{self.name}: a position is {size} characters (row-major, x, o and .), got {got}")
        bad = next(((i, ch) for i, ch in enumerate(cells) if ch not in _STONES), None)
        if bad is not None:
            raise GameError(f"{self.name}: bad character {bad[1]!r} at position {bad[0]}; use only x, o and .")
        board = tuple(_STONES[ch] for ch in cells)
        problem = self._count_problem(board) or self.board_problem(board) or self._line_problem(board)
        if problem:
            raise GameError(f"{self.name}: {problem}")
        xs, os = board.count(X), board.count(O)
        return State(board, X if xs == os else O, self._outcome(board))

    def position_to_move(self, cells: str) -> State:
        """``parse``, for a position where a move is asked: GameError if the game is already over."""
        state = self.parse(cells)
        if state.outcome is not None:
            raise GameError(f"{self.name}: the game is over ({_OUTCOME_TEXT[state.outcome]}); there is no move to make")
        return state

    def _outcome(self, board: tuple[int, ...]) -> int | None:
        owners = self._line_owners(board)
        if owners:
            return owners.pop()
        return EMPTY if EMPTY not in board else None

    @staticmethod
    def _count_problem(board: tuple[int, ...]) -> str | None:
        xs, os = board.count(X), board.count(O)
        if xs in (os, os + 1):
            return None
        return f"{xs} x and {os} o cannot happen: x moves first, so x has as many stones as o or one more"

    def _line_problem(self, board: tuple[int, ...]) -> str | None:
        owners = self._line_owners(board)
        xs, os = board.count(X), board.count(O)
        if owners == {X, O}:
            return f"both x and o have {self.k} in a row; the game stops at the first line"
        if owners == {X} and xs == os:
            return "o moved after x had won"
        if owners == {O} and xs > os:
            return "x moved after o had won"
        return None


GAMES: dict[str, Game] = {}


def register(cls: type[Game]) -> type[Game]:
    """Class decorator: one instance of the game in ``GAMES`` under its name; a second name is refused."""
    if cls.name in GAMES:
        raise ValueError(f"game {cls.name!r} is registered twice")
    GAMES[cls.name] = cls()
    return cls


def get_game(name: str) -> Game:
    """The registered game called ``name``; GameError naming the choices for an unknown one."""
    if name not in GAMES:
        raise GameError(f"unknown game {name!r}; choose one of {', '.join(sorted(GAMES))}")
    return GAMES[name]
