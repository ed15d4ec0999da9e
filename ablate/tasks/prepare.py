"""``prepare_task(spec, seed=..., batch_size=...) -> TaskData``: the task counterpart of ``prepare``.

Nothing is written to disk: problems are generated on the fly. ``TaskData`` carries what the trainer
needs, in the shape of the text path's ``Prepared`` where the two overlap (``tokenizer``,
``vocab_size``, ``meta`` with a ``fingerprint``, ``bits_per_byte``), plus the batches and the
accuracy scorer:

- ``train_batches.get(step)``  (x, y) of width ``train_context`` (prompt and padding targets -1)
- ``eval_batches``             fixed held-out loss batches (``EvalBatches`` with a ``fingerprint``)
- ``context``                  the positions a model must have to decode every eval problem, up to
                               operands of 2·digits digits: build the model with this context
- ``accuracy(model, device)``  ``{"acc": ..., "acc_len4": ..., ...}`` by greedy decoding (higher is better)

``meta["fingerprint"]`` identifies the data exactly (it includes the task spec, hence the answer
format); ``meta["problems_fingerprint"]`` identifies only which problems are served and evaluated,
so it is equal for ``addition(reverse=true)`` and ``addition(reverse=false)`` (the fairness key for
studies that compare answer formats or traces on the same problems).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ablate.data.batches import EvalBatches
from ablate.errors import AblateError
from ablate.tasks.accuracy import AccuracyResult, evaluate_task, positions_needed
from ablate.tasks.base import (
    SPLIT_RULE,
    TASK_PREFIX,
    Problem,
    Task,
    TaskTokenizer,
    parse_task,
)
from ablate.tasks.batches import (
    TaskBatches,
    eval_problem_sets,
    problems_fingerprint,
    task_eval_batches,
)

TASK_FORMAT_VERSION = 1
TASK_FINGERPRINT_KEYS = ("format", "kind", "task", "tokenizer_fingerprint", "vocab_size", "eot", "pad",
                         "train_context", "context", "split", "eval_seed", "eval_problems", "eval_loss_batches")
PROBLEM_KEYS = ("format", "problem_space", "split", "eval_seed", "eval_problems")


def _hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TaskData:
    task: Task
    tokenizer: TaskTokenizer
    vocab_size: int
    meta: dict = field(repr=False)
    train_context: int
    context: int
    train_batches: TaskBatches = field(repr=False)
    eval_batches: EvalBatches = field(repr=False)
    eval_sets: dict[str, list[Problem]] = field(repr=False)
    eval_seed: int = 0

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    #: every task token is one ASCII character: bits per scored character = bits per token
    val_bytes_per_token: float = 1.0

    def bits_per_byte(self, loss_nats_per_token: float) -> float:
        """Bits per scored (completion) character; a task token is one ASCII byte."""
        return loss_nats_per_token / math.log(2)

    def evaluate(self, model, device="cpu", *, batch_size: int = 512,
                 amp_dtype: torch.dtype | None = None) -> AccuracyResult:
        return evaluate_task(model, self.task, device, self.eval_sets, batch_size=batch_size, amp_dtype=amp_dtype)

    def accuracy(self, model, device="cpu", *, batch_size: int = 512,
                 amp_dtype: torch.dtype | None = None) -> dict[str, float]:
        """Exact-match accuracy metrics on the fixed held-out sets (see ``ablate.tasks.accuracy``)."""
        return self.evaluate(model, device, batch_size=batch_size, amp_dtype=amp_dtype).metrics


def prepare_task(spec: str | Task, *, seed: int, batch_size: int, eval_seed: int = 0,
                 eval_batch_size: int | None = None, n_eval_batches: int = 8, n_eval: int = 1000,
                 n_per_length: int = 200, eval_lengths: Sequence[int] | None = None,
                 context: int | None = None) -> TaskData:
    """Everything the trainer needs for ``--data task:<spec>``; see the module docstring.

    ``context``: the width of training batches (default and minimum: the longest training problem);
    the model's context should be ``TaskData.context`` (>= it), which covers every eval problem.
    """
    task = spec if isinstance(spec, Task) else parse_task(spec)
    lengths = sorted({int(L) for L in (eval_lengths or task.eval_lengths())})
    if any(L < 1 for L in lengths):
        raise AblateError(f"eval lengths must be positive, got {lengths}")
    train = TaskBatches(task, batch_size, seed, context)
    evals = task_eval_batches(task, eval_batch_size or batch_size, n_eval_batches, eval_seed, train.context)
    sets = eval_problem_sets(task, eval_seed, n_eval, n_per_length, lengths)
    model_context = max(train.context, task.eval_context(lengths))
    tok = task.tokenizer
    meta = {
        "format": TASK_FORMAT_VERSION,
        "kind": "task",
        "dataset": TASK_PREFIX + task.spec,
        "task": task.spec,
        "problem_space": task.problem_spec,
        "tokenizer": tok.name,
        "tokenizer_fingerprint": tok.fingerprint,
        "vocab_size": tok.vocab_size,
        "eot": tok.eot,
        "pad": tok.pad,
        "train_context": train.context,
        "context": model_context,
        "split": SPLIT_RULE,
        "eval_seed": int(eval_seed),
        "eval_lengths": lengths,
        "eval_sizes": {k: len(v) for k, v in sets.items()},
        "eval_positions": {k: positions_needed(task, v) for k, v in sets.items()},  # a shorter context skips the set
        "eval_problems": problems_fingerprint(sets),
        "eval_loss_batches": evals.fingerprint,
        "val_bytes_per_token": 1.0,
    }
    meta["fingerprint"] = _hash({k: meta[k] for k in TASK_FINGERPRINT_KEYS})
    meta["problems_fingerprint"] = _hash({k: meta[k] for k in PROBLEM_KEYS})
    return TaskData(task=task, tokenizer=tok, vocab_size=tok.vocab_size, meta=meta,
                    train_context=train.context, context=model_context, train_batches=train,
                    eval_batches=evals, eval_sets=sets, eval_seed=int(eval_seed))


__all__ = ["TaskData", "prepare_task"]
