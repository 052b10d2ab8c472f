"""Re-evaluation: `python -m explorer.evaluate` (`cli`) retrains chosen designs and the references
over several seeds (`retrain`) under a longer budget (`budget_words`) and gives the paired verdict
against each reference (`compare`); with another network shape, the transfer check (`transfer`).

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
)
from .retrain import (
    Target,
    check_stored,
    reevaluate,
    runs_needed,
    select_targets,
    train_and_test,
)

__all__ = [
    "build_parser",
    "DataSpec",
    "LONG",
    "PRESETS_HELP",
    "Run",
    "RunPool",
    "SeedOrder",
    "TOP",
    "Target",
    "add_budget",
    "check_stored",
    "comparisons",
    "main",
    "named_budget",
    "preset_word",
    "reevaluate",
    "report",
    "resolve_budget",
    "runs_needed",
    "select_targets",
    "top_rung_budget",
    "train_and_test",
]
