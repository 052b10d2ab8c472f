"""What a worker runs next, decided under the study's lock in a few milliseconds.

A claim takes, in order: a queued trial (a reference, a retry or a promotion), highest rung first;
a design that has earned the rung above (`explorer.search.rungs`), highest rung first; a new design
at the bottom rung while the study holds fewer than the requested number of search trials. With
nothing to do while designs still train below the top rung (their results may promote them), the
answer is `Wait`; otherwise `Done`. Because every worker on every machine claims under the same
lock, the study ends with exactly the requested number of search trials.

What happens under the lock is kept to reads of trial states and a few writes: the records of a
rung's finished designs are built once (`RecordCache`) and ranked before the lock is taken, and
under it each candidate is only checked to be still unpromoted; a claimed trial is reserved under
the lock (a new trial, or a queued one moved to RUNNING) and handed to its sampler after it is
released, so that a model-based sampler's proposal, which grows with the study, does not hold up
the other workers. Dead workers' trials are recovered on a timer (`RECOVER_EVERY_S`), and always
before a claim answers `Done`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from ..analysis.studies import RecordCache
from ..store.locks import study_lock
from ..store.optuna_api import storage_of, study_id, trial_for, trial_id
from ..store.records import StudyConfig
from .recovery import recover
from .rungs import parents, promote, promotion_candidates
from .study import out_of_new_designs, search_trials_taken

RECOVER_EVERY_S = 20.0


@dataclass(frozen=True)
class Claim:
    """A trial this worker runs now, at `rung`."""

    rung: int
    trial: optuna.Trial


@dataclass(frozen=True)
class Wait:
    """Nothing to run now, but designs still train below the top rung and may earn promotion."""


@dataclass(frozen=True)
class Done:
    """The study holds every search trial asked for and nothing is left to promote."""


class Claimer:
    """Claims this worker's trials in a study's rungs (by rung number; one for a single-budget
    study). `target`: the search trials the study should hold."""

    def __init__(
        self,
        rungs: Mapping[int, optuna.Study],
        config: StudyConfig,
        url: str,
        target: int,
        prescreener: Callable[[optuna.Study], object] | None = None,
    ) -> None:
        self.rungs = dict(sorted(rungs.items()))
        self.config, self.url, self.target = config, url, target
        self.prescreener = prescreener
        self.top = self.rungs[max(self.rungs)]
        self.cache = RecordCache()
        self.last_recovery = -math.inf

    def __call__(self) -> Claim | Wait | Done:
        candidates = (
            promotion_candidates(self.rungs, self.config, self.cache) if len(self.rungs) > 1 else []
        )
        with study_lock(self.url, self.top.study_name):
            if time.monotonic() - self.last_recovery > RECOVER_EVERY_S:
                self.recover()
            found = self._reserve(candidates)
            if isinstance(found, (Wait, Done)) and self.recover():
                found = self._reserve(candidates)
        if isinstance(found, (Wait, Done)):
            return found
        rung, reserved = found
        # The sampler proposes here, outside the lock (a queued trial's params are fixed).
        return Claim(rung, trial_for(self.rungs[rung], reserved))

    def recover(self) -> list[int]:
        """Fail and requeue dead workers' trials at every rung (hold the study's lock)."""
        self.last_recovery = time.monotonic()
        return [n for study in self.rungs.values() for n in recover(study, self.url)]

    def _reserve(self, candidates) -> tuple[int, int] | Wait | Done:
        """(rung, trial id) of the trial this worker takes, made RUNNING; under the lock. Each
        rung's trials are read once."""
        trials = {rung: study.get_trials(deepcopy=False) for rung, study in self.rungs.items()}
        for rung in sorted(self.rungs, reverse=True):
            taken = self._pop_waiting(self.rungs[rung], trials[rung])
            if taken is not None:
                return rung, taken
        promoted = {rung: parents(trials[rung]) for rung in self.rungs}
        for to_rung, promotion in candidates:
            if promotion.record.number in promoted[to_rung]:
                continue  # another worker promoted it since the snapshot
            upper = self.rungs[to_rung]
            promote(upper, to_rung, promotion)
            taken = self._pop_waiting(upper, upper.get_trials(deepcopy=False))
            if taken is not None:
                return to_rung, taken
        bottom = min(self.rungs)
        if search_trials_taken(trials[bottom]) < self.target and not out_of_new_designs(
            trials[bottom]
        ):
            if self.prescreener is not None:
                self.prescreener(self.rungs[bottom])
                taken = self._pop_waiting(
                    self.rungs[bottom], self.rungs[bottom].get_trials(deepcopy=False)
                )
                if taken is not None:
                    return bottom, taken
            study = self.rungs[bottom]
            return bottom, storage_of(study).create_new_trial(study_id(study))
        running = any(
            t.state == TrialState.RUNNING
            for rung, rung_trials in trials.items()
            if rung != max(self.rungs)
            for t in rung_trials
        )
        return Wait() if len(self.rungs) > 1 and running else Done()

    @staticmethod
    def _pop_waiting(study: optuna.Study, trials) -> int | None:
        """Move the oldest queued trial of `study` to RUNNING; its id, or None if none waits."""
        for t in trials:
            if t.state == TrialState.WAITING and storage_of(study).set_trial_state_values(
                trial_id(t), TrialState.RUNNING
            ):
                return trial_id(t)
        return None
