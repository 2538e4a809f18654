"""Tic-tac-toe: 3×3, three in a row wins; a move is a cell, 0–8 row-major."""

from __future__ import annotations

import torch

from graphcore.runtime.games.base import EMPTY, Game, TensorOp, register


def _dihedral(quarter_turns: int, mirror: bool) -> TensorOp:
    """Rotate the last two dimensions by quarter turns, then mirror them left to right if asked."""
    def op(grid: torch.Tensor) -> torch.Tensor:
        turned = torch.rot90(grid, quarter_turns, dims=(-2, -1))
        return turned.flip(-1) if mirror else turned
    return op


@register
class TicTacToe(Game):
    """Tic-tac-toe; its policy is a 3×3 grid of cells, so all eight symmetries of the square apply."""

    name = "tictactoe"
    rows, cols, k = 3, 3, 3
    num_moves = 9
    solvable = True
    full_text = "cell {move} is taken"
    policy_grid = (3, 3)

    def target(self, board: tuple[int, ...], move: int) -> int | None:
        return move if board[move] == EMPTY else None

    def symmetry_ops(self) -> tuple[TensorOp, ...]:
        return tuple(_dihedral(turns, mirror) for mirror in (False, True) for turns in range(4))
