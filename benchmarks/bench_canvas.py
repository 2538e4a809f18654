"""The editor in a real headless Chromium: page load, edit round trip on screen, panning fps.

    SE_OFFLINE=true .venv/bin/python benchmarks/bench_canvas.py [--repeat 20] [--only load|edit|pan] [--map]

Starts ``app/main.py`` on a free port (once per graph), drives Debian's chromium through
Selenium and prints:
- first page load with the lenet5 template: navigation start -> every node drawn (goal < 1.5 s);
- edit -> updated shapes on screen on a 300-node graph: the canvas sends an edit, Python
  applies it and answers with a delta, the canvas redraws; measured in the page from the
  send to a task queued from the next animation frame, which runs after that frame's style,
  layout and paint (goal < 100 ms);
- panning a 500-node canvas for 2 s, one step per animation frame (goal >= 50 fps).
Headless Chromium renders in software; a desktop browser with a GPU does better.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_editor import residual_chain  # noqa: E402

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
PAN = f"""
const [zoom, done] = [arguments[0], arguments[arguments.length - 1]];
const flow = window.__netcanvasFlow;
flow.setViewport({{x: 0, y: 0, zoom}});
setTimeout(() => {CANVAS}.panBenchmark(2000).then(done), 300);
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(graph: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {"NETCANVAS_GRAPH": graph, "NETCANVAS_PORT": str(port)}
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


class _Skip(Exception):
    """A measurement left out with --only."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", choices=("load", "edit", "pan"), help="run one of the three measurements")
    parser.add_argument("--map", action="store_true", help="pan with the minimap shown (hidden above 200 nodes)")
    args = parser.parse_args()
    wanted = {args.only} if args.only else {"load", "edit", "pan"}
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
                driver.execute_async_script(WAIT_NODES, 10)
                if args.map:
                    driver.execute_script("document.querySelector('.nc-map-toggle').click()")
                map_text = "with minimap" if args.map else "no minimap"
                for zoom in (1.0, 0.5, 0.3):
                    result = driver.execute_async_script(PAN, zoom)
                    print(f"  500 nodes ({map_text}): pan 2 s at zoom {zoom:<4} {result['frames']:5d} frames   "
                          f"{result['fps']:6.1f} fps")
            finally:
                process.terminate()
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
