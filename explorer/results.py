"""Reading a study back as plain data: one `TrialRecord` per trial, Pareto fronts, hypervolume.

The search writes, for each trial, these user attributes (the schema every reader relies on):

=================  ==========================================================================
``network``        `NetworkConfig.to_dict()` (the block design is ``network["block"]``)
``reference``      ``"v1"``, ``"v2"``, ... for reference trials; absent for searched designs
``params``         trainable parameters (int)
``flops``          FLOPs per image for one forward pass, counted as 2 x multiply-adds
``latency_ms``     median forward latency at batch 1 on the trial's device, milliseconds
``latency_batch_ms``  the same at the training batch size
``val_acc``        final validation accuracy in [0, 1]; ``test_acc`` where it was measured
``curves``         per-epoch lists: ``epoch``, ``train_loss``, ``val_loss``, ``val_acc``
``train_time_s``, ``images_per_s``, ``device``, ``budget``, ``seed``, ``dataset``, ``versions``
``fail_reason``    one line, on failed trials; ``pruned_at_epoch`` on pruned ones
``duplicate_of``   the earlier trial of the same design whose results this one copies (seeded
                   training would repeat them), instead of training again
``weights``        artifact id of the trained state dict, when the search kept weights
``proxies``        zero-cost proxy scores at initialisation (`explorer.proxies`); None = undefined
``prescreen``      on pre-screened trials: the candidates drawn, their scores, the one chosen
=================  ==========================================================================

`explorer.evaluate` keeps its re-evaluations as study attributes ``reeval:<trial number>``;
`study_records` copies each into its record's ``attrs["reeval"]``.

Nothing here trusts the storage: a record whose design does not validate has ``block=None`` and
says why in ``problem``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_space import BlockConfig, NetworkConfig


class Objective(NamedTuple):
    key: str
    direction: str  # "maximize" or "minimize"
    label: str


OBJECTIVES: dict[str, Objective] = {
    "val_acc": Objective("val_acc", "maximize", "validation accuracy"),
    "params": Objective("params", "minimize", "parameters"),
    "flops": Objective("flops", "minimize", "FLOPs per image (2 x multiply-adds)"),
    "latency_ms": Objective("latency_ms", "minimize", "latency at batch 1 (ms)"),
}
DEFAULT_OBJECTIVES = ("val_acc", "params")

# The fixed reference point for hypervolume on (validation accuracy, parameters): accuracy 0 and
# 400,000 parameters, a little above the largest design of the default space (383,698).
HV_REFERENCE = {"val_acc": 0.0, "params": 400_000}


@dataclass(frozen=True)
class TrialRecord:
    """One trial as plain data, whatever its state."""

    number: int
    state: str
    reference: str | None
    network: NetworkConfig | None
    values: dict[str, float] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def block(self) -> BlockConfig | None:
        return self.network.block if self.network is not None else None

    @property
    def is_reference(self) -> bool:
        return self.reference is not None

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    def get(self, key: str, default: Any = None) -> Any:
        """An objective or attribute by name (``val_acc``, ``params``, ``flops``, ...)."""
        value = self.attrs.get(key, default)
        if isinstance(value, float) and not math.isfinite(value):
            return default
        return value

    def label(self) -> str:
        return self.reference or f"#{self.number}"


def trial_record(trial: FrozenTrial) -> TrialRecord:
    """A `TrialRecord` for a stored trial; never raises on bad stored data."""
    attrs = dict(trial.user_attrs)
    network = None
    problem = None
    raw = attrs.get("network")
    if raw is not None:
        try:
            network = NetworkConfig.from_dict(raw)
        except (ValueError, TypeError) as exc:
            problem = f"invalid stored design: {exc}"
    reference = attrs.get("reference")
    if not (reference is None or isinstance(reference, str)):
        reference = str(reference)
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        reference=reference,
        network=network,
        attrs=attrs,
        params=dict(trial.params),
        problem=problem,
    )


REEVAL_PREFIX = "reeval:"


def study_records(study: optuna.Study) -> list[TrialRecord]:
    """All trials of a study as records, in trial-number order, each with its re-evaluation
    (the study attribute ``reeval:<number>``, when there is one) as ``attrs["reeval"]``."""
    reevals = {}
    for key, value in study.user_attrs.items():
        suffix = key[len(REEVAL_PREFIX) :]
        if key.startswith(REEVAL_PREFIX) and suffix.isdigit() and isinstance(value, dict):
            reevals[int(suffix)] = value
    records = []
    for t in study.get_trials(deepcopy=False):
        record = trial_record(t)
        if t.number in reevals:
            record.attrs["reeval"] = reevals[t.number]
        records.append(record)
    return records


def objective_vector(record: TrialRecord, objectives: tuple[str, ...]) -> tuple[float, ...] | None:
    """Objective values turned to minimisation (accuracy negated); None if any is missing."""
    out = []
    for key in objectives:
        value = record.get(key)
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
    return sorted(front, key=lambda r: r.get(objectives[-1]))


def hypervolume(records: list[TrialRecord], reference: dict[str, float] | None = None) -> float:
    """Normalised hypervolume of (validation accuracy, parameters) against a fixed point.

    The dominated area between the front and `reference` (default `HV_REFERENCE`), divided by the
    area of the box from (accuracy 1, 0 parameters) to the reference, so it lies in [0, 1].
    """
    ref = reference or HV_REFERENCE
    acc_ref, p_ref = ref["val_acc"], ref["params"]
    pts = sorted(
        (r.get("params"), r.get("val_acc"))
        for r in pareto_front(records, ("val_acc", "params"))
        if r.get("params") < p_ref and r.get("val_acc") > acc_ref
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


STATE_NAMES = tuple(s.name for s in TrialState)
