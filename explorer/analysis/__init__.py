"""Judging designs: dominance, non-dominated sorting and crowding (`fronts`, the one
implementation), hypervolume (`hypervolume`), reading a study's records with their
re-evaluations and rungs (`reading`), the stored re-evaluations (`reevals`), and the one rule by
which the tool states a difference between designs (`verdicts`).

May import: `explorer.training`, `explorer.store`, `explorer.usage`, `search_space`. Nothing here
runs a search or trains for a study.
"""

from .fronts import (
    DEFAULT_OBJECTIVES,
    OBJECTIVES,
    dominates,
    feasible,
    non_dominated_fronts,
    pareto_front,
    rank_order,
)
from .hypervolume import (
    HypervolumeSpec,
    hypervolume,
    hypervolume_curve,
    hypervolume_spec,
)
from .reading import (
    RecordCache,
    design_path,
    finished_designs,
    rung_counts,
    rung_records,
    study_records,
)
from .reevals import (
    ATTR_PREFIX,
    LONG,
    Budget,
    Reeval,
    reeval_results,
)
from .verdicts import (
    ALPHA,
    BETTER,
    MAX_CAP,
    OPEN,
    RULE,
    WORSE,
    RacePlan,
    RaceState,
    Verdict,
    compare,
    holm,
    paired,
    race_verdicts,
)

__all__ = [
    "ALPHA",
    "ATTR_PREFIX",
    "BETTER",
    "Budget",
    "DEFAULT_OBJECTIVES",
    "HypervolumeSpec",
    "LONG",
    "MAX_CAP",
    "OBJECTIVES",
    "OPEN",
    "RULE",
    "RacePlan",
    "RaceState",
    "RecordCache",
    "Reeval",
    "Verdict",
    "WORSE",
    "compare",
    "design_path",
    "dominates",
    "feasible",
    "finished_designs",
    "holm",
    "hypervolume",
    "hypervolume_curve",
    "hypervolume_spec",
    "non_dominated_fronts",
    "paired",
    "pareto_front",
    "race_verdicts",
    "rank_order",
    "reeval_results",
    "rung_counts",
    "rung_records",
    "study_records",
]
