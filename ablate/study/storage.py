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
    if storage and not path.parent.is_dir():  # a typo would start a new, empty study in a folder made for it
        raise AblateError(f"--storage {storage}: the folder {path.parent} does not exist; create it first, or fix "
                          "the path")
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

        _check_sqlite_storage(url)

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
    damaged = (f"the study journal {path} is damaged ({{}}); restore it from a copy, or move it away to start the "
               "study over (or give another --storage / --state-dir)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            _check_journal_start(path)
            repair_journal(path)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise AblateError(f"cannot open the study journal {path}: {err.strerror or err}; "
                          "pass --storage PATH or --state-dir DIR") from None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, AssertionError) as err:  # garbage, unknown op
        why = " ".join(str(err).split())[:100] or type(err).__name__
        raise AblateError(damaged.format(f"{_first_bad_line(path)}{why}")) from None


def _check_journal_start(path: Path) -> None:
    """A non-empty file whose first line is not an Optuna record is another file given as --storage (a
    study's TOML, a log), not a damaged journal: say so, before anything is appended to it."""
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    if not first.endswith(b"\n"):
        return  # one record torn by a kill during the first write: repair_journal's to cut
    if first.strip() and not _is_record(first):
        raise AblateError(f"{path} is not an Optuna study journal (its first line is not one of Optuna's records); "
                          "give --storage a new file, an existing journal, or a database URL")


def _check_sqlite_storage(url: str) -> None:
    """A SQLite storage in a folder that does not exist, in a file that is not SQLite, or in MLflow's own
    database (Optuna would add its tables there) is one line, before Optuna touches it."""
    import sqlite3

    from ablate.urls import check_sqlite_store, sqlite_path

    path = sqlite_path(url)
    if path is None:
        return
    if not path.parent.is_dir():
        raise AblateError(f"cannot open Optuna storage {url}: the folder {path.parent} does not exist; create it, or "
                          "give --storage a path in an existing folder")
    try:
        check_sqlite_store(url)
    except AblateError:
        raise AblateError(f"--storage {url}: {path} is not a SQLite database; give a new file or an Optuna "
                          "database") from None
    if not path.is_file():
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return  # locked or unreadable: Optuna's own error says what
    if {"experiments", "runs", "metrics"} <= tables:
        raise AblateError(f"--storage {url} is an MLflow tracking database; the study's Optuna storage is another "
                          "file (e.g. --storage study.db), and --tracking-uri names MLflow's")


def _first_bad_line(path: Path) -> str:
    """``line 50: `` for the journal's first line that is not a JSON object, or "" (the error names the
    position inside one record, which is no help in finding it)."""
    import json

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                try:
                    if not isinstance(json.loads(line), dict):
                        return f"line {number}: "
                except ValueError:
                    return f"line {number}: "
    except OSError:
        pass
    return ""


def repair_journal(path: Path) -> int:
    """Cut a torn last record off a journal before anything is appended to it; returns the bytes cut.

    A worker killed while appending leaves a last line without its newline (or one that is not JSON);
    Optuna skips it while it is last, but a record appended after it would glue onto it and make the
    journal unreadable. The cut bytes go to ``<journal>.torn-<time>`` first; the journal's own lock is
    held, so a live writer's half-written record is never mistaken for a torn one.
    """
    import shutil
    import sys
    import time

    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - (1 << 20)))
            tail = f.read()
        head = size - len(tail)
        cut = tail.rfind(b"\n") + 1  # start of the bytes after the last newline
        if cut == 0 and head > 0:
            return 0  # a record over 1 MiB: leave it to Optuna
        lines = tail[:cut].splitlines(keepends=True)
        if lines and not _is_record(lines[-1]):  # the last complete line is torn too, if a good one precedes it
            if len(lines) < 2 or not _is_record(lines[-2]):
                raise AblateError(f"the study journal {path} is damaged (its last records are not Optuna's); "
                                  "restore it from a copy, or move it away to start the study over (or give another "
                                  "--storage / --state-dir)")
            cut -= len(lines[-1])
        if head + cut == size:
            return 0
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copyfile(path, backup)
        with open(path, "r+b") as f:
            f.truncate(head + cut)
            f.flush()
        removed = size - head - cut
        print(f"ablate: repaired the study journal {path}: cut a torn last record ({removed} bytes); "
              f"the journal as it was is in {backup}", file=sys.stderr)
        return removed
    finally:
        lock.release()


def _is_record(line: bytes) -> bool:
    import json

    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def native_heartbeat(storage) -> bool:
    """Whether the storage runs Optuna's own heartbeat (RDB storages opened with an interval)."""
    interval = getattr(storage, "get_heartbeat_interval", None)
    return callable(interval) and interval() is not None
