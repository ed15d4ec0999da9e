"""Seeds added in rounds until every verdict is decided (`ablate study run --until-decided`).

The comparison starts with the first round's seeds; after each round the group-sequential test of
:mod:`ablate.sequential` decides each variant (helps / hurts / no detectable effect) or asks for the
seeds of its next look, which are queued for the undecided variants (and the baseline) only. The
verdicts and their repeated confidence intervals are saved on the study (``ablate.sequential``), and
a fixed-design report over such a study is labelled as such, because stopping early changes what a
plain t-test means.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from ablate.errors import AblateError
from ablate.metrics import lower_is_better
from ablate.sequential import UNDECIDED, Design, Plan, plan
from ablate.stats import named_baseline
from ablate.study.context import Context
from ablate.study.keys import K_SKIP, K_STALLED
from ablate.study.queue import COMPARE_KEY, ensure_grid, key_of, trial_point
from ablate.study.spec import StudySpec

K_SEQUENTIAL = "ablate.sequential"
K_DESIGN = "ablate.sequential_design"  # fixed when the first --until-decided round starts


def design_for(spec: StudySpec, start: int = 3, step: int = 2, margin: float | None = None) -> Design:
    """The sequential design of a compare study: its seeds are the most any variant may get."""
    if spec.protocol != "compare":
        raise AblateError(f"--until-decided works with protocol = \"compare\"; {spec.path} is {spec.protocol!r}")
    if len(spec.seeds) < start:
        raise AblateError(f"--until-decided needs at least {start} seeds in the study (the first round); "
                          f"{spec.path} has {len(spec.seeds)}: set seeds = 10 (the most any variant may get)")
    return Design(start=start, step=step, max_seeds=len(spec.seeds), alpha=spec.alpha, margin=margin,
                  lower_is_better=lower_is_better(spec.metric))


def _design_text(d: dict[str, Any]) -> str:
    margin = "no --margin" if d.get("margin") is None else f"--margin {d['margin']:g}"
    return f"{margin}, at most {d['max_seeds']} seeds, alpha {d['alpha']:g}"


def hold_design(ctx: Context, design: Design) -> None:
    """Record the sequential design on the study the first time it runs until decided; refuse a later
    run with another one. The boundaries depend on the margin, the most seeds and alpha, so choosing
    them again once differences have been seen would void the family-wise error rate."""
    main = ctx.main()
    held = main.user_attrs.get(K_DESIGN) or (main.user_attrs.get(K_SEQUENTIAL) or {}).get("design")
    asked = dataclasses.asdict(design)
    if not held:
        main.set_user_attr(K_DESIGN, asked)
        return
    if {k: held.get(k) for k in asked} != asked:
        raise AblateError(f"study {ctx.spec.name!r} adds seeds until decided with {_design_text(held)}; this run "
                          f"asks {_design_text(asked)}, which would decide its verdicts again after the data are "
                          "seen: run it as it was made, or as a new study (--name NEW, or --fresh to start over)")


def first_round(spec: StudySpec, design: Design) -> StudySpec:
    """The study with only the first round's seeds (what `create` queues)."""
    return dataclasses.replace(spec, seeds=spec.seeds[: design.looks[0]])


def observed(ctx: Context) -> tuple[dict[str, list[float]], dict[str, dict[str, int]]]:
    """Per variant, the paired differences variant − baseline over the study's seeds in order, as far as
    both have finished; and how many seeds of each variant (baseline included) diverged and stalled
    (``{"diverged": {variant: n}, "stalled": {variant: n}}``; the rule is :mod:`ablate.report.stability`)."""
    from optuna.trial import TrialState

    spec = ctx.spec
    values: dict[tuple[str, int], float] = {}
    stalled_points: set[tuple[str, int]] = set()
    for t in ctx.main().get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get(K_SKIP):
            continue
        point = trial_point(t)
        values.setdefault((point["variant"], int(point["seed"])), float(t.value))
        if t.user_attrs.get(K_STALLED):
            stalled_points.add((point["variant"], int(point["seed"])))
    diverged = {v: sum(1 for s in spec.seeds if math.isinf(values.get((v, s), 0.0))) for v in spec.variants}
    stalled = {v: sum(1 for s in spec.seeds if (v, s) in stalled_points) for v in spec.variants}
    diffs: dict[str, list[float]] = {}
    for variant in spec.variants:
        if variant == spec.baseline:
            continue
        row: list[float] = []
        for seed in spec.seeds:
            a, b = values.get((variant, seed)), values.get((spec.baseline, seed))
            if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
                break
            row.append(a - b)
        diffs[variant] = row
    return diffs, {"diverged": diverged, "stalled": stalled}


def _unstable_text(unstable: dict[str, dict[str, int]], variant: str) -> str:
    """``diverged on 2 seed(s), stalled on 1 seed(s)``, or "" for a stable variant."""
    return ", ".join(f"{kind} on {counts[variant]} seed(s)" for kind, counts in unstable.items()
                     if counts.get(variant))


def next_points(spec: StudySpec, decided: Plan) -> list[dict[str, Any]]:
    """The (variant, seed) points the next look needs: undecided variants' seeds and the baseline's."""
    points = [{"variant": spec.baseline, "seed": spec.seeds[i]} for i in decided.baseline_seeds]
    for variant, indices in decided.seeds.items():
        points += [{"variant": variant, "seed": spec.seeds[i]} for i in indices]
    return points


def run_until_decided(ctx: Context, design: Design, run_round: Callable[[], int],
                      say: Callable[[str], None]) -> tuple[Plan | None, dict[str, dict[str, int]], int]:
    """Run rounds until every variant is decided (or unstable, or at the most seeds); returns the last
    plan, the diverged and stalled counts (see :func:`observed`) and the last round's exit code (no plan when a
    round was stopped: exit 2, 130 or 143). A variant
    with a diverged or stalled seed is unstable and leaves the sequential test; so is the baseline, and
    then no verdict is possible."""
    spec = ctx.spec
    while True:
        code = run_round()
        if code in (2, 130, 143):  # a user error, Ctrl-C or SIGTERM: stopped, not decided (no round line)
            return None, {}, code
        diffs, counts = observed(ctx)
        unstable = {v for v in spec.variants if _unstable_text(counts, v)}
        if spec.baseline in unstable:
            raise AblateError(f"the {named_baseline(spec.baseline)} {_unstable_text(counts, spec.baseline)}; no "
                              "sequential verdict is possible: give it a budget and learning rate it trains well "
                              "with (tune the learning rate, or train longer) and run that as a new study (--name "
                              "NEW, or --fresh to start this one over)")
        family = sum(1 for v in spec.variants if v != spec.baseline)  # unstable variants stay in Holm's family
        result = plan({v: d for v, d in diffs.items() if v not in unstable}, design, family)
        parts = [f"{v}: {look.decision}" for v, look in result.decisions.items()]
        parts += [f"{v}: unstable ({_unstable_text(counts, v)})" for v in sorted(unstable)]
        say(f"  round at {max((len(d) for d in diffs.values()), default=0)} seeds: " + "; ".join(parts))
        if result.done or code not in (0, 1):
            return result, counts, code
        points = next_points(spec, result)
        queued = ensure_grid(ctx.main(), spec, "compare", points, only_keys={key_of(p, COMPARE_KEY) for p in points})
        if not queued and all(len(diffs[v]) >= design.looks[-1] for v in result.seeds):
            return result, counts, code  # nothing left to run (seeds exhausted)
        if not queued:
            return result, counts, 1  # the needed seeds exist but did not finish: failed trials


def save(ctx: Context, result: Plan, counts: dict[str, dict[str, int]], design: Design) -> dict[str, Any]:
    """The sequential verdicts as a study attribute (read by `study report`); ``runs_used`` counts the runs
    the study holds (unstable variants' included), not only those the test read."""
    from optuna.trial import TrialState

    ran = sum(1 for t in ctx.main().get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if not t.user_attrs.get(K_SKIP))
    record = {"design": dataclasses.asdict(design), "runs_used": max(ran, result.runs_used),
              "diverged": counts["diverged"],
              "stalled": counts["stalled"],
              "decisions": {v: dataclasses.asdict(look) for v, look in result.decisions.items()}}
    ctx.main().set_user_attr(K_SEQUENTIAL, record)
    return record


def recorded(ctx: Context) -> bool:
    """Whether the study exists and was run --until-decided (its record of verdicts is kept)."""
    try:
        return bool(ctx.main().user_attrs.get(K_SEQUENTIAL))
    except AblateError:  # not made yet
        return False


def table(record: dict[str, Any], baseline: str, metric: str):
    """The sequential verdict table (one row per variant) as a CellTable."""
    from ablate.format import num
    from ablate.report.tables import CellTable

    cells = CellTable(f"{metric} vs {baseline}: seeds added until decided (group-sequential paired t, "
                      f"alpha={record['design']['alpha']:g} family-wise; {record['runs_used']} runs)",
                      ["variant", "seeds", f"Δ {metric}", "repeated CI", "level", "verdict"], right=(1, 2, 3, 4))
    for variant, look in record["decisions"].items():
        verdict = look["decision"] if look["decision"] != UNDECIDED else "undecided (most seeds reached)"
        cells.add(variant, look["n"], num(look["mean"], 4, sign=True),
                  f"[{num(look['ci_low'], 4, sign=True)}, {num(look['ci_high'], 4, sign=True)}]",
                  f"{look['level']:.3g}", verdict)
    for variant, why in unstable_in(record).items():
        if variant not in record["decisions"] and variant != baseline:
            cells.add(variant, "—", "—", "—", "—", f"unstable: {why}")
    return cells


def unstable_in(record: dict[str, Any]) -> dict[str, str]:
    """The variants a saved sequential record found unstable, with why (``diverged on 2 seed(s)``)."""
    counts = {"diverged": record["diverged"], "stalled": record.get("stalled", {})}  # older records: diverged only
    whys = {v: _unstable_text(counts, v) for v in dict.fromkeys([*counts["diverged"], *counts["stalled"]])}
    return {v: why for v, why in whys.items() if why}
