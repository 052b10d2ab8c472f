"""Ablation runs: the ladders asked of a study, and the workers that train their runs.

An ablation's runs are the study's shared training runs (`explorer.evaluate.runs`, the study
``NAME@ablation`` of the same storage): one trial per (design, recipe, seed), so a run an ablation
needs that a re-evaluation, the final seeds or the verification already trained under the same
recipe is reused, and the other way round. The ladders asked for are the run study's user
attributes ``ladder:<key>@<budget>``, so the dashboard can draw them.

Any number of processes, on any machines sharing the storage, run `Worker.work` at once: each
claims the next missing run through the one work loop (`explorer.evaluate.RunQueue` over
`explorer.store.work`), trains it with heartbeats and stores it; a run whose worker died or was
paused past the grace is claimed again, and finished runs are never trained again, so asking for
more seeds later trains only the new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import optuna

from ..evaluate import (
    RunQueue,
    Runs,
    Unit,
    collect,
    find_runs,
    open_runs,
    reused_runs,
    run_key,
    train_and_test,
)
from .ladder import PATH, Ladder

LADDER_PREFIX = "ladder:"


def open_ablation(storage: Any, url: str, study: optuna.Study) -> optuna.Study:
    """The study holding `study`'s runs and ladders, made on first use."""
    return open_runs(storage, url, study)


def find_ablation(storage: Any, study_name: str) -> optuna.Study | None:
    """The run study of `study_name` (its ladders and runs), or None while it has none."""
    return find_runs(storage, study_name)


@dataclass(frozen=True)
class StoredLadder:
    """A ladder as asked for: under which budget, with how many seeds."""

    ladder: Ladder
    budget: str
    train_config: dict[str, Any]
    seeds: int

    @property
    def attr(self) -> str:
        return f"{LADDER_PREFIX}{self.ladder.key}@{self.budget}"

    def keys(self) -> list[str]:
        """The run key of each design, in the ladder's order."""
        return [run_key(d.network, self.train_config) for d in self.ladder.designs]


def store_ladder(abl: optuna.Study, stored: StoredLadder) -> None:
    """Record a ladder on the ablation study (keeping the most seeds ever asked of it)."""
    old = abl.user_attrs.get(stored.attr)
    seeds = max(stored.seeds, old.get("seeds", 0) if isinstance(old, dict) else 0)
    abl.set_user_attr(
        stored.attr,
        {
            **stored.ladder.to_dict(),
            "budget": stored.budget,
            "train_config": dict(stored.train_config),
            "seeds": seeds,
        },
    )


def stored_ladders(abl: optuna.Study) -> list[StoredLadder]:
    """Every ladder recorded on an ablation study; unreadable entries are skipped."""
    out = []
    for attr, value in sorted(abl.user_attrs.items()):
        if not attr.startswith(LADDER_PREFIX) or not isinstance(value, dict):
            continue
        try:
            ladder = Ladder.from_dict(value)
            out.append(
                StoredLadder(
                    ladder, str(value["budget"]), dict(value["train_config"]), int(value["seeds"])
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(out, key=lambda s: (s.ladder.kind != PATH, s.attr))  # paths first


def units(ladders: Iterable[StoredLadder], seeds: int) -> list[Unit]:
    """Every (design, seed) of the ladders, seed 0 of every design first, each once."""
    designs: dict[str, Any] = {}
    for stored in ladders:
        for key, design in zip(stored.keys(), stored.ladder.designs, strict=True):
            designs.setdefault(key, design)
    return [Unit(k, s, d.name, d.network) for s in range(seeds) for k, d in designs.items()]


class Worker:
    """Claims and trains the missing runs of some units until none is left to claim."""

    def __init__(
        self,
        abl: optuna.Study,
        study: optuna.Study,
        url: str,
        budget: Any,  # explorer.evaluate's Budget
        data: Callable[[], Any],
        device: Any,
        train: Callable[..., tuple[float, float]] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.abl, self.study, self.url, self.budget = abl, study, url, budget
        self._data, self.device, self.train = data, device, train
        self.log = log or (lambda line: None)
        self.trained = 0

    def runs(self) -> Runs:
        return collect(
            self.abl.get_trials(deepcopy=False), reused_runs(self.study, self.budget.config)
        )

    def work(self, todo: list[Unit]) -> Runs:
        """Train every unit of `todo` not yet stored (waiting for those others train); returns
        what is stored at the end."""
        queue = RunQueue(
            self.study, self.url, self.budget, self.device, data=self._data,
            train=self.train or _train, log=self.log, runs_study=self.abl,
        )  # fmt: skip
        with queue:
            runs = queue.train_all(todo)
        self.trained += queue.trained
        return runs


def _train(*args: Any) -> tuple[float, float]:
    """The ablation's training (read at call time, so tests can stand in for it)."""
    return train_and_test(*args)
