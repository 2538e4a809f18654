"""A 3,000-block graph in a real headless Chromium: only the blocks around the view are in the page,
dragging the pane with real pointer events brings others in, and an edit on a block far from the
view shows its new shapes once the view gets there. A screenshot of the zoomed-out overview goes to
the screenshots folder."""

from __future__ import annotations

import time

import pytest
from browser_marks import BROWSER, EMPTY_POINT, wait
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import app.main  # noqa: F401  (imported here, so that the server thread that runs it starts in time)
from app.editor import EDITORS
from graphcore.core.document import save
from graphcore.core.synthetic import residual_tower

pytestmark = BROWSER

NODES = ".vue-flow__node"
BLOCKS = 428  # residual blocks: 7 * 428 + 7 = 3,003 blocks
FLOW = "window.__netcanvasFlow"
CANVAS = "getElement(document.querySelector('.nc-canvas'))"


@pytest.fixture
def big(screen, tmp_path, monkeypatch):
    """The editor with a 3,003-block graph, at 100 % on its input block."""
    doc = residual_tower(BLOCKS)
    path = tmp_path / "tower.json"
    save(doc, path)
    monkeypatch.setenv("NETCANVAS_GRAPH", str(path))
    screen.selenium.set_window_size(1600, 1000)
    screen.open("/")
    screen.wait_for(lambda: screen.selenium.execute_script(f"return {FLOW}?.nodes.value.length") == len(doc.nodes))
    screen.wait(0.6)  # the first fit
    centre_on(screen, "x")
    return screen


def centre_on(screen, node_id: str) -> None:
    screen.selenium.execute_script(f"""
      const node = {FLOW}.findNode(arguments[0]);
      {FLOW}.setCenter(node.position.x + node.dimensions.width / 2, node.position.y + node.dimensions.height / 2,
                       {{zoom: 1}});""", node_id)
    screen.wait(0.3)


def drawn(screen) -> set[str]:
    return {e.get_attribute("data-id") for e in screen.selenium.find_elements(By.CSS_SELECTOR, NODES)}


def shapes(screen, node_id: str) -> str:
    return screen.selenium.find_element(By.CSS_SELECTOR, f'{NODES}[data-id="{node_id}"] .nc-shape').get_attribute(
        "textContent")


def drag_pane(screen, dx: int, dy: int) -> None:
    """Drag the empty pane by (dx, dy) pixels with real pointer events, in small steps."""
    start = screen.selenium.execute_script(EMPTY_POINT)
    assert start is not None, "no empty pane to drag"
    builder = ActionBuilder(screen.selenium, duration=40)
    builder.pointer_action.move_to_location(*start)
    builder.pointer_action.pointer_down()
    for i in range(1, 11):
        builder.pointer_action.move_to_location(start[0] + dx * i // 10, start[1] + dy * i // 10)
    builder.pointer_action.pointer_up()
    builder.perform()
    screen.wait(0.3)


def test_only_the_blocks_around_the_view_are_in_the_page(big):
    screen = big
    first = drawn(screen)
    assert "x" in first
    assert 0 < len(first) < 300  # of 3,003
    assert len(screen.selenium.find_elements(By.CSS_SELECTOR, ".vue-flow__edge")) < 400
    x_before = screen.selenium.execute_script(f"return {FLOW}.viewport.value.x")
    for _ in range(3):
        drag_pane(screen, -700, 0)
    assert screen.selenium.execute_script(f"return {FLOW}.viewport.value.x") < x_before - 1500
    later = drawn(screen)
    assert later - first, "panning brought no other block in"
    assert len(later) < 300
    # Every block in the page shows its output shape (those around the view too: Selenium's text is the
    # visible text, empty out of view).
    texts = [e.get_attribute("textContent") for e in screen.selenium.find_elements(By.CSS_SELECTOR, ".nc-shape")]
    assert texts and all(any(ch.isdigit() for ch in text) for text in texts)


def test_an_edit_far_from_the_view_shows_when_scrolled_to(big):
    screen = big
    assert "head" not in drawn(screen)
    before = screen.selenium.execute_script(f"return {FLOW}.findNode('head').data.shapes.out")
    screen.selenium.execute_script(f"{CANVAS}.sendEdit({{op: 'set_params', id: 'head', params: {{out_features: 7}}}})")
    screen.wait_for(lambda: screen.selenium.execute_script(f"return {FLOW}.findNode('head').data.shapes.out") != before)
    assert "head" not in drawn(screen)
    centre_on(screen, "head")
    screen.wait_for(lambda: "head" in drawn(screen))
    text = shapes(screen, "head")
    assert text == screen.selenium.execute_script(f"return {FLOW}.findNode('head').data.shapes.out")
    assert "7" in text and text != before


def test_zoomed_out_the_overview_draws_every_block_on_a_canvas(big):
    screen = big
    screen.selenium.execute_script(f"{CANVAS}.fit()")
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, ".nc-overview"))
    assert not drawn(screen)  # the boxes are on the canvas, not one element each
    screen.SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    screen.selenium.get_screenshot_as_file(str(screen.SCREENSHOT_DIR / "large-overview.png"))
    # Zooming in on a part of it brings the blocks back as elements, shapes and all.
    centre_on(screen, "b200_add")
    screen.wait_for(lambda: "b200_add" in drawn(screen))
    assert not screen.selenium.find_elements(By.CSS_SELECTOR, ".nc-overview")
    assert any(ch.isdigit() for ch in shapes(screen, "b200_add"))


def test_a_paste_longer_than_one_websocket_message_arrives_whole(big):
    """NiceGUI drops a message from the browser over 1 MB; the canvas sends a longer one in parts."""
    screen = big
    session = list(EDITORS.values())[-1].session
    edges = len(session.doc.edges)
    canvas = screen.selenium.find_element(By.CSS_SELECTOR, ".nc-canvas")
    canvas.send_keys(Keys.CONTROL, "a")
    canvas.send_keys(Keys.CONTROL, "c")
    # The 3,003 blocks copied are about 0.7 MB of JSON; labels such as users give blocks make it 1.7 MB.
    length = screen.selenium.execute_script("""
      const clip = JSON.parse(localStorage.getItem('netcanvas-clipboard'));
      clip.nodes.forEach((n, i) => { n.label = `block ${i}: ` + 'what this block is for, in words. '.repeat(10); });
      const text = JSON.stringify(clip);
      localStorage.setItem('netcanvas-clipboard', text);
      return [text.length, clip.edges.length];""")
    length, copied_edges = length
    assert length > 1_000_000 and copied_edges > 0
    canvas.send_keys(Keys.CONTROL, "v")
    # The server thread applies the paste's nodes, then its edges, while this thread reads the
    # document: wait for both, so that a read between the two is not taken for a lost part.
    wait(lambda: len(session.doc.nodes) == 2 * 3003 and len(session.doc.edges) == edges + copied_edges, 60)
    assert all(n.label and n.label.startswith("block ") for n in session.doc.nodes[3003:])
    assert screen.selenium.execute_script("return document.getElementById('too_long_message_popup').ariaHidden") in (
        "true", True)
    # The canvas draws what arrived; then the page is left, so that the browser is not still busy
    # with 6,006 blocks when the next test opens its page.
    started = time.monotonic()
    wait(lambda: canvas_count(screen) == 2 * 3003, 60)
    print(f"the canvas drew the paste {time.monotonic() - started:.1f} s after the document had it")
    screen.selenium.get("about:blank")


def canvas_count(screen) -> int | None:
    """How many blocks the canvas holds, or None while its page is too busy to answer."""
    try:
        return screen.selenium.execute_script(f"return {FLOW}?.nodes.value.length")
    except TimeoutException:
        return None
