"""`ablate study ...`: run, join, watch and report declarative studies (file format: ablate/study.py).

    ablate study run studies/positions.toml [--workers N] [--storage URL|PATH] [--gpu] [--set k=v]
    ablate study worker studies/positions.toml --storage postgresql://...   # join from another machine
    ablate study status studies/positions.toml
    ablate study report studies/positions.toml [--out DIR]
    ablate study show studies/positions.toml        # the resolved plan, nothing run

`run` creates the study once (Optuna studies, MLflow parent run, the queue of (variant, seed) trials),
then starts N worker processes that pop trials from the storage until none is left; re-running it
resumes and never repeats a finished (variant, seed). With the default journal storage under
<study dir>/.state/ every worker must be on this machine (or share the folder); with an RDB URL
(postgresql://user@host/db) workers on other machines join with `ablate study worker` and the
same file, flags and tracking URI.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ablate.errors import AblateError


def _console():
    from ablate.cli import console

    return console


# ------------------------------------------------------------------------------------- flags
def _common(p: argparse.ArgumentParser, tracking: bool = True) -> None:
    p.add_argument("file", help="study file (TOML), e.g. studies/positions.toml")
    p.add_argument("--storage", default=None,
                   help="Optuna storage: an RDB URL (postgresql://user:pw@host/db, sqlite:///path.db) or a journal "
                        "file path (default <study dir>/.state/<name>.journal)")
    p.add_argument("--state-dir", default=None, help="folder for the default journal storage")
    p.add_argument("--gpu", action="store_true", help="apply the file's [gpu] table (the study becomes <name>-gpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (any RunConfig key, or seeds), e.g. --set budget=2000steps")
    p.add_argument("--name", default=None, help="run the file under another study name (a separate study)")
    if tracking:
        p.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else the study's, else sqlite:///mlflow.db)")
        p.add_argument("--experiment", default=None, help="MLflow experiment (default 'ablate')")


def _worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: the idle cores divided among the workers, at least 1)")
    p.add_argument("--log-checkpoint", action="store_true", help="upload each run's final checkpoint to MLflow")


def add_study_commands(sub) -> None:
    """Add the `study` command group to the top-level subparsers (idempotent)."""
    if "study" in getattr(sub, "choices", {}):
        return
    study = sub.add_parser("study", help="declarative studies: many variants x seeds or a search, via Optuna",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = study.add_subparsers(dest="study_command", required=True)

    p = ssub.add_parser("run", help="create (or resume) the study and run it with N worker processes")
    _common(p)
    _worker_flags(p)
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--fresh", action="store_true", help="discard this study's Optuna state and start over")
    p.add_argument("--report", action="store_true", help="print the report when the study is done")
    p.set_defaults(func=cmd_run)

    p = ssub.add_parser("worker", help="join an existing study as one worker (e.g. from another machine)")
    _common(p)
    _worker_flags(p)
    p.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--prefix", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)

    p = ssub.add_parser("status", help="trials done, running (with their worker), failed and missing")
    _common(p, tracking=True)
    p.set_defaults(func=cmd_status)

    p = ssub.add_parser("report", help="the verdict table (plus factorial effects, tuning or importances)")
    _common(p)
    p.add_argument("--out", default=None, help="folder for report.md and figures (default reports/<study>)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the study's MLflow run")
    p.set_defaults(func=cmd_report)

    p = ssub.add_parser("show", help="the resolved plan of a study file (variants, seeds, settings); runs nothing")
    _common(p, tracking=False)
    p.set_defaults(func=cmd_show)


# ------------------------------------------------------------------------------------- helpers
def _spec_and_ctx(args, label: str = "", must_exist: bool = True):
    from ablate.study import Context, load_study, storage_url

    spec = load_study(args.file, gpu=args.gpu, sets=args.set, name=args.name)
    url = storage_url(spec, args.storage, args.state_dir)
    ctx = Context(spec, url, tracking_uri=getattr(args, "tracking_uri", None),
                  experiment=getattr(args, "experiment", None),
                  log_checkpoint=getattr(args, "log_checkpoint", False), label=label, echo=_echo,
                  must_exist=must_exist)
    return spec, ctx


def _echo(text: str) -> None:
    print(text, flush=True)


def default_threads(workers: int) -> int:
    """Torch threads per worker: the cores divided among the workers, and no more than the cores other
    processes leave idle (on a busy CPU, threads waiting for each other make training many times slower)."""
    cores = os.cpu_count() or 1
    share = max(1, cores // workers)
    try:
        idle = cores - os.getloadavg()[0]
    except OSError:
        idle = cores
    return max(1, min(share, round(idle / workers)))


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(max(1, threads))


def _plan_lines(spec, url: str) -> list[str]:
    from ablate.study import compare_points, tune_points

    lines = [f"study {spec.name} ({spec.protocol}) from {spec.path}"]
    if spec.description:
        lines.append(f"  {spec.description}")
    c = spec.config
    lines.append(f"  data {c.data} · tokenizer {c.tokenizer} · size {c.size} · budget {c.budget} · "
                 f"batch {c.batch_size}x{c.grad_accum} · lr {c.lr:g} · metric {spec.metric}")
    if spec.protocol == "search":
        space = [f"{k} in {list(v)}" for k, v in spec.slots.items()]
        space += [f"{k} in {v.low:g}..{v.high:g}{' (log)' if v.log else ''}" if hasattr(v, "low") else f"{k} in {list(v)}"
                  for k, v in spec.hparams.items()]
        if len(spec.variants) > 1:
            space.insert(0, f"variant in {list(spec.variants)}")
        s = spec.search
        lines.append(f"  search: {'; '.join(space)}")
        lines.append(f"  {s['trials']} trials · sampler {s['sampler']} · pruner {s['pruner']} · seed {spec.seeds[0]}")
    else:
        lines.append(f"  variants ({len(spec.variants)}): {', '.join(spec.variants)}  (baseline {spec.baseline})")
        lines.append(f"  seeds: {', '.join(map(str, spec.seeds))} → {len(compare_points(spec))} comparison trials")
        if spec.tune:
            t = spec.tune
            lrs = f"{list(t['lr'])}" if spec.tune_is_grid else f"{t['lr'].low:g}..{t['lr'].high:g} ({t['trials']} trials each)"
            n = len(tune_points(spec)) if spec.tune_is_grid else t["trials"] * len(spec.variants)
            lines.append(f"  lr tuning first: lr {lrs} on seed {t['seed']}, budget {t['budget']} → {n} tuning trials")
    lines.append(f"  storage: {url}")
    return lines


# ------------------------------------------------------------------------------------- commands
def cmd_show(args) -> int:
    from ablate.study import storage_url

    from ablate.study import load_study

    spec = load_study(args.file, gpu=args.gpu, sets=args.set, name=args.name)
    for line in _plan_lines(spec, storage_url(spec, args.storage, args.state_dir)):
        print(line)
    return 0


def cmd_run(args) -> int:
    from ablate.study import MAX_RETRY, create, preflight, reap, work

    if args.workers < 1:
        raise AblateError(f"--workers must be at least 1, got {args.workers}")
    spec, ctx = _spec_and_ctx(args, must_exist=False)
    console = _console()
    for line in _plan_lines(spec, ctx.storage_url):
        console.print(line, highlight=False, markup=False)
    started = time.perf_counter()
    _ = ctx.storage  # a wrong --storage fails before any data is prepared
    preflight(spec)
    create(ctx, fresh=args.fresh)
    console.print(f"  tracking: {ctx.tracking_uri} (experiment {ctx.experiment or 'ablate'})", highlight=False,
                  markup=False)
    reap(ctx)
    threads = args.threads or default_threads(args.workers)
    console.print(f"  {args.workers} worker(s) x {threads} torch thread(s) on {os.cpu_count()} cores"
                  + ("" if args.threads else " (--threads to choose)"), highlight=False, markup=False)
    code = 0
    for _ in range(MAX_RETRY + 1):
        if args.workers == 1:
            import torch

            before = torch.get_num_threads()
            _set_threads(threads)
            try:
                summary = work(ctx)
            finally:
                torch.set_num_threads(before)
            code = 1 if summary.failed else 0
        else:
            code = _run_workers(args, ctx, threads)
            if code in (2, 130):
                return code
        if not reap(ctx):
            break
    _print_progress(ctx)
    console.print(f"  took {time.perf_counter() - started:.0f}s; verdict: ablate study report {args.file}"
                  + _flags_again(args), highlight=False, markup=False)
    if args.report:
        report_args = argparse.Namespace(**vars(args), out=None, no_log=False)
        cmd_report(report_args)
    return code if code else (0 if _complete(ctx) else 1)


def _flags_again(args) -> str:
    extra = []
    if args.storage:
        extra += ["--storage", args.storage]
    if args.state_dir:
        extra += ["--state-dir", args.state_dir]
    if args.gpu:
        extra.append("--gpu")
    for s in args.set:
        extra += ["--set", s]
    if args.name:
        extra += ["--name", args.name]
    return (" " + " ".join(extra)) if extra else ""


def _worker_argv(args, ctx, index: int, threads: int | None) -> list[str]:
    argv = [sys.executable, "-m", "ablate.study_cli"]
    for plugin in getattr(args, "plugin", []) or []:
        argv += ["--plugin", plugin]
    argv += ["study", "worker", str(ctx.spec.path), "--storage", ctx.storage_url, "--name", ctx.spec.name,
             "--tracking-uri", ctx.tracking_uri, "--experiment", ctx.experiment or "ablate",
             "--worker-id", str(index)]
    if ctx.spec.gpu:
        argv.append("--gpu")
    for s in args.set:
        argv += ["--set", s]
    if threads:
        argv += ["--threads", str(threads)]
    if args.log_checkpoint:
        argv.append("--log-checkpoint")
    return argv


def _run_workers(args, ctx, threads: int) -> int:
    procs = []
    for i in range(args.workers):
        procs.append(subprocess.Popen(_worker_argv(args, ctx, i, threads)))
        time.sleep(0.2)  # stagger the first pops a little

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:  # the terminal sent SIGINT to the workers too; let them close their trials
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if 2 in codes:
        return 2
    return 0 if all(c == 0 for c in codes) else 1


def cmd_worker(args) -> int:
    from ablate.study import work

    label = args.prefix if args.prefix is not None else f"[w{args.worker_id}] "
    spec, ctx = _spec_and_ctx(args, label=label)
    ctx.worker_index = args.worker_id

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    _set_threads(args.threads or default_threads(1))
    summary = work(ctx)
    ctx.say(f"done: {summary.ran} trial(s) run, {summary.skipped} skipped as duplicates, {summary.failed} failed")
    return 1 if summary.failed else 0


def _complete(ctx) -> bool:
    from ablate.study import progress

    return all(not p.missing and p.done + p.pruned >= p.expected and not p.running for p in progress(ctx))


def _print_progress(ctx) -> None:
    import datetime

    from ablate.study import K_WORKER, progress

    console = _console()
    for p in progress(ctx):
        parts = [f"{p.done} done" + (f" + {p.pruned} pruned" if p.pruned else "") + f" of {p.expected}"]
        if p.running:
            parts.append(f"{p.running} running")
        if p.waiting:
            parts.append(f"{p.waiting} queued")
        if p.failed:
            parts.append(f"{p.failed} failed attempt(s)")
        console.print(f"  {p.stage} [{p.role}]: " + ", ".join(parts), highlight=False, markup=False)
        for t in p.running_trials:
            w = t.user_attrs.get(K_WORKER, {})
            age = (datetime.datetime.now() - t.datetime_start).total_seconds() if t.datetime_start else 0
            console.print(f"    trial {t.number} {t.params} on {w.get('host', '?')} pid {w.get('pid', '?')} "
                          f"for {age:.0f}s", highlight=False, markup=False)
        if p.missing:
            more = f" (+{len(p.missing) - 8} more)" if len(p.missing) > 8 else ""
            console.print(f"    not done: {', '.join(p.missing[:8])}{more}", highlight=False, markup=False)


def cmd_status(args) -> int:
    spec, ctx = _spec_and_ctx(args)
    ctx.adopt_tracking(ctx.main().user_attrs)  # fails clearly when the study does not exist
    _console().print(f"study {spec.name} ({spec.protocol}) in {ctx.storage_url}", highlight=False, markup=False)
    _print_progress(ctx)
    return 0


# ------------------------------------------------------------------------------------- report
def cmd_report(args) -> int:
    from ablate.compare import default_report_dir

    spec, ctx = _spec_and_ctx(args)
    attrs = ctx.main().user_attrs
    ctx.adopt_tracking(attrs)
    out = Path(args.out) if args.out else default_report_dir(spec.name)
    if spec.protocol == "search":
        paths = _report_search(ctx, out)
    else:
        paths = _report_compare(ctx, out)
    if not args.no_log and attrs.get("ablate.mlflow_parent"):
        client = ctx.client()
        for path in paths:
            client.log_artifact(attrs["ablate.mlflow_parent"], str(path), artifact_path="report")
    console = _console()
    console.print(f"report: {', '.join(str(p) for p in paths)}", highlight=False, markup=False)
    console.print(f"curves and runs in the MLflow UI: ablate ui --tracking-uri {ctx.tracking_uri} "
                  f"(then open http://127.0.0.1:5000, experiment {ctx.experiment or 'ablate'}, run 'study {spec.name}')",
                  highlight=False, markup=False)
    return 0


def _report_compare(ctx, out: Path) -> list[Path]:
    from rich.table import Table

    from ablate.cli import print_comparison
    from ablate.compare import compare, load_records
    from ablate.report import write_report
    from ablate.study import K_RUN, compare_trials, factorial_design

    spec = ctx.spec
    console = _console()
    trials, missing = compare_trials(ctx)
    if not trials:
        raise AblateError(f"study {spec.name!r} has no finished comparison trials yet; run "
                          f"`ablate study run {spec.path}` first")
    records = load_records(tracking_uri=ctx.tracking_uri, experiment=ctx.experiment,
                           run_ids=[t.user_attrs[K_RUN] for t in trials], metric=spec.metric)
    comparison = compare(records, baseline=spec.baseline, metric=spec.metric, alpha=spec.alpha)
    console.print(f"[bold]study {spec.name}[/] ({spec.protocol}): {len(records)} runs, "
                  f"{len(spec.variants)} variants x {len(spec.seeds)} seeds, budget {spec.config.budget}, "
                  f"size {spec.config.size}, data {spec.config.data}")
    print_comparison(comparison)
    if missing:
        console.print(f"[yellow]warning:[/] {len(missing)} (variant, seed) not finished yet: {', '.join(missing[:10])}"
                      f"{' …' if len(missing) > 10 else ''}; re-run `ablate study run` to finish them", highlight=False)
    paths = write_report(comparison, records, out)
    sections: list[str] = [f"\n## Study\n\n`{spec.path.name}` ({spec.protocol}); {spec.description}\n"]
    if spec.protocol == "tune-then-compare":
        sections.append(_tuning_section(ctx, console, Table))
    factors = factorial_design(list(spec.variants), spec.baseline)
    if factors:
        section, figure = _factorial_section(comparison, records, factors, spec, console, Table, out)
        sections.append(section)
        if figure:
            paths.append(figure)
    with open(paths[0], "a", encoding="utf-8") as fh:
        fh.write("\n".join(sections))
    return paths


def _fmt_num(x: float | None, d: int = 4, sign: bool = False) -> str:
    if x is None or x != x:
        return "—"
    return f"{x:+.{d}f}" if sign else f"{x:.{d}f}"


def _tuning_section(ctx, console, Table) -> str:
    from ablate.study import tuning_table

    spec = ctx.spec
    rows = tuning_table(ctx)
    table = Table(title=f"learning-rate tuning (seed {spec.tune['seed']}, budget {spec.tune['budget']})")
    table.add_column("variant")
    table.add_column(f"{spec.metric} at each lr tried")
    table.add_column("chosen lr", justify="right")
    md = [f"\n## Learning-rate tuning\n\nEach variant's lr was chosen on seed {spec.tune['seed']} "
          f"(not one of the compared seeds) with budget {spec.tune['budget']}; the comparison above uses it.\n",
          "| variant | " + f"{spec.metric} at each lr tried | chosen lr |", "| --- | --- | ---: |"]
    edge = []
    for row in rows:
        tried = ", ".join(f"{lr:.3g}: " + ("pruned" if v is None else "diverged" if v == float("inf") else f"{v:.4f}")
                          for lr, v, _ in row["tried"])
        best = f"{row['best']:.3g}" if row["best"] else "—"
        lrs = [lr for lr, _, _ in row["tried"]]
        if spec.tune_is_grid and row["best"] and len(lrs) > 1 and row["best"] in (min(lrs), max(lrs)):
            edge.append(f"{row['variant']} ({best})")
        table.add_row(row["variant"], tried, best)
        md.append(f"| {row['variant']} | {tried} | {best} |")
    console.print(table)
    if edge:
        warning = (f"best lr at the edge of the range tried for {', '.join(edge)}: its optimum may lie beyond; "
                   "widen [tune] lr to be sure no variant is held back")
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        md.append(f"\nWarning: {warning}.")
    return "\n".join(md) + "\n"


def _factorial_section(comparison, records, factors, spec, console, Table, out: Path):
    from ablate.study import effect_reading, factorial_effects

    rows = [(r.variant, r.seed, float(r.metric)) for r in records
            if r.status == "finished" and r.metric == r.metric and abs(r.metric) != float("inf")]
    names = " x ".join(f.high for f in factors)
    try:
        result = factorial_effects(rows, factors, level=comparison.level, metric=spec.metric)
    except AblateError as err:
        console.print(f"[yellow]factorial ({names}):[/] {err}", highlight=False)
        return f"\n## Factorial analysis\n\n{err}\n", None
    pct = f"{result.level:.0%}"
    title = (f"factorial {names}: effects on {spec.metric} (linear model on ±1 factors + seed blocks, "
             f"{result.n_runs} runs, {result.df} residual df)")
    table = Table(title=title)
    for col in ("term", "effect", f"{pct} CI", "p", "reading"):
        table.add_column(col, justify="right" if col in ("effect", "p") else "left")
    md = [f"\n## Factorial analysis: {names}\n",
          f"Linear model of final {spec.metric} on ±1-coded factors (every interaction) plus a block per seed; "
          f"{result.n_runs} runs, {result.n_seeds} seeds, {result.df} residual degrees of freedom. "
          "A main effect is mean(on) − mean(off) averaged over the other factors; an interaction is the "
          "difference of differences (e.g. AB − A − B + baseline), so 0 means the changes add up. "
          "Negative is better for a loss.\n",
          f"| term | effect | {pct} CI | p | reading |", "| --- | ---: | --- | ---: | --- |"]
    for e in [*result.effects, *result.additivity]:
        ci = f"[{e.low:+.4f}, {e.high:+.4f}]"
        reading = effect_reading(e)
        table.add_row(e.term, _fmt_num(e.estimate, sign=True), ci, f"{e.p_value:.3g}", reading)
        md.append(f"| {e.term} | {e.estimate:+.4f} | {ci} | {e.p_value:.3g} | {reading} |")
    console.print(table)
    figure = _plot_effects(result, out / "factorial.png")
    if figure:
        md.append(f"\n![factorial effects]({figure.name})\n")
    return "\n".join(md) + "\n", figure


def _plot_effects(result, path: Path) -> Path | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    effects = [*result.effects, *result.additivity]
    fig = Figure(figsize=(7, 0.45 * len(effects) + 1.2), dpi=100)
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
        mem = optuna.create_study(direction="minimize")
        for t in reached:
            if k in t.intermediate_values and t.distributions:
                mem.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                        value=t.intermediate_values[k]))
        out.append((f"{metric} at evaluation {k} (all {len(mem.trials)} trials)", mem,
                    f"the {metric} every trial reached (pruned ones included) at evaluation {k} of the budget."))
    return out


def _report_search(ctx, out: Path) -> list[Path]:
    import optuna
    from optuna.trial import TrialState
    from rich.table import Table

    from ablate.study import K_SKIP, _quiet_optuna

    _quiet_optuna()
    spec = ctx.spec
    console = _console()
    study = ctx.main()
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not t.user_attrs.get(K_SKIP)]
    if not trials:
        raise AblateError(f"study {spec.name!r} has no finished trials yet; run `ablate study run {spec.path}` first")

    def score(t):
        if t.state == TrialState.COMPLETE:
            return (0, t.value)
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else float("inf")
        return (1, last)

    ranked = sorted(trials, key=score)
    params = sorted({k for t in trials for k in t.params if k not in spec.slots and k != "variant"})
    n_complete = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    counts = f"{n_complete} completed, {len(trials) - n_complete} pruned"
    table = Table(title=f"search {spec.name}: best trials by final {spec.metric} "
                        f"({counts}; seed {spec.seeds[0]}, budget {spec.config.budget})")
    for col in ("rank", "trial", "variant", *params, spec.metric, "state"):
        table.add_column(col, justify="right" if col not in ("variant", "state") else "left")
    md = [f"# Search {spec.name}\n", f"{spec.description}\n",
          f"Sampler {spec.search['sampler']}, pruner {spec.search['pruner']}, {counts} trials on seed "
          f"{spec.seeds[0]}, budget {spec.config.budget}, size {spec.config.size}, data {spec.config.data}. "
          f"Completed trials rank first by final {spec.metric}; pruned ones follow with the value at which "
          "they were stopped.\n",
          "| rank | trial | variant | " + " | ".join(params) + f" | {spec.metric} | state |",
          "| ---: | ---: | --- | " + " | ".join("---:" for _ in params) + " | ---: | --- |"]
    for rank, t in enumerate(ranked[:15], 1):
        state = t.user_attrs.get("ablate.status", "finished") if t.state == TrialState.COMPLETE else \
            ("diverged" if t.user_attrs.get("ablate.status") == "diverged" else "pruned")
        value = t.value if t.state == TrialState.COMPLETE else score(t)[1]
        cells = [str(rank), str(t.number), t.user_attrs.get("ablate.variant", "?"),
                 *(f"{t.params[p]:.3g}" if isinstance(t.params.get(p), float) else str(t.params.get(p, "—"))
                   for p in params), _fmt_num(value), state]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for title, imp_study, note in _importance_targets(study, trials, spec.metric):
        try:
            importances = optuna.importance.get_param_importances(
                imp_study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        except Exception as err:  # too few trials or a degenerate space
            console.print(f"[yellow]no parameter importances ({title}):[/] {err}", highlight=False)
            continue
        imp = Table(title=f"parameter importances (fANOVA), {title}")
        imp.add_column("parameter")
        imp.add_column("importance", justify="right")
        md += [f"\n## Parameter importances, {title}\n",
               f"fANOVA (share of the variance of the value each parameter explains); {note} "
               "With few trials, and with TPE sampling mostly near the best region, treat these as rough.\n",
               "| parameter | importance |", "| --- | ---: |"]
        for k, v in importances.items():
            imp.add_row(k, f"{v:.3f}")
            md.append(f"| {k} | {v:.3f} |")
        console.print(imp)
    if complete:
        best = min(complete, key=lambda t: t.value)
        line = (f"best: trial {best.number}, {best.user_attrs.get('ablate.variant')} "
                f"{ {k: v for k, v in best.params.items() if k in params} or ''} → {spec.metric} {best.value:.4f}. "
                "A search ranks single-seed runs; confirm the winner against the baseline over seeds with a "
                "compare study.")
        console.print(line, highlight=False, markup=False)
        md.append(f"\n{line}\n")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return [path]


# ------------------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """`python -m ablate.study_cli ...`: the ablate command line (used to start worker processes)."""
    from ablate.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
