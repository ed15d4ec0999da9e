"""The `ablate` command line. User errors print one line and exit 2; bugs keep their traceback."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ablate.errors import AblateError

# wide tables when writing to a file or pipe (rich would otherwise assume 80 columns)
console = Console() if sys.stdout.isatty() else Console(width=200)


# ---------------------------------------------------------------------------- registry commands
def cmd_list(args) -> int:
    from ablate.presets import ARCHITECTURES, SIZES
    from ablate.registry import SLOTS, all_specs

    specs = all_specs(args.pattern)
    if args.pattern and not specs:
        raise AblateError(f"nothing matches {args.pattern!r}; slots are {', '.join(SLOTS)}, or use a pattern like 'rope*'")
    table = Table(title="components", show_lines=False)
    for col in ("slot", "name", "summary", "paper", "origin"):
        table.add_column(col, overflow="fold")
    for s in specs:
        table.add_row(s.slot, s.name, s.summary, s.paper, s.origin)
    console.print(table)
    if args.pattern is None:
        presets = Table(title="architecture presets")
        presets.add_column("name")
        presets.add_column("description", overflow="fold")
        for name, (_, desc) in ARCHITECTURES.items():
            presets.add_row(name, desc)
        console.print(presets)
        sizes = Table(title="size presets")
        for col in ("name", "d_model", "layers", "heads", "context", "vocab", "description"):
            sizes.add_column(col)
        for name, s in SIZES.items():
            sizes.add_row(name, str(s.d_model), str(s.n_layers), str(s.n_heads), str(s.context),
                          str(s.vocab_size or "tokenizer's"), s.description)
        console.print(sizes)
    return 0


def cmd_describe(args) -> int:
    from ablate.presets import ARCHITECTURES, SIZES
    from ablate.registry import lookup

    if args.name in ARCHITECTURES:
        from ablate.variant import parse_variant

        source, desc = ARCHITECTURES[args.name]
        variant = parse_variant(args.name)
        console.print(f"[bold]{args.name}[/] (architecture preset): {desc}")
        console.print(f"variant: {source or 'baseline'}  →  canonical name {variant.name}, hash {variant.hash}")
        return 0
    if args.name in SIZES:
        console.print(f"[bold]{args.name}[/] (size preset): {SIZES[args.name]}")
        return 0
    spec = lookup(args.name)
    console.print(f"[bold]{spec.name}[/] ({spec.slot}) — {spec.summary}")
    console.print(f"paper:    {spec.paper}")
    console.print(f"origin:   {spec.origin}")
    console.print(f"class:    {spec.cls.__module__}.{spec.cls.__qualname__}")
    fields = dataclasses.fields(spec.options)
    opts = ", ".join(f"{f.name}={f.default!r}" for f in fields) or "none"
    console.print(f"options:  {opts}")
    if spec.provides:
        console.print(f"provides: {', '.join(sorted(spec.provides))}")
    if spec.needs:
        console.print(f"needs:    {', '.join(sorted(spec.needs))}")
    for other, why in spec.conflicts.items():
        console.print(f"conflicts with {other}: {why}")
    doc = inspect.cleandoc(spec.cls.__doc__ or "")
    if "\n" in doc:
        console.print()
        console.print(doc, markup=False, highlight=False)
    return 0


def inspect_variant(variant_text: str, size_name: str, vocab_size: int | None, kv_dtype: str) -> dict:
    from ablate.accounting import cost
    from ablate.model import build_model, make_dims
    from ablate.presets import get_size
    from ablate.variant import parse_variant

    variant = parse_variant(variant_text)
    size = get_size(size_name)
    dims = make_dims(size, variant, vocab_size or size.vocab_size or 50257)
    model = build_model(variant, dims, device="meta")
    return {
        "variant": variant.name,
        "hash": variant.hash,
        "size": size_name,
        "resolved": variant.to_dict(),
        "dims": dataclasses.asdict(dims),
        "cost": cost(model, kv_dtype).to_dict(),
    }


def cmd_inspect(args) -> int:
    info = inspect_variant(args.variant, args.size, args.vocab_size, args.kv_dtype)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    console.print(f"[bold]{info['variant']}[/]  (hash {info['hash']}, size {info['size']})")
    slots = Table(title="resolved variant")
    slots.add_column("slot")
    slots.add_column("component")
    slots.add_column("options")
    for slot, values in info["resolved"].items():
        values = dict(values)
        name = values.pop("component", "")
        slots.add_row(slot, name, ", ".join(f"{k}={v}" for k, v in values.items()))
    console.print(slots)
    d, c = info["dims"], info["cost"]
    table = Table(title="accounting")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("dims", f"d_model {d['d_model']}, layers {d['n_layers']}, heads {d['n_heads']}, "
                  f"context {d['context']}, vocab {d['vocab_size']}")
    table.add_row("parameters", f"{c['params']:,}")
    table.add_row("non-embedding parameters", f"{c['non_embedding_params']:,}")
    table.add_row("training FLOPs/token (6N + 12·L·H·Q·T)", f"{c['flops_per_token']:,}")
    table.add_row("  of which attention (12·L·H·Q·T)", f"{c['attention_flops_per_token']:,}")
    table.add_row(f"KV-cache bytes/token ({c['kv_dtype']})", f"{c['kv_cache_bytes_per_token']:,}")
    console.print(table)
    return 0


# ------------------------------------------------------------------------------- run and sample
def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field; defaults stay None so only given flags override the file."""
    from ablate.config import FIELD_HELP, RunConfig

    p.add_argument("--config", help="TOML file of settings (defaults < file < flags)")
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = FIELD_HELP.get(f.name, "") + f" (default {f.default!r})"
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            p.add_argument(flag, type=type(f.default), default=None, help=help_text, dest=f.name)


def config_from_args(args) -> "RunConfig":
    from ablate.config import RunConfig, make_config

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)}
    return make_config(args.config, **given)


def print_summary(result) -> None:
    table = Table(title=f"{result.variant} · seed {result.seed} · {result.status}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("final val loss", f"{result.final.get('val_loss', float('nan')):.4f}"),
        ("final val bits/byte", f"{result.final.get('val_bpb', float('nan')):.4f}"),
        ("parameters", f"{result.cost['params']:,}"),
        ("FLOPs/token", f"{result.cost['flops_per_token']:,}"),
        ("KV-cache bytes/token", f"{result.cost['kv_cache_bytes_per_token']:,}"),
        ("steps / tokens", f"{result.steps:,} / {result.tokens:,}"),
        ("tokens/s", f"{result.tokens_per_s:,.0f}"),
        ("train time / wall time", f"{result.train_seconds:.1f}s / {result.wall_seconds:.1f}s"),
    ]
    if "mfu" in result.extra:
        rows.append(("MFU", f"{result.extra['mfu']:.1%}"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if result.message:
        console.print(f"[yellow]{result.status}: {result.message}[/]")
    console.print(f"run dir: {result.run_dir}")


def cmd_run(args) -> int:
    from ablate.live import LiveView
    from ablate.train import train

    config = config_from_args(args)
    callbacks = [LiveView(quiet=args.json)]
    tracker = make_tracker(args)
    if tracker is not None:
        callbacks.append(tracker)
    try:
        result = train(config, callbacks, resume=args.resume)
    except KeyboardInterrupt:
        print("ablate: interrupted; the checkpoint is saved, continue with the same command and --resume", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({k: v for k, v in result.to_dict().items() if k != "history"}, default=str))
    else:
        print_summary(result)
    return 0 if result.status in ("finished", "pruned") else 1


def make_tracker(args):
    """The MLflow tracker for this run, or None with --no-track."""
    if getattr(args, "no_track", False):
        return None
    from ablate.track import MLflowTracker

    return MLflowTracker(tracking_uri=args.tracking_uri, experiment=args.experiment, group=args.group,
                         log_checkpoint=not args.no_log_checkpoint)


def cmd_sample(args) -> int:
    import torch

    from ablate.train import load_checkpoint_model

    model, config, tokenizer = load_checkpoint_model(args.run)
    prompt = tokenizer.encode(args.prompt) if args.prompt else [tokenizer.eot if tokenizer.eot is not None else 0]
    if not prompt:
        raise AblateError("the prompt encodes to no tokens; give a longer --prompt")
    g = torch.Generator().manual_seed(args.seed)
    out = model.generate(torch.tensor([prompt]), args.tokens, temperature=args.temperature,
                         top_k=args.top_k, generator=g)
    print(tokenizer.decode(out[0].tolist()))
    return 0


# ------------------------------------------------------------------------------- compare and ui
def cmd_compare(args) -> int:
    from ablate.compare import compare, default_report_dir, load_records, log_report

    records = load_records(tracking_uri=args.tracking_uri, experiment=args.experiment, group=args.group,
                           run_ids=args.run_ids, metric=args.metric)
    comparison = compare(records, baseline=args.baseline, metric=args.metric, alpha=args.alpha)
    print_comparison(comparison)
    label = args.group or (f"runs-{len(args.run_ids)}" if args.run_ids else (args.experiment or "ablate"))
    out = Path(args.out) if args.out else default_report_dir(label)
    if args.no_log:
        from ablate.report import write_report

        paths = write_report(comparison, records, out)
    else:  # a group's report goes to the group's own parent run; other comparisons get one of their own
        paths = log_report(comparison, records, out, tracking_uri=args.tracking_uri, experiment=args.experiment,
                           name=args.group or f"compare {label}")
    console.print(f"report: {', '.join(str(p) for p in paths)}")
    return 0


def print_comparison(comparison) -> None:
    from ablate.report import render_table

    console.print(render_table(comparison))
    console.print(f"noise floor (baseline seed-to-seed sd): {comparison.noise_floor:.4g} "
                  f"over {comparison.noise_floor_n} seeds")
    for warning in comparison.warnings:
        console.print(f"[yellow]warning:[/] {warning}", markup=True, highlight=False)


def cmd_ui(args) -> int:
    import signal
    import subprocess

    from ablate.track import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", "1"]
    if uri.startswith("sqlite:///"):
        cmd += ["--default-artifact-root", (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()]
    proc = subprocess.Popen(cmd, start_new_session=True)
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)

    def stop(*_):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop()
        proc.wait(timeout=10)
        return 0


# ------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ablate", description="architecture ablations for GPT-style models")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                        help="load a local plugin file (repeatable); installed plugins load automatically "
                             "unless ABLATE_NO_PLUGINS=1")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered components (optionally one slot or a pattern like 'rope*')")
    p.add_argument("pattern", nargs="?")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("describe", help="describe a component, architecture preset or size preset")
    p.add_argument("name")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("inspect", help="resolve a variant and print its parameters, FLOPs and KV cache (no training)")
    p.add_argument("variant")
    p.add_argument("--size", default="gpt2-small", help="size preset (default gpt2-small; see `ablate list`)")
    p.add_argument("--vocab-size", type=int, help="vocabulary when the size has none (default 50257)")
    p.add_argument("--kv-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16", "int8"])
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("run", help="train one variant under a budget")
    add_config_flags(p)
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--json", action="store_true", help="print the result as JSON (no live view)")
    add_tracking_flags(p)
    p.add_argument("--no-log-checkpoint", action="store_true", help="do not upload the final checkpoint to MLflow")
    p.add_argument("--group", default=None, help="nest the MLflow run under a parent run of this name (for `compare --group`)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sample", help="generate text from a run's checkpoint (KV-cached)")
    p.add_argument("--run", required=True, help="run directory (printed by `ablate run`)")
    p.add_argument("--prompt", default="")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("compare", help="verdict table: each variant vs the baseline, paired by seed")
    p.add_argument("run_ids", nargs="*", help="MLflow run ids (default: every ablate run of the experiment/group)")
    add_tracking_flags(p, run=False)
    p.add_argument("--group", default=None, help="compare the runs of this group (`ablate run --group`)")
    p.add_argument("--metric", default="val_loss", choices=["val_loss", "val_bpb"])
    p.add_argument("--baseline", default=None, help="baseline variant (default: 'baseline')")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (Holm-corrected)")
    p.add_argument("--out", default=None, help="folder for report.md and figures (default reports/<name>)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("ui", help="start the MLflow UI on loopback for the same tracking store")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    from ablate.study_cli import add_study_commands

    add_study_commands(sub)
    return parser


def add_tracking_flags(p: argparse.ArgumentParser, run: bool = True) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default 'ablate')")
    if run:
        p.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from ablate.plugins import load_file

        for path in args.plugin:
            load_file(path)
        return args.func(args) or 0
    except AblateError as err:
        print(f"ablate: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("ablate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
