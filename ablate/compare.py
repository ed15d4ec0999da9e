"""`ablate compare`: read runs from MLflow, build the verdict table, write and log the report.

Call the module for verdicts: ``from ablate import compare; table = compare(group="my-runs")`` (runs
logged with ``ablate run --group my-runs`` or ``train(..., group="my-runs")``), then
``table.row("rope").verdict``; ``baseline=``, ``metric=``, ``alpha=``, ``tracking_uri=`` as the command's
flags, or ``compare(records)`` over ``RunRecord`` objects you built.
"""

from __future__ import annotations

from collections import Counter, defaultdict
import sys
from pathlib import Path

from ablate.errors import AblateError
from ablate.urls import resolve_tracking_uri, sqlite_store_missing
from ablate.metrics import check as check_metric, is_accuracy, lower_is_better
from ablate.report import Comparison, RunRecord, build_comparison, write_report
from ablate.track import (DEFAULT_EXPERIMENT, client_for, find_or_create_parent, find_parent, find_runs,
                          eval_history, get_experiment_id, summary_metric)

METRICS = {"val_loss": "final_val_loss", "val_bpb": "final_val_bpb"}  # and every task accuracy: final_<acc…>
_STATUS = {"finished": "finished", "diverged": "diverged", "interrupted": "interrupted", "pruned": "pruned"}
FAIRNESS_PREFIX = "ablate.fair."
RECIPE = ("lr", "min_lr", "warmup", "schedule", "weight_decay")  # may differ between variants, not between seeds
# bits per byte compare across tokenizers (and so across the token positions of the eval batches)
TOKENIZER_FREE = {"val_bpb": ("tokenizer", "eval_batches")}
# a task accuracy is scored on the evaluation problems, which the data key (the problems fingerprint:
# problem space, split, eval seed, eval problems) pins; the loss batches differ with the answer format
ACCURACY_FREE = ("eval_batches",)


def _free_keys(metric: str) -> tuple[str, ...]:
    return ACCURACY_FREE if is_accuracy(metric) else TOKENIZER_FREE.get(metric, ())


def _record(client, run, metric: str, by_data: bool = False) -> RunRecord | None:
    tags, metrics = run.data.tags, run.data.metrics
    if "ablate.variant" not in tags:
        return None  # a group/parent run or a foreign run
    status = _STATUS.get(tags.get("ablate.status", ""), "failed")
    value = summary_metric(metrics, METRICS.get(metric, f"final_{metric}"), float("nan"))
    curve = eval_history(client, run.info.run_id, metric)
    loss_curve = curve if metric == "val_loss" else eval_history(client, run.info.run_id, "val_loss")
    return RunRecord(
        run_id=run.info.run_id,
        variant=variant_label(tags, by_data),
        loss_curve=loss_curve,
        seed=int(tags.get("ablate.seed", "0")),
        metric=value,
        curve=curve,
        params=int(summary_metric(metrics, "params", 0)),
        flops_per_token=float(summary_metric(metrics, "flops_per_token", 0.0)),
        kv_bytes_per_token=float(summary_metric(metrics, "kv_cache_bytes_per_token", 0.0)),
        tokens_per_s=summary_metric(metrics, "tokens_per_s_overall"),
        decode_tokens_per_s=summary_metric(metrics, "decode_tokens_per_s"),
        code=_code(tags.get("ablate.components", "")),
        status=status,  # a finished run without the metric is excluded as such (build_comparison)
        unigram_entropy=summary_metric(metrics, "unigram_entropy"),
        final_loss=summary_metric(metrics, "final_val_loss"),
        dataset=tags.get("ablate.dataset", ""),
        recipe={k: run.data.params[f"config.{k}"] for k in RECIPE if f"config.{k}" in run.data.params},
        fairness={k[len(FAIRNESS_PREFIX):]: v for k, v in tags.items()
                  if k.startswith(FAIRNESS_PREFIX) and k[len(FAIRNESS_PREFIX):] not in _free_keys(metric)},
    )


def _code(tag: str) -> str:
    """The ``ablate.components`` tag (plugin component -> origin, JSON) as ``scalenorm file sha256:1a2b...``."""
    import json

    try:
        return ", ".join(f"{name} {origin}" for name, origin in json.loads(tag).items()) if tag else ""
    except (ValueError, AttributeError):
        return ""


def variant_label(tags: dict[str, str], by_data: bool = False) -> str:
    """The variant as the table shows it: the initialisation is part of what is compared, so a run
    started from a pretrained parent (``--init-from``) is its own variant, ``<variant> (init: <label>)``,
    whose label names the pretraining recipe (not its seed), and pairs by seed with scratch runs.
    ``by_data`` (``compare --by-data``) makes the data spec part of it too, ``<variant> @ <data>``: runs
    of one architecture on two formats of the same problems (``task:addition(...,reverse=true)`` vs
    ``reverse=false``, whose fairness key ``data`` is equal) become two rows paired by seed."""
    label = tags.get("ablate.init_label")
    name = f"{tags['ablate.variant']} (init: {label})" if label else tags["ablate.variant"]
    return f"{name} @ {tags.get('ablate.dataset', '?')}" if by_data else name


def load_records(*, tracking_uri: str | None = None, experiment: str | None = None, group: str | None = None,
                 parent_run_id: str | None = None, run_ids: list[str] | None = None,
                 metric: str = "val_loss", by_data: bool = False) -> list[RunRecord]:
    """Runs of an experiment, of a group / study (children of its parent run), or given by id.
    ``metric``: val_loss, val_bpb or a task accuracy (:mod:`ablate.metrics`); ``by_data``: see
    :func:`variant_label`."""
    check_metric(metric)
    uri = resolve_tracking_uri(tracking_uri)
    if sqlite_store_missing(uri):  # reading must not create one
        raise AblateError(f"no MLflow store at {uri}; run `ablate run` (or a study) first, or pass --tracking-uri")
    client, uri = client_for(tracking_uri)
    if run_ids:
        runs = []
        for rid in run_ids:
            try:
                runs.append(client.get_run(rid))
            except Exception:
                raise AblateError(f"no MLflow run with id {rid!r} in {uri}") from None
    else:
        name = experiment or DEFAULT_EXPERIMENT
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise AblateError(f"no MLflow experiment {name!r} in {uri}; run `ablate run` first or pass --experiment")
        if group:
            parent_run_id = find_parent(client, exp.experiment_id, group)
            if parent_run_id is None:
                raise AblateError(f"no group {group!r} in experiment {name!r}; runs join one with `ablate run --group`")
        runs = find_runs(client, [exp.experiment_id], {"mlflow.parentRunId": parent_run_id} if parent_run_id else {})
    records = [r for r in (_record(client, run, metric, by_data) for run in runs) if r is not None]
    if not records:
        raise AblateError("no ablate runs found there; check --experiment / --group / run ids")
    return records


FAIRNESS_FLAGS = {"budget": "--budget", "dims": "--dims", "batch": "--batch"}
_NOT_RECORDED = "<not recorded>"


def fairness_groups(records: list[RunRecord]) -> dict[tuple[tuple[str, str], ...], list[RunRecord]]:
    """Records grouped by their fairness settings (a key a run lacks counts as '<not recorded>').
    Keys that legitimately differ for the metric (``TOKENIZER_FREE``) are already left out of
    ``RunRecord.fairness`` by :func:`load_records`."""
    keys = sorted({k for r in records for k in r.fairness})
    groups: dict[tuple[tuple[str, str], ...], list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[tuple((k, r.fairness.get(k, _NOT_RECORDED)) for k in keys)].append(r)
    return dict(groups)


def select_records(records: list[RunRecord], where: dict[str, str]) -> list[RunRecord]:
    """The records whose fairness settings equal every ``key=value`` in ``where``."""
    if not where:
        return records
    known = sorted({k for r in records for k in r.fairness})
    for key in where:
        if key not in known:
            raise AblateError(f"cannot select on {key!r}: the runs record {', '.join(known) or 'no fairness keys'}")
    chosen = [r for r in records if all(r.fairness.get(k, _NOT_RECORDED) == v for k, v in where.items())]
    if not chosen:
        wanted = ", ".join(f"{k}={v}" for k, v in where.items())
        have = "; ".join(f"{k}: {', '.join(sorted({r.fairness.get(k, _NOT_RECORDED) for r in records}))}"
                         for k in where)
        raise AblateError(f"no runs with {wanted}; the runs have {have}")
    return chosen


def require_one_group(records: list[RunRecord]) -> None:
    """Refuse (one line) when the runs differ in a fairness key: no verdict over unfair runs."""
    groups = fairness_groups(records)
    if len(groups) <= 1:
        return
    keys = sorted({k for r in records for k in r.fairness})
    parts, hints = [], []
    for key in keys:
        counts = Counter(r.fairness.get(key, _NOT_RECORDED) for r in records)
        if len(counts) < 2:
            continue
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        parts.append(f"{key} " + " vs ".join(f"{v} ({n} run{'s' if n != 1 else ''})" for v, n in ordered))
        flag = FAIRNESS_FLAGS.get(key)
        hints.append(f"{flag} {ordered[0][0]}" if flag else f"--where {key}={ordered[0][0]}")
    raise AblateError(
        f"no verdict over unfair runs: the runs differ in {'; '.join(parts)} ({len(groups)} groups); "
        f"compare one group: --group NAME, or select with {' '.join(hints)} (or --where KEY=VALUE)")


def compare(records: list[RunRecord], *, baseline: str | None, metric: str, alpha: float) -> Comparison:
    """The verdict table over ``records``; refuses runs that differ in a fairness key
    (:func:`require_one_group`; select a group first with :func:`select_records`)."""
    require_one_group(records)
    variants = sorted({r.variant for r in records})
    if baseline is None:
        baseline = "baseline" if "baseline" in variants else None
        if baseline is None:
            raise AblateError(f"no run of the variant 'baseline'; choose the baseline with --baseline "
                              f"(variants here: {', '.join(variants)})")
    else:
        from ablate.variant import parse_variant

        if baseline not in variants and " @ " in baseline:  # a --by-data label: no other spelling
            raise AblateError(f"baseline {baseline!r} has no runs; the runs contain these variants: "
                              f"{', '.join(variants)}")
        if baseline not in variants:
            baseline = parse_variant(baseline).name  # accept any spelling of the same variant
    return build_comparison(records, baseline, metric, alpha, lower_is_better=lower_is_better(metric))


def log_report(comparison: Comparison, records: list[RunRecord], out_dir: Path, *, tracking_uri: str | None,
               experiment: str | None, parent_run_id: str | None = None, name: str = "comparison",
               artifact_path: str = "report") -> list[Path]:
    """Write report.md and figures to ``out_dir`` and log them to MLflow under the comparison's parent,
    in its ``artifact_path`` folder."""
    paths = write_report(comparison, records, out_dir)
    client, uri = client_for(tracking_uri)
    exp_id = get_experiment_id(client, experiment or DEFAULT_EXPERIMENT, uri)
    run_id = parent_run_id or find_or_create_parent(client, exp_id, name)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    return paths


def default_report_dir(label: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
    return Path("reports") / safe


_LOAD_KEYS = ("tracking_uri", "experiment", "group", "run_ids", "by_data")
_SELECT_KEYS = ("budget", "data", "tokenizer", "eval_batches", "dims", "batch")


class _CallableModule(type(sys)):  # ``from ablate import compare; compare(group="my-runs")`` gives verdicts
    def __call__(self, records: list[RunRecord] | str | None = None, *, baseline: str | None = None,
                 metric: str = "val_loss", alpha: float = 0.05, **where) -> Comparison:
        """The verdict table over ``records`` (a list of ``RunRecord``, or a group's name), or over the tracked
        runs ``load_records`` finds with ``group=``, ``experiment=``, ``tracking_uri=``, ``run_ids=``,
        ``by_data=``; ``budget=``, ``data=``, ``tokenizer=``, ``eval_batches=``, ``dims=``, ``batch=`` select
        the runs whose fairness setting has that value (as ``ablate compare --where``)."""
        unknown = sorted(set(where) - set(_LOAD_KEYS) - set(_SELECT_KEYS))
        if unknown:
            raise TypeError(f"compare() got unexpected keyword argument(s) {', '.join(unknown)}; it takes "
                            f"baseline, metric, alpha, {', '.join(_LOAD_KEYS)} and {', '.join(_SELECT_KEYS)}")
        if not (baseline is None or isinstance(baseline, str)):
            raise TypeError(f"compare(baseline=...) takes a variant's name, got {baseline!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise AblateError(f"alpha must be a number between 0 and 1, got {alpha!r}; e.g. alpha=0.05")
        if isinstance(where.get("run_ids"), str):
            where["run_ids"] = [where["run_ids"]]  # one id, not its characters
        if isinstance(records, str):
            if "group" in where:
                raise TypeError("compare() got a group twice: as its first argument and as group=")
            records, where["group"] = None, records
        load = {k: v for k, v in where.items() if k in _LOAD_KEYS}
        select = {k: str(v) for k, v in where.items() if k in _SELECT_KEYS}
        if not (records is None or isinstance(records, (list, tuple))):
            raise TypeError(f"compare() takes a list of RunRecord or a group's name, not {type(records).__name__}")
        if records is None:
            records = load_records(metric=metric, **load)
        elif not records:
            raise AblateError("compare() got an empty list of runs; pass RunRecords (ablate.compare.load_records) "
                              "or where to load them from (group=...)")
        elif load:
            raise TypeError("give records, or where to load them from (group=, experiment=, ...), not both")
        elif not all(isinstance(r, RunRecord) for r in records):
            raise TypeError("compare() takes a list of RunRecord (from ablate.compare.load_records), or a group's name")
        return compare(select_records(records, select), baseline=baseline, metric=metric, alpha=float(alpha))


sys.modules[__name__].__class__ = _CallableModule
