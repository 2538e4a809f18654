"""Shared pytest setup. NiceGUI's fixtures (``user``, ``screen``) run ``app/main.py``, the
``main_file`` set in pyproject.toml; they are only used by the app tests."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nicegui import Client
from nicegui.testing import User

from graphcore.runtime.workspace import Workspace

pytest_plugins = ["nicegui.testing.plugin"]


@pytest.fixture
async def user(user: User) -> AsyncIterator[User]:
    """NiceGUI's ``user``, with each page's outbox loop stopped before the app shuts down.

    On shutdown NiceGUI cancels its tasks and waits up to 2 s for them; an outbox loop whose
    cancellation lands while its wake-up event is set (Python 3.11's ``wait_for`` then returns
    instead of raising) keeps looping until that timeout: 2 s idle per app test. Stopped first,
    it ends at once."""
    yield user
    for client in list(Client.instances.values()):
        client.outbox.stop()


@pytest.fixture(autouse=True)
def _workspace_outside_the_repository(tmp_path_factory: pytest.TempPathFactory,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The editor that the app fixtures start works in a fresh folder, not in the repository
    (its default workspace is the current directory). Tests that need their own set it again."""
    monkeypatch.setenv("NETCANVAS_WORKSPACE", str(tmp_path_factory.mktemp("workspace")))


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """An empty workspace folder (graphs/, runs/) that the app serves: request it before the app
    starts (before ``user`` or ``screen``)."""
    monkeypatch.setenv("NETCANVAS_WORKSPACE", str(tmp_path))
    return Workspace(tmp_path).create()
