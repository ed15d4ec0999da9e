"""The comparison: runs reduced to `RunRecord`s, paired by seed against the baseline, one verdict per variant.

The statistics are seed-paired (see :mod:`ablate.stats`): for every variant, the per-seed difference
``variant - baseline`` over the seeds both have, a two-sided paired t-test, and Holm–Bonferroni
correction across the non-baseline variants. Everything that weakens the comparison is stated in
``Comparison.warnings`` rather than silently dropped: runs that failed, seeds without a
baseline partner, fairness settings that differ between runs, and comparisons with too few seeds
to detect the observed difference.

Diverged and stalled runs are results, not gaps (the rule is in :mod:`ablate.report.stability`): a
variant with any diverged or stalled seed gets the verdict ``"unstable: diverged on 2 of 5 seeds"``
and is never called helps or hurts on the strength of the seeds that survived; a baseline with any
makes every variant's verdict say so. Stalled runs keep their finite values in the statistics;
diverged runs have none.

Each row also carries the interval at the level at which Holm's step-down procedure tested it
(:func:`ablate.stats.holm_levels`), which excludes zero exactly when the verdict is helps or hurts.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence


from ablate import stats
from ablate.errors import AblateError
from ablate.report.stability import stall_reason

FINISHED = "finished"
_STATUSES = ("finished", "diverged", "failed", "interrupted", "pruned")
_NAN = float("nan")


@dataclass(frozen=True)
class RunRecord:
    """One training run, reduced to what the report needs.

    ``metric`` is the final value of the compared metric (lower is better unless the comparison
    says otherwise); ``curve`` holds ``(step or tokens, metric)`` pairs from the fixed eval points.
    ``fairness`` holds the settings that must be identical across runs for a fair comparison
    (e.g. ``budget``, ``data``, ``tokenizer``, ``eval_batches``), as strings.
    ``unigram_entropy`` (nats/token of the training split's unigram distribution) and ``final_loss``
    (the final validation loss in nats/token; ``None`` means ``metric`` when the compared metric is
    ``val_loss``) feed the stalled-run rule of :mod:`ablate.report.stability`; ``dataset`` is the
    data's name for the report header. ``loss_curve`` holds the validation loss at the eval points when
    the compared metric is not the loss: a higher-is-better metric (a task accuracy) is judged stalled
    on it, since an accuracy can be flat because it is already 100% (or 0% on lengths no model
    reaches) while the model is still learning.
    """

    run_id: str
    variant: str
    seed: int
    metric: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    params: int = 0
    flops_per_token: float = 0.0
    kv_bytes_per_token: float = 0.0
    tokens_per_s: float | None = None
    status: str = FINISHED
    fairness: dict[str, str] = field(default_factory=dict)
    unigram_entropy: float | None = None
    final_loss: float | None = None
    dataset: str = ""
    loss_curve: list[tuple[int, float]] | None = None
    recipe: dict[str, str] = field(default_factory=dict)  # lr, warmup, ...: a variant may have its own (tuned),
    # but its seeds are replicates only when they share it
    decode_tokens_per_s: float | None = None  # KV-cached, batch 1 (each run times its own model)
    code: str = ""  # the plugin code of the variant's components ("scalenorm file sha256:1a2b..."), "" if none


@dataclass(frozen=True)
class VariantRow:
    """One line of the verdict table.

    For the baseline row ``paired`` and ``verdict`` are ``None`` and ``p_adjusted`` is ``nan``.
    ``seeds`` are the seeds of the finished runs used for ``summary``; the paired comparison uses
    ``paired.seeds`` (those that also have a baseline run). ``seeds_needed`` is set when the verdict
    is "no detectable effect": the seeds a paired t-test would need to detect the observed mean
    difference at ``alpha`` with 80% power (``stats.SEEDS_CAP`` means "at least that many").
    ``diverged`` and ``stalled`` are this variant's seeds with such runs (the verdict is then
    "unstable: …"); ``holm_level`` is the level at which Holm tested this variant and ``holm_ci``
    the paired interval at that level (excludes zero exactly when the verdict is helps or hurts).
    """

    variant: str
    is_baseline: bool
    seeds: tuple[int, ...]
    summary: stats.Summary
    paired: stats.Paired | None
    p_adjusted: float
    verdict: str | None
    seeds_needed: int | None
    params: int | None
    flops_per_token: float | None
    kv_bytes_per_token: float | None
    tokens_per_s: float | None
    diverged: tuple[int, ...] = ()
    stalled: tuple[int, ...] = ()
    holm_level: float = _NAN
    holm_ci: tuple[float, float] = (_NAN, _NAN)
    decode_tokens_per_s: float | None = None

    @property
    def unstable(self) -> bool:
        return stats.is_unstable(self.verdict)


@dataclass(frozen=True)
class Comparison:
    """The verdict table for one metric: rows (baseline first), warnings and context."""

    baseline: str
    metric_name: str
    alpha: float
    level: float
    lower_is_better: bool
    rows: list[VariantRow]
    warnings: list[str]
    noise_floor: float
    noise_floor_n: int
    fairness: dict[str, str]
    excluded: list[str]
    unstable: list[str] = field(default_factory=list)

    @property
    def n_comparisons(self) -> int:
        """Number of variant-vs-baseline tests that entered the Holm correction."""
        return sum(
            1
            for r in self.rows
            if not r.is_baseline and r.paired is not None and not math.isnan(r.paired.p_value)
        )

    def row(self, variant: str) -> VariantRow:
        for r in self.rows:
            if r.variant == variant:
                return r
        raise AblateError(
            f"variant {variant!r} is not in this comparison; it has: "
            + ", ".join(r.variant for r in self.rows)
        )


# --------------------------------------------------------------------------- building


def _run_label(r: RunRecord) -> str:
    return f"{r.variant} seed {r.seed} (run {r.run_id})"


def _seed_list(seeds: Iterable[int]) -> str:
    return ", ".join(str(s) for s in sorted(seeds))


def _fairness_warnings(runs: Sequence[RunRecord]) -> tuple[list[str], dict[str, str]]:
    """Warnings for fairness keys whose values differ across ``runs``; plus the agreed settings."""
    keys = sorted({k for r in runs for k in r.fairness})
    agreed: dict[str, str] = {}
    warnings: list[str] = []
    seeds_of: dict[str, set[int]] = defaultdict(set)
    for r in runs:
        seeds_of[r.variant].add(r.seed)
    for key in keys:
        by_value: dict[str, list[RunRecord]] = defaultdict(list)
        for r in runs:
            by_value[str(r.fairness[key]) if key in r.fairness else "<not recorded>"].append(r)
        if len(by_value) == 1:
            agreed[key] = next(iter(by_value))
            continue
        parts = []
        for value, group in sorted(by_value.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            per_variant: dict[str, set[int]] = defaultdict(set)
            for r in group:
                per_variant[r.variant].add(r.seed)
            where = []
            for variant in sorted(per_variant):
                seeds = per_variant[variant]
                if seeds == seeds_of[variant]:
                    where.append(variant)
                else:
                    word = "seed" if len(seeds) == 1 else "seeds"
                    where.append(f"{variant} {word} {_seed_list(seeds)}")
            parts.append(f"{value!r} in {'; '.join(where)}")
        warnings.append(
            f"unfair comparison: {key!r} differs across runs: " + " vs ".join(parts)
            + f". Re-run so that every run has the same {key}, or compare only runs that match."
        )
    return warnings, agreed


def _median_or_none(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(vals) if vals else None


def _first_cost(runs: Sequence[RunRecord], attr: str):
    for r in runs:
        v = getattr(r, attr)
        if v is not None:
            return v
    return None


def build_comparison(
    records: Sequence[RunRecord],
    baseline: str,
    metric_name: str,
    alpha: float = 0.05,
    *,
    level: float = 0.95,
    lower_is_better: bool = True,
) -> Comparison:
    """Compare every variant in ``records`` with ``baseline``, paired by seed.

    Runs with status ``finished`` and a finite metric enter the statistics (stalled ones included);
    diverged runs count against their variant's verdict ("unstable: …", see
    :mod:`ablate.report.stability`); failed runs are named in the warnings. Raises
    :class:`AblateError` when there are no records or the baseline has no runs (the message lists
    the variants that exist) or none that finished or diverged.
    """
    if not (0.0 < alpha < 1.0):
        raise AblateError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha!r}")
    records = list(records)
    if not records:
        raise AblateError("no runs to compare: run some variants first (e.g. `ablate run`), "
                          "or check the experiment/study name")
    all_variants = sorted({r.variant for r in records})
    if baseline not in all_variants:
        raise AblateError(
            f"baseline {baseline!r} has no runs; the runs contain these variants: "
            f"{', '.join(all_variants)}. Choose one of them as the baseline, or run the baseline "
            "with the same seeds first."
        )

    finished = [r for r in records if r.status == FINISHED]
    if finished and not any(r.metric is not None and math.isfinite(float(r.metric)) for r in finished):
        raise AblateError(f"none of the {len(finished)} finished runs recorded {metric_name!r}; pick a metric they "
                          "have with --metric (val_loss and val_bpb always; acc, acc_len<N>, acc_longer for "
                          "the synthetic tasks)")

    warnings: list[str] = []
    excluded: list[str] = []
    unstable: list[str] = []
    included: list[RunRecord] = []
    diverged: dict[str, set[int]] = defaultdict(set)
    stalled: dict[str, set[int]] = defaultdict(set)
    for r in records:
        if r.status not in _STATUSES:
            raise AblateError(
                f"run {r.run_id}: unknown status {r.status!r}; expected one of {', '.join(_STATUSES)}"
            )
        if r.status == "diverged":
            diverged[r.variant].add(r.seed)
            unstable.append(f"{_run_label(r)}: diverged")
        elif r.status != FINISHED:
            excluded.append(f"{_run_label(r)}: {r.status}" + (" (continue it: the same `ablate run` with --resume)"
                                                               if r.status == "interrupted" else ""))
        elif r.metric is None or not math.isfinite(float(r.metric)):
            excluded.append(f"{_run_label(r)}: final {metric_name} is {r.metric!r}")
        else:
            loss = r.final_loss if r.final_loss is not None else (
                r.metric if metric_name == "val_loss" else None)
            if lower_is_better:
                reason = stall_reason(r.curve, loss, r.unigram_entropy, lower_is_better)
            else:  # an accuracy: the rule reads the validation loss, never the accuracy's own curve
                reason = stall_reason(r.loss_curve or [], loss, r.unigram_entropy)
            if reason:
                stalled[r.variant].add(r.seed)
                unstable.append(f"{_run_label(r)}: stalled ({reason})")
            included.append(r)
    if excluded:
        warnings.append(
            f"excluded {len(excluded)} run(s) that failed or did not finish with a finite "
            f"{metric_name}: " + "; ".join(excluded)
            + ". Their seeds are missing from the paired comparison."
        )
    if unstable:
        warnings.append(
            f"{len(unstable)} run(s) diverged or stalled; they are results and make their variant's "
            "verdict 'unstable' (a baseline's makes every verdict so): " + "; ".join(unstable) + "."
        )

    # One value per (variant, seed): a repeated run is reported (once per seed), the first one is used.
    by_variant: dict[str, dict[int, RunRecord]] = defaultdict(dict)
    repeats: dict[tuple[str, int], list[str]] = defaultdict(list)
    for r in included:
        slot = by_variant[r.variant]
        if r.seed in slot:
            repeats[r.variant, r.seed].append(r.run_id)
            continue
        slot[r.seed] = r
    for (variant, seed), others in repeats.items():
        used_id = by_variant[variant][seed].run_id
        warnings.append(f"{variant} seed {seed} has {len(others) + 1} finished runs ({used_id}, "
                        f"{', '.join(others)}); using {used_id}.")
    for variant, runs in by_variant.items():  # seeds trained with other settings are not replicates
        recipes = defaultdict(list)
        for seed, r in sorted(runs.items()):
            recipes[tuple(sorted(r.recipe.items())) + ((("plugin code", r.code),) if r.code else ())].append(seed)
        if len(recipes) > 1:
            described = "; ".join(", ".join(f"{k} {v}" for k, v in recipe) + f" for seed(s) "
                                  f"{', '.join(map(str, seeds))}" for recipe, seeds in recipes.items())
            warnings.insert(0, f"{variant}'s runs were trained with different settings ({described}): its seeds "
                               "are not replicates of one recipe; select one set with --group or --where")

    if baseline not in by_variant and not diverged.get(baseline):
        raise AblateError(
            f"baseline {baseline!r} has no finished or diverged runs ({len(excluded)} excluded: "
            + "; ".join(e for e in excluded if e.startswith(f"{baseline} seed"))
            + "); re-run the baseline before comparing."
        )
    used = [r for runs in by_variant.values() for r in runs.values()]
    fair_warnings, agreed = _fairness_warnings(used)
    warnings[:0] = fair_warnings  # unfairness first: it undermines everything below it

    base_runs = by_variant.get(baseline, {})
    base_values = {s: float(r.metric) for s, r in base_runs.items()}

    others = [v for v in all_variants if v != baseline]
    paired: dict[str, stats.Paired] = {}
    for v in others:
        runs = by_variant.get(v, {})
        values = {s: float(r.metric) for s, r in runs.items()}
        paired[v] = stats.paired_difference(base_values, values, level=level)
        orphan = sorted(set(values) - set(base_values))
        if orphan:
            warnings.append(
                f"{v}: seed(s) {_seed_list(orphan)} have no finished baseline run with the same seed; "
                "they are left out of the paired difference. Run the baseline with those seeds."
            )
        missing = sorted(set(base_values) - set(values))
        if missing and values:
            warnings.append(
                f"{v}: no finished run for seed(s) {_seed_list(missing)} of the {stats.named_baseline(baseline)}; "
                f"its paired comparison uses {paired[v].n} seed(s)."
            )
    adjusted = stats.holm({v: p.p_value for v, p in paired.items()})
    levels = stats.holm_levels({v: p.p_value for v, p in paired.items()}, alpha)

    def seeds_of(variant: str) -> set[int]:
        return set(by_variant.get(variant, {})) | diverged.get(variant, set())

    base_seeds = seeds_of(baseline)
    base_unstable = (len(diverged.get(baseline, ())), len(stalled.get(baseline, set()) & base_seeds),
                     len(base_seeds), baseline)

    rows: list[VariantRow] = []
    for v in [baseline, *others]:
        runs = list(by_variant.get(v, {}).values())
        cost_runs = runs or [r for r in records if r.variant == v]
        summary = stats.summarize([float(r.metric) for r in runs], level=level)
        pr = None if v == baseline else paired[v]
        p_adj = _NAN if v == baseline else adjusted[v]
        ver = None
        needed = None
        if pr is not None:
            ver = stats.verdict(pr, p_adj, alpha=alpha, lower_is_better=lower_is_better)
            seeds_all = seeds_of(v)
            shaky = stats.unstable_verdict(len(diverged.get(v, ())), len(stalled.get(v, set()) & seeds_all),
                                           len(seeds_all), *base_unstable)
            if shaky:
                ver = shaky
            elif ver == stats.TOO_FEW:
                warnings.append(
                    f"{v}: only {pr.n} seed(s) paired with the baseline; a paired test needs at "
                    "least 2 (3 or more recommended). No verdict."
                )
            elif ver == stats.NO_EFFECT and pr.mean_diff == 0 and pr.sd_diff == 0:
                warnings.append(f"{v}: the same {metric_name} as the baseline on every seed (difference 0); the "
                                "metric does not tell them apart here (e.g. both at 0 accuracy): train longer or "
                                "measure something else")
            elif ver == stats.NO_EFFECT and math.isfinite(pr.sd_diff):
                needed = stats.seeds_needed(pr.sd_diff, abs(pr.mean_diff), alpha=alpha, power=0.8)
                if needed > pr.n:
                    if needed >= stats.SEEDS_CAP:
                        how_many = f"at least {stats.SEEDS_CAP} seeds"
                    else:
                        how_many = f"about {needed} seeds"
                    warnings.append(
                        f"{v}: underpowered. No detectable effect with {pr.n} seeds, but if the "
                        f"observed difference ({pr.mean_diff:+.3g}) is real, detecting it at "
                        f"alpha={alpha:g} with 80% power would need {how_many} "
                        f"(per-seed difference sd {pr.sd_diff:.3g})."
                    )
        rows.append(
            VariantRow(
                variant=v,
                is_baseline=v == baseline,
                seeds=tuple(sorted(r.seed for r in runs)),
                summary=summary,
                paired=pr,
                p_adjusted=p_adj,
                verdict=ver,
                seeds_needed=needed,
                params=_first_cost(cost_runs, "params"),
                flops_per_token=_first_cost(cost_runs, "flops_per_token"),
                kv_bytes_per_token=_first_cost(cost_runs, "kv_bytes_per_token"),
                tokens_per_s=_median_or_none(r.tokens_per_s for r in runs),
                decode_tokens_per_s=_median_or_none(r.decode_tokens_per_s for r in runs),
                diverged=tuple(sorted(diverged.get(v, ()))),
                stalled=tuple(sorted(stalled.get(v, ()))),
                holm_level=_NAN if pr is None else levels[v],
                holm_ci=(_NAN, _NAN) if pr is None else stats.interval_at(pr, levels[v]),
            )
        )
    if not others:
        warnings.append(f"only the baseline {baseline!r} has runs; there is nothing to compare it with.")

    return Comparison(
        baseline=baseline,
        metric_name=metric_name,
        alpha=float(alpha),
        level=float(level),
        lower_is_better=lower_is_better,
        rows=rows,
        warnings=warnings,
        noise_floor=stats.noise_floor(base_values.values()),
        noise_floor_n=len(base_values),
        fairness=agreed,
        excluded=excluded,
        unstable=unstable,
    )
