"""The pretrain-then-finetune protocol's study-file tables and token arithmetic (no execution here).

``[pretrain]`` holds stage 1's RunConfig settings (data, decontaminate, budget, lr, ...) over the
top-level ones, plus ``seed`` (the pretraining seed, default 1000: none of the compared seeds) and
``per_seed`` (false: one pretraining run per variant, shared by every finetune seed; true: one per
variant and seed, so the confidence interval also covers pretraining noise, at seeds times the cost).
The architecture (size, dims, context) and the tokenizer are the study's own: a finetune must load the
pretrained weights. ``[finetune]`` holds optimizer settings (a lower lr, say) for the initialised arm
only; the scratch arms keep the top-level ones.

Stage 2 trains three arms per (variant, seed) on the top-level data:
``scratch`` (the top-level budget), ``pretrained`` (the same budget from the pretraining run's final
weights) and ``scratch-total`` (from scratch, given the pretraining tokens too). Both budgets must be
steps or tokens, so the equal-total-compute budget is exact: total = pretraining steps x its tokens
per step + finetune steps x its tokens per step (tokens per step = batch_size x grad_accum x context).
The architecture and context are the same in both stages, so equal tokens are equal training FLOPs.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ablate.config import RunConfig, coerce, validate
from ablate.errors import AblateError
from ablate.study.ranges import fail, unknown_key as unknown

PROTOCOL = "pretrain-then-finetune"
ARMS = ("scratch", "pretrained", "scratch-total")
PRETRAIN_META = ("seed", "per_seed")
ARCH_KEYS = ("size", "d_model", "n_layers", "n_heads", "context", "tokenizer")  # shared by both stages
NOT_IN_PRETRAIN = ("variant", "init_from", *ARCH_KEYS)
FINETUNE_KEYS = ("lr", "min_lr", "warmup", "schedule", "weight_decay", "beta1", "beta2", "grad_clip",
                 "label_smoothing")
DEFAULT_PRETRAIN_SEED = 1000
PER_CORPUS_TOKENIZERS = ("char", "bpe:")  # vocabularies built from the corpus they tokenize


def parse_tables(path, data: dict[str, Any], config: RunConfig, protocol: str):
    """``(pretrain, finetune)`` of a study file (both None for other protocols); errors name key and file."""
    if protocol != PROTOCOL:
        for table in ("pretrain", "finetune"):
            if table in data:
                raise fail(path, table, f"[{table}] belongs to protocol = \"{PROTOCOL}\" (this study is {protocol!r})")
        return None, None
    table = data.get("pretrain")
    if not isinstance(table, dict) or "data" not in table:
        raise fail(path, "pretrain", f"{PROTOCOL} needs a [pretrain] table with at least data = \"...\" "
                                     "(the pretraining corpus; the top level is the finetune stage)")
    allowed = [*PRETRAIN_META, *(f.name for f in fields(RunConfig) if f.name not in NOT_IN_PRETRAIN)]
    values: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"pretrain.{key}"
        if key in NOT_IN_PRETRAIN:
            what = "the architecture and tokenizer are shared by both stages (a finetune loads the pretrained " \
                   "weights); set it at the top level" if key in ARCH_KEYS else "it is set by the study"
            raise fail(path, dotted, what)
        if key not in allowed:
            raise unknown(path, dotted, allowed, " in [pretrain]")
        if key in PRETRAIN_META:
            continue
        try:
            values[key] = coerce(key, value)
        except AblateError as err:
            raise AblateError(f"{dotted!r} in {path}: {err}") from None
    seed = table.get("seed", DEFAULT_PRETRAIN_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise fail(path, "pretrain.seed", f"must be a whole number >= 0, got {seed!r}")
    per_seed = table.get("per_seed", False)
    if not isinstance(per_seed, bool):
        raise fail(path, "pretrain.per_seed", f"must be true or false, got {per_seed!r}")
    pre_config = config.replace(**values)
    try:
        validate(pre_config)
    except AblateError as err:
        raise AblateError(f"[pretrain] in {path}: {err}") from None
    same_corpus = (pre_config.data, pre_config.data_file) == (config.data, config.data_file)
    if not same_corpus and config.tokenizer.startswith(PER_CORPUS_TOKENIZERS):
        raise fail(path, "tokenizer", f"{config.tokenizer!r} builds its vocabulary from each corpus, so the "
                                      "pretrained model could not read the finetune data; use tokenizer = \"byte\" "
                                      "(or \"gpt2\") for two corpora")
    for dotted, budget in (("budget", config.budget), ("pretrain.budget", pre_config.budget)):
        if _budget(path, dotted, budget).kind not in ("steps", "tokens"):
            raise fail(path, dotted, f"{budget!r}: {PROTOCOL} needs steps or tokens budgets, so the equal-total-"
                                     "compute arm gets exactly the pretraining tokens plus the finetune tokens")
    finetune_table = data.get("finetune", {})
    if not isinstance(finetune_table, dict):
        raise fail(path, "finetune", f"must be a table ([finetune]), got {finetune_table!r}")
    finetune: dict[str, Any] = {}
    for key, value in finetune_table.items():
        if key not in FINETUNE_KEYS:
            raise unknown(path, f"finetune.{key}", FINETUNE_KEYS, " in [finetune] (the initialised arm's optimizer)")
        try:
            finetune[key] = coerce(key, value)
        except AblateError as err:
            raise AblateError(f"'finetune.{key}' in {path}: {err}") from None
    try:
        validate(config.replace(**finetune))
    except AblateError as err:
        raise AblateError(f"[finetune] in {path}: {err}") from None
    return {"config": values, "seed": seed, "per_seed": per_seed}, finetune


def _budget(path, dotted: str, text: str):
    from ablate.budget import parse_budget

    try:
        return parse_budget(text)
    except AblateError as err:
        raise AblateError(f"{dotted!r} in {path}: {err}") from None


def stage_tokens(config: RunConfig) -> int:
    """Training tokens a run of ``config`` consumes (steps or tokens budget): whole steps x tokens per step."""
    from ablate.budget import parse_budget
    from ablate.presets import get_size

    context = config.context or get_size(config.size).context
    per_step = config.batch_size * config.grad_accum * context
    return parse_budget(config.budget).total_steps(per_step, 1.0) * per_step


def pretrain_config(config: RunConfig, pretrain: dict[str, Any]) -> RunConfig:
    """Stage 1's settings: the study's, with [pretrain] over them (variant and seed set per trial)."""
    return config.replace(**pretrain["config"])


def total_budget(config: RunConfig, pretrain: dict[str, Any]) -> str:
    """The equal-total-compute arm's budget: pretraining tokens + finetune tokens, in tokens."""
    return f"{stage_tokens(pretrain_config(config, pretrain)) + stage_tokens(config)}tokens"
