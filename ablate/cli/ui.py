"""`ablate ui`: the MLflow UI on loopback for the same tracking store."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from ablate.errors import AblateError


def _check_port(host: str, port: int) -> None:
    """A busy or impossible port is the user's to fix: say so before MLflow prints a traceback."""
    if not host.strip():
        raise AblateError("--host is empty; give an address to serve on, e.g. --host 127.0.0.1")
    if not 0 < port < 65536:
        raise AblateError(f"--port {port} is not a TCP port; use 1-65535 (e.g. --port 5000)")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise AblateError(f"cannot serve on {host}:{port}: {err.strerror or err}; another program uses "
                              f"the port: pick another with --port (e.g. --port {port + 1})") from None


def cmd_ui(args) -> int:
    import signal
    import subprocess

    from ablate.track import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    _check_port(args.host, args.port)
    # -P: never import a module from the working directory (an mlflow.py there would shadow MLflow);
    # uvicorn's access log off: one line per HTTP request drowns the address the user needs
    cmd = [sys.executable, "-P", "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", "1", "--uvicorn-opts", "--no-access-log --log-level warning"]
    if uri.startswith("sqlite:///"):
        cmd += ["--default-artifact-root", (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()]
    proc = subprocess.Popen(cmd, start_new_session=True)
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)

    def stop(*_):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop()
        proc.wait(timeout=10)
        return 0


def add_commands(sub) -> None:
    p = sub.add_parser("ui", help="start the MLflow UI on loopback for the same tracking store")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
