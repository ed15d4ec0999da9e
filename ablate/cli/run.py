"""`ablate run` and `ablate sample`: train one variant under a budget; generate from its checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
from pathlib import Path
import sys

from rich.table import Table

from ablate.cli.console import console
from ablate.errors import AblateError
from ablate.format import num

DEFAULT_SAMPLE_TOKENS = 200  # `ablate sample` on a text run, when --tokens is not given


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


def config_from_args(args):
    from ablate.config import RunConfig, make_config

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)}
    config = make_config(args.config, **given)
    if config.data.strip().lower().startswith("task:") and config.tokenizer.strip().lower() != "char":
        given = f"--tokenizer {config.tokenizer}" if args.tokenizer else f"tokenizer = {config.tokenizer!r} in {args.config}"
        fix = "leave --tokenizer out" if args.tokenizer else f"remove it from {args.config} for task runs"
        raise AblateError(f"{given} does not apply to {config.data}: a task has its own tokenizer (a token per "
                          f"character of its problems); {fix}")
    return config


def print_summary(result) -> None:
    table = Table(title=f"{result.variant} · seed {result.seed} · {result.status}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("final val loss", num(result.final.get("val_loss"))),
        ("final val bits/byte", num(result.final.get("val_bpb"))),
        ("parameters", f"{result.cost['params']:,}"),
        ("FLOPs/token", f"{result.cost['flops_per_token']:,}"),
        ("KV-cache bytes/token (bf16 cache)", f"{result.cost['kv_cache_bytes_per_token']:,}"),
        ("steps / tokens", f"{result.steps:,} / {result.tokens:,}"),
        ("tokens/s (optimizer steps after the first)", f"{result.tokens_per_s:,.0f}"),
        ("train time (all sessions) / wall time (this one)", f"{result.train_seconds:.1f}s / {result.wall_seconds:.1f}s"),
    ]
    rows[2:2] = [(f"final {k}", f"{v:.1%}") for k, v in result.final.items() if k.startswith("acc")]
    if "mfu" in result.extra:
        from ablate.format import si

        peak = result.extra.get("peak_flops")  # measured in the run, or a known GPU's data-sheet bf16 peak
        rows.append((f"MFU (per device, of {si(peak)}FLOP/s)" if peak else "MFU (per device)", f"{result.extra['mfu']:.1%}"))
    if result.extra.get("decode_tokens_per_s"):
        rows.append(("decode tokens/s (batch 1, KV cache)", f"{result.extra['decode_tokens_per_s']:,.0f}"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if result.message:
        console.print(f"[yellow]{result.status}: {result.message}[/]")
    if result.extra.get("init_from"):
        init = result.extra["init_from"]
        console.print(f"initialised from: {init['run_dir']} ({init['variant']}, seed {init['seed']}, step {init['steps']})")
    console.print(f"run dir: {result.run_dir}", highlight=False, markup=False, soft_wrap=True)  # one line for grep


def cmd_run(args) -> int:
    from ablate.live import LiveView
    from ablate.train import CHECKPOINT, run_dir_for, train

    if args.resume and args.force:
        raise AblateError("--resume continues a run and --force trains it over again from step 0; give one of them")
    unused_uri = args.tracking_uri and not getattr(args, "init_from", None)  # (it also finds an --init-from run id)
    if args.no_track and (args.group or args.experiment or unused_uri):
        flag = "--group" if args.group else "--experiment" if args.experiment else "--tracking-uri"
        raise AblateError(f"{flag} files the run in MLflow, which --no-track turns off; leave one of them out")
    config = config_from_args(args)
    if args.threads is not None:
        if args.threads < 1:
            raise AblateError(f"--threads must be at least 1, got {args.threads}; e.g. --threads 1")
        import torch

        torch.set_num_threads(args.threads)
    from ablate.optim import pick_device

    pick_device(config.device)  # a device this machine lacks is an error, also when the run finished elsewhere
    from ablate.train import changed_data_error, data_changed, finished_result

    done = None if args.force else finished_result(config)
    if done is not None and data_changed(config, done.run_dir):
        raise changed_data_error(config, done.run_dir)
    if done is not None:  # the same (config, seed) has finished: report it, train nothing, log nothing
        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 says it for the run
            return 0
        _report(args, done)
        group = getattr(args, "group", None)
        where = (f" A finished run stays in the group it was trained in; if that was not {group}, pass --force to "
                 f"train it again in {group}" if group else " Pass --force to train it again")
        if group and not getattr(args, "no_track", False):
            trained_in = _group_of(done.run_dir, args)
            if trained_in is not None:
                where = (f" It is in the group {group} already." if trained_in == group else
                         f" It stays in {f'the group {trained_in}' if trained_in else 'no group'}, where it was "
                         f"trained; pass --force to train it again in {group}")
        print(f"ablate: this run has finished already ({done.run_dir}); its result is above.{where}", file=sys.stderr)
        return 0
    if not args.resume and not args.force:
        _refuse_to_start_over(config)
    if args.resume and not args.force and os.environ.get("RANK", "0") == "0":
        _say_if_nothing_to_resume(config)
    callbacks = [LiveView(quiet=args.json)]
    tracker = make_tracker(args)
    if tracker is not None:
        callbacks.append(tracker)
    saved_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if config.init_from and args.tracking_uri:  # an --init-from run id is looked up in this store
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    terminated = []

    def on_sigterm(signum, frame):  # what job schedulers send: stop like Ctrl-C (checkpoint, KILLED run)
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = train(config, callbacks, resume=args.resume and not args.force)
    except KeyboardInterrupt:
        how = "terminated (SIGTERM)" if terminated else "interrupted"
        saved = run_dir_for(config) / CHECKPOINT
        print(f"ablate: {how}; the checkpoint is saved, continue with the same command and --resume" if saved.is_file()
              else f"ablate: {how} before its first checkpoint; run the same command again to start it", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if saved_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_uri
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 prints for the run
        return 0 if result.status in ("finished", "pruned") else 1
    _report(args, result)
    return 0 if result.status in ("finished", "pruned") else 1


def _report(args, result) -> None:
    if args.json:
        from ablate.report.tables import json_safe

        summary = {k: v for k, v in result.to_dict().items() if k != "history"}
        print(json.dumps(json_safe(summary), default=str))  # strict JSON: a missing number is null, never NaN
    else:
        print_summary(result)


def _refuse_to_start_over(config) -> None:
    """A run directory that holds the checkpoint of an unfinished run is continued with --resume or started
    over with --force, never overwritten from step 0 by the same command without either."""
    from ablate.train import CHECKPOINT, run_dir_for

    run_dir = run_dir_for(config)
    if not (run_dir / CHECKPOINT).exists():
        return
    try:
        summary = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        summary = {}
    status, steps = (summary.get("status"), summary.get("steps")) if isinstance(summary, dict) else (None, None)
    if status in ("diverged", "pruned"):  # a result: training it again gives it again
        raise AblateError(f"this run ended {status} ({run_dir}); pass --force to train it again")
    at = f" at step {steps}" if isinstance(steps, int) else ""
    raise AblateError(f"this run was stopped{at} and its checkpoint is in {run_dir}; continue it with --resume, "
                      "or pass --force to start it over")


def _group_of(run_dir, args) -> str | None:
    """The group a finished run was logged in ("" for none), from its MLflow run; None when unknown."""
    try:
        from ablate.track import DEFAULT_EXPERIMENT, client_for, find_runs
        from ablate.urls import resolve_tracking_uri, sqlite_store_missing

        if sqlite_store_missing(resolve_tracking_uri(args.tracking_uri)):
            return None
        client, _ = client_for(args.tracking_uri)
        exp = client.get_experiment_by_name(args.experiment or DEFAULT_EXPERIMENT)
        runs = find_runs(client, [exp.experiment_id], {"ablate.run_dir": str(run_dir)}, max_results=10) if exp else []
    except Exception:  # noqa: BLE001 - a hint, not worth failing a finished run's report
        return None
    if not runs:
        return None
    tags = runs[0].data.tags
    return tags.get("ablate.in_group") or (f"of study {tags['ablate.study']}" if tags.get("ablate.study") else "")


def _say_if_nothing_to_resume(config) -> None:
    """--resume where this (config, seed) has no checkpoint trains from step 0: say so, since a typo in the
    seed or the budget names another run directory."""
    from ablate.train import CHECKPOINT, run_dir_for

    run_dir = run_dir_for(config)
    if not (run_dir / CHECKPOINT).exists():
        print(f"ablate: nothing to resume in {run_dir} (no checkpoint), so this run starts at step 0; a run "
              "with other settings (seed, budget, a plugin's code, ...) has its own directory", file=sys.stderr)


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

    check_sampling(args)
    model, config, tokenizer = load_checkpoint_model(_run_dir(args))
    from ablate.tasks import answer_prompt, is_task_spec, parse_task

    if is_task_spec(config.data):  # a task run answers the problem typed (greedy, up to the end token)
        if not args.prompt:
            raise AblateError("a task run answers a problem: give one, e.g. --prompt \"123+456=\"")
        task = parse_task(config.data)
        completion, value = answer_prompt(model, task, args.prompt, max_new=args.tokens)
        problem = task.read_problem(args.prompt)
        truth = task.value(problem)
        verdict = ("right" if value == truth else f"wrong: {problem} = {_written(truth)}") if value is not None \
            else f"no answer: {_why_no_answer(model, task, problem, completion, args.tokens)}; {problem} = {_written(truth)}"
        longer = f", operands longer than the {task.digits} digits trained on" if problem.length > task.digits else ""
        print(f"{task.render(problem)[0]}{completion}   ({'answer: ' + _written(value) + ', ' if value is not None else ''}"
              f"{verdict}{longer})")
        return 0
    prompt = tokenizer.encode(args.prompt) if args.prompt else [tokenizer.eot if tokenizer.eot is not None else 0]
    if not prompt:
        raise AblateError("the prompt encodes to no tokens; give a longer --prompt")
    g = torch.Generator().manual_seed(args.seed)
    out = model.generate(torch.tensor([prompt]), args.tokens or DEFAULT_SAMPLE_TOKENS, temperature=args.temperature,
                         top_k=args.top_k, generator=g)
    print(tokenizer.decode(out[0].tolist()))
    return 0



def _written(value) -> str:
    """A task's value as a reader writes it: ``579``, or ``3 r 2`` for a quotient and remainder."""
    return f"{value[0]} r {value[1]}" if isinstance(value, tuple) else str(value)


def _run_dir(args) -> str:
    """``--run``: a run directory, or an MLflow run id (looked up in --tracking-uri / $MLFLOW_TRACKING_URI;
    the checkpoint is downloaded when the run's folder is not on this machine)."""
    from ablate.init_from import RUN_ID, resolve_parent

    if Path(args.run).exists():
        return args.run
    if not RUN_ID.match(args.run.strip()):
        raise AblateError(f"no run directory {args.run} (and it is not an MLflow run id, which is 32 hex characters); "
                          "pass the run directory printed by `ablate run`, or its MLflow run id")
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    try:
        return str(resolve_parent(args.run, "data/cache").run_dir)
    except AblateError as err:
        raise AblateError(str(err).replace("--init-from", "--run", 1)) from None


def _why_no_answer(model, task, problem, completion: str, tokens: int | None) -> str:
    """Why a task run's completion reads as no answer: cut off by --tokens, by the run's context (which
    generation never passes), or malformed (it ended, but not as an answer)."""
    from ablate.tasks import END
    from ablate.tasks.accuracy import answer_room

    if END in completion:
        return "malformed"
    used = len(task.tokenizer.encode(completion))
    prompt = len(task.tokenizer.encode(task.render(problem)[0]))
    room = answer_room(model, prompt)
    if tokens is not None and used >= tokens and tokens < room:
        return f"cut off after --tokens {tokens}"
    if used >= room:
        return (f"cut off at the run's context of {model.dims.context} tokens (the problem takes {prompt}); "
                "ask a shorter problem")
    return "malformed"


def check_sampling(args) -> None:
    """--tokens >= 1, --temperature finite and > 0, --top-k >= 1: checked before the checkpoint is loaded."""
    if args.tokens is not None and args.tokens < 1:
        raise AblateError(f"--tokens must be at least 1, got {args.tokens}; e.g. --tokens 200")
    if not math.isfinite(args.temperature) or args.temperature <= 0:
        raise AblateError(f"--temperature must be a finite number above 0, got {args.temperature}; e.g. --temperature 0.8")
    if args.top_k is not None and args.top_k < 1:
        raise AblateError(f"--top-k must be at least 1, got {args.top_k}; e.g. --top-k 40 (leave it out to sample from all)")


def add_tracking_flags(p: argparse.ArgumentParser, run: bool = True) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default 'ablate')")
    if run:
        p.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def add_commands(sub) -> None:
    p = sub.add_parser("run", help="train one variant under a budget")
    add_config_flags(p)
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--force", action="store_true",
                   help="train again even when this (config, seed) has finished (default: report its result)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (no live view)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest for tiny models on a busy machine)")
    add_tracking_flags(p)
    p.add_argument("--no-log-checkpoint", action="store_true", help="do not upload the final checkpoint to MLflow")
    p.add_argument("--group", default=None, help="nest the MLflow run under a parent run of this name (for `compare --group`)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sample", help="generate text from a run's checkpoint (KV-cached)")
    p.add_argument("--run", required=True, help="run directory (printed by `ablate run`) or its MLflow run id")
    p.add_argument("--tracking-uri", default=None, help="where to look an MLflow run id up (default $MLFLOW_TRACKING_URI "
                                                        "or sqlite:///mlflow.db)")
    p.add_argument("--prompt", default="", help="text to continue (default: start from the end-of-text token, or token 0)")
    p.add_argument("--tokens", type=int, default=None, help=f"tokens to generate (default {DEFAULT_SAMPLE_TOKENS}; a task run answers up to its end token, "
                        "at most this many; never past the run's context)")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature, > 0 (default 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens only (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.set_defaults(func=cmd_sample)
