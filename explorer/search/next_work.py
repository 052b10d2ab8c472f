"""What a worker runs next, decided under the study's lock in a few milliseconds.

A claim takes, in order: a queued trial (a reference, a retry or a promotion), highest rung first;
a design that has earned the rung above (`explorer.search.rungs`), highest rung first; a new design
at the bottom rung while the study holds fewer than the requested number of search trials. With
nothing to do while designs still train below the top rung (their results may promote them), the
answer is `Wait`; otherwise `Done`. Because every worker on every machine claims under the same
lock, the study ends with exactly the requested number of search trials.

What happens under the lock is kept to one read of each rung (a queued trial is taken before the
lower rungs are read) and a few writes: the records of a
rung's finished designs are built once (`RecordCache`) and ranked before the lock is taken, and
under it each candidate is only checked to be still unpromoted; a pre-screened design is sampled
and scored before it too (`explorer.search.prescreen.Prescreener.choose`) and only queued under it; a
claimed trial is reserved under the lock (a new trial, or a queued one moved to RUNNING) and
handed to its sampler after it is released, so that a model-based sampler's proposal, which grows
with the study, does not hold up the other workers. The lock, and the recovery of dead workers'
trials on a timer (`RECOVER_EVERY_S`) and always before a claim answers `Done`, are the one work
loop's (`explorer.store.work.Claims`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from ..analysis import RecordCache
from ..store import RECOVER_EVERY_S, Claims, StudyConfig, storage_of, study_id, trial_for, trial_id
from .prescreen import Prescreener
from .rungs import parents, promote, promotion_candidates
from .study import out_of_new_designs, search_trials_taken

__all__ = ["RECOVER_EVERY_S", "Claim", "Claimer", "Done", "Wait"]


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
    study) through the one work loop's `explorer.store.work.Claims`. `target`: the search trials
    the study should hold. `prescreener`: chooses a new design's parameters among sampled
    candidates by proxy scores (``explorer.search.prescreen.Prescreener.choose``), before the lock."""

    def __init__(
        self,
        rungs: Mapping[int, optuna.Study],
        config: StudyConfig,
        url: str,
        target: int,
        prescreener: Prescreener | None = None,
    ) -> None:
        self.rungs = dict(sorted(rungs.items()))
        self.config, self.url, self.target = config, url, target
        self.prescreener = prescreener
        self.top = self.rungs[max(self.rungs)]
        self.cache = RecordCache()
        self.claims = Claims(url, self.top.study_name, list(self.rungs.values()))
        self._chosen: tuple[dict, dict] | None = None  # a pre-screened design not yet queued

    def __call__(self) -> Claim | Wait | Done:
        candidates = (
            promotion_candidates(self.rungs, self.config, self.cache) if len(self.rungs) > 1 else []
        )
        if self.prescreener is not None and self._chosen is None:
            # Sampling and proxy scoring take seconds: outside the lock, queued under it if due.
            self._chosen = self.prescreener.choose(self.rungs[min(self.rungs)])
        idle: list[Wait | Done] = []

        def pick() -> tuple[int, int] | None:
            found = self._reserve(candidates)
            if isinstance(found, (Wait, Done)):
                idle.append(found)
                return None
            return found

        found = self.claims(pick)
        if found is None:
            return idle[-1]
        rung, reserved = found
        # The sampler proposes here, outside the lock (a queued trial's params are fixed).
        return Claim(rung, trial_for(self.rungs[rung], reserved))

    def recover(self) -> list[tuple[str, int]]:
        """Fail and requeue dead workers' trials at every rung (hold the study's lock)."""
        return self.claims.recover()

    def _reserve(self, candidates) -> tuple[int, int] | Wait | Done:
        """(rung, trial id) of the trial this worker takes, made RUNNING; under the lock. Each
        rung is read once (on a database, Optuna's cache fetches only the trials not finished at
        its last read), and a queued trial is taken before anything else is looked at."""
        trials = {}
        for rung in sorted(self.rungs, reverse=True):
            trials[rung] = self.rungs[rung].get_trials(deepcopy=False)
            taken = self._pop_waiting(self.rungs[rung], trials[rung])
            if taken is not None:
                return rung, taken
        for to_rung, promotion in candidates:
            if promotion.record.number in parents(trials[to_rung]):
                continue  # another worker promoted it since the snapshot (in any state)
            taken = promote(self.rungs[to_rung], to_rung, promotion, take=True)
            assert taken is not None
            return to_rung, taken
        bottom = min(self.rungs)
        study = self.rungs[bottom]
        if search_trials_taken(trials[bottom]) < self.target and not out_of_new_designs(
            trials[bottom]
        ):
            if self._chosen is not None:
                params, attr = self._chosen
                self._chosen = None
                study.enqueue_trial(params, user_attrs={"prescreen": attr})
                taken = self._pop_waiting(study, study.get_trials(deepcopy=False))
                if taken is not None:
                    return bottom, taken
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
