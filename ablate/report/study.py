"""A study's report: the verdict table of its comparison trials, with its tuning and factorial sections,
or the ranking and parameter importances of a search. Each table is built once (``CellTable``) and
printed to the terminal, written to ``report.md`` and collected for ``--json`` / ``--csv`` (``Findings``)
from the same cells."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from ablate.errors import AblateError
from ablate.format import num, short
from ablate.metrics import direction, lower_is_better
from ablate.report.figures import plot_effects, plot_importances
from ablate.report.render import comparison_header, print_comparison, verdict_table, write_report
from ablate.report.tables import CellTable


@dataclass
class Findings:
    """What a study report found, for ``study report --json`` / ``--csv``: the main table (the verdicts,
    or a search's ranking), the other tables (tuning, factorial, importances, sequential), warnings."""

    main: CellTable | None = None
    runs_used: str = ""
    tables: list[CellTable] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, spec, paths: list[Path]) -> dict[str, Any]:
        """``runs_used``, ``rows`` and ``warnings`` as ``ablate compare --json`` has them, then the study's own."""
        return {"runs_used": self.runs_used, "rows": self.main.to_records() if self.main else [],
                "warnings": self.warnings, "study": spec.name, "protocol": spec.protocol, "metric": spec.metric,
                "baseline": spec.baseline, **self.extra,
                "tables": [{"title": t.title, "rows": t.to_records()} for t in self.tables],
                "report": [str(p) for p in paths]}


def _warn(console: Console, text: str, found: Findings | None = None) -> None:
    console.print(f"warning: {text}", highlight=False, markup=False, style="yellow")
    if found is not None:
        found.warnings.append(text)


def compare_report(ctx, out: Path, console: Console, wide: bool = False, found: Findings | None = None) -> list[Path]:
    """The comparison of a compare or tune-then-compare study: table, report.md and figures."""
    from ablate.compare import compare, load_records
    from ablate.factorial import factorial_design
    from ablate.study.keys import K_RUN
    from ablate.study.progress import compare_trials

    spec = ctx.spec
    trials, missing = compare_trials(ctx)
    if not trials:
        raise AblateError(f"study {spec.name!r} has no finished comparison trials yet; run "
                          f"`{ctx.run_command()}` first")
    records = load_records(tracking_uri=ctx.tracking_uri, experiment=ctx.experiment,
                           run_ids=[t.user_attrs[K_RUN] for t in trials], metric=spec.metric)
    try:
        comparison = compare(records, baseline=spec.baseline, metric=spec.metric, alpha=spec.alpha)
    except AblateError as err:  # compare's fix (--group, --where) is not a flag of study report
        text = str(err)
        if not text.startswith("no verdict over unfair runs"):
            raise
        raise AblateError(text.split("; compare one group")[0] + f"; study {spec.name!r} holds runs trained on other "
                          "settings or data: run it over again with --fresh, or as a new study with --name NEW "
                          "(`ablate compare` can report one group of them with --where)") from None
    console.print(f"study {spec.name} ({spec.protocol}): {comparison_header(comparison, records)}",
                  highlight=False, markup=False)
    print_comparison(comparison, console, wide=wide)
    found = found if found is not None else Findings()  # the cells and header of `ablate compare --json`
    found.main, found.runs_used = verdict_table(comparison, unadjusted=True), comparison_header(comparison, records)
    found.warnings += comparison.warnings
    if ctx.main().user_attrs.get("ablate.sequential"):  # --until-decided: the seeds it did not need are not missing
        missing = []
    found.extra["missing"] = missing
    if missing:
        _warn(console, f"{len(missing)} (variant, seed) not finished yet: {', '.join(missing[:10])}"
                       f"{' …' if len(missing) > 10 else ''}; re-run `ablate study run` to finish them", found)
    paths = write_report(comparison, records, out)
    sections: list[str] = [f"\n## Study\n\n`{spec.path.name}` ({spec.protocol}); {spec.description}\n"]
    if spec.protocol == "tune-then-compare":
        sections.append(tuning_section(ctx, console, found))
    factors = factorial_design(list(spec.variants), spec.baseline)
    if factors:
        section, figure = factorial_section(comparison, records, factors, spec.metric, console, out, found)
        sections.append(section)
        if figure:
            paths.append(figure)
    with open(paths[0], "a", encoding="utf-8") as fh:
        fh.write("\n".join(sections))
    return paths


def tuning_section(ctx, console: Console, found: Findings | None = None) -> str:
    """Every lr tried per variant and the one chosen; warns when the best lies at the edge of the grid."""
    from ablate.study.progress import tuning_table

    spec = ctx.spec
    warmup = bool(spec.tune.get("warmup"))
    what = "lr, warmup" if warmup else "lr"
    table = CellTable(f"learning-rate tuning (seed {spec.tune['seed']}, budget {spec.tune['budget']})",
                      ["variant", f"{spec.metric} at each {what} tried", f"chosen {what}"], right=(2,))

    def label(settings) -> str:
        return f"{settings['lr']:.3g}" + (f" w{settings['warmup']:.3g}" if "warmup" in settings else "")

    edge = []
    for row in tuning_table(ctx):
        tried = ", ".join(f"{label(s)}: " + ("pruned" if v is None else "diverged" if math.isinf(v) else f"{v:.4f}")
                          for s, v, _ in row["settings"])
        chosen = row["best_settings"]
        best = label(chosen) if chosen else "—"
        lrs = [s["lr"] for s, _, _ in row["settings"]]
        if spec.tune_is_grid and chosen and len(set(lrs)) > 1 and chosen["lr"] in (min(lrs), max(lrs)):
            edge.append(f"{row['variant']} ({best})")
        table.add(row["variant"], tried, best)
    console.print(table.to_rich())
    if found is not None:
        found.tables.append(table)
    md = [f"\n## Learning-rate tuning\n\nEach variant's lr was chosen on seed {spec.tune['seed']} "
          f"(not one of the compared seeds) with budget {spec.tune['budget']}; the comparison above uses it.\n",
          table.to_markdown()]
    if edge:
        warning = (f"best lr at the edge of the range tried for {', '.join(edge)}: its optimum may lie beyond; "
                   "widen [tune] lr to be sure no variant is held back")
        _warn(console, warning, found)
        md.append(f"\nWarning: {warning}.")
    return "\n".join(md) + "\n"


def factorial_section(comparison, records, factors, metric: str, console: Console, out: Path,
                      found: Findings | None = None):
    """Main effects and interactions of a 2^k design; returns the Markdown and the figure (or None)."""
    from ablate.factorial import effect_reading, factorial_effects

    rows = [(r.variant, r.seed, float(r.metric)) for r in records
            if r.status == "finished" and r.metric is not None and math.isfinite(r.metric)]
    names = " x ".join(f.high for f in factors)
    try:
        result = factorial_effects(rows, factors, level=comparison.level, metric=metric)
    except AblateError as err:
        _warn(console, f"factorial ({names}): {err}", found)
        return f"\n## Factorial analysis\n\n{err}\n", None
    pct = f"{result.level:.0%}"
    table = CellTable(f"factorial {names}: effects on {metric} (linear model on ±1 factors + seed blocks, "
                      f"{result.n_runs} runs, {result.df} residual df)",
                      ["term", "effect", f"{pct} CI", "p", "reading"], right=(1, 3))
    shaky = [r.variant for r in comparison.rows if r.unstable]  # the verdict table's rule holds here too
    for e in [*result.effects, *result.additivity]:
        reading = f"unstable ({', '.join(shaky)}: diverged or stalled seeds)" if shaky else effect_reading(e)
        table.add(e.term, num(e.estimate, sign=True), f"[{e.low:+.4f}, {e.high:+.4f}]", f"{e.p_value:.3g}",
                  reading)
    console.print(table.to_rich())
    if found is not None:
        found.tables.append(table)
    md = [f"\n## Factorial analysis: {names}\n",
          f"Linear model of final {metric} on ±1-coded factors (every interaction) plus a block per seed; "
          f"{result.n_runs} runs, {result.n_seeds} seeds, {result.df} residual degrees of freedom. "
          "A main effect is mean(on) − mean(off) averaged over the other factors; an interaction is the "
          "difference of differences (e.g. AB − A − B + baseline), so 0 means the changes add up. "
          "Negative is better for a loss.\n",
          table.to_markdown()]
    figure = plot_effects(result, out / "factorial.png")
    md.append(f"\n![factorial effects]({figure.name})\n")
    return "\n".join(md) + "\n", figure


def _importance_targets(study, trials, metric: str):
    """(title, study, note) to compute importances on: the final value of the completed trials, and,
    when pruning stopped some, the value every trial reached at the last evaluation they all had."""
    import optuna
    from optuna.trial import TrialState

    out = []
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    keys = {k for t in complete for k in t.params}
    if len(complete) >= 2 and any(len({t.params.get(k) for t in complete}) > 1 for k in keys):
        out.append((f"final {metric} ({len(complete)} completed trials)", study,
                    "pruned trials have no final value and are left out."))
    reached = [t for t in trials if t.intermediate_values]
    if len(reached) > len(complete) and len(reached) >= 2:  # some were pruned
        k = min(max(t.intermediate_values) for t in reached)
        mem = optuna.create_study(direction=direction(metric))
        for t in reached:
            if k in t.intermediate_values and t.distributions:
                mem.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                        value=t.intermediate_values[k]))
        out.append((f"{metric} at evaluation {k} (all {len(mem.trials)} trials)", mem,
                    f"the {metric} every trial reached (pruned ones included) at evaluation {k} of the budget."))
    return out


def _search_score(t, sign: float = 1.0):
    """Completed trials rank by their final value; pruned ones after them, by the value they were stopped at.
    ``sign`` -1 ranks a higher-is-better metric (a task accuracy) highest first; the value itself is kept."""
    from optuna.trial import TrialState

    if t.state == TrialState.COMPLETE:
        return (0, sign * t.value, t.value)
    last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else sign * float("inf")
    return (1, sign * last, last)


def search_report(ctx, out: Path, console: Console, found: Findings | None = None) -> list[Path]:
    """The best trials of a search and the parameter importances (fANOVA); report.md."""
    import optuna
    from optuna.trial import TrialState

    from ablate.study.context import _quiet_optuna
    from ablate.study.keys import K_SKIP

    _quiet_optuna()
    spec = ctx.spec
    study = ctx.main()
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not t.user_attrs.get(K_SKIP)]
    if not trials:
        raise AblateError(f"study {spec.name!r} has no finished trials yet; run `{ctx.run_command()}` first")
    sign = 1.0 if lower_is_better(spec.metric) else -1.0
    ranked = sorted(trials, key=lambda t: _search_score(t, sign))
    params = sorted({k for t in trials for k in t.params if k not in spec.slots and k != "variant"})
    n_complete = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    counts = f"{n_complete} completed, {len(trials) - n_complete} pruned"
    table = CellTable(f"search {spec.name}: best trials by final {spec.metric} "
                      f"({counts}; seed {spec.seeds[0]}, budget {spec.config.budget})",
                      ["rank", "trial", "variant", *params, spec.metric, "state"],
                      right=[i for i in range(len(params) + 5) if i not in (2, len(params) + 4)])
    for rank, t in enumerate(ranked[:15], 1):
        state = t.user_attrs.get("ablate.status", "finished") if t.state == TrialState.COMPLETE else \
            ("diverged" if t.user_attrs.get("ablate.status") == "diverged" else "pruned")
        table.add(rank, t.number, t.user_attrs.get("ablate.variant", "?"),
                  *(short(t.params[p]) if p in t.params else "—" for p in params), num(_search_score(t, sign)[2]), state)
    console.print(table.to_rich())
    found = found if found is not None else Findings()
    found.main, found.runs_used = table, f"{len(trials)} trials ({counts}) on seed {spec.seeds[0]}"
    md = [f"# Search {spec.name}\n", f"{spec.description}\n",
          f"Sampler {spec.search['sampler']}, pruner {spec.search['pruner']}, {counts} trials on seed "
          f"{spec.seeds[0]}, budget {spec.config.budget}, size {spec.config.size}, data {spec.config.data}. "
          f"Completed trials rank first by final {spec.metric}; pruned ones follow with the value at which "
          "they were stopped.\n", table.to_markdown()]
    figures: list[Path] = []
    for title, imp_study, note in _importance_targets(study, trials, spec.metric):
        try:
            importances = optuna.importance.get_param_importances(
                imp_study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        except Exception as err:  # too few trials or a degenerate space
            _warn(console, f"no parameter importances ({title}): {err}", found)
            continue
        imp = CellTable(f"parameter importances (fANOVA), {title}", ["parameter", "importance"], right=(1,))
        for k, v in importances.items():
            imp.add(k, f"{v:.3f}")
        console.print(imp.to_rich())
        found.tables.append(imp)
        found.extra.setdefault("importances", []).append(
            {"target": title, "importances": {k: float(v) for k, v in importances.items()}})
        figure = plot_importances(importances, f"parameter importances, {title}",
                                  out / f"importances-{len(figures) + 1}.png")
        figures.append(figure)
        md += [f"\n## Parameter importances, {title}\n",
               f"fANOVA (share of the variance of the value each parameter explains); {note} "
               "With few trials, and with TPE sampling mostly near the best region, treat these as rough.\n",
               imp.to_markdown(), f"\n![parameter importances]({figure.name})\n"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = min(complete, key=lambda t: sign * t.value)
        line = (f"best: trial {best.number}, {best.user_attrs.get('ablate.variant')} "
                f"{ {k: v for k, v in best.params.items() if k in params} or ''} → {spec.metric} {best.value:.4f}. "
                "A search ranks single-seed runs; confirm the winner against the baseline over seeds with a "
                "compare study.")
        console.print(line, highlight=False, markup=False)
        md.append(f"\n{line}\n")
        found.extra["best"] = {"trial": best.number, "variant": best.user_attrs.get("ablate.variant"),
                               "params": {k: v for k, v in best.params.items() if k in params}, spec.metric: best.value}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return [path, *figures]
