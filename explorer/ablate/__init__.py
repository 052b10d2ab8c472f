"""Ablation: `python -m explorer.ablate` (`cli`) measures why one design beats another. Ladders of
designs one field group apart (`ladder`), trained with paired seeds as trials of the study's
companion ``NAME@ablation`` by any number of workers (`runs`), each step's paired difference with
its standard error (`stats`), and the measured ladder as printed and drawn (`report`).

May import: `explorer.evaluate` (a run trains as a re-evaluation does), `explorer.analysis`,
`explorer.training`, `explorer.store`, `explorer.usage`, `search_space`.
"""

from .cli import (
    DEFAULT_SEEDS,
    build_parser,
    main,
    parse_args,
)
from .ladder import (
    FACTORIAL,
    GROUP_OF_FIELD,
    GROUP_TITLES,
    GROUPS,
    LEAVE_ONE_OUT,
    PATH,
    Design,
    Ladder,
    Step,
    canonical,
    changed_groups,
    describe_group,
    leave_one_out,
    nearest,
    path_ladder,
)
from .report import (
    Measured,
    StepResult,
    flops,
    lines,
    measure,
)
from .runs import (
    Runs,
    StoredLadder,
    Unit,
    Worker,
    collect,
    find_ablation,
    open_ablation,
    reused_runs,
    run_key,
    store_ladder,
    stored_ladders,
    units,
)
from .stats import (
    interaction,
    judge,
    paired,
)

__all__ = [
    "DEFAULT_SEEDS",
    "FACTORIAL",
    "GROUPS",
    "GROUP_OF_FIELD",
    "GROUP_TITLES",
    "LEAVE_ONE_OUT",
    "PATH",
    "Design",
    "Ladder",
    "Measured",
    "Runs",
    "Step",
    "StepResult",
    "StoredLadder",
    "Unit",
    "Worker",
    "build_parser",
    "canonical",
    "changed_groups",
    "collect",
    "describe_group",
    "find_ablation",
    "flops",
    "interaction",
    "judge",
    "leave_one_out",
    "lines",
    "main",
    "measure",
    "nearest",
    "open_ablation",
    "paired",
    "parse_args",
    "path_ladder",
    "reused_runs",
    "run_key",
    "store_ladder",
    "stored_ladders",
    "units",
]
