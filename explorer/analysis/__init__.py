"""Judging designs: dominance, non-dominated sorting and crowding (`fronts`, the one
implementation), hypervolume (`hypervolume`), reading a study's records with their
re-evaluations and rungs (`studies`), the stored re-evaluations (`reevals`), and the one rule by
which the tool states a difference between designs (`verdicts`).

May import: `explorer.training`, `explorer.store`, `explorer.usage`, `search_space`. Nothing here
runs a search or trains for a study.
"""

from .fronts import (
    DEFAULT_OBJECTIVES,
    OBJECTIVES,
    ObjectiveInfo,
    crowding,
    dominates,
    feasible,
    non_dominated_fronts,
    objective_vector,
    pareto_front,
    rank_order,
)
from .hypervolume import (
    HypervolumeSpec,
    dominated_volume,
    hypervolume,
    hypervolume_curve,
    hypervolume_spec,
    largest_design,
)
from .reevals import (
    ATTR_PREFIX,
    LONG,
    Budget,
    Reeval,
    reeval_key,
    reeval_results,
)
from .studies import (
    RecordCache,
    design_path,
    finished_designs,
    rung_counts,
    rung_records,
    study_records,
)
from .verdicts import (
    ALPHA,
    BETTER,
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
    "BETTER",
    "RULE",
    "WORSE",
    "RacePlan",
    "RaceState",
    "Verdict",
    "compare",
    "holm",
    "paired",
    "race_verdicts",
    "ATTR_PREFIX",
    "Budget",
    "DEFAULT_OBJECTIVES",
    "HypervolumeSpec",
    "LONG",
    "OBJECTIVES",
    "ObjectiveInfo",
    "RecordCache",
    "Reeval",
    "crowding",
    "design_path",
    "dominated_volume",
    "dominates",
    "feasible",
    "finished_designs",
    "hypervolume",
    "hypervolume_curve",
    "hypervolume_spec",
    "largest_design",
    "non_dominated_fronts",
    "objective_vector",
    "pareto_front",
    "rank_order",
    "reeval_key",
    "reeval_results",
    "rung_counts",
    "rung_records",
    "study_records",
]
