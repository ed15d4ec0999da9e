"""What a worker process does: every stage of the protocol in order, popping queued trials."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ablate.errors import AblateError
from ablate.study.context import Context, WorkSummary, _quiet_optuna, pretrain_study_name, tune_study_name
from ablate.study.create import settings_changed
from ablate.study.execute import grid_objective, search_objective, stop_if_asked
from ablate.study.keys import K_SKIP, failure_key
from ablate.study.progress import best_settings
from ablate.study.queue import compare_points, ensure_grid, grid_space, make_pruner, make_sampler, requeue
from ablate.study.workers import reap

def _waiting(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _count(study, states) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(K_SKIP))


def _optimize_one(ctx: Context, study, objective) -> None:
    """Run one trial through ``study.optimize`` (so RDB heartbeats and retries apply)."""
    try:
        study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)
    except (AblateError, KeyboardInterrupt):
        raise
    except Exception as err:
        ctx.summary.failed += 1
        text = f"{type(err).__name__}: {err}"
        ctx.summary.errors.append(text)
        reaped = study.user_attrs.get(failure_key(ctx.current_trial)) if ctx.current_trial is not None else None
        if reaped:
            ctx.say(f"warning: trial {ctx.current_trial} was failed by another process meanwhile ({reaped})")
        else:
            ctx.say(f"trial failed: {text}")


def work_grid(ctx: Context, study, objective) -> None:
    """Pop queued trials until none is left. An interrupted trial (Ctrl-C, SIGTERM) is queued again."""
    while _waiting(study):
        stop_if_asked()
        ctx.current_trial = None  # set by the objective once it has popped its trial
        try:
            _optimize_one(ctx, study, objective)
        except KeyboardInterrupt:
            if ctx.current_trial is not None:
                requeue(study, ctx.current_trial)
            raise


def work_sampled(ctx: Context, study, objective, n_trials: int) -> None:
    """Sample trials until ``n_trials`` have finished or are running (retries first)."""
    from optuna.trial import TrialState

    while True:
        done = _count(study, (TrialState.COMPLETE, TrialState.PRUNED))
        running = _count(study, (TrialState.RUNNING,))
        if done + running >= n_trials and not _waiting(study):
            return
        if done >= n_trials:
            return
        _optimize_one(ctx, study, objective)


def wait_for(ctx: Context, names: Sequence[str], poll: float = 5.0) -> None:
    """Block until the stages ``names`` have no RUNNING or WAITING trial (reaping dead workers)."""
    import optuna
    from optuna.trial import TrialState

    said = False
    while True:
        busy = 0
        for name in names:
            study = optuna.load_study(study_name=name, storage=ctx.storage)
            busy += len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))
        if not busy:
            return
        if not said:
            ctx.say(f"waiting for {busy} trial(s) of other workers before the next stage")
            said = True
        time.sleep(poll)
        reap(ctx)


def work(ctx: Context) -> WorkSummary:
    """What one worker process does: every stage of the protocol, in order."""

    _quiet_optuna()
    spec = ctx.spec
    attrs = ctx.main().user_attrs
    if changed := settings_changed(spec, attrs):
        raise AblateError(f"study {spec.name!r} in {ctx.storage_url} was made with other settings "
                          f"({changed}); start workers with the same study file, --gpu and --set as the study")
    ctx.adopt_tracking(attrs)
    parent = attrs["ablate.mlflow_parent"]
    reap(ctx)
    if spec.protocol == "compare":
        study = ctx.main(sampler=make_sampler("grid", 0, 0, grid_space(spec, "compare")))
        work_grid(ctx, study, grid_objective(ctx, spec.name, "compare", parent))
    elif spec.protocol == "search":
        s = spec.search
        study = ctx.main(sampler=make_sampler(s["sampler"], s["seed"] + ctx.worker_index, s["startup_trials"]),
                         pruner=make_pruner(s["pruner"], spec.config.eval_points, s["startup_trials"]))
        work_sampled(ctx, study, search_objective(ctx, spec.name, parent), s["trials"])
    elif spec.pretrain is not None:  # pretrain-then-finetune: stage 1, wait, then every (variant, seed, arm)
        from ablate.study import stages

        name = pretrain_study_name(spec)
        study = ctx.load(name, sampler=make_sampler("random", 0, 0))  # a one-point grid trips GridSampler
        work_grid(ctx, study, stages.pretrain_objective(ctx, name, attrs.get("ablate.mlflow_pretrain_parent", parent)))
        wait_for(ctx, [name])
        parents = stages.pretrain_runs(ctx)
        if parents is None:
            raise AblateError("pretraining is incomplete (trials failed); re-run `ablate study run` to finish it")
        study = ctx.main(sampler=make_sampler("grid", 0, 0, grid_space(spec, "finetune")))
        ensure_grid(study, spec, "finetune", stages.finetune_points(spec), names=stages.FINETUNE_KEY)
        work_grid(ctx, study, stages.finetune_objective(ctx, spec.name, parent, parents))
    else:
        tune_parent = attrs.get("ablate.mlflow_tune_parent", parent)
        t = spec.tune
        if spec.tune_is_grid:
            name = tune_study_name(spec)
            study = ctx.load(name, sampler=make_sampler("grid", 0, 0, grid_space(spec, "tune")))
            work_grid(ctx, study, grid_objective(ctx, name, "tune", tune_parent))
        else:
            for variant in spec.variants:
                name = tune_study_name(spec, variant)
                study = ctx.load(name, sampler=make_sampler(t["sampler"], ctx.worker_index, min(4, t["trials"])),
                                 pruner=make_pruner(t["pruner"], spec.config.eval_points, min(4, t["trials"])))
                work_sampled(ctx, study, search_objective(ctx, name, tune_parent, variant), t["trials"])
        wait_for(ctx, ctx.stage_names()[:-1])
        best = best_settings(ctx, require_complete=True)
        if best is None:
            raise AblateError("lr tuning is incomplete (trials failed); re-run `ablate study run` to finish it")
        study = ctx.main(sampler=make_sampler("grid", 0, 0, grid_space(spec, "compare")))
        ensure_grid(study, spec, "compare", compare_points(spec, best))
        work_grid(ctx, study, grid_objective(ctx, spec.name, "compare", parent))
    return ctx.summary
