"""Reading a study back as `TrialRecord`s: every trial with its re-evaluation attached, every rung of a
successive-halving study, a design's path across rungs, and the per-rung counts."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

from ..store import REEVAL_PREFIX, StudyConfig, TrialRecord, rung_studies


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


def finished_designs(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The searched designs that finished a rung (complete or stopped early), each design once:
    references, skipped designs and copies of an earlier trial of the same design are left out."""
    return [
        r
        for r in records
        if r.state in ("COMPLETE", "PRUNED") and r.is_search and r.duplicate_of is None
    ]


def rung_records(
    storage: optuna.storages.BaseStorage, study: optuna.Study, config: StudyConfig | None
) -> dict[int, list[TrialRecord]]:
    """Every rung's trial records, by rung (the top rung's re-evaluations included)."""

    out = {}
    for rung, s in rung_studies(storage, study, config).items():
        out[rung] = study_records(s) if s is study else [
            TrialRecord.from_trial(t) for t in s.get_trials(deepcopy=False)
        ]  # fmt: skip
    return out


def design_path(
    by_rung: dict[int, list[TrialRecord]], rung: int, number: int
) -> list[tuple[int, TrialRecord]]:
    """A design's trials across rungs, bottom first: the trial `number` of rung `rung`, the
    trials it was promoted from and those it was promoted to (the latest run of each rung)."""
    index = {k: {r.number: r for r in records} for k, records in by_rung.items()}
    record = index.get(rung, {}).get(number)
    if record is None:
        return []
    path = [(rung, record)]
    k, r = rung, record
    while k - 1 in index and r.parent is not None and r.parent in index[k - 1]:
        k, r = k - 1, index[k - 1][r.parent]
        path.insert(0, (k, r))
    k, r = rung, record
    while k + 1 in index:
        children = [c for c in by_rung[k + 1] if c.parent == r.number]
        if not children:
            break
        k, r = k + 1, max(children, key=lambda c: c.number)
        path.append((k, r))
    return path


def rung_counts(by_rung: dict[int, list[TrialRecord]]) -> dict[int, dict[str, int]]:
    """Per rung: designs finished, running, queued, failed (references not counted)."""
    out = {}
    for rung, records in sorted(by_rung.items()):
        searched = [r for r in records if r.is_search]
        out[rung] = {
            "finished": sum(r.state in ("COMPLETE", "PRUNED") for r in searched),
            "complete": sum(r.complete for r in searched),
            "pruned": sum(r.state == "PRUNED" for r in searched),
            "running": sum(r.state == "RUNNING" for r in searched),
            "waiting": sum(r.state == "WAITING" for r in searched),
            "failed": sum(r.state == "FAIL" for r in searched),
        }
    return out


class RecordCache:
    """The records of finished trials, each built once: a finished trial never changes, and a
    worker that reads a study of thousands of trials at every claim builds only the new ones."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, int], TrialRecord] = {}

    def finished(self, study: optuna.Study) -> list[TrialRecord]:
        """The study's complete and pruned trials as records, in trial-number order."""
        out = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            key = (study.study_name, t.number)
            record = self._records.get(key)
            if record is None:
                record = self._records[key] = TrialRecord.from_trial(t)
            out.append(record)
        return out
