"""Start a run from another run's final weights (``--init-from RUN``): find the parent, check it fits,
load its weights. The optimizer, budget and schedule are the new run's own.

``RUN`` is a run directory (printed by ``ablate run``) or an MLflow run id (32 hex digits). For an
id, the run directory is the run's ``ablate.run_dir`` tag; when that folder is not on this machine,
the run's logged artifacts (``checkpoint/checkpoint.pt``, ``resolved_config.json``, ``result.json``)
are downloaded into ``<cache_dir>/parents/<id>/``. Ids are looked up in ``$MLFLOW_TRACKING_URI``, else
``./mlflow.db`` (the tracker's default; ``ablate run --tracking-uri`` sets the variable).

The parent must have finished (its checkpoint is then its final one) and must have the same
architecture (variant hash and dims) and the same tokenizer (fingerprint and vocabulary size) as the
new run; anything else is one line naming what differs.

A run's ``label`` names its pretraining, not its seed: the parent's dataset, budget and a hash of its
configuration without the seed. ``compare`` appends it to the variant (``baseline (init: …)``), so runs
initialised from the same pretraining recipe form one variant, paired by seed against scratch runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ablate.config import RunConfig
from ablate.errors import AblateError
from ablate.urls import resolve_tracking_uri, sqlite_store_missing

CHECKPOINT = "checkpoint.pt"  # the trainer's file name (ablate.train.CHECKPOINT)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
DIM_KEYS = ("d_model", "n_layers", "n_heads", "context", "vocab_size")
# what does not change a run's result, plus the seed: runs of one pretraining recipe share a label
LABEL_EXCLUDE = ("device", "out_dir", "cache_dir", "log_every", "compile", "seed")


@dataclass(frozen=True)
class Parent:
    """A finished run to start from: its folder (with ``checkpoint.pt``), ``config.json`` and ``result.json``."""

    spec: str
    run_dir: Path
    config: dict[str, Any]
    result: dict[str, Any]
    mlflow_run_id: str | None = None

    @property
    def variant_name(self) -> str:
        return str(self.config.get("variant_name", "?"))

    def label(self) -> str:
        cfg = self.config.get("config", {})
        known = {f.name for f in fields(RunConfig)}
        recipe = RunConfig(**{k: v for k, v in cfg.items() if k in known})
        data = Path(recipe.data).name or recipe.data
        return f"{data} {recipe.budget} {recipe.fingerprint(exclude=LABEL_EXCLUDE)[:6]}"

    def summary(self) -> dict[str, Any]:
        """What the child records about its parent (config.json, result.json, MLflow tags)."""
        return {"init_from": self.spec, "run_dir": str(self.run_dir), "mlflow_run_id": self.mlflow_run_id,
                "recorded_run_dir": self.result.get("run_dir", ""), "variant": self.variant_name,
                "variant_hash": self.config.get("variant_hash"), "seed": self.config.get("config", {}).get("seed"),
                "steps": self.result.get("steps"), "label": self.label()}


def _read_json(path: Path, spec: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise AblateError(f"--init-from {spec}: {path} is missing; give a run directory made by `ablate run`") from None
    except (OSError, ValueError) as err:
        raise AblateError(f"--init-from {spec}: cannot read {path} ({err}); the run directory is damaged") from None
    if not isinstance(data, dict):
        raise AblateError(f"--init-from {spec}: {path} is not a run's record; the run directory is damaged")
    return data


def _from_dir(folder: Path, spec: str, mlflow_run_id: str | None = None) -> Parent:
    if folder.is_file() and folder.name == CHECKPOINT:
        folder = folder.parent
    config = _read_json(folder / "config.json", spec)
    result = _read_json(folder / "result.json", spec) if (folder / "result.json").exists() else {}
    status = result.get("status", "unfinished")
    if status != "finished":
        raise AblateError(f"--init-from {spec}: the run has not finished (status {status}), so it has no final "
                          f"weights; finish it with `ablate run … --resume` first")
    if not (folder / CHECKPOINT).is_file():
        raise AblateError(f"--init-from {spec}: no {CHECKPOINT} in {folder}; the run's final weights are gone")
    return Parent(spec, folder, config, result, mlflow_run_id)


def _download(client, run_id: str, dest: Path, spec: str, recorded: str) -> None:
    """The run's checkpoint and records into ``dest``, atomically (a folder appears whole or not at all)."""
    names = {a.path for a in client.list_artifacts(run_id)}
    if "checkpoint" not in names or "resolved_config.json" not in names:
        raise AblateError(f"--init-from {spec}: the run's folder {recorded or '?'} is not on this machine and it "
                          f"logged no checkpoint; copy the run directory here and pass its path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=dest.parent))
    try:
        for path, name in (("checkpoint/checkpoint.pt", CHECKPOINT), ("resolved_config.json", "config.json"),
                           ("result.json", "result.json")):
            got = Path(client.download_artifacts(run_id, path, str(tmp / ".dl")))
            got.replace(tmp / name)
        shutil.rmtree(tmp / ".dl", ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _from_mlflow(run_id: str, spec: str, cache_dir: Path) -> Parent:
    uri = resolve_tracking_uri()
    if sqlite_store_missing(uri):
        raise AblateError(f"--init-from {spec}: no run directory there, and no MLflow store at {uri} to look the "
                          f"id up in; pass the run directory, or --tracking-uri")
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - any failure means: not found there
        raise AblateError(f"--init-from {spec}: no MLflow run with that id in {uri}; check the id or --tracking-uri") from None
    tags = run.data.tags
    if "ablate.variant" not in tags:
        raise AblateError(f"--init-from {spec}: MLflow run {run_id} is not an ablate training run")
    recorded = tags.get("ablate.run_dir", "")
    if recorded and (Path(recorded) / CHECKPOINT).is_file() and (Path(recorded) / "config.json").is_file():
        return _from_dir(Path(recorded), spec, run_id)
    dest = Path(cache_dir) / "parents" / run_id
    if not (dest / CHECKPOINT).is_file():
        try:
            _download(client, run_id, dest, spec, recorded)
        except AblateError:
            raise
        except Exception as err:  # noqa: BLE001
            raise AblateError(f"--init-from {spec}: downloading the run's checkpoint failed ({err}); copy the "
                              f"run directory here and pass its path") from None
    return _from_dir(dest, spec, run_id)


def resolve_parent(spec: str, cache_dir: str | Path) -> Parent:
    """The run ``spec`` names: a run directory, or an MLflow run id (see the module docstring)."""
    spec = str(spec).strip()
    path = Path(spec).expanduser()
    if path.exists():
        return _from_dir(path, spec)
    if RUN_ID.match(spec):
        return _from_mlflow(spec, spec, Path(cache_dir))
    raise AblateError(f"--init-from {spec}: no run directory there and not an MLflow run id (32 hex digits); "
                      f"pass the run directory printed by `ablate run`, or its MLflow run id")


def check_compatible(parent: Parent, *, variant_name: str, variant_hash: str, dims: dict[str, Any],
                     data_meta: dict[str, Any]) -> None:
    """One line naming what differs when the parent's weights cannot serve this run."""
    spec = parent.spec
    if parent.config.get("variant_hash") != variant_hash:
        raise AblateError(f"--init-from {spec}: architecture differs: the parent is {parent.variant_name!r} (hash "
                          f"{parent.config.get('variant_hash')}), this run is {variant_name!r} (hash {variant_hash}); "
                          f"use the parent's --variant")
    theirs = parent.config.get("dims", {})
    diff = [f"{k} {theirs.get(k)} vs {dims.get(k)}" for k in DIM_KEYS if k != "vocab_size" and theirs.get(k) != dims.get(k)]
    if diff:
        raise AblateError(f"--init-from {spec}: dims differ (parent vs this run): {', '.join(diff)}; use the parent's "
                          f"--size / --d-model / --n-layers / --n-heads / --context")
    pdata = parent.config.get("data", {})
    mine = (data_meta.get("tokenizer"), data_meta.get("tokenizer_fingerprint"), data_meta.get("vocab_size"))
    other = (pdata.get("tokenizer"), pdata.get("tokenizer_fingerprint"), pdata.get("vocab_size"))
    if mine[1:] != other[1:] or theirs.get("vocab_size") != dims.get("vocab_size"):
        hint = ("; a char or bpe:N vocabulary is built from its corpus, so use byte or gpt2 across corpora"
                if mine[0] == other[0] else "; use the parent's --tokenizer")
        raise AblateError(f"--init-from {spec}: tokenizer differs: the parent's is {other[0]} (fingerprint {other[1]}, "
                          f"vocab {other[2]}), this run's is {mine[0]} (fingerprint {mine[1]}, vocab {mine[2]}){hint}")


def load_parent_weights(parent: Parent, model: torch.nn.Module, device: str) -> None:
    """Copy the parent's final weights into ``model`` (a missing or damaged checkpoint is one line)."""
    path = parent.run_dir / CHECKPOINT
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        state = ckpt["model"]
    except Exception as err:  # noqa: BLE001 - unpickling, zip, I/O and key errors all mean "damaged"
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise AblateError(f"--init-from {parent.spec}: cannot read {path} ({reason}); the checkpoint is "
                          f"damaged, train the parent again") from None
    steps = parent.result.get("steps")
    if isinstance(ckpt, dict) and steps is not None and ckpt.get("step") != steps:
        raise AblateError(f"--init-from {parent.spec}: {path} is from step {ckpt.get('step')}, not the run's final "
                          f"step {steps}; finish the parent with --resume")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AblateError(f"--init-from {parent.spec}: the checkpoint's weights do not fit this model ({first[:200]})") from None


def init_model(spec: str, cache_dir: str | Path, *, variant, dims: dict[str, Any], data_meta: dict[str, Any],
               model: torch.nn.Module, device: str) -> Parent:
    """Resolve ``spec``, check it fits this run and load its weights into ``model``; the parent."""
    parent = resolve_parent(spec, cache_dir)
    check_compatible(parent, variant_name=variant.name, variant_hash=variant.hash, dims=dims, data_meta=data_meta)
    load_parent_weights(parent, model, device)
    return parent


__all__ = ["Parent", "resolve_parent", "check_compatible", "load_parent_weights", "init_model"]
