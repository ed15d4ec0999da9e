"""`ablate ui`: the MLflow UI on loopback for the same tracking store."""

from __future__ import annotations

import os
import sys
from pathlib import Path




def cmd_ui(args) -> int:
    import signal
    import subprocess

    from ablate.track import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", "1"]
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
