"""The canvas's everyday gestures in a real headless Chromium at 1600x1000, with real input events
(Selenium's ActionChains: clicks, shift-drags, right- and double-clicks, keys): a palette click
lands in view, pastes step aside, a box selection takes right- and double-clicks, ``?`` lists the
shortcuts, and the palette's tooltip tells a block's ports and params. Screenshots of the tooltip,
the shortcut list and the menu of a box selection go to the screenshots folder."""

from __future__ import annotations

import pytest
from browser_marks import BROWSER, clicked
from selenium.webdriver import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import app.main  # noqa: F401  (imported here, so that the server thread that runs it starts in time)

pytestmark = BROWSER

NODES = ".vue-flow__node"
WIDTH, HEIGHT = 1600, 1000


@pytest.fixture
def page(screen):
    """The editor with lenet5 (14 blocks), in a page of 1600x1000 (the window a bit larger, for its frame)."""
    screen.selenium.set_window_size(WIDTH, HEIGHT)
    frame = screen.selenium.execute_script("return [outerWidth - innerWidth, outerHeight - innerHeight]")
    screen.selenium.set_window_size(WIDTH + frame[0], HEIGHT + frame[1])
    screen.open("/")
    assert screen.selenium.execute_script("return [innerWidth, innerHeight]") == [WIDTH, HEIGHT]
    screen.wait_for(lambda: len(nodes(screen)) == 14)
    screen.wait(0.6)  # the first fit
    return screen


def nodes(screen) -> dict:
    return {e.get_attribute("data-id"): e for e in screen.selenium.find_elements(By.CSS_SELECTOR, NODES)}


def node(screen, node_id: str):
    return screen.selenium.find_element(By.CSS_SELECTOR, f'{NODES}[data-id="{node_id}"]')


def middle(element) -> tuple[float, float]:
    box = element.rect
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def on_top(screen, element) -> bool:
    """Whether the element's middle is what the browser shows there (not hidden under a drawer)."""
    x, y = middle(element)
    return screen.selenium.execute_script(
        "const hit = document.elementFromPoint(arguments[1], arguments[2]);"
        "return hit !== null && arguments[0].contains(hit);", element, x, y)


def shot(screen, name: str) -> None:
    screen.SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = screen.SCREENSHOT_DIR / f"canvas-fixes-{name}.png"
    screen.selenium.get_screenshot_as_file(str(path))
    print(f"screenshot: {path}")


def keys(screen, *sequence: str) -> None:
    """Type into whatever has the focus, as a user would."""
    ActionChains(screen.selenium).send_keys(*sequence).perform()


def pane(screen):
    return screen.selenium.find_element(By.CSS_SELECTOR, ".vue-flow__pane")


def move_to(chain: ActionChains, screen, x: float, y: float) -> ActionChains:
    """Move the pointer to page point (x, y) (Selenium's offsets are from the pane's middle)."""
    cx, cy = middle(pane(screen))
    return chain.move_to_element_with_offset(pane(screen), round(x - cx), round(y - cy))


def box_select(screen, ids: list[str]) -> None:
    """Shift-drag a box around some nodes, starting on the empty pane."""
    boxes = [node(screen, i).rect for i in ids]
    x0 = min(b["x"] for b in boxes) - 12
    y0 = min(b["y"] for b in boxes) - 12
    x1 = max(b["x"] + b["width"] for b in boxes) + 12
    y1 = max(b["y"] + b["height"] for b in boxes) + 12
    chain = ActionChains(screen.selenium).key_down(Keys.SHIFT)
    move_to(chain, screen, x0, y0).click_and_hold()
    for _ in range(5):
        chain.move_by_offset(round((x1 - x0) / 5), round((y1 - y0) / 5)).pause(0.05)
    chain.release().key_up(Keys.SHIFT).perform()


def selected(screen) -> set[str]:
    return {i for i, e in nodes(screen).items() if "selected" in e.get_attribute("class")}


def menu_items(screen) -> list[str]:
    return [e.text for e in screen.selenium.find_elements(By.CSS_SELECTOR, ".nc-menu-item")]


def group_from_the_menu(screen, node_id: str) -> str:
    """Right-click a node, Group, accept the dialog's name: the subgraph node's id."""
    ActionChains(screen.selenium).context_click(node(screen, node_id)).perform()
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, '.nc-menu-item[data-action="group"]'))
    screen.selenium.find_element(By.CSS_SELECTOR, '.nc-menu-item[data-action="group"]').click()
    button = '//div[contains(@class, "q-dialog")]//button[normalize-space() = "Group"]'
    screen.wait_for(lambda: clicked(screen, button))
    screen.wait_for(lambda: "block_1" in nodes(screen))
    screen.wait_for(lambda: not screen.selenium.find_elements(By.CSS_SELECTOR, ".q-dialog__backdrop"))
    return "block_1"


def test_a_palette_click_adds_the_block_in_the_middle_of_the_view(page):
    screen = page
    # Pan first: the block must follow the view, not the graph's origin.
    start = middle(pane(screen))
    chain = move_to(ActionChains(screen.selenium), screen, start[0] + 300, start[1] - 200).click_and_hold()
    for _ in range(5):
        chain.move_by_offset(-60, 50).pause(0.05)
    chain.release().perform()
    screen.wait(0.5)  # the view reports its new centre
    search = screen.selenium.find_element(By.CSS_SELECTOR, ".q-drawer--left input")
    search.send_keys("groupnorm")
    screen.selenium.find_element(
        By.XPATH, "//div[contains(@class, 'nc-palette-item')][normalize-space() = 'groupnorm']").click()
    screen.wait_for(lambda: "groupnorm_1" in nodes(screen))
    added = node(screen, "groupnorm_1")
    assert on_top(screen, added)  # drawn in view, over no drawer
    box = screen.selenium.find_element(By.CSS_SELECTOR, ".nc-canvas").rect
    x, y = middle(added)
    assert abs(x - (box["x"] + box["width"] / 2)) < 120 and abs(y - (box["y"] + box["height"] / 2)) < 120


def test_pasting_twice_gives_three_places(page):
    screen = page
    node(screen, "c1").click()
    screen.wait_for(lambda: selected(screen) == {"c1"})
    canvas = screen.selenium.find_element(By.CSS_SELECTOR, ".nc-canvas")
    canvas.send_keys(Keys.CONTROL, "c")
    canvas.send_keys(Keys.CONTROL, "v")
    screen.wait_for(lambda: "c1_1" in nodes(screen))
    canvas.send_keys(Keys.CONTROL, "v")
    screen.wait_for(lambda: "c1_2" in nodes(screen))
    places = [middle(node(screen, i)) for i in ("c1", "c1_1", "c1_2")]
    assert len(set(places)) == 3
    for (ax, ay), (bx, by) in zip(places, places[1:]):
        assert bx - ax >= 20 and by - ay >= 20  # each copy a step down and right of the last


def test_a_box_selection_takes_right_click_and_double_click(page):
    screen = page
    subgraph = group_from_the_menu(screen, "c3")
    screen.find_by_class("vue-flow__pane").click()  # nothing selected
    box_select(screen, ["a3", subgraph])
    screen.wait_for(lambda: selected(screen) == {"a3", subgraph})
    assert screen.selenium.find_elements(By.CSS_SELECTOR, ".vue-flow__nodesselection-rect")  # the overlay is there
    assert screen.selenium.execute_script("return getSelection().toString()") == ""  # no page text highlighted

    ActionChains(screen.selenium).context_click(node(screen, "a3")).perform()
    screen.wait_for(lambda: menu_items(screen))
    assert menu_items(screen) == ["Duplicate 2 blocks", "Group 2 blocks…", "Delete 2 blocks"]
    menu = screen.selenium.find_element(By.CSS_SELECTOR, ".nc-menu").rect
    canvas = screen.selenium.find_element(By.CSS_SELECTOR, ".nc-canvas").rect
    assert menu["x"] + menu["width"] <= canvas["x"] + canvas["width"]  # whole, not under the inspector
    assert menu["y"] + menu["height"] <= canvas["y"] + canvas["height"]
    shot(screen, "box-selection-menu")
    keys(screen, Keys.ESCAPE)
    screen.wait_for(lambda: not menu_items(screen))

    box_select(screen, ["a3", subgraph])
    screen.wait_for(lambda: selected(screen) == {"a3", subgraph})
    ActionChains(screen.selenium).double_click(node(screen, subgraph)).perform()
    screen.wait_for(lambda: len(nodes(screen)) == 3)  # inside: its input, c3, its output
    assert "c3" in nodes(screen)


def test_question_mark_lists_the_shortcuts(page):
    screen = page
    screen.find_by_class("vue-flow__pane").click()
    keys(screen, "?")
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, ".nc-keys"))
    text = screen.selenium.find_element(By.CSS_SELECTOR, ".nc-keys").text
    for shortcut in ("Shift + drag", "Ctrl + V", "Ctrl + Z", "Right-click a block", "Double-click a subgraph"):
        assert shortcut in text
    shot(screen, "shortcuts")
    keys(screen, Keys.ESCAPE)
    screen.wait_for(lambda: not screen.selenium.find_elements(By.CSS_SELECTOR, ".nc-keys"))
    search = screen.selenium.find_element(By.CSS_SELECTOR, ".q-drawer--left input")
    search.send_keys("?")  # typed into a field, a question mark is only a character
    screen.wait(0.3)
    assert not screen.selenium.find_elements(By.CSS_SELECTOR, ".nc-keys")


def palette_items(screen) -> list[str]:
    return [e.text for e in screen.selenium.find_elements(By.CSS_SELECTOR, ".nc-palette-item")]


def test_the_palette_search_filters_in_the_page_and_opens_the_sections(page):
    screen = page
    assert "conv2d" in palette_items(screen) and "tanh" not in palette_items(screen)  # Activations is closed
    search = screen.selenium.find_element(By.CSS_SELECTOR, ".q-drawer--left input")
    search.send_keys("tanh")  # a block's name or a word of its doc: mish's mentions tanh
    screen.wait_for(lambda: palette_items(screen) == ["mish", "tanh"])  # their section opens while searching
    assert not screen.selenium.find_elements(By.CSS_SELECTOR, '[data-section="conv"]')  # no match: hidden
    search.send_keys(Keys.CONTROL, "a")
    search.send_keys(Keys.BACKSPACE)
    screen.wait_for(lambda: "conv2d" in palette_items(screen) and "tanh" not in palette_items(screen))
    screen.selenium.find_element(By.XPATH, "//div[contains(@class, 'q-item')][normalize-space() = 'Activations']") \
        .click()
    screen.wait_for(lambda: "tanh" in palette_items(screen))


def test_the_palette_tooltip_tells_ports_and_params(page):
    screen = page
    search = screen.selenium.find_element(By.CSS_SELECTOR, ".q-drawer--left input")
    search.send_keys("conv2d")
    item = screen.selenium.find_element(
        By.XPATH, "//div[contains(@class, 'nc-palette-item')][normalize-space() = 'conv2d']")
    ActionChains(screen.selenium).move_to_element(item).perform()
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, ".q-tooltip"))
    tip = screen.selenium.find_element(By.CSS_SELECTOR, ".q-tooltip")
    screen.wait(0.4)  # its fade-in, for the screenshot
    for line in ("2-D convolution", "inputs: in: float", "outputs: out: float", "out_channels = 16 (≥ 1)"):
        assert line in tip.text
    assert tip.rect["x"] >= item.rect["x"] + item.rect["width"] - 4  # beside the palette, not over it
    shot(screen, "tooltip")


def test_the_input_shape_shows_in_the_inspector_and_takes_1x32x32(page):
    screen = page
    node(screen, "x").click()
    field = '.q-drawer--right input[aria-label="Shape"]'
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, field))
    shape = screen.selenium.find_element(By.CSS_SELECTOR, field)
    assert shape.get_attribute("value") == "1, 28, 28"
    shape.send_keys(Keys.CONTROL, "a")
    shape.send_keys("1x32x32", Keys.ENTER)
    screen.wait_for(lambda: "(N, 1, 32, 32)" in node(screen, "x").text)
    shape.send_keys(Keys.CONTROL, "a")
    shape.send_keys("1x32xa", Keys.ENTER)
    screen.should_contain("cannot read '1x32xa': write 1x28x28, 1,28,28, 1 28 28 or [1, 28, 28]")
