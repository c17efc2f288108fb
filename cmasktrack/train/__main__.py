"""``python -m cmasktrack.train`` (also under ``torchrun ... -m cmasktrack.train``)."""

import sys

from .cli import main

sys.exit(main())
