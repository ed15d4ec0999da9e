"""The verdict table of a comparison, rendered to the terminal (rich), plain text and Markdown, and the
report files (``report.md`` with its figures)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ablate import stats
from ablate.errors import AblateError
from ablate.format import num as _num
from ablate.format import pval as _pval
from ablate.format import si as _si
from ablate.report.build import Comparison, RunRecord
from ablate.report.figures import plot_curves, plot_differences
from ablate.report.stability import RULE as _STABILITY_RULE
from ablate.report.tables import CellTable, md_escape

def _decimals(c: Comparison) -> int:
    """Decimals that resolve the noise in this comparison (3..8)."""
    scales = [c.noise_floor] + [r.paired.sd_diff for r in c.rows if r.paired is not None]
    scales = [s for s in scales if s is not None and math.isfinite(s) and s > 0]
    if not scales:
        return 4
    return max(3, min(8, 2 - math.floor(math.log10(min(scales)))))



def _headers(c: Comparison, unadjusted: bool = False) -> list[str]:
    pct = f"{round(c.level * 100):d}%"
    return [
        "variant",
        "seeds",
        f"{c.metric_name} mean ± {pct} CI",
        f"Δ vs {c.baseline} [Holm CI]",
        *([f"Δ {pct} CI (unadjusted)"] if unadjusted else []),
        "p",
        "p (Holm)",
        "verdict",
        "params",
        "FLOPs/token",
        "KV bytes/token",
        "tokens/s",
        "decode tok/s",
    ]


def _interval(low: float, high: float, d: int) -> str:
    return f"[{_num(low, d, sign=True)}, {_num(high, d, sign=True)}]"


def _cells(c: Comparison, unadjusted: bool = False) -> list[list[str]]:
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
        raw = ""
        if r.is_baseline:
            diff, p, padj, ver, seeds = "(baseline)", "", "", "(baseline)", str(s.n)
            shaky = stats.unstable_verdict(len(r.diverged), len(r.stalled), len(set(r.seeds) | set(r.diverged)))
            if shaky:
                ver = shaky
        else:
            pr = r.paired
            assert pr is not None
            if pr.n == 0:
                diff = "—"
            elif math.isnan(r.holm_ci[0]):
                diff = _num(pr.mean_diff, d, sign=True)
            else:
                diff = f"{_num(pr.mean_diff, d, sign=True)} {_interval(*r.holm_ci, d)}"
            if pr.n and not math.isnan(pr.ci_low):
                raw = _interval(pr.ci_low, pr.ci_high, d)
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
            *([raw] if unadjusted else []),
            p,
            padj,
            ver,
            params,
            _si(r.flops_per_token),
            _si(r.kv_bytes_per_token, binary=True, unit="B"),
            _si(r.tokens_per_s),
            _si(r.decode_tokens_per_s),
        ])
    return out


_VERDICT_STYLE = {stats.HELPS: "bold green", stats.HURTS: "bold red", stats.TOO_FEW: "yellow"}
_UNSTABLE_STYLE = "bold magenta"


def verdict_table(comparison: Comparison, unadjusted: bool = False) -> CellTable:
    """The cells of the verdict table (baseline first), with the verdicts' terminal styles.

    The Δ column's interval is Holm-adjusted (it excludes zero exactly when the verdict is helps or
    hurts); ``unadjusted=True`` adds a column with the unadjusted interval (the Markdown report)."""
    c = comparison
    direction = "lower is better" if c.lower_is_better else "higher is better"
    headers = _headers(c, unadjusted)
    col = headers.index("verdict")
    table = CellTable(
        title=f"{c.metric_name} vs {c.baseline} ({direction}; paired t-test over seeds, "
              f"Holm-corrected, alpha={c.alpha:g})",
        headers=headers, right=[i for i in range(len(headers)) if i not in (0, col)], code=(0,))
    for i, (r, cells) in enumerate(zip(c.rows, _cells(c, unadjusted))):
        table.add(*cells, style="dim" if r.is_baseline else None)
        if r.verdict in _VERDICT_STYLE:
            table.styles[(i, col)] = _VERDICT_STYLE[r.verdict]
        elif stats.is_unstable(r.verdict) or (r.is_baseline and (r.diverged or r.stalled)):
            table.styles[(i, col)] = _UNSTABLE_STYLE
    return table


def render_table(comparison: Comparison) -> Table:
    """The whole verdict table (every column) as a :class:`rich.table.Table` (baseline first)."""
    return verdict_table(comparison).to_rich()


def narrow_tables(comparison: Comparison) -> tuple[Table, Table]:
    """The verdict table split to fit 80 columns: the verdicts (variant, Δ with its Holm interval,
    p (Holm), verdict, seeds), then what each variant costs (mean, parameters, FLOPs, KV cache, speed)."""
    full = verdict_table(comparison)
    h = full.headers
    verdicts = full.select([0, h.index(f"Δ vs {comparison.baseline} [Holm CI]"), h.index("p (Holm)"),
                            h.index("verdict"), 1],
                           title=f"{comparison.metric_name} vs {comparison.baseline}: paired by seed, "
                                 f"Holm-corrected at alpha={comparison.alpha:g} "
                                 f"({'lower' if comparison.lower_is_better else 'higher'} is better)")
    costs = full.select([0, 2, h.index("params"), h.index("FLOPs/token"), h.index("KV bytes/token"),
                         h.index("tokens/s"), h.index("decode tok/s")],
                        title="what each variant costs (KV cache counted in bf16)")
    costs.styles.clear()
    short = {"FLOPs/token": "FLOPs per token", "KV bytes/token": "KV bytes per token", "tokens/s": "train tok/s"}
    costs.headers = [short.get(name, name) for name in costs.headers]  # headers that wrap at 80 columns
    return verdicts.to_rich(), costs.to_rich()


def print_comparison(comparison: Comparison, console: Console, wide: bool = False) -> None:
    """The verdict table (80 columns unless ``wide``), the noise floor and the warnings, on a terminal."""
    if wide:  # every column, the unadjusted interval too (as report.md, --json and --csv)
        console.print(verdict_table(comparison, unadjusted=True).to_rich())
    else:
        for table in narrow_tables(comparison):
            console.print(table)
    if comparison.noise_floor_n < 2:
        console.print(f"noise floor: not available ({comparison.noise_floor_n} finished seed(s) of the "
                      f"{stats.named_baseline(comparison.baseline)}; it needs 2 or more)", highlight=False)
    else:
        console.print(f"noise floor (the {stats.named_baseline(comparison.baseline)}'s seed-to-seed sd): "
                      f"{comparison.noise_floor:.4g} "
                      f"over {comparison.noise_floor_n} seeds", highlight=False)
    for warning in comparison.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def render_text(comparison: Comparison, width: int = 200) -> str:
    """Plain-text rendering of the table, the noise floor and the warnings."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(render_table(comparison))
    console.print(_noise_floor_sentence(comparison), markup=False)
    for w in comparison.warnings:
        console.print(f"warning: {w}", markup=False)
    return console.export_text()



def _span(counts) -> str:
    """"2-3" for counts from 2 to 3, "2" when they are all 2."""
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"


def _noise_floor_sentence(c: Comparison) -> str:
    baseline = stats.named_baseline(c.baseline)
    if c.noise_floor_n < 2:
        return (f"Noise floor: not available; the {baseline} has {c.noise_floor_n} finished seed(s) "
                "and its seed-to-seed spread needs at least 2.")
    d = _decimals(c)
    return (f"Noise floor: the {baseline}'s seed-to-seed standard deviation of {c.metric_name} is "
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
        + (f"p-value across the {m} variant comparison{'s' if m != 1 else ''}. " if m else
           "p-value across the variant comparisons (none had two or more paired seeds here). ")
        + f"A variant *helps* when "
        f"p (Holm) < {c.alpha:g} and Δ is {good}, *hurts* when p (Holm) < {c.alpha:g} and Δ is "
        f"{bad}, and otherwise shows *no detectable effect*, which is not evidence of no effect. "
        "The interval in the Δ column (and the thick bar in differences.png) is Holm-adjusted: each "
        f"variant's paired t interval at the level 1 − {c.alpha:g}/j at which Holm's step-down "
        "procedure tested it (j = the number of hypotheses still open at its step; variants after the "
        "first non-rejection share that step's level), so it excludes zero exactly when the verdict is "
        f"helps or hurts. The widest, 1 − {c.alpha:g}/{max(m, 1)}, is the Bonferroni simultaneous "
        "level; the narrower step-down intervals match Holm's decisions but are not simultaneous "
        f"coverage statements. The unadjusted {pct} interval is shown beside it (thin line in the figure). "
        "Seeds counts finished runs; only seeds the baseline also has are paired. " + _STABILITY_RULE
    )



def _many(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def comparison_header(comparison: Comparison, records: Sequence[RunRecord]) -> str:
    """What the compared runs were, read from the runs themselves (not from a study file): runs,
    variants, seeds, and the budget, dims, batch, data and tokenizer they were trained with."""
    used = [r for r in records if r.variant in {row.variant for row in comparison.rows}] or list(records)
    variants = {r.variant for r in used}
    seeds = sorted({r.seed for r in used})
    shown = ", ".join(str(s) for s in seeds[:12]) + (" …" if len(seeds) > 12 else "")
    per_variant = {v: len({r.seed for r in used if r.variant == v}) for v in variants}
    grid = set(per_variant.values()) == {len(seeds)}  # every variant has every seed
    counts = (f"{_many(len(variants), 'variant')} x {_many(len(seeds), 'seed')}" if grid else
              f"{_many(len(variants), 'variant')}, {_span(per_variant.values())} seeds each")
    text = f"{_many(len(used), 'run')}, {counts} ({shown})"

    def values(key: str) -> str:
        found = sorted({r.fairness.get(key, "<not recorded>") for r in used})
        return " | ".join(found)

    for key, label in (("budget", "budget"), ("dims", "dims d_model x layers x heads @ context"),
                       ("batch", "batch size x accumulation")):
        if any(key in r.fairness for r in used):
            text += f", {label} {values(key)}"
    names = sorted({r.dataset for r in used if r.dataset})
    if names or any("data" in r.fairness for r in used):
        fingerprint = values("data") if any("data" in r.fairness for r in used) else ""
        text += f", data {' | '.join(names) or '?'}" + (f" (fingerprint {fingerprint})" if fingerprint else "")
    if any("tokenizer" in r.fairness for r in used):
        text += f", tokenizer {values('tokenizer')}"
    return text


def render_markdown(comparison: Comparison, figures: Sequence[str] = (), header: str | None = None) -> str:
    """The report as Markdown: header, table, method, noise floor, controls, warnings, figures."""
    c = comparison
    direction = "lower is better" if c.lower_is_better else "higher is better"
    lines = [
        f"# Ablation report: {c.metric_name}",
        "",
        f"Baseline: `{c.baseline}`. Metric: {c.metric_name} ({direction}). "
        f"Significance level: {c.alpha:g}.",
        "",
        *([f"Runs used: {md_escape(header)}.", ""] if header else []),
        verdict_table(c, unadjusted=True).to_markdown(),
    ]
    lines += ["", "## Method", "", _method_sentence(c), "", "## Noise floor", "",
              _noise_floor_sentence(c), ""]
    if c.fairness:
        lines += ["## Controls", "", "Identical across all compared runs:", ""]
        lines += [f"- {k}: `{v}`" for k, v in sorted(c.fairness.items())]
        lines.append("")
    lines += ["## Warnings", ""]
    lines += [f"- {md_escape(w)}" for w in c.warnings] if c.warnings else ["None."]
    lines.append("")
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            lines += [f"![{Path(f).stem}]({f})", ""]
    return "\n".join(lines)



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
        hint = "; the report goes into a folder: give another path, or remove the file" if out_dir.is_file() else ""
        raise AblateError(f"cannot create report directory {out_dir}: {e.strerror or e}{hint}") from e
    figures: list[Path] = []
    curves = out_dir / "curves.png"
    if plot_curves(comparison, records, curves, x_label):
        figures.append(curves)
    else:
        curves.unlink(missing_ok=True)  # an earlier report's curves would sit there unexplained
    diffs = out_dir / "differences.png"
    plot_differences(comparison, diffs)
    figures.append(diffs)
    md = out_dir / "report.md"
    md.write_text(render_markdown(comparison, [f.name for f in figures], comparison_header(comparison, records)),
                  encoding="utf-8")
    return [md, *figures]
