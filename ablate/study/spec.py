"""The study file: its schema, strict parsing (`load_study`) and the `StudySpec` it becomes."""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.config import RunConfig, coerce, read_toml, validate
from ablate.errors import AblateError
from ablate.metrics import ACCURACY_EXAMPLES, LOSS_METRICS, known as known_metric
from ablate.study.pretrain import PROTOCOL as PRETRAIN, parse_tables as parse_stage_tables
from ablate.study.ranges import (SEARCH_META, Range, config_value, fail, parse_range_or_list, search_meta,
                                 tune_spec, unknown_key)
from ablate.study.recipes import parse_recipes
from ablate.variant import foreign_origins

PROTOCOLS = ("compare", "search", "tune-then-compare", PRETRAIN)
METRICS = LOSS_METRICS  # and the task accuracies (ablate.metrics.is_accuracy), higher is better
TOP_CONFIG = ("data", "data_file", "tokenizer", "size", "d_model", "n_layers", "n_heads", "context", "budget")
STUDY_KEYS = ("name", "description", "protocol", "seeds", "metric", "baseline", "variants", "alpha", *TOP_CONFIG)
TABLES = ("train", "search", "tune", "gpu", "pretrain", "finetune", "recipes")
PER_TRIAL = ("variant", "seed")  # set by the study for every trial
TUNABLE = ("lr", "min_lr", "warmup", "weight_decay", "beta1", "beta2", "grad_clip", "batch_size", "grad_accum",
           "schedule")
# settings that change where and how fast a run goes, never its result: they may differ between workers
EXECUTION_ONLY = ("device", "compile", "out_dir", "cache_dir", "log_every", "checkpoint_every")
DEFAULT_SEEDS = 3
MAX_NAME = 100  # a study's name names its folders and journal (file names stop at 255 bytes)
MAX_SEEDS = 10_000  # a count beyond this is a typo, not a study (and would fill memory with its seed list)


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
    tune: dict[str, Any] | None  # tune-then-compare: lr (tuple | Range), warmup (optional, same kind), trials, seed, budget, sampler, pruner
    config: RunConfig  # every trial's settings before variant, seed (and searched values)
    gpu: bool = False
    overrides: tuple[str, ...] = ()
    pretrain: dict[str, Any] | None = None  # pretrain-then-finetune: {"config": {..}, "seed", "per_seed"}
    finetune: dict[str, Any] | None = None  # pretrain-then-finetune: the initialised arm's optimizer settings
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> its own training settings

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
        if self.pretrain is not None:
            out["pretrain"], out["finetune"] = self.pretrain, self.finetune
        if self.recipes:
            out["recipes"] = self.recipes
        if plugins := foreign_origins([*self.variants, *(t for terms in self.slots.values() for t in terms)]):
            out["plugins"] = plugins  # another version of a plugin's code is another study
        return out

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def tune_is_grid(self) -> bool:
        return bool(self.tune) and isinstance(self.tune["lr"], tuple)

    def trial_config(self, variant: str, seed: int, **values) -> RunConfig:
        """The RunConfig of one trial; a tuned lr keeps the file's min_lr / lr ratio."""
        base = self.config.replace(**self.recipes.get(variant, {}))  # the variant's own recipe, if any
        changes: dict[str, Any] = {"variant": variant, "seed": int(seed)}
        for key, value in values.items():
            changes[key] = coerce(key, value)
        if "lr" in values and "min_lr" not in values:
            changes["min_lr"] = changes["lr"] * (base.min_lr / base.lr)
        config = base.replace(**changes)
        validate(config)
        return config


def _canonical(path, key: str, text: Any) -> str:
    from ablate.variant import parse_variant

    if not isinstance(text, str) or not text.strip():
        raise fail(path, key, f"must be a variant string such as \"rope+swiglu\", got {text!r}")
    try:
        return parse_variant(text).name
    except AblateError as err:
        raise AblateError(f"{key!r} in {path}: {err}") from None


def _slot_term(path, key: str, slot: str, term: Any) -> str:
    """A component term for ``slot`` (e.g. ``gqa(kv_heads=2)``), checked and in canonical form."""
    from ablate.catalog import lookup
    from ablate.variant import _TERM, parse_variant

    if not isinstance(term, str) or not _TERM.match(term):
        raise fail(path, key, f"must be a list of {slot} components such as \"rope\", got {term!r}")
    try:
        spec = lookup(_TERM.match(term).group(1), slot)
        choice = parse_variant(term)[slot]
    except AblateError as err:
        raise AblateError(f"{key!r} in {path}: {err}") from None
    if choice.name != spec.name:
        raise fail(path, key, f"{term!r} is not a {slot} component (see `ablate list {slot}`)")
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
        raise fail(path, "seeds", "must be a count (e.g. 3) or a list of seeds (e.g. [0, 1, 2])")
    if isinstance(value, int):
        if value < 1:
            raise fail(path, "seeds", f"must be at least 1, got {value}")
        if value > MAX_SEEDS:
            raise fail(path, "seeds", f"must be at most {MAX_SEEDS:,} (runs per variant), got {value}")
        return tuple(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                 for s in value):
        if len(set(value)) != len(value):
            raise fail(path, "seeds", f"lists a seed twice: {value}")
        return tuple(value)
    raise fail(path, "seeds", f"must be a count (e.g. 3) or a non-empty list of seeds >= 0 (e.g. [0, 1, 2]), got {value!r}")


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


def _checked_config(path: Path, values: dict[str, Any], where: str = "") -> RunConfig:
    """The trials' shared settings as a RunConfig, with its values checked (ranges, budget, size)."""
    from ablate.budget import parse_budget
    from ablate.presets import get_size

    try:
        config = RunConfig(**values)
        validate(config)
        parse_budget(config.budget)
        get_size(config.size)
    except AblateError as err:
        raise AblateError(f"{path}: {where}{err}") from None
    return config


def load_study(path: str | Path, *, gpu: bool = False, sets: Sequence[str] = (), name: str | None = None) -> StudySpec:
    """Read and check a study file; ``gpu`` applies its [gpu] table, ``sets`` are ``key=value`` overrides."""
    path = Path(path)
    data = read_toml(path, "study file", "; see studies/ for examples")
    for key in data:
        if key not in STUDY_KEYS and key not in TABLES:
            raise unknown_key(path, key, (*STUDY_KEYS, *(f"[{t}]" for t in TABLES)))
    for table in TABLES:
        if table in data and not isinstance(data[table], dict):
            raise fail(path, table, f"must be a table ([{table}]), got {data[table]!r}")

    file_name = data.get("name", path.stem)
    if not isinstance(file_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", file_name) \
            or len(file_name) > MAX_NAME:  # it names folders and files: a long one fails the file system
        raise fail(path, "name", f"must be a simple name (letters, digits, _ . -) of at most {MAX_NAME} characters, "
                                 f"got {file_name[:MAX_NAME + 10] if isinstance(file_name, str) else file_name!r}")
    study_name = name if name is not None else file_name + ("-gpu" if gpu else "")  # --name "": refused, not ignored
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", study_name) or len(study_name) > MAX_NAME:
        raise AblateError(f"--name {study_name[:MAX_NAME + 10]!r} must be a simple name (letters, digits, _ . -) of at "
                          f"most {MAX_NAME} characters")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail(path, "description", "must be a string")
    protocol = data.get("protocol", "compare")
    if protocol not in PROTOCOLS:
        close = difflib.get_close_matches(str(protocol), PROTOCOLS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise fail(path, "protocol", f"unknown protocol {protocol!r}{hint}; choose {', '.join(PROTOCOLS)}")
    metric = data.get("metric", "val_loss")
    if not isinstance(metric, str) or not known_metric(metric):
        raise fail(path, "metric", f"unknown metric {metric!r}; choose {' or '.join(METRICS)} "
                                    f"(lower is better) or a task accuracy ({ACCURACY_EXAMPLES}; higher is better)")
    alpha = data.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise fail(path, "alpha", f"must be a number between 0 and 1 (e.g. 0.05), got {alpha!r}")

    # the settings every trial shares: defaults -> top-level keys -> [train] -> [gpu] -> --set
    overrides = parse_set(sets)
    for key in [k for k in overrides if k.startswith(("pretrain.", "finetune."))]:  # --set pretrain.budget=...
        table, sub = key.split(".", 1)
        data[table] = {**(data.get(table) if isinstance(data.get(table), dict) else {}), sub: overrides.pop(key)}
    seeds_source = "--set" if "seeds" in overrides else path
    seeds = _parse_seeds(seeds_source, overrides.pop("seeds", data.get("seeds", DEFAULT_SEEDS)))
    values: dict[str, Any] = {}
    for key in TOP_CONFIG:
        if key in data:
            values[key] = config_value(path, key, key, data[key])
    if gpu and not data.get("gpu"):  # otherwise a "-gpu" study would rerun the CPU settings under another name
        raise AblateError(f"{path} has no [gpu] table, so --gpu would change nothing; add a [gpu] table with the "
                          "settings for a GPU (e.g. size, batch_size, budget) or run without --gpu")
    unapplied: dict[str, Any] = {}  # [gpu] without --gpu: its values are checked as if applied
    for table in ("train", "gpu"):  # [gpu] is checked always, applied with --gpu only
        for key, value in data.get(table, {}).items():
            dotted = f"{table}.{key}"
            if key in PER_TRIAL:
                raise fail(path, dotted, f"{key} is set by the study for every trial; "
                                          f"list {'variants' if key == 'variant' else 'seeds'} at the top level")
            if table == "train" and key in TOP_CONFIG:
                raise fail(path, dotted, f"put {key} at the top level of the file, not in [train]")
            checked = config_value(path, dotted, key, value)
            if table == "train" or gpu:
                values[key] = checked
            else:
                unapplied[key] = checked
    run_settings = {f.name for f in dataclasses.fields(RunConfig)}
    for key, value in overrides.items():
        if key in PER_TRIAL:
            raise AblateError(f"--set {key}: {key} is set by the study for every trial; "
                              + ("give how many with --set seeds=N" if key == "seed" else "list the variants in the study file"))
        if key in (*STUDY_KEYS, *TABLES) and key not in run_settings:  # variants, baseline, metric, [search] ...
            fix = "give --name NEW" if key == "name" else "edit it in a copy of the file and run that as a new study"
            raise AblateError(f"--set {key}: {key} is part of the study's design, which --set does not change; {fix}")
        if key not in run_settings:  # suggest among what --set takes: the run's settings and seeds
            close = difflib.get_close_matches(key, [*sorted(run_settings - set(PER_TRIAL)), "seeds"], n=1)
            raise AblateError(f"--set {key}: unknown setting{f'; did you mean {close[0]!r}?' if close else ''} "
                              f"(--set takes seeds and a run's settings: see `ablate run --help`)")
        values[key] = config_value("--set", key, key, value)
    values.setdefault("out_dir", str(Path("runs") / "studies" / study_name))
    config = _checked_config(path, values)
    if unapplied:
        _checked_config(path, {**values, **unapplied}, "[gpu]: ")

    # variants, search space, tuning
    search_table = dict(data.get("search", {}))
    tune_table = data.get("tune")
    variants_raw = data.get("variants")
    if variants_raw is not None and (not isinstance(variants_raw, list) or not variants_raw):
        raise fail(path, "variants", "must be a non-empty list of variant strings, e.g. [\"baseline\", \"rope\"]")
    default_baseline = variants_raw[0] if protocol == PRETRAIN and variants_raw else "baseline"
    baseline = _canonical(path, "baseline", data.get("baseline", default_baseline))
    base_variants: list[str] = []
    for i, text in enumerate(variants_raw or []):
        canon = _canonical(path, f"variants[{i}]", text)
        if canon in base_variants:
            raise fail(path, "variants", f"{text!r} is the same variant as an earlier entry ({canon!r}); list it once")
        base_variants.append(canon)

    from ablate.registry import SLOTS

    slots: dict[str, tuple[str, ...]] = {}
    hparams: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, value in search_table.items():
        dotted = f"search.{key}"
        if key in SLOTS:
            if not isinstance(value, list) or not value:
                raise fail(path, dotted, f"must be a non-empty list of {key} components, e.g. [\"learned\", \"rope\"]")
            terms = tuple(_slot_term(path, dotted, key, t) for t in value)
            if len(set(terms)) != len(terms):
                raise fail(path, dotted, f"lists a component twice: {value}")
            slots[key] = terms
        elif key in TUNABLE:
            if protocol != "search":
                raise fail(path, dotted, "a compare study varies only components (slots); to tune the "
                                          "learning rate per variant use protocol = \"tune-then-compare\", "
                                          "to search hyperparameters protocol = \"search\"")
            hparams[key] = parse_range_or_list(path, dotted, key, value)
        elif key in SEARCH_META:
            if protocol != "search":
                raise fail(path, dotted, f"{key} belongs to protocol = \"search\" (this study is {protocol!r})")
            meta[key] = value
        else:
            raise unknown_key(path, dotted, (*SLOTS, *TUNABLE, *SEARCH_META), " in [search]")

    search: dict[str, Any] = {}
    tune: dict[str, Any] | None = None
    if protocol == "search":
        if not slots and not hparams and len(base_variants) < 2:
            raise fail(path, "search", "a search needs a space: slot lists (e.g. position = [\"learned\", \"rope\"]), "
                                        "hyperparameters (e.g. lr = {low = 1e-4, high = 3e-3, log = true}) "
                                        "or two or more variants")
        if len(seeds) != 1:
            raise fail(seeds_source, "seeds", f"a search trains one seed per trial; set seeds = [{seeds[0]}] "
                                               "(or use protocol = \"tune-then-compare\" to compare over seeds)")
        search = search_meta(path, meta)
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
        if len(variants) < 2 and protocol != PRETRAIN:  # pretrain-then-finetune compares arms of each variant
            raise fail(path, "variants", "a comparison needs at least two variants (the baseline and one more)")
        if baseline not in variants:
            raise fail(path, "baseline", f"{baseline!r} is not among the variants ({', '.join(variants)}); "
                                          "add it to variants or choose baseline = one of them")
        # the baseline first, the rest in the file's order
        variants = (baseline, *[v for v in variants if v != baseline])
    if protocol == "tune-then-compare":
        if not isinstance(tune_table, dict) or "lr" not in tune_table:
            raise fail(path, "tune", "tune-then-compare needs a [tune] table with lr = [..] (a grid) "
                                      "or lr = {low = .., high = .., log = true} and trials = N")
        tune = tune_spec(path, tune_table, config)
    elif tune_table is not None:
        raise fail(path, "tune", f"[tune] belongs to protocol = \"tune-then-compare\" (this study is {protocol!r})")

    pretrain, finetune = parse_stage_tables(path, data, config, protocol)
    recipes = parse_recipes(path, data.get("recipes"), variants, _canonical)

    return StudySpec(path=path.resolve(), name=study_name, file_name=file_name, description=description,
                     protocol=protocol, metric=metric, alpha=float(alpha), seeds=seeds, baseline=baseline,
                     variants=variants, slots=slots, hparams=hparams, search=search, tune=tune, config=config,
                     gpu=gpu, overrides=tuple(sets), pretrain=pretrain, finetune=finetune, recipes=recipes)
