"""Storage and tracking URLs: the one place that redacts their passwords and checks their schemes.

``redact("postgresql://user:secret@host/db")`` is ``postgresql://user:***@host/db``; every line ablate
prints, every error and every MLflow param or tag goes through ``redact`` or ``redact_text``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ablate.errors import AblateError

# scheme://user:password@host  (the password is everything between the first ':' after the user and the '@')
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@\s]*)@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|secret|api_key|apikey)=)[^&\s]*", re.I)

REACH_TIMEOUT_S = 5.0  # a tracking server that does not answer a TCP connection within this is unreachable
TRACKING_SCHEMES = ("file", "sqlite", "postgresql", "postgres", "mysql", "mssql", "http", "https", "databricks",
                    "databricks-uc", "uc")


def redact(url: str | None) -> str:
    """``url`` with any password (``user:pw@``, ``?password=``) replaced by ``***``."""
    if not url:
        return url or ""
    return redact_text(str(url))


def redact_text(text: str) -> str:
    """Every URL's password inside ``text`` (an error message, a plan line) replaced by ``***``."""
    text = _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}***", text)


def check_tracking_uri(uri: str) -> str:
    """An MLflow tracking URI with a scheme MLflow serves (or a plain path); anything else is one line."""
    if "://" in uri or re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\\/]", uri) and not re.match(r"^[A-Za-z]:[\\/]", uri):
        scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in TRACKING_SCHEMES:
            raise AblateError(f"tracking URI {redact(uri)} has an unknown scheme {scheme!r}; use sqlite:///path.db, "
                              "file:///path, postgresql://user@host/db or http(s)://server")
        file_store = scheme == "file"
    else:
        file_store = True  # a plain path: MLflow's file store
    if file_store and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise AblateError(f"tracking URI {redact(uri)} is MLflow's file store, which this MLflow refuses (maintenance "
                          "mode); use a database such as sqlite:///mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true")
    if uri.lower().startswith(("http://", "https://")):
        _check_reachable(uri)
    check_sqlite_store(uri)
    return uri


def _check_reachable(uri: str) -> None:
    """A tracking server that refuses connections is said at once: MLflow's client would retry for minutes."""
    try:
        problem = unreachable(uri)
    except ValueError as err:  # a port that is not a number, or out of range
        raise AblateError(f"tracking URI {redact(uri)} cannot be read ({err}); write http://host:port") from None
    if problem:
        raise AblateError(f"cannot reach the MLflow tracking server at {redact(uri)} ({problem}); start it (e.g. "
                          f"mlflow server --backend-store-uri sqlite:///mlflow.db --port {_host_port(uri)[1]}) or "
                          "give another --tracking-uri / MLFLOW_TRACKING_URI") from None
    if (answer := _not_mlflow(uri)):
        raise AblateError(f"{redact(uri)} answers, but not as an MLflow tracking server ({answer} from its REST API); "
                          "check the address and port of --tracking-uri / MLFLOW_TRACKING_URI")


def _not_mlflow(uri: str, timeout: float = 5.0) -> str:
    """Why a server that accepts connections is not MLflow's (an HTTP 404 from MLflow's REST API, or a page
    that is not JSON), or "" when it may be (it answers JSON, asks for credentials, or does not answer)."""
    import json
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            json.loads(response.read(1 << 20) or b"{}")
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}" if err.code == 404 else ""
    except ValueError:
        return "a page that is not JSON"
    except Exception:  # noqa: BLE001 - timeouts, TLS, proxies: MLflow's client will say what it finds
        return ""
    return ""


def _host_port(url: str) -> tuple[str, int]:
    """An http(s) URL's host and port (the scheme's default when none is written); ValueError for a bad port."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme.lower() == "https" else 80)


def unreachable(url: str, timeout: float = REACH_TIMEOUT_S) -> str:
    """Why a TCP connection to an http(s) ``url``'s host fails ("" when it succeeds, or when a proxy from the
    environment would carry the request instead: then only the proxy can tell)."""
    import socket
    import urllib.request

    host, port = _host_port(url)
    proxies = urllib.request.getproxies()
    if (proxies.get(url.split(":", 1)[0].lower()) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return ""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return str(err.strerror or err or "timed out")
    return ""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The explicit URI, else $MLFLOW_TRACKING_URI, else SQLite in the working directory (checked)."""
    return check_tracking_uri(uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}")


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI, as written (relative or absolute); None for other URIs."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_sqlite_store(uri: str) -> None:
    """A SQLite tracking URI whose file exists but is not a SQLite database (or is a folder) is one line:
    MLflow would fail deep inside SQLAlchemy, or report that no run has the id asked for."""
    path = sqlite_path(uri)
    if path is None:
        return
    if path.is_dir():
        raise AblateError(f"tracking URI {uri} names a folder; give a database file, e.g. sqlite:///{path}/mlflow.db")
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return  # missing (it is created) or unreadable (MLflow's own message says so)
    if head and head != b"SQLite format 3\x00":
        raise AblateError(f"tracking URI {uri}: {path} is not a SQLite database (damaged, or another kind of file); "
                          "point --tracking-uri / MLFLOW_TRACKING_URI at an MLflow database, or move the file away")


def absolute_sqlite(uri: str) -> str:
    """A SQLite URI with its path made absolute (``sqlite:///mlflow.db`` names a file in the folder it was
    given in, which a URI stored for later must keep); other URIs unchanged."""
    path = sqlite_path(uri)
    return f"sqlite:///{path.resolve()}" if path is not None and not path.is_absolute() else uri


def sqlite_store_missing(uri: str) -> bool:
    """A SQLite tracking store whose file does not exist (reading it would create an empty one)."""
    return uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists()
