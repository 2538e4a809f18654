"""NetCanvas installed as a wheel, the way a user gets it from an index: the wheel holds the canvas
bundle and the templates, and ``netcanvas`` from a fresh virtualenv serves an editor whose canvas
draws in a real Chromium — run from a folder outside the repository, so nothing comes from here."""

from __future__ import annotations

import os
import shutil
import site
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from browser_marks import CHROMIUM, needs_chromium

import graphcore as gc

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the project's sources (the build writes nothing into the repo)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("graphcore", "blocks", "app"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out), str(source)], check=True, capture_output=True, text=True)
    (built,) = out.glob("netcanvas-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed; the dependencies (torch, nicegui, …) come from
    this interpreter's site-packages through a .pth file, so nothing is downloaded."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    (purelib,) = home.glob("lib/python3*/site-packages")
    (purelib / "netcanvas_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(home / "bin" / "python"), "install",
                    "--no-deps", "--no-index", "-q", str(wheel)], check=True, capture_output=True, text=True)
    return home


def test_the_wheel_holds_the_canvas_bundle_and_the_templates(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"app/static/canvas.js", "app/static/bundle/index.js", "app/static/bundle/style.css"} <= names
    assert any(n.startswith("app/static/bundle/assets/elk-worker") for n in names)  # the layout worker
    assert "graphcore/templates/lenet5.json" in names
    assert {"graphcore/core/analysis.py", "graphcore/runtime/train.py", "graphcore/cli/main.py"} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "netcanvas = graphcore.cli.main:main" in text and "[netcanvas.editor]" in text


def test_the_installed_package_runs_from_the_venv_not_the_repository(venv: Path, tmp_path: Path):
    code = "import app, graphcore as gc; print(app.__file__); print(gc.summary(gc.template('lenet5')).total_params)"
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert done.returncode == 0, done.stderr
    where, params = done.stdout.split()
    assert Path(where).is_relative_to(venv) and params == "61706"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the editor exited with {process.returncode}: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the editor did not answer on {url} within {seconds} s")


@needs_chromium
def test_netcanvas_from_the_wheel_serves_an_editor_whose_canvas_draws(venv: Path, tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    # NiceGUI reads PYTEST_CURRENT_TEST as "running under its test fixtures": a user's shell has none.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "NICEGUI"))} | {"PYTHONPATH": ""}
    process = subprocess.Popen([str(venv / "bin" / "netcanvas"), "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        page = _wait_for(f"http://127.0.0.1:{port}/", process)
        assert '"netcanvas-flow"' in page  # the bundle is in the page's import map
        options = webdriver.ChromeOptions()
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "window-size=1400,900"):
            options.add_argument(argument)
        options.binary_location = CHROMIUM
        driver = webdriver.Chrome(options=options,
                                  service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            nodes = WebDriverWait(driver, 30).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, ".vue-flow__node") or False)
            labels = [e.get_attribute("textContent")
                      for e in driver.find_elements(By.CSS_SELECTOR, ".vue-flow__edge-text")]
            assert len(nodes) == len(gc.template("lenet5").nodes)
            assert any("28" in label for label in labels), labels  # shapes came back from Python
        finally:
            driver.quit()
    finally:
        process.terminate()
        process.wait(timeout=30)
