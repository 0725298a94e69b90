"""``python -m pecop_lib`` is the ``pecop`` command."""

import sys

from pecop_lib.cli import main

sys.exit(main())
