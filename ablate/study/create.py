"""Creating a study once, before any worker: preflight, Optuna studies, MLflow parent runs, the queue."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.urls import absolute_sqlite, redact
from ablate.study.context import Context, _quiet_optuna, tune_study_name
from ablate.study.progress import best_settings
from ablate.study.queue import compare_points, ensure_grid, tune_points
from ablate.study.spec import StudySpec, compose_variant

def preflight(spec: StudySpec, limit: int = 64) -> int:
    """Resolve every variant the study will train (dims, data, its number of steps under the budget, which
    must hold one step and more than a warmup given in steps) before anything is created or trained."""
    from ablate.accounting import cost
    from ablate.metrics import is_accuracy
    from ablate.model import build_model
    from ablate.optim import check_warmup
    from ablate.tasks import TaskData
    from ablate.train import prepare_run, row_width

    from ablate.optim import pick_device

    pick_device(spec.config.device)  # `--set device=cuda` without CUDA: before the study is made, not in trial 0
    if spec.protocol == "search":
        candidates = [compose_variant(b, dict(zip(spec.slots, picks))) for b in spec.variants
                      for picks in itertools.product(*spec.slots.values())]
    else:
        candidates = list(spec.variants)
    seen = list(dict.fromkeys(candidates))[:limit]
    for variant in seen:
        configs = [spec.config.replace(**spec.recipes.get(variant, {}), variant=variant, seed=spec.seeds[0])]
        if spec.pretrain is not None:  # pretrain-then-finetune: the pretraining data (decontaminated) too
            from ablate.study.stages import stage1_config

            configs.insert(0, stage1_config(spec, variant, spec.seeds[0]))
        built = []
        for config in configs:
            try:
                resolved, dims, budget, data, _, _ = prepare_run(config)
                per_step = config.batch_size * config.grad_accum * row_width(data, dims.context)
                flops = cost(build_model(resolved, dims, device="meta")).flops_per_token
                check_warmup(config, budget.total_steps(per_step, flops))
            except AblateError as err:
                raise AblateError(f"{spec.path}: variant {variant}: {err}") from None
            built.append(dims)
        if len(built) == 2 and built[0] != built[1]:  # the finetune arm loads the pretrained weights
            differ = ", ".join(f"{f} {getattr(built[0], f)} vs {getattr(built[1], f)}"
                               for f in ("d_model", "n_layers", "n_heads", "context", "vocab_size")
                               if getattr(built[0], f) != getattr(built[1], f))
            fix = (f"give both stages the same sizes (e.g. context = {max(built[0].context, built[1].context)} at "
                   "the top level)" if built[0].vocab_size == built[1].vocab_size else
                   "the two stages need one tokenizer (a task has its own tokens: pretrain on a task too, or "
                   "finetune on text)")
            raise AblateError(f"{spec.path}: variant {variant}: pretraining and finetuning build different models "
                              f"({differ}), so the finetune arm could not load the pretrained weights; {fix}")
        if is_accuracy(spec.metric) and not isinstance(data, TaskData):  # the runs would train, then have no metric
            raise AblateError(f"{spec.path}: metric {spec.metric!r} is a task's accuracy and data {config.data!r} is "
                              "not a task; use metric = \"val_loss\" (or val_bpb), or data = \"task:...\"")
    return len(seen)


def create(ctx: Context, fresh: bool = False) -> dict[str, Any]:
    """Create the study (once, before any worker) or check that the existing one matches the file.

    Makes the Optuna studies, the MLflow parent run(s) and the queue of grid trials; returns the
    main study's user attributes. Two processes that create the same study on one machine (a journal or
    SQLite file) take turns, so the study gets one MLflow parent run.
    """
    with _one_at_a_time(ctx.storage_url):
        return _create(ctx, fresh)


@contextmanager
def _one_at_a_time(storage_url: str):
    """An exclusive lock on a local storage file (flock: independent of SQLite's and Optuna's own locks)."""
    path = storage_url[len("sqlite:///"):].split("?", 1)[0] if storage_url.startswith("sqlite:///") else (
        storage_url if "://" not in storage_url else None)
    if not path or path == ":memory:":  # a database server: create the study from one process (docs/studies.md)
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def data_key(spec: StudySpec) -> str:
    """The study's data as its runs' fairness key ``data`` holds it: the corpus's fingerprint (its contents and
    tokenizer), or a task's held-out problems'."""
    from ablate.data.prepare import content_key
    from ablate.run_inputs import prepare_run

    return content_key(prepare_run(spec.config)[3].meta)  # not its path: a moved checkout is the same data


def _create(ctx: Context, fresh: bool) -> dict[str, Any]:
    import optuna

    _quiet_optuna()
    spec = ctx.spec
    if fresh:
        for name in ctx.stage_names():
            try:
                optuna.delete_study(study_name=name, storage=ctx.storage)
            except KeyError:
                pass
    main = ctx.create_study(spec.name)
    attrs = main.user_attrs
    ctx.adopt_tracking(attrs)
    data = data_key(spec)
    if "ablate.identity" in attrs:
        if changed := settings_changed(spec, attrs):
            raise AblateError(f"study {spec.name!r} in {ctx.storage_url} was made with other settings "
                              f"({changed}); keep the file as it was, run these settings as a "
                              f"new study with --name NEW, or start over with --fresh")
        if attrs.get("ablate.data", data) != data:  # the same path, other contents: its runs would not pair
            raise AblateError(f"study {spec.name!r} was made on other data: {spec.config.data} has changed since "
                              f"(fingerprint {attrs['ablate.data'][:12]} then, {data[:12]} now; a relative path is "
                              "read from the folder you run in); restore it, run it as a new study with --name NEW, "
                              "or start over with --fresh")
    else:
        main.set_user_attr("ablate.identity", spec.identity())
        main.set_user_attr("ablate.fingerprint", spec.fingerprint())
        main.set_user_attr("ablate.file", str(spec.path))
        main.set_user_attr("ablate.protocol", spec.protocol)
        main.set_user_attr("ablate.created", time.strftime("%Y-%m-%d %H:%M:%S"))
    if "ablate.data" not in attrs:
        main.set_user_attr("ablate.data", data)
    if "ablate.mlflow_parent" not in attrs:
        parent = _create_parent(ctx)
        main.set_user_attr("ablate.mlflow_parent", parent)
        main.set_user_attr("ablate.tracking_uri", redact(absolute_sqlite(ctx.tracking_uri)))  # never a password
        main.set_user_attr("ablate.experiment", ctx.experiment or "ablate")
        attrs = ctx.main().user_attrs
        if attrs["ablate.mlflow_parent"] != parent:  # another process created the study meanwhile
            ctx.client().delete_run(parent)
    attrs = ctx.main().user_attrs
    if spec.protocol == "compare":
        ensure_grid(main, spec, "compare", compare_points(spec))
    elif spec.protocol == "tune-then-compare":
        if spec.tune_is_grid:
            ensure_grid(ctx.create_study(tune_study_name(spec)), spec, "tune", tune_points(spec))
        else:
            for v in spec.variants:
                ctx.create_study(tune_study_name(spec, v))
        if "ablate.mlflow_tune_parent" not in attrs:
            tune_parent = _create_parent(ctx, parent=attrs["ablate.mlflow_parent"], stage="tune")
            main.set_user_attr("ablate.mlflow_tune_parent", tune_parent)
            attrs = ctx.main().user_attrs
        best = best_settings(ctx, require_complete=True)
        if best is not None:
            ensure_grid(main, spec, "compare", compare_points(spec, best))
    elif spec.pretrain is not None:
        from ablate.study.stages import create_stages

        attrs = create_stages(ctx, main, attrs, _create_parent)
    return attrs


def settings_changed(spec, attrs: dict[str, Any]) -> str:
    """How ``spec``'s settings differ from those the study was made with (its ``ablate.identity``), or ""
    when they agree."""
    identity = _as_set(json.loads(json.dumps(spec.identity())))
    old = _as_set(attrs.get("ablate.identity", {}))
    if "plugins" not in old:  # made before plugin code was part of a study's identity: nothing to compare with
        identity.pop("plugins", None)
    if old == identity:
        return ""
    was, now = old.get("variants"), identity.get("variants")
    if (identity.get("protocol") != "search" and isinstance(was, list) and isinstance(now, list) and was and now
            and was[0] != now[0] and sorted(was) == sorted(now)):  # the same variants, another baseline
        rest = _diff({**old, "variants": None}, {**identity, "variants": None})
        return "; ".join(x for x in (f"baseline: {was[0]!r} -> {now[0]!r} (ablate compare --baseline "
                                     f"{now[0]} reads its runs against another baseline)", rest) if x)
    return _diff(old, identity) or "recorded differently"


def _as_set(identity: dict[str, Any]) -> dict[str, Any]:
    """A comparison's variants are its baseline (listed first) and a set: listing the others in another order is
    the same study; another baseline is not."""
    variants = identity.get("variants")
    if identity.get("protocol") != "search" and isinstance(variants, list) and variants:
        return {**identity, "variants": [variants[0], *sorted(variants[1:])]}
    return identity


def _diff(old: dict, new: dict, prefix: str = "") -> str:
    parts = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _diff(a, b, f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        elif a != b:
            parts.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return "; ".join(parts)


def _create_parent(ctx: Context, parent: str | None = None, stage: str | None = None) -> str:
    """A new MLflow parent run for the study (or one of its stages, nested under the study's)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from ablate.track import code_version, find_runs, get_experiment_id

    spec = ctx.spec
    try:
        client = ctx.client()
        exp_id = get_experiment_id(client, ctx.experiment or "ablate", ctx.tracking_uri)
    except AblateError:
        raise
    except Exception as err:
        raise AblateError(f"cannot use MLflow tracking URI {ctx.tracking_uri!r}: {err}; "
                          "fix --tracking-uri / MLFLOW_TRACKING_URI") from None
    tags = {"ablate.kind": "study" if stage is None else "stage", "ablate.study": spec.name,
            "ablate.protocol": spec.protocol, "ablate.study_file": str(spec.path),
            "ablate.code_version": code_version(), "ablate.metric": spec.metric}
    if stage is None:
        # the newest study of this name owns the group; older ones keep their runs under another label
        for old in find_runs(client, [exp_id], {"ablate.group": spec.name}, max_results=100):
            client.set_tag(old.info.run_id, "ablate.group", f"{spec.name}~{old.info.run_id[:8]}")
        tags["ablate.group"] = spec.name
        tags["mlflow.note.content"] = spec.description or f"ablate study {spec.name} ({spec.protocol})"
        run_name = f"study {spec.name}"
    else:
        tags[MLFLOW_PARENT_RUN_ID] = parent
        tags["ablate.stage"] = stage
        run_name = f"{spec.name} · {'lr tuning' if stage == 'tune' else stage}"
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
