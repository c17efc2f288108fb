"""``python -m cmasktrack.train ...`` (also under ``torchrun ... -m cmasktrack.train``) runs
``cmasktrack train ...`` (:func:`cmasktrack.cli.main`)."""

import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
