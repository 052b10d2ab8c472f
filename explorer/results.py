"""Reading a study back as results: Pareto fronts and hypervolume over `TrialRecord`s.

What a trial stores, and how it is read back, is `explorer.records`; this module ranks records.
`explorer.evaluate` keeps its re-evaluations as study attributes ``reeval:<trial number>``;
`study_records` attaches each to its record as ``reeval``.
"""

from __future__ import annotations

from typing import NamedTuple

import optuna
from optuna.trial import FrozenTrial

from .records import REEVAL_PREFIX, TrialRecord


class ObjectiveInfo(NamedTuple):
    key: str
    direction: str  # "maximize" or "minimize"
    label: str


OBJECTIVES: dict[str, ObjectiveInfo] = {
    "val_acc": ObjectiveInfo("val_acc", "maximize", "validation accuracy"),
    "params": ObjectiveInfo("params", "minimize", "parameters"),
    "flops": ObjectiveInfo("flops", "minimize", "FLOPs per image (2 x multiply-adds)"),
    "latency_ms": ObjectiveInfo("latency_ms", "minimize", "latency at batch 1 (ms)"),
}
DEFAULT_OBJECTIVES = ("val_acc", "params")

# The fixed reference point for hypervolume on (validation accuracy, parameters): accuracy 0 and
# 400,000 parameters, a little above the largest design of the default space (383,698).
HV_REFERENCE = {"val_acc": 0.0, "params": 400_000}


def trial_record(trial: FrozenTrial) -> TrialRecord:
    """A `TrialRecord` for a stored trial; never raises on bad stored data."""
    return TrialRecord.from_trial(trial)


def study_records(study: optuna.Study) -> list[TrialRecord]:
    """All trials of a study as records, in trial-number order, each with its re-evaluation
    (the study attribute ``reeval:<number>``, when there is one) as ``reeval``."""
    reevals = {}
    for key, value in study.user_attrs.items():
        suffix = key[len(REEVAL_PREFIX) :]
        if key.startswith(REEVAL_PREFIX) and suffix.isdigit() and isinstance(value, dict):
            reevals[int(suffix)] = value
    return [
        TrialRecord.from_trial(t, reevals.get(t.number)) for t in study.get_trials(deepcopy=False)
    ]


def objective_vector(record: TrialRecord, objectives: tuple[str, ...]) -> tuple[float, ...] | None:
    """Objective values turned to minimisation (accuracy negated); None if any is missing."""
    out = []
    for key in objectives:
        value = record.value(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        out.append(-float(value) if OBJECTIVES[key].direction == "maximize" else float(value))
    return tuple(out)


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether minimisation vector `a` Pareto-dominates `b`."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(
    records: list[TrialRecord], objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
) -> list[TrialRecord]:
    """The complete trials no other complete trial dominates, sorted by the last objective."""
    points = [
        (r, v)
        for r in records
        if r.complete and r.network is not None
        for v in [objective_vector(r, objectives)]
        if v is not None
    ]
    front = [r for r, v in points if not any(dominates(w, v) for _, w in points)]
    return sorted(front, key=lambda r: r.value(objectives[-1]))


def hypervolume(records: list[TrialRecord], reference: dict[str, float] | None = None) -> float:
    """Normalised hypervolume of (validation accuracy, parameters) against a fixed point.

    The dominated area between the front and `reference` (default `HV_REFERENCE`), divided by the
    area of the box from (accuracy 1, 0 parameters) to the reference, so it lies in [0, 1].
    """
    ref = reference or HV_REFERENCE
    acc_ref, p_ref = ref["val_acc"], ref["params"]
    pts = sorted(
        (r.params, r.val_acc)
        for r in pareto_front(records, ("val_acc", "params"))
        if r.params < p_ref and r.val_acc > acc_ref
    )
    area, best = 0.0, acc_ref
    # Sweep from most to fewest parameters would double count; sweep left to right instead.
    for i, (p, acc) in enumerate(pts):
        nxt = pts[i + 1][0] if i + 1 < len(pts) else p_ref
        best = max(best, acc)
        area += (nxt - p) * (best - acc_ref)
    return area / ((1.0 - acc_ref) * p_ref)


def hypervolume_curve(records: list[TrialRecord]) -> list[tuple[int, float]]:
    """(trial number, hypervolume of all complete trials up to it) for each complete trial.

    Keeps only the running front, so a long study costs about n x front size, not n squared.
    """
    done = sorted((r for r in records if r.complete), key=lambda r: r.number)
    front: list[TrialRecord] = []
    curve = []
    for r in done:
        front = pareto_front([*front, r], ("val_acc", "params"))
        curve.append((r.number, hypervolume(front)))
    return curve
