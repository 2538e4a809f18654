"""Connect four: 6 rows × 7 columns, four in a row wins; a move is a column, 0–6, and the stone falls."""

from __future__ import annotations

from graphcore.runtime.games.base import EMPTY, SYMBOLS, Game, TensorOp, register


@register
class ConnectFour(Game):
    """Connect four; its policy is one entry per column, so only the left–right mirror applies."""

    name = "connect4"
    rows, cols, k = 6, 7, 4
    num_moves = 7
    full_text = "column {move} is full"
    policy_grid = (7,)

    def target(self, board: tuple[int, ...], move: int) -> int | None:
        for row in range(self.rows - 1, -1, -1):  # the stone falls to the lowest empty cell
            cell = row * self.cols + move
            if board[cell] == EMPTY:
                return cell
        return None

    def symmetry_ops(self) -> tuple[TensorOp, ...]:
        return (lambda grid: grid.clone(), lambda grid: grid.flip(-1))

    def board_problem(self, board: tuple[int, ...]) -> str | None:
        for cell in range(len(board) - self.cols):  # every cell but the bottom row's
            if board[cell] != EMPTY and board[cell + self.cols] == EMPTY:
                row, col = divmod(cell, self.cols)
                return (f"the {SYMBOLS[board[cell]]} at row {row}, column {col} floats above an empty cell "
                        "(rows count from 0 at the top)")
        return None
