"""``netcanvas play runs/NAME``: a game against a trained AlphaZero or MuZero run in the terminal.

The board is drawn as text; the user types a move (a cell in tic-tac-toe, a column in connect4,
counted from 0 as the numbers beside or under the board show) and the agent answers with its
move, its move probabilities and its value of the position. An illegal move is refused with the
reason and asked again; the end of the input leaves the game unfinished.
"""

from __future__ import annotations

import argparse

from graphcore.cli.arguments import nonempty_path, positive_int, seed
from graphcore.runtime.agent import AgentAnswer, GameAgent, load_agent
from graphcore.runtime.games import GameError, O, State, X
from graphcore.runtime.games.base import SYMBOLS

SHOWN_MOVES = 3  # the agent's most probable moves printed with its answer


def add_play_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=nonempty_path, help="an alphazero or muzero run folder (runs/NAME)")
    parser.add_argument("--simulations", type=positive_int,
                        help="MCTS simulations per agent move (default: as in the run's self-play)")
    parser.add_argument("--first", choices=("you", "agent"), default="you", help="who plays x, the first move")
    parser.add_argument("--seed", type=seed, default=0, help="the agent's search seed")


def play_command(args: argparse.Namespace) -> int:
    """Plays one game, the user against the run's agent; exit 0 at its end or the input's."""
    agent = load_agent(args.run, simulations=args.simulations, seed=args.seed)
    game = agent.game
    you = X if args.first == "you" else O
    print(f"{game.name}: you play {SYMBOLS[you]}, the agent {SYMBOLS[-you]}; type a {_move_word(agent)} number")
    state = game.initial()
    while state.outcome is None:
        print(board_text(agent, state))
        if state.to_play == you:
            move = _ask(agent, state)
            if move is None:
                print("no more input: the game is left unfinished")
                return 0
        else:
            answer = agent.answer(state)
            print(answer_text(agent, answer))
            move = answer.move
        state = game.play(state, move)
    print(board_text(agent, state))
    print({you: "you won", -you: "the agent won"}.get(state.outcome, "a draw"))
    return 0


def _move_word(agent: GameAgent) -> str:
    game = agent.game
    return "cell" if game.num_moves == game.rows * game.cols else "column"


def board_text(agent: GameAgent, state: State) -> str:
    """The board, a row per line; beside it the cell numbers, or under it the column numbers."""
    game = agent.game
    rows = [" ".join(SYMBOLS[state.board[r * game.cols + c]] for c in range(game.cols)) for r in range(game.rows)]
    if _move_word(agent) == "cell":
        width = len(str(game.num_moves - 1))
        return "\n".join(f"{row}    " + " ".join(f"{r * game.cols + c:>{width}}" for c in range(game.cols))
                         for r, row in enumerate(rows))
    return "\n".join([*rows, " ".join(str(c) for c in range(game.cols))])


def answer_text(agent: GameAgent, answer: AgentAnswer) -> str:
    """The agent's move, its most probable moves and its value (for itself, in [-1, 1])."""
    best = sorted(range(len(answer.probabilities)), key=lambda m: -answer.probabilities[m])[:SHOWN_MOVES]
    shares = ", ".join(f"{m}: {answer.probabilities[m]:.2f}" for m in best if answer.probabilities[m] > 0)
    return f"agent plays {_move_word(agent)} {answer.move} (probabilities {shares}; value {answer.value:+.2f})"


def _ask(agent: GameAgent, state: State) -> int | None:
    """The user's move, asked until it is legal; None at the end of the input."""
    word = _move_word(agent)
    while True:
        try:
            text = input(f"your move ({word} 0-{agent.game.num_moves - 1})> ").strip()
        except EOFError:
            print()
            return None
        try:
            move = int(text)
            agent.game.play(state, move)
        except ValueError as exc:  # GameError included
            reason = str(exc) if isinstance(exc, GameError) else f"{text!r} is not a {word} number"
            print(f"refused: {reason}")
            continue
        return move
