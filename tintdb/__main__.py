"""``python -m tintdb`` is the ``tintdb`` command."""

import sys

from .cli import main

sys.exit(main())
