"""`python -m explorer.ablate`: see `explorer.ablate.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
