"""``python -m service.training``: see :mod:`service.training.cli`."""

import sys

from service.extras import MissingExtraError, require

try:
    require("train", "python -m service.training")
except MissingExtraError as e:
    sys.exit(f"error: {e}")

from .cli import main  # after the check: it imports torch

sys.exit(main())
