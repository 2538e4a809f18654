"""The workspace in a real headless Chromium at 1600x1000, with real input events: a reload brings
back what the tab opened, Ctrl+S saves into the workspace, and a big graph with imported weights
comes back quickly. Screenshots go to screenshots/ (NiceGUI's folder)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from browser_marks import BROWSER
from selenium.webdriver import ActionChains, ChromeOptions
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import app.main  # noqa: F401  (imported here, so that the server thread that runs it starts in time)
import graphcore as gc
from app.editor import EDITORS, WEIGHTS
from graphcore.core.document import dumps, save
from graphcore.core.synthetic import residual_tower
from graphcore.runtime.workspace import Workspace

pytestmark = BROWSER
WIDTH, HEIGHT = 1600, 1000
NODES = ".vue-flow__node"
SCREENSHOTS = Path("screenshots")


@pytest.fixture(scope="session")
def nicegui_chrome_options(nicegui_chrome_options: ChromeOptions) -> ChromeOptions:
    nicegui_chrome_options.add_argument(f"window-size={WIDTH},{HEIGHT}")
    return nicegui_chrome_options


def wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for ``condition`` (a worker thread opens documents: the screen's 4 s can be short here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met")


def node_count(screen) -> int:
    return len(screen.selenium.find_elements(By.CSS_SELECTOR, NODES))


def title(screen) -> str:
    return screen.selenium.find_element(By.CSS_SELECTOR, ".q-header .cursor-pointer").text


def shot(screen, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    screen.selenium.save_screenshot(str(path))
    return path


def open_page(screen, nodes: int) -> None:
    screen.open("/")
    screen.selenium.set_window_size(WIDTH, HEIGHT)  # the driver is shared by the session's tests
    wait(lambda: node_count(screen) == nodes)


def newest_editor():
    """The editor of the page opened last (older pages' editors may not be collected yet)."""
    return list(EDITORS.values())[-1]


def autosaved() -> None:
    """Wait for the editor's half-second autosave of everything a reload restores."""
    wait(lambda: newest_editor().saved_state == newest_editor().tab_state())


def test_reload_after_opening_a_template_keeps_it(workspace: Workspace, screen):
    open_page(screen, 14)
    vgg = len(gc.template("vgg11").nodes)
    screen.click("Templates")
    screen.wait(0.6)  # the dialog's opening animation: a click before its end misses the card
    card = screen.selenium.find_element(
        By.XPATH, "//div[contains(@class, 'q-dialog')]//div[normalize-space() = 'vgg11']")
    ActionChains(screen.selenium).move_to_element(card).click().perform()
    wait(lambda: node_count(screen) == vgg)
    assert title(screen) == "vgg11"
    autosaved()  # no edit after the load: the load itself is autosaved
    screen.selenium.refresh()
    wait(lambda: node_count(screen) == vgg)
    assert title(screen) == "vgg11"
    shot(screen, "workspace_reload_after_template")
    screen.click("Undo")  # a reload starts a new history: undo has nothing to take back
    assert title(screen) == "vgg11"


def test_ctrl_s_saves_in_the_workspace_and_new_then_undo_brings_the_graph_back(workspace: Workspace, screen):
    open_page(screen, 14)
    canvas = screen.selenium.find_element(By.CSS_SELECTOR, ".nc-canvas")
    ActionChains(screen.selenium).click(screen.find_by_class("vue-flow__pane")).key_down(Keys.CONTROL) \
        .send_keys("s").key_up(Keys.CONTROL).perform()
    field = screen.selenium.find_element(By.CSS_SELECTOR, ".q-dialog input")
    wait(lambda: field.get_attribute("value") == "lenet5")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("my net", Keys.ENTER)
    wait(lambda: (workspace.graphs_dir / "my net.json").is_file())
    wait(lambda: title(screen) == "my net")
    screen.click("New")
    wait(lambda: node_count(screen) == 0)
    wait(lambda: not screen.selenium.find_elements(By.CSS_SELECTOR, ".q-notification"), timeout=10)
    canvas.send_keys(Keys.CONTROL, "z")
    wait(lambda: node_count(screen) == 14)
    assert title(screen) == "my net"
    screen.click("Open")
    wait(lambda: "14 blocks" in screen.selenium.find_element(By.CSS_SELECTOR, ".q-dialog").text)
    shot(screen, "workspace_open_dialog")


DROP_FILE = """
const [pane, name, text] = arguments;
const data = new DataTransfer();
data.items.add(new File([text], name, {type: "application/json"}));
const box = pane.getBoundingClientRect();
const at = {dataTransfer: data, bubbles: true, cancelable: true, clientX: box.left + 200, clientY: box.top + 200};
pane.dispatchEvent(new DragEvent("dragover", at));
pane.dispatchEvent(new DragEvent("drop", at));
"""


def test_a_graph_file_dropped_on_the_canvas_opens(workspace: Workspace, screen):
    # Selenium cannot drag a file from the desktop: the drop carries a real File in a DataTransfer.
    open_page(screen, 14)
    doc = gc.template("autoencoder").model_copy(update={"name": "dropped"})
    screen.selenium.execute_script(DROP_FILE, screen.find_by_class("vue-flow__pane"), "mine.json", dumps(doc))
    wait(lambda: title(screen) == "dropped")
    wait(lambda: node_count(screen) == len(doc.nodes))
    screen.allowed_js_errors.append("status of 422")  # the failed upload, as the browser logs it
    screen.selenium.execute_script(DROP_FILE, screen.find_by_class("vue-flow__pane"), "notes.json", "{}")
    screen.should_contain("Cannot open notes.json")
    assert title(screen) == "dropped"


def test_reload_of_a_300_node_graph_keeps_its_imported_weights(workspace: Workspace, screen, monkeypatch):
    doc = residual_tower(42)  # 301 nodes
    key = "tower-301"
    workspace.save_weights(key, gc.compile(doc).state_dict())
    doc.ui[WEIGHTS] = key
    path = workspace.root / "tower.json"
    save(doc, path)
    monkeypatch.setenv("NETCANVAS_GRAPH", str(path))
    open_page(screen, len(doc.nodes))
    autosaved()
    wait(lambda: newest_editor().weights is not None)
    screen.selenium.refresh()
    wait(lambda: node_count(screen) == len(doc.nodes))
    wait(lambda: newest_editor().weights is not None)
    assert set(newest_editor().weights) == set(gc.compile(doc).state_dict())
    shot(screen, "workspace_reload_300_nodes")
