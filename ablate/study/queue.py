"""The queue: grid points of each stage, queued as Optuna trials, claimed once; samplers and pruners."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

from ablate.study.keys import K_POINT, K_SKIP
from ablate.study.pretrain import ARMS
from ablate.study.spec import StudySpec

def key_of(params: dict[str, Any], names: Sequence[str]) -> str:
    return json.dumps({n: params.get(n) for n in names}, sort_keys=True)


# -- the grid stages: compare points, tune points
COMPARE_KEY = ("variant", "seed")
TUNE_KEY = ("variant", "lr", "warmup")  # warmup is None unless [tune] tunes it

# What each grid stage asks Optuna for (its trials' params). The rest of a point (the seed; the lr a
# compare stage takes over from tuning) is a trial user attribute of the same name: a seed is a
# replicate, not a setting, so Optuna's importances and best trial speak of the settings only.
SEARCHED = {"compare": ("variant",), "tune": TUNE_KEY, "pretrain": ("variant",), "finetune": ("variant", "arm")}


def split_point(point: dict[str, Any], role: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A grid point as (Optuna params, trial user attributes)."""
    searched = SEARCHED.get(role, ("variant",))
    return ({k: v for k, v in point.items() if k in searched},
            {k: v for k, v in point.items() if k not in searched})


def compare_points(spec: StudySpec, best: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """Every (variant, seed), seed-major: a study stopped early still has complete seeds to pair."""
    points = []
    for seed in spec.seeds:
        for variant in spec.variants:
            point: dict[str, Any] = {"variant": variant, "seed": seed}
            if best is not None:
                point.update(best[variant])  # the variant's tuned lr (and warmup)
            points.append(point)
    return points


def tune_points(spec: StudySpec) -> list[dict[str, Any]]:
    warmups = spec.tune.get("warmup") or (None,)
    return [{"variant": v, "lr": lr, **({"warmup": w} if w is not None else {})}
            for lr in spec.tune["lr"] for w in warmups for v in spec.variants]


def grid_space(spec: StudySpec, role: str) -> dict[str, list]:
    """The GridSampler's space: each parameter the stage searches (SEARCHED) with its values; a tuning
    grid's warmup only when the study tunes it."""

    def values(name: str) -> list:
        if name == "variant":
            return list(spec.variants)
        if name == "arm":
            return list(ARMS)
        return list(spec.tune.get(name) or [])  # lr, warmup: the [tune] grid

    return {name: found for name in SEARCHED[role] if (found := values(name))}


def trial_point(trial) -> dict[str, Any]:
    """The grid point a trial stands for: the point it was queued with, with the params it ran with.

    Trials of studies made before the seed became a user attribute have it among their params; both
    kinds give the same point, so such studies resume and report as before."""
    return {**trial.user_attrs.get(K_POINT, {}), **trial.params}


def active_trials(study, names: Sequence[str]) -> dict[str, list]:
    """Trials by key, skipping the duplicates a worker declined to run."""
    by_key: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(K_SKIP):
            continue
        by_key.setdefault(key_of(trial_point(t), names), []).append(t)
    return by_key


def ensure_grid(study, spec: StudySpec, role: str, points: list[dict[str, Any]],
                only_keys: set[str] | None = None, names: Sequence[str] | None = None) -> int:
    """Queue every point that has no COMPLETE, RUNNING or WAITING trial; return how many were queued.

    Points are queued with ``study.enqueue_trial``: the trial that pops one gets its searched values
    back from its ``suggest_*`` calls; the rest (the seed) are user attributes, and the whole point is
    kept too (``ablate.point``).
    """
    from optuna.trial import TrialState

    names = names or (TUNE_KEY if role == "tune" else COMPARE_KEY)
    by_key = active_trials(study, names)
    added = 0
    for point in points:
        key = key_of(point, names)
        if only_keys is not None and key not in only_keys:
            continue
        if any(t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING) for t in by_key.get(key, [])):
            continue
        _enqueue(study, point, role, key)
        added += 1
    return added


def _enqueue(study, point: dict[str, Any], role: str, key: str) -> None:
    """Queue ``point``: its searched values as the trial's params, the rest (and the point) as attributes."""
    params, attrs = split_point(point, role)
    study.enqueue_trial(params, user_attrs={**attrs, "ablate.key": key, "ablate.role": role, K_POINT: point})


def requeue(study, number: int) -> bool:
    """Queue trial ``number``'s grid point again (an interrupted trial, which Optuna fails), unless another
    trial holds that point already; True if it was queued. So a `study worker` finds it, not only a later
    `study run`."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    trial = next((t for t in trials if t.number == number), None)
    attrs = trial.user_attrs if trial is not None else {}
    key, role, point = attrs.get("ablate.key"), attrs.get("ablate.role"), attrs.get(K_POINT)
    if trial is None or trial.state != TrialState.FAIL or not (key and role and point):
        return False
    active = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    if any(t.user_attrs.get("ablate.key") == key and t.state in active and not t.user_attrs.get(K_SKIP)
           for t in trials):  # a trial skipped as a duplicate of this one holds nothing
        return False
    _enqueue(study, point, role, key)
    return True


def _queued_grid_sampler(space: dict):
    """Optuna's GridSampler for a stage whose points are queued trials (fixed params, no ``grid_id``). Its
    ``after_trial`` reads the finished trial's ``grid_id`` once a single grid point is left unvisited, which a
    worker's sampled trial (asked for just as another worker popped the last queued one) brings about: a
    queued trial then failed with ``KeyError: 'grid_id'`` after training, and the study exited 1. A queued
    trial has nothing for the grid to track."""
    import optuna

    class QueuedGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            if "grid_id" in trial.system_attrs:
                super().after_trial(study, trial, state, values)

    return QueuedGridSampler(space, seed=0)


def make_sampler(name: str, seed: int, startup: int, space: dict | None = None):
    import optuna

    if name == "grid":
        return _queued_grid_sampler(space)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def make_pruner(name: str, eval_points: int, startup: int = 5):
    """Pruners over the evaluations of a run (reported as 1, 2, ... eval_points, after step 0).

    Early in training the loss curves of different learning rates and warmups cross, so neither
    pruner judges the first half of the budget: median pruning starts at the evaluation past the
    half, after ``startup`` finished trials; successive halving's first rung is at that evaluation.
    """
    import optuna

    half = max(1, eval_points // 2)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, startup), n_warmup_steps=half, interval_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=half, reduction_factor=2)
    return optuna.pruners.NopPruner()


def _claim(study, trial, params: dict[str, Any], names: Sequence[str]) -> str | None:
    """Why this trial must not run (its key is done or held by an earlier trial), or None."""
    from optuna.trial import TrialState

    key = key_of(params, names)
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or other.user_attrs.get(K_SKIP):
            continue
        if key_of(trial_point(other), names) != key:
            continue
        if other.state == TrialState.COMPLETE:
            return f"already done by trial {other.number}"
        if other.state in (TrialState.RUNNING, TrialState.WAITING) and other.number < trial.number:
            return f"held by trial {other.number}"
    return None
