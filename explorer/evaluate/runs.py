"""Training runs shared through the study's storage: one Optuna trial per (design, recipe, seed).

Every run a re-evaluation (`explorer.evaluate`), the search's final seeds and verification
(`explorer.search`) or an ablation (`explorer.ablate`) trains lives in the study ``NAME@ablation``
of the same storage (hidden from study lists, like a search's lower rungs; the name is the one it
had when only the ablation used it, kept so that older studies' runs are found). A run's trial
stores its validation and test accuracy as its two values, and says which run it is in its user
attributes: ``run_key`` (the design and the training recipe, not the seed), ``seed``, ``budget``,
``network``.

`RunQueue` trains runs through the one work loop of `explorer.store.work`: it claims each run
under the study's lock (a run already stored is answered from the store, a run another process
is training is waited for, never trained twice at once), trains it on one of its worker processes
(`explorer.evaluate.pool`) with heartbeats, and records it once. A run whose process died or was
paused past the grace is failed as interrupted and claimed again (`Runs.given_up` says when a run
whose worker keeps dying is given up): by the next claim on any machine when the whole process is
gone, at once by this queue when only one of its training processes died (that process is replaced, up to
`REPLACEMENTS` times). A run that failed for a reason of its own (out of memory, an error) is not
retried. Any number of processes on any machines may train the runs of one study at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from search_space import REFERENCES, NetworkConfig, reference_network

from ..analysis import Reeval, reeval_results
from ..store import (
    MAX_ATTEMPTS,
    MAX_RUNS,
    UNKNOWN_REASON,
    Claims,
    WorkerToken,
    ablation_study_name,
    deaths,
    deaths_allowed,
    heartbeat,
    is_interrupted,
    record_in,
    storage_of,
    study_id,
    study_lock,
)
from .pool import DataSpec, Run, RunPool

HEARTBEAT_S = 60  # seconds between a run's heartbeats (twice this is the grace)
WAIT_S = 2.0  # how often a queue waiting for another process's runs looks again
REPLACEMENTS = 3  # training processes a queue replaces after one dies, before it gives up


def recipe(train_config: Any) -> dict[str, Any]:
    """A budget's training recipe without its seed: what runs must share to be paired."""
    data = dict(train_config.to_dict() if hasattr(train_config, "to_dict") else train_config)
    data.pop("seed", None)
    return data


def run_key(network: NetworkConfig, train_config: Any) -> str:
    """Names the runs of one design under one recipe (any seed)."""
    text = json.dumps({"network": network.to_dict(), "train": recipe(train_config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_runs(storage: Any, url: str, study: optuna.Study) -> optuna.Study:
    """The study holding `study`'s training runs, made on first use."""
    name = ablation_study_name(study.study_name)
    with study_lock(url, name):
        runs = optuna.create_study(
            study_name=name,
            storage=storage,
            directions=["maximize", "maximize"],
            load_if_exists=True,
        )
        if runs.user_attrs.get("ablation_of") != study.study_name:
            runs.set_user_attr("ablation_of", study.study_name)
    return runs


def find_runs(storage: Any, study_name: str) -> optuna.Study | None:
    """The study of `study_name`'s training runs, or None while it has none."""
    try:
        return optuna.load_study(study_name=ablation_study_name(study_name), storage=storage)
    except KeyError:
        return None


@dataclass
class Runs:
    """What is known of each run key: accuracies by seed, runs in progress, runs given up."""

    val: dict[str, dict[int, float]] = field(default_factory=dict)
    test: dict[str, dict[int, float]] = field(default_factory=dict)
    running: set[tuple[str, int]] = field(default_factory=set)
    failed: dict[tuple[str, int], str] = field(default_factory=dict)  # reason of its own
    interrupted: dict[tuple[str, int], int] = field(default_factory=dict)  # runs cut short
    last_cut: dict[tuple[str, int], int] = field(default_factory=dict)  # trial number of the last
    died: dict[tuple[str, int], int] = field(default_factory=dict)  # runs cut by a worker's death
    reused: set[tuple[str, int]] = field(default_factory=set)
    numbers: dict[tuple[str, int], set[int]] = field(default_factory=dict, repr=False)
    trials: list[optuna.trial.FrozenTrial] = field(default_factory=list, repr=False)

    def done(self, key: str, seed: int) -> bool:
        return seed in self.test.get(key, {})

    def given_up(self, run: tuple[str, int]) -> bool:
        """Whether `run` is not tried again: `MAX_RUNS` runs cut short, or more ending with their
        worker dead than `deaths_allowed` lets a design have, given how often the other runs
        died."""
        if self.interrupted.get(run, 0) >= MAX_RUNS:
            return True
        died = self.died.get(run, 0)
        if died < MAX_ATTEMPTS:
            return False
        return died >= deaths_allowed(self.trials, self.numbers.get(run, set()))

    def add(self, key: str, seed: int, val: float, test: float) -> None:
        self.val.setdefault(key, {}).setdefault(seed, val)
        self.test.setdefault(key, {}).setdefault(seed, test)


def reused_runs(
    study: optuna.Study, train_config: Any
) -> dict[tuple[str, int], tuple[float, float]]:
    """(run key, seed) -> (val, test) of the study's re-evaluations under the same recipe that
    are stored only as re-evaluations (those made before the runs were shared)."""
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
    reasons: Mapping[int, str] | None = None,
) -> Runs:
    """The runs a run study holds, with the reused re-evaluations. `reasons`: why this process
    failed some of its trials as interrupted (trial number -> reason), not written on them."""
    trials = list(trials)
    runs = Runs(trials=trials)
    died = deaths(trials, reasons)
    for (key, seed), (val, test) in reused.items():
        runs.add(key, seed, val, test)
        runs.reused.add((key, seed))
    for t in trials:
        key, seed = t.user_attrs.get("run_key"), t.user_attrs.get("seed")
        if not isinstance(key, str) or not isinstance(seed, int):
            continue
        runs.numbers.setdefault((key, seed), set()).add(t.number)
        if t.state == TrialState.COMPLETE and t.values and len(t.values) == 2:
            runs.add(key, seed, float(t.values[0]), float(t.values[1]))
        elif t.state == TrialState.RUNNING:
            runs.running.add((key, seed))
        elif t.state == TrialState.FAIL:
            if is_interrupted(t):
                runs.interrupted[(key, seed)] = runs.interrupted.get((key, seed), 0) + 1
                runs.last_cut[(key, seed)] = t.number
                if died.get(t.number):
                    runs.died[(key, seed)] = runs.died.get((key, seed), 0) + 1
            else:
                runs.failed[(key, seed)] = str(t.user_attrs.get("fail_reason") or "failed")
    for unit in list(runs.failed):
        if runs.done(*unit):
            del runs.failed[unit]
    return runs


@dataclass(frozen=True)
class Unit:
    """One training: a design (by run key: its network and the recipe) with one seed. `tag` is
    the caller's, handed back with its result; `name` labels its log lines."""

    key: str
    seed: int
    name: str
    network: NetworkConfig
    tag: Any = None

    @property
    def run(self) -> tuple[str, int]:
        return self.key, self.seed


@dataclass(frozen=True)
class UnitResult:
    """How a unit ended: its accuracies (NaN with `error`), and `seconds` when trained here."""

    unit: Unit
    val_acc: float
    test_acc: float
    seconds: float | None = None
    error: str | None = None


class RunQueue:
    """Trains units of one study's runs through the work loop; use as a context manager.

    `submit(unit)` claims a unit (or finds it stored, or being trained by another process, whose
    result it then waits for); `finished(timeout)` yields the units that ended, waiting up to
    `timeout` seconds for the first. `train_all(units)` trains every unit, keeping the workers
    busy, and answers the runs stored at the end. `workers` > 1 trains on that many processes,
    which load the dataset from `spec`; with one, in this process on `data` (a dataset, or a
    function loading it the first time a unit trains here). `train` (tests) replaces
    `train_and_test` and trains in this process. `reuse` False: the study's re-evaluations
    stored before the runs were shared are not taken as runs (``--restart``). `log` hears what
    the queue itself does (a process replaced, a wait for another's runs); each unit's line is
    the caller's to print."""

    def __init__(
        self,
        study: optuna.Study,
        url: str,
        budget: Any,  # explorer.evaluate's Budget: .name and .config
        device: Any,
        *,
        workers: int = 1,
        spec: DataSpec | None = None,
        data: Any = None,
        train: Callable[..., tuple[float, float]] | None = None,
        log: Callable[[str], None] | None = None,
        runs_study: optuna.Study | None = None,
        reuse: bool = True,
    ) -> None:
        self.study, self.url, self.budget, self.device = study, url, budget, device
        self.workers = 1 if train is not None else max(1, workers)
        self.spec, self._data, self.train = spec, data, train
        self.log = log or (lambda line: None)
        self.runs_study = runs_study or open_runs(storage_of(study), url, study)
        self.claims = Claims(url, self.runs_study.study_name, [self.runs_study], requeue=False)
        self.reused = reused_runs(study, budget.config) if reuse else {}
        self.token: WorkerToken | None = None
        self.pool: RunPool | None = None
        self.inflight: dict[int, tuple[Unit, contextlib.ExitStack]] = {}  # trial id ->
        self.elsewhere: dict[tuple[str, int], Unit] = {}  # run -> unit another process trains
        self.ready: list[UnitResult] = []
        self.trained = 0
        self.replaced = 0
        self._said_wait = False

    # ---------------------------------------------------------------------------------------
    def __enter__(self) -> RunQueue:
        self.token = WorkerToken(self.url)
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if self.pool is not None:
                self.pool.close(stop=kind is not None)
        finally:
            why = "interrupted: worker stopped"
            for tid, (_unit, beats) in list(self.inflight.items()):
                beats.close()
                with contextlib.suppress(Exception):  # a storage gone: recovered as a dead worker's
                    record_in(storage_of(self.runs_study), tid)(TrialState.FAIL, None, why)
            self.inflight.clear()
            if self.token is not None:
                self.token.release()

    def runs(self) -> Runs:
        """What the run study holds now, with the reused re-evaluations."""
        name = self.runs_study.study_name
        reasons = {n: why for (study, n), why in self.claims.reasons.items() if study == name}
        return collect(self.runs_study.get_trials(deepcopy=False), self.reused, reasons)

    @property
    def busy(self) -> int:
        """Units submitted and not yet handed back."""
        return len(self.inflight) + len(self.elsewhere) + len(self.ready)

    @property
    def free(self) -> int:
        """How many more units can start training here now without waiting."""
        return max(0, self.workers - len(self.inflight))

    # ---------------------------------------------------------------------------------------
    def submit(self, unit: Unit) -> None:
        """Claim `unit`: trained here, answered from the store, or waited for."""
        runs, tid = self._claim(unit)
        if tid is not None:
            self._start(unit, tid)
        elif runs.done(*unit.run):
            self.ready.append(self._stored(unit, runs))
        elif unit.run in runs.running:
            self.elsewhere[unit.run] = unit
        else:
            self.ready.append(self._given_up(unit, runs))

    def finished(self, timeout: float | None = None) -> Iterator[UnitResult]:
        """The units that ended, waiting up to `timeout` seconds for the first."""
        if self.ready:
            ready, self.ready = self.ready, []
            yield from ready
            return
        if self.inflight:
            assert self.pool is not None
            wait = timeout if not self.elsewhere else min(timeout or WAIT_S, WAIT_S)
            try:
                results = list(self.pool.finished(timeout=wait))
            except BrokenProcessPool:
                self._replace_pool()
                return
            for result in results:
                yield self._record(result)
        elif self.elsewhere:
            time.sleep(min(timeout if timeout is not None else WAIT_S, WAIT_S))
        if self.elsewhere:
            yield from self._look_elsewhere()

    def train_all(self, units: Iterable[Unit]) -> Runs:
        """Train every unit not yet stored (waiting for those other processes train) and answer
        what the run study holds at the end."""
        todo = list(units)
        while todo or self.busy:
            while todo and (self.free or not self._trains_here(todo[0])):
                self.submit(todo.pop(0))
            for r in self.finished(timeout=5.0):
                head = f"{r.unit.name:<40} seed {r.unit.seed}"
                if r.error is not None:
                    self.log(f"{head}: failed ({r.error})")
                elif r.seconds is not None:
                    self.log(
                        f"{head}: val {r.val_acc:.4f} test {r.test_acc:.4f} ({r.seconds:.0f} s)"
                    )
        return self.runs()

    def store(self, attr: str, result: Reeval) -> None:
        """Store a re-evaluation as the study's attribute `attr`, unless one with more seeds of
        the same budget is already there (another process got further)."""
        with study_lock(self.url, self.study.study_name):
            old = self.study.user_attrs.get(attr)
            if isinstance(old, dict) and old.get("budget") == result.budget:
                if int(old.get("seeds", 0)) >= result.seeds:
                    return
            self.study.set_user_attr(attr, result.to_dict())

    # ---------------------------------------------------------------------------------------
    def _trains_here(self, unit: Unit) -> bool:
        """Whether `unit` would need a worker of this queue (not stored, not trained elsewhere)."""
        runs = self.runs()
        return not runs.done(*unit.run) and unit.run not in runs.running

    def _claim(self, unit: Unit) -> tuple[Runs, int | None]:
        seen: list[Runs] = []

        def pick() -> int | None:
            runs = self.runs()
            seen.append(runs)
            u = unit.run
            if runs.done(*u) or u in runs.running or u in runs.failed:
                return None
            if runs.given_up(u):
                return None
            storage = storage_of(self.runs_study)
            tid = storage.create_new_trial(study_id(self.runs_study))
            assert self.token is not None, "use RunQueue as a context manager"
            attrs = {
                "worker": self.token.id,
                "run_key": unit.key,
                "seed": unit.seed,
                "design": unit.name,
                "budget": self.budget.name,
                "network": unit.network.to_dict(),
                "attempt": runs.interrupted.get(u, 0) + 1,
            }
            cut = runs.last_cut.get(u)
            if cut is not None:  # a retry: of which run, and why that one stopped
                attrs["retry_of"] = cut
                attrs["retry_reason"] = self.claims.reasons.get(
                    (self.runs_study.study_name, cut), UNKNOWN_REASON
                )
            for name, value in attrs.items():
                storage.set_trial_user_attr(tid, name, value)
            return tid

        tid = self.claims(pick)
        return seen[-1], tid

    def _start(self, unit: Unit, tid: int) -> None:
        storage = storage_of(self.runs_study)
        beats = contextlib.ExitStack()
        beats.enter_context(heartbeat(storage, tid, self.url, HEARTBEAT_S))
        self.inflight[tid] = (unit, beats)
        if self.pool is None:
            self.pool = self._new_pool()
        self.pool.submit(Run(tid, unit.network, self.budget.config, unit.seed))

    def _new_pool(self) -> RunPool:
        if callable(self._data):  # loaded the first time a unit trains here
            self._data = self._data()
        if self.train is None:  # one process: trains here on `data`, or loads it from `spec`
            return RunPool(self.workers, self.spec, str(self.device), data=self._data)
        return RunPool(1, self.spec, str(self.device), run=self.train, data=self._data)

    def _record(self, result) -> UnitResult:
        tid = result.run.key
        unit, beats = self.inflight.pop(tid)
        beats.close()
        record = record_in(storage_of(self.runs_study), tid)
        if result.error is not None:
            record(TrialState.FAIL, None, f"error: {result.error}")
            nan = float("nan")
            return UnitResult(unit, nan, nan, result.seconds, result.error)
        told = record(TrialState.COMPLETE, (result.val_acc, result.test_acc), None)
        if told is None:  # failed by another while this process was paused: its retry is queued
            self.log(f"{unit.name:<40} seed {unit.seed}: taken over while paused; kept here")
        self.trained += 1
        return UnitResult(unit, result.val_acc, result.test_acc, result.seconds)

    def _replace_pool(self) -> None:
        """One of the training processes died (SIGKILL, the OOM killer): fail its runs as
        interrupted, start new processes, and claim those runs again."""
        assert self.pool is not None
        self.pool.close(stop=True)
        self.pool = None
        lost = list(self.inflight.items())
        self.inflight.clear()
        why = "interrupted: its training process died"
        for tid, (_unit, beats) in lost:
            beats.close()
            record_in(storage_of(self.runs_study), tid)(TrialState.FAIL, None, why)
        if self.replaced >= REPLACEMENTS:
            raise BrokenProcessPool(
                f"training processes died {self.replaced + 1} times; the runs stored so far are "
                "kept (rerun the same command to go on)"
            )
        self.replaced += 1
        self.log(
            f"a training process died; {len(lost)} run(s) are trained again on new processes "
            f"(replacement {self.replaced} of {REPLACEMENTS})"
        )
        for _, (unit, _) in lost:
            self.submit(unit)

    def _look_elsewhere(self) -> Iterator[UnitResult]:
        runs = self.runs()
        for run, unit in list(self.elsewhere.items()):
            if runs.done(*run):
                del self.elsewhere[run]
                yield self._stored(unit, runs)
            elif run not in runs.running:  # its process died or gave up: claim it here
                del self.elsewhere[run]
                self.submit(unit)
        if self.elsewhere and not self._said_wait:
            self.log(f"waiting for {len(self.elsewhere)} run(s) another process is training")
            self._said_wait = True
        ready, self.ready = self.ready, []
        yield from ready

    def _stored(self, unit: Unit, runs: Runs) -> UnitResult:
        return UnitResult(unit, runs.val[unit.key][unit.seed], runs.test[unit.key][unit.seed])

    def _given_up(self, unit: Unit, runs: Runs) -> UnitResult:
        why = runs.failed.get(unit.run)
        if why is None:
            cut, died = runs.interrupted.get(unit.run, 0), runs.died.get(unit.run, 0)
            why = f"interrupted {cut} times, {died} of them by its worker's death"
        nan = float("nan")
        return UnitResult(unit, nan, nan, None, why)
