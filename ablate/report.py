"""Verdict tables, Markdown reports and figures for a set of training runs.

This module is independent of MLflow: whoever reads the runs (tracker, study) converts each one into
a :class:`RunRecord` and calls :func:`build_comparison`, then :func:`render_table` for the terminal
or :func:`write_report` for ``report.md`` plus ``curves.png`` and ``differences.png``.

The statistics are seed-paired (see :mod:`ablate.stats`): for every variant, the per-seed difference
``variant - baseline`` over the seeds both have, a two-sided paired t-test, and Holm–Bonferroni
correction across the non-baseline variants. Everything that weakens the comparison is stated in
``Comparison.warnings`` rather than silently dropped: runs that did not finish, seeds without a
baseline partner, fairness settings that differ between runs, and comparisons with too few seeds
to detect the observed difference.
"""

from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table

from ablate import stats
from ablate.errors import AblateError

__all__ = [
    "RunRecord",
    "VariantRow",
    "Comparison",
    "build_comparison",
    "render_table",
    "render_text",
    "render_markdown",
    "write_report",
]

FINISHED = "finished"
_STATUSES = ("finished", "diverged", "failed")
_NAN = float("nan")


@dataclass(frozen=True)
class RunRecord:
    """One training run, reduced to what the report needs.

    ``metric`` is the final value of the compared metric (lower is better unless the comparison
    says otherwise); ``curve`` holds ``(step or tokens, metric)`` pairs from the fixed eval points.
    ``fairness`` holds the settings that must be identical across runs for a fair comparison
    (e.g. ``budget``, ``data``, ``tokenizer``, ``eval_batches``), as strings.
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


@dataclass(frozen=True)
class VariantRow:
    """One line of the verdict table.

    For the baseline row ``paired`` and ``verdict`` are ``None`` and ``p_adjusted`` is ``nan``.
    ``seeds`` are the seeds of the finished runs used for ``summary``; the paired comparison uses
    ``paired.seeds`` (those that also have a baseline run). ``seeds_needed`` is set when the verdict
    is "no detectable effect": the seeds a paired t-test would need to detect the observed mean
    difference at ``alpha`` with 80% power (``stats.SEEDS_CAP`` means "at least that many").
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

    Only runs with status ``finished`` and a finite metric enter the statistics; the others are
    named in the warnings. Raises :class:`AblateError` when there are no records or the baseline
    has no runs (the message lists the variants that exist) or no finished run.
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

    warnings: list[str] = []
    excluded: list[str] = []
    included: list[RunRecord] = []
    for r in records:
        if r.status not in _STATUSES:
            raise AblateError(
                f"run {r.run_id}: unknown status {r.status!r}; expected one of {', '.join(_STATUSES)}"
            )
        if r.status != FINISHED:
            excluded.append(f"{_run_label(r)}: {r.status}")
        elif r.metric is None or not math.isfinite(float(r.metric)):
            excluded.append(f"{_run_label(r)}: final {metric_name} is {r.metric!r}")
        else:
            included.append(r)
    if excluded:
        warnings.append(
            f"excluded {len(excluded)} run(s) that did not finish with a finite {metric_name}: "
            + "; ".join(excluded)
            + ". Their seeds are missing from the paired comparison."
        )

    # One value per (variant, seed): a repeated run is reported, the first one is used.
    by_variant: dict[str, dict[int, RunRecord]] = defaultdict(dict)
    for r in included:
        slot = by_variant[r.variant]
        if r.seed in slot:
            warnings.append(
                f"{r.variant} seed {r.seed} has more than one finished run "
                f"({slot[r.seed].run_id}, {r.run_id}); using {slot[r.seed].run_id}."
            )
            continue
        slot[r.seed] = r

    if baseline not in by_variant:
        raise AblateError(
            f"baseline {baseline!r} has no finished runs ({len(excluded)} excluded, see above: "
            + "; ".join(e for e in excluded if e.startswith(f"{baseline} seed"))
            + "); re-run the baseline before comparing."
        )
    used = [r for runs in by_variant.values() for r in runs.values()]
    fair_warnings, agreed = _fairness_warnings(used)
    warnings[:0] = fair_warnings  # unfairness first: it undermines everything below it

    base_runs = by_variant[baseline]
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
                f"{v}: no finished run for baseline seed(s) {_seed_list(missing)}; "
                f"its paired comparison uses {paired[v].n} seed(s)."
            )
    adjusted = stats.holm({v: p.p_value for v, p in paired.items()})

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
            if ver == stats.TOO_FEW:
                warnings.append(
                    f"{v}: only {pr.n} seed(s) paired with the baseline; a paired test needs at "
                    "least 2 (3 or more recommended). No verdict."
                )
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
    )


# --------------------------------------------------------------------------- formatting


def _decimals(c: Comparison) -> int:
    """Decimals that resolve the noise in this comparison (3..8)."""
    scales = [c.noise_floor] + [r.paired.sd_diff for r in c.rows if r.paired is not None]
    scales = [s for s in scales if s is not None and math.isfinite(s) and s > 0]
    if not scales:
        return 4
    return max(3, min(8, 2 - math.floor(math.log10(min(scales)))))


def _num(x: float | None, d: int, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:+.{d}f}" if sign else f"{x:.{d}f}"


def _pval(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def _si(x: float | None, binary: bool = False, unit: str = "") -> str:
    """Compact number: 124.4M, 750.0M, 36.0 KiB."""
    if x is None or not math.isfinite(float(x)):
        return "—"
    x = float(x)
    prefixes = ["", "Ki", "Mi", "Gi", "Ti"] if binary else ["", "k", "M", "G", "T", "P"]
    base = 1024.0 if binary else 1000.0
    i = 0
    while abs(x) >= base and i < len(prefixes) - 1:
        x /= base
        i += 1
    text = (f"{x:.0f}" if x == int(x) else f"{x:.3g}") if i == 0 else f"{x:.1f}"
    sep = " " if binary else ""
    return f"{text}{sep}{prefixes[i]}{unit}"


def _headers(c: Comparison) -> list[str]:
    pct = f"{round(c.level * 100):d}%"
    return [
        "variant",
        "seeds",
        f"{c.metric_name} mean ± {pct} CI",
        f"Δ vs {c.baseline} [{pct} CI]",
        "p",
        "p (Holm)",
        "verdict",
        "params",
        "FLOPs/token",
        "KV bytes/token",
        "tokens/s",
    ]


def _cells(c: Comparison) -> list[list[str]]:
    d = _decimals(c)
    base = c.rows[0]
    out = []
    for r in c.rows:
        s = r.summary
        if s.n == 0:
            metric = "—"
        elif math.isnan(s.ci_low):
            metric = f"{_num(s.mean, d)} (n={s.n})"
        else:
            metric = f"{_num(s.mean, d)} ± {_num(s.ci_high - s.mean, d)}"
        if r.is_baseline:
            diff, p, padj, ver, seeds = "(baseline)", "", "", "(baseline)", str(s.n)
        else:
            pr = r.paired
            assert pr is not None
            if pr.n == 0:
                diff = "—"
            elif math.isnan(pr.ci_low):
                diff = _num(pr.mean_diff, d, sign=True)
            else:
                diff = (f"{_num(pr.mean_diff, d, sign=True)} "
                        f"[{_num(pr.ci_low, d, sign=True)}, {_num(pr.ci_high, d, sign=True)}]")
            p, padj, ver = _pval(pr.p_value), _pval(r.p_adjusted), str(r.verdict)
            seeds = str(s.n) if pr.n == s.n else f"{s.n} ({pr.n} paired)"
        params = _si(r.params)
        if not r.is_baseline and r.params and base.params:
            params += f" ({(r.params / base.params - 1) * 100:+.1f}%)"
        out.append([
            r.variant,
            seeds,
            metric,
            diff,
            p,
            padj,
            ver,
            params,
            _si(r.flops_per_token),
            _si(r.kv_bytes_per_token, binary=True, unit="B"),
            _si(r.tokens_per_s),
        ])
    return out


_VERDICT_STYLE = {stats.HELPS: "bold green", stats.HURTS: "bold red", stats.TOO_FEW: "yellow"}


def render_table(comparison: Comparison) -> Table:
    """The verdict table as a :class:`rich.table.Table` (baseline first)."""
    c = comparison
    direction = "lower is better" if c.lower_is_better else "higher is better"
    table = Table(
        title=f"{c.metric_name} vs {c.baseline} ({direction}; paired t-test over seeds, "
              f"Holm-corrected, alpha={c.alpha:g})",
        title_justify="left",
    )
    for i, h in enumerate(_headers(c)):
        table.add_column(h, justify="left" if i in (0, 6) else "right", no_wrap=i == 0)
    for r, cells in zip(c.rows, _cells(c)):
        style = "dim" if r.is_baseline else None
        cells = list(cells)
        if r.verdict in _VERDICT_STYLE:
            cells[6] = f"[{_VERDICT_STYLE[r.verdict]}]{cells[6]}[/]"
        table.add_row(*cells, style=style)
    return table


def render_text(comparison: Comparison, width: int = 200) -> str:
    """Plain-text rendering of the table, the noise floor and the warnings."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(render_table(comparison))
    console.print(_noise_floor_sentence(comparison), markup=False)
    for w in comparison.warnings:
        console.print(f"warning: {w}", markup=False)
    return console.export_text()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _noise_floor_sentence(c: Comparison) -> str:
    if c.noise_floor_n < 2:
        return (f"Noise floor: not available; the baseline has {c.noise_floor_n} finished seed(s) "
                "and its seed-to-seed spread needs at least 2.")
    d = _decimals(c)
    return (f"Noise floor: the baseline's seed-to-seed standard deviation of {c.metric_name} is "
            f"{_num(c.noise_floor, d)} over {c.noise_floor_n} seeds. A single run that differs from "
            "the baseline by less than this is within seed noise; the paired differences above "
            "cancel the per-seed variation that all variants share, so they can resolve smaller "
            "effects when the per-seed differences are consistent.")


def _method_sentence(c: Comparison) -> str:
    pct = f"{round(c.level * 100):d}%"
    good, bad = ("negative", "positive") if c.lower_is_better else ("positive", "negative")
    m = c.n_comparisons
    return (
        f"Each variant is compared with the baseline `{c.baseline}` paired by seed (the same seed "
        "means the same data order and the same eval batches): Δ is the mean over seeds of "
        f"variant − baseline in {c.metric_name}, with a {pct} t confidence interval, and p comes "
        "from a two-sided paired t-test over seeds. p (Holm) is the Holm–Bonferroni adjusted "
        f"p-value across the {m} variant comparison{'s' if m != 1 else ''}. A variant *helps* when "
        f"p (Holm) < {c.alpha:g} and Δ is {good}, *hurts* when p (Holm) < {c.alpha:g} and Δ is "
        f"{bad}, and otherwise shows *no detectable effect*, which is not evidence of no effect. "
        "The confidence intervals are not adjusted for multiplicity, so an interval that excludes "
        "zero can still come with p (Holm) above the level. "
        "Seeds counts finished runs; only seeds the baseline also has are paired."
    )


def render_markdown(comparison: Comparison, figures: Sequence[str] = ()) -> str:
    """The report as Markdown: table, method, noise floor, controls, warnings, figures."""
    c = comparison
    direction = "lower is better" if c.lower_is_better else "higher is better"
    lines = [
        f"# Ablation report: {c.metric_name}",
        "",
        f"Baseline: `{c.baseline}`. Metric: {c.metric_name} ({direction}). "
        f"Significance level: {c.alpha:g}.",
        "",
    ]
    headers = _headers(c)
    lines.append("| " + " | ".join(_md_escape(h) for h in headers) + " |")
    lines.append("|" + "|".join(":---" if i in (0, 6) else "---:" for i in range(len(headers))) + "|")
    for cells in _cells(c):
        cells = [f"`{_md_escape(cells[0])}`", *(_md_escape(x) for x in cells[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Method", "", _method_sentence(c), "", "## Noise floor", "",
              _noise_floor_sentence(c), ""]
    if c.fairness:
        lines += ["## Controls", "", "Identical across all compared runs:", ""]
        lines += [f"- {k}: `{v}`" for k, v in sorted(c.fairness.items())]
        lines.append("")
    lines += ["## Warnings", ""]
    lines += [f"- {_md_escape(w)}" for w in c.warnings] if c.warnings else ["None."]
    lines.append("")
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            lines += [f"![{Path(f).stem}]({f})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float):
    # The object-oriented Agg API: no pyplot, no global backend switch, safe in any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


_HELPS_COLOR, _HURTS_COLOR, _NEUTRAL_COLOR = "#2a9d3a", "#c0392b", "#555555"


def _mean_curve(curves: list[list[tuple[int, float]]]):
    """Mean/min/max across seeds on a shared x grid (interpolated where eval points differ)."""
    import numpy as np

    curves = [sorted((float(x), float(y)) for x, y in cv if math.isfinite(float(y))) for cv in curves]
    curves = [cv for cv in curves if cv]
    if not curves:
        return None
    xs = [np.array([p[0] for p in cv]) for cv in curves]
    ys = [np.array([p[1] for p in cv]) for cv in curves]
    if all(len(x) == len(xs[0]) and np.array_equal(x, xs[0]) for x in xs):
        grid, stack = xs[0], np.vstack(ys)
    else:
        lo, hi = max(x[0] for x in xs), min(x[-1] for x in xs)
        grid = np.unique(np.concatenate(xs))
        grid = grid[(grid >= lo) & (grid <= hi)]
        if grid.size == 0:
            return None
        stack = np.vstack([np.interp(grid, x, y) for x, y in zip(xs, ys)])
    return grid, stack.mean(axis=0), stack.min(axis=0), stack.max(axis=0), len(curves)


def _plot_curves(c: Comparison, records: Sequence[RunRecord], path: Path, x_label: str) -> bool:
    by_variant: dict[str, list[RunRecord]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for r in records:
        if r.status == FINISHED and r.metric is not None and math.isfinite(float(r.metric)):
            if (r.variant, r.seed) in seen:
                continue
            seen.add((r.variant, r.seed))
            by_variant[r.variant].append(r)
    series = []
    for row in c.rows:
        mc = _mean_curve([r.curve for r in by_variant.get(row.variant, [])])
        if mc is not None:
            series.append((row.variant, *mc))
    if not series:
        return False
    fig = _new_figure(8.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    tops = []
    for i, (name, grid, mean, lo, hi, n) in enumerate(series):
        color = "black" if name == c.baseline else f"C{i % 10}"
        ax.plot(grid, mean, color=color, lw=1.8 if name == c.baseline else 1.4,
                label=f"{name} (n={n})")
        if n > 1:
            ax.fill_between(grid, lo, hi, color=color, alpha=0.18, lw=0)
        tail = hi[len(hi) // 10:] if len(hi) >= 10 else hi
        tops.append(float(tail.max()))
    # Early-training losses dwarf the differences that matter: clip the y range to the part of
    # training after the first 10% of eval points.
    bottoms = [float(s[3].min()) for s in series]
    top, bottom = max(tops), min(bottoms)
    if top > bottom:
        pad = 0.05 * (top - bottom)
        ax.set_ylim(bottom - pad, top + pad)
    ax.set_xlabel(x_label)
    ax.set_ylabel(c.metric_name)
    ax.set_title(f"{c.metric_name}: mean across seeds, band = min–max")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _plot_differences(c: Comparison, path: Path) -> None:
    rows = [r for r in c.rows if not r.is_baseline]
    fig = _new_figure(7.0, 1.2 + 0.5 * max(len(rows), 1))
    ax = fig.add_subplot(1, 1, 1)
    pct = f"{round(c.level * 100):d}%"
    ax.axvline(0.0, color="black", lw=1)
    labels = []
    for y, r in enumerate(reversed(rows)):
        pr = r.paired
        labels.append(f"{r.variant} (n={pr.n if pr else 0})")
        if pr is None or pr.n == 0 or math.isnan(pr.mean_diff):
            continue
        color = {stats.HELPS: _HELPS_COLOR, stats.HURTS: _HURTS_COLOR}.get(r.verdict, _NEUTRAL_COLOR)
        if math.isfinite(pr.ci_low):
            xerr = [[pr.mean_diff - pr.ci_low], [pr.ci_high - pr.mean_diff]]
            ax.errorbar(pr.mean_diff, y, xerr=xerr, fmt="o", color=color, capsize=4)
        else:
            ax.plot(pr.mean_diff, y, "o", color=color, mfc="none")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels)
    if not rows:
        ax.text(0.5, 0.5, "no variants besides the baseline", transform=ax.transAxes,
                ha="center", va="center")
    ax.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    better = "← better" if c.lower_is_better else "better →"
    ax.set_xlabel(f"Δ {c.metric_name} vs {c.baseline} (variant − baseline), {pct} CI   {better}")
    ax.set_title("Paired difference vs baseline (green helps, red hurts, grey no detectable effect)",
                 fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def write_report(
    comparison: Comparison,
    records: Sequence[RunRecord],
    out_dir: Path,
    *,
    x_label: str = "step",
) -> list[Path]:
    """Write ``report.md``, ``curves.png`` (when any run has a curve) and ``differences.png``
    into ``out_dir`` (created if needed); return the written paths, report first."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AblateError(f"cannot create report directory {out_dir}: {e.strerror or e}") from e
    figures: list[Path] = []
    curves = out_dir / "curves.png"
    if _plot_curves(comparison, records, curves, x_label):
        figures.append(curves)
    diffs = out_dir / "differences.png"
    _plot_differences(comparison, diffs)
    figures.append(diffs)
    md = out_dir / "report.md"
    md.write_text(render_markdown(comparison, [f.name for f in figures]), encoding="utf-8")
    return [md, *figures]
