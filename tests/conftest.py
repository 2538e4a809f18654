"""Shared pytest setup. NiceGUI's fixtures (``user``, ``screen``) run ``app/main.py``, the
``main_file`` set in pyproject.toml; they are only used by the app tests."""

pytest_plugins = ["nicegui.testing.plugin"]
