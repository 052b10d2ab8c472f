"""A storage's studies by name: loading one, listing them, the rung studies of a successive-halving
search (``NAME@rung0``, ...), and a study's stored `StudyConfig`.

A study searched with R rungs is R Optuna studies in one storage: the top rung keeps the study's
own name (and its `StudyConfig`); the rungs below are ``NAME@rung0``, ``NAME@rung1``, ... whose
user attributes say whose rung they are (see `explorer.search.rungs`).

Which study a command means is decided here, once, for every subcommand (`choose_study`): the
study --study names; without it, the storage's only study, else the default name if the storage
holds it; otherwise the command asks for --study (a search starts a new study under its default
name instead). The subcommands add --study and --storage with `add_study_args`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

import optuna
from optuna.storages import BaseStorage

from search_space import DEFAULT_SPACE

from ..usage import first_line
from .optuna_api import storage_of
from .records import StudyConfig
from .storages import StorageError, open_storage
from .urls import DEFAULT_STORAGE

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


# The name a search gives a new study on the default dataset, and the study every command opens
# without --study in a storage of several.
DEFAULT_STUDY = f"fashion-mnist-{DEFAULT_SPACE.name}"
STUDY_HELP = (
    "study to use (default: the storage's only study, else the study named "
    f"{DEFAULT_STUDY} if the storage holds it; otherwise the command lists the studies and asks "
    "for --study; the study chosen is said on stderr)"
)
STORAGE_HELP = (
    f"journal file path or SQLAlchemy URL of the studies (default: $EXPLORER_STORAGE, else "
    f"{DEFAULT_STORAGE})"
)


def add_study_args(p: argparse.ArgumentParser, study_extra: str = "") -> None:
    """--study and --storage, as every subcommand that reads a study takes them; `study_extra`
    is a subcommand's own addition to the help of --study."""
    p.add_argument("--study", default=None, metavar="NAME", help=STUDY_HELP + study_extra)
    p.add_argument("--storage", default=None, metavar="URL", help=STORAGE_HELP)


def choose_study(
    names: Sequence[str], given: str | None, default: str = DEFAULT_STUDY, create: bool = False
) -> tuple[str, str | None]:
    """(the study a command uses, why it was chosen: None when `given`), among the storage's
    studies `names` (`study_names`: lower rungs and ablation runs aside). Without `given`: the
    only study, else `default` if there; `create` (a search) takes `default` as a new study
    where neither is, where a reader gets a `StorageError` listing the studies."""
    if given is not None:
        if given not in names and not create:
            known = ", ".join(sorted(names)) or "none"
            raise StorageError(f"no study named {given!r} in this storage (studies: {known})")
        return given, None
    if len(names) == 1:
        return names[0], "the only study in the storage"
    if default in names:
        return default, f"the default name, one of the storage's {len(names)} studies"
    if create:
        held = f"{len(names)} studies have other names" if names else "no study yet"
        return default, f"a new study under the default name (the storage holds {held})"
    if not names:
        raise StorageError("the storage holds no study yet: run a search first")
    raise StorageError(
        f"the storage holds {len(names)} studies ({', '.join(sorted(names))}) and none is "
        f"named {default}; pick one with --study"
    )


def study_line(name: str, why: str) -> str:
    """The one line a command prints when it chose the study itself."""
    return f"study {name!r}: {why} (--study NAME for another)"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def the_study(
    storage: str | BaseStorage | None,
    study_name: str | None,
    say: Callable[[str], None] = _to_stderr,
) -> optuna.Study:
    """The study a command means (`choose_study`), loaded; when the name was not given, one
    line through `say` says which study and why. A `StorageError` names the studies otherwise."""
    store = storage if isinstance(storage, BaseStorage) else open_storage(storage, create=False)
    name, why = choose_study(study_names(store), study_name)
    if why is not None:
        say(study_line(name, why))
    return load_study(store, name)


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
