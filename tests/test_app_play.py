"""The Play panel (NiceGUI's simulated user): a game against a real AlphaZero run, trained here for
a few self-play steps, whose agent answers through an Inferencer; refused clicks leave the board as
it was; a run chosen instead of another closes the other's worker."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nicegui import ui
from nicegui.testing import User
from test_app_user import SLOW, open_editor

import graphcore as gc
from app.editor import EDITORS
from app.play import Match, PlayPanel, move_at
from graphcore.runtime.config import TrainConfig
from graphcore.runtime.games import GAMES, GameError, O, X
from graphcore.runtime.train import trainer_class
from graphcore.runtime.workspace import Workspace

TTT, C4 = GAMES["tictactoe"], GAMES["connect4"]
LOAD = 600  # retries of 0.1 s for a run's network to reach its inference worker (a fresh process)
THINK = 300  # retries of 0.1 s for the agent's search


def train_game_run(folder: Path, template: str) -> Path:
    """A real self-play run of ``template`` (alphazero_GAME, muzero_GAME) of a few steps (seconds), its
    folder as the trainer leaves it."""
    task, game = template.split("_", 1)
    config = TrainConfig(task=task, game=game, epochs=1, epoch_steps=2, eval_games=1, simulations=8,
                         batch_size=16, log_every=2, workers=1)
    trainer_class(task)(gc.template(template), config, out=folder).fit()
    return folder


class GameRuns(dict[str, Path]):
    """Short runs by game (AlphaZero's) or template name, each trained on its first use (in ``root``)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, key: str) -> Path:
        template = key if "_" in key else f"alphazero_{key}"
        self[key] = train_game_run(self.root / template, template)
        return self[key]


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> GameRuns:
    """The session's short runs, one per game, copied into each test's workspace by ``add_run``."""
    return GameRuns(tmp_path_factory.mktemp("game_runs"))


def add_run(workspace: Workspace, trained_runs: dict[str, Path], game: str) -> Path:
    """The game's trained run, as a run folder of ``workspace``."""
    target = workspace.runs_dir / trained_runs[game].name
    shutil.copytree(trained_runs[game], target)
    return target


@pytest.fixture
async def user(workspace: Workspace, user: User) -> AsyncIterator[User]:
    """The simulated user, with the app serving ``workspace``; the Play panels' workers are closed after."""
    yield user
    for editor in list(EDITORS.values()):
        if hasattr(editor, "play_panel"):
            editor.play_panel.close()


def panel_of(user: User) -> PlayPanel:
    return EDITORS[user.client.id].play_panel


async def open_play(user: User) -> PlayPanel:
    """Open the editor and its Play tab; wait for the newest run's board."""
    await open_editor(user)
    user.find(kind=ui.tab, content="Play").click()
    panel = panel_of(user)
    await wait_for(lambda: panel.match is not None and not panel.thinking, LOAD)
    return panel


async def wait_for(condition, retries: int) -> None:
    for _ in range(retries):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


def stones(panel: PlayPanel) -> str:
    assert panel.match is not None
    return panel.match.game.format(panel.match.state)


# ----------------------------------------------------------------------------- the game, without a page
def test_a_click_plays_its_cell_in_tictactoe_and_its_column_in_connect4():
    assert [move_at(TTT, cell) for cell in (0, 4, 8)] == [0, 4, 8]
    assert [move_at(C4, cell) for cell in (3, 3 + 7, 3 + 5 * 7, 6, 41)] == [3, 3, 3, 6, 6]
    match = Match(C4, X, C4.initial())
    assert match.play(move_at(C4, 3)) == 5 * 7 + 3  # a click on the top cell drops the stone to the bottom
    assert match.play(move_at(C4, 10)) == 4 * 7 + 3


def test_a_match_says_whose_move_and_who_won():
    match = Match(TTT, O, TTT.parse("xx.oo...."))
    assert match.agent_to_move() and match.outcome() is None
    match.play(2)
    assert match.outcome() == "agent" and not match.agent_to_move()
    with pytest.raises(GameError, match="the game is over"):
        match.play(5)
    assert TTT.format(match.state) == "xxxoo...."


async def test_without_a_game_run_the_panel_says_how_to_make_one(user: User):
    await open_editor(user)
    user.find(kind=ui.tab, content="Play").click()
    await user.should_see("No game runs yet", retries=SLOW)
    assert panel_of(user).match is None and not panel_of(user).cells


# ----------------------------------------------------------------------------- against a trained run
@pytest.mark.slow
async def test_a_move_gets_the_agents_answer_with_its_probabilities_and_value(user: User, workspace, trained_runs):
    run_dir = add_run(workspace, trained_runs, "tictactoe")
    panel = await open_play(user)
    assert panel.opponent is not None and panel.opponent.inferencer.alive
    assert panel.opponent.run.path == run_dir and panel.simulations.value == 8  # the run's own count
    await user.should_see("Your move: you play x; click a cell.")
    user.find("play-cell-4").click()
    await wait_for(lambda: stones(panel).count("o") == 1, THINK)
    assert stones(panel)[4] == "x"
    answer = panel.match.answer
    assert answer is not None and stones(panel)[answer.move] == "o"
    assert answer.probabilities[4] == 0 and abs(answer.probabilities.sum() - 1) < 1e-6
    shares = [next(iter(user.find(f"play-share-{i}").elements)).text for i in range(9)]
    assert shares[4] == "" and shares[answer.move] == f"{answer.probabilities[answer.move]:.0%}"
    assert all(text.endswith("%") for i, text in enumerate(shares) if answer.probabilities[i] > 0)
    await user.should_see(f"The agent (o) played cell {answer.move}; its value of the position it moved in: "
                          f"{answer.value:+.2f}")
    await user.should_see("Your move: you play x; click a cell.")
    stats = panel.opponent.inferencer.stats()
    assert stats["samples"] >= 1  # the answer's evaluations went through the Inferencer


@pytest.mark.slow
async def test_a_muzero_run_plays_through_its_served_networks(user: User, workspace, trained_runs):
    run_dir = add_run(workspace, trained_runs, "muzero_tictactoe")
    panel = await open_play(user)
    assert panel.opponent is not None and panel.opponent.run.path == run_dir and panel.opponent.run.task == "muzero"
    await user.should_see("Your move: you play x; click a cell.")
    user.find("play-cell-0").click()
    await wait_for(lambda: stones(panel).count("o") == 1, THINK)
    answer = panel.match.answer
    assert answer is not None and answer.move != 0 and stones(panel)[answer.move] == "o"
    assert answer.probabilities[0] == 0 and abs(answer.probabilities.sum() - 1) < 1e-6
    assert panel.opponent.inferencer.stats()["samples"] >= 1  # its search's inferences went through the Inferencer


@pytest.mark.slow
async def test_an_illegal_click_is_refused_and_leaves_the_board(user: User, workspace, trained_runs, monkeypatch):
    add_run(workspace, trained_runs, "tictactoe")
    panel = await open_play(user)
    user.find("play-cell-0").click()
    await wait_for(lambda: stones(panel).count("o") == 1, THINK)
    before = stones(panel)
    user.find("play-cell-0").click()  # occupied
    await user.should_see("tictactoe: move 0 is illegal: cell 0 is taken")
    assert stones(panel) == before

    # the agent's next search waits for the gate: clicks come while it thinks
    gate, search = threading.Event(), panel.opponent.answer
    monkeypatch.setattr(panel.opponent, "answer", lambda state, n: gate.wait(60) and search(state, n))
    free = [i for i, ch in enumerate(before) if ch == "."]
    user.find(f"play-cell-{free[0]}").click()
    await wait_for(lambda: panel.thinking, THINK)
    thinking = stones(panel)
    user.find(f"play-cell-{free[1]}").click()
    await user.should_see("The agent is thinking: wait for its move.")
    assert stones(panel) == thinking and not panel.new_button.enabled and not panel.run_select.enabled
    gate.set()
    await wait_for(lambda: not panel.thinking, THINK)
    assert stones(panel).count("o") == 2 and panel.new_button.enabled

    while panel.match.outcome() is None:  # play on, the first free cell each time, to the end
        user.find(f"play-cell-{stones(panel).index('.')}").click()
        moves = stones(panel).count(".")
        await wait_for(lambda m=moves: stones(panel).count(".") < m and not panel.thinking, THINK)
    ended = stones(panel)
    await user.should_see({"user": "You won.", "agent": "The agent won.", "draw": "A draw."}[panel.match.outcome()])
    user.find("play-cell-0").click()
    await user.should_see("the game is over")
    assert stones(panel) == ended
    user.find("play-new").click()
    await wait_for(lambda: stones(panel) == "." * 9, SLOW)
    await user.should_see("Your move")


@pytest.mark.slow
async def test_the_agent_can_open_and_connect4_plays_the_clicked_column(user: User, workspace, trained_runs):
    add_run(workspace, trained_runs, "connect4")
    panel = await open_play(user)
    assert panel.match.game is C4 and len(panel.cells) == 42
    panel.first.value = "agent"  # the user's choice in the toggle
    await wait_for(lambda: panel.match.user == O and stones(panel).count("x") == 1, THINK)
    opening = panel.match.answer
    assert stones(panel)[5 * 7 + opening.move] == "x"  # at the bottom of the column it chose
    column_shares = [next(iter(user.find(f"play-share-{c}").elements)).text for c in range(7)]
    assert column_shares[opening.move] == f"{opening.probabilities[opening.move]:.0%}"
    column = (opening.move + 1) % 7
    user.find(f"play-cell-{column}").click()  # the top cell of a column: the stone falls to its bottom
    await wait_for(lambda: stones(panel).count("x") == 2, THINK)
    assert stones(panel)[5 * 7 + column] == "o"
    await user.should_see("click a column")


@pytest.mark.slow
async def test_choosing_another_run_or_closing_the_page_closes_the_workers_of_runs(user: User, workspace, trained_runs):
    first = add_run(workspace, trained_runs, "tictactoe")
    second = add_run(workspace, trained_runs, "connect4")
    panel = await open_play(user)
    shown = panel.opponent
    assert shown is not None
    other = first if shown.run.path == second else second
    panel.run_select.value = str(other)
    await wait_for(lambda: panel.opponent is not None and panel.opponent.run.path == other
                   and panel.match is not None, LOAD)
    assert not shown.inferencer.alive
    assert len(panel.cells) == (9 if other == first else 42)
    serving = panel.opponent.inferencer
    user.client.delete()  # the page is gone (its tab closed): its worker goes too
    assert panel.opponent is None and not serving.alive


@pytest.mark.slow
async def test_a_run_whose_weights_cannot_be_read_is_one_line_and_no_board(user: User, workspace, trained_runs):
    run_dir = add_run(workspace, trained_runs, "tictactoe")
    (run_dir / "last.pt").write_bytes(b"not a checkpoint")
    await open_editor(user)
    user.find(kind=ui.tab, content="Play").click()
    await user.should_see(f"Cannot play {run_dir.name}: error: {run_dir / 'last.pt'}: cannot read the checkpoint",
                          retries=LOAD)
    panel = panel_of(user)
    assert panel.opponent is None and panel.match is None and not panel.cells and panel.run_select.enabled
    assert "\n" not in panel.status.text
