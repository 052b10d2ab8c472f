"""`python -m explorer.export`: see `explorer.export.cli`."""

import sys

from .cli import main

sys.exit(main())
