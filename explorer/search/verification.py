"""Verified claims: a search's claims against v1 and v2, raced at a longer budget before the
summary states them.

A front design *claims* to beat a reference when the search scored it more accurate with no more
parameters. At a cheap budget such claims are often wrong: the ``quick`` budget favours small
designs that learn fast, and most claims it made against v1 reversed when the designs were
retrained ten times longer (BENCHMARKS.md, "Search strategies at equal wall time"). `verify`
retrains every claimant and the references it claims against at `VERIFY_FACTOR` times the search's
top budget (what ``python -m explorer.evaluate`` calls ``long``), or at a budget given by name,
with seeds `VERIFY_FIRST_SEED` onwards (never one `explorer.evaluate` trains), and stores the runs
as study attributes ``verify:<trial>``.

The verification is a race (`explorer.analysis.verdicts.race_verdicts`, the tool's one rule):
every claim starts with `RacePlan.first` paired seeds, and seeds are added only to the claims
still undecided, up to the cap (``--verify-seeds``); a claim decided better or worse, or whose mean
difference is at or below zero, gets no more. The references' runs are shared by every claim
against them. The strongest claims go first (the claimant the search scored highest, with its
reference: each claim's first look before the next claim's runs, so a short share decides the
strongest claims rather than none), and the runs go through the study's shared runs and the
machine's workers (`explorer.evaluate.RunQueue`, the one work loop). No run starts whose
expected length (the longest of the runs so far) passes the deadline; a claim the race could not
decide is listed as undecided, never stated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import optuna

from ..analysis import (
    DEFAULT_OBJECTIVES,
    MAX_CAP,
    OPEN,
    Budget,
    RacePlan,
    RaceState,
    Reeval,
    pareto_front,
    race_verdicts,
    reeval_results,
    study_records,
)
from ..evaluate import (
    DataSpec,
    RunQueue,
    SeedOrder,
    Target,
    Unit,
    check_stored,
    named_budget,
    run_key,
)
from ..store import StudyConfig, TrialRecord
from ..training import budgets

VERIFY_PREFIX = "verify:"
VERIFY_FACTOR = budgets.LONG_FACTOR
VERIFY_FIRST_SEED = 100
# The race: every claim starts with FIRST_SEEDS paired seeds; --verify-seeds is the cap (the default
# decides about 95% of true +0.01 differences at the seed spread measured at quickx10,
# BENCHMARKS.md "Verdicts: error rate and power").
FIRST_SEEDS = 3
DEFAULT_CAP = 8
# The share of a run's time the verification gets with --timeout: its last quarter.
VERIFY_SHARE = 0.25
# Without --timeout it may take as long as the search took: deciding the six claims of a default
# 100-design search on a 2-core CPU takes about as long as the search (BENCHMARKS.md, "Search:
# default 100-trial run"); a third of it decided none.
UNTIMED_SHARE = 1.0

HELD, NOT_HELD, UNDECIDED, UNCHECKED = "held", "not held", "undecided", "not checked"
# The study attribute holding the race's plan, so the summary replays the race as it was run.
PLAN_ATTR = "verification_plan"


def race_plan(cap: int) -> RacePlan:
    """The race of a verification capped at `cap` seeds per claim (`ValueError` below 2)."""
    if cap < 2:
        raise ValueError(f"a verification needs at least 2 seeds per claim, got {cap}")
    return RacePlan(first=min(FIRST_SEEDS, cap), cap=cap)


@dataclass(frozen=True)
class ClaimCheck:
    """One claim of the search: `design` more accurate than `reference` with no more parameters,
    and where its verification race stands (`state` None: no paired verification run yet)."""

    design: TrialRecord
    reference: TrialRecord
    state: RaceState | None = None
    design_acc: float | None = None  # mean verified test accuracy over the paired seeds
    reference_acc: float | None = None

    @property
    def seeds(self) -> int:
        return self.state.verdict.n if self.state is not None else 0

    @property
    def status(self) -> str:
        """``held`` (verified better), ``not held`` (decided otherwise, or not better at the cap),
        ``undecided`` (the race stopped before deciding it) or ``not checked`` (no run)."""
        if self.state is None:
            return UNCHECKED
        if self.state.why == OPEN:
            return UNDECIDED
        return HELD if self.state.held else NOT_HELD

    @property
    def holds(self) -> bool | None:
        """True when held, False when the race decided it is not, None otherwise."""
        return {HELD: True, NOT_HELD: False}.get(self.status)

    def text(self) -> str:
        """``#12 vs v1: +0.0123 [+0.0050, +0.0196] at 5 seeds: better``."""
        head = f"#{self.design.number} vs {self.reference.reference}"
        if self.state is None:
            return f"{head}: not checked"
        return f"{head}: {self.state.verdict.text()}"


def verify_budget(config: StudyConfig, name: str | None = None) -> Budget:
    """The budget `name` (one of `budgets.BUDGETS`, or one with xK), or by default
    `VERIFY_FACTOR` times the study's top-rung budget: ``quick`` is verified at ``quickx10``."""
    if name is not None:
        return named_budget(name, budgets.budget(name))
    top = budgets.study_train_config(config)
    name = budgets.scaled_name(config.budget, VERIFY_FACTOR)
    return named_budget(name, budgets.scaled(top, VERIFY_FACTOR))


def verification_deadline(now: float, search_s: float, run_deadline: float | None) -> float:
    """When the verification, starting `now`, stops starting runs (`time.monotonic` values): at
    the run's own deadline (its --timeout) when it has one, else after `UNTIMED_SHARE` times the
    `search_s` seconds the search took."""
    if run_deadline is not None:
        return run_deadline
    return now + search_s * UNTIMED_SHARE


def expected_run_s(study: optuna.Study, config: StudyConfig, budget: Budget) -> float | None:
    """A first guess at one verification run's length, before any has run: the search's longest
    trial time scaled by the verification budget's training images times epochs (None when the
    study has no finished trial or the budgets train on whole splits)."""
    top = budgets.study_train_config(config)
    new = budget.config
    if top.train_images is None or new.train_images is None:
        return None
    times = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.datetime_start is not None and t.datetime_complete is not None
    ]
    if not times:
        return None
    ratio = (new.train_images * new.epochs) / (top.train_images * top.epochs)
    return max(times) * ratio


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


def _targets(claims: Sequence[ClaimCheck]) -> list[Target]:
    """References first, then the claimants the search scored highest."""
    targets: list[Target] = []
    for rec in [c.reference for c in claims] + sorted(
        (c.design for c in claims), key=lambda r: (-r.val_acc, r.number)
    ):
        if all(t.key != rec.number for t in targets):
            targets.append(Target(rec.number, rec.network, rec.reference, rec.val_acc))
    return targets


def _wanted(
    checks: Sequence[ClaimCheck], plan: RacePlan, rank: dict[int, int]
) -> dict[int, tuple[int, int]]:
    """For each design the race needs now: how many seeds its next look needs (`plan.first` for a
    claim not yet there, one more than it has for an open one), and the rank of the strongest
    open claim that needs it (`rank`: claimant number -> 0 for the strongest), so the strongest
    claims are decided first when the time is short."""
    want: dict[int, tuple[int, int]] = {}
    for c in checks:
        if c.state is not None and c.state.stopped:
            continue
        n = max(plan.first, c.seeds + 1) if c.state is not None else plan.first
        n, r = min(n, plan.cap), rank[c.design.number]
        for rec in (c.design, c.reference):
            had_n, had_r = want.get(rec.number, (0, r))
            want[rec.number] = (max(had_n, n), min(had_r, r))
    return want


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
    workers: int = 1,
    spec: DataSpec | None = None,
    expected_s: float | None = None,
    *,
    url: str,
) -> list[ClaimCheck]:
    """Race the claims of `study` at `verify_budget`, up to `seeds` seeds a claim, and return every
    claim with its state. Runs already stored are kept; a `time.monotonic` `deadline` stops
    starting runs whose expected length (the longest of the runs so far, or `expected_s` before
    the first) passes it. The runs go through the study's shared runs on `url` (the storage's
    address as given; `explorer.evaluate.runs`): a run another machine verifying the same study
    trains is waited for, not trained again. `workers` > 1 spreads the runs over that many
    processes, which load the dataset from `spec`; `run` (tests) trains in this process instead."""
    log = log or (lambda line: None)
    plan = race_plan(seeds)
    records = study_records(study)
    claims = search_claims(records, config.objectives)
    if not claims:
        return []
    budget = verify_budget(config, budget_name)
    targets = {t.key: t for t in _targets(claims)}
    check_stored(study, list(targets.values()), budget, prefix=VERIFY_PREFIX)
    order = list(targets)
    rank = {t.key: i for i, t in enumerate(t for t in targets.values() if t.reference is None)}
    stored = {k: r for k, r in reeval_results(study, VERIFY_PREFIX).items()
              if k in targets and r.same_budget(budget)}  # fmt: skip
    lengths: list[float] = []

    def expected() -> float | None:  # the longest so far: the next run may be as slow as any
        return max(lengths) if lengths else expected_s

    checks = _checked(claims, stored, plan)
    study.set_user_attr(PLAN_ATTR, {"first": plan.first, "cap": plan.cap})
    if deadline is not None and expected() is not None:
        # The first look of one claim: FIRST seeds of a reference and of a claimant.
        first = 2 * plan.first - sum(min(r.seeds, plan.first) for r in stored.values())
        if first > 0 and time.monotonic() + expected() * -(-first // max(workers, 1)) > deadline:
            log(
                f"verification skipped: {len(claims)} claim(s) need at least {first} run(s) of "
                f"about {expected():.0f} s at {budget.name} to decide one, more than the "
                "verification's share of the time (rerun with --timeout SECONDS to give it more)"
            )
            return checks
    log(
        f"verifying {len(claims)} claim(s) against v1/v2 at {budget.name} ({budget.text}): "
        f"{plan.first} to {plan.cap} paired seeds each, seeds added only to undecided claims, "
        f"on {workers} worker(s)"
    )
    ordered = SeedOrder(stored, budget.name, budget.config.to_dict())
    running: dict[Any, set[int]] = {k: set() for k in targets}
    failed: set[Any] = set()  # designs with a failed run: no more runs of them
    keys = {k: run_key(t.network, budget.config) for k, t in targets.items()}
    with RunQueue(study, url, budget, device, workers=workers, spec=spec, data=data, train=run,
                  log=log) as runs:  # fmt: skip
        while True:
            want = _wanted(checks, plan, rank)
            queue = [
                (r, seed, order.index(key), key)
                for key, (n, r) in want.items()
                for seed in range(ordered.have(key), n)
                if seed not in running[key] and not ordered.ended(key, seed) and key not in failed
            ]
            queue.sort()
            for _, seed, _, key in queue:
                if not runs.free:
                    break
                if deadline is not None and expected() is not None:
                    if time.monotonic() + expected() > deadline:
                        break
                elif deadline is not None and time.monotonic() > deadline:
                    break
                t = targets[key]
                running[key].add(seed)
                runs.submit(Unit(keys[key], VERIFY_FIRST_SEED + seed, t.label, t.network,
                                 (key, seed)))  # fmt: skip
            if not runs.busy:
                break
            try:
                ended = list(runs.finished(timeout=5.0))
            except BrokenProcessPool as exc:  # its processes kept dying: keep what is stored
                log(f"{exc}; the race stops here")
                break
            for result in ended:
                key, seed = result.unit.tag
                running[key].discard(seed)
                if result.error is not None:  # its claims stay undecided; the race goes on
                    failed.add(key)
                    log(f"{targets[key].label:<10} seed {seed + 1}: failed ({result.error}); "
                        "no more runs of it, its claims stay undecided")  # fmt: skip
                    continue
                if result.seconds is not None:
                    lengths.append(result.seconds)
                grown = ordered.add(key, seed, result.val_acc, result.test_acc)
                if grown is not None:
                    runs.store(f"{VERIFY_PREFIX}{key}", grown)
                took = "stored" if result.seconds is None else f"{result.seconds:.0f} s"
                log(
                    f"{targets[key].label:<10} seed {seed + 1}: val {result.val_acc:.4f} "
                    f"test {result.test_acc:.4f} ({took})"
                )
            checks = _checked(claims, stored, plan)
    undecided = sum(c.status in (UNDECIDED, UNCHECKED) for c in checks)
    if undecided:
        log(
            f"{undecided} of {len(checks)} claim(s) left undecided: the verification's time ran "
            "out (they are not stated; rerun with --timeout SECONDS to give it until then)"
        )
    return checks


def _checked(
    claims: Sequence[ClaimCheck], stored: dict[Any, Reeval], plan: RacePlan
) -> list[ClaimCheck]:
    """The claims with their race states, replayed from the stored runs."""
    family, paired_claims = [], []
    for c in claims:
        mine, theirs = stored.get(c.design.number), stored.get(c.reference.number)
        if mine is None or theirs is None or mine.budget != theirs.budget:
            continue
        n = min(mine.seeds, theirs.seeds, plan.cap)
        if n == 0:
            continue
        family.append(tuple(a - b for a, b in zip(mine.test_acc[:n], theirs.test_acc[:n])))
        paired_claims.append((c, _mean(mine, n), _mean(theirs, n)))
    states = race_verdicts(family, plan) if family else []
    by_claim = {id(c): (s, d, r) for (c, d, r), s in zip(paired_claims, states)}
    out = []
    for c in claims:
        if id(c) in by_claim:
            s, d, r = by_claim[id(c)]
            out.append(ClaimCheck(c.design, c.reference, s, d, r))
        else:
            out.append(ClaimCheck(c.design, c.reference))
    return out


def verified_claims(
    study: optuna.Study,
    config: StudyConfig | None,
    records: Sequence[TrialRecord] | None = None,
    cap: int | None = None,
) -> list[ClaimCheck]:
    """The study's search claims, each with where its verification race stands, replayed from
    the stored runs (the race's cap: `cap`, or the most seeds any design has, at least the
    default). `records`: the study's, when the caller has them already."""
    objectives = config.objectives if config is not None else DEFAULT_OBJECTIVES
    stored = reeval_results(study, VERIFY_PREFIX)
    records = study_records(study) if records is None else records
    claims = search_claims(records, objectives)
    return _checked(claims, stored, stored_plan(study, stored) if cap is None else race_plan(cap))


def stored_plan(study: optuna.Study, stored: dict[Any, Reeval] | None = None) -> RacePlan:
    """The plan the study's last verification raced with; for a study verified before plans were
    stored, the default cap or the most seeds a design has, if more."""
    value = study.user_attrs.get(PLAN_ATTR)
    if isinstance(value, dict):
        try:
            return RacePlan(int(value["first"]), int(value["cap"]))
        except (KeyError, TypeError, ValueError, OverflowError):
            pass
    stored = reeval_results(study, VERIFY_PREFIX) if stored is None else stored
    return race_plan(min(MAX_CAP, max([DEFAULT_CAP, *(r.seeds for r in stored.values())])))


def _mean(reeval: Reeval, seeds: int) -> float:
    return sum(reeval.test_acc[:seeds]) / seeds


def verification_budget_name(study: optuna.Study) -> str | None:
    """The budget the study's verification runs trained at, or None when it has none."""
    names = {r.budget for r in reeval_results(study, VERIFY_PREFIX).values()}
    return next(iter(sorted(names)), None)


__all__ = [
    "DEFAULT_CAP",
    "VERIFY_FACTOR",
    "VERIFY_FIRST_SEED",
    "VERIFY_PREFIX",
    "VERIFY_SHARE",
    "ClaimCheck",
    "expected_run_s",
    "race_plan",
    "stored_plan",
    "search_claims",
    "verification_budget_name",
    "verification_deadline",
    "verified_claims",
    "verify",
    "verify_budget",
]
