"""``python -m msparse``: see :mod:`msparse.cli` (``python -m msparse --help``)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
