"""``python -m service.training``: see :mod:`service.training.cli`."""

import sys

from .cli import main

sys.exit(main())
