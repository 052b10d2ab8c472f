"""Everything the dashboard reads, cached at the Streamlit layer and nowhere else.

A storage is opened once per URL and kept (`st.cache_resource`): a journal storage then reads only
the lines a running search appended since the last refresh. The dashboard creates nothing: a
storage that is not there yet (no file; a database without Optuna's tables) raises `NoStorage`
before Optuna, which would create it, is asked to open it. Trials are read on every run, so the
page follows the search; what is slow to derive (hypervolume curve, importances, exported code)
is cached (`st.cache_data`) under a fingerprint of the trials' states, so it is recomputed only
when a trial finishes.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import optuna
import sqlalchemy
import streamlit as st
from optuna.storages import BaseStorage
from sqlalchemy.pool import NullPool

from explorer.ablate import Measured
from explorer.analysis import study_records
from explorer.export import ExportError, export_source
from explorer.store import (
    StorageError,
    StudyConfig,
    TrialRecord,
    is_journal,
    load_study,
    open_storage,
    rung_studies,
    scheme,
    storage_file,
    study_config,
    study_names,
)
from explorer.usage import first_line

from . import ablation, data, verdicts
from .guard import shown


class NoStorage(StorageError):
    """No study storage is at the URL yet (nothing was created to find out)."""


class LoadedStudy(NamedTuple):
    study: optuna.Study
    records: list[TrialRecord]
    fingerprint: tuple  # changes whenever a trial is added or changes state
    # A successive-halving study's rungs (explorer.search.rungs), bottom first; {top: records} otherwise.
    rung_studies: dict[int, optuna.Study] | None = None
    by_rung: dict[int, list[TrialRecord]] | None = None
    config: StudyConfig | None = None  # the study's settings (None: none stored, or malformed)
    problem: str | None = None  # why stored settings were left aside

    def rung(self, rung: int) -> LoadedStudy:
        """The same study seen at one rung: its records (the top rung is the study itself)."""
        if not self.rung_studies or rung not in self.rung_studies:
            return self
        study, records = self.rung_studies[rung], (self.by_rung or {})[rung]
        return self._replace(study=study, records=records, fingerprint=data.fingerprint(records))


def get_storage(url: str) -> BaseStorage:
    """The storage at `url`, opened once; raises `NoStorage` while there is none and
    `StorageError` if it is unreadable (neither cached)."""
    return _storage(url, _file_identity(url))


@st.cache_resource(show_spinner=False, max_entries=8)
def _storage(url: str, identity: tuple | None) -> BaseStorage:
    if not _exists(url):
        raise NoStorage(f"there is no study storage at {shown(url)} yet")
    return open_storage(url, create=False)


def _exists(url: str) -> bool:
    """Whether a study storage is at `url`, found out without creating anything: its journal or
    SQLite file exists and, in a database, Optuna's tables do (Optuna creates both on opening)."""
    path = storage_file(url)
    if path is not None and path.exists() and not (path.is_file() or path.is_dir()):
        raise StorageError(f"{shown(url)} is not a regular file")  # a FIFO would hang the read
    if is_journal(url):
        return path is not None and path.exists()
    if scheme(url) == "sqlite" and (path is None or not path.is_file()):
        return False  # an in-memory SQLite is always empty
    if url.startswith("postgres://"):
        url = "postgresql" + url[len("postgres") :]
    connect_args = {"connect_timeout": 10} if scheme(url) == "postgresql" else {}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        try:
            with engine.connect() as connection:
                return sqlalchemy.inspect(connection).has_table("studies")
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to look is one line, the page's own
        raise StorageError(f"cannot read {shown(url)}: {first_line(exc)}") from None


def _file_identity(url: str) -> tuple | None:
    """What tells one journal file from another at the same path: its inode and its first line
    (which names the worker that wrote it). A journal deleted and started afresh must be read
    from its start, not from where the old one ended, even where the new file reuses the inode.
    """
    if not is_journal(url):
        return None
    try:
        path = os.path.expanduser(url)
        stat = os.stat(path)
        with open(path, "rb") as f:
            head = f.readline(4096)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, head


def list_studies(url: str) -> list[str]:
    """Names of the studies in the storage at `url`, as of now."""
    return study_names(get_storage(url))


def load(url: str, study_name: str) -> LoadedStudy:
    """The study and its trials as records, read afresh; raises `StorageError`."""

    storage = get_storage(url)
    study = load_study(storage, study_name)
    records = study_records(study)
    try:
        config, problem = study_config(study), None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a hostile study's settings
        config, problem = None, f"its stored settings are malformed ({type(exc).__name__})"
    if config is None or config.rungs <= 1:
        return LoadedStudy(study, records, data.fingerprint(records), config=config,
                           problem=problem)  # fmt: skip
    studies = rung_studies(storage, study, config)
    by_rung = {
        k: records
        if s is study
        else [TrialRecord.from_trial(t) for t in s.get_trials(deepcopy=False)]
        for k, s in studies.items()
    }
    return LoadedStudy(study, records, data.fingerprint(records), studies, by_rung, config)


def verification(
    url: str, loaded: LoadedStudy
) -> tuple[verdicts.VerificationInfo | None, str | None]:
    """The claims of a study (the top rung, as `load` returns it) and where their verification
    stands (`app.verdicts`), read afresh: (info, None), or (None, why) for stored runs the
    replay cannot read."""
    bottom = loaded.rung_studies[min(loaded.rung_studies)] if loaded.rung_studies else None
    try:
        info = verdicts.verification_info(loaded.study, loaded.records, loaded.config, url, bottom)
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as exc:
        return None, f"its stored verification runs are malformed ({type(exc).__name__})"
    return info, None


@st.cache_data(show_spinner=False, max_entries=16)
def progress(
    url: str, study_name: str, fingerprint: tuple, _records: list[TrialRecord], _config=None
) -> data.ProgressInfo:
    return data.progress_info(_records, _config)


@st.cache_data(show_spinner="Computing parameter importances...", max_entries=16)
def importances(
    url: str, study_name: str, fingerprint: tuple, _study: optuna.Study
) -> data.ImportanceInfo:
    return data.param_importances(_study)


@st.cache_data(show_spinner="Reading ablations...", max_entries=16)
def ablations(
    url: str, study_name: str, fingerprint: tuple, _study: optuna.Study
) -> list[Measured]:
    """The ladders measured beside the study (`explorer.ablate`), read afresh when they change."""
    return ablation.measured_ladders(_study)


@st.cache_data(show_spinner=False, max_entries=32)
def exported_source(
    url: str, study_name: str, number: int, command: str, _study: optuna.Study
) -> str:
    """The standalone PyTorch source of one trial, as `python -m explorer.export` writes it.

    Raises the exporter's `ExportError` for a trial it cannot export (not cached).
    """
    return export_source(_study, [number], command=command)


def export_code(
    url: str, study_name: str, number: int, command: str, study: optuna.Study
) -> tuple[str | None, str | None]:
    """(source, None) for a trial the exporter can write, else (None, why not in one line)."""
    try:
        return exported_source(url, study_name, number, command, study), None
    except ExportError as exc:
        return None, f"cannot export trial {number}: {exc}"
