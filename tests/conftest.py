"""Shared pytest setup. NiceGUI's fixtures (``user``, ``screen``) run ``app/main.py``, the
``main_file`` set in pyproject.toml; they are only used by the app tests."""

from collections.abc import AsyncIterator

import pytest
from nicegui import Client
from nicegui.testing import User

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
