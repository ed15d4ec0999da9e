"""A run's inputs resolved from its settings: variant, size, budget and data (``prepare_run``), before
anything is trained, so that every user mistake among them fails first. ``ablate.train`` trains with
them; ``ablate.checkpoint.load_run_model`` rebuilds a model from them."""

from __future__ import annotations

from pathlib import Path

from ablate.budget import parse_budget
from ablate.config import RunConfig
from ablate.errors import AblateError
from ablate.model import make_dims
from ablate.presets import get_size
from ablate.tasks import TaskData, is_task_spec, prepare_task
from ablate.variant import parse_variant


def prepare_run(config: RunConfig):
    """Resolve everything that can fail on user input (variant, size, budget, data) before training."""
    from ablate.data.batches import TrainBatches, eval_batches
    from ablate.data.prepare import prepare

    variant = parse_variant(config.variant)
    size = get_size(config.size)
    budget = parse_budget(config.budget)
    if budget.kind == "seconds" and config.warmup >= 1:
        raise AblateError(f"warmup {config.warmup:g} is a number of steps, which a time budget ({budget.text}) "
                          "cannot honour; give it as a fraction of the budget, e.g. --warmup 0.05")
    overrides = {k: getattr(config, k) for k in ("d_model", "n_layers", "n_heads", "context") if getattr(config, k)}
    if is_task_spec(config.data):  # a synthetic task (ablate.tasks): problems generated on the fly
        data = prepare_task(config.data, seed=config.seed, batch_size=config.batch_size,
                            eval_seed=config.eval_seed, n_eval_batches=config.eval_batches)
        if config.context and config.context < data.train_context:
            raise AblateError(f"--context {config.context} is shorter than the task's training rows; give at least "
                              f"{data.train_context}, or leave it out for {data.context} (every eval problem)")
        dims = make_dims(size, variant, data.vocab_size, **{"context": data.context, **overrides})
        return variant, dims, budget, data, data.train_batches, data.eval_batches
    data = prepare(config.data, config.tokenizer, cache_dir=Path(config.cache_dir),
                   data_file=Path(config.data_file) if config.data_file else None, split=config.val_split,
                   decontaminate=config.decontaminate, decontaminate_n=config.decontaminate_n)
    dims = make_dims(size, variant, data.vocab_size, **overrides)
    train_batches = TrainBatches(data.train, config.batch_size, dims.context, config.seed)
    evals = eval_batches(data.val, config.batch_size, dims.context, config.eval_batches, config.eval_seed)
    return variant, dims, budget, data, train_batches, evals


def row_width(data, context: int) -> int:  # tokens per training row: a task's row width, else the context
    return data.train_context if isinstance(data, TaskData) else context
