"""The Optuna internals the project cannot do without, each read in one place.

Optuna's public API has no way to reach a study's storage or a trial's id from the objects the
ask-and-tell interface hands out; the claim (`explorer.search.next_work`) and the recovery of dead
workers' trials need both. `pyproject.toml` bounds Optuna to the major versions CI tests, and
``tests/test_optuna_api.py`` fails by name if a release moves one of these.
"""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

# What this module reads, as "Class.attribute" (the test checks each on real objects).
PRIVATE = (
    "Study._storage",
    "Study._study_id",
    "Study._thread_local",
    "Trial._trial_id",
    "FrozenTrial._trial_id",
)


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes through (Optuna's cache in front of an RDB)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in its storage (unique across the storage's studies, unlike its number)."""
    return trial._trial_id


def trial_for(study: optuna.Study, reserved: int) -> optuna.Trial:
    """The `optuna.Trial` of a trial reserved (made RUNNING) without `Study.ask`, as `ask` makes
    it: the study's cached trial list is dropped first, so the sampler sees the study as it is."""
    study._thread_local.cached_all_trials = None
    return optuna.Trial(study, reserved)
