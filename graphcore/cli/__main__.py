"""``python -m graphcore.cli``: the same as the ``netcanvas`` command."""

import sys

from graphcore.cli.main import main

sys.exit(main())
