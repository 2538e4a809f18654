"""What every real-browser test needs: Debian's chromium + chromium-driver (or a skip that says
how to install them), the slow mark, and Selenium kept offline."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or shutil.which("chromedriver") is None,
    reason="needs chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
BROWSER = [pytest.mark.slow, needs_chromium]
"""``pytestmark = BROWSER`` in a file of real-browser tests."""
