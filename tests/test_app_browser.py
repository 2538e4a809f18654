"""The canvas in a real headless Chromium (NiceGUI's ``screen`` fixture, Debian's chromium and
chromium-driver): what only a browser can show. Failures leave a screenshot in screenshots/."""

from __future__ import annotations

import pytest
from browser_marks import BROWSER, clicked
from selenium.webdriver import ActionChains, ChromeOptions
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import app.main  # noqa: F401  (imported here, so that the server thread that runs it starts in time)
import blocks
from blocks import categories
from graphcore.core.document import GraphDoc, Node, dumps
from graphcore.editing.session import EditSession

pytestmark = BROWSER

NODES = ".vue-flow__node"
DROP = """
const [item, pane, x, y] = arguments;
const data = new DataTransfer();
item.dispatchEvent(new DragEvent('dragstart', {dataTransfer: data, bubbles: true}));
const box = pane.getBoundingClientRect();
const at = {dataTransfer: data, bubbles: true, cancelable: true, clientX: box.left + x, clientY: box.top + y};
pane.dispatchEvent(new DragEvent('dragover', at));
pane.dispatchEvent(new DragEvent('drop', at));
"""


@pytest.fixture(scope="session")
def nicegui_chrome_options(nicegui_chrome_options: ChromeOptions) -> ChromeOptions:
    """NiceGUI's options, in a window wide enough for palette, canvas and inspector."""
    nicegui_chrome_options.add_argument("window-size=1400,900")
    return nicegui_chrome_options


def node_count(screen) -> int:
    return len(screen.selenium.find_elements(By.CSS_SELECTOR, NODES))


def wait_nodes(screen, count: int) -> None:
    screen.wait_for(lambda: node_count(screen) == count)


def node(screen, node_id: str):
    return screen.selenium.find_element(By.CSS_SELECTOR, f'{NODES}[data-id="{node_id}"]')


def handle(screen, node_id: str, kind: str):
    return node(screen, node_id).find_element(By.CSS_SELECTOR, f".vue-flow__handle.{kind}")


def drop_block(screen, type_id: str, x: int, y: int) -> None:
    """Drag a block from the palette onto the canvas (HTML5 drag and drop, as the browser fires it)."""
    search = screen.selenium.find_element(By.CSS_SELECTOR, ".q-drawer--left input")
    search.send_keys(Keys.CONTROL, "a")
    search.send_keys(type_id)
    item = screen.selenium.find_element(
        By.XPATH, f"//div[contains(@class, 'nc-palette-item')][normalize-space() = '{type_id}']")
    screen.selenium.execute_script(DROP, item, screen.find_by_class("vue-flow__pane"), x, y)


def connect(screen, src: str, dst: str) -> None:
    ActionChains(screen.selenium).click_and_hold(handle(screen, src, "source")).pause(0.2) \
        .move_to_element(handle(screen, dst, "target")).pause(0.2).release().perform()


def edge_labels(screen) -> list[str]:
    labels = screen.selenium.find_elements(By.CSS_SELECTOR, ".vue-flow__edge-text")
    return [label.get_attribute("textContent") for label in labels]


def test_page_draws_the_template_with_shapes(screen):
    screen.open("/")
    wait_nodes(screen, 14)
    screen.should_contain("(N, 6, 28, 28)")
    screen.wait_for(lambda: "(N, 16, 5, 5)" in edge_labels(screen))


def test_drag_connect_wrong_wire_undo_and_reload(screen):
    screen.open("/")
    wait_nodes(screen, 14)
    screen.click("New")
    wait_nodes(screen, 0)
    drop_block(screen, "input", 80, 120)
    wait_nodes(screen, 1)
    drop_block(screen, "flatten", 380, 120)
    drop_block(screen, "conv2d", 380, 320)
    wait_nodes(screen, 3)
    assert "(N, 1, 28, 28)" in node(screen, "input_1").text

    connect(screen, "input_1", "flatten_1")  # an edge is labelled with the tensor it carries
    screen.wait_for(lambda: edge_labels(screen) == ["(N, 1, 28, 28)"])
    assert "(N, 784)" in node(screen, "flatten_1").text

    connect(screen, "flatten_1", "conv2d_1")
    screen.wait_for(lambda: "nc-error" in node(screen, "conv2d_1").find_element(By.CSS_SELECTOR, ".nc-node")
                    .get_attribute("class"))
    assert "expects a per-sample input (C, H, W), got (784)" in node(screen, "conv2d_1").text
    assert sorted(edge_labels(screen)) == ["(N, 1, 28, 28)", "(N, 784)"]

    screen.find_by_class("vue-flow__pane").click()
    screen.selenium.find_element(By.CSS_SELECTOR, ".nc-canvas").send_keys(Keys.CONTROL, "z")
    screen.wait_for(lambda: edge_labels(screen) == ["(N, 1, 28, 28)"])  # the wrong wire is gone
    assert "input port 'in' has no edge" in node(screen, "conv2d_1").text

    screen.wait(1.0)  # the autosave runs every half second
    screen.selenium.refresh()
    wait_nodes(screen, 3)
    screen.wait_for(lambda: edge_labels(screen) == ["(N, 1, 28, 28)"])
    assert "(N, 784)" in node(screen, "flatten_1").text


def test_inspector_edit_updates_the_canvas(screen):
    screen.open("/")
    wait_nodes(screen, 14)
    screen.find_by_class("vue-flow__pane")  # drawn
    node(screen, "c3").click()
    screen.should_contain("Out Channels")
    field = screen.selenium.find_element(By.CSS_SELECTOR, ".q-drawer--right input[type=number]")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("32")
    screen.wait_for(lambda: "(N, 32, 10, 10)" in node(screen, "c3").text)
    screen.wait_for(lambda: "(N, 800)" in edge_labels(screen))


def test_delete_key_removes_the_selection_and_undo_brings_it_back(screen):
    screen.open("/")
    wait_nodes(screen, 14)
    node(screen, "a3").click()
    screen.selenium.find_element(By.CSS_SELECTOR, ".nc-canvas").send_keys(Keys.DELETE)
    wait_nodes(screen, 13)
    screen.click("Undo")
    wait_nodes(screen, 14)
    screen.wait_for(lambda: "(N, 16, 10, 10)" in edge_labels(screen))


def test_context_menu_groups_a_node_and_double_click_opens_it(screen):
    screen.open("/")
    wait_nodes(screen, 14)
    ActionChains(screen.selenium).context_click(node(screen, "c3")).perform()
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, ".nc-menu-item"))
    items = [e.text for e in screen.selenium.find_elements(By.CSS_SELECTOR, ".nc-menu-item")]
    assert items == ["Rename…", "Duplicate", "Group into subgraph…", "Delete"]
    screen.selenium.find_element(By.CSS_SELECTOR, '.nc-menu-item[data-action="group"]').click()
    # The dialog's button (its name field is filled in: block_1), once the dialog has grown in.
    screen.wait_for(lambda: clicked(screen, "//div[contains(@class, 'q-dialog')]//button[normalize-space() = 'Group']"))
    wait_nodes(screen, 14)  # c3 became block_1
    screen.wait_for(lambda: "subgraph:block_1" in node(screen, "block_1").text)
    assert face_colours(screen, "a3") == (rgb(categories.get("activation").colour), "rgb(255, 255, 255)")
    # The dialog fades out over the canvas: double-clicking before it is gone hits its backdrop.
    screen.wait_for(lambda: not screen.selenium.find_elements(By.CSS_SELECTOR, ".q-dialog__backdrop"))
    # The group's last step: Python selects the new node on the canvas.
    screen.wait_for(lambda: "selected" in node(screen, "block_1").get_attribute("class"))
    assert face_colours(screen, "block_1")[1] == rgb(categories.get("subgraph").fill)  # its stripe: selected, blue
    # A synthetic dblclick: Selenium's two real clicks re-render the node (selection) in between,
    # so the browser sometimes saw two single clicks on two elements (1 run in 4 failed that way).
    screen.selenium.execute_script(
        "arguments[0].dispatchEvent(new MouseEvent('dblclick', {bubbles: true, cancelable: true}))",
        node(screen, "block_1"))
    wait_nodes(screen, 3)  # inside: its input, c3, its output
    assert "(N, 16, 10, 10)" in node(screen, "c3").text
    screen.click("Close")
    wait_nodes(screen, 14)


def every_category_graph() -> tuple[GraphDoc, dict[str, str]]:
    """A graph with a block of every category (plus a subgraph and an unknown type), and the
    category of each node."""
    session = EditSession(GraphDoc(name="categories"))
    for category in categories.CATEGORIES:
        spec = next((s for s in blocks.all_specs() if s.category == category.name), None)
        if spec is not None:
            n = len(session.doc.nodes)
            session.add_node(spec.type, node_id=f"a_{category.name}", position=(n % 5 * 260, n // 5 * 160))
    session.add_node("relu", node_id="grouped", position=(0, 480))
    session.group(["grouped"], "inner")
    session.doc.nodes.append(Node(id="typo", type="conv3"))  # a type no spec declares
    session.doc.ui["positions"]["typo"] = [260, 480]
    session = EditSession(session.doc)  # placed and analysed afresh, with the unknown node
    return session.doc, {nid: session.node_view(nid)["category"] for nid in session.analysis.nodes}


def test_every_category_is_drawn_in_its_own_colour(screen, tmp_path):
    doc, category_of = every_category_graph()
    assert set(category_of.values()) == set(categories.names())
    path = tmp_path / "categories.json"
    path.write_text(dumps(doc))
    screen.open("/")
    wait_nodes(screen, 14)
    screen.click("Open")
    screen.wait_for(lambda: screen.selenium.find_elements(By.CSS_SELECTOR, ".q-dialog input[type=file]"))
    screen.selenium.find_element(By.CSS_SELECTOR, ".q-dialog input[type=file]").send_keys(str(path))
    wait_nodes(screen, len(category_of))
    screen.click("Fit")
    for node_id, name in category_of.items():  # (each is red too: no block here has its input)
        assert face_colours(screen, node_id)[0] == rgb(categories.get(name).colour), (node_id, name)
    screen.wait(0.5)  # the fit's animation: the closing screenshot shows every node


def face_colours(screen, node_id: str) -> tuple[str, str]:
    """A node's stripe and background colours, as the browser computed them."""
    face = node(screen, node_id).find_element(By.CSS_SELECTOR, ".nc-node")
    return tuple(screen.selenium.execute_script(
        "const s = getComputedStyle(arguments[0]); return [s.borderLeftColor, s.backgroundColor];", face))


def rgb(colour: str) -> str:
    """``#rrggbb`` as the browser's computed style writes it."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"
