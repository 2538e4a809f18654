"""The Training and Runs panels in a real headless Chromium at 1600x1000, with real clicks: the
Train panel's controls fit the screen, and a job started in one tab is stopped from another
after a reload. Failures leave a screenshot in screenshots/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser_marks import BROWSER
from selenium.webdriver import ActionChains
from selenium.webdriver.common.by import By

import app.main  # noqa: F401  (imported here, so that the server thread that runs it starts in time)
from app.editor import EDITORS, Editor
from app.jobs import JOBS

pytestmark = BROWSER
WIDTH, HEIGHT = 1600, 1000
SHOTS = Path("screenshots")
TRAIN_CONTROLS = ("train-start", "train-stop", "train-status", "train-progress", "train-chart")


@pytest.fixture
def screen(workspace, screen):
    """NiceGUI's screen at 1600x1000 (the viewport itself, whatever the window's frame), serving
    ``workspace``; training jobs left running are ended."""
    full_view(screen)
    JOBS.forget_ended()  # the server is shared by the tests: start each without the jobs of others
    yield screen
    for tracked in JOBS.active():
        tracked.job.kill()
        tracked.job.join(10)
    JOBS.pump()
    JOBS.forget_ended()


def full_view(screen) -> None:
    """A 1600x1000 view in the current browser tab (each new tab needs it again)."""
    screen.selenium.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})


def editor() -> Editor:
    """The editor of the page opened last (the server runs in this process)."""
    return list(EDITORS.values())[-1]


def marked(mark: str) -> list:
    """The newest page's elements that NiceGUI's ``.mark(mark)`` tagged."""
    return [e for e in list(editor().tabs.client.elements.values()) if mark in e._markers]


def by_marker(screen, mark: str):
    """The browser's element for the newest page's element marked ``mark``."""
    return screen.selenium.find_element(By.ID, f"c{marked(mark)[0].id}")


def click(screen, element) -> None:
    ActionChains(screen.selenium).move_to_element(element).pause(0.1).click().perform()


def tab(screen, label: str):
    """The drawer's tab ``label`` itself (its class list holds ``q-tab``; the tab bar's holds ``q-tabs``)."""
    return screen.selenium.find_element(
        By.XPATH, f'//div[contains(concat(" ", @class, " "), " q-tab ") and .//*[text()="{label}"]]')


def rect(screen, element) -> dict:
    return screen.selenium.execute_script("return arguments[0].getBoundingClientRect().toJSON()", element)


def test_train_panel_shows_start_stop_status_progress_and_chart_together(screen, workspace):
    screen.open("/")
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, ".vue-flow__node"))
    click(screen, screen.find("Train"))  # the toolbar button opens the drawer on the Training panel
    screen.wait_for(lambda: by_marker(screen, "train-start").is_displayed())
    screen.wait(0.5)
    width, height = screen.selenium.execute_script("return [window.innerWidth, window.innerHeight]")
    assert (width, height) == (WIDTH, HEIGHT)
    for mark in TRAIN_CONTROLS:
        box = rect(screen, by_marker(screen, mark))
        assert box["height"] > 0 and box["width"] > 0, mark
        assert 0 <= box["top"] and box["bottom"] <= height and 0 <= box["left"] and box["right"] <= width, \
            f"{mark} lies outside the {width}x{height} view: {box}"
    SHOTS.mkdir(exist_ok=True)
    screen.selenium.save_screenshot(str(SHOTS / "train_panel_1600x1000.png"))


def test_a_job_started_in_one_tab_is_stopped_from_another_after_a_reload(screen, workspace):
    screen.open("/")
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, ".vue-flow__node"))
    click(screen, screen.find("Train"))
    screen.wait_for(lambda: by_marker(screen, "train-start").is_displayed())
    epochs = by_marker(screen, "train-epochs")  # (Quasar puts an input's id on the <input>)
    click(screen, epochs)
    epochs.clear()
    epochs.send_keys("500")
    click(screen, by_marker(screen, "train-start"))
    screen.wait_for(lambda: JOBS.latest("training") is not None)
    run = JOBS.latest("training")
    first = screen.selenium.current_window_handle

    screen.selenium.switch_to.new_window("tab")  # a second tab on the same server
    full_view(screen)
    screen.open("/")
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, ".vue-flow__node"))
    screen.selenium.refresh()  # and reloaded
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, ".vue-flow__node"))
    click(screen, tab(screen, "Runs"))
    row = f"run-stop-{run.run_dir.name}"
    deadline = time.monotonic() + 60
    while not marked(row):
        assert time.monotonic() < deadline, "the running job's row with its Stop button never showed"
        time.sleep(0.5)
    screen.wait(0.5)
    SHOTS.mkdir(exist_ok=True)
    screen.selenium.save_screenshot(str(SHOTS / "runs_panel_running.png"))
    click(screen, by_marker(screen, row))
    deadline = time.monotonic() + 120
    while not run.ended:
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(0.5)
    assert workspace.run(run.run_dir.name).status == "stopped"
    click(screen, tab(screen, "Training"))
    screen.should_contain("stopped")
    screen.selenium.switch_to.window(first)
    screen.should_contain("stopped")  # the first tab saw it stop too
