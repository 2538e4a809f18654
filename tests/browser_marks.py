"""What every real-browser test needs: Debian's chromium + chromium-driver (or a skip that says
how to install them), the slow mark, Selenium kept offline, a wait for a condition, and the page
scripts that the browser tests and benchmarks/bench_canvas.py share."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

import pytest
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or shutil.which("chromedriver") is None,
    reason="needs chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
BROWSER = [pytest.mark.slow, needs_chromium]
"""``pytestmark = BROWSER`` in a file of real-browser tests."""


def wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for ``condition`` (a worker thread opens documents: the screen's 4 s can be short here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met")


def clicked(screen, xpath: str) -> bool:
    """Click the element at ``xpath`` if it takes the click now: a dialog that is still growing in
    (Quasar's opening transition) has its buttons under its own rows for a moment. Use it as
    ``screen.wait_for(lambda: clicked(screen, xpath))``."""
    try:
        screen.selenium.find_element(By.XPATH, xpath).click()
    except (NoSuchElementException, ElementClickInterceptedException, StaleElementReferenceException):
        return False
    return True


# A point of the empty pane inside the canvas (where a drag pans instead of moving a block), or null.
EMPTY_POINT = """
const box = document.querySelector('.vue-flow').getBoundingClientRect();
for (let y = box.top + 40; y < box.bottom - 40; y += 17)
  for (let x = box.right - 60; x > box.left + 60; x -= 23)
    if (document.elementFromPoint(x, y)?.classList.contains('vue-flow__pane')) return [Math.round(x), Math.round(y)];
return null;
"""
