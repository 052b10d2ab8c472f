"""`python -m explorer.search`."""

import sys

from .cli import main

if __name__ == "__main__":  # spawned worker processes re-import this file as __mp_main__
    sys.exit(main())
