"""Successive halving across budgets, in the asynchronous multi-objective form (ASHA, MOASHA).

A study searched with ``--rungs R`` (R > 1) trains its designs at R budgets, the rungs: the top
rung (R - 1) is the study's `budget`; each rung below it is the same `TrainConfig` with 1/eta of
the images of the rung above (`train.rung_budget`), its schedule complete within the rung. New
designs are sampled and trained at the bottom rung (0). A design is promoted from rung k to
rung k + 1, retrained there from scratch with the same seed, when it is among the best
``floor(n / eta)`` of the n designs finished at rung k so far, ranked by non-dominated sorting on
the study's objectives with the crowding distance breaking ties (`rank_order`). Every worker on
every machine looks for such a promotion before it samples a new design (`next_promotion`), so
nobody waits for a rung to fill.

Storage layout: one Optuna study per rung, in the same storage. The top rung keeps the study's
own name (and its `StudyConfig`), so everything that reads a study (the summary, the exporter,
``explorer.evaluate``, the dashboard, plain ``optuna.load_study``) reads the top rung's results;
the rungs below are the studies ``NAME@rung0``, ``NAME@rung1``, ...; their user attributes say
whose rung they are. The sampler proposes in the bottom rung only, so it learns from one rung's
values; a promotion is a queued trial of the rung above with the same params and the user
attributes ``rung``, ``parent`` (the trial number in the rung below) and ``promotion`` (its rank
and among how many designs). The v1 and v2 references are queued at every rung. A study with one
rung is a single-budget search: its only rung is the study itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from .records import StudyConfig, TrialRecord, trial_attr
from .results import OBJECTIVES

RUNG_SUFFIX = re.compile(r"@rung(?P<rung>[0-9]+)$")
DEFAULT_RUNGS = 3
DEFAULT_ETA = 3


def rung_study_name(name: str, rung: int, rungs: int) -> str:
    """The Optuna study holding rung `rung` of study `name`: the study itself for the top rung."""
    return name if rung == rungs - 1 else f"{name}@rung{rung}"


def is_rung_study(name: str) -> bool:
    """Whether a study name is a lower rung of another study (``NAME@rung0``)."""
    return RUNG_SUFFIX.search(name) is not None


def rung_of_name(name: str) -> tuple[str, int] | None:
    """(the study's name, the rung) for a lower rung's study name, else None."""
    match = RUNG_SUFFIX.search(name)
    return (name[: match.start()], int(match["rung"])) if match else None


def create_lower_rungs(
    storage: optuna.storages.BaseStorage, study: optuna.Study, config: StudyConfig
) -> list[optuna.Study]:
    """Create (or load) the studies of the rungs below the top; call under the study's lock."""
    out = []
    for rung in range(config.rungs - 1):
        name = rung_study_name(study.study_name, rung, config.rungs)
        try:
            lower = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            lower = optuna.create_study(study_name=name, storage=storage,
                                        directions=study.directions)  # fmt: skip
            lower.set_user_attr("rung_of", study.study_name)
            lower.set_user_attr("rung", rung)
        out.append(lower)
    return out


def rung_studies(
    storage: optuna.storages.BaseStorage, study: optuna.Study, config: StudyConfig | None
) -> list[optuna.Study]:
    """The study's rungs, bottom first, the study itself last; rungs not made yet are left out."""
    rungs = config.rungs if config is not None else 1
    out = []
    for rung in range(rungs - 1):
        try:
            out.append(
                optuna.load_study(
                    study_name=rung_study_name(study.study_name, rung, rungs), storage=storage
                )
            )
        except KeyError:
            continue
    return [*out, study]


def rung_number(study: optuna.Study, config: StudyConfig | None) -> int:
    """Which rung a study (one of `rung_studies`) holds."""
    parsed = rung_of_name(study.study_name)
    if parsed is not None:
        return parsed[1]
    return (config.rungs if config is not None else 1) - 1


# --------------------------------------------------------------------------------------------
# Ranking and promotion


def _vector(record: TrialRecord, objectives: Sequence[str]) -> tuple[float, ...] | None:
    """The record's objectives as values to minimise; a pruned design counts with the accuracy of
    the last epoch it reached."""
    acc = record.last_val_acc()
    if acc is None:
        return None
    out = [-acc]
    for key in objectives[1:]:
        value = record.value(key)
        if value is None:
            return None
        out.append(-value if OBJECTIVES[key].direction == "maximize" else value)
    return tuple(out)


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def _crowding(points: list[tuple[float, ...]]) -> list[float]:
    """NSGA-II's crowding distance of each point within one front (boundary points: infinite)."""
    n = len(points)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][m])
        low, high = points[order[0]][m], points[order[-1]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for j in range(1, n - 1):
            gap = points[order[j + 1]][m] - points[order[j - 1]][m]
            distance[order[j]] += gap / (high - low)
    return distance


def rank_order(records: Sequence[TrialRecord], objectives: Sequence[str]) -> list[TrialRecord]:
    """The records best first: by non-dominated front, then by larger crowding distance within a
    front (spread along the front wins ties), then by trial number. Records without the values
    to rank come last."""
    ranked = [(r, v) for r in records for v in [_vector(r, objectives)] if v is not None]
    unranked = [r for r in records if _vector(r, objectives) is None]
    out: list[TrialRecord] = []
    remaining = ranked
    while remaining:
        front = [(r, v) for r, v in remaining if not any(_dominates(w, v) for _, w in remaining)]
        distance = _crowding([v for _, v in front])
        order = sorted(range(len(front)), key=lambda i: (-distance[i], front[i][0].number))
        out += [front[i][0] for i in order]
        chosen = {id(r) for r, _ in front}
        remaining = [(r, v) for r, v in remaining if id(r) not in chosen]
    return out + sorted(unranked, key=lambda r: r.number)


def finished_designs(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The searched designs that finished a rung (complete or stopped early), each design once:
    references, skipped designs and copies of an earlier trial of the same design are left out."""
    return [
        r
        for r in records
        if r.state in ("COMPLETE", "PRUNED")
        and not r.reference
        and not r.skipped
        and r.duplicate_of is None
    ]


@dataclass(frozen=True)
class Promotion:
    """A design to train at the next rung: its record at its rung, its rank there and among how
    many finished designs."""

    record: TrialRecord
    rank: int
    among: int

    def attrs(self, to_rung: int) -> dict:
        return {
            "rung": to_rung,
            "parent": self.record.number,
            "promotion": {"from_rung": to_rung - 1, "rank": self.rank, "among": self.among},
        }


def promotable(
    records: Sequence[TrialRecord], promoted: set[int], eta: int, objectives: Sequence[str]
) -> list[Promotion]:
    """The designs of one rung to promote now, best first: complete designs among the best
    ``floor(n / eta)`` of the n finished so far that have not been promoted (`promoted`: the
    parents of the rung above)."""
    finished = finished_designs(records)
    quota = len(finished) // eta
    order = rank_order(finished, objectives)[:quota]
    return [
        Promotion(r, rank, len(finished))
        for rank, r in enumerate(order)
        if r.complete and r.number not in promoted and r.network is not None and r.suggested
    ]


def parents(study: optuna.Study) -> set[int]:
    """Trial numbers of the rung below that already have a trial (in any state) in `study`."""
    out = set()
    for t in study.get_trials(deepcopy=False):
        parent = trial_attr(t, "parent")
        if isinstance(parent, int):
            out.add(parent)
    return out


def next_promotion(
    studies: Sequence[optuna.Study], config: StudyConfig
) -> tuple[int, Promotion] | None:
    """The promotion to run now, highest rung first: (the rung it goes to, the promotion)."""
    for rung in reversed(range(len(studies) - 1)):
        records = [
            TrialRecord.from_trial(t)
            for t in studies[rung].get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
            )
        ]
        found = promotable(records, parents(studies[rung + 1]), config.eta, config.objectives)
        if found:
            return rung + 1, found[0]
    return None


def promote(upper: optuna.Study, to_rung: int, promotion: Promotion) -> None:
    """Queue the design in the rung above; a worker trains it there from scratch."""
    upper.enqueue_trial(
        dict(promotion.record.suggested), user_attrs=promotion.attrs(to_rung), skip_if_exists=False
    )


def lower_running(studies: Sequence[optuna.Study]) -> bool:
    """Whether a design is being trained below the top rung (its result may promote it)."""
    return any(s.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) for s in studies[:-1])


# --------------------------------------------------------------------------------------------
# Reading a study's rungs


def rung_records(
    storage: optuna.storages.BaseStorage, study: optuna.Study, config: StudyConfig | None
) -> dict[int, list[TrialRecord]]:
    """Every rung's trial records, by rung (the top rung's re-evaluations included)."""
    from .results import study_records

    out = {}
    for s in rung_studies(storage, study, config):
        rung = rung_number(s, config)
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
        searched = [r for r in records if not r.reference and not r.skipped]
        out[rung] = {
            "finished": sum(r.state in ("COMPLETE", "PRUNED") for r in searched),
            "complete": sum(r.complete for r in searched),
            "pruned": sum(r.state == "PRUNED" for r in searched),
            "running": sum(r.state == "RUNNING" for r in searched),
            "waiting": sum(r.state == "WAITING" for r in searched),
            "failed": sum(r.state == "FAIL" for r in searched),
        }
    return out
