"""``python -m pgrouter``: the same as the ``pgrouter`` command."""

import sys

from .cli import main

sys.exit(main())
