"""``python -m cmasktrack`` runs the command line (:func:`cmasktrack.cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
