"""``python -m shrink``: the same as the ``shrink`` command."""

import sys

from shrink.cli import main

if __name__ == "__main__":
    sys.exit(main())
