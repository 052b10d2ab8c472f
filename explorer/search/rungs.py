"""Successive halving across budgets, in the asynchronous multi-objective form (ASHA, MOASHA).

A study searched with ``--rungs R`` (R > 1) trains its designs at R budgets, the rungs: the top
rung (R - 1) is the study's `budget`; each rung below it is the same `TrainConfig` with 1/eta of
the images of the rung above (`explorer.training.rung_budget`), its schedule complete within the rung. New
designs are sampled and trained at the bottom rung (0). A design is promoted from rung k to
rung k + 1, retrained there from scratch with the same seed, when it is among the best
``floor(n / eta)`` of the n designs finished at rung k so far, ranked by non-dominated sorting on
the study's objectives with the crowding distance breaking ties (`rank_order`). Every worker on
every machine looks for such a promotion before it samples a new design (`promotion_candidates`,
see `explorer.search.next_work`), so nobody waits for a rung to fill.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import optuna

from ..analysis import RecordCache, finished_designs, rank_order
from ..store import (
    StudyConfig,
    TrialRecord,
    rung_study_name,
    storage_of,
    study_id,
    trial_attr,
)

# One budget: at equal wall time on a 2-core CPU the single-budget search returned the better
# front on every seed measured, against three rungs (BENCHMARKS.md, "Search strategies at equal
# wall time"); --rungs R keeps successive halving for those who want it.
DEFAULT_RUNGS = 1
DEFAULT_ETA = 3
# The fewest training images per epoch a rung trains on: smoke's 512, at which v1 reaches 0.40-0.50
# validation accuracy on Fashion-MNIST. At 57 (smoke / 9, the bottom of three rungs under --budget
# smoke) it scored 0.074, below the 0.10 of guessing: such a rung ranks designs by noise.
MIN_RUNG_IMAGES = 512
# The fewest designs a search should bring to its top rung, to draw a front there.
MIN_TOP_DESIGNS = 5


def fitting_rungs(rungs: int, eta: int, trials: int, top_images: int | None) -> tuple[int, str]:
    """The most rungs, up to `rungs`, that a new search of `trials` designs whose top rung trains
    on `top_images` images per epoch (None: the whole split) can use: its bottom rung trains on at
    least `MIN_RUNG_IMAGES` images, and about `MIN_TOP_DESIGNS` designs reach its top rung
    (``trials / eta^(rungs-1)``). Returns (rungs, why fewer; empty when none were dropped)."""
    fit, why = rungs, ""
    while fit > 1:
        shrink = eta ** (fit - 1)
        if top_images is not None and top_images / shrink < MIN_RUNG_IMAGES:
            why = (
                f"a bottom rung of {top_images // shrink} images per epoch (1/{shrink} of "
                f"{top_images:,}) would train no better than chance"
            )
        elif trials / shrink < MIN_TOP_DESIGNS:
            why = (
                f"{trials} designs would bring {trials / shrink:.1f} to the top rung, fewer than "
                f"the {MIN_TOP_DESIGNS} a front needs"
            )
        else:
            break
        fit -= 1
    return fit, why


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


# --------------------------------------------------------------------------------------------
# Ranking and promotion


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


def parents(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """Trial numbers of the rung below that already have a trial (in any state) among `trials`
    (a rung's trials)."""
    out = set()
    for t in trials:
        parent = trial_attr(t, "parent")
        if isinstance(parent, int):
            out.add(parent)
    return out


def promotion_candidates(
    rungs: Mapping[int, optuna.Study], config: StudyConfig, cache: RecordCache
) -> list[tuple[int, Promotion]]:
    """Every promotion earned so far, as (the rung it goes to, the promotion): highest rung first,
    best first within a rung. Read and ranked without the study's lock, from a snapshot; the
    claim checks under the lock that each is still unpromoted (`parents`)."""
    out = []
    for rung in sorted(rungs, reverse=True):
        if rung + 1 not in rungs:
            continue
        records = cache.finished(rungs[rung])
        promoted = parents(rungs[rung + 1].get_trials(deepcopy=False))
        found = promotable(records, promoted, config.eta, config.objectives)
        out += [(rung + 1, p) for p in found]
    return out


def promote(
    upper: optuna.Study, to_rung: int, promotion: Promotion, take: bool = False
) -> int | None:
    """Put the design in the rung above, where a worker trains it from scratch: queued (WAITING)
    for any worker, or with `take` made RUNNING at once for the caller, who holds the study's lock
    (one write, where queueing and taking cost a write, a read and another write); then its trial
    id."""
    params = dict(promotion.record.suggested)
    if not take:
        upper.enqueue_trial(params, user_attrs=promotion.attrs(to_rung), skip_if_exists=False)
        return None
    template = optuna.trial.FrozenTrial(
        number=-1,
        state=optuna.trial.TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs=promotion.attrs(to_rung),
        system_attrs={"fixed_params": params},  # as a queued trial's, read by Trial's suggest
        intermediate_values={},
        trial_id=-1,
    )
    return storage_of(upper).create_new_trial(study_id(upper), template_trial=template)


# --------------------------------------------------------------------------------------------
# Reading a study's rungs
