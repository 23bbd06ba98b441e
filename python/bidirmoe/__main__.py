"""``python -m bidirmoe ...`` is the ``bidirmoe`` command line."""

import sys

from .cli import main

sys.exit(main())
