"""Where a study stands and what it produced: stage progress, the compare trials, the tuning table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ablate.errors import AblateError
from ablate.format import short
from ablate.metrics import lower_is_better
from ablate.study.context import Context, study_role, tune_study_name
from ablate.study.keys import K_RUN, K_SKIP
from ablate.study.rounds import K_SEQUENTIAL, unstable_in
from ablate.study.queue import COMPARE_KEY, TUNE_KEY, active_trials, compare_points, key_of, trial_point, tune_points

@dataclass
class Progress:
    stage: str
    role: str
    expected: int
    done: int
    pruned: int
    running: int
    waiting: int
    failed: int
    missing: list[str]
    running_trials: list[Any]
    outside: int = 0  # finished runs that are not in the plan (seeds since removed from the file)


def progress(ctx: Context) -> list[Progress]:
    """Where every stage stands (for `study status` and the end of `study run`)."""
    import optuna
    from optuna.trial import TrialState

    spec = ctx.spec
    out = []
    for name in ctx.stage_names():
        try:
            study = optuna.load_study(study_name=name, storage=ctx.storage)
        except KeyError:
            continue
        role = study_role(spec, name)
        trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(K_SKIP)]
        by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
        missing: list[str] = []
        if role == "search" or (role == "tune" and not spec.tune_is_grid):
            expected = spec.search["trials"] if role == "search" else spec.tune["trials"]
        else:
            if spec.pretrain is not None:  # pretrain-then-finetune: (variant, seed[, arm])
                from ablate.study.stages import stage_points

                points, names = stage_points(spec, role)
            elif role == "tune":
                points, names = tune_points(spec), TUNE_KEY
            else:
                points, names = compare_points(spec), COMPARE_KEY
                record = study.user_attrs.get(K_SEQUENTIAL)
                if record:  # --until-decided: the seeds a decided variant did not need are not missing
                    ran = {(trial_point(t)["variant"], trial_point(t)["seed"]) for t in by_state[TrialState.COMPLETE]}
                    points = needed_points(spec, points, record, ran)
            expected = len(points)
            plan = {key_of(p, names) for p in points}
            finished = {key_of(trial_point(t), names) for t in by_state[TrialState.COMPLETE]}
            missing = [f"{p['variant']} " + (f"seed {p['seed']}" + (f" {p['arm']}" if "arm" in p else "") if "seed" in p else f"lr {short(p['lr'])}"
                                                 + (f" warmup {short(p['warmup'])}" if "warmup" in p else ""))
                       for p in points if key_of(p, names) not in finished]
            out.append(Progress(name, role, expected, len(plan & finished), len(by_state[TrialState.PRUNED]),
                                len(by_state[TrialState.RUNNING]), len(by_state[TrialState.WAITING]),
                                len(by_state[TrialState.FAIL]), missing, by_state[TrialState.RUNNING],
                                outside=len(finished - plan)))
            continue
        out.append(Progress(name, role, expected, len(by_state[TrialState.COMPLETE]),
                            len(by_state[TrialState.PRUNED]), len(by_state[TrialState.RUNNING]),
                            len(by_state[TrialState.WAITING]), len(by_state[TrialState.FAIL]), missing,
                            by_state[TrialState.RUNNING]))
    return out


def needed_points(spec, points: list[dict[str, Any]], record: dict[str, Any],
                  ran: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """An --until-decided study's plan: a decided variant needs the seeds it was decided on, an undecided
    one every seed of the study, one that left the test as unstable (diverged or stalled seeds) the seeds it
    ran; the baseline as many as the variant that needs most."""
    from ablate.sequential import UNDECIDED

    decisions, unstable = record.get("decisions", {}), unstable_in(record)
    count = {}
    for v in (v for v in spec.variants if v != spec.baseline):
        if v in decisions and decisions[v]["decision"] != UNDECIDED:
            count[v] = decisions[v]["n"]
        elif v not in decisions and v in unstable:
            count[v] = sum(1 for seed in spec.seeds if (v, seed) in ran)
        else:
            count[v] = len(spec.seeds)
    count[spec.baseline] = max(count.values(), default=len(spec.seeds))
    return [p for p in points if p["seed"] in spec.seeds[: count.get(p["variant"], len(spec.seeds))]]


def best_lrs(ctx: Context, require_complete: bool = True) -> dict[str, float] | None:
    """Each variant's best tuning lr, or None while tuning is unfinished."""
    best = best_settings(ctx, require_complete)
    return None if best is None else {v: s["lr"] for v, s in best.items()}


def _settings(params: dict[str, Any]) -> dict[str, float]:
    return {k: params[k] for k in ("lr", "warmup") if params.get(k) is not None}


def best_settings(ctx: Context, require_complete: bool = True) -> dict[str, dict[str, float]] | None:
    """Each variant's best tuned settings (``lr``, and ``warmup`` when tuned), or None while tuning is
    unfinished."""
    import optuna
    from optuna.trial import TrialState

    spec = ctx.spec
    best: dict[str, dict[str, float]] = {}
    if spec.tune_is_grid:
        try:
            study = optuna.load_study(study_name=tune_study_name(spec), storage=ctx.storage)
        except KeyError:
            return None
        by_key = active_trials(study, TUNE_KEY)
        for variant in spec.variants:
            results = []
            for point in (p for p in tune_points(spec) if p["variant"] == variant):
                trials = by_key.get(key_of(point, TUNE_KEY), [])
                done = [t for t in trials if t.state == TrialState.COMPLETE]
                if not done:
                    if require_complete:
                        return None
                    continue
                results.append((done[0].value, _settings(point)))
            if not results:
                return None
            best[variant] = _pick(results, lower_is_better(spec.metric))
    else:
        for variant in spec.variants:
            try:
                study = optuna.load_study(study_name=tune_study_name(spec, variant), storage=ctx.storage)
            except KeyError:
                return None
            trials = [t for t in study.get_trials(deepcopy=False)
                      if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            if require_complete and (len(trials) < spec.tune["trials"] or
                                     study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
                return None
            complete = [(t.value, _settings(t.params)) for t in trials if t.state == TrialState.COMPLETE]
            if not complete:
                if require_complete:
                    raise AblateError(f"every lr tried for {variant} was pruned or diverged; "
                                      "widen [tune] lr towards smaller values")
                return None
            best[variant] = _pick(complete, lower_is_better(spec.metric))
    return best


def _pick(results: list[tuple[float | None, dict[str, float]]], lower_is_better: bool = True) -> dict[str, float]:
    finite = [(v, s) for v, s in results if v is not None and math.isfinite(v)]
    if not finite:  # everything diverged: the smallest lr (and the longest warmup) is the least bad
        return min((s for _, s in results), key=lambda s: (s["lr"], -s.get("warmup", 0.0)))
    sign = 1.0 if lower_is_better else -1.0  # accuracies: the highest wins; ties go to the smaller lr
    return min(finite, key=lambda r: (sign * r[0], r[1]["lr"]))[1]


def compare_trials(ctx: Context) -> tuple[list[Any], list[str]]:
    """The COMPLETE trials of the comparison, one per (variant, seed) of the file; and what is missing."""
    import optuna
    from optuna.trial import TrialState

    spec = ctx.spec
    study = optuna.load_study(study_name=spec.name, storage=ctx.storage)
    by_key = active_trials(study, COMPARE_KEY)
    chosen, missing = [], []
    for point in compare_points(spec):
        done = sorted((t for t in by_key.get(key_of(point, COMPARE_KEY), []) if t.state == TrialState.COMPLETE),
                      key=lambda t: t.number)
        if done and done[0].user_attrs.get(K_RUN):
            chosen.append(done[0])
        else:
            missing.append(f"{point['variant']} seed {point['seed']}")
    return chosen, missing


def tuning_table(ctx: Context) -> list[dict[str, Any]]:
    """Per variant: every lr tried with its result, and the chosen one."""
    import optuna
    from optuna.trial import TrialState

    spec = ctx.spec
    best = best_settings(ctx, require_complete=False) or {}
    rows = []
    for variant in spec.variants:
        name = tune_study_name(spec) if spec.tune_is_grid else tune_study_name(spec, variant)
        try:
            study = optuna.load_study(study_name=name, storage=ctx.storage)
        except KeyError:
            continue
        tried = []
        for t in study.get_trials(deepcopy=False):
            if t.user_attrs.get(K_SKIP) or t.params.get("variant", variant) != variant or "lr" not in t.params:
                continue
            status = t.user_attrs.get("ablate.status", "finished") if t.state == TrialState.COMPLETE else "pruned"
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                value = t.value if t.state == TrialState.COMPLETE else None
                tried.append((_settings(t.params), value, status))
        tried.sort(key=lambda r: (r[0]["lr"], r[0].get("warmup", 0.0)))
        chosen = best.get(variant)
        rows.append({"variant": variant, "tried": [(s["lr"], v, st) for s, v, st in tried], "settings": tried,
                     "best": chosen["lr"] if chosen else None, "best_settings": chosen})
    return rows
