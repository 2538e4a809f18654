"""The ``netcanvas`` command line (``graphcore.cli.main``)."""

from graphcore.cli.main import main

__all__ = ["main"]
