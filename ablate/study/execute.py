"""The trial runner: one trial's config trained with tracking, pruning and a heartbeat; the objectives."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ablate.config import RunConfig
from ablate.callbacks import Callback, RunResult, RunState, StopRun
from ablate.format import short
from ablate.metrics import lower_is_better, worst
from ablate.report.stability import result_stall_reason
from ablate.study.context import Context
from ablate.study.keys import K_POINT, K_RUN, K_SKIP, K_STALLED, K_WORKER
from ablate.study.queue import COMPARE_KEY, TUNE_KEY, _claim, split_point
from ablate.study.ranges import Range
from ablate.study.spec import compose_variant
from ablate.study.storage import native_heartbeat
from ablate.study.workers import _Heartbeat, worker_identity

# Set by a worker's SIGTERM handler before it raises KeyboardInterrupt. That exception can be lost (raised
# while Python runs a weakref callback, e.g. SQLAlchemy's, it is printed as "Exception ignored" and
# dropped) and the handler ignores further SIGTERMs, so the trial checks the flag at each step and eval.
STOP = threading.Event()


def request_stop() -> None:
    """What a worker's SIGTERM handler does before it raises KeyboardInterrupt: remember the stop, and keep
    an interrupt that Python drops ("Exception ignored in ...") off the terminal."""
    STOP.set()
    sys.unraisablehook = _drop_lost_interrupt


def on_sigterm(signum, frame) -> None:
    """SIGTERM's handler while a study works: stop as Ctrl-C does, once (the parent forwards SIGTERM, and a
    process-group kill sends it too), with the stop remembered (see ``STOP``)."""
    request_stop()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def on_ctrl_c(signum, frame) -> None:
    """SIGINT's handler while a study works: Python's own, with the stop remembered (see ``STOP``)."""
    request_stop()
    raise KeyboardInterrupt


def reset_stop() -> None:
    """After a study in this process: a later one (the Python API) starts afresh."""
    from ablate import interrupts

    STOP.clear()
    interrupts.PENDING.clear()
    if sys.unraisablehook is _drop_lost_interrupt:
        sys.unraisablehook = sys.__unraisablehook__


def _drop_lost_interrupt(unraisable) -> None:
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def stop_if_asked() -> None:
    from ablate import interrupts

    if STOP.is_set() or interrupts.PENDING.is_set():  # PENDING: asked while a finished trial saved its result
        raise KeyboardInterrupt


class _TrialHooks(Callback):
    """Records the MLflow run id on the trial, reports evals to Optuna and prunes; on long trials it
    says where they are every ``every`` seconds."""

    def __init__(self, trial, tracker, metric: str, prune: bool, say: Callable[[str], None] | None = None,
                 every: float = 30.0):
        self.trial, self.tracker, self.metric, self.prune = trial, tracker, metric, prune
        self.last: float | None = None
        self.say, self.every, self.said = say, every, time.perf_counter()
        self.evals = 0

    def on_start(self, run: RunState) -> None:
        if self.tracker is not None and self.tracker.run_id:
            self.trial.set_user_attr(K_RUN, self.tracker.run_id)
        self.trial.set_user_attr("ablate.run_dir", str(run.run_dir))

    def on_step(self, run: RunState, row: dict[str, float]) -> None:
        stop_if_asked()

    def on_eval(self, run: RunState, row: dict[str, float]) -> None:
        stop_if_asked()
        value = row.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.last = value
        if self.say and time.perf_counter() - self.said > self.every:
            self.said = time.perf_counter()
            total = f"/{run.total_steps}" if run.total_steps else ""
            self.say(f"trial {self.trial.number} at step {run.step}{total}: {self.metric} {value:.4f}")
        if run.step == 0:
            return  # the untrained model says nothing about the variant
        self.evals += 1
        self.trial.report(value, self.evals)  # by eval index: the same rungs for every budget
        if self.prune and self.trial.should_prune():
            raise StopRun("pruned", f"pruned by Optuna at step {run.step} ({self.metric} {value:.4f})")


def prune_diverged(ctx: Context, role: str) -> bool:
    """Sampled stages record a diverged run as pruned (samplers learn from it); grids as +inf."""
    return role == "search" or (role == "tune" and not ctx.spec.tune_is_grid)


def run_trial(ctx: Context, trial, stage: str, role: str, config: RunConfig, parent: str | None,
              prune: bool, extra: dict[str, Any] | None = None) -> float:
    """Train one trial's config with tracking and (optionally) pruning; return the objective."""
    import optuna

    from ablate.track import MLflowTracker
    from ablate.train import train

    spec = ctx.spec
    trial.set_user_attr(K_WORKER, worker_identity())
    trial.set_user_attr("ablate.variant", config.variant)
    trial.set_user_attr("ablate.seed", config.seed)
    tracker = MLflowTracker(tracking_uri=ctx.tracking_uri, experiment=ctx.experiment, parent=parent,
                            log_checkpoint=ctx.log_checkpoint,
                            extra_tags={"ablate.study": spec.name, "ablate.stage": role,
                                        "ablate.trial": str(trial.number),
                                        "ablate.optuna_trial": f"{stage}#{trial.number}",
                                        **{f"ablate.param.{k}": str(v) for k, v in (extra or {}).items()}})
    metric = "val_loss" if role == "pretrain" else spec.metric  # pretraining is never a verdict, and has no
    # task accuracy when the study's metric is one (a corpus, then a task)
    hooks = _TrialHooks(trial, tracker, metric, prune, say=ctx.say)
    started = time.perf_counter()
    ctx.say(f"trial {trial.number} {_describe(config, extra)} started")
    ctx.current_trial = trial.number
    beat = _Heartbeat(trial, ctx.heartbeat_seconds) if not native_heartbeat(ctx.storage) else None
    try:
        if beat:
            beat.__enter__()
        result: RunResult = train(config, [tracker, hooks])
    finally:
        if beat:
            beat.__exit__(None, None, None)
    value = result.final.get(metric, float("nan"))
    if result.status == "finished":  # a stalled run is a result that makes its variant unstable (--until-decided)
        stalled = result_stall_reason(result.evals, result.final, result.extra.get("unigram_entropy"), metric,
                                      lower_is_better(metric))
        if stalled:
            trial.set_user_attr(K_STALLED, stalled)
    for key, v in (("ablate.status", result.status), ("ablate.steps", result.steps),
                   ("ablate.params", result.cost.get("params")), ("ablate.train_seconds", result.train_seconds),
                   ("ablate.final", {k: v for k, v in result.final.items()})):
        trial.set_user_attr(key, v)
    took = time.perf_counter() - started
    shown = f"{metric} {value:.4f}" if value == value else f"no {metric}"
    ctx.say(f"trial {trial.number} {_describe(config, extra)} {result.status}: {shown} ({took:.0f}s)")
    if result.status == "pruned":
        ctx.summary.ran += 1
        raise optuna.TrialPruned(result.message)
    if result.status == "diverged":
        if role in ("search", "tune") and prune_diverged(ctx, role):
            ctx.summary.ran += 1
            raise optuna.TrialPruned(f"diverged: {result.message}")
        ctx.summary.ran += 1
        return worst(spec.metric)  # a result, not a failure: it is not run again (-inf for accuracies)
    if result.status != "finished" or value != value:
        raise RuntimeError(f"run ended {result.status}: {result.message}")
    ctx.summary.ran += 1
    return float(value)


def _describe(config: RunConfig, extra: dict[str, Any] | None) -> str:
    hp = " ".join(f"{k}={short(v)}" for k, v in (extra or {}).items())
    return f"[{config.variant} seed {config.seed}{' ' + hp if hp else ''}]"




def skip(ctx: Context, trial, why: str) -> None:
    """Record why this trial does not train (a duplicate, or nothing queued) and end it as pruned."""
    import optuna

    trial.set_user_attr(K_SKIP, why)
    ctx.summary.skipped += 1
    raise optuna.TrialPruned(f"skipped: {why}")


def queued_point(ctx: Context, trial, role: str) -> dict[str, Any]:
    """The grid point a trial was queued with. A trial that popped none (another worker took the last
    queued one first) is skipped: the queue is the only source of work. The point's unsearched values
    (the seed) are set as user attributes where a trial queued by an older ablate lacks them."""
    ctx.current_trial = trial.number  # from the first line of every grid objective: an interrupted trial is this one
    point = trial.user_attrs.get(K_POINT)
    if not point:
        skip(ctx, trial, "nothing queued (another worker took the last queued trial)")
    for key, value in split_point(point, role)[1].items():
        if trial.user_attrs.get(key) != value:
            trial.set_user_attr(key, value)
    return dict(point)


def claim(ctx: Context, trial, point: dict[str, Any], names) -> None:
    """Skip the trial when its key is done or held by an earlier trial (see ``queue._claim``)."""
    why = _claim(trial.study, trial, point, names)
    if why:
        skip(ctx, trial, why)


def grid_objective(ctx: Context, stage: str, role: str, parent: str | None):
    """The objective of a grid stage (compare, or the lr grid of tune-then-compare)."""
    spec = ctx.spec
    names = TUNE_KEY if role == "tune" else COMPARE_KEY

    def objective(trial) -> float:
        point = queued_point(ctx, trial, role)
        # the searched values come back from the queue through these suggestions (enqueue_trial)
        point["variant"] = trial.suggest_categorical("variant", list(spec.variants))
        if role == "tune":
            point["lr"] = trial.suggest_float("lr", min(spec.tune["lr"]), max(spec.tune["lr"]), log=True)
            if spec.tune.get("warmup"):
                point["warmup"] = trial.suggest_float("warmup", min(spec.tune["warmup"]), max(spec.tune["warmup"]))
        claim(ctx, trial, point, names)
        extra = {k: point[k] for k in ("lr", "warmup") if point.get(k) is not None}
        if role == "tune":
            config = spec.trial_config(point["variant"], spec.tune["seed"], budget=spec.tune["budget"], **extra)
        else:  # compare: the seed, and after tuning the variant's lr (and warmup), come with the point
            config = spec.trial_config(point["variant"], point["seed"], **extra)
        return run_trial(ctx, trial, stage, role, config, parent, prune=False, extra=extra)

    return objective


def search_objective(ctx: Context, stage: str, parent: str | None, variant: str | None = None):
    """The objective of a sampled stage: the search, or one variant's lr search (tune with a range)."""
    spec = ctx.spec

    def objective(trial) -> float:
        if variant is not None:  # tune-then-compare with an lr range
            values = {"lr": spec.tune["lr"].suggest(trial, "lr")}
            warmup = spec.tune.get("warmup")
            if warmup is not None:
                values["warmup"] = warmup.suggest(trial, "warmup") if isinstance(warmup, Range) else \
                    trial.suggest_categorical("warmup", list(warmup))
            config = spec.trial_config(variant, spec.tune["seed"], budget=spec.tune["budget"], **values)
            return run_trial(ctx, trial, stage, "tune", config, parent, prune=spec.tune["pruner"] != "none",
                             extra=values)
        base = spec.variants[0]
        if len(spec.variants) > 1:
            base = trial.suggest_categorical("variant", list(spec.variants))
        picks = {slot: trial.suggest_categorical(slot, list(terms)) for slot, terms in spec.slots.items()}
        values = {}
        for name, space in spec.hparams.items():
            values[name] = space.suggest(trial, name) if isinstance(space, Range) else \
                trial.suggest_categorical(name, list(space))
        canon = compose_variant(base, picks)
        config = spec.trial_config(canon, spec.seeds[0], **values)
        return run_trial(ctx, trial, stage, "search", config, parent, prune=spec.search["pruner"] != "none",
                         extra=values)

    return objective
