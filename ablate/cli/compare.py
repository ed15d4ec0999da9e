"""`ablate compare`: the verdict table over tracked runs, paired by seed."""

from __future__ import annotations

from pathlib import Path

from ablate.cli.console import console
from ablate.cli.run import add_tracking_flags
from ablate.errors import AblateError


def _where(args) -> dict[str, str]:
    """The fairness values to select on: --budget/--dims/--batch and every --where KEY=VALUE."""
    where: dict[str, str] = {}
    for item in args.where or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AblateError(f"--where takes KEY=VALUE (e.g. --where budget=200steps), got {item!r}")
        _select(where, key.strip(), value.strip(), f"--where {key.strip()}")
    for key in ("budget", "dims", "batch"):
        if getattr(args, key, None):
            _select(where, key, getattr(args, key), f"--{key}")
    return where


def _select(where: dict[str, str], key: str, value: str, flag: str) -> None:
    """Filters combine with AND: one key asked for two values selects nothing, which is said, not half-obeyed."""
    if key == "budget":
        from ablate.budget import canonical_budget

        value = canonical_budget(value)  # "20 steps" is 20steps
    if key in where and where[key] != value:
        raise AblateError(f"{flag}={value} and an earlier filter ask {key} to be both {where[key]} and {value}; "
                          f"no run is both: give one {key}")
    where[key] = value


def _metric(text: str) -> str:
    import argparse

    from ablate.metrics import check

    try:
        return check(text)
    except AblateError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_compare(args) -> int:
    import math

    from ablate.compare import compare, default_report_dir, load_records, log_report, select_records
    from ablate.report.render import comparison_header

    if not (math.isfinite(args.alpha) and 0 < args.alpha < 1):
        raise AblateError(f"--alpha must be between 0 and 1, got {args.alpha}; e.g. --alpha 0.05")
    where = _where(args)  # a malformed --where fails before the store is opened
    if args.out:
        from ablate.config import check_folder

        check_folder(args.out, "--out")  # before anything is loaded or printed
    records = load_records(tracking_uri=args.tracking_uri, experiment=args.experiment, group=args.group,
                           run_ids=args.run_ids, metric=args.metric, by_data=args.by_data)
    records = select_records(records, where)
    comparison = compare(records, baseline=args.baseline, metric=args.metric, alpha=args.alpha)
    quiet = args.json or args.csv  # stdout holds the table and nothing else
    if not quiet:
        console.print(f"runs used: {comparison_header(comparison, records)}", highlight=False, markup=False)
    if quiet:
        from ablate.report.render import verdict_table
        from ablate.report.tables import strict_json

        table = verdict_table(comparison, unadjusted=True)
        if args.csv:
            print(table.to_csv(), end="")
        else:
            print(strict_json({"runs_used": comparison_header(comparison, records), "rows": table.to_records(),
                               "warnings": comparison.warnings}))
    else:
        # scipy loads only when a table is printed
        from ablate.report.render import print_comparison

        print_comparison(comparison, console, wide=args.wide)
    label = args.group or (f"runs-{len(args.run_ids)}" if args.run_ids else (args.experiment or "ablate"))
    # another metric is another question: its report goes beside the val_loss one, not over it
    suffix = "" if args.metric == "val_loss" else f"-{args.metric}"
    out = Path(args.out) if args.out else default_report_dir(label + suffix)
    if args.no_log:
        from ablate.report import write_report

        paths = write_report(comparison, records, out)
    else:  # a group's report goes to the group's own parent run; other comparisons get one of their own
        paths = log_report(comparison, records, out, tracking_uri=args.tracking_uri, experiment=args.experiment,
                           name=args.group or f"compare {label}", artifact_path=f"report{suffix}")
    if not quiet:
        console.print(f"report: {', '.join(str(p) for p in paths)}", highlight=False, markup=False)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("compare", help="verdict table: each variant vs the baseline, paired by seed")
    p.add_argument("run_ids", nargs="*", help="MLflow run ids (default: every ablate run of the experiment/group)")
    add_tracking_flags(p, run=False)
    p.add_argument("--group", default=None, help="compare the runs of this group (`ablate run --group`)")
    p.add_argument("--budget", default=None, help="only runs with this budget, as recorded (e.g. 200steps)")
    p.add_argument("--dims", default=None, help="only runs with these dims, d_model x layers x heads @ context "
                                                "(e.g. 64x2x4@32)")
    p.add_argument("--batch", default=None, help="only runs with this batch size x accumulation (e.g. 4x1)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only runs whose fairness KEY (budget, data, tokenizer, eval_batches, dims, batch) "
                        "equals VALUE, as the runs-used line shows it (data and eval_batches are fingerprints); "
                        "repeatable, and every filter must hold")
    p.add_argument("--metric", default="val_loss", type=_metric,
                   help="val_loss | val_bpb (lower is better) | a task accuracy: acc, acc_len<L>, acc_longer, "
                        "acc_op_add|sub|mul|div (higher is better)")
    p.add_argument("--by-data", action="store_true",
                   help="the data spec is part of the variant ('<variant> @ <data>'): compare formats of the "
                        "same problems, e.g. task:addition(reverse=true) vs reverse=false")
    p.add_argument("--baseline", default=None, help="baseline variant (default: 'baseline')")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (Holm-corrected)")
    p.add_argument("--out", default=None, help="folder for report.md and figures (default reports/<name>, or "
                                                     "reports/<name>-<metric> for a metric other than val_loss)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    p.add_argument("--wide", action="store_true", help="one table with every column (needs ~180 columns)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the verdict table as JSON (nothing else on stdout)")
    out.add_argument("--csv", action="store_true", help="print the verdict table as CSV, a header row first (nothing else on stdout)")
    p.set_defaults(func=cmd_compare)
