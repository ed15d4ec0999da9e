"""The processes of `ablate study run`: its own (``--workers 1``) or N worker processes, which it starts,
forwards SIGTERM to and waits for. A worker gets the storage and tracking URLs through its environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

STORAGE_ENV = "ABLATE_STUDY_STORAGE"  # the storage URL a worker joins (set for the workers `study run` starts)

TERMINATED = "ablate: terminated (SIGTERM); the finished trials are kept, run the same command to resume"
CHILD_ENV = "ABLATE_STUDY_CHILD"  # set for the workers `study run` starts: it speaks for them when interrupted
INTERRUPTED = "ablate: interrupted; the finished trials are kept, run the same command to resume"


def work_here(ctx, threads: int, set_threads) -> int:
    """Work off the queue in this process (``--workers 1``) at ``threads`` torch threads: 0, 1 when a trial
    failed, or 143 after SIGTERM (what job schedulers send), which stops the trial as Ctrl-C does."""
    import torch

    from ablate.study import work

    before = torch.get_num_threads()
    set_threads(threads)
    terminated = []

    from ablate.study.execute import on_ctrl_c, on_sigterm

    def stop(signum, frame):
        terminated.append(signum)
        on_sigterm(signum, frame)

    previous = signal.signal(signal.SIGTERM, stop)
    previous_int = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        summary = work(ctx)
    except KeyboardInterrupt:
        print(TERMINATED if terminated else INTERRUPTED, file=sys.stderr)
        return 143 if terminated else 130
    finally:
        from ablate.study.execute import reset_stop

        reset_stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        torch.set_num_threads(before)
    return 1 if summary.failed else 0


def worker_argv(args, ctx, index: int, threads: int | None) -> list[str]:
    """A worker's command line. ``-P``: it imports ablate's own code, never an ``optuna.py`` that happens to lie
    in the working directory; the storage and tracking URLs (which may hold passwords) go through the
    environment (``worker_env``), never argv, which every user of the machine can read in ``ps``."""
    argv = [sys.executable, "-P", "-m", "ablate"]
    for plugin in getattr(args, "plugin", []) or []:
        argv += ["--plugin", plugin]
    argv += ["study", "worker", str(ctx.spec.path), "--name", ctx.spec.name,
             "--experiment", ctx.experiment or "ablate", "--worker-id", str(index)]
    if ctx.spec.gpu:
        argv.append("--gpu")
    for s in args.set:
        argv += ["--set", s]
    if threads:
        argv += ["--threads", str(threads)]
    if args.log_checkpoint:
        argv.append("--log-checkpoint")
    return argv


def worker_env(ctx) -> dict[str, str]:
    """The workers' environment: this one, plus the study's storage and tracking URLs."""
    return {**os.environ, STORAGE_ENV: ctx.storage_url, "MLFLOW_TRACKING_URI": ctx.tracking_uri, CHILD_ENV: "1"}


def run_workers(args, ctx, threads: int) -> int:
    procs = []
    for i in range(args.workers):
        procs.append(subprocess.Popen(worker_argv(args, ctx, i, threads), env=worker_env(ctx)))
        time.sleep(0.2)  # stagger the first pops a little

    terminated = []

    def forward(signum, _frame):
        terminated.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        codes = [p.wait() for p in procs]
        if terminated:  # a job scheduler stopped the study: the workers closed their trials; run it again to resume
            print(TERMINATED, file=sys.stderr)
            return 143
    except KeyboardInterrupt:
        for p in procs:  # the terminal sent SIGINT to the workers too; let them close their trials
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        print(INTERRUPTED, file=sys.stderr)  # once, for the study (its workers say nothing)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if 2 in codes:
        return 2
    return 0 if all(c == 0 for c in codes) else 1
