"""Reading a study back as results: Pareto fronts and hypervolume over `TrialRecord`s.

What a trial stores, and how it is read back, is `explorer.records`; this module ranks records.
`explorer.evaluate` keeps its re-evaluations as study attributes ``reeval:<trial number>``;
`study_records` attaches each to its record as ``reeval``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import optuna
from optuna.trial import FrozenTrial

from .records import REEVAL_PREFIX, StudyConfig, TrialRecord


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


def feasible(record: TrialRecord) -> bool:
    """Whether a trial meets every limit of its study (``--max-params`` and the like)."""
    return all(v <= 0 for v in record.constraint_values or ())


def pareto_front(
    records: list[TrialRecord], objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
) -> list[TrialRecord]:
    """The complete, feasible trials no other such trial dominates on `objectives` (the study's,
    `StudyConfig.objectives`), sorted by the last objective."""
    points = [
        (r, v)
        for r in records
        if r.complete and r.network is not None and feasible(r)
        for v in [objective_vector(r, objectives)]
        if v is not None
    ]
    front = [r for r, v in points if not any(dominates(w, v) for _, w in points)]
    return sorted(front, key=lambda r: r.value(objectives[-1]))


class HypervolumeSpec(NamedTuple):
    """What a hypervolume is measured over: the objectives and the reference point, each
    objective's worst value counted (accuracy 0; the largest design of the space at the study's
    width for parameters and FLOPs; latency a tenth above the slowest trial's)."""

    objectives: tuple[str, ...]
    reference: dict[str, float]

    def describe(self) -> str:
        parts = [f"{k} {_short(self.reference[k])}" for k in self.objectives]
        return f"over ({', '.join(self.objectives)}) against ({', '.join(parts)})"


def _short(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:g}"


@functools.lru_cache(maxsize=32)
def largest_design(dataset: str = "fashion-mnist", width: float = 0.25) -> tuple[int, float]:
    """(parameters, FLOPs per image) of the space's largest design at `width` in the network the
    search builds for `dataset`: every width at its maximum, each choice the costliest."""
    import itertools

    from search_space import DEFAULT_SPACE, NetworkConfig, network_params

    from .data import DATASETS
    from .metrics import count_flops

    info = DATASETS[dataset]
    widest = {d.name: d.high for d in DEFAULT_SPACE.dimensions if d.high is not None}
    choices = [d for d in DEFAULT_SPACE.dimensions if d.choices]
    best = None
    for combo in itertools.product(*(d.choices for d in choices)):
        params = widest | {d.name: v for d, v in zip(choices, combo)}
        try:
            block = DEFAULT_SPACE.config_from_params(params)
            net = NetworkConfig(block=block, in_channels=info.channels, num_classes=info.num_classes,
                                image_size=info.image_size, width=width)  # fmt: skip
        except ValueError:
            continue
        count = network_params(net)
        if best is None or count > best[0]:
            best = (count, net)
    assert best is not None, "the space has no valid design"
    from search_space import build_network

    flops = count_flops(build_network(best[1]), (info.channels, info.image_size, info.image_size))
    return best[0], float(flops)


def hypervolume_spec(
    config: StudyConfig | None, records: list[TrialRecord] = ()
) -> HypervolumeSpec:
    """The hypervolume a study is judged by: over its objectives, against a reference point from
    its space, dataset and width (`HypervolumeSpec`)."""
    objectives = config.objectives if config is not None else DEFAULT_OBJECTIVES
    dataset = config.dataset if config is not None else "fashion-mnist"
    width = config.width if config is not None else 0.25
    reference: dict[str, float] = {"val_acc": 0.0}
    if "params" in objectives or "flops" in objectives:
        params, flops = largest_design(dataset, width)
        reference["params"], reference["flops"] = float(params), flops
    if "latency_ms" in objectives:
        slowest = max((r.latency_ms for r in records if r.latency_ms is not None), default=1.0)
        reference["latency_ms"] = 1.1 * slowest
    return HypervolumeSpec(objectives, {k: reference[k] for k in objectives})


def hypervolume(records: list[TrialRecord], spec: HypervolumeSpec | None = None) -> float:
    """Normalised hypervolume of the front on `spec`'s objectives against its reference point.

    The volume the front dominates inside the box from the ideal point (accuracy 1, every cost 0)
    to the reference point, divided by that box's volume, so it lies in [0, 1]. Designs beyond the
    reference point on any objective add nothing. The default spec is (accuracy, parameters) in
    the default network (`hypervolume_spec(None)`).
    """
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    spec = spec or hypervolume_spec(None)
    ref = np.array(
        [
            -spec.reference[k] if OBJECTIVES[k].direction == "maximize" else spec.reference[k]
            for k in spec.objectives
        ]  # fmt: skip
    )
    ideal = np.array([-1.0 if OBJECTIVES[k].direction == "maximize" else 0.0
                      for k in spec.objectives])  # fmt: skip
    scale = ref - ideal
    points = [
        (np.array(v) - ideal) / scale
        for r in pareto_front(records, spec.objectives)
        for v in [objective_vector(r, spec.objectives)]
        if v is not None and all(x < y for x, y in zip(v, ref))
    ]
    if not points:
        return 0.0
    return float(compute_hypervolume(np.array(points), np.ones(len(ref))))


def hypervolume_curve(
    records: list[TrialRecord], spec: HypervolumeSpec | None = None
) -> list[tuple[int, float]]:
    """(trial number, hypervolume of all complete trials up to it) for each complete trial.

    Keeps only the running front, so a long study costs about n x front size, not n squared.
    """
    spec = spec or hypervolume_spec(None)
    done = sorted((r for r in records if r.complete), key=lambda r: r.number)
    front: list[TrialRecord] = []
    curve = []
    for r in done:
        front = pareto_front([*front, r], spec.objectives)
        curve.append((r.number, hypervolume(front, spec)))
    return curve
