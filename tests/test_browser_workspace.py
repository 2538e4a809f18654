"""The workspace in a real headless Chromium at 1600x1000, with real input events: a reload brings
back what the tab opened and its pan and zoom, Ctrl+S saves into the workspace (and clears the
title's unsaved mark), a closed tab's unsaved graph comes back in the next new tab, and a big graph
with imported weights comes back quickly. Screenshots go to screenshots/ (NiceGUI's folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_marks import BROWSER, clicked, wait
from selenium.webdriver import ActionChains, ChromeOptions
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import app.main  # noqa: F401  (imported here, so that the server thread that runs it starts in time)
import graphcore as gc
from app.editor import EDITORS, WEIGHTS
from graphcore.core.diagnostics import GraphError
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
    # Clicked once the dialog's opening animation lets the card take the click.
    wait(lambda: clicked(screen, "//div[contains(@class, 'q-dialog')]//div[normalize-space() = 'vgg11']"))
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
    screen.selenium.refresh()
    wait(lambda: node_count(screen) == len(doc.nodes))
    editor = newest_editor()
    assert editor.weights is None and editor.has_imported_weights()  # not read to show the page...
    assert set(editor.imported_weights()) == set(gc.compile(doc).state_dict())  # ...but when needed
    shot(screen, "workspace_reload_300_nodes")


# --- drafts: a closed tab, the view, the unsaved mark -------------------------------------------

UNSAVED_MARK = "//header//div[normalize-space() = '•']"
VIEWPORT = """
const m = new DOMMatrixReadOnly(getComputedStyle(document.querySelector('.vue-flow__transformationpane')).transform);
return [m.e, m.f, m.a];
"""


def unsaved_mark_shows(screen) -> bool:
    return screen.selenium.find_element(By.XPATH, UNSAVED_MARK).is_displayed()


def viewport(screen) -> list[float]:
    """The canvas's pan and zoom as the browser draws them: [x, y, zoom]."""
    return screen.selenium.execute_script(VIEWPORT)


def stored_blocks(workspace: Workspace, draft_id: str) -> int | None:
    """How many blocks the draft on disk holds (None while it is not written)."""
    try:
        return workspace.load_draft(draft_id).payload["blocks"]
    except GraphError:
        return None


def server_viewport() -> list[float] | None:
    """The pan and zoom the canvas last reported to the server, as ``viewport`` reads them."""
    view = newest_editor().canvas.viewport
    return view and [view["x"], view["y"], view["zoom"]]


def pane(screen):
    return screen.selenium.find_element(By.CSS_SELECTOR, ".vue-flow__pane")


def test_closing_a_tab_loses_nothing(workspace: Workspace, screen):
    open_page(screen, 14)
    screen.wait(0.6)  # the first fit
    closing = newest_editor()
    screen.selenium.find_element(
        By.XPATH, "//div[contains(@class, 'nc-palette-item')][normalize-space() = 'conv2d']").click()
    wait(lambda: node_count(screen) == 15)
    wait(lambda: unsaved_mark_shows(screen))
    wait(lambda: stored_blocks(workspace, closing.draft_id) == 15)
    screen.switch_to(1)  # a second tab, then close the first one
    screen.switch_to(0)
    screen.selenium.close()
    screen.selenium.switch_to.window(screen.selenium.window_handles[0])
    wait(lambda: closing.client.tab_id is None)  # the server saw the tab go
    open_page(screen, 15)  # a new tab: the graph is back...
    screen.should_contain("Restored unsaved graph 'lenet5' from a closed tab")
    assert newest_editor().draft_id == closing.draft_id  # ...in the closed tab's draft, which it owns now
    assert any(n.type == "conv2d" for n in newest_editor().session.doc.nodes)
    assert unsaved_mark_shows(screen)
    shot(screen, "workspace_restored_from_a_closed_tab")


def test_reload_keeps_the_pan_and_zoom(workspace: Workspace, screen):
    open_page(screen, 14)
    screen.wait(0.6)  # the first fit
    fitted = viewport(screen)
    box = pane(screen).rect
    chain = ActionChains(screen.selenium).move_to_element_with_offset(
        pane(screen), round(-box["width"] / 2 + 40), round(-box["height"] / 2 + 40)).click_and_hold()
    for _ in range(5):
        chain.move_by_offset(40, 25).pause(0.05)
    chain.release().perform()
    ActionChains(screen.selenium).scroll_from_origin(ScrollOrigin.from_element(pane(screen)), 0, -240).perform()
    wait(lambda: server_viewport() == pytest.approx(viewport(screen), abs=0.01))  # the canvas has said
    moved = viewport(screen)
    assert abs(moved[0] - fitted[0]) > 50 and moved[2] > fitted[2] * 1.05  # panned and zoomed in
    autosaved()
    wait(lambda: workspace.load_draft(newest_editor().draft_id).payload["viewport"] == newest_editor().canvas.viewport)
    screen.selenium.refresh()
    # Zoomed in, the blocks far enough out of view are not in the page: the canvas holds all 14.
    wait(lambda: screen.selenium.execute_script("return window.__netcanvasFlow?.nodes.value.length") == 14)
    wait(lambda: node_count(screen) > 0)
    screen.wait(0.6)  # as long as a fit would take
    assert viewport(screen) == pytest.approx(moved, abs=1.0)  # within a pixel (and the zoom to 1/1000)
    shot(screen, "workspace_reload_keeps_the_view")


def test_the_unsaved_mark_shows_after_an_edit_and_clears_on_save(workspace: Workspace, screen):
    open_page(screen, 14)
    screen.wait(0.6)
    assert not unsaved_mark_shows(screen)
    block = screen.selenium.find_element(By.CSS_SELECTOR, f'{NODES}[data-id="c1"]')
    chain = ActionChains(screen.selenium).click_and_hold(block)
    for _ in range(4):
        chain.move_by_offset(15, 20).pause(0.05)
    chain.release().perform()
    wait(lambda: unsaved_mark_shows(screen))
    ActionChains(screen.selenium).click(pane(screen)).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL) \
        .perform()
    field = screen.selenium.find_element(By.CSS_SELECTOR, ".q-dialog input")
    wait(lambda: field.get_attribute("value") == "lenet5")
    field.send_keys(Keys.ENTER)
    wait(lambda: (workspace.graphs_dir / "lenet5.json").is_file())
    wait(lambda: not unsaved_mark_shows(screen))
    assert title(screen) == "lenet5"
