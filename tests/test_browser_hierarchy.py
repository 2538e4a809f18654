"""Modules drawn open and closed in a real headless Chromium, with real clicks: an imported ConvNeXt (the
zoo's, exported by torch's TorchScript exporter) opens collapsed by module; its expand control draws a
module's blocks in place and its frame's control closes it, and in every state each edge's label is the
shape that reaches the edge's end in the session; "Expand all to depth 2" survives a reload and "Collapse
all" brings the collapsed view back. The auto-layout runs in a Web Worker: a 1,000-node layout leaves the
page drawing frames; the U-Net template lays out as a U, either way. Screenshots go to the screenshots folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from browser_marks import BROWSER, wait
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver import ActionChains
from selenium.webdriver.common.by import By

import app.main  # noqa: F401  (imported here, so that the server thread that runs it starts in time)
import graphcore as gc
from app.editor import EDITORS, Editor
from blocks.shapes import shape_text
from graphcore.core.analysis import Analysis
from graphcore.core.document import save
from graphcore.core.subgraphs import SubgraphParams
from graphcore.core.synthetic import residual_tower

sys.path.insert(0, str(Path(__file__).parent))
import onnx_zoo  # noqa: E402

pytestmark = BROWSER

NODES = ".vue-flow__node"
WIDTH, HEIGHT = 1600, 1000
COLLAPSED = {"x", "features", "avgpool", "classifier", "_142"}  # the ConvNeXt's top level


@pytest.fixture(scope="module")
def convnext(tmp_path_factory) -> Path:
    """The zoo's ConvNeXt, exported and imported, as a graph file."""
    folder = tmp_path_factory.mktemp("convnext")
    doc, _ = gc.from_onnx(onnx_zoo.export("convnext", "legacy", folder / "convnext.onnx"))
    path = folder / "convnext.json"
    save(doc, path)
    return path


def open_graph(screen, monkeypatch, path: Path, blocks: int):
    monkeypatch.setenv("NETCANVAS_GRAPH", str(path))
    screen.open("/")
    screen.selenium.set_window_size(WIDTH, HEIGHT)
    wait(lambda: len(drawn(screen)) == blocks)
    return list(EDITORS.values())[-1]


def drawn(screen) -> list[str]:
    """The ids of the blocks in the page (read in one go: the canvas re-draws blocks as they come into view)."""
    return screen.selenium.execute_script(
        f"return [...document.querySelectorAll('{NODES}')].map(e => e.getAttribute('data-id'))")


def shot(screen, name: str) -> None:
    screen.SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = screen.SCREENSHOT_DIR / f"hierarchy-{name}.png"
    screen.selenium.get_screenshot_as_file(str(path))
    print(f"screenshot: {path}")


def click_toggle(screen, view_id: str, op: str) -> None:
    """Click a block's expand or collapse control (once the canvas has stopped re-drawing it: a fit
    brings blocks in and out of the page)."""
    def clicked() -> bool:
        try:
            button = screen.selenium.find_element(
                By.CSS_SELECTOR, f'{NODES}[data-id="{view_id}"] .nc-toggle[data-op="{op}"]')
            ActionChains(screen.selenium).move_to_element(button).click().perform()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True
    wait(clicked)


def menu(screen, button: str, item: str) -> None:
    """Click a toolbar button, then an item of the menu it opens."""
    screen.click(button)
    xpath = f"//div[contains(@class, 'q-item')][normalize-space()='{item}']"
    wait(lambda: bool(screen.selenium.find_elements(By.XPATH, xpath)))
    screen.wait(0.3)  # the menu's opening transition
    screen.selenium.find_element(By.XPATH, xpath).click()


def arriving(editor: Editor, view_id: str, port: str) -> str:
    """The shape reaching input ``port`` of the block a view id draws, worked out from the session's
    analysis and the subgraphs' own (not from what the canvas was sent)."""
    analysis: Analysis = editor.session.analysis
    parts = view_id.split("/")
    copy = 0
    for part in parts[:-1]:
        if part.isdigit():
            copy = int(part) - 1
            continue
        info = analysis.nodes[part]
        subgraph = analysis.library.subgraph(info.node.type)
        assert subgraph is not None and info.inputs is not None
        copies = subgraph.expand(SubgraphParams.model_validate(info.node.params), info.inputs).copies
        analysis, copy = copies[copy] if len(copies) > 1 else copies[0], 0
    inputs = analysis.nodes[parts[-1]].inputs
    assert inputs is not None, view_id
    return shape_text(inputs[port], batch=True)


def labels_right(screen, editor: Editor) -> int:
    """Check every edge's label against the shape reaching its end, after a fit (only what is in view
    is in the page); how many were checked."""
    projection = editor.projection
    assert projection is not None
    screen.click("Fit")
    wait(lambda: len(screen.selenium.find_elements(By.CSS_SELECTOR, ".vue-flow__edge")) == len(projection.edges))
    shown = screen.selenium.execute_script(
        "return [...document.querySelectorAll('.vue-flow__edge')].map("
        "e => [e.getAttribute('data-id'), e.querySelector('.vue-flow__edge-text')?.textContent || ''])")
    assert {eid for eid, _ in shown} == set(projection.edges)
    for eid, label in shown:
        edge = projection.edges[eid]
        assert label == arriving(editor, edge["target"], edge["targetHandle"]), eid
    return len(shown)


def test_a_module_expands_and_collapses_in_place_with_every_label_right(convnext, screen, monkeypatch):
    editor = open_graph(screen, monkeypatch, convnext, 5)
    assert set(drawn(screen)) == COLLAPSED
    assert labels_right(screen, editor) == 4
    click_toggle(screen, "features", "expand")
    wait(lambda: "features/" in drawn(screen))
    inner = [vid for vid in drawn(screen) if vid.startswith("features/") and vid != "features/"]
    assert inner and "features" not in drawn(screen)
    assert labels_right(screen, editor) > 4
    click_toggle(screen, inner[0], "expand")  # a module inside the module
    wait(lambda: f"{inner[0]}/" in drawn(screen))
    assert labels_right(screen, editor) > 4
    shot(screen, "expanded")
    frame = screen.selenium.find_element(By.CSS_SELECTOR, f'{NODES}[data-id="features/"]')
    assert "double-click to open" in frame.text
    click_toggle(screen, "features/", "collapse")
    wait(lambda: set(drawn(screen)) == COLLAPSED)
    assert labels_right(screen, editor) == 4
    assert editor.view_states[()].expanded == {inner[0]}  # kept for when the module opens again


def test_collapse_all_after_expand_all_to_depth_2(convnext, screen, monkeypatch):
    editor = open_graph(screen, monkeypatch, convnext, 5)
    menu(screen, "Modules", "Expand all to depth 2")
    wait(lambda: sum(vid.endswith("/") for vid in drawn(screen)) >= 3)
    frames = [vid for vid in drawn(screen) if vid.endswith("/")]
    assert all(vid.count("/") <= 2 for vid in frames)
    assert labels_right(screen, editor) > 10
    shot(screen, "depth2")
    wait(lambda: editor.saved_state == editor.tab_state())  # autosaved: a reload draws the modules open again
    screen.selenium.refresh()
    wait(lambda: list(EDITORS.values())[-1] is not editor and set(drawn(screen)) >= set(frames))
    editor = list(EDITORS.values())[-1]
    menu(screen, "Modules", "Collapse all")
    wait(lambda: set(drawn(screen)) == COLLAPSED)
    assert labels_right(screen, editor) == 4


TICKS = """
window.__ticks = [];
const tick = (t) => { window.__ticks.push(t); requestAnimationFrame(tick); };
requestAnimationFrame(tick);
"""


def test_a_1000_node_layout_runs_in_a_worker_while_the_page_keeps_drawing(tmp_path, screen, monkeypatch):
    doc = residual_tower(142)  # 1,001 nodes
    path = tmp_path / "tower.json"
    save(doc, path)
    monkeypatch.setenv("NETCANVAS_GRAPH", str(path))
    screen.open("/")
    screen.selenium.set_window_size(WIDTH, HEIGHT)
    editor = list(EDITORS.values())[-1]
    wait(lambda: screen.selenium.execute_script("return window.__netcanvasFlow?.nodes.value.length") == 1001, 40)
    revision = editor.session.revision
    screen.selenium.execute_script(TICKS)
    menu(screen, "Auto-layout", "All blocks")
    wait(lambda: editor.session.revision > revision, timeout=60)  # the positions came back as a move
    started, ended = screen.selenium.execute_script("return window.__netcanvasLayout")
    ticks = [t for t in screen.selenium.execute_script("return window.__ticks") if started <= t <= ended]
    gaps = [b - a for a, b in zip([started, *ticks], [*ticks, ended])]
    print(f"layout {ended - started:.0f} ms, {len(ticks)} frames meanwhile, longest gap {max(gaps):.0f} ms")
    # Long enough that a layout on the page's thread would have frozen it; in the worker, the page draws on
    # (a loaded machine can still hold up a frame or two).
    assert ended - started > 300
    assert max(gaps) < (ended - started) / 4 and len(ticks) >= (ended - started) / 100
    moved = editor.session.positions
    assert len({tuple(p) for p in moved.values()}) == 1001  # every block has a place of its own
    before = editor.session.revision
    menu(screen, "Auto-layout", "All blocks, top down")
    wait(lambda: editor.session.revision > before, timeout=60)
    # Most blocks are culled, never drawn: their estimated handles turned with the layout too.
    assert screen.selenium.execute_script(HANDLE_SIDES) == [["top"], ["bottom"]]


def test_the_unet_template_lays_out_as_a_u_with_its_skips_straight_across(screen, monkeypatch):
    monkeypatch.setenv("NETCANVAS_GRAPH", "unet_ddpm32")
    screen.open("/")
    screen.selenium.set_window_size(WIDTH, HEIGHT)
    editor = list(EDITORS.values())[-1]
    wait(lambda: len(drawn(screen)) == 17)
    for direction, across in (("Left to right", 1), ("Top down", 0)):
        before = editor.session.revision
        menu(screen, "Auto-layout", f"All blocks, {direction.lower()}")
        wait(lambda before=before: editor.session.revision > before, timeout=30)
        screen.click("Fit")
        screen.wait(0.5)
        shot(screen, f"unet-{direction.split()[0].lower()}")
        at = {nid: p[across] for nid, p in editor.session.positions.items()}
        along = {nid: p[1 - across] for nid, p in editor.session.positions.items()}
        # Down the encoder, up the decoder: each level further across than the one before.
        assert at["conv_in"] < at["down1"] < at["down2"] < at["mid"] > at["up2"] > at["up1"] > at["conv_out"]
        for k in range(3):  # each skip runs across, from the encoder on one side to the decoder on the other
            nearest = min(range(3), key=lambda j: abs(at[f"down{j}"] - at[f"up{k}"]))
            assert nearest == k and along[f"down{k}"] < along[f"up{k}"]
    assert editor.session.doc.ui["layout"] == {"direction": "DOWN"}  # the document keeps the choice
    assert screen.selenium.execute_script(HANDLE_SIDES) == [["top"], ["bottom"]]  # measured again, turned


# The sides the blocks' input and output handles are on, as Vue Flow holds them (edges end there).
HANDLE_SIDES = """
const sides = (type) => [...new Set(window.__netcanvasFlow.nodes.value.filter((n) => n.type === 'block')
  .flatMap((n) => (n.handleBounds?.[type] || []).map((h) => h.position)))].sort();
return [sides('target'), sides('source')];
"""
