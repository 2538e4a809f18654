"""Board games: rules on known positions, planes and symmetries, position strings, fixed opponents."""

import random
import time

import pytest
import torch

from graphcore.runtime.games import GAMES, Game, GameError, O, State, X, get_game, opponents
from graphcore.runtime.games.opponents import (
    MatchResult,
    best_wins_vs_random,
    expected_vs_random,
    minimax_agent,
    one_ply_agent,
    perfect_agent,
    play_match,
    random_agent,
    solve,
)

TTT, C4 = GAMES["tictactoe"], GAMES["connect4"]
C4_DRAW = "".join(["xoxoxox", "xoxoxox", "oxoxoxo", "oxoxoxo", "xoxoxox", "oxoxoxo"])


def played(game: Game, moves: list[int]) -> State:
    state = game.initial()
    for move in moves:
        state = game.play(state, move)
    return state


def random_playout(game: Game, rng: random.Random) -> list[State]:
    states = [game.initial()]
    while states[-1].outcome is None:
        states.append(game.play(states[-1], rng.choice(game.legal_moves(states[-1]))))
    return states


# -- the registry and the shared interface ---------------------------------------------------------

def test_games_are_registered_with_their_sizes():
    assert {name: (g.num_moves, g.planes_shape) for name, g in GAMES.items()} == {
        "tictactoe": (9, (3, 3, 3)), "connect4": (7, (3, 6, 7))}
    assert get_game("connect4") is C4
    with pytest.raises(GameError, match="unknown game 'chess'; choose one of connect4, tictactoe"):
        get_game("chess")


@pytest.mark.parametrize("game", GAMES.values(), ids=GAMES.keys())
def test_random_games_follow_the_interface(game: Game):
    rng = random.Random(0)
    for _ in range(30):
        states = random_playout(game, rng)
        for number, state in enumerate(states):
            assert game.move_number(state) == number
            assert game.parse(game.format(state)) == state  # the string round trip keeps side and outcome
            assert game.decode(game.encode(state)) == state
            assert game.is_terminal(state) == (state.outcome is not None) == (not game.legal_moves(state))
        assert game.winner(states[-1]) in (X, O, 0)
        with pytest.raises(GameError, match="the game is not over"):
            game.winner(states[0])


# -- rules on known positions ----------------------------------------------------------------------

@pytest.mark.parametrize("moves, winner", [
    ([0, 3, 1, 4, 2], X),  # top row
    ([3, 0, 4, 1, 8, 2], O),  # o's top row
    ([1, 0, 4, 2, 7], X),  # middle column
    ([0, 1, 4, 2, 8], X),  # main diagonal
    ([2, 0, 4, 1, 6], X),  # anti-diagonal
    ([0, 4, 8, 2, 6, 3, 5, 7, 1], 0),  # board full, no line
])
def test_tictactoe_outcomes(moves, winner):
    state = played(TTT, moves)
    assert TTT.winner(state) == winner
    assert TTT.parse(TTT.format(state)).outcome == winner  # the full scan agrees with the incremental check


@pytest.mark.parametrize("moves, winner", [
    ([0, 0, 1, 1, 2, 2, 3], X),  # bottom row
    ([6, 0, 6, 0, 6, 0, 6], X),  # a column
    ([0, 1, 1, 2, 2, 3, 2, 3, 3, 6, 3], X),  # rising diagonal from the bottom left
    ([6, 5, 5, 4, 4, 3, 4, 3, 3, 0, 3], X),  # falling diagonal
    ([0, 1, 0, 1, 0, 1, 6, 1], O),  # o's column
])
def test_connect4_outcomes(moves, winner):
    state = played(C4, moves)
    assert C4.winner(state) == winner
    assert C4.parse(C4.format(state)).outcome == winner


def test_connect4_stones_fall_and_full_columns_refuse():
    state = played(C4, [3, 3])
    assert state.board[5 * 7 + 3] == X and state.board[4 * 7 + 3] == O  # bottom row first
    state = played(C4, [0, 0, 0, 0, 0, 0])
    assert state.outcome is None and 0 not in C4.legal_moves(state)
    with pytest.raises(GameError, match="move 0 is illegal: column 0 is full"):
        C4.play(state, 0)


def test_connect4_full_board_without_four_is_a_draw():
    assert C4.parse(C4_DRAW).outcome == 0


def test_illegal_moves_are_refused_in_one_line():
    with pytest.raises(GameError, match="move 4 is illegal: cell 4 is taken"):
        TTT.play(played(TTT, [4]), 4)
    with pytest.raises(GameError, match="move 9 is not a move; moves are 0 to 8"):
        TTT.play(TTT.initial(), 9)
    with pytest.raises(GameError, match=r"the game is over \(x won\); no move can be played"):
        TTT.play(played(TTT, [0, 3, 1, 4, 2]), 5)


def test_completes_line_looks_at_either_player():
    state = TTT.parse("xx.oo....")  # x to move; both threaten
    assert TTT.completes_line(state, 2, X) and TTT.completes_line(state, 5, O)
    assert not TTT.completes_line(state, 5, X)


# -- planes and symmetries -------------------------------------------------------------------------

def test_planes_are_from_the_side_to_move():
    state = TTT.parse("x...o...x")  # o to move
    planes = TTT.encode(state)
    assert planes.dtype == torch.float32 and planes.shape == (3, 3, 3)
    assert planes[0].flatten().tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]  # o's own stones
    assert planes[1].flatten().tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert planes[2].sum() == 0  # o to move
    assert TTT.encode(TTT.initial())[2].sum() == 9


def test_the_eight_tictactoe_symmetries_give_the_expected_boards():
    planes = TTT.encode(TTT.parse("xo......."))
    boards = {TTT.format(TTT.decode(p)) for p, _ in TTT.symmetries(planes, torch.zeros(9))}
    assert boards == {"xo.......", "x..o.....", ".ox......", "..x..o...",
                      "...o..x..", "......xo.", ".....o..x", ".......ox"}
    assert TTT.format(TTT.decode(TTT.symmetries(planes, torch.zeros(9))[0][0])) == "xo......."  # identity first


@pytest.mark.parametrize("game", GAMES.values(), ids=GAMES.keys())
def test_policy_entries_move_with_the_board(game: Game):
    """Each symmetry sends a move to the move that, played on the mapped board, gives the mapped result."""
    rng = random.Random(1)
    policy = torch.arange(game.num_moves, dtype=torch.float32)  # tags: where each move's entry went
    expected_count = 8 if game is TTT else 2
    for state in random_playout(game, rng)[:-1]:
        mapped = game.symmetries(game.encode(state), policy)
        assert len(mapped) == expected_count
        for move in game.legal_moves(state):
            after = game.symmetries(game.encode(game.play(state, move)), policy)
            for (planes, pol), (planes_after, _) in zip(mapped, after):
                image = int((pol == move).nonzero())
                assert torch.equal(game.encode(game.play(game.decode(planes), image)), planes_after)


def test_connect4_mirror_reverses_the_columns():
    state = played(C4, [0, 1])
    (_, same), (planes, mirrored) = C4.symmetries(C4.encode(state), torch.arange(7.0))
    assert same.tolist() == list(range(7)) and mirrored.tolist() == list(range(6, -1, -1))
    assert C4.decode(planes) == played(C4, [6, 5])


# -- position strings ------------------------------------------------------------------------------

def test_side_to_move_comes_from_the_counts():
    assert TTT.parse(".........").to_play == X and TTT.parse("....x....").to_play == O
    assert C4.parse("." * 41 + "x").to_play == O


@pytest.mark.parametrize("game, cells, message", [
    (TTT, "x.o", "tictactoe: a position is 9 characters (row-major, x, o and .), got 3 characters"),
    (TTT, None, "tictactoe: a position is 9 characters (row-major, x, o and .), got NoneType"),
    (TTT, "x.O......", "tictactoe: bad character 'O' at position 2; use only x, o and ."),
    (TTT, "xx.......", "tictactoe: 2 x and 0 o cannot happen: x moves first, so x has as many stones as o or one more"),
    (TTT, "o........", "tictactoe: 0 x and 1 o cannot happen"),
    (TTT, "xxxooo...", "tictactoe: both x and o have 3 in a row; the game stops at the first line"),
    (TTT, "xxxoo.o..", "tictactoe: o moved after x had won"),
    (TTT, "ooox.xxx.", "tictactoe: x moved after o had won"),
    (C4, "." * 42 + "x", "connect4: a position is 42 characters"),
    (C4, "x" + "." * 34 + "o" + "." * 6,
     "connect4: the x at row 0, column 0 floats above an empty cell (rows count from 0 at the top)"),
])
def test_bad_positions_get_one_line(game, cells, message):
    with pytest.raises(GameError) as error:
        game.parse(cells)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_finished_position_has_no_move_to_make():
    assert TTT.parse("xxxoo....").outcome == X  # parsing a finished game is fine
    with pytest.raises(GameError, match=r"tictactoe: the game is over \(x won\); there is no move to make"):
        TTT.position_to_move("xxxoo....")
    with pytest.raises(GameError, match=r"connect4: the game is over \(a draw\)"):
        C4.position_to_move(C4_DRAW)
    assert TTT.position_to_move("x...o....").to_play == X


# -- opponents ---------------------------------------------------------------------------------------

def test_the_tictactoe_table_is_solved_fast_and_right():
    opponents._TABLES.clear()
    start = time.perf_counter()
    assert solve(TTT, TTT.initial()) == 0  # a draw with best play
    assert time.perf_counter() - start < 1.0
    assert len(opponents._TABLES["tictactoe"]) == 5478  # every reachable position
    assert solve(TTT, TTT.parse("x...o...x")) == 0
    assert solve(TTT, TTT.parse("x.o.x.o..")) == 1  # x to move: 8 wins
    with pytest.raises(GameError, match="connect4 is too large to solve exactly"):
        solve(C4, C4.initial())


def test_perfect_play_never_loses_to_random_and_draws_with_itself():
    result = play_match(perfect_agent(TTT, seed=1), random_agent(TTT, seed=2), TTT, n=200, seed=3)
    assert result.losses == 0 and result.wins > 150
    itself = play_match(perfect_agent(TTT, seed=4), perfect_agent(TTT, seed=5), TTT, n=50, seed=6)
    assert itself == MatchResult(wins=0, draws=50, losses=0)


def test_one_ply_takes_a_win_then_blocks():
    agent = one_ply_agent(TTT, seed=0)
    assert agent(TTT.parse("xx.oo....")) == 2  # x wins rather than block
    assert agent(TTT.parse("oo.x....x")) == 2  # x blocks


def test_one_ply_in_connect4():
    agent = one_ply_agent(C4, seed=0)
    assert agent(C4.parse("." * 28 + "x......" + "xoo.o.x")) == 3  # o has 3 of four on the bottom row; x blocks
    result = play_match(one_ply_agent(TTT, seed=1), random_agent(TTT, seed=2), TTT, n=200, seed=3)
    assert result.wins > 3 * result.losses


def test_connect4_depth2_minimax_beats_random():
    result = play_match(minimax_agent(C4, depth=2, seed=1), random_agent(C4, seed=2), C4, n=40, seed=3)
    assert result.wins >= 0.9 * result.games


def test_minimax_takes_a_win_and_blocks_and_is_deterministic():
    threat = C4.parse("." * 35 + "xxx.oo.")  # o to move (3 x, 2 o) and must block at 3
    assert minimax_agent(C4, depth=2, seed=0)(threat) == 3
    win = C4.parse("." * 28 + "o......" + "xxx.oo.")  # x to move and wins at 3
    assert minimax_agent(C4, depth=2, seed=0)(win) == 3
    games = [play_match(minimax_agent(C4, 2, seed=7), random_agent(C4, seed=8), C4, n=4, seed=9) for _ in range(2)]
    assert games[0] == games[1]
    with pytest.raises(GameError, match="minimax depth must be at least 1, got 0"):
        minimax_agent(C4, depth=0)


def test_matches_alternate_sides():
    sides: list[int] = []

    def recording(state: State) -> int:
        if TTT.move_number(state) < 2:
            sides.append(state.to_play)
        return TTT.legal_moves(state)[0]

    result = play_match(recording, random_agent(TTT, seed=0), TTT, n=10, seed=1)
    assert result.games == 10 and sides.count(X) == 5 and sides.count(O) == 5


def _first_free(state: State) -> int:
    return TTT.legal_moves(state)[0]


def test_exact_chances_against_random_agree_with_a_long_match():
    exact = [expected_vs_random(_first_free, TTT, side) for side in (X, O)]
    assert all(e.win + e.draw + e.loss == pytest.approx(1.0) for e in exact)
    result = play_match(_first_free, random_agent(TTT, seed=3), TTT, n=4000, seed=3)
    expected_wins = sum(e.win for e in exact) / 2
    spread = (expected_wins * (1 - expected_wins) / result.games) ** 0.5
    assert abs(result.wins / result.games - expected_wins) < 4 * spread  # 4000 games: within 4 sigma
    assert abs(result.losses / result.games - sum(e.loss for e in exact) / 2) < 0.03


def test_a_sound_player_can_expect_at_most_95_6_percent_wins_against_random():
    x, o = best_wins_vs_random(TTT, X), best_wins_vs_random(TTT, O)
    assert x == pytest.approx(191 / 192) and o == pytest.approx(0.91640, abs=1e-5)  # by a separate enumeration
    assert (x + o) / 2 == pytest.approx(0.9556, abs=1e-4)  # the ceiling of "wins against random", half each side

    def perfect(state: State) -> int:  # exact minimax, the first of the best moves
        return max(TTT.legal_moves(state), key=lambda m: -solve(TTT, TTT.play(state, m)))
    for side, ceiling in ((X, x), (O, o)):
        chances = expected_vs_random(perfect, TTT, side)
        assert chances.loss == 0 and chances.win <= ceiling + 1e-12


def test_exact_chances_refuse_a_game_too_large_to_enumerate():
    with pytest.raises(GameError, match="too large"):
        expected_vs_random(_first_free, C4, X)
    with pytest.raises(GameError, match="too large"):
        best_wins_vs_random(C4, X)
