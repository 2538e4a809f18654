"""Reloading the editor's tab on a 300-node ONNX model opened with its weights, in a real headless Chromium.

    SE_OFFLINE=true .venv/bin/python benchmarks/bench_reload.py [--reloads 10] [--units 60] [--channels 64] [--profile]

Exports a residual chain with torch (``--units`` units of conv -> relu -> conv -> add(skip) -> relu:
5 ONNX nodes each, 300 for 60 units; ``--channels`` 64 gives 4.4 M parameters, an 18 MB file) into
a temporary workspace, starts the editor on it as a user does (``netcanvas model.onnx``: the CLI's
own entry, run by this interpreter, on a free port), opens it once (the import), then reloads the
tab ``--reloads`` times. Each reload restores the tab's draft: the document, which holds its imported
weights' key, and the view. Per reload it prints, from the navigation's start:
- drawn: the canvas holds every block, and every block inside the view is drawn with its output shapes
  (a shape with a number in it: no ``?``; blocks outside the view are culled, ``bench_canvas.NODES_DRAWN``);
- usable: drawn, the palette shows its search field and a section per block category, the
  toolbar's Export button is enabled, and an edit round trip has been through the server and back
  on screen: the canvas sends a move of the output block by one pixel, Python applies it and
  answers, and the canvas has drawn the answer (the first frame painted after it). That is, a
  user's first click would be answered;
- server: the time the server spent building the page, measured in the server process from the
  page's socket connecting to the page function's end (reading the tab's draft, ``Editor(...)``),
  and apart from it the time spent reading the imported weights (``Workspace.load_weights``), if read.
Two baselines run in the same session, with the same browser: a NiceGUI page built after its
socket connects that shows one label (the framework's floor), and the same 300-node graph opened
from a .json file, without weights. The medians come with the machine's load average (the
times are wall-clock times on a shared machine) and the ratio to each baseline.
``--profile`` prints the server's cProfile of ``Editor(...)`` on reload (top functions, cumulative
time); the profiler slows the builds it watches, so their times are not comparable then.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import itertools
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_canvas import DRAWN, NODES_DRAWN, USABLE, browser, free_port, listening  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402

TIMES_ENV = "NETCANVAS_BENCH_TIMES"  # the file the server appends "name milliseconds" lines to
PROFILE_ENV = "NETCANVAS_BENCH_PROFILE"  # where the server writes its cProfile of the page builds
LABEL = """
const done = arguments[arguments.length - 1];
const check = () => document.querySelector('.nc-ready') ? done(performance.now()) : requestAnimationFrame(check);
check();
"""


# ------------------------------------------------------------------ the servers (run as subprocesses)
def serve_editor(argv: list[str]) -> int:
    """``netcanvas ARGV``, with its page builds timed (and profiled), and the weights' reading timed."""
    from nicegui import ui

    from app.editor import Editor
    from graphcore.cli.main import main as netcanvas
    from graphcore.runtime.workspace import Workspace

    profile = cProfile.Profile() if os.environ.get(PROFILE_ENV) else None
    ui.page = _timed_page(ui.page)
    Editor.__init__ = _timed("editor", Editor.__init__, profile)
    Editor.open_file = _timed("import", Editor.open_file, None)  # async: marks only that a page imported
    Workspace.load_weights = _timed("weights", Workspace.load_weights, None)  # in a worker thread
    return netcanvas(argv)


def _record(name: str, start: float) -> None:
    with open(os.environ[TIMES_ENV], "a") as times:
        times.write(f"{name} {(time.perf_counter() - start) * 1000:.1f}\n")


def _timed(name: str, fn: Callable[..., Any], profile: cProfile.Profile | None) -> Callable[..., Any]:
    """``fn``, appending ``name milliseconds`` to the times file at each call (and profiled, from the
    second call on: the first one pays for imports made once)."""
    calls = itertools.count()

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        profiled = profile is not None and next(calls) > 0
        if profiled:
            profile.enable()
        try:
            return fn(*args, **kwargs)
        finally:
            if profiled:
                profile.disable()
                profile.dump_stats(os.environ[PROFILE_ENV])
            _record(name, start)
    return timed


def _timed_page(page: type) -> type:
    """NiceGUI's page decorator, timing each page from its socket's connection to its function's end:
    what the server does to build the page, whatever the page function reads first (a draft, a file)."""
    class TimedPage(page):  # type: ignore[misc, valid-type]
        def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(func)
            async def timed(*args: Any, **kwargs: Any) -> Any:
                from nicegui import ui

                await ui.context.client.connected(timeout=30)  # (the page's own wait then returns at once)
                start = time.perf_counter()
                try:
                    return await func(*args, **kwargs)
                finally:
                    _record("page", start)
            return super().__call__(timed)
    return TimedPage


def serve_label(port: int) -> None:
    """The baseline: a page that shows one label once its socket has connected, as the editor's page does."""
    from nicegui import ui

    @ui.page("/")
    async def index() -> None:
        await ui.context.client.connected(timeout=30)
        ui.label("ready").classes("nc-ready")

    ui.run(port=port, reload=False, show=False, show_welcome_message=False)


# ------------------------------------------------------------------ the model
def residual_chain_onnx(path: Path, units: int, channels: int) -> None:
    """``units`` residual units (conv -> relu -> conv -> add(skip) -> relu) exported to ONNX with
    their weights, every op in one module (the import would make a subgraph of each unit module)."""
    import torch
    from torch import nn

    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = [nn.Conv2d(channels, channels, 3, padding=1) for _ in range(2 * units)]
            for i, conv in enumerate(self.convs):
                self.add_module(f"conv{i}", conv)  # each its own module: one op, one block

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) throughout
            for first, second in zip(self.convs[::2], self.convs[1::2], strict=True):
                x = torch.relu(second(torch.relu(first(x))) + x)
            return x

    model = Chain().eval()
    # The legacy exporter: ~20x faster than the dynamo one on such a chain, with the same ops.
    torch.onnx.export(model, (torch.randn(1, channels, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})


def expected(path: Path) -> dict[str, Any]:
    """What a drawn page shows of the model: its blocks, the blocks with output shapes, the palette."""
    import blocks
    import graphcore as gc
    from graphcore.core.document import save
    from graphcore.editing.session import EditSession

    doc, _ = gc.from_onnx(path)
    save(doc, path.with_suffix(".json"))  # the baseline without weights
    view = EditSession(doc).view()
    return {"nodes": len(view["nodes"]), "shapes": sum(len(n["outputs"]) > 0 for n in view["nodes"]),
            "sections": len({spec.category for spec in blocks.all_specs()}), "move": doc.nodes[-1].id}


# ------------------------------------------------------------------ the measurements
class Server:
    """A server subprocess on a free port, working in a fresh folder under ``folder`` (each editor in a
    workspace of its own: a new tab would take over another's draft); its timings are read as they come."""

    def __init__(self, command: list[str], folder: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        folder = Path(tempfile.mkdtemp(prefix="server-", dir=folder))
        self.times = folder / "times.txt"
        self.times.touch()
        self.read = 0
        environment = os.environ | (env or {}) | {TIMES_ENV: str(self.times)}
        self.process = subprocess.Popen([*command, "--port", str(self.port)], cwd=folder, env=environment,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = listening(self.process, self.port)

    def new_times(self) -> dict[str, float]:
        """The server's timings since the last call, summed by name."""
        lines = self.times.read_text().splitlines()
        new, self.read = lines[self.read:], len(lines)
        totals: dict[str, float] = {}
        for line in new:
            name, ms = line.split()
            totals[name] = totals.get(name, 0.0) + float(ms)
        return totals

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def reloads(driver: Any, server: Server, want: dict[str, Any], count: int, label: str) -> dict[str, list[float]]:
    """Open the page once, then reload it ``count`` times; the times of each reload, by measure."""
    driver.get("about:blank")
    driver.delete_all_cookies()
    driver.get(server.url)
    first = driver.execute_async_script(DRAWN, want)
    time.sleep(1.5)  # the tab's autosave (every half second): what the reloads restore
    print(f"  {label}: first open drawn in {first:.0f} ms (server build {server.new_times()['page']:.0f} ms)")
    measured: dict[str, list[float]] = {"drawn": [], "usable": [], "server": [], "weights": []}
    for step in range(count):
        driver.refresh()
        times = wait_usable(driver, want | {"step": step}, f"{label} reload {step + 1}")
        drawn, usable = times["drawn"], times["usable"]
        time.sleep(1.0)  # the user pauses: work left in the background ends, the autosave runs
        server_times = server.new_times()
        if "import" in server_times:
            raise RuntimeError(f"{label}: reload {step + 1} imported the model again instead of restoring the tab")
        build = server_times["page"]
        measured["drawn"].append(drawn)
        measured["usable"].append(usable)
        measured["server"].append(build)
        measured["weights"].append(server_times.get("weights", 0.0))
        print(f"  {label} reload {step + 1:2d}: drawn {drawn:6.0f} ms   usable {usable:6.0f} ms   "
              f"server build {build:5.0f} ms   weights read {server_times.get('weights', 0):5.0f} ms   "
              f"load {os.getloadavg()[0]:.1f}")
    return measured


def wait_usable(driver: Any, want: dict[str, Any], label: str) -> dict[str, float]:
    """Run ``USABLE``; where it times out, say what the page lacked."""
    try:
        return driver.execute_async_script(USABLE, want)
    except TimeoutException:
        state = driver.execute_script(NODES_DRAWN + """
          return {drawn: drawn(arguments[0]), blocks: document.querySelectorAll('.vue-flow__node').length,
            sections: document.querySelectorAll('.nc-palette-section').length,
            answered: (window.__netcanvasLatency || []).length};""", want)
        raise RuntimeError(f"{label}: the page did not become usable (wanted {want}; it showed {state})") from None


def label_page(driver: Any, server: Server, count: int) -> list[float]:
    """Navigation -> the label shown, over ``count`` reloads of the baseline page."""
    driver.get(server.url)
    driver.execute_async_script(LABEL)
    times = []
    for _ in range(count):
        driver.refresh()
        times.append(driver.execute_async_script(LABEL))
    return times


def print_profile(path: Path) -> None:
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("cumulative").print_stats(25)
    print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--units", type=int, default=60, help="residual units, 5 ONNX nodes each")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="print the server's profile of Editor(...)")
    parser.add_argument("--serve", choices=("editor", "label"), help=argparse.SUPPRESS)  # the servers run here too
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.serve == "editor":
        sys.exit(serve_editor([*rest, "--port", str(args.port)]))
    if args.serve == "label":
        serve_label(args.port)
        return
    os.environ.setdefault("SE_OFFLINE", "true")
    with tempfile.TemporaryDirectory(prefix="netcanvas-reload-") as folder:
        measure(Path(folder), args)


def measure(folder: Path, args: argparse.Namespace) -> None:
    """Export the model into ``folder``, run the baseline page and both editors, print the figures."""
    model = folder / "model.onnx"
    residual_chain_onnx(model, args.units, args.channels)
    want = expected(model)
    print(f"{model.name}: {want['nodes']} blocks, {model.stat().st_size / 1e6:.1f} MB; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start; times in ms from the navigation's start")
    me = [sys.executable, str(Path(__file__).resolve())]
    profile = folder / "page.prof"
    driver = browser()
    try:
        baseline = Server([*me, "--serve", "label"], folder)
        try:
            label_times = label_page(driver, baseline, args.reloads)
        finally:
            baseline.stop()
        results = {}
        for name, target in (("without weights (.json)", model.with_suffix(".json")), ("with weights (.onnx)", model)):
            env = {PROFILE_ENV: str(profile)} if args.profile and target == model else {}
            server = Server([*me, "--serve", "editor", str(target)], folder, env)
            try:
                results[name] = reloads(driver, server, want, args.reloads, name)
            finally:
                server.stop()
    finally:
        driver.quit()
    print_summary(results, label_times, args.reloads)
    if args.profile:
        print_profile(profile)


def print_summary(results: dict[str, dict[str, list[float]]], label_times: list[float], reloads: int) -> None:
    """The medians, the load average, and the ratios to both baselines."""
    label_median = statistics.median(label_times)
    print(f"\nmedians of {reloads} reloads; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"at the end")
    print(f"  {'baseline: one-label NiceGUI page, shown':<48} {label_median:6.0f} ms")
    plain = statistics.median(results["without weights (.json)"]["usable"])
    for name, measured in results.items():
        usable = statistics.median(measured["usable"])
        print(f"  {name:<28} drawn {statistics.median(measured['drawn']):6.0f}   usable {usable:6.0f}   "
              f"server build {statistics.median(measured['server']):5.0f}   weights read "
              f"{statistics.median(measured['weights']):5.0f}   usable / label page {usable / label_median:4.1f}x   "
              f"usable / without weights {usable / plain:4.2f}x   (goal: usable < 2000 ms)")


if __name__ == "__main__":
    main()
