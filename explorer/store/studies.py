"""A storage's studies by name: loading one, listing them, the rung studies of a successive-halving
search (``NAME@rung0``, ...), and a study's stored `StudyConfig`.

A study searched with R rungs is R Optuna studies in one storage: the top rung keeps the study's
own name (and its `StudyConfig`); the rungs below are ``NAME@rung0``, ``NAME@rung1``, ... whose
user attributes say whose rung they are (see `explorer.search.rungs`).
"""

from __future__ import annotations

import re

import optuna
from optuna.storages import BaseStorage

from ..usage import first_line
from .optuna_api import storage_of
from .records import StudyConfig
from .storages import StorageError, open_storage

RUNG_SUFFIX = re.compile(r"@rung(?P<rung>[0-9]+)$")
# The study beside a study that holds its ablation runs (`explorer.ablate`).
ABLATION_SUFFIX = "@ablation"


def ablation_study_name(name: str) -> str:
    """The Optuna study holding the ablation runs of study `name`."""
    return f"{name}{ABLATION_SUFFIX}"


def is_companion_study(name: str) -> bool:
    """Whether a study name belongs to another study: a lower rung or its ablation runs."""
    return is_rung_study(name) or name.endswith(ABLATION_SUFFIX)


def rung_study_name(name: str, rung: int, rungs: int) -> str:
    """The Optuna study holding rung `rung` of study `name`: the study itself for the top rung."""
    return name if rung == rungs - 1 else f"{name}@rung{rung}"


def is_rung_study(name: str) -> bool:
    """Whether a study name is a lower rung of another study (``NAME@rung0``)."""
    return RUNG_SUFFIX.search(name) is not None


def rung_of_name(name: str) -> tuple[str, int] | None:
    """(the study's name, the rung) for a lower rung's study name, else None."""
    match = RUNG_SUFFIX.search(name)
    return (name[: match.start()], int(match["rung"])) if match else None


def rung_studies(
    storage: optuna.storages.BaseStorage, study: optuna.Study, config: StudyConfig | None
) -> dict[int, optuna.Study]:
    """The study's rungs by their number, bottom first, the study itself the top one; rungs not
    made yet are left out (so a number is the rung's own, never a position in a list)."""
    rungs = config.rungs if config is not None else 1
    out = {}
    for rung in range(rungs - 1):
        try:
            out[rung] = optuna.load_study(
                study_name=rung_study_name(study.study_name, rung, rungs), storage=storage
            )
        except KeyError:
            continue
    out[rungs - 1] = study
    return out


def rung_number(study: optuna.Study, config: StudyConfig | None) -> int:
    """Which rung a study (one of `rung_studies`) holds."""
    parsed = rung_of_name(study.study_name)
    if parsed is not None:
        return parsed[1]
    return (config.rungs if config is not None else 1) - 1


def load_study(storage: str | BaseStorage | None, study_name: str) -> optuna.Study:
    """An existing study; a `StorageError` names the studies that do exist when it is missing."""
    store = storage if isinstance(storage, BaseStorage) else open_storage(storage, create=False)
    names = study_names(store)
    if study_name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise StorageError(f"no study named {study_name!r} in this storage (studies: {known})")
    try:
        return optuna.load_study(study_name=study_name, storage=store)
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot load study {study_name!r}: {first_line(exc)}") from None


def the_study(storage: str | BaseStorage | None, study_name: str | None) -> optuna.Study:
    """The study named `study_name`, or, when no name is given, the storage's only study (its
    rung and ablation studies aside); a `StorageError` that names the studies otherwise."""
    store = storage if isinstance(storage, BaseStorage) else open_storage(storage, create=False)
    if study_name is None:
        names = study_names(store)
        if len(names) != 1:
            raise StorageError(
                f"the storage holds {len(names)} studies ({', '.join(sorted(names)) or 'none'}); "
                "pick one with --study"
            )
        study_name = names[0]
    return load_study(store, study_name)


def study_names(storage: str | BaseStorage | None, rungs: bool = False) -> list[str]:
    """Names of the studies in a storage; the studies that belong to another (the lower rungs of
    successive-halving studies, ``NAME@rung0``, and ablation runs, ``NAME@ablation``) only with
    `rungs`."""

    store = storage if isinstance(storage, BaseStorage) else open_storage(storage, create=False)
    try:
        return [
            s.study_name
            for s in optuna.get_all_study_summaries(store, include_best_trial=False)
            if rungs or not is_companion_study(s.study_name)
        ]
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot read studies: {first_line(exc)}") from None


def study_config(study: optuna.Study) -> StudyConfig | None:
    """A study's stored settings (None for a study this project did not make); a lower rung's
    study (`explorer.search.rungs`) has those of the study it is a rung of."""
    try:
        config = StudyConfig.from_study(study.user_attrs)
    except ValueError:
        return None
    of = study.user_attrs.get("rung_of")
    if config is None and isinstance(of, str) and of != study.study_name:
        try:
            return study_config(optuna.load_study(study_name=of, storage=storage_of(study)))
        except KeyError:
            return None
    return config
