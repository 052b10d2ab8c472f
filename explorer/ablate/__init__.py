"""Ablation: `python -m explorer.ablate` (`cli`) measures why one design beats another. Ladders of
designs one field group apart (`ladder`), trained with paired seeds as the study's shared runs
(`explorer.evaluate.runs`, ``NAME@ablation``) by any number of workers (`runs`), each step's
paired difference with its standard error (`stats`), and the measured ladder as printed and
drawn (`report`).

May import: `explorer.evaluate` (a run trains as a re-evaluation does), `explorer.analysis`,
`explorer.training`, `explorer.store`, `explorer.usage`, `search_space`.
"""

from .cli import (
    build_parser,
    main,
)
from .ladder import (
    GROUP_OF_FIELD,
    GROUP_TITLES,
    LEAVE_ONE_OUT,
    Ladder,
    leave_one_out,
    nearest,
    path_ladder,
)
from .report import (
    Measured,
    StepResult,
    measure,
)
from .runs import (
    StoredLadder,
    Worker,
    collect,
    find_ablation,
    open_ablation,
    reused_runs,
    store_ladder,
    stored_ladders,
    units,
)
from .stats import (
    judge,
)

__all__ = [
    "build_parser",
    "GROUP_OF_FIELD",
    "GROUP_TITLES",
    "LEAVE_ONE_OUT",
    "Ladder",
    "Measured",
    "StepResult",
    "StoredLadder",
    "Worker",
    "collect",
    "find_ablation",
    "judge",
    "leave_one_out",
    "main",
    "measure",
    "nearest",
    "open_ablation",
    "path_ladder",
    "reused_runs",
    "store_ladder",
    "stored_ladders",
    "units",
]
