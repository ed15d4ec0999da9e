"""Hyperparameters in a study file: value lists and ranges (``Range``), the ``[search]`` and ``[tune]``
tables, and the one-line errors every part of a study file's parsing raises (``fail``, ``unknown_key``)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.config import RunConfig, coerce
from ablate.errors import AblateError

SAMPLERS = ("tpe", "random", "qmc")
PRUNERS = ("median", "halving", "none")
SEARCH_META = ("trials", "sampler", "pruner", "seed", "startup_trials")
TUNE_KEYS = ("lr", "warmup", "trials", "seed", "budget", "sampler", "pruner")

DEFAULT_TUNE_SEED = 1000
DEFAULT_TUNE_TRIALS = 6


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


def fail(path: Path | str, key: str, problem: str) -> AblateError:
    return AblateError(f"{key!r} in {path}: {problem}")


def unknown_key(path, key: str, known: Sequence[str], where: str = "") -> AblateError:
    close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return AblateError(f"unknown key {key!r} in {path}{hint} (allowed{where}: {', '.join(known)})")


def config_value(path, dotted: str, key: str, value: Any) -> Any:
    try:
        return coerce(key, value)
    except AblateError as err:
        raise AblateError(f"{dotted!r} in {path}: {err}") from None


def parse_range_or_list(path, dotted: str, name: str, value: Any, allow_range: bool = True):
    """A hyperparameter's values: a list (categorical / grid) or ``{low, high, log, step}``."""
    default = getattr(RunConfig(), name)
    if isinstance(value, list):
        if not value:
            raise fail(path, dotted, "is an empty list; give at least one value")
        values = tuple(config_value(path, dotted, name, v) for v in value)
        if len(set(values)) != len(values):
            raise fail(path, dotted, f"lists a value twice: {value}")
        return values
    if isinstance(value, dict):
        if not allow_range:
            raise fail(path, dotted, "must be a list of values here (a grid), e.g. [1e-3, 3e-3]")
        if isinstance(default, str) or isinstance(default, bool):
            raise fail(path, dotted, f"is a {type(default).__name__} setting; give a list of values, not a range")
        unknown = set(value) - {"low", "high", "log", "step"}
        if unknown:
            raise unknown_key(path, f"{dotted}.{sorted(unknown)[0]}", ["low", "high", "log", "step"])
        if "low" not in value or "high" not in value:
            raise fail(path, dotted, "a range needs low and high, e.g. {low = 1e-4, high = 3e-3, log = true}")
        low, high = value["low"], value["high"]
        for k, v in (("low", low), ("high", high), ("step", value.get("step", 1))):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise fail(path, f"{dotted}.{k}", f"must be a number, got {v!r}")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise fail(path, f"{dotted}.log", f"must be true or false, got {log!r}")
        if not low < high:
            raise fail(path, dotted, f"needs low < high, got low={low}, high={high}")
        if log and low <= 0:
            raise fail(path, dotted, f"a log range needs low > 0, got {low}")
        if log and "step" in value:
            raise fail(path, dotted, "takes either log = true or a step, not both")
        integer = isinstance(default, int)
        if integer and not all(float(v).is_integer() for v in (low, high, value.get("step", 1))):
            raise fail(path, dotted, f"{name} is a whole number; give integer low/high/step")
        return Range(float(low), float(high), log, float(value["step"]) if "step" in value else None, integer)
    raise fail(path, dotted, f"must be a list of values or a range table {{low = ..., high = ...}}, got {value!r}")


def search_meta(path, meta: dict[str, Any]) -> dict[str, Any]:
    out = {"trials": 20, "sampler": "tpe", "pruner": "median", "seed": 0, "startup_trials": 5}
    out.update(meta)
    for key in ("trials", "seed", "startup_trials"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "trials" else 0):
            raise fail(path, f"search.{key}", f"must be a whole number{' >= 1' if key == 'trials' else ' >= 0'}, got {v!r}")
    if out["sampler"] not in SAMPLERS:
        raise fail(path, "search.sampler", f"unknown sampler {out['sampler']!r}; choose {', '.join(SAMPLERS)}")
    if out["pruner"] not in PRUNERS:
        raise fail(path, "search.pruner", f"unknown pruner {out['pruner']!r}; choose {', '.join(PRUNERS)}")
    return out


def tune_spec(path, table: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    for key in table:
        if key not in TUNE_KEYS:
            raise unknown_key(path, f"tune.{key}", TUNE_KEYS, " in [tune]")
    lr = parse_range_or_list(path, "tune.lr", "lr", table["lr"])
    tune: dict[str, Any] = {"lr": lr, "seed": table.get("seed", DEFAULT_TUNE_SEED),
                            "budget": table.get("budget", config.budget)}
    if "warmup" in table:  # tuned jointly with the lr: a grid with an lr grid, sampled with an lr range
        tune["warmup"] = parse_range_or_list(path, "tune.warmup", "warmup", table["warmup"],
                                              allow_range=not isinstance(lr, tuple))
    if isinstance(tune["seed"], bool) or not isinstance(tune["seed"], int) or tune["seed"] < 0:
        raise fail(path, "tune.seed", f"must be a whole number >= 0, got {tune['seed']!r}")
    try:
        from ablate.budget import parse_budget

        parse_budget(config_value(path, "tune.budget", "budget", tune["budget"]))
    except AblateError as err:
        raise AblateError(f"'tune.budget' in {path}: {err}") from None
    if isinstance(lr, tuple):
        for key in ("trials", "sampler"):
            if key in table:
                raise fail(path, f"tune.{key}", "applies to an lr range; with an lr list every value is tried once")
        tune["pruner"] = table.get("pruner", "none")
    else:
        tune["trials"] = table.get("trials", DEFAULT_TUNE_TRIALS)
        tune["sampler"] = table.get("sampler", "tpe")
        tune["pruner"] = table.get("pruner", "median")
        t = tune["trials"]
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise fail(path, "tune.trials", f"must be a whole number >= 1, got {t!r}")
        if tune["sampler"] not in SAMPLERS:
            raise fail(path, "tune.sampler", f"unknown sampler {tune['sampler']!r}; choose {', '.join(SAMPLERS)}")
    if tune["pruner"] not in PRUNERS:
        raise fail(path, "tune.pruner", f"unknown pruner {tune['pruner']!r}; choose {', '.join(PRUNERS)}")
    return tune
