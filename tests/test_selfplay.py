"""AlphaZero by self-play: the workers and the Inferencer between them, a run folder that resumes
exactly, a worker that dies and comes back, the agent a run makes, ``netcanvas play``, and a graph
that does not fit its game."""

import io
import json
import multiprocessing as mp
import os
import shlex
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import graphcore as gc
from graphcore.cli.main import main
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import dumps
from graphcore.runtime.agent import AgentAnswer
from graphcore.runtime.config import TrainConfig, guess_task
from graphcore.runtime.games import GAMES, GameError
from graphcore.runtime.mcts import AlphaZeroSearch
from graphcore.runtime.muzero import muzero_player
from graphcore.runtime.selfplay import (
    ROOT_VALUE_SHARE,
    LocalEvaluator,
    ReplayBuffer,
    SelfPlayTrainer,
    WorkerPool,
    alphazero_player,
    model_evaluate,
    play_games_at_once,
    play_selfplay_game,
    selfplay_search,
    submit_evaluations,
)
from graphcore.runtime.serving import Inferencer
from graphcore.runtime.train import Trainer, train

TTT = GAMES["tictactoe"]
QUICK = dict(task="alphazero", game="tictactoe", epochs=1, epoch_steps=6, eval_games=2, simulations=8,
             batch_size=16, log_every=2, workers=2)  # a run of seconds


def net(seed: int = 0) -> gc.GraphModel:
    return gc.compile(gc.template("alphazero_tictactoe")).init(seed=seed).eval()


# ----------------------------------------------------------------------------- workers and the Inferencer
def _ask_many(client, model, worker: int, requests: int, results) -> None:
    """A forked client: sends ``requests`` distinct positions, several at a time, and checks that each
    reply is its own request's (the model's answer to that input), read back in reverse order."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(worker)
    inputs = [torch.rand(3, 3, 3, generator=generator) for _ in range(requests)]
    with torch.no_grad():
        expected = [model(x[None]) for x in inputs]
    wrong = 0
    for start in range(0, requests, 5):
        ids = [(i, client.infer_async(inputs[i])) for i in range(start, min(requests, start + 5))]
        for i, rid in reversed(ids):
            logits, value = client.wait_for_resp(rid, timeout=60)
            wrong += not (torch.allclose(logits, expected[i][0][0], atol=1e-4)
                          and torch.allclose(value, expected[i][1][0], atol=1e-4))
    results.put((worker, requests, wrong))


@pytest.mark.parametrize("instances", [1, 2])
def test_eight_workers_lose_no_request_and_get_their_own_replies(instances):
    model = net()
    ctx = mp.get_context("fork")  # the children run this module's function on the parent's model
    with Inferencer(model, max_batch=64, instances=instances) as inferencer:
        results = ctx.Queue()
        workers = [ctx.Process(target=_ask_many, args=(inferencer.create_client(), model, w, 40, results))
                   for w in range(8)]
        for process in workers:
            process.start()
        answers = sorted(results.get(timeout=120) for _ in workers)
        for process in workers:
            process.join(30)
        stats = inferencer.stats()
    assert answers == [(w, 40, 0) for w in range(8)]
    assert stats["samples"] == 8 * 40 and stats["mean_batch"] > 1  # every request was served, batched


def test_a_self_play_game_gives_every_symmetry_of_every_position_with_its_outcome():
    def uniform(planes):
        return torch.zeros(len(planes), 9), torch.zeros(len(planes))

    record = play_selfplay_game(TTT, AlphaZeroSearch(TTT, uniform, selfplay_search(TTT, 16), seed=3))
    n = record.moves * 8  # the square's eight symmetries
    assert record.planes.shape == (n, 3, 3, 3) and record.policies.shape == (n, 9) and record.values.shape == (n,)
    np.testing.assert_allclose(record.policies.sum(axis=1), 1.0, rtol=1e-5)
    # the side to move alternates, so consecutive positions see the outcome from opposite sides
    per_position = record.values[::8]
    assert set(np.abs(per_position)) <= {0.0, 1.0}
    assert all(a == -b for a, b in zip(per_position, per_position[1:]))
    buffer = ReplayBuffer(n + 5, TTT)
    buffer.add(record)
    restored = ReplayBuffer(n + 5, TTT)
    restored.load_state_dict(buffer.state_dict())
    assert restored.size == n and torch.equal(restored.planes, buffer.planes)
    planes, policies, values = restored.sample(4, torch.Generator().manual_seed(0))
    assert planes.shape == (4, 3, 3, 3) and planes.dtype == torch.float32


def test_a_value_target_can_take_a_share_of_the_search_root_value():
    def leaning(planes):  # a network that favours whoever is to move a little
        return torch.zeros(len(planes), 9), torch.full((len(planes),), 0.3)

    def values(share: float) -> np.ndarray:
        search = AlphaZeroSearch(TTT, leaning, selfplay_search(TTT, 16), seed=3)
        return play_selfplay_game(TTT, search, root_value_share=share).values

    outcome, root, half = values(0.0), values(1.0), values(0.5)  # the same seed: the same game
    assert set(np.abs(outcome)) <= {0.0, 1.0} and not set(np.abs(root)) <= {0.0, 1.0}
    np.testing.assert_allclose(half, (outcome + root) / 2, rtol=1e-6)
    # the workers' player takes each game's share: connect4 mixes in the root value, tic-tac-toe does not
    assert ROOT_VALUE_SHARE.get("tictactoe", 0.0) == 0.0 and 0 < ROOT_VALUE_SHARE["connect4"] < 1
    for name, mixed in (("tictactoe", False), ("connect4", True)):
        game = GAMES[name]

        def even(planes, moves=game.num_moves):
            return torch.zeros(len(planes), moves), torch.full((len(planes),), 0.3)

        record = alphazero_player(game, even, selfplay_search(game, 8), seed=0)()
        assert (not set(np.abs(record.values)) <= {0.0, 1.0}) == mixed, name


def test_the_evaluations_of_several_games_come_back_to_each_game():
    model = net()
    generator = torch.Generator().manual_seed(0)
    requests = [torch.rand(rows, 3, 3, 3, generator=generator) for rows in (1, 3, 2)]
    with torch.no_grad():
        expected = [model(planes) for planes in requests]
    with Inferencer(model, max_batch=8) as inferencer:
        for evaluate in (model_evaluate(model), LocalEvaluator(model), inferencer.create_client()):
            answers = submit_evaluations(evaluate, requests)()
            assert len(answers) == len(requests), type(evaluate).__name__
            for (logits, values), (want_logits, want_values) in zip(answers, expected):
                np.testing.assert_allclose(np.asarray(logits), want_logits.numpy(), atol=1e-5)
                np.testing.assert_allclose(np.asarray(values).reshape(-1), want_values.numpy().reshape(-1), atol=1e-5)
        stats = inferencer.stats()
    assert stats["batches"] == 1 and stats["samples"] == 6  # the client sent the three as one request


def test_games_played_at_once_are_whole_games_and_the_same_for_a_seed():
    model = net()

    def games(seed: int) -> list:
        records: list = []
        stop = threading.Event()  # the games run in this process

        def keep(record) -> None:
            records.append(record)
            if len(records) == 5:
                stop.set()
        play_games_at_once(TTT, model_evaluate(model), selfplay_search(TTT, 8), seed, 3, stop, keep)
        return records

    first = games(seed=1)
    for record in first:
        assert 5 <= record.moves <= 9 and len(record) == 8 * record.moves  # every symmetry of every position
        np.testing.assert_allclose(record.policies.sum(axis=1), 1.0, rtol=1e-5)
        assert set(np.unique(record.values)) <= {-1.0, 0.0, 1.0}
    assert [(r.planes.tobytes(), r.values.tobytes()) for r in games(seed=1)] == [
        (r.planes.tobytes(), r.values.tobytes()) for r in first]


def test_a_worker_plays_several_games_at_once_through_one_inferencer_request_per_round():
    with Inferencer(net(), max_batch=64) as inferencer, \
            WorkerPool(inferencer.create_client, TTT, selfplay_search(TTT, 4), count=1, seed=0,
                       games_at_once=6) as pool:
        deadline, games = time.monotonic() + 120, []
        while len(games) < 6:
            games += pool.poll(1.0)
            assert time.monotonic() < deadline, "no games from the worker"
        stats = inferencer.stats()
    assert all(len(record) == 8 * record.moves for record in games)
    # one worker alone: each request holds the leaves of one group of three games (a batch may join both groups')
    assert stats["samples"] % 3 == 0 and stats["mean_batch"] >= 3


@pytest.mark.parametrize("player, games_at_once", [(alphazero_player, 0), (muzero_player, 2)])
def test_games_at_once_is_refused_where_it_cannot_run(player, games_at_once):
    with pytest.raises(GraphError, match="games_at_once"):
        WorkerPool(LocalEvaluator(net()), TTT, selfplay_search(TTT, 4), count=1, seed=0, player=player,
                   games_at_once=games_at_once)


def test_a_worker_that_dies_is_started_again_and_games_go_on():
    restarted = []
    with Inferencer(net(), max_batch=64) as inferencer, \
            WorkerPool(inferencer.create_client, TTT, selfplay_search(TTT, 4), count=2, seed=0,
                       on_restart=lambda index, code: restarted.append((index, code))) as pool:
        deadline = time.monotonic() + 120
        while not pool.poll(1.0):
            assert time.monotonic() < deadline, "no game from the workers"
        victim = pool.processes[0]
        os.kill(victim.pid, signal.SIGKILL)
        games_after = []
        while not (restarted and games_after and pool.processes[0].is_alive()):
            games_after += pool.poll(1.0)
            assert time.monotonic() < deadline, "the dead worker was not started again"
        assert restarted == [(0, -signal.SIGKILL)] and pool.restarts == 1
        assert pool.processes[0].pid != victim.pid


# ----------------------------------------------------------------------------- runs
def assert_resumes_alike(trainer: SelfPlayTrainer, resumed: SelfPlayTrainer) -> None:
    """``resumed`` (set up from ``trainer``'s run folder) holds the trainer's state: counts, weights,
    optimizer, replay samples and random generator."""
    resumed._setup()
    assert (resumed.step, resumed.epoch, resumed.batch, resumed.counts) == (
        trainer.step, trainer.epoch, trainer.batch, trainer.counts)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert str(trainer.optimizer.state_dict()) == str(resumed.optimizer.state_dict())
    assert len(resumed.buffer) == len(trainer.buffer)
    for name, tensor in trainer.buffer.fields.items():
        assert torch.equal(resumed.buffer.fields[name], tensor), name
    assert torch.equal(resumed.generator.get_state(), trainer.generator.get_state())


@pytest.mark.slow
def test_a_short_run_writes_its_folder_and_resumes_with_the_same_trainer_state(tmp_path):
    events = []
    run = tmp_path / "run"
    trainer = SelfPlayTrainer(gc.template("alphazero_tictactoe"), TrainConfig(**QUICK), out=run,
                              events=events.append)
    result = trainer.fit()
    assert result.status == "finished" and result.step == 6
    assert {"graph.json", "config.json", "last.pt", "best.pt", "metrics.jsonl", "status.json"} <= {
        p.name for p in run.iterdir()}
    steps = [e for e in events if e["type"] == "step"]
    assert steps and all(e["games"] >= 1 and e["positions_per_s"] >= 0 and e["mean_batch"] >= 1 for e in steps)
    assert steps[0]["positions_per_s"] > 0  # the games before the first step (a later window may have none)
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert set(val) >= {"vs_random", "vs_one_ply", "vs_perfect"} and all(0 <= val[k] <= 1 for k in (
        "vs_random", "vs_one_ply", "vs_perfect"))

    resumed = Trainer.resume(run, epochs=2)
    assert isinstance(resumed, SelfPlayTrainer)
    assert_resumes_alike(trainer, resumed)

    again = Trainer.resume(run, epochs=2).fit()
    assert again.status == "finished" and again.step == 12 and again.epoch == 2


@pytest.mark.slow
def test_train_takes_the_game_from_the_templates_meta(tmp_path):
    config = TrainConfig(**{**QUICK, "game": None, "eval_games": 1, "epoch_steps": 2})
    result = train("alphazero_tictactoe", config, out=tmp_path / "run")
    assert result.status == "finished"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["game"] == "tictactoe"


def test_the_task_is_guessed_from_the_templates_meta():
    assert guess_task(gc.template("alphazero_connect4")) == "alphazero"


# ----------------------------------------------------------------------------- bad graphs
def _policy_linear(doc: gc.GraphDoc) -> gc.Node:
    """The linear layer feeding the ``policy`` output."""
    output = next(n for n in doc.nodes if n.type == "output")
    source = next(e.src for e in doc.edges if e.dst == output.id)
    return next(n for n in doc.nodes if n.id == source)


@pytest.mark.parametrize("change, game, expected", [
    (None, "connect4", "input 'planes' has shape [3, 3, 3]; it must be connect4's board planes"),
    ("policy", "tictactoe", "shape [8]; it must be the policy, one logit per move (9), shape [9]"),
    ("no_game", None, "name the game to learn with --game"),
])
def test_a_graph_that_does_not_fit_the_game_is_one_line_naming_the_node(tmp_path, change, game, expected):
    doc = gc.template("alphazero_tictactoe")
    if change == "policy":
        node = _policy_linear(doc)
        node.params["out_features"] = 8
    if change == "no_game":
        doc.meta.pop("game")
    config = TrainConfig(**{**QUICK, "game": game})
    with pytest.raises(GraphError) as caught:
        SelfPlayTrainer(doc, config, out=tmp_path / "run").fit()
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before anything was written


# ----------------------------------------------------------------------------- the agent and netcanvas play
def untrained_run(folder: Path, template: str, task: str, model: torch.nn.Module) -> Path:
    """A tic-tac-toe run folder of ``task`` as a run leaves it (graph, config, weights), with ``model``'s
    untrained weights."""
    (folder / "graph.json").write_text(dumps(gc.template(template)))
    config = TrainConfig(task=task, game="tictactoe", simulations=16)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    torch.save({"model": model.state_dict()}, folder / "last.pt")
    return folder


def answers_legal_moves_the_same_for_a_seed(run_dir: Path) -> AgentAnswer:
    """Two agents of ``run_dir`` with one seed answer three positions alike, each with an empty cell; the
    answer to "xo.xo....", whose moves are the legal ones."""
    first, second = gc.load_agent(run_dir, simulations=24, seed=0), gc.load_agent(run_dir, simulations=24, seed=0)
    positions = [".........", "x...o....", "xo.xo...."]
    moves = [first.move(p) for p in positions]
    assert moves == [second.move(p) for p in positions] == [first.move(p) for p in positions]
    for position, move in zip(positions, moves):
        assert position[move] == "."
    answer = first.policy("xo.xo....")
    assert answer.probabilities.shape == (9,) and answer.probabilities.sum() == pytest.approx(1.0)
    assert answer.probabilities[[0, 1, 3, 4]].sum() == 0 and -1 <= answer.value <= 1
    return answer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return untrained_run(tmp_path_factory.mktemp("agent_run"), "alphazero_tictactoe", "alphazero", net(seed=1))


def test_an_agent_answers_the_same_move_for_a_seed(run_dir):
    answer = answers_legal_moves_the_same_for_a_seed(run_dir)
    assert answer.move == 6  # x wins at once in cell 6; the search sees the terminal position exactly


@pytest.mark.parametrize("cells, expected", [
    ("x........x", "a position is 9 characters"),
    ("xxx.oo...", "the game is over (x won)"),
    ("xx.......", "2 x and 0 o cannot happen"),
    ("x..q.....", "bad character 'q'"),
])
def test_an_agent_refuses_a_position_it_cannot_move_in(run_dir, cells, expected):
    with pytest.raises(GameError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        gc.load_agent(run_dir).move(cells)


def test_an_agent_comes_only_from_an_alphazero_run(tmp_path, run_dir):
    other = tmp_path / "classify"
    other.mkdir()
    for name in ("graph.json", "last.pt"):
        (other / name).write_bytes((run_dir / name).read_bytes())
    (other / "config.json").write_text(json.dumps(TrainConfig(task="classify").to_dict()))
    with pytest.raises(GraphError, match="an agent plays from an alphazero run"):
        gc.load_agent(other)


def test_netcanvas_play_answers_a_move_and_refuses_an_illegal_one(run_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("4\n4\nnine\n"))
    assert main(["play", str(run_dir), "--simulations", "16"]) == 0
    out = capsys.readouterr().out
    assert "you play x, the agent o" in out
    assert out.count("agent plays cell") == 1  # one move of ours, one answer
    assert "refused: tictactoe: move 4 is illegal: cell 4 is taken" in out
    assert "refused: 'nine' is not a cell number" in out
    assert "value" in out and "no more input" in out
    assert ". x .    3 4 5" in out  # the board with our x in the centre, the cell numbers beside it


def test_netcanvas_play_can_let_the_agent_open(run_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["play", str(run_dir), "--first", "agent", "--simulations", "8"]) == 0
    out = capsys.readouterr().out
    assert "you play o, the agent x" in out and out.count("agent plays cell") == 1


def test_the_readme_play_line_runs_as_written(run_dir, tmp_path, monkeypatch, capsys):
    """README.md's ``netcanvas play`` line, exactly as written, on a run at its path (an untrained one)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    [line] = [text.split("#")[0].strip() for text in readme.splitlines() if text.startswith("netcanvas play ")]
    argv = shlex.split(line)
    shutil.copytree(run_dir, tmp_path / argv[2])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("4\n"))
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out
    assert "you play x, the agent o" in out and out.count("agent plays cell") == 1
