"""The editor in a real headless Chromium: page load, edit round trip on screen, panning fps.

    SE_OFFLINE=true .venv/bin/python benchmarks/bench_canvas.py [--repeat 20] [--only load|edit|pan|sizes|swin] [--map]
        [--sizes 500,1000,2000] [--cap 60]

Starts ``app/main.py`` on a free port (once per graph), drives Debian's chromium through
Selenium and prints:
- first page load with the lenet5 template: navigation start -> every node drawn (goal < 1.5 s);
- edit -> updated shapes on screen on a 300-node graph: the canvas sends an edit, Python
  applies it and answers with a delta, the canvas redraws; measured in the page from the
  send to a task queued from the next animation frame, which runs after that frame's style,
  layout and paint (goal < 100 ms);
- panning a 500-node canvas for 2 s, one step per animation frame (goal >= 50 fps);
- per graph size in ``--sizes`` (flat residual chains, 500 to 10,000 nodes; ``--only sizes`` runs these
  alone): usable (from the navigation: the blocks in view drawn with their shapes, palette and toolbar
  ready, one edit round trip answered on screen, as ``bench_reload`` defines it; waits are capped at
  ``--cap`` seconds, printed as "> N s"), panning at zoom 1.0 and at "fit" by the programmatic loop and by
  dragging the pane with real pointer events (W3C actions; frames counted with requestAnimationFrame in
  the page), and edit -> shapes on screen (goals at 5,000 nodes: usable < 3 s, pan >= 50 fps, edit
  < 100 ms; at 10,000: usable < 6 s, pan >= 30 fps);
- an imported swin_t (``tests/onnx_zoo.py``'s at torchvision's full size, 6,000-odd ONNX nodes): the import,
  and navigation -> usable with the graph collapsed by module (goal < 2 s).
Headless Chromium renders in software; a desktop browser with a GPU does better.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.actions.action_builder import ActionBuilder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # the browser tests' page scripts

from bench_editor import residual_chain  # noqa: E402
from browser_marks import EMPTY_POINT  # noqa: E402

from graphcore.core.document import save  # noqa: E402

CANVAS = "getElement(document.querySelector('.nc-canvas'))"  # NiceGUI's handle on the canvas component
WAIT_NODES = """
const [count, done] = [arguments[0], arguments[arguments.length - 1]];
const check = () => document.querySelectorAll('.vue-flow__node').length >= count
  ? done(performance.now()) : requestAnimationFrame(check);
check();
"""
EDIT = f"""
const [edit, done] = [arguments[0], arguments[arguments.length - 1]];
const canvas = {CANVAS};
const before = window.__netcanvasLatency.length;
canvas.sendEdit(edit);
const wait = () => window.__netcanvasLatency.length > before
  ? done(window.__netcanvasLatency[window.__netcanvasLatency.length - 1]) : setTimeout(wait, 1);
wait();
"""
# "Drawn": the canvas holds the whole graph (``want.nodes`` blocks) and every block inside the view is in
# the page with its output shapes (a shape with a number in it: no "?"); or, a big graph zoomed out, the
# overview has drawn them as boxes on its canvas. Blocks outside the view need not be in the page (the
# canvas culls them); a block not yet measured counts at its estimated size.
NODES_DRAWN = """
const inView = () => {
  const flow = window.__netcanvasFlow;
  const pane = document.querySelector('.vue-flow')?.getBoundingClientRect();
  if (!flow || !pane?.width) return null;
  const {x, y, zoom} = flow.viewport.value;
  const [left, top, right, bottom] = [-x / zoom, -y / zoom, (pane.width - x) / zoom, (pane.height - y) / zoom];
  return flow.nodes.value.filter((n) => {
    const {width = 0, height = 0} = n.dimensions, at = n.computedPosition;
    return at.x < right && at.x + Math.max(width, 1) > left && at.y < bottom && at.y + Math.max(height, 1) > top;
  });
};
const shown = (node) => {
  const element = document.querySelector(`.vue-flow__node[data-id="${CSS.escape(node.id)}"]`);
  return element !== null && [...element.querySelectorAll('.nc-shape')].every((s) => /\\d/.test(s.textContent));
};
const drawn = (want) => {
  const flow = window.__netcanvasFlow;
  if (!flow || flow.nodes.value.length < want.nodes) return false;
  const visible = inView();
  if (visible === null || visible.length === 0) return false;
  return document.querySelector('.nc-overview')?.width > 0 || visible.every(shown);
};
"""
DRAWN = NODES_DRAWN + """
const [want, done] = [arguments[0], arguments[arguments.length - 1]];
const check = () => drawn(want) ? done(performance.now()) : requestAnimationFrame(check);
check();
"""
# One script from drawn to usable: a second one would add Selenium's own delay between them.
USABLE = NODES_DRAWN + f"""
const [want, done] = [arguments[0], arguments[arguments.length - 1]];
const times = {{}};
const exportEnabled = () => [...document.querySelectorAll('.q-header button')]
  .some((b) => b.textContent.includes('Export') && !b.disabled);
const ready = () => document.querySelector('.q-drawer--left input') && exportEnabled()
  && document.querySelectorAll('.nc-palette-section').length >= want.sections;
const roundTrip = () => {{
  const node = window.__netcanvasFlow.findNode(want.move);
  const before = window.__netcanvasLatency.length;
  const x = Math.round(node.position.x) + (want.step % 2 ? 1 : -1);
  {CANVAS}.sendEdit({{op: 'move', positions: {{[want.move]: [x, Math.round(node.position.y)]}}}});
  const wait = () => window.__netcanvasLatency.length > before
    ? done({{...times, usable: performance.now()}}) : setTimeout(wait, 1);
  wait();
}};
const check = () => {{
  if (times.drawn === undefined && drawn(want)) times.drawn = performance.now();
  if (times.drawn !== undefined && ready()) roundTrip(); else requestAnimationFrame(check);
}};
check();
"""
PAN = f"""
const [zoom, done] = [arguments[0], arguments[arguments.length - 1]];
const flow = window.__netcanvasFlow;
flow.setViewport({{x: 0, y: 0, zoom}});
setTimeout(() => {CANVAS}.panBenchmark(2000).then(done), 300);
"""

PAN_FIT = f"""
const done = arguments[arguments.length - 1];
{CANVAS}.fit();
const zoom = () => window.__netcanvasFlow.viewport.value.zoom;
setTimeout(() => {CANVAS}.panBenchmark(2000).then((result) => done({{...result, zoom: zoom()}})), 600);
"""
COUNT_FRAMES = """
window.__benchFrames = [];
const count = (now) => { if (window.__benchFrames) { window.__benchFrames.push(now); requestAnimationFrame(count); } };
requestAnimationFrame(count);
"""
FRAMES_COUNTED = """
const frames = window.__benchFrames; window.__benchFrames = null;
return {frames: frames.length, ms: frames[frames.length - 1] - frames[0], x: window.__netcanvasFlow.viewport.value.x};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(graph: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # A workspace of its own: in a shared one, a new tab would restore the last closed tab's draft.
    env = os.environ | {"NETCANVAS_GRAPH": graph, "NETCANVAS_PORT": str(port),
                        "NETCANVAS_WORKSPACE": tempfile.mkdtemp(prefix="netcanvas-bench-workspace-")}
    process = subprocess.Popen([sys.executable, str(ROOT / "app" / "main.py")], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, listening(process, port)


def listening(process: subprocess.Popen, port: int) -> str:
    """The URL of the server ``process`` starts, once it accepts connections on ``port``."""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the app did not start")


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for arg in ("headless", "no-sandbox", "disable-dev-shm-usage", "window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options)
    driver.set_script_timeout(60)
    return driver


def page_load(driver: webdriver.Chrome, url: str, nodes: int, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        driver.get("about:blank")
        driver.delete_all_cookies()
        driver.get(url)
        driver.execute_script("sessionStorage.clear()")  # a new tab: no autosave, the template again
        times.append(driver.execute_async_script(WAIT_NODES, nodes))
    return times


def report(name: str, values: list[float], unit: str) -> None:
    print(f"  {name:<58} median {statistics.median(values):8.1f} {unit}   "
          f"min {min(values):8.1f}   max {max(values):8.1f}   (n={len(values)})")


# ------------------------------------------------------------------ large graphs, per size
SIZE_REPEAT = 3  # page loads per size (each a new tab)
SIZE_EDITS = 9  # edits of each kind per size: a few ms each, so enough for a median
DRAG_STEPS, DRAG_STEP_PX, DRAG_STEP_MS = 40, 25, 50  # a drag of up to 1,000 pixels over 2 s


def capped(driver: webdriver.Chrome, cap: float, script: str, *args: object) -> Any:
    """Run an async ``script`` with the wait capped at ``cap`` seconds; None where it ran out."""
    driver.set_script_timeout(cap)
    try:
        return driver.execute_async_script(script, *args)
    except TimeoutException:
        return None
    finally:
        driver.set_script_timeout(60)


def usable_loads(driver: webdriver.Chrome, url: str, want: dict, cap: float) -> list[float | None]:
    """Navigation -> usable, over ``SIZE_REPEAT`` new tabs (None: not usable within ``cap`` seconds)."""
    times: list[float | None] = []
    for step in range(SIZE_REPEAT):
        driver.get("about:blank")
        driver.delete_all_cookies()
        driver.get(url)
        result = capped(driver, cap, USABLE, want | {"step": step})
        times.append(None if result is None else result["usable"])
        driver.execute_script("sessionStorage.clear()")  # the next navigation is a new tab, not a reload
        if result is None:
            break  # the next loads would wait as long
    return times


def drag_pan(driver: webdriver.Chrome) -> dict | None:
    """Pan by dragging the empty pane with real pointer events for 2 s; frames drawn meanwhile."""
    start = driver.execute_script(EMPTY_POINT)
    if start is None:
        return None
    x, y = start
    step = min(DRAG_STEP_PX, (x - 10) // DRAG_STEPS)  # the pointer stays in the window
    builder = ActionBuilder(driver, duration=DRAG_STEP_MS)
    pointer = builder.pointer_action
    pointer.move_to_location(x, y)
    pointer.pointer_down()
    for i in range(1, DRAG_STEPS + 1):
        pointer.move_to_location(x - i * step, y + round(10 * math.sin(i / 4)))
    pointer.pointer_up()
    before = driver.execute_script("return window.__netcanvasFlow.viewport.value.x")
    driver.execute_script(COUNT_FRAMES)
    builder.perform()
    result = driver.execute_script(FRAMES_COUNTED)
    return {"fps": (result["frames"] - 1) * 1000 / max(result["ms"], 1), "panned": before - result["x"]}


def fps_text(result: dict | None) -> str:
    return "no empty pane to drag" if result is None else f"{result['fps']:6.1f} fps"


def measure_size(driver: webdriver.Chrome, folder: Path, n: int, cap: float) -> None:
    """Every figure for a flat graph of ``n`` blocks; each wait capped at ``cap`` seconds."""
    import blocks

    path = folder / f"chain{n}.json"
    save(residual_chain(n), path)
    want = {"nodes": n, "sections": len({spec.category for spec in blocks.all_specs()}), "move": "y"}
    process, url = serve(str(path))
    try:
        loads = usable_loads(driver, url, want, cap)
        done = [t for t in loads if t is not None]
        usable = f"median {statistics.median(done):8.0f} ms" if len(done) == len(loads) else f"> {cap:.0f} s"
        print(f"  {n:6d} nodes: usable {usable}   (n={len(loads)}, load {os.getloadavg()[0]:.1f})", flush=True)
        if not done:
            return
        driver.get(url)
        if capped(driver, cap, USABLE, want | {"step": 0}) is None:
            print(f"  {n:6d} nodes: not usable again within {cap:.0f} s; no pan or edit figures")
            return
        for label, script, args in (("zoom 1.0", PAN, (1.0,)), ("fit", PAN_FIT, ())):
            result = capped(driver, cap, script, *args)
            text = f"> {cap:.0f} s" if result is None else f"{result['fps']:6.1f} fps"
            zoom = f" (zoom {result['zoom']:.2f})" if result and "zoom" in result else ""
            print(f"  {n:6d} nodes: pan 2 s at {label:<8} programmatic {text}{zoom}", flush=True)
            if result is not None:
                print(f"  {n:6d} nodes: pan 2 s at {label:<8} pointer drag {fps_text(drag_pan(driver))}", flush=True)
        edits = (("edit input shape -> all shapes redrawn",
                  lambda i: {"op": "set_params", "id": "x", "params": {"shape": [16, 28 + i % 2 * 4, 32]}}),
                 ("edit one conv's param -> its node redrawn",
                  lambda i: {"op": "set_params", "id": "conv40", "params": {"out_channels": 16, "kernel_size": 3,
                                                                            "padding": 1, "bias": bool(i % 2)}}))
        driver.execute_script(f"{CANVAS}.fit()")
        for label, edit in edits:
            times = [capped(driver, cap, EDIT, edit(i)) for i in range(SIZE_EDITS)]
            if any(t is None for t in times):
                print(f"  {n:6d} nodes: {label}: > {cap:.0f} s")
            else:
                report(f"{n} nodes: {label}", times, "ms")
    finally:
        process.terminate()


def measure_swin(driver: webdriver.Chrome, folder: Path, cap: float) -> None:
    """An imported swin_t (torchvision's at full size, exported to ONNX by torch's TorchScript exporter):
    its ONNX nodes, the import, and navigation -> usable with the graph collapsed by module."""
    import onnx
    import torch
    from onnx_zoo import SWIN_T

    import blocks
    import graphcore as gc

    build, shape = SWIN_T
    path = folder / "swin_t.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter says that it is the legacy one
        torch.onnx.export(build().eval(), (torch.randn(1, *shape),), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, opset_version=17, dynamo=False)
    onnx_nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
    start = time.perf_counter()
    doc, _ = gc.from_onnx(path)
    seconds = time.perf_counter() - start
    print(f"swin_t: {onnx_nodes:,} ONNX nodes imported in {seconds:.2f} s as {len(doc.nodes)} blocks "
          f"and {len(doc.subgraphs)} subgraph types", flush=True)
    save(doc, folder / "swin_t.json")
    want = {"nodes": len(doc.nodes), "sections": len({spec.category for spec in blocks.all_specs()}),
            "move": doc.nodes[-1].id}
    process, url = serve(str(folder / "swin_t.json"))
    try:
        loads = usable_loads(driver, url, want, cap)
        done = [t for t in loads if t is not None]
        usable = f"median {statistics.median(done):8.0f} ms" if len(done) == len(loads) else f"> {cap:.0f} s"
        print(f"  swin_t collapsed by module: usable {usable}   (n={len(loads)}, load {os.getloadavg()[0]:.1f}; "
              "goal < 2 s)", flush=True)
    finally:
        process.terminate()


class _Skip(Exception):
    """A measurement left out with --only."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", choices=("load", "edit", "pan", "sizes", "swin"), help="run one of the measurements")
    parser.add_argument("--map", action="store_true", help="pan the 500 nodes with the minimap shown (else hidden)")
    parser.add_argument("--sizes", default="500,1000,2000", help="graph sizes for the large-graph figures")
    parser.add_argument("--cap", type=float, default=60, help="seconds to wait for a page or a figure at most")
    args = parser.parse_args()
    wanted = {args.only} if args.only else {"load", "edit", "pan", "sizes", "swin"}
    os.environ.setdefault("SE_OFFLINE", "true")
    folder = Path(tempfile.mkdtemp(prefix="netcanvas-bench-"))
    save(residual_chain(300), folder / "chain300.json")
    save(residual_chain(500), folder / "chain500.json")
    driver = browser()
    try:
        print("headless Chromium", driver.capabilities.get("browserVersion"), "- times in ms")
        process, url = serve("lenet5") if "load" in wanted else (None, "")
        try:
            if process is None:
                raise _Skip
            driver.get(url)  # warm: the first request compiles nothing, but fills caches
            driver.execute_async_script(WAIT_NODES, 14)
            report("first page load, lenet5 (navigation -> nodes drawn)", page_load(driver, url, 14, args.repeat),
                   "ms")
        except _Skip:
            pass
        finally:
            if process is not None:
                process.terminate()

        process, url = serve(str(folder / "chain300.json")) if "edit" in wanted else (None, "")
        try:
            if process is None:
                raise _Skip
            driver.get(url)
            driver.execute_async_script(WAIT_NODES, 10)
            times = [driver.execute_async_script(EDIT, {"op": "set_params", "id": "x",
                                                        "params": {"shape": [16, 28 + i % 2 * 4, 32]}})
                     for i in range(args.repeat)]
            report("300 nodes: edit input shape -> all shapes redrawn", times, "ms")
            times = [driver.execute_async_script(EDIT, {"op": "set_params", "id": "conv40",
                                                        "params": {"out_channels": 16, "kernel_size": 3,
                                                                   "padding": 1, "bias": bool(i % 2)}})
                     for i in range(args.repeat)]
            report("300 nodes: edit one conv's param -> its node redrawn", times, "ms")
            times = [driver.execute_async_script(EDIT, {"op": "connect", "src": "x" if i % 2 else "add9",
                                                        "src_port": "out", "dst": "conv10", "dst_port": "in"})
                     for i in range(args.repeat)]
            report("300 nodes: connect (structural edit, full re-check)", times, "ms")
        except _Skip:
            pass
        finally:
            if process is not None:
                process.terminate()

        if "pan" in wanted:
            process, url = serve(str(folder / "chain500.json"))
            try:
                driver.get(url)
                driver.execute_async_script(DRAWN, {"nodes": 500})  # zoomed out, the overview draws them
                shown = driver.execute_script("return !!document.querySelector('.nc-graph-map, .vue-flow__minimap')")
                if shown != args.map:
                    driver.execute_script("document.querySelector('.nc-map-toggle').click()")
                map_text = "with minimap" if args.map else "no minimap"
                for zoom in (1.0, 0.5, 0.3):
                    result = driver.execute_async_script(PAN, zoom)
                    print(f"  500 nodes ({map_text}): pan 2 s at zoom {zoom:<4} {result['frames']:5d} frames   "
                          f"{result['fps']:6.1f} fps")
            finally:
                process.terminate()

        if "sizes" in wanted:
            print(f"flat graphs; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
            for n in (int(size) for size in args.sizes.split(",")):
                measure_size(driver, folder, n, args.cap)
        if "swin" in wanted:
            measure_swin(driver, folder, args.cap)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
