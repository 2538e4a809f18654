"""MCTS: PUCT over the rules (AlphaZero) and over a model (MuZero), batched leaf evaluation, determinism."""

from collections.abc import Callable

import numpy as np
import pytest
import torch

import graphcore.interchange.build as m
from graphcore.runtime.games import GAMES, Game, GameError, State
from graphcore.runtime.games.opponents import WIN_SCORE, minimax_score, play_match, random_agent, solve
from graphcore.runtime.mcts import AlphaZeroSearch, MuZeroSearch, SearchConfig, SearchResult
from graphcore.runtime.serving import Inferencer

TTT, C4 = GAMES["tictactoe"], GAMES["connect4"]
GREEDY = dict(noise_fraction=0.0, temperatures=((0, 0.0),))  # no noise, the most visited move


def oracle(game: Game, value_of: Callable[[State], float]) -> Callable:
    """An evaluator with uniform priors and the exact value ``value_of(state)`` of each decoded position."""
    def evaluate(planes: torch.Tensor):
        values = [value_of(game.decode(p)) for p in planes]
        return torch.zeros(len(planes), game.num_moves), torch.tensor(values).reshape(-1, 1)
    return evaluate


def perfect_ttt(state: State) -> float:
    return float(solve(TTT, state))


def shallow_c4(state: State) -> float:
    """Exact about wins and losses two plies deep, 0 otherwise."""
    score = minimax_score(C4, state, 2)
    return float(np.sign(score)) if abs(score) >= WIN_SCORE else 0.0


def uniform(game: Game, sizes: list[int] | None = None):
    def evaluate(planes: torch.Tensor):
        if sizes is not None:
            sizes.append(len(planes))
        return torch.zeros(len(planes), game.num_moves), torch.zeros(len(planes))
    return evaluate


def positions_with_one_forced_win() -> list[State]:
    """Tic-tac-toe positions where exactly one move wins by force and none wins at once."""
    found, seen, todo = [], set(), [TTT.initial()]
    while todo:
        state = todo.pop()
        if state in seen or state.outcome is not None:
            continue
        seen.add(state)
        moves = TTT.legal_moves(state)
        winning = [m for m in moves if -solve(TTT, TTT.play(state, m)) == 1]
        if len(winning) == 1 and not any(TTT.completes_line(state, m, state.to_play) for m in moves):
            found.append(state)
        todo.extend(TTT.play(state, m) for m in moves)
    return found


# -- AlphaZero -----------------------------------------------------------------------------------------

def test_a_perfect_value_oracle_finds_every_forced_win_in_tictactoe():
    positions = positions_with_one_forced_win()
    assert len(positions) > 20
    search = AlphaZeroSearch(TTT, oracle(TTT, perfect_ttt), SearchConfig(simulations=100, **GREEDY))
    for state in positions:
        move = search(state)
        assert -solve(TTT, TTT.play(state, move)) == 1, TTT.format(state)


@pytest.mark.parametrize("cells, move", [
    ("." * 28 + "o......" + "xxx.oo.", 3),  # x to move wins on the bottom row
    ("." * 35 + "xxx.oo.", 3),  # o to move blocks it
    ("." * 21 + "o......" + "ox....." + "oxx.x..", 0),  # o wins in column 0 rather than block column 3
])
def test_connect4_one_move_win_and_block(cells, move):
    search = AlphaZeroSearch(C4, oracle(C4, shallow_c4), SearchConfig(simulations=64, **GREEDY))
    assert search(C4.parse(cells)) == move


def test_terminal_positions_score_exactly_even_with_a_blind_evaluator():
    result = AlphaZeroSearch(TTT, uniform(TTT), SearchConfig(simulations=200, **GREEDY)).run(TTT.parse("xx.oo...."))
    assert int(np.argmax(result.visits)) == 2 and result.value > 0.5


def test_visits_count_every_simulation_and_leaves_arrive_in_batches():
    sizes: list[int] = []
    config = SearchConfig(simulations=96, leaf_batch=8, **GREEDY)
    result = AlphaZeroSearch(C4, uniform(C4, sizes), config).run(C4.initial())
    assert result.visits.sum() == 96  # collisions cut a batch short but lose no simulation
    assert sizes[0] == 1 and max(sizes) == 8 and np.mean(sizes[1:]) > 4  # the root alone, then batches
    sizes.clear()
    AlphaZeroSearch(C4, uniform(C4, sizes), SearchConfig(simulations=20, leaf_batch=1)).run(C4.initial())
    assert sizes == [1] * 21


def test_illegal_moves_get_no_visits():
    state = C4.parse("." * 35 + "xxx.oo.")
    full = C4.initial()
    for _ in range(6):
        full = C4.play(full, 0)
    assert 0 not in C4.legal_moves(full)
    for position in (state, full):
        visits = AlphaZeroSearch(C4, uniform(C4), SearchConfig(simulations=50)).run(position).visits
        assert all(visits[m] == 0 for m in range(7) if m not in C4.legal_moves(position))


def test_the_search_is_deterministic_for_a_seed():
    config = SearchConfig(simulations=50, temperatures=((0, 1.0),))  # noise and sampling both draw

    def game_moves(seed: int) -> list[int]:
        search, state, moves = AlphaZeroSearch(C4, uniform(C4), config, seed=seed), C4.initial(), []
        for _ in range(8):
            moves.append(search(state))
            state = C4.play(state, moves[-1])
        return moves

    assert game_moves(1) == game_moves(1)
    assert game_moves(1) != game_moves(2)


def test_a_search_in_steps_asks_for_each_batch_of_planes_and_ends_as_select_move_does():
    config = SearchConfig(simulations=40, leaf_batch=4, temperatures=((0, 1.0),))
    sizes: list[int] = []
    evaluate = uniform(C4, sizes)
    steps = AlphaZeroSearch(C4, evaluate, config, seed=5).select_move_steps(C4.initial())
    requests = 0
    try:
        request = next(steps)
        while True:
            assert request.shape[1:] == C4.planes_shape and 1 <= len(request) <= 4
            requests += 1
            request = steps.send(evaluate(request))
    except StopIteration as done:
        move, result = done.value
    sizes.clear()
    expected_move, expected = AlphaZeroSearch(C4, evaluate, config, seed=5).select_move(C4.initial())
    assert requests == len(sizes) and move == expected_move
    assert np.array_equal(result.visits, expected.visits) and result.value == expected.value


def test_a_local_model_can_evaluate():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(27, 10))

    def evaluate(planes: torch.Tensor):
        with torch.no_grad():
            out = model(planes)  # (B, 10)
        return out[:, :9], torch.tanh(out[:, 9])

    search = AlphaZeroSearch(TTT, evaluate, SearchConfig(simulations=30), seed=0)
    result = play_match(search, random_agent(TTT, seed=0), TTT, n=4, seed=0)
    assert result.games == 4


def test_a_finished_game_is_not_searched():
    with pytest.raises(GameError, match="tictactoe: the game is over"):
        AlphaZeroSearch(TTT, uniform(TTT)).run(TTT.parse("xxxoo...."))


def test_temperature_schedule_and_policy():
    config = SearchConfig(temperatures=((0, 1.0), (4, 0.5), (10, 0.0)))
    assert [config.temperature(n) for n in (0, 3, 4, 9, 10, 40)] == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    result = SearchResult(np.array([1.0, 3.0, 0.0]), 0.0)
    assert result.policy(1.0).tolist() == [0.25, 0.75, 0.0]
    assert np.allclose(result.policy(0.5), [0.1, 0.9, 0.0])
    assert result.policy(0.0).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("bad, message", [
    (dict(simulations=0), "simulations must be at least 1"),
    (dict(noise_fraction=1.5), "noise_fraction must be in"),
    (dict(temperatures=((1, 1.0),)), "temperatures must start at move 0"),
    (dict(temperatures=((0, 1.0), (0, 0.0))), "temperatures must start at move 0, ascend"),
])
def test_bad_configs_are_refused(bad, message):
    with pytest.raises(ValueError, match=f"search config: {message}"):
        SearchConfig(**bad)


# -- MuZero ----------------------------------------------------------------------------------------

class ExactModel:
    """A "learned" model that knows the rules: hidden = the planes plus a game-over plane.

    A winning move earns its mover +1; an illegal move loses (reward -1) and ends the game; values
    of live positions are exact (tic-tac-toe's table), those of ended games 0."""

    def __init__(self, game: Game):
        self.game, self.calls = game, []

    def _hidden(self, state: State, over: bool) -> torch.Tensor:
        flag = torch.full((1, self.game.rows, self.game.cols), float(over))
        return torch.cat([self.game.encode(state), flag])  # (4, H, W)

    def _value(self, state: State, over: bool) -> float:
        return 0.0 if over or state.outcome is not None else perfect_ttt(state)

    def initial_inference(self, planes: torch.Tensor):
        state = self.game.decode(planes[0])
        return (self._hidden(state, False)[None], torch.zeros(1, self.game.num_moves),
                torch.tensor([self._value(state, False)]))

    def recurrent_inference(self, hidden: torch.Tensor, actions: torch.Tensor):
        self.calls.append(len(actions))
        rows = [self._step(h, int(a)) for h, a in zip(hidden, actions)]
        hiddens, rewards, values = zip(*rows)
        return (torch.stack(hiddens), torch.tensor(rewards), torch.zeros(len(rows), self.game.num_moves),
                torch.tensor(values).reshape(-1, 1))

    def _step(self, hidden: torch.Tensor, action: int) -> tuple[torch.Tensor, float, float]:
        state, over = self.game.decode(hidden[:3]), bool(hidden[3].mean() > 0.5)
        if over or state.outcome is not None:
            return self._hidden(state, True), 0.0, 0.0
        if action not in self.game.legal_moves(state):
            return self._hidden(state, True), -1.0, 0.0
        after = self.game.play(state, action)
        won = after.outcome is not None and after.outcome != 0
        return self._hidden(after, after.outcome is not None), float(won), self._value(after, False)


def test_muzero_over_an_exact_model_finds_forced_wins():
    model = ExactModel(TTT)
    search = MuZeroSearch(TTT, model, SearchConfig(simulations=100, **GREEDY))
    for state in positions_with_one_forced_win()[:40]:
        assert -solve(TTT, TTT.play(state, search(state))) == 1, TTT.format(state)
    assert max(model.calls) > 1  # leaves went in batches


def test_muzero_blocks_and_masks_the_root():
    search = MuZeroSearch(TTT, ExactModel(TTT), SearchConfig(simulations=100, **GREEDY), seed=3)
    state = TTT.parse("oo.x....x")  # x must block at 2
    result = search.run(state)
    assert int(np.argmax(result.visits)) == 2
    assert all(result.visits[m] == 0 for m in range(9) if m not in TTT.legal_moves(state))


def test_muzero_is_deterministic_for_a_seed():
    config = SearchConfig(simulations=40, temperatures=((0, 1.0),))
    runs = [MuZeroSearch(TTT, ExactModel(TTT), config, seed=5).run(TTT.initial()).visits for _ in range(2)]
    assert np.array_equal(*runs)


class PolicyValueNet(m.Model):
    """Planes in; move logits and a tanh value out: the two outputs an AlphaZero graph has."""

    def __init__(self):
        super().__init__(input_shape=TTT.planes_shape, name="policy_value")
        self.body = m.seq(m.flatten(), m.fc(27, 32, actv="relu"))
        self.policy = m.fc(32, TTT.num_moves)
        self.value = m.fc(32, 1, actv="tanh")

    def forward(self, x):
        h = self.body(x)
        return self.policy(h), self.value(h)


@pytest.mark.slow  # starts a worker process
def test_an_inferencer_client_evaluates_leaves_in_batches():
    model = PolicyValueNet().init(seed=0).eval()
    config = SearchConfig(simulations=64, leaf_batch=8, **GREEDY)
    with Inferencer(model, max_batch=16, threads=1) as served:
        served_result = AlphaZeroSearch(TTT, served.create_client(), config).run(TTT.initial())
        stats = served.stats()
    assert served_result.visits.sum() == 64
    assert stats["max_batch"] > 1
    local = AlphaZeroSearch(TTT, lambda planes: model(planes), config).run(TTT.initial())
    assert abs(local.value - served_result.value) < 1e-4
