"""The Optuna internals the project reads (`explorer.store.optuna_api.PRIVATE`) still exist on this
Optuna: a release that moves one fails here, by name, not somewhere inside a search."""

from __future__ import annotations

import optuna
import pytest

from explorer.store import optuna_api, storage_of, trial_for, trial_id
from explorer.store.optuna_api import PRIVATE


def _objects(tmp_path) -> dict[str, object]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.journal"))
    )
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    return {"Study": study, "Trial": trial, "FrozenTrial": study.trials[0]}


@pytest.mark.parametrize("name", PRIVATE)
def test_each_internal_read_exists(name, tmp_path):
    cls, attr = name.split(".")
    assert hasattr(_objects(tmp_path)[cls], attr), f"optuna {optuna.__version__} has no {name}"


def test_the_readers_agree_with_the_public_api(tmp_path):
    study = _objects(tmp_path)["Study"]
    assert optuna_api.study_id(study) == storage_of(study).get_study_id_from_name(study.study_name)
    frozen = study.trials[0]
    assert trial_id(frozen) == storage_of(study).get_trial_id_from_study_id_trial_number(
        optuna_api.study_id(study), frozen.number
    )
    reserved = storage_of(study).create_new_trial(optuna_api.study_id(study))
    trial = trial_for(study, reserved)
    assert trial_id(trial) == reserved and trial.number == 1
