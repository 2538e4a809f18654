"""The Play panel in a real headless Chromium at 1600x1000: the user's click on a tic-tac-toe cell
gets the trained agent's answer with its probabilities drawn on the board, and a click on an
occupied cell is refused, against an AlphaZero and a MuZero run. The screenshots are kept in
screenshots/play_panel_RUN.png."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_marks import BROWSER, wait
from selenium.webdriver.common.by import By
from test_app_play import add_run, trained_runs  # noqa: F401  (a fixture: the session's short runs)
from test_browser_runs import SHOTS, by_marker, click, editor, full_view, tab

import app.main  # noqa: F401  (imported here, so that the server thread that runs it starts in time)

pytestmark = BROWSER
LOAD_SECONDS = 90  # the run's network reaching a fresh inference worker, on a busy machine


@pytest.fixture
def screen(workspace, screen):
    """NiceGUI's screen at 1600x1000, serving ``workspace``; the Play panels' workers are closed after."""
    full_view(screen)
    yield screen
    editor().play_panel.close()


def cell_text(screen, index: int) -> str:
    """What the cell shows: its stone (X, O) over the agent's probability of it (a percentage)."""
    return by_marker(screen, f"play-cell-{index}").text


def stones(screen) -> str:
    """The board as the page draws it, as a position string (row-major x, o and .)."""
    return "".join({"X": "x", "O": "o"}.get(cell_text(screen, i)[:1], ".") for i in range(9))


@pytest.mark.parametrize("run", ["tictactoe", "muzero_tictactoe"])  # an AlphaZero run, a MuZero run
def test_a_click_on_the_board_gets_the_agents_answer_and_an_occupied_cell_is_refused(screen, workspace, run,
                                                                                    trained_runs):  # noqa: F811
    add_run(workspace, trained_runs, run)
    screen.open("/")
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, ".vue-flow__node"))
    click(screen, tab(screen, "Play"))
    panel = editor().play_panel
    wait(lambda: panel.match is not None and not panel.thinking, LOAD_SECONDS)
    screen.should_contain("Your move: you play x; click a cell.")

    click(screen, by_marker(screen, "play-cell-4"))  # a real click on the centre
    wait(lambda: stones(screen).count("o") == 1, LOAD_SECONDS)
    answer = panel.match.answer
    assert stones(screen) == "".join("o" if i == answer.move else "x" if i == 4 else "." for i in range(9))
    shown = by_marker(screen, f"play-share-{answer.move}").text
    assert shown == f"{answer.probabilities[answer.move]:.0%}"
    shaded = screen.selenium.execute_script(
        "return getComputedStyle(arguments[0]).backgroundColor", by_marker(screen, f"play-cell-{answer.move}"))
    assert shaded.startswith("rgba(37, 99, 235"), shaded  # the agent's probability as a shade
    screen.should_contain(f"The agent (o) played cell {answer.move}")

    click(screen, by_marker(screen, "play-cell-4"))  # occupied: refused, the board unchanged
    screen.should_contain("tictactoe: move 4 is illegal: cell 4 is taken")
    assert stones(screen) == panel.match.game.format(panel.match.state) and stones(screen).count(".") == 7
    Path(SHOTS).mkdir(exist_ok=True)
    screen.selenium.save_screenshot(str(SHOTS / f"play_panel_{run}.png"))
