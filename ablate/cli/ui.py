"""`ablate ui`: the MLflow UI on loopback for the same tracking store, opened on the runs' charts."""

from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from ablate.errors import AblateError
from ablate.urls import redact


def _check_port(host: str, port: int) -> None:
    """A busy or impossible port is the user's to fix: say so before MLflow prints a traceback."""
    if not host.strip():
        raise AblateError("--host is empty; give an address to serve on, e.g. --host 127.0.0.1")
    if not 0 < port < 65536:
        raise AblateError(f"--port {port} is not a TCP port; use 1-65535 (e.g. --port 5000)")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except socket.gaierror:
            raise AblateError(f"--host {host}: no such address or host name; serve on 127.0.0.1 (this machine "
                              "only) or 0.0.0.0 (every interface)") from None
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                raise AblateError(f"--host {host} is not an address of this machine; serve on 127.0.0.1 (this "
                                  "machine only) or 0.0.0.0 (every interface)") from None
            if err.errno == errno.EACCES:
                raise AblateError(f"cannot serve on {host}:{port}: ports below 1024 need privileges; pick another "
                                  "with --port (e.g. --port 5000)") from None
            raise AblateError(f"cannot serve on {host}:{port}: {err.strerror or err}; another program uses "
                              f"the port: pick another with --port (e.g. --port {port + 1})") from None


def _check_store(uri: str) -> None:
    """A SQLite store in a folder that does not exist is a typo in --tracking-uri, not a new store: MLflow
    would make the folders and show an empty UI."""
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise AblateError(f"no folder {folder} for the tracking store {uri}; check --tracking-uri (runs log "
                              "to sqlite:///<working folder>/mlflow.db unless told otherwise)")


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's runs in MLflow's model-training view: the charts of every ablate run, flat (a
    filter stops MLflow from folding a group's runs under their parent), best final val_loss first."""
    query = {"workflowType": "machine_learning", "compareRunsMode": "CHART",
             "searchFilter": "tags.`ablate.variant` LIKE '%'",
             "orderByKey": "metrics.`summary/final_val_loss`", "orderByAsc": "true"}
    return f"{base}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


def _experiment_id(uri: str, name: str) -> str | None:
    """The experiment's id in the store, without creating a store or an experiment."""
    from ablate.urls import sqlite_store_missing

    if sqlite_store_missing(uri):
        return None
    try:
        from ablate.track import client_for

        exp = client_for(uri)[0].get_experiment_by_name(name)
    except Exception:  # an unreachable server: the UI itself will say so
        return None
    return exp.experiment_id if exp is not None else None


_WATCHDOG = """
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
while os.getppid() == parent:
    time.sleep(0.5)
try:
    os.killpg(group, signal.SIGTERM)
except ProcessLookupError:
    pass
"""


def cmd_ui(args) -> int:
    import signal
    import subprocess

    from ablate.track import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    if uri.lower().startswith(("http://", "https://")):  # a tracking server is its own UI
        raise AblateError(f"the tracking store {redact(uri)} is an MLflow server, which serves its own UI: open "
                          f"{redact(uri)} in a browser (ablate ui serves a database store, e.g. --tracking-uri "
                          "sqlite:///mlflow.db)")
    _check_store(uri)
    _check_port(args.host, args.port)
    # -P: never import a module from the working directory (an mlflow.py there would shadow MLflow);
    # uvicorn's access log off: one line per HTTP request drowns the address the user needs
    cmd = [sys.executable, "-P", "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", "1", "--uvicorn-opts", "--no-access-log --log-level warning"]
    if uri.startswith("sqlite:///"):
        cmd += ["--default-artifact-root", (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()]
    log = None if args.verbose else tempfile.NamedTemporaryFile("w+", prefix="ablate-ui-", suffix=".log")
    env = os.environ if args.verbose else {**os.environ, "PYTHONWARNINGS": "ignore", "MLFLOW_LOGGING_LEVEL": "WARNING"}
    proc = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=log, stderr=log)
    # a watchdog outlives this process if it is killed outright (kill -9), and stops the server's process group:
    # MLflow's server, uvicorn and huey would otherwise keep the port
    subprocess.Popen([sys.executable, "-P", "-c", _WATCHDOG, str(os.getpid()), str(proc.pid)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    print(f"MLflow UI for {uri} at {base} (Ctrl-C to stop)", flush=True)
    exp_id = _experiment_id(uri, args.experiment)
    if exp_id is not None:
        print(f"  runs of experiment {args.experiment!r}, charts: {runs_url(base, exp_id)}", flush=True)
    else:
        print(f"  no experiment {args.experiment!r} there yet; its runs appear once `ablate run` logs one", flush=True)

    def stop(*_):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        stop()
        proc.wait(timeout=10)
        return 0
    # the server ended by itself (Ctrl-C and SIGTERM return above): never a silent exit 0
    tail = ""
    if log is not None:  # the server's own words, which were kept quiet while it ran
        log.seek(0)
        tail = "".join(log.readlines()[-20:])
    if "address already in use" in tail.lower():  # another server took the port after the check above
        raise AblateError(f"cannot serve on {args.host}:{args.port}: the port was taken while MLflow started "
                          "(another `ablate ui` or server on it); pick another --port")
    print(tail, file=sys.stderr, end="")
    print(f"ablate: error: the MLflow server stopped (exit {code})" + ("; its last lines are above" if tail else ""),
          file=sys.stderr)
    return code or 1


def add_commands(sub) -> None:
    p = sub.add_parser("ui", help="start the MLflow UI on loopback for the same tracking store")
    p.add_argument("--tracking-uri", default=None,
                   help="the store to show (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db, as `ablate run`)")
    p.add_argument("--experiment", default="ablate", help="the experiment whose runs page is printed (default 'ablate')")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="TCP port to serve on (default 5000)")
    p.add_argument("--verbose", action="store_true", help="show the MLflow server's own log lines")
    p.set_defaults(func=cmd_ui)
