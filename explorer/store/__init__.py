"""Where a study lives: storage URLs and the folders beside them, opening storages, the locks
every process sharing a storage takes, worker liveness, a storage's studies by name (with the rung
studies of a successive-halving search), and the two records a study is made of (`StudyConfig`,
`TrialRecord`).

May import: `explorer.usage`, `search_space`, Optuna. Nothing here trains, ranks or searches.
"""

from .liveness import (
    WorkerToken,
    check_journal_host,
    heartbeat,
    worker_dead,
)
from .locks import (
    HOLDS,
    LOCK_TIMEOUT_S,
    LockTimeout,
    file_lock,
    reeval_lock,
    schema_lock,
    storage_lock,
    study_lock,
)
from .optuna_api import (
    PRIVATE,
    storage_of,
    study_id,
    trial_for,
    trial_id,
)
from .records import (
    MAX_RUNGS,
    REEVAL_PREFIX,
    STUDY_CONFIG_ATTR,
    WORKERS_STARTED_ATTR,
    StudyConfig,
    TrialRecord,
    is_search_trial,
    trial_attr,
)
from .storages import (
    StorageError,
    open_storage,
)
from .studies import (
    RUNG_SUFFIX,
    is_rung_study,
    load_study,
    rung_number,
    rung_of_name,
    rung_studies,
    rung_study_name,
    study_config,
    study_names,
)
from .urls import (
    DEFAULT_STORAGE,
    RDB_SCHEMES,
    STUDIES_DIR,
    artifact_dir,
    default_storage,
    is_journal,
    lock_file,
    log_dir,
    redact,
    scheme,
    single_process_storage,
    storage_file,
    workers_dir,
)

__all__ = [
    "DEFAULT_STORAGE",
    "HOLDS",
    "LOCK_TIMEOUT_S",
    "LockTimeout",
    "MAX_RUNGS",
    "PRIVATE",
    "RDB_SCHEMES",
    "REEVAL_PREFIX",
    "RUNG_SUFFIX",
    "STUDIES_DIR",
    "STUDY_CONFIG_ATTR",
    "StorageError",
    "StudyConfig",
    "TrialRecord",
    "WORKERS_STARTED_ATTR",
    "WorkerToken",
    "artifact_dir",
    "check_journal_host",
    "default_storage",
    "file_lock",
    "heartbeat",
    "is_journal",
    "is_rung_study",
    "is_search_trial",
    "load_study",
    "lock_file",
    "log_dir",
    "open_storage",
    "redact",
    "reeval_lock",
    "rung_number",
    "rung_of_name",
    "rung_studies",
    "rung_study_name",
    "schema_lock",
    "scheme",
    "single_process_storage",
    "storage_file",
    "storage_lock",
    "storage_of",
    "study_config",
    "study_id",
    "study_lock",
    "study_names",
    "trial_attr",
    "trial_for",
    "trial_id",
    "worker_dead",
    "workers_dir",
]
