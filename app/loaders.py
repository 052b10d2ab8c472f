"""Everything the dashboard reads, cached at the Streamlit layer and nowhere else.

A storage is opened once per URL and kept (`st.cache_resource`): a journal storage then reads only
the lines a running search appended since the last refresh. Trials are read on every run, so the
page follows the search; what is slow to derive (hypervolume curve, importances, exported code)
is cached (`st.cache_data`) under a fingerprint of the trials' states, so it is recomputed only
when a trial finishes.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import optuna
import streamlit as st
from optuna.storages import BaseStorage

from explorer.ablate import Measured
from explorer.analysis import study_records
from explorer.export import ExportError, export_source
from explorer.store import (
    TrialRecord,
    is_journal,
    load_study,
    open_storage,
    rung_studies,
    study_config,
    study_names,
)

from . import ablation, data


class LoadedStudy(NamedTuple):
    study: optuna.Study
    records: list[TrialRecord]
    fingerprint: tuple  # changes whenever a trial is added or changes state
    # A successive-halving study's rungs (explorer.search.rungs), bottom first; {top: records} otherwise.
    rung_studies: dict[int, optuna.Study] | None = None
    by_rung: dict[int, list[TrialRecord]] | None = None

    def rung(self, rung: int) -> LoadedStudy:
        """The same study seen at one rung: its records (the top rung is the study itself)."""
        if not self.rung_studies or rung not in self.rung_studies:
            return self
        study, records = self.rung_studies[rung], (self.by_rung or {})[rung]
        return LoadedStudy(study, records, data.fingerprint(records), self.rung_studies,
                           self.by_rung)  # fmt: skip


def get_storage(url: str) -> BaseStorage:
    """The storage at `url`, opened once; raises `StorageError` (never cached) if unreadable."""
    return _storage(url, _file_identity(url))


@st.cache_resource(show_spinner=False, max_entries=8)
def _storage(url: str, identity: tuple | None) -> BaseStorage:
    return open_storage(url, create=False)


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
    config = study_config(study)
    if config is None or config.rungs <= 1:
        return LoadedStudy(study, records, data.fingerprint(records))
    studies = rung_studies(storage, study, config)
    by_rung = {
        k: records
        if s is study
        else [TrialRecord.from_trial(t) for t in s.get_trials(deepcopy=False)]
        for k, s in studies.items()
    }
    return LoadedStudy(study, records, data.fingerprint(records), studies, by_rung)


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
