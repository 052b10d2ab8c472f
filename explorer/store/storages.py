"""Opening study storages: a journal file (the default, safe for several local processes) or any
SQLAlchemy URL Optuna accepts (PostgreSQL for a study shared by several machines).

Every failure to open or read a storage becomes a `StorageError` with one readable line, so the
CLIs can print it and exit with status 2, and the dashboard can show it. A search's workers open
their database storage with ``retry=True``: the open and each later call that fails with a passing
error (a server restarting, a dropped connection) are retried for `explorer.store.locks.TRANSIENT_S`
seconds (`RetryingRDBStorage`); anyone else gets a storage that fails at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from ..usage import first_line
from .locks import StorageUnavailable, keep_trying, retry_transient, schema_lock
from .urls import RDB_SCHEMES, default_storage, is_journal, redact, scheme


class StorageError(Exception):
    """A storage that cannot be opened or read, or a study that is not in it."""


class RetryingRDBStorage(RDBStorage):
    """Optuna's RDB storage, each call retried while it fails with a passing error
    (`explorer.store.locks.retry_transient`). A write whose commit reached the server just as
    the connection dropped is not written twice: setting an attribute again changes nothing, a
    trial finished twice raises Optuna's `UpdateFinishedTrialError` (the worker then drops its
    run, the trial being finished), and a queued trial made RUNNING twice answers False (it stays
    RUNNING with no worker, and is recovered as an orphan). Heartbeats are not retried: the next
    beat is the retry."""

    def __init__(self, url: str, **kwargs) -> None:
        self._what = redact(url)
        super().__init__(url, **kwargs)


def _retrying(name: str):
    method = getattr(RDBStorage, name)

    def call(self, *args, **kwargs):
        return retry_transient(lambda: method(self, *args, **kwargs), self._what)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


# Every call a search makes; `_create_new_trial`, `_set_trial_param` and `_get_trials` are the
# ones Optuna's cache in front of an RDB storage calls.
for _name in (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_all_studies", "create_new_trial", "_create_new_trial",
    "set_trial_param", "_set_trial_param", "get_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials",
    "get_best_trial", "_get_best_trial_id", "_get_stale_trial_ids",
):  # fmt: skip
    setattr(RetryingRDBStorage, _name, _retrying(_name))


def open_storage(
    url: str | None = None,
    *,
    create: bool = True,
    heartbeat: int | None = None,
    retry: bool = False,
) -> BaseStorage:
    """Open a storage by URL or journal-file path.

    create: make the journal file (and its folder) if missing; readers pass False and get a
    `StorageError` for a missing file instead. heartbeat: seconds between RDB heartbeats, so the
    trials of a killed worker are marked failed and retried (RDB storages only). retry: a
    database storage that is down or drops connections is waited for (`RetryingRDBStorage`, and
    its locks), as a search's workers do; otherwise a first failure is a `StorageError` at once.
    """
    url = url or default_storage()
    if is_journal(url):
        path = Path(url).expanduser()
        if path.is_dir():
            raise StorageError(
                f"storage {url!r} is a folder; give a journal file such as {url}/explorer.journal"
            )
        if not path.exists():
            if not create:
                raise StorageError(f"no study storage at {url!r} (run a search first)")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create storage folder for {url!r}: {exc}") from None
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as exc:  # noqa: BLE001 - any reader failure is one clear line
            raise StorageError(f"cannot read journal storage {url!r}: {first_line(exc)}") from None
    kind = scheme(url)
    if retry:
        keep_trying(url)  # as given: the workers' locks are taken on this spelling
    if url.startswith("postgres://"):
        url = "postgresql" + url[len("postgres") :]
    if kind not in RDB_SCHEMES:
        raise StorageError(
            f"unknown storage URL scheme {kind!r} in {redact(url)!r}; use a journal file path "
            "or a SQLAlchemy URL such as postgresql://user@host:5432/db"
        )
    kwargs = {}
    if heartbeat and kind != "sqlite":
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat}
    engine = {"pool_pre_ping": True}
    if kind == "postgresql":  # a host that drops packets fails in 10 s, not minutes
        engine["connect_args"] = {"connect_timeout": 10}

    if retry:
        keep_trying(url)
    cls = RetryingRDBStorage if retry else RDBStorage
    try:
        # Optuna creates the schema of a fresh database on first open; two processes doing it
        # at once collide (a duplicate-key error on PostgreSQL), so they take turns.
        with schema_lock(url), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
            return retry_transient(
                lambda: cls(url, engine_kwargs=engine, **kwargs), redact(url), retry
            )
    except StorageUnavailable:  # already one line naming the storage
        raise
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot open storage {redact(url)!r}: {first_line(exc)}") from None
