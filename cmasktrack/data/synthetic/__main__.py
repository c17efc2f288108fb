"""``python -m cmasktrack.data.synthetic --out DIR --videos N --seed S``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
