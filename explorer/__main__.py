"""`python -m explorer`: the same command as `inception-explorer` (see `explorer.cli`)."""

from __future__ import annotations

import sys

from .cli import main
from .usage import MODULE_PROG

if __name__ == "__main__":  # spawned search workers re-import this file as __mp_main__
    sys.exit(main(prog=MODULE_PROG))
