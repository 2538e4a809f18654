"""The board-game templates (AlphaZero tic-tac-toe and connect4, MuZero tic-tac-toe): they fit their
games, run on encoded positions, export to Python and ONNX, and a graph that does not fit its game
gets one line naming the node and the shape it should have."""

import importlib.util
import random
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import graphcore as gc
from graphcore.core.subgraphs import standalone
from graphcore.runtime.games import GAMES, Game
from graphcore.runtime.games.check import MUZERO_NETWORKS, check_game_graph

ROOT = Path(__file__).resolve().parent.parent
ALPHAZERO = {"alphazero_tictactoe": "tictactoe", "alphazero_connect4": "connect4"}
TEMPLATES = {**ALPHAZERO, "muzero_tictactoe": "tictactoe"}
TASK = {"alphazero_tictactoe": "alphazero", "alphazero_connect4": "alphazero", "muzero_tictactoe": "muzero"}


def _generator():
    spec = importlib.util.spec_from_file_location("make_rl_templates", ROOT / "tools" / "make_rl_templates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positions(game: Game, n: int, seed: int = 0) -> torch.Tensor:
    """Planes (n, 3, rows, cols) of positions from random games, early and late ones, both sides to move."""
    rng = random.Random(seed)
    planes = []
    while len(planes) < n:
        state = game.initial()
        for _ in range(rng.randrange(game.rows * game.cols)):
            if game.is_terminal(state):
                break
            state = game.play(state, rng.choice(game.legal_moves(state)))
        planes.append(game.encode(state))
    return torch.stack(planes)


def actions(game: Game, n: int, seed: int = 0) -> torch.Tensor:
    """One-hot action planes (n, 1, rows, cols) for tic-tac-toe, whose moves are its cells."""
    moves = torch.randint(game.num_moves, (n,), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(moves, game.num_moves).float().reshape(n, 1, game.rows, game.cols)


def compiled(doc: gc.GraphDoc) -> gc.GraphModel:
    return gc.compile(doc).init(seed=0).eval()


def load_source(source: str):
    namespace = {"__name__": "generated"}
    exec(compile(source, "generated.py", "exec"), namespace)
    return namespace


# ----------------------------------------------------------------------------- the files
def test_the_templates_are_listed_and_the_generator_reproduces_them():
    assert set(TEMPLATES) <= set(gc.templates())
    generator = _generator()
    assert set(generator.TEMPLATES) == set(TEMPLATES)
    for name in TEMPLATES:
        committed = (ROOT / "graphcore" / "templates" / f"{name}.json").read_text(encoding="utf-8")
        assert generator.render(name) == committed, f"{name}.json differs: run tools/make_rl_templates.py"


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_fits_its_game_and_recommends_its_task(name):
    doc = gc.template(name)
    game = GAMES[doc.meta["game"]]
    assert doc.meta["game"] == TEMPLATES[name]
    assert doc.meta["train"]["task"] == TASK[name] and doc.meta["train"]["minutes"] > 0
    assert gc.validate(doc) == []
    check_game_graph(doc, game, task=TASK[name])
    assert f"{gc.summary(doc).total_params:,} parameters" in doc.meta["description"]


@pytest.mark.parametrize("name", ALPHAZERO)
def test_alphazero_tower_is_one_residual_subgraph_used_per_block(name):
    doc = gc.template(name)
    blocks = [n.id for n in doc.nodes if n.type == "subgraph:res_block"]
    assert list(doc.subgraphs) == ["res_block"]
    assert blocks == [f"block{i}" for i in range(1, {"alphazero_tictactoe": 3, "alphazero_connect4": 5}[name] + 1)]
    assert [n.id for n in doc.nodes if n.type == "output"] == ["policy", "value"]


def test_summary_gives_parameters_and_macs_and_muzero_is_the_sum_of_its_networks():
    for name in TEMPLATES:
        summary = gc.summary(gc.template(name))
        assert summary.total_params > 0 and summary.total_macs > summary.total_params
    doc = gc.template("muzero_tictactoe")
    parts = [gc.summary(standalone(doc, name)) for name in MUZERO_NETWORKS]
    whole = gc.summary(doc)
    assert whole.total_params == sum(p.total_params for p in parts)
    assert whole.total_macs == sum(p.total_macs for p in parts)


# ----------------------------------------------------------------------------- forward passes
@pytest.mark.parametrize("name", ALPHAZERO)
def test_alphazero_gives_move_logits_and_a_value_for_a_batch_of_positions(name):
    game = GAMES[ALPHAZERO[name]]
    model = compiled(gc.template(name))
    x = positions(game, 16)
    with torch.no_grad():
        policy, value = model(x)
    assert policy.shape == (16, game.num_moves) and value.shape == (16, 1)
    assert torch.isfinite(policy).all() and (value.abs() <= 1).all()
    assert policy.std(dim=0).sum() > 0  # different positions, different logits
    policy, value = model.train()(x)  # train mode: batch statistics, gradients reach the stem
    (policy.logsumexp(1).mean() + value.square().mean()).backward()
    assert model.get_submodule("stem").conv.weight.grad.abs().sum() > 0


def test_muzero_file_level_runs_one_step_of_the_model():
    game = GAMES["tictactoe"]
    model = compiled(gc.template("muzero_tictactoe"))
    with torch.no_grad():
        policy, value, next_state, reward = model(positions(game, 8), actions(game, 8))
    assert policy.shape == (8, 9) and value.shape == (8, 1) and reward.shape == (8, 1)
    assert next_state.shape == (8, 32, 3, 3)
    assert (value.abs() <= 1).all() and (reward.abs() <= 1).all()


def test_muzero_networks_compile_alone_and_chain_representation_dynamics_three_times_prediction():
    game = GAMES["tictactoe"]
    doc = gc.template("muzero_tictactoe")
    whole = compiled(doc)
    nets = {}
    for name in MUZERO_NETWORKS:
        nets[name] = gc.compile(standalone(doc, name)).eval()
        nets[name].load_state_dict(whole.get_submodule(name).state_dict())  # the same keys: weights move over
    with torch.no_grad():
        state = nets["representation"](positions(game, 8))
        assert torch.equal(state, whole.get_submodule("representation")(positions(game, 8)))
        for step in range(3):
            before = state
            state, reward = nets["dynamics"](state, actions(game, 8, seed=step))
            assert state.shape == before.shape and reward.shape == (8, 1) and (reward.abs() <= 1).all()
            lows, highs = state.amin(dim=(1, 2, 3)), state.amax(dim=(1, 2, 3))
            torch.testing.assert_close(lows, torch.zeros(8))  # min-max scaled per sample
            torch.testing.assert_close(highs, torch.ones(8), atol=1e-3, rtol=0)
        policy, value = nets["prediction"](state)
    assert policy.shape == (8, 9) and value.shape == (8, 1) and (value.abs() <= 1).all()


# ----------------------------------------------------------------------------- export
def _export_cases() -> list:
    """Each template whole, and MuZero's networks alone (each well under a second)."""
    cases = [(name, None) for name in TEMPLATES] + [("muzero_tictactoe", net) for net in MUZERO_NETWORKS]
    return [pytest.param(name, net, id=f"{name}{'-' + net if net else ''}") for name, net in cases]


def _doc_and_inputs(name: str, net: str | None) -> tuple[gc.GraphDoc, list[torch.Tensor]]:
    """The template (or one of its networks) and a batch of real inputs for it."""
    game = GAMES[TEMPLATES[name]]
    doc = gc.template(name) if net is None else standalone(gc.template(name), net)
    planes = positions(game, 5)
    by_input = {"planes": lambda: planes, "action": lambda: actions(game, 5),
                "state": lambda: compiled(standalone(gc.template(name), "representation"))(planes).detach()}
    return doc, [by_input[n.id]() for n in doc.nodes if n.type == "input"]


@pytest.mark.parametrize("name,net", _export_cases())
def test_python_export_runs_with_the_same_outputs(name, net):
    doc, inputs = _doc_and_inputs(name, net)
    model = compiled(doc)
    generated = load_source(gc.to_python(doc))["build_model"]().eval()
    generated.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        want, got = model(*inputs), generated(*inputs)
    want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name,net", _export_cases())
def test_onnx_export_agrees_in_onnxruntime(tmp_path, name, net):
    doc, inputs = _doc_and_inputs(name, net)
    model = compiled(doc)
    result = gc.export_onnx(model, tmp_path / "net.onnx")
    assert 0 <= result.max_diff <= result.tolerance
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs, strict=True)})
    with torch.no_grad():
        want = model(*inputs)
    for a, b in zip(want if isinstance(want, tuple) else (want,), got, strict=True):
        np.testing.assert_allclose(b, a.numpy(), rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- bad input
def _message(doc: gc.GraphDoc, game: str, task: str = "alphazero") -> str:
    with pytest.raises(gc.GraphError) as caught:
        check_game_graph(doc, GAMES[game], task=task)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_input_that_is_not_the_games_planes_names_the_node_and_the_planes():
    assert _message(gc.template("alphazero_tictactoe"), "connect4") == (
        "error: graph 'alphazero_tictactoe': input 'planes' has shape [3, 3, 3]; it must be connect4's board "
        "planes (side to move, opponent, x to move), shape [3, 6, 7]")


def test_policy_that_is_not_one_logit_per_move_names_the_output_and_the_moves():
    doc = gc.template("alphazero_connect4")
    doc.node("policy_fc").params["out_features"] = 42
    assert _message(doc, "connect4") == ("error: graph 'alphazero_connect4': output 'policy' has shape [42]; it must "
                                         "be the policy, one logit per move (7), shape [7]")


def test_value_that_is_not_one_number_names_the_output():
    doc = gc.template("alphazero_tictactoe")
    doc.node("value_fc2").params["out_features"] = 3
    assert _message(doc, "tictactoe") == ("error: graph 'alphazero_tictactoe': output 'value' has shape [3]; it must "
                                          "be the value, one number, shape [1]")


def test_a_graph_with_one_output_says_which_two_it_needs():
    doc = gc.template("alphazero_tictactoe")
    doc.nodes = [n for n in doc.nodes if n.id != "value"]
    doc.edges = [e for e in doc.edges if e.dst != "value"]
    assert _message(doc, "tictactoe") == (
        "error: graph 'alphazero_tictactoe' has 1 output node(s) ('policy'); it needs 2, in this order: "
        "1. the policy, one logit per move (9), shape [9]; 2. the value, one number, shape [1]")


def test_muzero_without_a_network_names_the_missing_subgraph():
    doc = gc.template("muzero_tictactoe")
    del doc.subgraphs["dynamics"]
    assert _message(doc, "tictactoe", "muzero").startswith(
        "error: graph 'muzero_tictactoe' has no subgraph 'dynamics'; MuZero needs three: representation")
    assert "has no subgraph 'representation'" in _message(gc.template("alphazero_tictactoe"), "tictactoe", "muzero")


def test_muzero_action_plane_of_the_wrong_shape_is_named_before_what_it_breaks():
    doc = gc.template("muzero_tictactoe")
    doc.subgraphs["dynamics"].node("action").params["shape"] = [9]  # the join after it fails too
    assert _message(doc, "tictactoe", "muzero") == (
        "error: subgraph 'dynamics': input 'action' has shape [9]; it must be the action, a one-hot plane, "
        "shape [1, 3, 3]")


def test_muzero_dynamics_must_take_the_hidden_state_that_representation_makes():
    doc = gc.template("muzero_tictactoe")
    doc.subgraphs["dynamics"].node("state").params["shape"] = [16, 3, 3]  # a dynamics that compiles alone
    assert gc.validate(standalone(doc, "dynamics")) == []
    assert _message(doc, "tictactoe", "muzero") == (
        "error: subgraph 'dynamics': input 'state' has shape [16, 3, 3]; it must be the hidden state that "
        "representation makes, shape [32, 3, 3]")


def test_muzero_problem_inside_a_network_says_which_network():
    doc = gc.template("muzero_tictactoe")
    doc.subgraphs["prediction"].node("policy_conv").params["groups"] = 5  # 32 channels do not split in 5
    message = _message(doc, "tictactoe", "muzero")
    assert message.startswith("error: subgraph 'prediction': node 'policy_conv': ")


def test_unknown_task_names_the_tasks():
    assert _message(gc.template("alphazero_tictactoe"), "tictactoe", "chess") == (
        "error: unknown self-play task 'chess' (use alphazero or muzero)")


def test_standalone_carries_only_the_subgraphs_it_uses_and_names_a_missing_one():
    doc = gc.template("muzero_tictactoe")
    assert set(standalone(doc, "prediction").subgraphs) == {"res_block"}
    assert set(standalone(doc, "dynamics").subgraphs) == {"res_block", "scale_hidden"}
    assert standalone(doc, "res_block").subgraphs == {}
    with pytest.raises(gc.GraphError, match="graph 'muzero_tictactoe' has no subgraph named 'dynamic' "
                                            r"\(subgraphs: res_block, scale_hidden, representation"):
        standalone(doc, "dynamic")
