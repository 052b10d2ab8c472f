"""Ablation runs in the study's storage: one Optuna trial per (design, seed), shared by workers.

The runs of study ``NAME`` live in the study ``NAME@ablation`` of the same storage (hidden from
study lists, like a search's lower rungs). Each trial trains one design with one seed under one
budget and stores its validation and test accuracy as its two values; its user attributes say
which (``run_key``: the design and the training recipe but not the seed; ``seed``; ``budget``;
``network``). The ladders asked for are the study's user attributes ``ladder:<key>@<budget>``, so
the dashboard can draw them.

Any number of processes, on any machines sharing the storage, run `work` at once: each claims the
next missing run under the study's lock, trains it outside the lock with heartbeats, and stores it,
through the one work loop the search uses too (`explorer.store.work`). A run whose worker died or
was paused past the grace (its lock file freed, its heartbeats stopped) is failed as interrupted
and claimed again: each interrupted run
is retried once, up to `MAX_ATTEMPTS` runs of one design and seed; a run that failed for a reason
of its own (out of memory, an error) is not retried. Finished runs are never trained again, and
asking for more seeds later trains only the new ones.

A re-evaluation (`explorer.evaluate`) of the same design under the same recipe trains exactly
what an ablation run would (`explorer.evaluate.train_and_test`), so its stored seeds are reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from search_space import REFERENCES, NetworkConfig, reference_network

from ..analysis import reeval_results
from ..evaluate import train_and_test
from ..store import (
    MAX_ATTEMPTS,
    Claims,
    StorageUnavailable,
    TakenOver,
    WorkerToken,
    ablation_study_name,
    is_interrupted,
    record_in,
    run_claimed,
    storage_of,
    study_id,
    study_lock,
)
from ..usage import first_line
from .ladder import PATH, Design, Ladder

LADDER_PREFIX = "ladder:"
HEARTBEAT_S = 60  # seconds between a run's heartbeats (twice this is the grace)
WAIT_S = 2.0  # how often a worker with nothing to claim looks again while others still train


def recipe(train_config: Any) -> dict[str, Any]:
    """A budget's training recipe without its seed: what runs must share to be paired."""
    data = dict(train_config.to_dict() if hasattr(train_config, "to_dict") else train_config)
    data.pop("seed", None)
    return data


def run_key(network: NetworkConfig, train_config: Any) -> str:
    """Names the runs of one design under one recipe (any seed)."""
    text = json.dumps({"network": network.to_dict(), "train": recipe(train_config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_ablation(storage: Any, url: str, study: optuna.Study) -> optuna.Study:
    """The study holding `study`'s ablation runs, made on first use."""
    name = ablation_study_name(study.study_name)
    with study_lock(url, name):
        abl = optuna.create_study(
            study_name=name,
            storage=storage,
            directions=["maximize", "maximize"],
            load_if_exists=True,
        )
        if abl.user_attrs.get("ablation_of") != study.study_name:
            abl.set_user_attr("ablation_of", study.study_name)
    return abl


def find_ablation(storage: Any, study_name: str) -> optuna.Study | None:
    """The ablation study of `study_name`, or None while it has none."""
    try:
        return optuna.load_study(study_name=ablation_study_name(study_name), storage=storage)
    except KeyError:
        return None


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


@dataclass
class Runs:
    """What is known of each run key: accuracies by seed, runs in progress, runs given up."""

    val: dict[str, dict[int, float]] = field(default_factory=dict)
    test: dict[str, dict[int, float]] = field(default_factory=dict)
    running: set[tuple[str, int]] = field(default_factory=set)
    failed: dict[tuple[str, int], str] = field(default_factory=dict)  # reason of its own
    interrupted: dict[tuple[str, int], int] = field(default_factory=dict)  # runs cut short
    last_cut: dict[tuple[str, int], int] = field(default_factory=dict)  # trial number of the last
    reused: set[tuple[str, int]] = field(default_factory=set)

    def done(self, key: str, seed: int) -> bool:
        return seed in self.test.get(key, {})

    def add(self, key: str, seed: int, val: float, test: float) -> None:
        self.val.setdefault(key, {}).setdefault(seed, val)
        self.test.setdefault(key, {}).setdefault(seed, test)


def reused_runs(
    study: optuna.Study, train_config: Any
) -> dict[tuple[str, int], tuple[float, float]]:
    """(run key, seed) -> (val, test) of the study's re-evaluations under the same recipe."""
    want = recipe(train_config)
    networks: dict[int | str, NetworkConfig] = {}
    skeleton = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        net = t.user_attrs.get("network")
        try:
            networks[t.number] = NetworkConfig.from_dict(net)
        except (TypeError, ValueError):
            continue
        skeleton = skeleton or networks[t.number]
    for name in REFERENCES:
        if skeleton is not None:
            networks.setdefault(name, reference_network(name, skeleton))
    out = {}
    for key, result in reeval_results(study).items():
        if (
            key not in networks
            or result.train_config is None
            or recipe(result.train_config) != want
        ):
            continue
        rk = run_key(networks[key], train_config)
        for seed, (val, test) in enumerate(zip(result.val_acc, result.test_acc, strict=True)):
            out[(rk, seed)] = (val, test)
    return out


def collect(
    trials: Iterable[optuna.trial.FrozenTrial],
    reused: Mapping[tuple[str, int], tuple[float, float]] = {},  # noqa: B006 - read only
) -> Runs:
    """The runs an ablation study holds, with the reused re-evaluations."""
    runs = Runs()
    for (key, seed), (val, test) in reused.items():
        runs.add(key, seed, val, test)
        runs.reused.add((key, seed))
    for t in trials:
        key, seed = t.user_attrs.get("run_key"), t.user_attrs.get("seed")
        if not isinstance(key, str) or not isinstance(seed, int):
            continue
        if t.state == TrialState.COMPLETE and t.values and len(t.values) == 2:
            runs.add(key, seed, float(t.values[0]), float(t.values[1]))
        elif t.state == TrialState.RUNNING:
            runs.running.add((key, seed))
        elif t.state == TrialState.FAIL:
            if is_interrupted(t):
                runs.interrupted[(key, seed)] = runs.interrupted.get((key, seed), 0) + 1
                runs.last_cut[(key, seed)] = t.number
            else:
                runs.failed[(key, seed)] = str(t.user_attrs.get("fail_reason") or "failed")
    for unit in list(runs.failed):
        if runs.done(*unit):
            del runs.failed[unit]
    return runs


@dataclass(frozen=True)
class Unit:
    """One training: a design (by run key) with one seed."""

    key: str
    seed: int
    design: Design


def units(ladders: Iterable[StoredLadder], seeds: int) -> list[Unit]:
    """Every (design, seed) of the ladders, seed 0 of every design first, each once."""
    designs: dict[str, Design] = {}
    for stored in ladders:
        for key, design in zip(stored.keys(), stored.ladder.designs, strict=True):
            designs.setdefault(key, design)
    return [Unit(k, s, d) for s in range(seeds) for k, d in designs.items()]


def _claimable(unit: Unit, runs: Runs) -> bool:
    u = (unit.key, unit.seed)
    if runs.done(*u) or u in runs.running or u in runs.failed:
        return False
    return runs.interrupted.get(u, 0) < MAX_ATTEMPTS


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
        self._data, self._loaded = data, None
        self.device, self.train = device, train or train_and_test
        self.log = log or (lambda line: None)
        self.token: WorkerToken | None = None
        self.trained = 0
        # The one work loop's claims (explorer.store.work): dead runs failed, then claimed again.
        self.claims = Claims(url, abl.study_name, [abl], requeue=False)

    def runs(self) -> Runs:
        return collect(
            self.abl.get_trials(deepcopy=False), reused_runs(self.study, self.budget.config)
        )

    def work(self, todo: list[Unit]) -> Runs:
        """Train every unit of `todo` not yet stored (waiting for those others train); returns
        what is stored at the end."""
        reused = reused_runs(self.study, self.budget.config)
        self.token = WorkerToken(self.url)
        said_wait = False
        try:
            while True:
                claimed, runs = self._claim(todo, reused)
                if claimed is None:
                    elsewhere = sum((u.key, u.seed) in runs.running for u in todo)
                    if not elsewhere:
                        return runs
                    if not said_wait:
                        self.log(f"waiting for {elsewhere} runs other workers are training")
                        said_wait = True
                    time.sleep(WAIT_S)
                    continue
                self._run(*claimed)
        finally:
            self.token.release()

    def _claim(self, todo: list[Unit], reused) -> tuple[tuple[Unit, int] | None, Runs]:
        seen: list[Runs] = []

        def pick() -> tuple[Unit, int] | None:
            runs = collect(self.abl.get_trials(deepcopy=False), reused)
            seen.append(runs)
            unit = next((u for u in todo if _claimable(u, runs)), None)
            if unit is None:
                return None
            storage = storage_of(self.abl)
            tid = storage.create_new_trial(study_id(self.abl))
            attrs = {
                "worker": self.token.id,
                "run_key": unit.key,
                "seed": unit.seed,
                "design": unit.design.name,
                "budget": self.budget.name,
                "network": unit.design.network.to_dict(),
                "attempt": runs.interrupted.get((unit.key, unit.seed), 0) + 1,
            }
            cut = runs.last_cut.get((unit.key, unit.seed))
            if cut is not None:  # a retry: of which run, and why that one stopped
                attrs["retry_of"] = cut
                attrs["retry_reason"] = self.claims.reasons.get(
                    (self.abl.study_name, cut), "interrupted"
                )
            for name, value in attrs.items():
                storage.set_trial_user_attr(tid, name, value)
            return unit, tid

        claimed = self.claims(pick)
        return claimed, seen[-1]

    def _run(self, unit: Unit, tid: int) -> None:
        storage = storage_of(self.abl)
        start = time.perf_counter()
        if self._loaded is None:
            self._loaded = self._data()

        def work() -> tuple[TrialState, tuple[float, float]]:
            val, test = self.train(
                unit.design.network, self._loaded, self.budget.config, self.device, unit.seed
            )
            return TrialState.COMPLETE, (val, test)

        try:
            run_claimed(work, record_in(storage, tid), storage, tid, self.url, HEARTBEAT_S)
        except TakenOver:
            self.log(f"{unit.design.name:<40} seed {unit.seed}: taken over while paused; dropped")
            return
        except StorageUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - out of memory, an error: recorded, not retried
            self.log(f"{unit.design.name:<40} seed {unit.seed}: failed ({first_line(exc)})")
            return
        val, test = storage.get_trial(tid).values
        self.trained += 1
        self.log(
            f"{unit.design.name:<40} seed {unit.seed}: val {val:.4f} test {test:.4f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
