"""Per-variant training recipes in a study file: ``[recipes."<variant>"]`` gives one variant its own
training settings (its optimizer and schedule, label smoothing), so "the 2017 Transformer trained the
2017 way" can be compared with GPT-2 trained the GPT-2 way::

    [recipes."vaswani+dropout=0.1"]
    file = "../recipes/vaswani2017.toml"     # a run config file (relative to the study file), and/or keys:
    label_smoothing = 0.1

Only training settings are allowed (``RECIPE_KEYS``): everything a comparison must share (budget, data,
tokenizer, batch, dims, eval batches) stays shared, so the fairness checks still hold. A recipe's
values apply over ``[train]``; a tuned learning rate (tune-then-compare) applies over the recipe's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablate.config import coerce, read_toml
from ablate.errors import AblateError

RECIPE_KEYS = ("lr", "min_lr", "warmup", "schedule", "weight_decay", "beta1", "beta2", "grad_clip",
               "label_smoothing")


def parse_recipes(path: Path, table: Any, variants: tuple[str, ...], canonical) -> dict[str, dict[str, Any]]:
    """``{canonical variant: {setting: value}}`` from the ``[recipes]`` table (checked strictly)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise AblateError(f"'recipes' in {path}: must be a table of tables, e.g. [recipes.\"vaswani\"]")
    out: dict[str, dict[str, Any]] = {}
    for text, entry in table.items():
        where = f"recipes.{text!r}"
        variant = canonical(path, where, text)
        if variant not in variants:
            raise AblateError(f"{where!r} in {path}: {variant!r} is not one of the study's variants "
                              f"({', '.join(variants)}); recipes are per compared variant")
        if not isinstance(entry, dict):
            raise AblateError(f"{where!r} in {path}: must be a table of training settings, e.g. label_smoothing = 0.1")
        values: dict[str, Any] = {}
        entry = dict(entry)
        file = entry.pop("file", None)
        if file is not None:
            values.update(_from_file(path, where, file, variant, canonical))
        values.update(_settings(path, where, entry))
        out[variant] = values
    return out


def _from_file(path: Path, where: str, file: Any, variant: str, canonical) -> dict[str, Any]:
    if not isinstance(file, str) or not file.strip():
        raise AblateError(f"'{where}.file' in {path}: must be the path of a run config file, e.g. \"recipes/x.toml\"")
    recipe_path = (path.parent / file).resolve()
    data = read_toml(recipe_path, "recipe file")
    named = data.pop("variant", None)
    if named is not None and canonical(recipe_path, "variant", named) != variant:
        raise AblateError(f"'{where}.file' in {path}: {recipe_path} is a recipe for {named!r}, not for {variant!r}")
    return _settings(recipe_path, "", data)


def _settings(path: Path, where: str, entry: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for key, value in entry.items():
        dotted = f"{where}.{key}" if where else key
        if key not in RECIPE_KEYS:
            raise AblateError(f"{dotted!r} in {path}: a recipe sets training settings only ({', '.join(RECIPE_KEYS)}); "
                              "what a comparison must share (budget, data, batch, dims, ...) stays at the top level")
        try:
            values[key] = coerce(key, value)
        except AblateError as err:
            raise AblateError(f"{dotted!r} in {path}: {err}") from None
    return values
