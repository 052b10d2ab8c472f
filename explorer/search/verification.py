"""Verified claims: a search's claims against v1 and v2, retrained at a longer budget before the
summary states them.

A front design *claims* to beat a reference when the search scored it more accurate with no more
parameters. At a cheap budget such claims are often wrong: the ``quick`` budget favours small
designs that learn fast, and most claims it made against v1 reversed when the designs were
retrained ten times longer; a check at three times longer still upheld most of those (BENCHMARKS.md,
"Search strategies at equal wall time"). `verify` retrains every claimant and the references it
claims against at `VERIFY_FACTOR` times the search's top budget (what ``python -m
explorer.evaluate`` calls ``long``), or at a budget given by name, with seeds `VERIFY_FIRST_SEED`
onwards, and stores the runs as study attributes ``verify:<trial>`` (apart from
`explorer.evaluate`'s re-evaluations, whose seeds 0, 1, ... it thus never repeats).
`verified_claims` then says which claims hold: the claimant's mean test accuracy over the seeds
above the reference's, on the same seeds, by more than two runs differ by their seeds alone
(`VERIFY_MARGIN`; without that margin, 2 of the 9 claims the default search stated over 3 seeds
reversed when judged, BENCHMARKS.md). The references go first, then the claimants the search
scored highest (the strongest claims, which are also the ones that held when trained longer), so a
deadline that cuts the work short leaves the weakest claims unchecked, and unstated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from ..analysis.fronts import DEFAULT_OBJECTIVES, pareto_front
from ..analysis.reevals import Budget, Reeval, reeval_results
from ..analysis.studies import study_records
from ..evaluate.budgets import named_budget
from ..evaluate.runner import Target, reevaluate
from ..store.records import StudyConfig, TrialRecord
from ..training import budgets

VERIFY_PREFIX = "verify:"
VERIFY_FACTOR = budgets.LONG_FACTOR
VERIFY_FIRST_SEED = 100
# How far a claimant's verified test accuracy must be above its reference's for the claim to hold,
# with one seed: the spread of the difference between two runs that differ only in their seed.
# Three Fashion-MNIST studies' designs retrained at quickx10 with 3 seeds each (33 designs,
# BENCHMARKS.md "Re-evaluation of the default study's front (long budget)" and "Successive halving:
# does the front hold?") spread 0.0050 per run (pooled sd), so the difference of two single runs
# spreads 0.0050 * sqrt(2) = 0.0071. With K seeds the margin is that over sqrt(K), the spread of
# the difference of two K-seed means.
VERIFY_MARGIN = 0.007
# The share of a run's time the verification gets: with --timeout, its last quarter; without, a
# third of the time the search took (the same split).
VERIFY_SHARE = 0.25


@dataclass(frozen=True)
class ClaimCheck:
    """One claim of the search: `design` more accurate than `reference` with no more parameters.
    `holds` is None while either side lacks a verification run."""

    design: TrialRecord
    reference: TrialRecord
    design_acc: float | None = None
    reference_acc: float | None = None
    seeds: int = 0

    @property
    def holds(self) -> bool | None:
        """True when the claimant's verified accuracy is above the reference's by more than
        `claim_margin` of the seeds both have: more than two runs differ by their seeds alone."""
        if self.design_acc is None or self.reference_acc is None:
            return None
        return self.design_acc - self.reference_acc > claim_margin(self.seeds)


def claim_margin(seeds: int) -> float:
    """The margin a verified claim must clear with `seeds` seeds on each side (`VERIFY_MARGIN`
    over the square root of the seeds)."""
    return VERIFY_MARGIN / max(seeds, 1) ** 0.5


def verify_budget(config: StudyConfig, name: str | None = None) -> Budget:
    """The budget `name` (one of `budgets.BUDGETS`, or one with xK), or by default
    `VERIFY_FACTOR` times the study's top-rung budget: ``quick`` is verified at ``quickx10``."""
    if name is not None:
        return named_budget(name, budgets.budget(name))
    top = budgets.study_train_config(config)
    name = f"{config.budget}x{VERIFY_FACTOR}"
    if not budgets.is_budget(name):  # quickx9 -> quickx90
        base, _, factor = config.budget.rpartition("x")
        name = f"{base}x{int(factor) * VERIFY_FACTOR}" if factor.isdigit() else name
    return named_budget(name, budgets.scaled(top, VERIFY_FACTOR))


def verification_deadline(now: float, search_s: float, run_deadline: float | None) -> float:
    """When the verification, starting `now`, stops starting runs (`time.monotonic` values): at
    the run's own deadline (its --timeout) when it has one, else after `VERIFY_SHARE` of the
    search and the verification together, the search having taken `search_s` seconds."""
    if run_deadline is not None:
        return run_deadline
    return now + search_s * VERIFY_SHARE / (1 - VERIFY_SHARE)


def search_claims(
    records: Sequence[TrialRecord], objectives=DEFAULT_OBJECTIVES
) -> list[ClaimCheck]:
    """Every (front design, reference) pair where the search scored the design more accurate
    with no more parameters, in the order references then designs by parameters. A design on
    the front several times (the sampler proposed it again and the copy reused its result) is one
    claimant: its first trial."""
    front, seen = [], set()
    for r in sorted(pareto_front(records, objectives), key=lambda r: r.number):
        if not r.reference and r.network is not None and r.network.to_json() not in seen:
            seen.add(r.network.to_json())
            front.append(r)
    refs = [r for r in records if r.reference and r.complete and r.val_acc is not None]
    return [
        ClaimCheck(d, ref)
        for ref in sorted(refs, key=lambda r: r.reference)
        for d in sorted(front, key=lambda r: (r.params or 0, r.number))
        if d.params is not None and ref.params is not None
        and d.params <= ref.params and d.val_acc > ref.val_acc
    ]  # fmt: skip


def verify(
    study: optuna.Study,
    config: StudyConfig,
    seeds: int,
    data: Any,
    device: Any,
    deadline: float | None = None,
    log: Callable[[str], None] | None = None,
    run: Callable[..., tuple[float, float]] | None = None,
    budget_name: str | None = None,
) -> list[ClaimCheck]:
    """Retrain the claimants of `study` and the references they claim against with `seeds` seeds
    at `verify_budget` (runs already stored are kept; a `time.monotonic` `deadline` stops
    starting runs), and return every claim checked against what is stored."""
    records = study_records(study)
    claims = search_claims(records, config.objectives)
    budget = verify_budget(config, budget_name)
    targets: list[Target] = []
    for rec in [c.reference for c in claims] + sorted(
        (c.design for c in claims), key=lambda r: (-r.val_acc, r.number)
    ):
        if all(t.key != rec.number for t in targets):
            targets.append(Target(rec.number, rec.network, rec.reference, rec.val_acc))
    if targets and log is not None:
        log(
            f"verifying {len(claims)} claim(s) against v1/v2: {len(targets)} designs x {seeds} "
            f"seed(s) at {budget.name} ({budget.text})"
        )
    if targets:
        reevaluate(
            study, targets, seeds, budget, data, device, log=log, run=run,
            prefix=VERIFY_PREFIX, deadline=deadline, first_seed=VERIFY_FIRST_SEED,
        )  # fmt: skip
    checks = verified_claims(study, config, records)
    unchecked = sum(c.holds is None for c in checks)
    if unchecked and deadline is not None and log is not None:
        log(
            f"{unchecked} of {len(checks)} claim(s) left unverified: the verification's time ran "
            "out (they are not stated; rerun with --timeout SECONDS to give it until then)"
        )
    return checks


def verified_claims(
    study: optuna.Study,
    config: StudyConfig | None,
    records: Sequence[TrialRecord] | None = None,
) -> list[ClaimCheck]:
    """The study's search claims, each with its verification where one is stored: the two sides'
    mean test accuracy over the seeds both have. `records`: the study's, when the caller has
    them already."""
    objectives = config.objectives if config is not None else DEFAULT_OBJECTIVES
    stored = reeval_results(study, VERIFY_PREFIX)
    out = []
    records = study_records(study) if records is None else records
    for claim in search_claims(records, objectives):
        mine, theirs = stored.get(claim.design.number), stored.get(claim.reference.number)
        if mine is None or theirs is None or mine.budget != theirs.budget:
            out.append(claim)
            continue
        n = min(mine.seeds, theirs.seeds)
        out.append(ClaimCheck(claim.design, claim.reference, _mean(mine, n), _mean(theirs, n), n))
    return out


def _mean(reeval: Reeval, seeds: int) -> float:
    return sum(reeval.test_acc[:seeds]) / seeds


def verification_budget_name(study: optuna.Study) -> str | None:
    """The budget the study's verification runs trained at, or None when it has none."""
    names = {r.budget for r in reeval_results(study, VERIFY_PREFIX).values()}
    return next(iter(sorted(names)), None)


__all__ = [
    "VERIFY_FACTOR",
    "VERIFY_FIRST_SEED",
    "VERIFY_MARGIN",
    "VERIFY_PREFIX",
    "VERIFY_SHARE",
    "ClaimCheck",
    "claim_margin",
    "search_claims",
    "verification_budget_name",
    "verification_deadline",
    "verified_claims",
    "verify",
    "verify_budget",
]
