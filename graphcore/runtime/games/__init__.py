"""Board games for self-play: the ``Game`` interface, ``GAMES`` by name, and fixed opponents (``opponents``).

    game = GAMES["tictactoe"]            # or get_game(name), which names the choices for a wrong one
    state = game.play(game.initial(), 4)
    planes = game.encode(state)          # (3, rows, cols) float32, from the side to move's view
    state = game.parse("x...o....")      # the agent API's position strings; format() writes them
"""

from graphcore.runtime.games import connect4, tictactoe  # noqa: F401  (each registers its game)
from graphcore.runtime.games.base import EMPTY, GAMES, Game, GameError, O, State, X, get_game

__all__ = ["EMPTY", "GAMES", "O", "X", "Game", "GameError", "State", "get_game"]
