"""The pretrain-then-finetune protocol's stages: stage 1 pretrains each variant (Optuna study
``<name>:pretrain``, a grid of (variant, pretraining seed)); once every pretraining trial is done, stage
2 (the main study) trains every (variant, seed, arm): ``scratch``, ``pretrained`` (``init_from`` = the
variant's pretraining run) and ``scratch-total`` (pretraining + finetune tokens). Settings and the
budget arithmetic: :mod:`ablate.study.pretrain`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablate.config import RunConfig, validate
from ablate.errors import AblateError
from ablate.study.context import Context, pretrain_study_name
from ablate.study.execute import claim, queued_point, run_trial
from ablate.study.keys import K_RUN
from ablate.study.pretrain import ARMS, pretrain_config, stage_tokens, total_budget
from ablate.study.queue import COMPARE_KEY, active_trials, ensure_grid, grid_space, key_of, trial_point
from ablate.study.spec import StudySpec

FINETUNE_KEY = ("variant", "seed", "arm")


def pretrain_seed(spec: StudySpec, seed: int) -> int:
    """The pretraining seed a finetune of ``seed`` starts from."""
    return seed if spec.pretrain["per_seed"] else spec.pretrain["seed"]


def pretrain_points(spec: StudySpec) -> list[dict[str, Any]]:
    seeds = spec.seeds if spec.pretrain["per_seed"] else (spec.pretrain["seed"],)
    return [{"variant": v, "seed": s} for v in spec.variants for s in seeds]


def finetune_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Every (variant, seed, arm), seed-major: a study stopped early still has complete seeds to pair."""
    return [{"variant": v, "seed": s, "arm": a} for s in spec.seeds for v in spec.variants for a in ARMS]


def stage_points(spec: StudySpec, role: str) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    return (pretrain_points(spec), COMPARE_KEY) if role == "pretrain" else (finetune_points(spec), FINETUNE_KEY)


def describe_point(point: dict[str, Any]) -> str:
    return f"{point['variant']} seed {point['seed']}" + (f" {point['arm']}" if "arm" in point else "")


def stage1_config(spec: StudySpec, variant: str, seed: int) -> RunConfig:
    config = pretrain_config(spec.config, spec.pretrain).replace(variant=variant, seed=int(seed))
    validate(config)
    return config


def arm_config(spec: StudySpec, variant: str, seed: int, arm: str, parent: str = "") -> RunConfig:
    """The RunConfig of one stage-2 trial; ``parent`` (the pretraining run) for the pretrained arm."""
    config = spec.config.replace(variant=variant, seed=int(seed))
    if arm == "pretrained":
        config = config.replace(init_from=parent, **spec.finetune)
    elif arm == "scratch-total":
        config = config.replace(budget=total_budget(spec.config, spec.pretrain))
    validate(config)
    return config


# ------------------------------------------------------------------------------------- creation
def create_stages(ctx: Context, main, attrs: dict[str, Any], create_parent) -> dict[str, Any]:
    """The pretraining study and its queue, its MLflow stage run; stage 2's queue once stage 1 is done."""
    spec = ctx.spec
    study = ctx.create_study(pretrain_study_name(spec))
    ensure_grid(study, spec, "pretrain", pretrain_points(spec))
    if "ablate.mlflow_pretrain_parent" not in attrs:
        main.set_user_attr("ablate.mlflow_pretrain_parent",
                           create_parent(ctx, parent=attrs["ablate.mlflow_parent"], stage="pretraining"))
        attrs = ctx.main().user_attrs
    parents = pretrain_runs(ctx)
    if parents is not None:
        ensure_grid(main, spec, "finetune", finetune_points(spec), names=FINETUNE_KEY)
    return attrs


def pretrain_trials(ctx: Context) -> dict[tuple[str, int], Any]:
    """The COMPLETE pretraining trial of each (variant, seed) that has one."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=pretrain_study_name(ctx.spec), storage=ctx.storage)
    except KeyError:
        return {}
    out = {}
    for key, trials in active_trials(study, COMPARE_KEY).items():
        done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
        if done:
            point = trial_point(done[0])
            out[(point["variant"], int(point["seed"]))] = done[0]
    return out


def pretrain_runs(ctx: Context) -> dict[tuple[str, int], str] | None:
    """What each finetune starts from, by (variant, pretraining seed): the pretraining run's directory
    (its MLflow run id when the folder is not on this machine), or None while pretraining is unfinished."""
    trials = pretrain_trials(ctx)
    out = {}
    for point in pretrain_points(ctx.spec):
        trial = trials.get((point["variant"], point["seed"]))
        if trial is None:
            return None
        if trial.user_attrs.get("ablate.status") != "finished":
            raise AblateError(f"the pretraining run of {point['variant']} (seed {point['seed']}) ended "
                              f"{trial.user_attrs.get('ablate.status')}; lower [pretrain] lr or start over with --fresh")
        run_dir = trial.user_attrs.get("ablate.run_dir", "")
        out[(point["variant"], point["seed"])] = run_dir if run_dir and Path(run_dir).is_dir() else \
            trial.user_attrs.get(K_RUN, run_dir)
    return out


# ------------------------------------------------------------------------------------- objectives
def pretrain_objective(ctx: Context, stage: str, parent: str | None):
    spec = ctx.spec
    space = grid_space(spec, "pretrain")

    def objective(trial) -> float:
        params = queued_point(ctx, trial, "pretrain")
        params["variant"] = trial.suggest_categorical("variant", space["variant"])
        claim(ctx, trial, params, COMPARE_KEY)
        config = stage1_config(spec, params["variant"], params["seed"])
        return run_trial(ctx, trial, stage, "pretrain", config, parent, prune=False)

    return objective


def finetune_objective(ctx: Context, stage: str, parent: str | None, parents: dict[tuple[str, int], str]):
    spec = ctx.spec

    def objective(trial) -> float:
        params = queued_point(ctx, trial, "finetune")
        params["variant"] = trial.suggest_categorical("variant", list(spec.variants))
        params["arm"] = trial.suggest_categorical("arm", list(ARMS))
        claim(ctx, trial, params, FINETUNE_KEY)
        origin = parents[(params["variant"], pretrain_seed(spec, params["seed"]))]
        config = arm_config(spec, params["variant"], params["seed"], params["arm"], origin)
        extra = {"arm": params["arm"], **({"budget": config.budget} if params["arm"] == "scratch-total" else {})}
        return run_trial(ctx, trial, stage, "finetune", config, parent, prune=False, extra=extra)

    return objective


def finetune_trials(ctx: Context) -> tuple[dict[tuple[str, int, str], Any], list[str]]:
    """The COMPLETE stage-2 trial of each (variant, seed, arm) with an MLflow run; and what is missing."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=ctx.spec.name, storage=ctx.storage)
    by_key = active_trials(study, FINETUNE_KEY)
    chosen, missing = {}, []
    for point in finetune_points(ctx.spec):
        done = sorted((t for t in by_key.get(key_of(point, FINETUNE_KEY), []) if t.state == TrialState.COMPLETE),
                      key=lambda t: t.number)
        if done and done[0].user_attrs.get(K_RUN):
            chosen[(point["variant"], point["seed"], point["arm"])] = done[0]
        else:
            missing.append(describe_point(point))
    return chosen, missing


def plan_lines(spec: StudySpec) -> list[str]:
    """`study show` / `study run`: what each stage trains."""
    pre = pretrain_config(spec.config, spec.pretrain)
    points = pretrain_points(spec)
    shared = "one per variant and seed" if spec.pretrain["per_seed"] else \
        f"one per variant on seed {spec.pretrain['seed']}, shared by every finetune seed"
    extra = f", decontaminated against {pre.decontaminate} (n={pre.decontaminate_n})" if pre.decontaminate else ""
    tuned = " ".join(f"{k}={v}" for k, v in spec.finetune.items()) or "the top-level optimizer settings"
    ft, pt = stage_tokens(spec.config), stage_tokens(pre)
    return [f"  variants ({len(spec.variants)}): {', '.join(spec.variants)}",
            f"  stage 1, pretraining: {len(points)} run(s) ({shared}) on {pre.data}{extra}; budget {pre.budget} "
            f"({pt:,} tokens), lr {pre.lr:g}",
            f"  stage 2 on {spec.config.data}, seeds {', '.join(map(str, spec.seeds))}, arms per (variant, seed): "
            f"scratch ({spec.config.budget}, {ft:,} tokens), pretrained (same budget from the pretraining "
            f"weights, {tuned}), scratch-total ({total_budget(spec.config, spec.pretrain)} = pretraining + finetune "
            f"tokens) → {len(finetune_points(spec))} trials"]
