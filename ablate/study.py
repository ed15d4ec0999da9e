"""Studies: declarative ablation studies (``studies/*.toml``) executed by Optuna, tracked in MLflow.

A study file names what is compared (variants and/or a space over slots and hyperparameters), on what
(data, tokenizer, size, budget), how often (seeds) and how (the protocol)::

    name = "positions"                 # Optuna study / MLflow parent run (default: the file's stem)
    protocol = "compare"               # compare | search | tune-then-compare
    data = "shakespeare"               # any RunConfig data key at the top level:
    tokenizer = "char"                 #   data, data_file, tokenizer, size, d_model, n_layers,
    size = "cpu"                       #   n_heads, context, budget
    budget = "600steps"
    seeds = 3                          # a count (seeds 0..n-1) or a list, e.g. [0, 1, 2]
    metric = "val_loss"                # val_loss | val_bpb
    baseline = "baseline"              # a variant string; must be among the compared variants
    variants = ["baseline", "rope", "alibi"]

    [train]                            # any other RunConfig setting (batch_size, lr, eval_points, ...)
    batch_size = 12

    [search]                           # slots: lists of components; hyperparameters: lists or ranges
    mlp = ["gelu", "swiglu"]           #   compare: the variants x the slot lists (a full factorial)
    lr = {low = 1e-4, high = 3e-3, log = true}   # search only; also trials, sampler, pruner, seed

    [tune]                             # tune-then-compare: the per-variant lr search
    lr = [1e-3, 2e-3, 4e-3]            #   a grid, or {low, high, log} with trials = N (TPE)

    [gpu]                              # RunConfig overrides applied with `ablate study run --gpu`
    size = "shakespeare-char"

Every key is checked: an unknown key or a bad value is an error naming the key and the file.

Protocols:

- ``compare``: every variant x every seed, exactly once, through Optuna's GridSampler; no pruning.
- ``search``: a sampler (TPE by default) over the space, one seed per trial, pruning on the
  intermediate validation loss (median or successive halving).
- ``tune-then-compare``: a short learning-rate search per variant (on a seed of its own), then every
  variant x every seed at that variant's best learning rate, then the comparison.

Execution: the study is created once (Optuna studies, the MLflow parent run, the queue of grid
trials) before any worker starts; workers then pop trials from Optuna's storage, which is the only
queue. A trial records its worker (host, boot id, pid, process start time) and, where the storage
has no heartbeat of its own (journal files), a heartbeat; a RUNNING trial whose worker is gone (same
host) or silent for longer than the grace period (any host) is marked FAIL, its MLflow run FAILED,
and its (variant, seed) queued again. Before training, a worker checks that no other trial holds the
same (variant, seed), so a key is trained once even when two processes queue it at the same time.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
import re
import socket
import sys
import threading
import time
import tomllib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.config import RunConfig, coerce, read_toml, validate
from ablate.errors import AblateError
from ablate.train import Callback, RunResult, RunState, StopRun

PROTOCOLS = ("compare", "search", "tune-then-compare")
METRICS = ("val_loss", "val_bpb")
TOP_CONFIG = ("data", "data_file", "tokenizer", "size", "d_model", "n_layers", "n_heads", "context", "budget")
STUDY_KEYS = ("name", "description", "protocol", "seeds", "metric", "baseline", "variants", "alpha", *TOP_CONFIG)
TABLES = ("train", "search", "tune", "gpu")
PER_TRIAL = ("variant", "seed")  # set by the study for every trial
TUNABLE = ("lr", "min_lr", "warmup", "weight_decay", "beta1", "beta2", "grad_clip", "batch_size", "grad_accum",
           "schedule")
# settings that change where and how fast a run goes, never its result: they may differ between workers
EXECUTION_ONLY = ("device", "compile", "out_dir", "cache_dir", "log_every", "checkpoint_every")
SAMPLERS = ("tpe", "random", "qmc")
PRUNERS = ("median", "halving", "none")
SEARCH_META = ("trials", "sampler", "pruner", "seed", "startup_trials")
TUNE_KEYS = ("lr", "trials", "seed", "budget", "sampler", "pruner")

HEARTBEAT_SECONDS = 60.0
GRACE_SECONDS = 180.0
MAX_RETRY = 3
DEFAULT_SEEDS = 3
DEFAULT_TUNE_SEED = 1000
DEFAULT_TUNE_TRIALS = 6

K_WORKER = "ablate.worker"
K_BEAT = "ablate.heartbeat"
K_RUN = "ablate.mlflow_run_id"
K_SKIP = "ablate.skipped"
K_STATUS = "ablate.status"
K_FAILURE = "ablate.failure"


# ------------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Range:
    """A numeric range for a hyperparameter: ``{low = 1e-4, high = 3e-3, log = true, step = ...}``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial, name: str):
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class StudySpec:
    path: Path
    name: str  # Optuna study name and MLflow group (the file's name, "-gpu" with --gpu, or --name)
    file_name: str
    description: str
    protocol: str
    metric: str
    alpha: float
    seeds: tuple[int, ...]
    baseline: str  # canonical variant name
    variants: tuple[str, ...]  # canonical; compare / tune-then-compare: compared; search: base variants
    slots: dict[str, tuple[str, ...]]  # search: slot -> component terms
    hparams: dict[str, Any]  # search: name -> tuple of values | Range
    search: dict[str, Any]  # search: trials, sampler, pruner, seed, startup_trials
    tune: dict[str, Any] | None  # tune-then-compare: lr (tuple | Range), trials, seed, budget, sampler, pruner
    config: RunConfig  # every trial's settings before variant, seed (and searched values)
    gpu: bool = False
    overrides: tuple[str, ...] = ()

    # -- derived
    def identity(self) -> dict[str, Any]:
        """What the results depend on; a resumed study must match it (seeds may grow)."""
        config = {k: v for k, v in self.config.to_dict().items() if k not in EXECUTION_ONLY}
        out: dict[str, Any] = {"protocol": self.protocol, "metric": self.metric, "config": config,
                               "variants": list(self.variants)}
        if self.protocol == "search":
            out["slots"] = {k: list(v) for k, v in self.slots.items()}
            out["hparams"] = {k: (v.to_json() if isinstance(v, Range) else list(v)) for k, v in self.hparams.items()}
            out["search"] = {k: v for k, v in self.search.items() if k != "trials"}
            out["seed"] = self.seeds[0]
        if self.tune:
            out["tune"] = {k: (v.to_json() if isinstance(v, Range) else list(v) if isinstance(v, tuple) else v)
                           for k, v in self.tune.items() if k != "trials"}
        return out

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def tune_is_grid(self) -> bool:
        return bool(self.tune) and isinstance(self.tune["lr"], tuple)

    def trial_config(self, variant: str, seed: int, **values) -> RunConfig:
        """The RunConfig of one trial; a tuned lr keeps the file's min_lr / lr ratio."""
        changes: dict[str, Any] = {"variant": variant, "seed": int(seed)}
        for key, value in values.items():
            changes[key] = coerce(key, value)
        if "lr" in values and "min_lr" not in values:
            changes["min_lr"] = changes["lr"] * (self.config.min_lr / self.config.lr)
        config = self.config.replace(**changes)
        validate(config)
        return config


def _fail(path: Path | str, key: str, problem: str) -> AblateError:
    return AblateError(f"{key!r} in {path}: {problem}")


def _unknown(path, key: str, known: Sequence[str], where: str = "") -> AblateError:
    close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return AblateError(f"unknown key {key!r} in {path}{hint} (allowed{where}: {', '.join(known)})")


def _config_value(path, dotted: str, key: str, value: Any) -> Any:
    try:
        return coerce(key, value)
    except AblateError as err:
        raise AblateError(f"{dotted!r} in {path}: {err}") from None


def _canonical(path, key: str, text: Any) -> str:
    from ablate.variant import parse_variant

    if not isinstance(text, str) or not text.strip():
        raise _fail(path, key, f"must be a variant string such as \"rope+swiglu\", got {text!r}")
    try:
        return parse_variant(text).name
    except AblateError as err:
        raise AblateError(f"{key!r} in {path}: {err}") from None


def _slot_term(path, key: str, slot: str, term: Any) -> str:
    """A component term for ``slot`` (e.g. ``gqa(kv_heads=2)``), checked and in canonical form."""
    from ablate.registry import lookup
    from ablate.variant import _TERM, parse_variant

    if not isinstance(term, str) or not _TERM.match(term):
        raise _fail(path, key, f"must be a list of {slot} components such as \"rope\", got {term!r}")
    try:
        spec = lookup(_TERM.match(term).group(1), slot)
        choice = parse_variant(term)[slot]
    except AblateError as err:
        raise AblateError(f"{key!r} in {path}: {err}") from None
    if choice.name != spec.name:
        raise _fail(path, key, f"{term!r} is not a {slot} component (see `ablate list {slot}`)")
    return choice.label()


def compose_variant(base: str, picks: dict[str, str]) -> str:
    """``base`` with the components in ``picks`` (slot -> term) put in their slots; canonical name."""
    from ablate.variant import Variant, check_compatibility, parse_variant

    variant = parse_variant(base)
    choices = list(variant.choices)
    for slot, term in picks.items():
        index = next(i for i, c in enumerate(choices) if c.slot == slot)
        choices[index] = parse_variant(term)[slot]
    composed = Variant(tuple(choices), variant.model)
    check_compatibility(composed)
    return parse_variant(composed.name).name


def _parse_seeds(path, value: Any) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise _fail(path, "seeds", "must be a count (e.g. 3) or a list of seeds (e.g. [0, 1, 2])")
    if isinstance(value, int):
        if value < 1:
            raise _fail(path, "seeds", f"must be at least 1, got {value}")
        return tuple(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                 for s in value):
        if len(set(value)) != len(value):
            raise _fail(path, "seeds", f"lists a seed twice: {value}")
        return tuple(value)
    raise _fail(path, "seeds", f"must be a count (e.g. 3) or a non-empty list of seeds >= 0 (e.g. [0, 1, 2]), got {value!r}")


def _parse_range_or_list(path, dotted: str, name: str, value: Any, allow_range: bool = True):
    """A hyperparameter's values: a list (categorical / grid) or ``{low, high, log, step}``."""
    default = getattr(RunConfig(), name)
    if isinstance(value, list):
        if not value:
            raise _fail(path, dotted, "is an empty list; give at least one value")
        values = tuple(_config_value(path, dotted, name, v) for v in value)
        if len(set(values)) != len(values):
            raise _fail(path, dotted, f"lists a value twice: {value}")
        return values
    if isinstance(value, dict):
        if not allow_range:
            raise _fail(path, dotted, "must be a list of values here (a grid), e.g. [1e-3, 3e-3]")
        if isinstance(default, str) or isinstance(default, bool):
            raise _fail(path, dotted, f"is a {type(default).__name__} setting; give a list of values, not a range")
        unknown = set(value) - {"low", "high", "log", "step"}
        if unknown:
            raise _unknown(path, f"{dotted}.{sorted(unknown)[0]}", ["low", "high", "log", "step"])
        if "low" not in value or "high" not in value:
            raise _fail(path, dotted, "a range needs low and high, e.g. {low = 1e-4, high = 3e-3, log = true}")
        low, high = value["low"], value["high"]
        for k, v in (("low", low), ("high", high), ("step", value.get("step", 1))):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _fail(path, f"{dotted}.{k}", f"must be a number, got {v!r}")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise _fail(path, f"{dotted}.log", f"must be true or false, got {log!r}")
        if not low < high:
            raise _fail(path, dotted, f"needs low < high, got low={low}, high={high}")
        if log and low <= 0:
            raise _fail(path, dotted, f"a log range needs low > 0, got {low}")
        if log and "step" in value:
            raise _fail(path, dotted, "takes either log = true or a step, not both")
        integer = isinstance(default, int)
        if integer and not all(float(v).is_integer() for v in (low, high, value.get("step", 1))):
            raise _fail(path, dotted, f"{name} is a whole number; give integer low/high/step")
        return Range(float(low), float(high), log, float(value["step"]) if "step" in value else None, integer)
    raise _fail(path, dotted, f"must be a list of values or a range table {{low = ..., high = ...}}, got {value!r}")


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` overrides; values are read as TOML (numbers, true/false) or else strings."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise AblateError(f"--set {item!r} needs the form key=value, e.g. --set budget=2000steps")
        key, text = (s.strip() for s in item.split("=", 1))
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out[key] = value
    return out


def load_study(path: str | Path, *, gpu: bool = False, sets: Sequence[str] = (), name: str | None = None) -> StudySpec:
    """Read and check a study file; ``gpu`` applies its [gpu] table, ``sets`` are ``key=value`` overrides."""
    path = Path(path)
    data = read_toml(path, "study file", "; see studies/ for examples")
    for key in data:
        if key not in STUDY_KEYS and key not in TABLES:
            raise _unknown(path, key, (*STUDY_KEYS, *(f"[{t}]" for t in TABLES)))
    for table in TABLES:
        if table in data and not isinstance(data[table], dict):
            raise _fail(path, table, f"must be a table ([{table}]), got {data[table]!r}")

    file_name = data.get("name", path.stem)
    if not isinstance(file_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", file_name):
        raise _fail(path, "name", f"must be a simple name (letters, digits, _ . -), got {file_name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail(path, "description", "must be a string")
    protocol = data.get("protocol", "compare")
    if protocol not in PROTOCOLS:
        close = difflib.get_close_matches(str(protocol), PROTOCOLS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _fail(path, "protocol", f"unknown protocol {protocol!r}{hint}; choose {', '.join(PROTOCOLS)}")
    metric = data.get("metric", "val_loss")
    if metric not in METRICS:
        raise _fail(path, "metric", f"unknown metric {metric!r}; choose {' or '.join(METRICS)}")
    alpha = data.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise _fail(path, "alpha", f"must be a number between 0 and 1 (e.g. 0.05), got {alpha!r}")

    # the settings every trial shares: defaults -> top-level keys -> [train] -> [gpu] -> --set
    overrides = parse_set(sets)
    seeds_source = "--set" if "seeds" in overrides else path
    seeds = _parse_seeds(seeds_source, overrides.pop("seeds", data.get("seeds", DEFAULT_SEEDS)))
    values: dict[str, Any] = {}
    for key in TOP_CONFIG:
        if key in data:
            values[key] = _config_value(path, key, key, data[key])
    for table in ("train", "gpu"):
        if table == "gpu" and not gpu:
            continue
        for key, value in data.get(table, {}).items():
            dotted = f"{table}.{key}"
            if key in PER_TRIAL:
                raise _fail(path, dotted, f"{key} is set by the study for every trial; "
                                          f"list {'variants' if key == 'variant' else 'seeds'} at the top level")
            if table == "train" and key in TOP_CONFIG:
                raise _fail(path, dotted, f"put {key} at the top level of the file, not in [train]")
            values[key] = _config_value(path, dotted, key, value)
    for key, value in overrides.items():
        if key in PER_TRIAL:
            raise AblateError(f"--set {key}: {key} is set by the study for every trial")
        values[key] = _config_value("--set", key, key, value)
    values.setdefault("out_dir", str(Path("runs") / "studies" / (name or file_name + ("-gpu" if gpu else ""))))
    try:
        config = RunConfig(**values)
        validate(config)
        from ablate.budget import parse_budget
        from ablate.presets import get_size

        parse_budget(config.budget)
        get_size(config.size)
    except AblateError as err:
        raise AblateError(f"{path}: {err}") from None

    # variants, search space, tuning
    search_table = dict(data.get("search", {}))
    tune_table = data.get("tune")
    variants_raw = data.get("variants")
    if variants_raw is not None and (not isinstance(variants_raw, list) or not variants_raw):
        raise _fail(path, "variants", "must be a non-empty list of variant strings, e.g. [\"baseline\", \"rope\"]")
    baseline = _canonical(path, "baseline", data.get("baseline", "baseline"))
    base_variants: list[str] = []
    for i, text in enumerate(variants_raw or []):
        canon = _canonical(path, f"variants[{i}]", text)
        if canon in base_variants:
            raise _fail(path, "variants", f"{text!r} is the same variant as an earlier entry ({canon!r}); list it once")
        base_variants.append(canon)

    from ablate.registry import SLOTS

    slots: dict[str, tuple[str, ...]] = {}
    hparams: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, value in search_table.items():
        dotted = f"search.{key}"
        if key in SLOTS:
            if not isinstance(value, list) or not value:
                raise _fail(path, dotted, f"must be a non-empty list of {key} components, e.g. [\"learned\", \"rope\"]")
            terms = tuple(_slot_term(path, dotted, key, t) for t in value)
            if len(set(terms)) != len(terms):
                raise _fail(path, dotted, f"lists a component twice: {value}")
            slots[key] = terms
        elif key in TUNABLE:
            if protocol != "search":
                raise _fail(path, dotted, "a compare study varies only components (slots); to tune the "
                                          "learning rate per variant use protocol = \"tune-then-compare\", "
                                          "to search hyperparameters protocol = \"search\"")
            hparams[key] = _parse_range_or_list(path, dotted, key, value)
        elif key in SEARCH_META:
            if protocol != "search":
                raise _fail(path, dotted, f"{key} belongs to protocol = \"search\" (this study is {protocol!r})")
            meta[key] = value
        else:
            raise _unknown(path, dotted, (*SLOTS, *TUNABLE, *SEARCH_META), " in [search]")

    search: dict[str, Any] = {}
    tune: dict[str, Any] | None = None
    if protocol == "search":
        if not slots and not hparams and len(base_variants) < 2:
            raise _fail(path, "search", "a search needs a space: slot lists (e.g. position = [\"learned\", \"rope\"]), "
                                        "hyperparameters (e.g. lr = {low = 1e-4, high = 3e-3, log = true}) "
                                        "or two or more variants")
        if len(seeds) != 1:
            raise _fail(path, "seeds", f"a search trains one seed per trial; set seeds = [{seeds[0]}] "
                                       "(or use protocol = \"tune-then-compare\" to compare over seeds)")
        search = _search_meta(path, meta)
        variants = tuple(base_variants or [baseline])
        for base in variants:  # every slot choice must fit every base variant
            for picks in itertools.product(*slots.values()):
                try:
                    compose_variant(base, dict(zip(slots, picks)))
                except AblateError as err:
                    raise AblateError(f"'search' in {path}: {base} with {'+'.join(picks)}: {err}") from None
    else:
        bases = base_variants or [baseline]
        composed: list[str] = []
        for base in bases:
            for picks in itertools.product(*slots.values()):
                try:
                    canon = compose_variant(base, dict(zip(slots, picks)))
                except AblateError as err:
                    raise AblateError(f"'search' in {path}: {base} with {'+'.join(picks)}: {err}") from None
                if canon not in composed:
                    composed.append(canon)
        variants = tuple(composed)
        if len(variants) < 2:
            raise _fail(path, "variants", "a comparison needs at least two variants (the baseline and one more)")
        if baseline not in variants:
            raise _fail(path, "baseline", f"{baseline!r} is not among the variants ({', '.join(variants)}); "
                                          "add it to variants or choose baseline = one of them")
        # the baseline first, the rest in the file's order
        variants = (baseline, *[v for v in variants if v != baseline])
    if protocol == "tune-then-compare":
        if not isinstance(tune_table, dict) or "lr" not in tune_table:
            raise _fail(path, "tune", "tune-then-compare needs a [tune] table with lr = [..] (a grid) "
                                      "or lr = {low = .., high = .., log = true} and trials = N")
        tune = _tune_spec(path, tune_table, config)
    elif tune_table is not None:
        raise _fail(path, "tune", f"[tune] belongs to protocol = \"tune-then-compare\" (this study is {protocol!r})")

    study_name = name or (file_name + ("-gpu" if gpu else ""))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", study_name):
        raise AblateError(f"--name {study_name!r} must be a simple name (letters, digits, _ . -)")
    return StudySpec(path=path.resolve(), name=study_name, file_name=file_name, description=description,
                     protocol=protocol, metric=metric, alpha=float(alpha), seeds=seeds, baseline=baseline,
                     variants=variants, slots=slots, hparams=hparams, search=search, tune=tune, config=config,
                     gpu=gpu, overrides=tuple(sets))


def _search_meta(path, meta: dict[str, Any]) -> dict[str, Any]:
    out = {"trials": 20, "sampler": "tpe", "pruner": "median", "seed": 0, "startup_trials": 5}
    out.update(meta)
    for key in ("trials", "seed", "startup_trials"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "trials" else 0):
            raise _fail(path, f"search.{key}", f"must be a whole number{' >= 1' if key == 'trials' else ' >= 0'}, got {v!r}")
    if out["sampler"] not in SAMPLERS:
        raise _fail(path, "search.sampler", f"unknown sampler {out['sampler']!r}; choose {', '.join(SAMPLERS)}")
    if out["pruner"] not in PRUNERS:
        raise _fail(path, "search.pruner", f"unknown pruner {out['pruner']!r}; choose {', '.join(PRUNERS)}")
    return out


def _tune_spec(path, table: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    for key in table:
        if key not in TUNE_KEYS:
            raise _unknown(path, f"tune.{key}", TUNE_KEYS, " in [tune]")
    lr = _parse_range_or_list(path, "tune.lr", "lr", table["lr"])
    tune: dict[str, Any] = {"lr": lr, "seed": table.get("seed", DEFAULT_TUNE_SEED),
                            "budget": table.get("budget", config.budget)}
    if isinstance(tune["seed"], bool) or not isinstance(tune["seed"], int) or tune["seed"] < 0:
        raise _fail(path, "tune.seed", f"must be a whole number >= 0, got {tune['seed']!r}")
    try:
        from ablate.budget import parse_budget

        parse_budget(_config_value(path, "tune.budget", "budget", tune["budget"]))
    except AblateError as err:
        raise AblateError(f"'tune.budget' in {path}: {err}") from None
    if isinstance(lr, tuple):
        for key in ("trials", "sampler"):
            if key in table:
                raise _fail(path, f"tune.{key}", "applies to an lr range; with an lr list every value is tried once")
        tune["pruner"] = table.get("pruner", "none")
    else:
        tune["trials"] = table.get("trials", DEFAULT_TUNE_TRIALS)
        tune["sampler"] = table.get("sampler", "tpe")
        tune["pruner"] = table.get("pruner", "median")
        t = tune["trials"]
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise _fail(path, "tune.trials", f"must be a whole number >= 1, got {t!r}")
        if tune["sampler"] not in SAMPLERS:
            raise _fail(path, "tune.sampler", f"unknown sampler {tune['sampler']!r}; choose {', '.join(SAMPLERS)}")
    if tune["pruner"] not in PRUNERS:
        raise _fail(path, "tune.pruner", f"unknown pruner {tune['pruner']!r}; choose {', '.join(PRUNERS)}")
    return tune


# ------------------------------------------------------------------------------------- storage
def default_storage_path(spec: StudySpec, state_dir: str | Path | None = None) -> Path:
    folder = Path(state_dir) if state_dir else spec.path.parent / ".state"
    return folder / f"{spec.name}.journal"


def storage_url(spec: StudySpec, storage: str | None, state_dir: str | Path | None = None) -> str:
    """The storage as a string every worker can open: an RDB URL or an absolute journal path."""
    if storage and "://" in storage:
        return storage
    path = Path(storage) if storage else default_storage_path(spec, state_dir)
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{path.resolve()}"
    return str(path.resolve())


def retry_callback():
    """Optuna's callback that queues a copy of a trial whose worker died (its name changed in 4.9)."""
    import optuna

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if cls is None:
        cls = optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(max_retry=MAX_RETRY)


def _sqlalchemy_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed (SQLAlchemy 2.1 defaults to psycopg 3)."""
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
        return f"postgresql://{rest}"
    return url


def open_storage(url: str):
    """Optuna storage for ``url``: RDB (with heartbeats and retries) or a journal file."""
    import inspect

    import optuna

    if "://" in url:
        from optuna.storages import RDBStorage

        callback = retry_callback()
        accepts = inspect.signature(RDBStorage).parameters
        key = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in accepts else "failed_trial_callback"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", FutureWarning)
            try:
                return RDBStorage(_sqlalchemy_url(url), heartbeat_interval=int(HEARTBEAT_SECONDS),
                                  grace_period=int(GRACE_SECONDS), **{key: callback},
                                  engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
            except ImportError as err:
                raise AblateError(f"cannot open Optuna storage {url}: {err}; install the database driver "
                                  "(pip install 'ablate[postgres]' for postgresql://)") from None
            except Exception as err:
                raise AblateError(f"cannot open Optuna storage {url}: {str(err).splitlines()[0]}; check the URL "
                                  "and that the database server runs and accepts this user") from None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise AblateError(f"cannot open the study journal {path}: {err.strerror or err}; "
                          "pass --storage PATH or --state-dir DIR") from None


def native_heartbeat(storage) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


# ------------------------------------------------------------------------------------- workers
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _start_time(pid)}


def worker_alive(ident: dict[str, Any]) -> bool | None:
    """True / False for a worker on this machine; None when it runs elsewhere (ask its heartbeat)."""
    if ident.get("host") != socket.gethostname() or ident.get("boot", "") != _boot_id():
        return None
    pid = int(ident.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = ident.get("start", "")
    return not start or _start_time(pid) == start  # a recycled pid is another process


class _Heartbeat:
    """Writes the trial's heartbeat into its user attributes while it runs (for journal storages)."""

    def __init__(self, storage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="ablate-heartbeat")

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.set_trial_user_attr(self.trial_id, K_BEAT, time.time())
            except Exception:
                return  # the trial finished (or was failed by a reaper)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


# ------------------------------------------------------------------------------------- context
@dataclass
class WorkSummary:
    ran: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Context:
    """One process's view of a study: spec, storage, tracking, and how this process reports."""

    spec: StudySpec
    storage_url: str
    tracking_uri: str | None = None
    experiment: str | None = None
    log_checkpoint: bool = False
    label: str = ""
    echo: Callable[[str], None] = print
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    grace_seconds: float = GRACE_SECONDS
    worker_index: int = 0
    must_exist: bool = False  # report / status / worker: never create a journal file
    summary: WorkSummary = field(default_factory=lambda: WorkSummary())
    _storage: Any = None
    _client: Any = None

    @property
    def storage(self):
        if self._storage is None:
            if self.must_exist and "://" not in self.storage_url and not Path(self.storage_url).exists():
                raise AblateError(f"no study state at {self.storage_url}; run `ablate study run {self.spec.path}` "
                                  "first, or pass the --storage / --state-dir it used")
            self._storage = open_storage(self.storage_url)
        return self._storage

    def say(self, text: str) -> None:
        self.echo(f"{self.label}{text}")

    # -- Optuna studies of this study
    def stage_names(self) -> list[str]:
        spec = self.spec
        names = []
        if spec.protocol == "tune-then-compare":
            names += [tune_study_name(spec)] if spec.tune_is_grid else [tune_study_name(spec, v) for v in spec.variants]
        names.append(spec.name)
        return names

    def load(self, name: str, sampler=None, pruner=None):
        import optuna

        try:
            return optuna.load_study(study_name=name, storage=self.storage, sampler=sampler, pruner=pruner)
        except KeyError:
            raise AblateError(f"study {name!r} does not exist in {self.storage_url}; create it with "
                              f"`ablate study run {self.spec.path}` (with the same --storage)") from None

    def main(self, sampler=None, pruner=None):
        return self.load(self.spec.name, sampler, pruner)

    # -- MLflow
    def adopt_tracking(self, attrs: dict[str, Any]) -> None:
        """Unless told otherwise (flag, $MLFLOW_TRACKING_URI), log where the study was created to."""
        if self.tracking_uri is None:
            self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or attrs.get("ablate.tracking_uri")
        if self.experiment is None:
            self.experiment = attrs.get("ablate.experiment")

    def client(self):
        if self._client is None:
            from ablate.track import client_for

            self._client, self.tracking_uri = client_for(self.tracking_uri)
        return self._client


def tune_study_name(spec: StudySpec, variant: str | None = None) -> str:
    return f"{spec.name}:tune" + (f":{variant}" if variant else "")


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*GridSampler.*re-evaluating.*")
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage.*")


def key_of(params: dict[str, Any], names: Sequence[str]) -> str:
    return json.dumps({n: params.get(n) for n in names}, sort_keys=True)


# -- the grid stages: compare points, tune points
COMPARE_KEY = ("variant", "seed")
TUNE_KEY = ("variant", "lr")


def compare_points(spec: StudySpec, best_lr: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Every (variant, seed), seed-major: a study stopped early still has complete seeds to pair."""
    points = []
    for seed in spec.seeds:
        for variant in spec.variants:
            point: dict[str, Any] = {"variant": variant, "seed": seed}
            if best_lr is not None:
                point["lr"] = best_lr[variant]
            points.append(point)
    return points


def tune_points(spec: StudySpec) -> list[dict[str, Any]]:
    return [{"variant": v, "lr": lr} for lr in spec.tune["lr"] for v in spec.variants]


def grid_space(spec: StudySpec, role: str) -> dict[str, list]:
    if role == "tune":
        return {"variant": list(spec.variants), "lr": list(spec.tune["lr"])}
    return {"variant": list(spec.variants), "seed": list(spec.seeds)}


def _distributions(spec: StudySpec, role: str, point: dict[str, Any]):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists: dict[str, Any] = {"variant": CategoricalDistribution(list(spec.variants))}
    if "seed" in point:
        dists["seed"] = IntDistribution(0, max(max(spec.seeds), int(point["seed"])))
    if "lr" in point:
        lrs = list(spec.tune["lr"]) if role == "tune" else [point["lr"]]
        dists["lr"] = FloatDistribution(min(lrs), max(lrs), log=True)
    return dists


def active_trials(study, names: Sequence[str]) -> dict[str, list]:
    """Trials by key, skipping the duplicates a worker declined to run."""
    by_key: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(K_SKIP):
            continue
        params = t.params or t.system_attrs.get("fixed_params", {})
        by_key.setdefault(key_of(params, names), []).append(t)
    return by_key


def ensure_grid(study, spec: StudySpec, role: str, points: list[dict[str, Any]],
                only_keys: set[str] | None = None) -> int:
    """Queue every point that has no COMPLETE, RUNNING or WAITING trial; return how many were queued."""
    import optuna
    from optuna.trial import TrialState

    names = TUNE_KEY if role == "tune" else COMPARE_KEY
    space = grid_space(spec, role)
    grid_names = sorted(space)
    grids = optuna.samplers.GridSampler(space, seed=0)._all_grids
    index = {tuple(g): i for i, g in enumerate(grids)}
    by_key = active_trials(study, names)
    added = 0
    for point in points:
        key = key_of(point, names)
        if only_keys is not None and key not in only_keys:
            continue
        if any(t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING) for t in by_key.get(key, [])):
            continue
        grid_id = index.get(tuple(point[n] for n in grid_names))
        system_attrs = {"search_space": space, "grid_id": grid_id} if grid_id is not None else {}
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=point, distributions=_distributions(spec, role, point),
            user_attrs={"ablate.key": key, "ablate.role": role}, system_attrs=system_attrs))
        added += 1
    return added


def make_sampler(name: str, seed: int, startup: int, space: dict | None = None):
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler(space, seed=0)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def make_pruner(name: str, eval_points: int, startup: int = 5):
    """Pruners over the evaluations of a run (reported as 1, 2, ... eval_points, after step 0).

    Early in training the loss curves of different learning rates and warmups cross, so neither
    pruner judges the first half of the budget: median pruning starts at the evaluation past the
    half, after ``startup`` finished trials; successive halving's first rung is at that evaluation.
    """
    import optuna

    half = max(1, eval_points // 2)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, startup), n_warmup_steps=half, interval_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=half, reduction_factor=2)
    return optuna.pruners.NopPruner()


# ------------------------------------------------------------------------------------- creation
def preflight(spec: StudySpec, limit: int = 64) -> int:
    """Resolve every variant the study will train (dims, data) before anything is created or trained."""
    from ablate.train import prepare_run

    if spec.protocol == "search":
        candidates = [compose_variant(b, dict(zip(spec.slots, picks))) for b in spec.variants
                      for picks in itertools.product(*spec.slots.values())]
    else:
        candidates = list(spec.variants)
    seen = list(dict.fromkeys(candidates))[:limit]
    for variant in seen:
        try:
            prepare_run(spec.config.replace(variant=variant, seed=spec.seeds[0]))
        except AblateError as err:
            raise AblateError(f"{spec.path}: variant {variant}: {err}") from None
    return len(seen)


def create(ctx: Context, fresh: bool = False) -> dict[str, Any]:
    """Create the study (once, before any worker) or check that the existing one matches the file.

    Makes the Optuna studies, the MLflow parent run(s) and the queue of grid trials; returns the
    main study's user attributes.
    """
    import optuna

    _quiet_optuna()
    spec = ctx.spec
    if fresh:
        for name in ctx.stage_names():
            try:
                optuna.delete_study(study_name=name, storage=ctx.storage)
            except KeyError:
                pass
    main = optuna.create_study(study_name=spec.name, storage=ctx.storage, direction="minimize",
                               load_if_exists=True)
    attrs = main.user_attrs
    ctx.adopt_tracking(attrs)
    identity = spec.identity()
    if "ablate.identity" in attrs:
        old = attrs["ablate.identity"]
        if old != json.loads(json.dumps(identity)):
            raise AblateError(f"study {spec.name!r} in {ctx.storage_url} was made with other settings "
                              f"({_diff(old, identity)}); keep the file as it was, run these settings as a "
                              f"new study with --name NEW, or start over with --fresh")
    else:
        main.set_user_attr("ablate.identity", identity)
        main.set_user_attr("ablate.fingerprint", spec.fingerprint())
        main.set_user_attr("ablate.file", str(spec.path))
        main.set_user_attr("ablate.protocol", spec.protocol)
        main.set_user_attr("ablate.created", time.strftime("%Y-%m-%d %H:%M:%S"))
    if "ablate.mlflow_parent" not in attrs:
        parent = _create_parent(ctx)
        main.set_user_attr("ablate.mlflow_parent", parent)
        main.set_user_attr("ablate.tracking_uri", ctx.tracking_uri)
        main.set_user_attr("ablate.experiment", ctx.experiment or "ablate")
        attrs = ctx.main().user_attrs
        if attrs["ablate.mlflow_parent"] != parent:  # another process created the study meanwhile
            ctx.client().delete_run(parent)
    attrs = ctx.main().user_attrs
    if spec.protocol == "compare":
        ensure_grid(main, spec, "compare", compare_points(spec))
    elif spec.protocol == "tune-then-compare":
        if spec.tune_is_grid:
            tune = optuna.create_study(study_name=tune_study_name(spec), storage=ctx.storage,
                                       direction="minimize", load_if_exists=True)
            ensure_grid(tune, spec, "tune", tune_points(spec))
        else:
            for v in spec.variants:
                optuna.create_study(study_name=tune_study_name(spec, v), storage=ctx.storage,
                                    direction="minimize", load_if_exists=True)
        if "ablate.mlflow_tune_parent" not in attrs:
            tune_parent = _create_parent(ctx, parent=attrs["ablate.mlflow_parent"], stage="tune")
            main.set_user_attr("ablate.mlflow_tune_parent", tune_parent)
            attrs = ctx.main().user_attrs
        best = best_lrs(ctx, require_complete=True)
        if best is not None:
            ensure_grid(main, spec, "compare", compare_points(spec, best))
    return attrs


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

    from ablate.track import code_version, get_experiment_id

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
        for old in client.search_runs([exp_id], f"tags.`ablate.group` = '{spec.name}'", max_results=100):
            client.set_tag(old.info.run_id, "ablate.group", f"{spec.name}~{old.info.run_id[:8]}")
        tags["ablate.group"] = spec.name
        tags["mlflow.note.content"] = spec.description or f"ablate study {spec.name} ({spec.protocol})"
        run_name = f"study {spec.name}"
    else:
        tags[MLFLOW_PARENT_RUN_ID] = parent
        tags["ablate.stage"] = stage
        run_name = f"{spec.name} · lr tuning"
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


# ------------------------------------------------------------------------------------- reaping
def reap(ctx: Context) -> dict[str, list[int]]:
    """Fail the RUNNING trials whose worker is gone and queue their work again.

    Same host: the worker's pid (and its start time) is checked at once. Other hosts: a journal
    trial whose heartbeat is older than the grace period; RDB storages do this themselves (Optuna's
    heartbeat) and retry through RetryFailedTrialCallback. Every MLflow run of the study that is still
    RUNNING while its trial is not is marked FAILED.
    """
    import optuna
    from optuna.trial import TrialState

    _quiet_optuna()
    spec = ctx.spec
    storage = ctx.storage
    native = native_heartbeat(storage)
    me = worker_identity()
    now = time.time()
    reaped: dict[str, list[int]] = {}
    for name in ctx.stage_names():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        if native:
            optuna.storages.fail_stale_trials(study)
        failed = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            ident = t.user_attrs.get(K_WORKER) or {}
            if ident.get("pid") == me["pid"] and ident.get("host") == me["host"]:
                continue
            alive = worker_alive(ident) if ident else None
            why = ""
            if alive is False:
                why = f"worker pid {ident.get('pid')} on {ident.get('host')} is gone"
            elif alive is None and not native:
                beat = t.user_attrs.get(K_BEAT) or (t.datetime_start.timestamp() if t.datetime_start else now)
                if now - beat > ctx.grace_seconds:
                    why = f"no heartbeat from its worker for {now - beat:.0f}s"
            if not why:
                continue
            try:
                storage.set_trial_user_attr(t._trial_id, K_FAILURE, why)
                if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            failed.append(t)
            ctx.say(f"trial {t.number} of {name} failed: {why}; queued again")
        if failed:
            reaped[name] = [t.number for t in failed]
            role = study_role(spec, name)
            if role == "compare" or (role == "tune" and spec.tune_is_grid):
                names = TUNE_KEY if role == "tune" else COMPARE_KEY
                points = [dict(t.params) for t in failed if t.params]
                keys = {key_of(p, names) for p in points}
                ensure_grid(study, spec, role, points, only_keys=keys)
            else:
                callback = retry_callback()
                for t in failed:
                    callback(study, storage.get_trial(t._trial_id))
    _fail_orphan_runs(ctx)
    return reaped


def study_role(spec: StudySpec, name: str) -> str:
    if name.startswith(f"{spec.name}:tune"):
        return "tune"
    return "search" if spec.protocol == "search" else "compare"


def _fail_orphan_runs(ctx: Context) -> int:
    """MLflow runs of this study still RUNNING although their Optuna trial is not: mark them FAILED."""
    import optuna
    from optuna.trial import TrialState

    try:
        client = ctx.client()
        exp = client.get_experiment_by_name(ctx.experiment or "ablate")
        if exp is None:
            return 0
        runs = client.search_runs([exp.experiment_id], f"tags.`ablate.study` = '{ctx.spec.name}' and "
                                                       "attributes.status = 'RUNNING'", max_results=1000)
    except Exception:
        return 0
    states: dict[str, dict[int, Any]] = {}
    count = 0
    for run in runs:
        ref = run.data.tags.get("ablate.optuna_trial", "")
        if "#" not in ref:
            continue
        name, number = ref.rsplit("#", 1)
        if name not in states:
            try:
                study = optuna.load_study(study_name=name, storage=ctx.storage)
                states[name] = {t.number: t for t in study.get_trials(deepcopy=False)}
            except KeyError:
                states[name] = {}
        trial = states[name].get(int(number))
        if trial is not None and trial.state == TrialState.RUNNING:
            continue
        why = (trial.user_attrs.get(K_FAILURE) if trial is not None else None) or "its worker died"
        client.set_tag(run.info.run_id, "ablate.status", "failed")
        client.set_tag(run.info.run_id, "ablate.error", f"trial {number} of {name} failed: {why}")
        client.set_terminated(run.info.run_id, "FAILED")
        count += 1
    return count


# ------------------------------------------------------------------------------------- trials
class _TrialHooks(Callback):
    """Records the MLflow run id on the trial, reports evals to Optuna and prunes; on long trials it
    says where they are every ``every`` seconds."""

    def __init__(self, trial, tracker, metric: str, prune: bool, say: Callable[[str], None] | None = None,
                 every: float = 30.0):
        self.trial, self.tracker, self.metric, self.prune = trial, tracker, metric, prune
        self.last: float | None = None
        self.say, self.every, self.said = say, every, time.perf_counter()
        self.evals = 0

    def on_start(self, run: RunState) -> None:
        if self.tracker is not None and self.tracker.run_id:
            self.trial.set_user_attr(K_RUN, self.tracker.run_id)
        self.trial.set_user_attr("ablate.run_dir", str(run.run_dir))

    def on_eval(self, run: RunState, row: dict[str, float]) -> None:
        value = row.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.last = value
        if self.say and time.perf_counter() - self.said > self.every:
            self.said = time.perf_counter()
            total = f"/{run.total_steps}" if run.total_steps else ""
            self.say(f"trial {self.trial.number} at step {run.step}{total}: {self.metric} {value:.4f}")
        if run.step == 0:
            return  # the untrained model says nothing about the variant
        self.evals += 1
        self.trial.report(value, self.evals)  # by eval index: the same rungs for every budget
        if self.prune and self.trial.should_prune():
            raise StopRun("pruned", f"pruned by Optuna at step {run.step} ({self.metric} {value:.4f})")


def prune_diverged(ctx: Context, role: str) -> bool:
    """Sampled stages record a diverged run as pruned (samplers learn from it); grids as +inf."""
    return role == "search" or (role == "tune" and not ctx.spec.tune_is_grid)


def _claim(study, trial, params: dict[str, Any], names: Sequence[str]) -> str | None:
    """Why this trial must not run (its key is done or held by an earlier trial), or None."""
    from optuna.trial import TrialState

    key = key_of(params, names)
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or other.user_attrs.get(K_SKIP):
            continue
        other_params = other.params or other.system_attrs.get("fixed_params", {})
        if key_of(other_params, names) != key:
            continue
        if other.state == TrialState.COMPLETE:
            return f"already done by trial {other.number}"
        if other.state in (TrialState.RUNNING, TrialState.WAITING) and other.number < trial.number:
            return f"held by trial {other.number}"
    return None


def run_trial(ctx: Context, trial, stage: str, role: str, config: RunConfig, parent: str | None,
              prune: bool, extra: dict[str, Any] | None = None) -> float:
    """Train one trial's config with tracking and (optionally) pruning; return the objective."""
    import optuna

    from ablate.track import MLflowTracker
    from ablate.train import train

    spec = ctx.spec
    storage = trial.study._storage
    trial.set_user_attr(K_WORKER, worker_identity())
    trial.set_user_attr("ablate.variant", config.variant)
    trial.set_user_attr("ablate.seed", config.seed)
    tracker = MLflowTracker(tracking_uri=ctx.tracking_uri, experiment=ctx.experiment, parent=parent,
                            log_checkpoint=ctx.log_checkpoint,
                            extra_tags={"ablate.study": spec.name, "ablate.stage": role,
                                        "ablate.trial": str(trial.number),
                                        "ablate.optuna_trial": f"{stage}#{trial.number}",
                                        **{f"ablate.param.{k}": str(v) for k, v in (extra or {}).items()}})
    hooks = _TrialHooks(trial, tracker, spec.metric, prune, say=ctx.say)
    started = time.perf_counter()
    ctx.say(f"trial {trial.number} {_describe(config, extra)} started")
    beat = _Heartbeat(storage, trial._trial_id, ctx.heartbeat_seconds) if not native_heartbeat(storage) else None
    try:
        if beat:
            beat.__enter__()
        result: RunResult = train(config, [tracker, hooks])
    finally:
        if beat:
            beat.__exit__(None, None, None)
    value = result.final.get(spec.metric, float("nan"))
    for key, v in (("ablate.status", result.status), ("ablate.steps", result.steps),
                   ("ablate.params", result.cost.get("params")), ("ablate.train_seconds", result.train_seconds),
                   ("ablate.final", {k: v for k, v in result.final.items()})):
        trial.set_user_attr(key, v)
    took = time.perf_counter() - started
    shown = f"{spec.metric} {value:.4f}" if value == value else f"no {spec.metric}"
    ctx.say(f"trial {trial.number} {_describe(config, extra)} {result.status}: {shown} ({took:.0f}s)")
    if result.status == "pruned":
        ctx.summary.ran += 1
        raise optuna.TrialPruned(result.message)
    if result.status == "diverged":
        if role in ("search", "tune") and prune_diverged(ctx, role):
            ctx.summary.ran += 1
            raise optuna.TrialPruned(f"diverged: {result.message}")
        ctx.summary.ran += 1
        return float("inf")  # a result, not a failure: it is not run again
    if result.status != "finished" or value != value:
        raise RuntimeError(f"run ended {result.status}: {result.message}")
    ctx.summary.ran += 1
    return float(value)


def _describe(config: RunConfig, extra: dict[str, Any] | None) -> str:
    hp = " ".join(f"{k}={_fmt(v)}" for k, v in (extra or {}).items())
    return f"[{config.variant} seed {config.seed}{' ' + hp if hp else ''}]"


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def grid_objective(ctx: Context, stage: str, role: str, parent: str | None, best_lr: dict[str, float] | None = None):
    """The objective of a grid stage (compare, or the lr grid of tune-then-compare)."""
    import optuna

    spec = ctx.spec
    names = TUNE_KEY if role == "tune" else COMPARE_KEY

    def objective(trial) -> float:
        params = dict(trial.params)
        if not params:  # a trial the grid sampler made (two workers raced for the last queued one)
            params = {"variant": trial.suggest_categorical("variant", list(spec.variants))}
            if role == "tune":
                params["lr"] = trial.suggest_float("lr", min(spec.tune["lr"]), max(spec.tune["lr"]), log=True)
            else:
                params["seed"] = trial.suggest_int("seed", 0, max(spec.seeds))
                if best_lr is not None:
                    lr = best_lr.get(params["variant"], spec.config.lr)
                    params["lr"] = trial.suggest_float("lr", lr, lr, log=True)
        why = _claim(trial.study, trial, params, names)
        if why:
            trial.set_user_attr(K_SKIP, why)
            ctx.summary.skipped += 1
            raise optuna.TrialPruned(f"skipped: {why}")
        if role == "tune":
            config = spec.trial_config(params["variant"], spec.tune["seed"], lr=params["lr"],
                                       budget=spec.tune["budget"])
            extra = {"lr": params["lr"]}
        else:
            extra = {"lr": params["lr"]} if "lr" in params else {}
            config = spec.trial_config(params["variant"], params["seed"], **extra)
        return run_trial(ctx, trial, stage, role, config, parent, prune=False, extra=extra)

    return objective


def search_objective(ctx: Context, stage: str, parent: str | None, variant: str | None = None):
    """The objective of a sampled stage: the search, or one variant's lr search (tune with a range)."""
    spec = ctx.spec

    def objective(trial) -> float:
        if variant is not None:  # tune-then-compare with an lr range
            lr = spec.tune["lr"].suggest(trial, "lr")
            config = spec.trial_config(variant, spec.tune["seed"], lr=lr, budget=spec.tune["budget"])
            return run_trial(ctx, trial, stage, "tune", config, parent, prune=spec.tune["pruner"] != "none",
                             extra={"lr": lr})
        base = spec.variants[0]
        if len(spec.variants) > 1:
            base = trial.suggest_categorical("variant", list(spec.variants))
        picks = {slot: trial.suggest_categorical(slot, list(terms)) for slot, terms in spec.slots.items()}
        values = {}
        for name, space in spec.hparams.items():
            values[name] = space.suggest(trial, name) if isinstance(space, Range) else \
                trial.suggest_categorical(name, list(space))
        canon = compose_variant(base, picks)
        config = spec.trial_config(canon, spec.seeds[0], **values)
        return run_trial(ctx, trial, stage, "search", config, parent, prune=spec.search["pruner"] != "none",
                         extra=values)

    return objective


# ------------------------------------------------------------------------------------- working
def _waiting(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _count(study, states) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(K_SKIP))


def _optimize_one(ctx: Context, study, objective) -> None:
    """Run one trial through ``study.optimize`` (so RDB heartbeats and retries apply)."""
    try:
        study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)
    except (AblateError, KeyboardInterrupt):
        raise
    except Exception as err:
        ctx.summary.failed += 1
        text = f"{type(err).__name__}: {err}"
        ctx.summary.errors.append(text)
        if "Cannot tell" in str(err):
            ctx.say(f"warning: the trial was failed by another process meanwhile ({err})")
        else:
            ctx.say(f"trial failed: {text}")


def work_grid(ctx: Context, study, objective) -> None:
    """Pop queued trials until none is left."""
    while _waiting(study):
        _optimize_one(ctx, study, objective)


def work_sampled(ctx: Context, study, objective, n_trials: int) -> None:
    """Sample trials until ``n_trials`` have finished or are running (retries first)."""
    from optuna.trial import TrialState

    while True:
        done = _count(study, (TrialState.COMPLETE, TrialState.PRUNED))
        running = _count(study, (TrialState.RUNNING,))
        if done + running >= n_trials and not _waiting(study):
            return
        if done >= n_trials:
            return
        _optimize_one(ctx, study, objective)


def wait_for(ctx: Context, names: Sequence[str], poll: float = 5.0) -> None:
    """Block until the stages ``names`` have no RUNNING or WAITING trial (reaping dead workers)."""
    import optuna
    from optuna.trial import TrialState

    said = False
    while True:
        busy = 0
        for name in names:
            study = optuna.load_study(study_name=name, storage=ctx.storage)
            busy += len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))
        if not busy:
            return
        if not said:
            ctx.say(f"waiting for {busy} trial(s) of other workers before the next stage")
            said = True
        time.sleep(poll)
        reap(ctx)


def best_lrs(ctx: Context, require_complete: bool = True) -> dict[str, float] | None:
    """Each variant's best tuning lr, or None while tuning is unfinished."""
    import optuna
    from optuna.trial import TrialState

    spec = ctx.spec
    best: dict[str, float] = {}
    if spec.tune_is_grid:
        try:
            study = optuna.load_study(study_name=tune_study_name(spec), storage=ctx.storage)
        except KeyError:
            return None
        by_key = active_trials(study, TUNE_KEY)
        for variant in spec.variants:
            results = []
            for lr in spec.tune["lr"]:
                trials = by_key.get(key_of({"variant": variant, "lr": lr}, TUNE_KEY), [])
                done = [t for t in trials if t.state == TrialState.COMPLETE]
                if not done:
                    if require_complete:
                        return None
                    continue
                results.append((done[0].value, lr))
            if not results:
                return None
            best[variant] = _pick(results)
    else:
        for variant in spec.variants:
            try:
                study = optuna.load_study(study_name=tune_study_name(spec, variant), storage=ctx.storage)
            except KeyError:
                return None
            trials = [t for t in study.get_trials(deepcopy=False)
                      if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            if require_complete and (len(trials) < spec.tune["trials"] or
                                     study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
                return None
            complete = [(t.value, t.params["lr"]) for t in trials if t.state == TrialState.COMPLETE]
            if not complete:
                if require_complete:
                    raise AblateError(f"every lr tried for {variant} was pruned or diverged; "
                                      "widen [tune] lr towards smaller values")
                return None
            best[variant] = _pick(complete)
    return best


def _pick(results: list[tuple[float | None, float]]) -> float:
    finite = [(v, lr) for v, lr in results if v is not None and math.isfinite(v)]
    if not finite:  # everything diverged: the smallest lr is the least bad
        return min(lr for _, lr in results)
    return min(finite)[1]


def work(ctx: Context) -> WorkSummary:
    """What one worker process does: every stage of the protocol, in order."""
    import optuna

    _quiet_optuna()
    spec = ctx.spec
    attrs = ctx.main().user_attrs
    if attrs.get("ablate.identity") != json.loads(json.dumps(spec.identity())):
        raise AblateError(f"study {spec.name!r} in {ctx.storage_url} was made with other settings "
                          f"({_diff(attrs.get('ablate.identity', {}), spec.identity())}); start workers with "
                          "the same study file, --gpu and --set as the study")
    ctx.adopt_tracking(attrs)
    parent = attrs["ablate.mlflow_parent"]
    reap(ctx)
    if spec.protocol == "compare":
        study = ctx.main(sampler=make_sampler("grid", 0, 0, grid_space(spec, "compare")))
        work_grid(ctx, study, grid_objective(ctx, spec.name, "compare", parent))
    elif spec.protocol == "search":
        s = spec.search
        study = ctx.main(sampler=make_sampler(s["sampler"], s["seed"] + ctx.worker_index, s["startup_trials"]),
                         pruner=make_pruner(s["pruner"], spec.config.eval_points, s["startup_trials"]))
        work_sampled(ctx, study, search_objective(ctx, spec.name, parent), s["trials"])
    else:
        tune_parent = attrs.get("ablate.mlflow_tune_parent", parent)
        t = spec.tune
        if spec.tune_is_grid:
            name = tune_study_name(spec)
            study = ctx.load(name, sampler=make_sampler("grid", 0, 0, grid_space(spec, "tune")))
            work_grid(ctx, study, grid_objective(ctx, name, "tune", tune_parent))
        else:
            for variant in spec.variants:
                name = tune_study_name(spec, variant)
                study = ctx.load(name, sampler=make_sampler(t["sampler"], ctx.worker_index, min(4, t["trials"])),
                                 pruner=make_pruner(t["pruner"], spec.config.eval_points, min(4, t["trials"])))
                work_sampled(ctx, study, search_objective(ctx, name, tune_parent, variant), t["trials"])
        wait_for(ctx, ctx.stage_names()[:-1])
        best = best_lrs(ctx, require_complete=True)
        if best is None:
            raise AblateError("lr tuning is incomplete (trials failed); re-run `ablate study run` to finish it")
        study = ctx.main(sampler=make_sampler("grid", 0, 0, grid_space(spec, "compare")))
        ensure_grid(study, spec, "compare", compare_points(spec, best))
        work_grid(ctx, study, grid_objective(ctx, spec.name, "compare", parent, best))
    return ctx.summary


# ------------------------------------------------------------------------------------- progress
@dataclass
class Progress:
    stage: str
    role: str
    expected: int
    done: int
    pruned: int
    running: int
    waiting: int
    failed: int
    missing: list[str]
    running_trials: list[Any]


def progress(ctx: Context) -> list[Progress]:
    """Where every stage stands (for `study status` and the end of `study run`)."""
    import optuna
    from optuna.trial import TrialState

    spec = ctx.spec
    out = []
    for name in ctx.stage_names():
        try:
            study = optuna.load_study(study_name=name, storage=ctx.storage)
        except KeyError:
            continue
        role = study_role(spec, name)
        trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(K_SKIP)]
        by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
        missing: list[str] = []
        if role == "search" or (role == "tune" and not spec.tune_is_grid):
            expected = spec.search["trials"] if role == "search" else spec.tune["trials"]
        else:
            if role == "tune":
                points, names = tune_points(spec), TUNE_KEY
            else:
                points, names = compare_points(spec), COMPARE_KEY
            expected = len(points)
            done_keys = {key_of(t.params, names) for t in by_state[TrialState.COMPLETE]}
            missing = [f"{p['variant']} " + (f"seed {p['seed']}" if "seed" in p else f"lr {_fmt(p['lr'])}")
                       for p in points if key_of(p, names) not in done_keys]
        out.append(Progress(name, role, expected, len(by_state[TrialState.COMPLETE]),
                            len(by_state[TrialState.PRUNED]), len(by_state[TrialState.RUNNING]),
                            len(by_state[TrialState.WAITING]), len(by_state[TrialState.FAIL]), missing,
                            by_state[TrialState.RUNNING]))
    return out


# ------------------------------------------------------------------------------------- results
def compare_trials(ctx: Context) -> tuple[list[Any], list[str]]:
    """The COMPLETE trials of the comparison, one per (variant, seed) of the file; and what is missing."""
    import optuna
    from optuna.trial import TrialState

    spec = ctx.spec
    study = optuna.load_study(study_name=spec.name, storage=ctx.storage)
    by_key = active_trials(study, COMPARE_KEY)
    chosen, missing = [], []
    for point in compare_points(spec):
        done = sorted((t for t in by_key.get(key_of(point, COMPARE_KEY), []) if t.state == TrialState.COMPLETE),
                      key=lambda t: t.number)
        if done and done[0].user_attrs.get(K_RUN):
            chosen.append(done[0])
        else:
            missing.append(f"{point['variant']} seed {point['seed']}")
    return chosen, missing


def tuning_table(ctx: Context) -> list[dict[str, Any]]:
    """Per variant: every lr tried with its result, and the chosen one."""
    import optuna
    from optuna.trial import TrialState

    spec = ctx.spec
    best = best_lrs(ctx, require_complete=False) or {}
    rows = []
    for variant in spec.variants:
        name = tune_study_name(spec) if spec.tune_is_grid else tune_study_name(spec, variant)
        try:
            study = optuna.load_study(study_name=name, storage=ctx.storage)
        except KeyError:
            continue
        tried = []
        for t in study.get_trials(deepcopy=False):
            if t.user_attrs.get(K_SKIP) or t.params.get("variant", variant) != variant or "lr" not in t.params:
                continue
            if t.state == TrialState.COMPLETE:
                tried.append((t.params["lr"], t.value, t.user_attrs.get("ablate.status", "finished")))
            elif t.state == TrialState.PRUNED:
                tried.append((t.params["lr"], None, "pruned"))
        rows.append({"variant": variant, "tried": sorted(tried), "best": best.get(variant)})
    return rows


# ------------------------------------------------------------------------------------- factorial
@dataclass(frozen=True)
class Factor:
    field: str  # slot or model option
    low: str  # the baseline's level (coded -1)
    high: str  # the other level (coded +1); the factor's name


@dataclass(frozen=True)
class Effect:
    term: str
    order: int
    estimate: float  # the 2^order-scaled contrast: a difference (of differences) of the metric
    se: float
    low: float
    high: float
    p_value: float
    meaning: str


@dataclass(frozen=True)
class FactorialResult:
    factors: list[Factor]
    effects: list[Effect]
    additivity: list[Effect]  # full combination vs baseline: observed, sum of single changes, their gap
    n_runs: int
    n_seeds: int
    df: int
    level: float
    metric: str


def _levels(variant: str) -> dict[str, str]:
    from ablate.variant import ModelOptions, format_value, parse_variant

    v = parse_variant(variant)
    out = {c.slot: c.label() for c in v.choices}
    for f in dataclasses.fields(ModelOptions):
        out[f"model.{f.name}"] = f"{f.name}={format_value(getattr(v.model, f.name))}"
    return out


def factorial_design(variants: Sequence[str], baseline: str) -> list[Factor] | None:
    """The factors when ``variants`` form a full 2^k factorial (k >= 2) around ``baseline``."""
    if baseline not in variants:
        return None
    levels = {v: _levels(v) for v in variants}
    base = levels[baseline]
    factors = []
    for fld in base:
        values = {lv[fld] for lv in levels.values()}
        if len(values) == 1:
            continue
        if len(values) != 2:
            return None
        (high,) = values - {base[fld]}
        factors.append(Factor(fld, base[fld], high))
    k = len(factors)
    if k < 2 or len(variants) != 2 ** k:
        return None
    combos = {tuple(levels[v][f.field] == f.high for f in factors) for v in variants}
    return factors if len(combos) == 2 ** k else None


def factorial_effects(rows: Sequence[tuple[str, int, float]], factors: list[Factor], *, level: float = 0.95,
                      metric: str = "val_loss") -> FactorialResult:
    """Main effects and interactions from a linear model on +-1 coded factors, blocked by seed.

    ``rows`` are (variant, seed, value) of finished runs. The model is the saturated factorial
    (every interaction up to order k) plus one effect per seed; each term is reported as its
    contrast: a main effect is mean(metric | on) - mean(metric | off), a two-factor interaction is the
    difference of differences (AB - A - B + baseline, averaged over the other factors), and so on,
    i.e. 2^order times the coefficient, with a t-based confidence interval.
    """
    import numpy as np
    from scipy import stats as st

    k = len(factors)
    terms = [c for r in range(1, k + 1) for c in itertools.combinations(range(k), r)]
    seeds = sorted({s for _, s, _ in rows})
    codes = {}
    for variant, _, _ in rows:
        if variant not in codes:
            lv = _levels(variant)
            codes[variant] = [1.0 if lv[f.field] == f.high else -1.0 for f in factors]

    def design_row(code: list[float], seed: int | None) -> list[float]:
        row = [1.0] + [1.0 if seed == s else 0.0 for s in seeds[1:]]
        row += [float(np.prod([code[i] for i in term])) for term in terms]
        return row

    X = np.array([design_row(codes[v], s) for v, s, _ in rows])
    y = np.array([float(val) for _, _, val in rows])
    n, p = X.shape
    rank = np.linalg.matrix_rank(X)
    df = n - rank
    if rank < p or df < 1:
        raise AblateError(f"the factorial needs every combination on at least two seeds to estimate its noise "
                          f"(have {n} finished runs for {2 ** k} combinations); run more seeds")
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    sigma2 = float(resid @ resid) / df
    cov = sigma2 * np.linalg.pinv(X.T @ X)
    tcrit = float(st.t.ppf(0.5 + level / 2, df))
    offset = len(seeds)

    def contrast(vec: np.ndarray, name: str, order: int, meaning: str) -> Effect:
        est = float(vec @ beta)
        se = float(math.sqrt(max(vec @ cov @ vec, 0.0)))
        p_value = float(2 * st.t.sf(abs(est) / se, df)) if se > 0 else (0.0 if est else 1.0)
        return Effect(name, order, est, se, est - tcrit * se, est + tcrit * se, p_value, meaning)

    effects = []
    for j, term in enumerate(terms):
        vec = np.zeros(p)
        vec[offset + j] = 2.0 ** len(term)
        name = " x ".join(factors[i].high for i in term)
        if len(term) == 1:
            meaning = f"{factors[term[0]].high} vs {factors[term[0]].low}, averaged over the other factors"
        else:
            meaning = "difference of differences: how far the combination departs from adding the parts"
        effects.append(contrast(vec, name, len(term), meaning))

    def cell(code: list[float]) -> np.ndarray:
        row = np.array(design_row(code, None))
        row[1:offset] = 0.0  # seed effects cancel in differences
        return row

    low = cell([-1.0] * k)
    full = cell([1.0] * k) - low
    singles = sum(cell([1.0 if i == j else -1.0 for i in range(k)]) - low for j in range(k))
    combo = "+".join(f.high for f in factors)
    additivity = [
        contrast(full, f"{combo} vs baseline (observed)", k, "the whole change at once"),
        contrast(singles, "sum of the single changes", 1, "what adding the parts predicts"),
        contrast(full - singles, "non-additivity", k, "observed minus the sum; 0 means the parts add up"),
    ]
    return FactorialResult(factors, effects, additivity, n, len(seeds), df, level, metric)


def effect_reading(effect: Effect, lower_is_better: bool = True) -> str:
    if effect.low <= 0 <= effect.high:
        return "no detectable effect" if effect.order == 1 and "sum" not in effect.term else \
            ("additive within noise" if effect.order > 1 or "non-additivity" in effect.term else "no detectable effect")
    better = (effect.estimate < 0) == lower_is_better
    if effect.term.startswith("non-additivity") or (effect.order > 1 and " x " in effect.term):
        return "synergy: more than the sum" if better else "interference: less than the sum"
    return "helps" if better else "hurts"
