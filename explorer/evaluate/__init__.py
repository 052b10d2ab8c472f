"""Re-evaluation: `python -m explorer.evaluate` (`cli`) retrains chosen designs and the references
over several seeds (`retrain`) under a longer budget (`budget_words`) and gives the paired verdict
against each reference (`compare`); with another network shape, the transfer check (`transfer`).
Every run it, the search's final seeds and verification, and the ablation train is one of the
study's shared runs (`runs`), claimed, trained and recorded through the one work loop.

May import: `explorer.analysis`, `explorer.training`, `explorer.store`, `explorer.usage`,
`search_space`.
"""

from .budget_words import (
    LONG,
    PRESETS_HELP,
    TOP,
    add_budget,
    named_budget,
    preset_word,
    resolve_budget,
    top_rung_budget,
)
from .cli import (
    build_parser,
    main,
)
from .compare import (
    comparisons,
    report,
)
from .pool import (
    DataSpec,
    Run,
    RunPool,
    SeedOrder,
    train_and_test,
)
from .retrain import (
    Target,
    check_stored,
    reevaluate,
    runs_needed,
    select_targets,
)
from .runs import (
    HEARTBEAT_S,
    RunQueue,
    Runs,
    Unit,
    UnitResult,
    collect,
    find_runs,
    open_runs,
    recipe,
    reused_runs,
    run_key,
)

__all__ = [
    "build_parser",
    "DataSpec",
    "HEARTBEAT_S",
    "LONG",
    "PRESETS_HELP",
    "Run",
    "RunPool",
    "RunQueue",
    "Runs",
    "SeedOrder",
    "TOP",
    "Target",
    "Unit",
    "UnitResult",
    "add_budget",
    "check_stored",
    "collect",
    "comparisons",
    "find_runs",
    "main",
    "named_budget",
    "open_runs",
    "preset_word",
    "recipe",
    "reevaluate",
    "report",
    "resolve_budget",
    "reused_runs",
    "run_key",
    "runs_needed",
    "select_targets",
    "top_rung_budget",
    "train_and_test",
]
