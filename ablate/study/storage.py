"""Optuna storage: where a study's state lives (journal file, SQLite, PostgreSQL) and how it is opened."""

from __future__ import annotations

import warnings
from pathlib import Path

from ablate.errors import AblateError
from ablate.study.keys import GRACE_SECONDS, HEARTBEAT_SECONDS, MAX_RETRY
from ablate.study.spec import StudySpec

def default_storage_path(spec: StudySpec, state_dir: str | Path | None = None) -> Path:
    folder = Path(state_dir) if state_dir else spec.path.parent / ".state"
    return folder / f"{spec.name}.journal"


def storage_url(spec: StudySpec, storage: str | None, state_dir: str | Path | None = None) -> str:
    """The storage as a string every worker can open: an RDB URL or an absolute journal path."""
    if storage and "://" in storage:
        return storage
    path = Path(storage) if storage else default_storage_path(spec, state_dir)
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{path.resolve()}"
    return str(path.resolve())


def retry_callback():
    """Optuna's callback that queues a copy of a trial whose worker died (its name changed in 4.9)."""
    import optuna

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if cls is None:
        cls = optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(max_retry=MAX_RETRY)


def _sqlalchemy_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed (SQLAlchemy 2.1 defaults to psycopg 3)."""
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
        return f"postgresql://{rest}"
    return url


def open_storage(url: str):
    """Optuna storage for ``url``: RDB (with heartbeats and retries) or a journal file."""
    import inspect

    import optuna

    if "://" in url:
        from optuna.storages import RDBStorage

        callback = retry_callback()
        accepts = inspect.signature(RDBStorage).parameters
        key = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in accepts else "failed_trial_callback"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", FutureWarning)
            try:
                return RDBStorage(_sqlalchemy_url(url), heartbeat_interval=int(HEARTBEAT_SECONDS),
                                  grace_period=int(GRACE_SECONDS), **{key: callback},
                                  engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
            except ImportError as err:
                raise AblateError(f"cannot open Optuna storage {url}: {err}; install the database driver "
                                  "(pip install 'ablate[postgres]' for postgresql://)") from None
            except Exception as err:
                raise AblateError(f"cannot open Optuna storage {url}: {str(err).splitlines()[0]}; check the URL "
                                  "and that the database server runs and accepts this user") from None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise AblateError(f"cannot open the study journal {path}: {err.strerror or err}; "
                          "pass --storage PATH or --state-dir DIR") from None


def native_heartbeat(storage) -> bool:
    """Whether the storage runs Optuna's own heartbeat (RDB storages opened with an interval)."""
    interval = getattr(storage, "get_heartbeat_interval", None)
    return callable(interval) and interval() is not None
