"""MLflow tracking: one MLflow run per ablate run, named by the variant and its seed.

Params hold the full resolved configuration, flattened; tags hold what one filters and groups by
(variant, its hash, each slot's component, seed, dataset hash, code version, plugins, device);
metrics are logged against the step in batches (at each eval and at the end), so logging costs a few
calls per run, not one per step. A run that diverges or fails is marked FAILED, an interrupted one
KILLED; none is left RUNNING. Resuming continues the run's MLflow run; training a run directory again
from scratch deletes (softly) the MLflow run that described its old results.

Metric names are laid out for MLflow's chart view, which draws one section per prefix, in name order,
before its unprefixed "Model metrics", each sorted by name: the evaluation curves (``val_loss``,
``val_bpb``, task accuracies) under ``eval/``, so they open the page; the once-per-run figures (final
values, parameters, FLOPs, throughput, MFU) under ``summary/``, where they also sort the runs table;
the training diagnostics under ``train/``. Stores written before this layout are still read
(:func:`summary_metric`, :func:`eval_history`).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ablate.errors import AblateError
from ablate.callbacks import Callback, RunResult, RunState

DEFAULT_EXPERIMENT = "ablate"
# MLflow 3 opens an experiment as a GenAI app (traces, judges) unless told it holds model training
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
EVAL_PREFIX, SUMMARY_PREFIX, TRAIN_PREFIX = "eval/", "summary/", "train/"
TRAIN_CURVES = {"train_loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
                "tokens_per_s": "train/tokens_per_s", "tokens": "train/tokens_seen"}
STATUS = {"finished": "FINISHED", "pruned": "FINISHED", "diverged": "FAILED", "failed": "FAILED",
          "interrupted": "KILLED"}


def tracking_uri(uri: str | None = None) -> str:
    """The explicit URI, else $MLFLOW_TRACKING_URI, else SQLite in the working directory."""
    from ablate.urls import resolve_tracking_uri

    return resolve_tracking_uri(uri)


def client_for(uri: str | None = None):
    import mlflow
    from mlflow.tracking import MlflowClient

    from ablate.urls import check_sqlite_store

    resolved = tracking_uri(uri)
    check_sqlite_store(resolved)  # a damaged store file is one line, not SQLAlchemy's traceback
    mlflow.set_tracking_uri(resolved)
    return MlflowClient(tracking_uri=resolved), resolved


def get_experiment_id(client, name: str, uri: str) -> str:
    """The experiment's id, creating it with artifacts beside a local SQLite store. It is marked as a
    model-training experiment (unless the user chose a kind), so the UI opens on runs and charts."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND[0] not in exp.tags:  # made by an older ablate, or by hand
            client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        location = (db.parent / "mlartifacts" / name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
    except Exception:  # created meanwhile by another worker
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def code_version() -> str:
    """The git commit of the ablate checkout (with '-dirty' for local changes), or the package version."""
    from ablate import __version__

    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return f"{commit}{'-dirty' if dirty else ''}" if commit else f"ablate=={__version__}"


def plugin_provenance() -> list[dict[str, str]]:
    try:
        from ablate.plugins import loaded_plugins
    except ImportError:
        return []
    return loaded_plugins()


def _quoted(value: str) -> str | None:
    """``value`` as an MLflow filter string literal, or None when it holds both kinds of quote."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def find_runs(client, experiment_ids: list[str], tags: dict[str, str], status: str | None = None,
              max_results: int = 50000) -> list:
    """Runs whose tags equal ``tags`` (and whose status is ``status``). Values are quoted for MLflow's
    filter, and every match is checked again in Python, so no name can widen or break the search."""
    clauses = []
    for key, value in tags.items():
        literal = _quoted(str(value))
        if literal is not None:
            clauses.append(f"tags.`{key}` = {literal}")
    if status:
        clauses.append(f"attributes.status = '{status}'")
    runs = client.search_runs(experiment_ids, " and ".join(clauses), max_results=max_results)
    return [r for r in runs if all(r.data.tags.get(k) == str(v) for k, v in tags.items())]


def find_parent(client, experiment_id: str, name: str) -> str | None:
    """The id of the newest parent run of the group (or study) ``name``, or None."""
    found = find_runs(client, [experiment_id], {"ablate.group": name})
    return found[0].info.run_id if found else None


def find_or_create_parent(client, experiment_id: str, name: str, tags: dict[str, str] | None = None) -> str:
    """The id of the parent run called ``name`` (a group or a study), created when missing."""
    found = find_parent(client, experiment_id, name)
    if found:
        return found
    run = client.create_run(experiment_id, run_name=name, tags={"ablate.group": name, "ablate.kind": "group",
                                                              **(tags or {})})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


class MLflowTracker(Callback):
    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None, parent: str | None = None,
                 group: str | None = None, log_checkpoint: bool = True, extra_tags: dict[str, str] | None = None,
                 flush_seconds: float = 30.0):
        self.uri_arg, self.experiment = tracking_uri, experiment or DEFAULT_EXPERIMENT
        self.parent, self.group = parent, group
        self.log_checkpoint = log_checkpoint
        self.extra_tags = extra_tags or {}
        self.flush_seconds = flush_seconds
        self.buffer: list = []
        self.run_id: str | None = None
        self.last_flush = time.perf_counter()
        self.seconds_logging = 0.0
        self.logged_through: dict[str, int] = {}  # a resumed run's metrics already in MLflow: key -> last step

    # -- lifecycle
    def on_start(self, run: RunState) -> None:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        t0 = time.perf_counter()
        try:
            self.client, self.uri = client_for(self.uri_arg)
            exp_id = get_experiment_id(self.client, self.experiment, self.uri)
        except Exception as err:  # a bad URI or an unreachable server is the user's to fix
            raise AblateError(f"cannot use MLflow tracking URI {tracking_uri(self.uri_arg)!r}: {err}; "
                              "fix --tracking-uri / MLFLOW_TRACKING_URI or pass --no-track") from None
        started = self._earlier_runs(exp_id, run, None, any_parent=True) if run.resumed_from is not None else []
        if started and not self.parent and started[0].data.tags.get("ablate.in_group", "") != (self.group or ""):
            where = started[0].data.tags.get("ablate.in_group")  # --resume with another --group (or none)
            print(f"ablate: note: a resumed run continues its MLflow run where it started ("
                  f"{f'group {where}' if where else 'no group'}); --group applies to new runs only", file=sys.stderr)
            tags = {k: v for k, v in self._tags(run).items() if k != "ablate.in_group"}
            if run.init:
                tags.update(self._init_tags(run, exp_id))
            self._continue(started[0], tags)  # and no parent run is made for the group it was not given
            self.seconds_logging += time.perf_counter() - t0
            return
        parent = self.parent or (find_or_create_parent(self.client, exp_id, self.group) if self.group else None)
        tags = self._tags(run)
        if run.init:
            tags.update(self._init_tags(run, exp_id))
        if parent:
            tags[MLFLOW_PARENT_RUN_ID] = parent
        earlier = self._earlier_runs(exp_id, run, parent)
        if run.resumed_from is not None and earlier:
            self._continue(earlier.pop(0), tags)
        else:
            created = self.client.create_run(exp_id, run_name=f"{run.variant_name} seed {run.config.seed}",
                                             tags=tags)
            self.run_id = created.info.run_id
            self._log_params(run)
        for stale in earlier:  # trained again from scratch: the old run describes results no longer on disk
            self.client.set_tag(stale.info.run_id, "ablate.superseded_by", self.run_id)
            self.client.delete_run(stale.info.run_id)
        self.seconds_logging += time.perf_counter() - t0

    def _earlier_runs(self, exp_id: str, run: RunState, parent: str | None, any_parent: bool = False) -> list:
        """This run directory's earlier MLflow runs under the same parent (none: top level; ``any_parent``:
        under any), newest first."""
        found = find_runs(self.client, [exp_id], {"ablate.run_dir": str(run.run_dir)}, max_results=100)
        found = [r for r in found if any_parent or r.data.tags.get("mlflow.parentRunId") == parent]
        return sorted(found, key=lambda r: r.info.start_time or 0, reverse=True)

    def _continue(self, earlier, tags: dict[str, str]) -> None:
        """A resumed run continues its MLflow run: RUNNING again, metrics from where the log ends (steps
        trained again after a SIGKILL are bit-identical to those already logged, so they are skipped)."""
        self.run_id = earlier.info.run_id
        self.client.update_run(self.run_id, status="RUNNING")
        for key, value in tags.items():
            if key != "mlflow.parentRunId":
                self.client.set_tag(self.run_id, key, value)
        for key in earlier.data.metrics:
            history = self.client.get_metric_history(self.run_id, key)
            if history:
                self.logged_through[key] = max(m.step for m in history)

    def _tags(self, run: RunState) -> dict[str, str]:
        import torch

        from ablate.variant import foreign_origins

        variant = json.loads((run.run_dir / "config.json").read_text())["variant"]
        tags = {
            "ablate.variant": run.variant_name,
            "ablate.variant_hash": run.variant_hash,
            "ablate.seed": str(run.config.seed),
            "ablate.dataset": run.config.data,
            "ablate.dataset_hash": str(run.data_meta.get("fingerprint", "")),
            "ablate.source_sha256": str(run.data_meta.get("source_sha256", run.data_meta.get("sha256", ""))),
            "ablate.tokenizer": run.config.tokenizer,
            "ablate.budget": run.budget.text,
            "ablate.code_version": code_version(),
            "ablate.device": run.device + (f" ({torch.cuda.get_device_name()})" if run.device.startswith("cuda") else ""),
            "ablate.torch": torch.__version__,
            "ablate.plugins": json.dumps(plugin_provenance()),
            "ablate.components": json.dumps(foreign_origins([run.variant_name])),  # its plugin components' code
            "ablate.run_dir": str(run.run_dir),
            "ablate.status": "running",
        }
        for slot, values in variant.items():
            if slot != "model":
                tags[f"ablate.slot.{slot}"] = values["component"]
        for key, value in run.fairness.items():
            tags[f"ablate.fair.{key}"] = value
        if self.group:
            tags["ablate.in_group"] = self.group
        tags.update(self.extra_tags)
        return tags

    def _init_tags(self, run: RunState, exp_id: str) -> dict[str, str]:
        """The parent of an ``--init-from`` run: as given, its pretraining label, and its MLflow run id
        (given, or found by the run directory it recorded, in this experiment)."""
        init = run.init
        parent_id = init.get("mlflow_run_id")
        if not parent_id and init.get("recorded_run_dir"):
            found = find_runs(self.client, [exp_id], {"ablate.run_dir": init["recorded_run_dir"]}, max_results=10)
            parent_id = found[0].info.run_id if found else None
        tags = {"ablate.init_from": str(init["init_from"]), "ablate.init_label": str(init["label"]),
                "ablate.init_variant": str(init.get("variant", ""))}
        if parent_id:
            tags["ablate.init_parent_run_id"] = parent_id
        return tags

    def _log_params(self, run: RunState) -> None:
        from mlflow.entities import Param

        from ablate.variant import parse_variant

        params = {f"config.{k}": v for k, v in run.config.to_dict().items()}
        params.update({f"variant.{k}": v for k, v in parse_variant(run.config.variant).flat_params().items()})
        params.update({f"dims.{k}": v for k, v in run.dims.items()})
        params.update({f"cost.{k}": v for k, v in run.cost.items()})
        params.update({f"data.{k}": v for k, v in run.data_meta.items() if not isinstance(v, (dict, list))})
        params["optimizer"] = "AdamW (decay on matrices only)"
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def _queue(self, row: dict[str, float], keys: dict[str, str]) -> None:
        """Queue ``row[key]`` as metric ``keys[key]`` (finite values only, none already logged)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(row["step"])
        for key, name in keys.items():
            value = row.get(key)
            if value is not None and math.isfinite(value) and step > self.logged_through.get(name, -1):
                self.buffer.append(Metric(name, float(value), now, step))

    def flush(self) -> None:
        t0 = time.perf_counter()
        while self.buffer:  # dropped once logged: an interrupt inside log_batch leaves the chunk queued
            self.client.log_batch(self.run_id, metrics=self.buffer[:1000])  # (MLflow skips what it already has)
            del self.buffer[:1000]
        self.last_flush = time.perf_counter()
        self.seconds_logging += self.last_flush - t0

    def on_step(self, run: RunState, row: dict[str, float]) -> None:
        self._queue(row, TRAIN_CURVES)

    def on_eval(self, run: RunState, row: dict[str, float]) -> None:
        self._queue(row, {k: EVAL_PREFIX + k for k in ("val_loss", "val_bpb", *(k for k in row if k.startswith("acc")))})
        if time.perf_counter() - self.last_flush > self.flush_seconds:
            self.flush()

    def on_error(self, run: RunState, error: BaseException) -> None:
        if self.run_id is None:
            return
        try:
            self.flush()
            self.client.set_tag(self.run_id, "ablate.status", "failed")
            self.client.set_tag(self.run_id, "ablate.error", f"{type(error).__name__}: {error}"[:5000])
            self.client.set_terminated(self.run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        except Exception:
            pass  # the original error matters more

    def on_end(self, run: RunState, result: RunResult) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:  # stopped before its MLflow run was made
            return

        t0 = time.perf_counter()
        now = int(time.time() * 1000)
        final = {f"final_{k}": v for k, v in result.final.items()}
        final.update({"tokens_per_s_overall": result.tokens_per_s, "train_seconds": result.train_seconds,
                      "params": result.cost["params"], "flops_per_token": result.cost["flops_per_token"],
                      "kv_cache_bytes_per_token": result.cost["kv_cache_bytes_per_token"]})
        for key in ("mfu", "peak_flops", "decode_tokens_per_s"):
            if key in result.extra:
                final[key] = result.extra[key]
        unigram = _unigram_entropy(run, result)
        if unigram is not None:
            final["unigram_entropy"] = unigram
        self.buffer += [Metric(SUMMARY_PREFIX + k, float(v), now, result.steps) for k, v in final.items() if v == v]
        self.flush()
        self.client.set_tag(self.run_id, "ablate.status", result.status)
        if result.status == "finished":
            self._mark_stalled(result, unigram)
        if result.message:
            self.client.set_tag(self.run_id, "ablate.message", result.message[:5000])
        self._log_artifacts(run, result)
        self.client.set_terminated(self.run_id, STATUS.get(result.status, "FAILED"))
        self.seconds_logging += time.perf_counter() - t0

    def _mark_stalled(self, result: RunResult, unigram: float | None) -> None:
        """Tag ``ablate.stalled=true`` (and the reason) on a finished run that the rule of
        :mod:`ablate.report.stability` calls stalled; the report applies the same rule to the curve."""
        from ablate.report.stability import stall_reason

        curve = [(r["step"], r["val_loss"]) for r in result.evals if r.get("val_loss") is not None]
        reason = stall_reason(curve, result.final.get("val_loss"), unigram)
        if reason:
            self.client.set_tag(self.run_id, "ablate.stalled", "true")
            self.client.set_tag(self.run_id, "ablate.stalled_reason", reason[:5000])

    def _log_artifacts(self, run: RunState, result: RunResult) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "resolved_config.json").write_text((run.run_dir / "config.json").read_text())
            (tmp / "result.json").write_text(json.dumps({k: v for k, v in result.to_dict().items()
                                                         if k != "history"}, indent=2, default=str))
            sample = sample_text(run)
            if sample:
                (tmp / "sample.txt").write_text(sample)
            plot_curves(result, tmp / "loss_curve.png")
            self.client.log_artifacts(self.run_id, str(tmp))
        ckpt = run.run_dir / "checkpoint.pt"
        if self.log_checkpoint and ckpt.exists() and result.status == "finished":
            self.client.log_artifact(self.run_id, str(ckpt), artifact_path="checkpoint")


def summary_metric(metrics: dict[str, float], name: str, default=None):
    """A run's once-per-run figure ``name`` (``final_val_loss``, ``params``, ...) from its MLflow metrics,
    also where an older ablate logged it without the ``summary/`` prefix."""
    return metrics.get(SUMMARY_PREFIX + name, metrics.get(name, default))


def eval_history(client, run_id: str, name: str) -> list[tuple[int, float]]:
    """A run's evaluation curve ``name`` (``val_loss``, an accuracy) as sorted (step, value), also where
    an older ablate logged it without the ``eval/`` prefix."""
    history = client.get_metric_history(run_id, EVAL_PREFIX + name) or client.get_metric_history(run_id, name)
    return sorted((m.step, m.value) for m in history)


def _unigram_entropy(run: RunState, result: RunResult) -> float | None:
    """Nats per token of the training split's unigram distribution, when the trainer measured it."""
    value = run.data_meta.get("unigram_entropy", result.extra.get("unigram_entropy"))
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def sample_text(run: RunState, tokens: int = 200) -> str:
    import torch

    tok = run.tokenizer
    start = [tok.eot] if getattr(tok, "eot", None) is not None else tok.encode("\n") or [0]
    model = run.model
    was_training = model.training
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(run.config.seed)
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(torch.tensor([start], device=device), tokens, temperature=0.8, generator=g)
    model.train(was_training)
    return tok.decode(out[0].tolist())


def plot_curves(result: RunResult, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    if result.history:
        ax.plot([r["step"] for r in result.history], [r["train_loss"] for r in result.history],
                label="train loss", alpha=0.6)
    if result.evals:
        ax.plot([r["step"] for r in result.evals], [r["val_loss"] for r in result.evals], "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{result.variant} · seed {result.seed}")
    if result.history or result.evals:  # a run stopped before its first step has no curve to label
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
