"""Choosing the designs to re-evaluate and retraining them, seed by seed, into the study's stored
re-evaluations (`explorer.analysis.reevals`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from search_space import (
    DEFAULT_REFERENCES,
    REFERENCES,
    NetworkConfig,
    network_params,
    reference_network,
)

from ..analysis import (
    ATTR_PREFIX,
    DEFAULT_OBJECTIVES,
    Reeval,
    pareto_front,
    reeval_results,
    study_records,
)
from ..store import TrialRecord, study_config
from ..usage import UsageError
from .budget_words import Budget, _budget
from .pool import DataSpec, SeedOrder
from .runs import RunQueue, Unit, run_key


@dataclass(frozen=True)
class Target:
    """A design to re-evaluate: a trial of the study, or a reference design it never trained."""

    key: int | str
    network: NetworkConfig
    reference: str | None = None
    search_val_acc: float | None = None

    @property
    def label(self) -> str:
        if isinstance(self.key, int):
            return f"#{self.key}" + (f" ({self.reference})" if self.reference else "")
        return str(self.key)

    @property
    def params(self) -> int:
        return network_params(self.network)


def _target(record: TrialRecord) -> Target:
    if record.network is None:
        raise UsageError(
            f"trial {record.number} has no valid design ({record.problem or 'none stored'})"
        )
    return Target(record.number, record.network, record.reference, record.val_acc)


def select_targets(
    study: optuna.Study,
    *,
    pareto: bool = False,
    trials: Sequence[int] = (),
    top: int | None = None,
    references: Sequence[str] = DEFAULT_REFERENCES,
) -> list[Target]:
    """The references, then the chosen designs (front sorted by parameters, or as given)."""
    records = study_records(study)
    by_number = {r.number: r for r in records}
    chosen: list[TrialRecord] = []
    if pareto:
        config = study_config(study)
        objectives = config.objectives if config is not None else DEFAULT_OBJECTIVES
        chosen = [r for r in pareto_front(records, objectives) if not r.reference]
        if not chosen:
            raise UsageError(
                f"study {study.study_name!r} has no complete searched design on its front"
            )
    for n in trials:
        if n not in by_number:
            raise UsageError(
                f"study {study.study_name!r} has no trial {n} (trials 0..{len(records) - 1})"
            )
        chosen.append(by_number[n])
    if top is not None:
        done = [r for r in records if r.complete and not r.reference and r.val_acc is not None]
        if not done:
            raise UsageError(f"study {study.study_name!r} has no complete searched design")
        chosen += sorted(done, key=lambda r: (-r.val_acc, r.number))[:top]
    targets = [_reference_target(records, name) for name in references]
    for record in chosen:
        target = _target(record)
        if all(t.key != target.key for t in targets):
            targets.append(target)
    return targets


def _reference_target(records: list[TrialRecord], name: str) -> Target:
    if name not in REFERENCES:
        raise UsageError(f"unknown reference {name!r}; choose from {', '.join(REFERENCES)}")
    for r in records:
        if r.reference == name and r.complete and r.network is not None:
            return _target(r)
    skeleton = next((r.network for r in records if r.network is not None), None)
    if skeleton is None:
        raise UsageError(f"no trial has a design to take the network skeleton from for {name}")
    return Target(name, reference_network(name, skeleton), name)


def reevaluate(
    study: optuna.Study,
    targets: Sequence[Target],
    seeds: int,
    budget: str | Budget,
    data: Any,
    device: Any,
    restart: bool = False,
    run: Callable[..., tuple[float, float]] | None = None,
    log: Callable[[str], None] | None = None,
    prefix: str = ATTR_PREFIX,
    deadline: float | None = None,
    first_seed: int = 0,
    workers: int = 1,
    spec: DataSpec | None = None,
    *,
    url: str,
) -> dict[int | str, Reeval]:
    """Train each target until it has `seeds` runs under `budget`, storing each run as it ends.

    Every target trains seeds 0..seeds-1, so designs and references pair seed by seed. Raises
    `UsageError` before training anything if a target holds results of another budget (unless
    `restart`, which discards them). `prefix`: the study attributes the results go to.
    `deadline` (a `time.monotonic` value): no run starts after it; targets it leaves short are
    left out of the answer or hold fewer seeds. `first_seed`: the i-th stored run trains with seed
    ``first_seed + i``. The runs go through the study's shared runs (`explorer.evaluate.runs`,
    on `url`, the storage's address as given): a run another process already trained under the
    same recipe is reused, one it is training is waited for. `workers` > 1 spreads the runs over
    that many processes, which load the dataset from `spec`; `run` (tests) trains in this process.
    """
    budget = _budget(study, budget)
    log = log or (lambda line: None)
    check_stored(study, targets, budget, restart, prefix)
    stored = {} if restart else {
        k: r for k, r in reeval_results(study, prefix).items() if r.same_budget(budget)
    }  # fmt: skip
    ordered = SeedOrder(stored, budget.name, budget.config.to_dict())
    labels = {t.key: t.label for t in targets}
    todo = [
        Unit(
            run_key(t.network, budget.config), first_seed + seed, t.label, t.network, (t.key, seed)
        )
        for t in targets
        for seed in range(ordered.have(t.key), seeds)
    ]
    queue = RunQueue(study, url, budget, device, workers=workers, spec=spec, data=data,
                     train=run, log=log, reuse=not restart)  # fmt: skip
    with queue:
        while todo or queue.busy:
            while todo and queue.free:
                if deadline is not None and time.monotonic() > deadline:
                    todo.clear()
                    break
                queue.submit(todo.pop(0))
            for result in queue.finished(timeout=5.0):
                key, seed = result.unit.tag
                if result.error is not None:
                    raise UsageError(
                        f"{labels[key]} seed {seed + 1}: the run failed ({result.error})"
                    )
                grown = ordered.add(key, seed, result.val_acc, result.test_acc)
                if grown is not None:
                    queue.store(f"{prefix}{key}", grown)
                took = "stored" if result.seconds is None else f"{result.seconds:.0f} s"
                log(
                    f"{labels[key]:<10} seed {seed + 1}/{seeds}: val {result.val_acc:.4f} "
                    f"test {result.test_acc:.4f} ({took})"
                )
    return {t.key: stored[t.key] for t in targets if t.key in stored and stored[t.key].seeds}


def check_stored(
    study: optuna.Study,
    targets: Sequence[Target],
    budget: str | Budget,
    restart: bool = False,
    prefix: str = ATTR_PREFIX,
) -> None:
    """`UsageError` if a target holds results of another budget (and `restart` is not set)."""
    if restart:
        return
    budget = _budget(study, budget)
    stored = reeval_results(study, prefix)
    for t in targets:
        old = stored.get(t.key)
        if old is None or not old.seeds or old.same_budget(budget):
            continue
        if old.budget != budget.name:
            raise UsageError(
                f"{t.label} was re-evaluated with budget {old.budget!r} ({old.seeds} seeds); "
                f"pass --budget {old.budget} to add seeds, or --restart to discard them"
            )
        raise UsageError(
            f"{t.label} was re-evaluated under another definition of budget {old.budget!r} "
            f"({old.seeds} seeds, not {budget.text}); pass --restart to discard them"
        )


def runs_needed(
    study: optuna.Study,
    targets: Sequence[Target],
    seeds: int,
    budget: str | Budget,
    restart: bool = False,
    prefix: str = ATTR_PREFIX,
) -> int:
    """How many training runs `reevaluate` would do (into the attributes `prefix` names)."""
    budget = _budget(study, budget)
    stored = reeval_results(study, prefix)
    done = 0
    for t in targets:
        old = stored.get(t.key)
        if old is not None and old.same_budget(budget) and not restart:
            done += min(old.seeds, seeds)
    return len(targets) * seeds - done
