"""Choosing the designs to re-evaluate and retraining them, seed by seed, into the study's stored
re-evaluations (`explorer.analysis.reevals`)."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from search_space import (
    DEFAULT_REFERENCES,
    REFERENCES,
    NetworkConfig,
    build_network,
    network_params,
)

from ..analysis.fronts import DEFAULT_OBJECTIVES, pareto_front
from ..analysis.reevals import ATTR_PREFIX, Reeval, reeval_results
from ..analysis.studies import study_records
from ..store.records import TrialRecord
from ..store.studies import study_config
from ..training import trainer
from ..usage import UsageError
from .budgets import Budget, _budget


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
    return Target(name, dataclasses.replace(skeleton, block=REFERENCES[name]), name)


def train_and_test(
    network: NetworkConfig, data: Any, config: Any, device: Any, seed: int
) -> tuple[float, float]:
    """(validation accuracy, test accuracy) of the design trained from scratch with `seed`.

    Validation accuracy is the trainer's last-epoch figure (the first ``config.final_val_images``
    of the validation split, as in the search); test accuracy is over the whole test split.
    """

    config = dataclasses.replace(config, seed=seed)
    torch.manual_seed(seed)
    model = build_network(network).to(device)
    try:
        val_acc = trainer.train(model, data, config, device).val_acc[-1]
    except trainer.DivergedError as exc:  # a real outcome of this design and seed: scored as it is
        print(f"  diverged ({exc}); scored as it stands", file=sys.stderr)
        _, val_acc = trainer.evaluate(model, data, device, "val", config.final_val_images)
    _, test_acc = trainer.evaluate(model, data, device, "test")
    return float(val_acc), float(test_acc)


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
) -> dict[int | str, Reeval]:
    """Train each target until it has `seeds` runs under `budget`, storing each run as it ends.

    Every target trains seeds 0..seeds-1, so designs and references pair seed by seed. Raises
    `UsageError` before training anything if a target holds results of another budget (unless
    `restart`, which discards them). `prefix`: the study attributes the results go to (the
    search's verification keeps its own, `explorer.search.verification`). `deadline` (a
    `time.monotonic` value): no run starts after it; targets it leaves short are left out of the
    answer or hold fewer seeds. `first_seed`: the i-th stored run trains with seed
    ``first_seed + i`` (the verification's runs are independent of the re-evaluation's).
    """
    budget = _budget(study, budget)
    run = run or train_and_test
    log = log or (lambda line: None)
    check_stored(study, targets, budget, restart, prefix)
    stored = reeval_results(study, prefix)
    results: dict[int | str, Reeval] = {}
    for t in targets:
        result = stored.get(t.key)
        if result is None or restart or not result.same_budget(budget):
            result = Reeval((), (), budget.name, budget.config.to_dict())
        for seed in range(result.seeds, seeds):
            if deadline is not None and time.monotonic() > deadline:
                break
            start = time.perf_counter()
            val_acc, test_acc = run(t.network, data, budget.config, device, first_seed + seed)
            result = result.added(val_acc, test_acc)
            study.set_user_attr(f"{prefix}{t.key}", result.to_dict())
            log(
                f"{t.label:<10} seed {seed + 1}/{seeds}: val {val_acc:.4f} test {test_acc:.4f} "
                f"({time.perf_counter() - start:.0f} s)"
            )
        if result.seeds:
            results[t.key] = result
    return results


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
) -> int:
    """How many training runs `reevaluate` would do."""
    budget = _budget(study, budget)
    stored = reeval_results(study)
    done = 0
    for t in targets:
        old = stored.get(t.key)
        if old is not None and old.same_budget(budget) and not restart:
            done += min(old.seeds, seeds)
    return len(targets) * seeds - done
