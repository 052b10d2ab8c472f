"""Re-evaluation: `python -m explorer.evaluate` (`cli`) retrains chosen designs and the references
over several seeds (`runner`) under a longer budget (`budgets`) and gives the paired verdict
against each reference (`compare`); with another network shape, the transfer check (`transfer`).

May import: `explorer.analysis`, `explorer.training`, `explorer.store`, `explorer.usage`,
`search_space`.
"""

from .budgets import (
    base_budget,
    budget_names,
    named_budget,
    resolve_budget,
    top_rung_budget,
)
from .cli import (
    DEFAULT_SEEDS,
    build_parser,
    main,
    parse_args,
)
from .compare import (
    Comparison,
    comparisons,
    report,
)
from .pool import DataSpec, Run, RunPool
from .runner import (
    Target,
    check_stored,
    reevaluate,
    runs_needed,
    select_targets,
    train_and_test,
)
from .transfer import (
    Shape,
    placed,
    transfer_prefix,
)

__all__ = [
    "Comparison",
    "DEFAULT_SEEDS",
    "Shape",
    "DataSpec",
    "Run",
    "RunPool",
    "Target",
    "base_budget",
    "budget_names",
    "build_parser",
    "check_stored",
    "comparisons",
    "main",
    "named_budget",
    "parse_args",
    "placed",
    "reevaluate",
    "report",
    "resolve_budget",
    "runs_needed",
    "select_targets",
    "top_rung_budget",
    "train_and_test",
    "transfer_prefix",
]
