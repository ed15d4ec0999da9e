"""`ablate study ...`: run, join, watch and report declarative studies (file format: docs/studies.md).

    ablate study run studies/positions.toml [--workers N] [--storage URL|PATH] [--gpu] [--set k=v]
    ablate study worker studies/positions.toml --storage postgresql://...   # join from another machine
    ablate study status studies/positions.toml
    ablate study report studies/positions.toml [--out DIR] [--json | --csv]
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
import shlex
import signal
import sys
import time
from pathlib import Path

from ablate.cli.console import console, echo
from ablate.cli.study_workers import CHILD_ENV, STORAGE_ENV, run_workers, work_here
from ablate.errors import AblateError
from ablate.urls import redact



# ------------------------------------------------------------------------------------- flags
def _common(p: argparse.ArgumentParser, tracking: bool = True) -> None:
    p.add_argument("file", help="study file (TOML), e.g. studies/positions.toml")
    p.add_argument("--storage", default=None,
                   help="Optuna storage: an RDB URL (postgresql://user:pw@host/db, sqlite:///path.db) or a journal "
                        "file path (default <study dir>/.state/<name>.journal)")
    p.add_argument("--state-dir", default=None,
                   help="folder of the default journal storage instead of <study dir>/.state (give the same one "
                        "to run, worker, status and report)")
    p.add_argument("--gpu", action="store_true", help="apply the file's [gpu] table (the study becomes <name>-gpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (any RunConfig key, or seeds), e.g. --set budget=2000steps")
    p.add_argument("--name", default=None, help="run the file under another study name (a separate study)")
    if tracking:
        p.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else the study's, else sqlite:///mlflow.db)")
        p.add_argument("--experiment", default=None,
                       help="MLflow experiment of the study's runs (default: the one it was created in, else 'ablate')")


def _worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: the idle cores divided among the workers, at least 1)")
    p.add_argument("--log-checkpoint", action="store_true", help="upload each run's final checkpoint to MLflow")


def add_commands(sub) -> None:
    """Add the `study` command group to the top-level subparsers (idempotent)."""
    if "study" in getattr(sub, "choices", {}):
        return
    study = sub.add_parser("study", help="declarative studies: many variants x seeds or a search, via Optuna",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = study.add_subparsers(dest="study_command", required=True)

    p = ssub.add_parser("run", help="create (or resume) the study and run it with N worker processes")
    _common(p)
    _worker_flags(p)
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine that pop trials from the study's queue (default 1)")
    p.add_argument("--fresh", action="store_true",
                   help="discard this study's Optuna state (trials, queue) and start over; its MLflow runs stay")
    p.add_argument("--report", action="store_true", help="print the report (`study report`) when the study is done")
    p.add_argument("--until-decided", action="store_true",
                   help="compare studies: start with 3 seeds and add seeds in rounds (5, 7, 9, ...) only for "
                        "undecided variants, up to the study's seeds, with a group-sequential test that keeps "
                        "the family-wise error at alpha (docs/sequential.md)")
    p.add_argument("--margin", type=float, default=None,
                   help="with --until-decided: stop a variant as 'no detectable effect' once its interval lies "
                        "within ±MARGIN (metric units, e.g. 0.01)")
    p.set_defaults(func=cmd_run)

    p = ssub.add_parser("worker", help="join an existing study as one worker (e.g. from another machine)")
    _common(p)
    _worker_flags(p)
    p.add_argument("--worker-id", type=int, default=0,
                   help="this worker's number (default 0): labels its output and offsets a search's sampler seed, "
                        "so give each worker joining from another machine its own")
    p.add_argument("--prefix", default=None, help="text before each line this worker prints (default '[wN] ')")
    p.set_defaults(func=cmd_worker)

    p = ssub.add_parser("status", help="trials done, running (with their worker), failed and missing")
    _common(p, tracking=True)
    p.set_defaults(func=cmd_status)

    p = ssub.add_parser("report", help="the verdict table (plus factorial effects, tuning or importances)")
    _common(p)
    p.add_argument("--out", default=None, help="folder for report.md and figures (default reports/<study>)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the study's MLflow run")
    p.add_argument("--wide", action="store_true", help="one verdict table with every column (needs ~180 columns)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true",
                       help="print the report as JSON and nothing else on stdout: runs_used, rows and warnings as "
                            "`ablate compare --json`, then the study's other tables (tuning, factorial, importances, "
                            "sequential); no NaN (null instead)")
    shape.add_argument("--csv", action="store_true",
                       help="print the main table as CSV and nothing else on stdout: the verdict table (the rows of "
                            "--json), or a search's best trials")
    p.set_defaults(func=cmd_report)

    p = ssub.add_parser("show", help="the resolved plan of a study file (variants, seeds, settings); runs nothing")
    _common(p, tracking=False)
    p.set_defaults(func=cmd_show)


# ------------------------------------------------------------------------------------- helpers
def _spec_and_ctx(args, label: str = "", must_exist: bool = True):
    from ablate.study import Context, load_study, storage_url

    spec = load_study(args.file, gpu=args.gpu, sets=args.set, name=args.name)
    url = storage_url(spec, args.storage or os.environ.get(STORAGE_ENV), args.state_dir)
    ctx = Context(spec, url, tracking_uri=getattr(args, "tracking_uri", None),
                  experiment=getattr(args, "experiment", None),
                  log_checkpoint=getattr(args, "log_checkpoint", False), label=label, echo=echo,
                  must_exist=must_exist)
    return spec, ctx


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
    elif spec.pretrain is not None:
        from ablate.study.stages import plan_lines

        lines += plan_lines(spec)
    else:
        lines.append(f"  variants ({len(spec.variants)}): {', '.join(spec.variants)}  (baseline {spec.baseline})")
        lines.append(f"  seeds: {', '.join(map(str, spec.seeds))} → {len(compare_points(spec))} comparison trials")
        if spec.tune:
            t = spec.tune
            lrs = f"{list(t['lr'])}" if spec.tune_is_grid else f"{t['lr'].low:g}..{t['lr'].high:g} ({t['trials']} trials each)"
            if t.get("warmup"):
                w = t["warmup"]
                lrs += f" x warmup {list(w)}" if isinstance(w, tuple) else f" x warmup {w.low:g}..{w.high:g}"
            n = len(tune_points(spec)) if spec.tune_is_grid else t["trials"] * len(spec.variants)
            lines.append(f"  lr tuning first: lr {lrs} on seed {t['seed']}, budget {t['budget']} → {n} tuning trials")
    for variant, settings in getattr(spec, "recipes", {}).items():
        lines.append(f"  recipe for {variant}: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines.append(f"  storage: {redact(url)}")
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
    from ablate.study import create, preflight, reap
    from ablate.study import rounds

    if args.workers < 1:
        raise AblateError(f"--workers must be at least 1, got {args.workers}")
    if args.threads is not None and args.threads < 1:
        raise AblateError(f"--threads must be at least 1, got {args.threads} (leave it out to divide the cores)")
    if args.margin is not None and not args.until_decided:
        raise AblateError("--margin sets when --until-decided stops adding seeds; add --until-decided, or leave "
                          "--margin out")
    if args.margin is not None and not 0 < args.margin < float("inf"):
        raise AblateError(f"--margin must be a positive number in the metric's units, got {args.margin}; "
                          "e.g. --margin 0.01")
    spec, ctx = _spec_and_ctx(args, must_exist=False)
    design = rounds.design_for(spec, margin=args.margin) if args.until_decided else None
    for line in _plan_lines(spec, ctx.storage_url):
        console.print(line, highlight=False, markup=False)
    if design is not None:
        console.print(f"  until decided: seeds in rounds of {', '.join(map(str, design.looks))} (group-sequential "
                      "paired t-test; see docs/sequential.md)", highlight=False, markup=False)
    started = time.perf_counter()
    journal = Path(ctx.storage_url) if "://" not in ctx.storage_url else None
    fresh_journal = journal is not None and not journal.exists()
    _ = ctx.storage  # a wrong --storage fails before any data is prepared
    try:
        preflight(spec)
    except AblateError:
        if fresh_journal and journal.exists() and journal.stat().st_size == 0:
            journal.unlink()  # nothing was created: leave no empty journal behind
        raise
    if design is None and not args.fresh and rounds.recorded(ctx):  # before create queues the whole grid
        raise AblateError(f"study {spec.name!r} adds seeds until decided; continue it with --until-decided, or run "
                          "the whole grid as a new study (--name NEW) or over again (--fresh)")
    ctx.spec = rounds.first_round(spec, design) if design is not None else spec
    create(ctx, fresh=args.fresh)
    ctx.spec = spec
    if design is not None:
        rounds.hold_design(ctx, design)
    console.print(f"  tracking: {redact(ctx.tracking_uri)} (experiment {ctx.experiment or 'ablate'})", highlight=False,
                  markup=False)
    reap(ctx)
    threads = args.threads or default_threads(args.workers)
    console.print(f"  {args.workers} worker(s) x {threads} torch thread(s) on {os.cpu_count()} cores"
                  + ("" if args.threads else " (--threads to choose)"), highlight=False, markup=False)
    if design is not None:
        result, counts, code = rounds.run_until_decided(ctx, design, lambda: _run_round(args, ctx, threads), echo)
        if code in (2, 130, 143):  # stopped, not decided: no verdicts are saved (the same command goes on)
            return code
        record = rounds.save(ctx, result, counts, design)
        console.print(rounds.table(record, spec.baseline, spec.metric).to_rich())
        console.print(f"  took {time.perf_counter() - started:.0f}s; {record['runs_used']} runs where a fixed design "
                      f"would use {len(spec.variants) * len(spec.seeds)}; verdict: {_report_command(args)}",
                      highlight=False, markup=False)
        if args.report:  # it was ignored here
            cmd_report(argparse.Namespace(**vars(args), out=None, no_log=False))
        return code
    code = _run_round(args, ctx, threads)
    if code in (2, 130, 143):
        return code
    _print_progress(ctx)
    console.print(f"  took {time.perf_counter() - started:.0f}s; verdict: {_report_command(args)}", highlight=False,
                  markup=False)
    if args.report:
        cmd_report(argparse.Namespace(**vars(args), out=None, no_log=False))
    return code if code else (0 if _complete(ctx) else 1)


def _report_command(args) -> str:
    """`ablate study report FILE` with the flags this command was given, quoted for a shell."""
    plugins = [w for path in getattr(args, "plugin", []) or [] for w in ("--plugin", path)]
    return shlex.join(["ablate", *plugins, "study", "report", args.file]) + _flags_again(args)


def _run_round(args, ctx, threads: int) -> int:
    """Work off the queued trials (this process, or N worker processes), reaping dead workers' trials
    and running them again (at most MAX_RETRY times); the exit code of the last attempt."""
    from ablate.study import MAX_RETRY, reap

    code = 0
    for _ in range(MAX_RETRY + 1):
        if args.workers == 1:
            code = work_here(ctx, threads, _set_threads)
            if code in (130, 143):
                return code
        else:
            code = run_workers(args, ctx, threads)
            if code in (2, 130, 143):
                return code
        if not reap(ctx):
            break
    return code


def _flags_again(args) -> str:
    extra = []
    if args.storage:
        extra += ["--storage", redact(args.storage)]
    if args.state_dir:
        extra += ["--state-dir", args.state_dir]
    if args.gpu:
        extra.append("--gpu")
    for s in args.set:
        extra += ["--set", s]
    if args.name:
        extra += ["--name", args.name]
    return (" " + shlex.join(extra)) if extra else ""


def cmd_worker(args) -> int:
    from ablate.study import work

    label = args.prefix if args.prefix is not None else f"[w{args.worker_id}] "
    spec, ctx = _spec_and_ctx(args, label=label)
    ctx.worker_index = args.worker_id

    from ablate.study.execute import on_ctrl_c, on_sigterm

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_ctrl_c)
    _set_threads(args.threads or default_threads(1))
    try:
        summary = work(ctx)
    except KeyboardInterrupt:
        if os.environ.get(CHILD_ENV):  # started by `study run`, which says it once for the study
            return 130
        raise
    ctx.say(f"done: {summary.ran} trial(s) run, {summary.skipped} skipped as duplicates, {summary.failed} failed")
    return 1 if summary.failed else 0


def _complete(ctx) -> bool:
    from ablate.study import progress

    return all(not p.missing and p.done + p.pruned >= p.expected and not p.running for p in progress(ctx))


def _print_progress(ctx) -> None:
    import datetime

    from ablate.study import K_WORKER, progress
    from ablate.study.queue import trial_point
    from ablate.study.workers import worker_alive

    for p in progress(ctx):
        parts = [f"{p.done} done" + (f" + {p.pruned} pruned" if p.pruned else "") + f" of {p.expected}"]
        if p.running:
            parts.append(f"{p.running} running")
        if p.waiting:
            parts.append(f"{p.waiting} queued")
        if p.failed:
            parts.append(f"{p.failed} failed attempt(s)")
        if p.outside:
            parts.append(f"{p.outside} more finished that this plan does not need")
        console.print(f"  {p.stage} [{p.role}]: " + ", ".join(parts), highlight=False, markup=False)
        for t in p.running_trials:
            w = t.user_attrs.get(K_WORKER, {})
            age = (datetime.datetime.now() - t.datetime_start).total_seconds() if t.datetime_start else 0
            gone = ("; its worker is gone: `ablate study run` with the same file queues it again"
                    if w and worker_alive(w) is False else "")
            point = trial_point(t)
            what = " ".join([str(point.get("variant", "?")), *(f"{k} {v}" for k, v in point.items() if k != "variant")])
            console.print(f"    trial {t.number} ({what}) on {w.get('host', '?')} pid {w.get('pid', '?')} "
                          f"for {age:.0f}s{gone}", highlight=False, markup=False)
        if p.missing:
            more = f" (+{len(p.missing) - 8} more)" if len(p.missing) > 8 else ""
            console.print(f"    not done: {', '.join(p.missing[:8])}{more}", highlight=False, markup=False)


def _same_settings(spec, attrs, command: str) -> None:
    """A study read with other settings than it was made with would count its runs against the wrong plan."""
    from ablate.study.create import settings_changed

    if "ablate.identity" in attrs and (changed := settings_changed(spec, attrs)):
        raise AblateError(f"study {spec.name!r} was made with other settings ({changed}); {command} it with the "
                          "same study file, --gpu and --set as `ablate study run` had")
    most = (attrs.get("ablate.sequential") or {}).get("design", {}).get("max_seeds")
    if most and most != len(spec.seeds):  # its verdicts and its fixed table would be read over other seeds
        raise AblateError(f"study {spec.name!r} added seeds until decided, up to {most}, and this file gives "
                          f"{len(spec.seeds)}; {command} it with the seeds `ablate study run --until-decided` had "
                          f"(e.g. --set seeds={most})")


def cmd_status(args) -> int:
    spec, ctx = _spec_and_ctx(args)
    attrs = ctx.main().user_attrs
    _same_settings(spec, attrs, "show the status of")
    ctx.adopt_tracking(attrs)  # fails clearly when the study does not exist
    console.print(f"study {spec.name} ({spec.protocol}) in {redact(ctx.storage_url)}", highlight=False, markup=False)
    _print_progress(ctx)
    return 0


def cmd_report(args) -> int:
    import io

    from rich.console import Console

    from ablate.compare import default_report_dir
    from ablate.report.study import Findings, compare_report, search_report
    from ablate.report.tables import strict_json

    spec, ctx = _spec_and_ctx(args)
    attrs = ctx.main().user_attrs
    _same_settings(spec, attrs, "report")
    ctx.adopt_tracking(attrs)
    out = Path(args.out) if args.out else default_report_dir(spec.name)
    machine = getattr(args, "json", False) or getattr(args, "csv", False)
    if machine and spec.pretrain is not None:
        raise AblateError("--json and --csv are not available for pretrain-then-finetune studies yet; run this "
                          "`ablate study report` without them (the same --set, --gpu and --name) and read its report.md")
    shown = Console(file=io.StringIO()) if machine else console  # --json/--csv: only the data on stdout
    found = Findings()
    if spec.protocol == "search":
        paths = search_report(ctx, out, shown, found)
    elif spec.pretrain is not None:
        from ablate.report.pretrain import pretrain_report

        paths = pretrain_report(ctx, out, shown, wide=getattr(args, "wide", False))
    else:
        paths = compare_report(ctx, out, shown, wide=getattr(args, "wide", False), found=found)
    record = attrs.get("ablate.sequential")
    if record and spec.protocol == "compare":
        from ablate.study.rounds import table

        cells = table(record, spec.baseline, spec.metric)
        found.extra["sequential"] = {"title": cells.title, "rows": cells.to_records(),
                                     "note": "the study's verdicts (seeds were added until decided); rows above "
                                             "are the fixed-design table, for reference only"}
        shown.print(cells.to_rich())
        shown.print("seeds were added until decided: the table above holds the study's verdicts; the fixed-design "
                    "table is shown for reference only", highlight=False, markup=False, style="yellow")
        with open(paths[0], "a", encoding="utf-8") as fh:
            fh.write("\n## Sequential verdicts (seeds added until decided)\n\n" + cells.to_markdown() + "\n\n"
                     "These are the study's verdicts: a group-sequential paired t-test with alpha spending keeps the "
                     "family-wise error at alpha over every round (docs/sequential.md). The fixed-design table above "
                     "ignores that seeds were added until decided.\n")
    if not args.no_log and attrs.get("ablate.mlflow_parent"):
        client = ctx.client()
        for path in paths:
            client.log_artifact(attrs["ablate.mlflow_parent"], str(path), artifact_path="report")
    if getattr(args, "json", False):
        print(strict_json(found.to_dict(spec, paths)))
        return 0
    if getattr(args, "csv", False):
        sys.stdout.write(found.main.to_csv())
        return 0
    console.print(f"report: {', '.join(str(p) for p in paths)}", highlight=False, markup=False)
    experiment = f" --experiment {ctx.experiment}" if ctx.experiment and ctx.experiment != "ablate" else ""
    console.print(f"curves and runs in the MLflow UI: ablate ui --tracking-uri {ctx.tracking_uri}{experiment} "
                  f"(then open the runs' chart address it prints; the study's parent run is 'study {spec.name}')",
                  highlight=False, markup=False)
    return 0
