"""Workers: who runs a trial (host, boot id, pid, start time), their heartbeats, and the reaper
that fails the trials of dead or silent workers and queues their work again."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ablate.track import find_runs
from ablate.study.context import Context, _quiet_optuna, study_role
from ablate.study.keys import K_BEAT, K_WORKER, failure_key
from ablate.study.queue import COMPARE_KEY, TUNE_KEY, ensure_grid, key_of, trial_point
from ablate.study.storage import native_heartbeat, retry_callback

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _start_time(pid)}


def worker_alive(ident: dict[str, Any]) -> bool | None:
    """True / False for a worker on this machine; None when it runs elsewhere (ask its heartbeat)."""
    if ident.get("host") != socket.gethostname() or ident.get("boot", "") != _boot_id():
        return None
    pid = int(ident.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = ident.get("start", "")
    return not start or _start_time(pid) == start  # a recycled pid is another process


class _Heartbeat:
    """Writes the trial's heartbeat into its user attributes while it runs (for journal storages)."""

    def __init__(self, trial, interval: float):
        self.trial, self.interval = trial, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="ablate-heartbeat")

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.trial.set_user_attr(K_BEAT, time.time())
            except Exception:
                return  # the trial finished (or was failed by a reaper)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


def reap(ctx: Context) -> dict[str, list[int]]:
    """Fail the RUNNING trials whose worker is gone and queue their work again.

    Same host: the worker's pid (and its start time) is checked at once. Other hosts: a journal
    trial whose heartbeat is older than the grace period; RDB storages do this themselves (Optuna's
    heartbeat) and retry through RetryFailedTrialCallback. Every MLflow run of the study that is still
    RUNNING while its trial is not is marked FAILED.
    """
    import optuna
    from optuna.trial import TrialState

    _quiet_optuna()
    spec = ctx.spec
    storage = ctx.storage
    native = native_heartbeat(storage)
    me = worker_identity()
    now = time.time()
    reaped: dict[str, list[int]] = {}
    for name in ctx.stage_names():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        if native:
            optuna.storages.fail_stale_trials(study)
        failed = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            ident = t.user_attrs.get(K_WORKER) or {}
            if ident.get("pid") == me["pid"] and ident.get("host") == me["host"]:
                continue
            alive = worker_alive(ident) if ident else None
            why = ""
            if alive is False:
                why = f"worker pid {ident.get('pid')} on {ident.get('host')} is gone"
            elif alive is None and not native:
                beat = t.user_attrs.get(K_BEAT) or (t.datetime_start.timestamp() if t.datetime_start else now)
                if now - beat > ctx.grace_seconds:
                    why = f"no heartbeat from its worker for {now - beat:.0f}s"
            if not why:
                continue
            try:
                study.set_user_attr(failure_key(t.number), why)
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # it finished (or another reaper failed it) meanwhile
                continue
            failed.append(t)
            ctx.say(f"trial {t.number} of {name} failed: {why}; queued again")
        if failed:
            reaped[name] = [t.number for t in failed]
            role = study_role(spec, name)
            if role == "compare" or (role == "tune" and spec.tune_is_grid):
                names = TUNE_KEY if role == "tune" else COMPARE_KEY
                points = [dict(trial_point(t)) for t in failed if trial_point(t)]
                keys = {key_of(p, names) for p in points}
                ensure_grid(study, spec, role, points, only_keys=keys)
            else:
                callback = retry_callback()
                now_failed = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
                for t in failed:
                    callback(study, now_failed.get(t.number, t))
    _fail_orphan_runs(ctx)
    return reaped



def _fail_orphan_runs(ctx: Context) -> int:
    """MLflow runs of this study still RUNNING although their Optuna trial is not: mark them FAILED."""
    import optuna
    from optuna.trial import TrialState

    try:
        client = ctx.client()
        exp = client.get_experiment_by_name(ctx.experiment or "ablate")
        if exp is None:
            return 0
        runs = find_runs(client, [exp.experiment_id], {"ablate.study": ctx.spec.name}, status="RUNNING")
    except Exception:
        return 0
    states: dict[str, dict[int, Any]] = {}
    states_attrs: dict[str, dict[str, Any]] = {}
    count = 0
    for run in runs:
        ref = run.data.tags.get("ablate.optuna_trial", "")
        if "#" not in ref:
            continue
        name, number = ref.rsplit("#", 1)
        if name not in states:
            try:
                study = optuna.load_study(study_name=name, storage=ctx.storage)
                states[name] = {t.number: t for t in study.get_trials(deepcopy=False)}
                states_attrs[name] = study.user_attrs
            except KeyError:
                states[name], states_attrs[name] = {}, {}
        trial = states[name].get(int(number))
        if trial is not None and trial.state == TrialState.RUNNING:
            continue
        why = states_attrs[name].get(failure_key(int(number))) or "its worker died"
        client.set_tag(run.info.run_id, "ablate.status", "failed")
        client.set_tag(run.info.run_id, "ablate.error", f"trial {number} of {name} failed: {why}")
        client.set_terminated(run.info.run_id, "FAILED")
        count += 1
    return count
