"""``python -m prunefw``: see :mod:`prunefw.cli`."""

import sys

from prunefw.cli import main

if __name__ == "__main__":
    sys.exit(main())
