"""MuZero by self-play: the targets a game's trajectory gives, the unrolled losses, the one graph the
Inferencer serves, a run folder that resumes exactly, the agent a run makes, and a document that is
not MuZero's."""

import io
import json

import numpy as np
import pytest
import torch
from test_selfplay import answers_legal_moves_the_same_for_a_seed, assert_resumes_alike, untrained_run

import graphcore as gc
from graphcore.cli.main import main
from graphcore.core.diagnostics import GraphError
from graphcore.runtime.config import TrainConfig, guess_task
from graphcore.runtime.games import GAMES
from graphcore.runtime.muzero import (
    LocalMuZero,
    MuZeroRecord,
    MuZeroTrainer,
    ServedMuZero,
    Trajectory,
    UnrollBuffer,
    action_planes,
    network_doc,
    symmetric_samples,
    unroll_targets,
    unrolled_losses,
    value_targets,
)
from graphcore.runtime.train import Trainer

TTT = GAMES["tictactoe"]
QUICK = dict(task="muzero", game="tictactoe", epochs=1, epoch_steps=6, eval_games=2, simulations=8,
             batch_size=16, log_every=2, workers=2)  # a run of seconds


def network(seed: int = 0) -> gc.GraphModel:
    return gc.compile(network_doc(gc.template("muzero_tictactoe"))).init(seed=seed).eval()


def x_wins_trajectory() -> Trajectory:
    """x 0, o 3, x 1, o 4, x 2: x completes the top row with the fifth move."""
    state, planes = TTT.initial(), []
    for move in (0, 3, 1, 4, 2):
        planes.append(TTT.encode(state))
        state = TTT.play(state, move)
    assert state.outcome == 1
    policies = np.full((5, 9), 1 / 9, dtype=np.float32)
    return Trajectory(torch.stack(planes).to(torch.uint8).numpy(), np.array([0, 3, 1, 4, 2]),
                      np.array([0, 0, 0, 0, 1], dtype=np.float32), policies,
                      np.array([0.1, 0.2, 0.3, 0.4, 0.5], dtype=np.float32), np.array([1, -1, 1, -1, 1], dtype=np.int8))


# ----------------------------------------------------------------------------- targets
def test_value_targets_sum_the_movers_rewards_and_bootstrap_from_the_search():
    trajectory = x_wins_trajectory()
    # to the game's end: the outcome for the side to move
    np.testing.assert_allclose(value_targets(trajectory, td_steps=9), [1, -1, 1, -1, 1])
    # two rewards, then the root value two moves on (the same side to move: its sign kept)
    np.testing.assert_allclose(value_targets(trajectory, td_steps=2), [0.3, 0.4, 0.5, -1, 1])


def test_unroll_targets_pad_past_the_end_with_absorbing_states():
    samples = unroll_targets(x_wins_trajectory(), unroll_steps=3, td_steps=9, rng=np.random.default_rng(0))
    assert samples["planes"].shape == (5, 3, 3, 3) and samples["actions"].shape == (5, 3)
    assert samples["policies"].shape == (5, 4, 9)
    np.testing.assert_array_equal(samples["actions"][0], [0, 3, 1])
    # from the fourth position: o's move, x's winning move, then the absorbing states
    np.testing.assert_array_equal(samples["actions"][3][:2], [4, 2])
    assert 0 <= samples["actions"][3][2] < 9  # a random action past the end
    np.testing.assert_allclose(samples["values"][3], [-1, 1, 0, 0])
    np.testing.assert_allclose(samples["rewards"][3], [0, 1, 0])
    np.testing.assert_allclose(samples["policy_mask"][3], [1, 1, 0, 0])
    assert samples["policies"][3][2:].sum() == 0 and samples["policies"][3][:2].sum() == pytest.approx(2.0)
    np.testing.assert_allclose(samples["values"][0], [1, -1, 1, -1])


def test_symmetries_turn_the_planes_the_actions_and_the_policies_alike():
    samples = unroll_targets(x_wins_trajectory(), unroll_steps=3, td_steps=9, rng=np.random.default_rng(0))
    samples["policies"][:, 0] = np.eye(9, dtype=np.float32)[samples["actions"][:, 0]]  # the first move, one-hot
    turned = symmetric_samples(TTT, samples)
    assert len(turned["actions"]) == 8 * 5
    for name, value in samples.items():
        np.testing.assert_array_equal(turned[name][:5], value)  # the identity first
    for s in range(8):
        block = slice(5 * s, 5 * s + 5)
        # the played move follows the board: the turned policy's one-hot sits on the turned action
        np.testing.assert_array_equal(turned["policies"][block, 0].argmax(axis=1), turned["actions"][block, 0])
        for row in range(5):  # the turned board has the move's cell empty, as the original had
            cell = turned["actions"][block][row, 0]
            assert turned["planes"][block][row, :2].reshape(2, 9)[:, cell].sum() == 0


# ----------------------------------------------------------------------------- the network and the losses
def test_the_served_graph_answers_as_the_three_networks_do():
    model = network()
    served, local = ServedMuZero(model, TTT, (32, 3, 3)), LocalMuZero(model, TTT)
    planes = torch.stack([TTT.encode(TTT.initial()), TTT.encode(TTT.play(TTT.initial(), 4))])
    with torch.no_grad():
        initial = served.initial_inference(planes)
    expected = local.initial_inference(planes)
    for got, want in zip(initial, expected):
        torch.testing.assert_close(got.reshape(want.shape), want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        recurrent = served.recurrent_inference(expected[0], torch.tensor([1, 8]))
    for got, want in zip(recurrent, local.recurrent_inference(expected[0], torch.tensor([1, 8]))):
        torch.testing.assert_close(got.reshape(want.shape), want, atol=1e-5, rtol=1e-5)
    assert sorted(model.state_dict()) == sorted(gc.compile(gc.template("muzero_tictactoe")).state_dict())


def test_action_planes_are_one_hot_cells():
    planes = action_planes(TTT, torch.tensor([0, 4, 8]))  # (3, 1, 3, 3)
    assert planes.shape == (3, 1, 3, 3) and planes.sum() == 3
    assert planes[1, 0, 1, 1] == 1 and planes[2, 0, 2, 2] == 1


def test_a_few_steps_lower_the_unrolled_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    buffer = UnrollBuffer(100, TTT, unroll_steps=3)
    samples = unroll_targets(x_wins_trajectory(), unroll_steps=3, td_steps=9, rng=np.random.default_rng(0))
    buffer.add(MuZeroRecord(symmetric_samples(TTT, samples), moves=5))
    batch = buffer.draw(32, torch.Generator().manual_seed(0))
    model = network().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = unrolled_losses(model, TTT, batch)
    assert set(first) == {"loss", "policy_loss", "value_loss", "reward_loss"}
    for _ in range(20):
        losses = unrolled_losses(model, TTT, batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    last = unrolled_losses(model, TTT, batch)
    assert last["loss"].item() < 0.7 * first["loss"].item()
    assert last["value_loss"].item() < first["value_loss"].item()
    assert last["reward_loss"].item() < first["reward_loss"].item()


# ----------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_a_short_muzero_run_writes_its_folder_and_resumes_with_the_same_trainer_state(tmp_path):
    events = []
    run = tmp_path / "run"
    trainer = MuZeroTrainer(gc.template("muzero_tictactoe"), TrainConfig(**QUICK), out=run, events=events.append)
    result = trainer.fit()
    assert result.status == "finished" and result.step == 6
    assert {"graph.json", "config.json", "last.pt", "best.pt", "metrics.jsonl", "status.json"} <= {
        p.name for p in run.iterdir()}
    steps = [e for e in events if e["type"] == "step"]
    assert steps and all(e["games"] >= 1 and e["mean_batch"] >= 1 and e["reward_loss"] >= 0 for e in steps)
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert set(val) >= {"vs_random", "vs_one_ply", "vs_perfect"}

    resumed = Trainer.resume(run, epochs=2)
    assert isinstance(resumed, MuZeroTrainer)
    assert_resumes_alike(trainer, resumed)

    again = Trainer.resume(run, epochs=2).fit()
    assert again.status == "finished" and again.step == 12 and again.epoch == 2
    assert gc.load_agent(run, simulations=8).move("x...o....") in (1, 2, 3, 5, 6, 7, 8)


def test_the_task_is_guessed_from_the_templates_meta():
    assert guess_task(gc.template("muzero_tictactoe")) == "muzero"


@pytest.mark.parametrize("missing", ["dynamics", "prediction"])
def test_a_document_without_a_muzero_network_is_one_line_before_training(tmp_path, missing):
    doc = gc.template("muzero_tictactoe")
    del doc.subgraphs[missing]
    doc.nodes = [n for n in doc.nodes if n.type != f"subgraph:{missing}"]
    with pytest.raises(GraphError) as caught:
        MuZeroTrainer(doc, TrainConfig(**QUICK), out=tmp_path / "run").fit()
    message = str(caught.value)
    assert f"has no subgraph {missing!r}; MuZero needs three" in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before anything was written


# ----------------------------------------------------------------------------- the agent and netcanvas play
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return untrained_run(tmp_path_factory.mktemp("muzero_run"), "muzero_tictactoe", "muzero", network(seed=1))


def test_a_muzero_agent_answers_a_legal_move_the_same_for_a_seed(run_dir):
    answers_legal_moves_the_same_for_a_seed(run_dir)  # over its learned model, the root's moves the legal ones


def test_netcanvas_play_plays_a_muzero_run(run_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("4\n"))
    assert main(["play", str(run_dir), "--simulations", "8"]) == 0
    out = capsys.readouterr().out
    assert "you play x, the agent o" in out and out.count("agent plays cell") == 1
