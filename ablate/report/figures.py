"""Figures of a report: curves across seeds, paired differences, factorial effects (matplotlib, no pyplot)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


from ablate import stats
from ablate.report.build import FINISHED, Comparison, RunRecord


def new_figure(width: float, height: float):
    # The object-oriented Agg API: no pyplot, no global backend switch, safe in any process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


_HELPS_COLOR, _HURTS_COLOR, _NEUTRAL_COLOR, _UNSTABLE_COLOR = "#2a9d3a", "#c0392b", "#555555", "#a0309a"
_NAN = float("nan")


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


def plot_curves(c: Comparison, records: Sequence[RunRecord], path: Path, x_label: str) -> bool:
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
    fig = new_figure(11.0, 4.8)
    whole, final = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    last_step = max(float(grid[-1]) for _, grid, *_ in series)
    # Early-training losses dwarf the differences that matter: the left panel leaves out the first
    # 10% of eval points from its y range; the right one zooms on the last 30% of training, where
    # the gap the verdict is about lives.
    for ax, start, skip in ((whole, 0.0, 0.1), (final, 0.7 * last_step, 0.0)):
        lows, highs = [], []
        for i, (name, grid, mean, lo, hi, n) in enumerate(series):
            keep = grid >= start
            if not keep.any():
                continue
            g, m, l, h = grid[keep], mean[keep], lo[keep], hi[keep]
            color = "black" if name == c.baseline else f"C{i % 10}"
            ax.plot(g, m, color=color, lw=1.8 if name == c.baseline else 1.4, label=f"{name} (n={n})",
                    marker="o" if ax is final and len(g) <= 12 else None, ms=3)
            if n > 1:
                ax.fill_between(g, l, h, color=color, alpha=0.18, lw=0)
            first = int(len(h) * skip) if len(h) >= 10 else 0
            lows.append(float(l[first:].min()))
            highs.append(float(h[first:].max()))
        if lows and max(highs) > min(lows):
            pad = 0.05 * (max(highs) - min(lows))
            ax.set_ylim(min(lows) - pad, max(highs) + pad)
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{c.metric_name} ({metric_unit(c.metric_name)})")
        ax.grid(True, alpha=0.3)
    whole.set_title(f"{c.metric_name}: mean across seeds, band = min–max", fontsize=10)
    final.set_title("the last 30% of training, zoomed", fontsize=10)
    whole.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return True


@dataclass(frozen=True)
class DifferenceMark:
    """One row of differences.png: the mean paired difference, its Holm-adjusted interval (drawn thick,
    at the level Holm tested the variant, so it excludes zero exactly when the verdict is helps or
    hurts), the unadjusted interval (thin), and the colour of the verdict."""

    label: str
    mean: float
    low: float
    high: float
    raw_low: float
    raw_high: float
    color: str
    verdict: str | None


def _verdict_color(verdict: str | None) -> str:
    if stats.is_unstable(verdict):
        return _UNSTABLE_COLOR
    return {stats.HELPS: _HELPS_COLOR, stats.HURTS: _HURTS_COLOR}.get(verdict, _NEUTRAL_COLOR)


def difference_marks(c: Comparison) -> list[DifferenceMark]:
    """What :func:`plot_differences` draws, one mark per non-baseline variant (table order);
    ``mean`` is ``nan`` for a variant without paired seeds, the intervals ``nan`` when undefined."""
    marks = []
    for r in c.rows:
        if r.is_baseline:
            continue
        pr = r.paired
        n = pr.n if pr else 0
        mean = pr.mean_diff if pr and n else _NAN
        raw = (pr.ci_low, pr.ci_high) if pr and n else (_NAN, _NAN)
        marks.append(DifferenceMark(f"{r.variant} (n={n})", mean, r.holm_ci[0], r.holm_ci[1], raw[0], raw[1],
                                    _verdict_color(r.verdict), r.verdict))
    return marks


def plot_differences(c: Comparison, path: Path) -> None:
    marks = difference_marks(c)
    fig = new_figure(7.0, 1.6 + 0.5 * max(len(marks), 1))
    ax = fig.add_subplot(1, 1, 1)
    pct = f"{round(c.level * 100):d}%"
    ax.axvline(0.0, color="black", lw=1)
    for y, m in enumerate(reversed(marks)):
        if math.isnan(m.mean):
            continue
        if math.isfinite(m.raw_low):
            ax.plot([m.raw_low, m.raw_high], [y, y], color=m.color, lw=1, alpha=0.6)
        if math.isfinite(m.low):
            ax.errorbar(m.mean, y, xerr=[[m.mean - m.low], [m.high - m.mean]], fmt="o", color=m.color,
                        capsize=4, elinewidth=2.5)
        else:
            ax.plot(m.mean, y, "o", color=m.color, mfc="none")
    ax.set_yticks(range(len(marks)))
    ax.set_yticklabels([m.label for m in reversed(marks)])
    if not marks:
        ax.text(0.5, 0.5, "no variants besides the baseline", transform=ax.transAxes,
                ha="center", va="center")
    ax.set_ylim(-0.6, max(len(marks), 1) - 0.4)
    better = "← better" if c.lower_is_better else "better →"
    ax.set_xlabel(f"Δ {c.metric_name} vs {c.baseline} (variant − baseline)   {better}\n"
                  f"thick: Holm-adjusted interval (as the verdict), thin: unadjusted {pct} CI")
    ax.set_title("Paired difference vs baseline (green helps, red hurts, grey no detectable effect, "
                 "magenta unstable)", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def metric_unit(name: str) -> str:
    """What a metric is measured in, for axis labels."""
    if name.endswith("bpb"):
        return "bits per byte"
    if name.startswith("acc"):
        return "exact-match accuracy"
    return "nats per token" if "loss" in name else "value"


def plot_effects(result, path: Path) -> Path:
    """Factorial main effects and interactions with their intervals (blue), and additivity checks (orange)."""
    effects = [*result.effects, *result.additivity]
    fig = new_figure(7.0, 0.45 * len(effects) + 1.2)
    ax = fig.add_subplot()
    ys = list(range(len(effects)))[::-1]
    for y, e in zip(ys, effects):
        ax.errorbar([e.estimate], [y], xerr=[[e.estimate - e.low], [e.high - e.estimate]], fmt="o",
                    color="C0" if e in result.effects else "C1", capsize=3)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(ys)
    ax.set_yticklabels([e.term for e in effects])
    ax.set_xlabel(f"effect on final {result.metric} (negative = better)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_importances(importances: dict[str, float], title: str, path: Path) -> Path:
    """Parameter importances (fANOVA shares of the variance) as horizontal bars, largest on top."""
    names = list(importances)[::-1]
    fig = new_figure(6.0, 0.4 * len(names) + 1.2)
    ax = fig.add_subplot()
    ax.barh(range(len(names)), [importances[n] for n in names], color="C0")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_xlim(0, 1)
    ax.set_xlabel("importance (share of the variance explained, fANOVA)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
