"""``python -m chanscale`` is the ``chanscale`` command."""

import sys

from .cli import main

sys.exit(main())
