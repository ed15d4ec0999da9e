"""Task batches addressed by step, fixed held-out evaluation problems and eval loss batches.

``TaskBatches(task, batch_size, seed).get(step)`` draws ``batch_size`` training problems from
``np.random.default_rng([TASK_TRAIN_STREAM, seed, step])`` (rejecting held-out ones) and packs them one
per row, left-aligned and padded to ``context`` (default: the longest training problem less one):

    x = tokens[:-1]              pad id 0 after the problem
    y = tokens[1:]               -1 where the target is a prompt token, and on padding

so the loss counts exactly the completion (trace, final answer, end token). The batch for a step
depends only on (task's problem space, seed, step): every variant of a seed, and reversed vs normal
answer order, see the same problems in the same order.

``eval_problem_sets(task, seed)`` gives the held-out problems accuracy is measured on, the same for
every run with that ``eval_seed``: ``id`` (the training distribution) and ``len{L}`` for L = 1 .. 2·digits
(longer operand exactly L digits). ``task_eval_batches`` gives fixed held-out loss batches with a
fingerprint, like ``ablate.data.batches.eval_batches``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from ablate.data.batches import EvalBatches, rank_share
from ablate.errors import AblateError
from ablate.tasks.base import Problem, Task

TASK_TRAIN_STREAM = 0x7461736B74  # "taskt"
TASK_EVAL_STREAM = 0x7461736B65  # "taske": held-out accuracy problems
TASK_LOSS_STREAM = 0x7461736B6C  # "taskl": held-out loss batches


def encode_problems(task: Task, problems: Sequence[Problem], context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) int64 (len(problems), context): one problem per row, prompt and padding targets -1."""
    tok = task.tokenizer
    n = len(problems)
    x = np.full((n, context), tok.pad, dtype=np.int64)
    y = np.full((n, context), -1, dtype=np.int64)
    for i, p in enumerate(problems):
        prompt, completion = task.render(p)
        ids = tok.encode(prompt + completion)
        if len(ids) - 1 > context:
            raise AblateError(
                f"problem {p} of {task.spec} needs {len(ids) - 1} positions but the context is {context}; "
                f"use a context of at least {task.train_context()}"
            )
        t = len(ids) - 1
        x[i, :t] = ids[:-1]
        y[i, :t] = ids[1:]
        y[i, : len(prompt) - 1] = -1  # targets that are prompt tokens count for nothing
    return torch.from_numpy(x), torch.from_numpy(y)


def _check_positive(**values) -> None:
    for name, v in values.items():
        if int(v) != v or v < 1:
            raise AblateError(f"{name} must be a positive integer, got {v!r}")


class TaskBatches:
    """Training batches of a task addressed by step; see the module docstring."""

    def __init__(self, task: Task, batch_size: int, seed: int, context: int | None = None) -> None:
        _check_positive(batch_size=batch_size)
        if int(seed) != seed or seed < 0:
            raise AblateError(f"seed must be a non-negative integer, got {seed!r}")
        need = task.train_context()
        context = need if context is None else int(context)
        if context < need:
            raise AblateError(f"{task.spec} needs a context of at least {need} to hold its longest "
                              f"training problem, got {context}; use --context {need} or more")
        self.task, self.batch_size, self.seed, self.context = task, int(batch_size), int(seed), context

    def problems(self, step: int) -> list[Problem]:
        if int(step) != step or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        rng = np.random.default_rng([TASK_TRAIN_STREAM, self.seed, int(step)])
        return self.task.sample(rng, self.batch_size, split="train")

    def get(self, step: int, *, rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch for ``step``; with ``world_size`` > 1 this rank's contiguous share of the rows."""
        problems = rank_share(self.problems(step), self.batch_size, rank, world_size)
        return encode_problems(self.task, problems, self.context)

    __call__ = get


def _unique_heldout(task: Task, rng: np.random.Generator, n: int, length: int | None) -> list[Problem]:
    """Up to ``n`` distinct held-out problems (fewer where the space has fewer, e.g. 1-digit sums)."""
    seen: dict[Problem, None] = {}
    for _ in range(20):
        for p in task.sample(rng, n, split="heldout", length=length):
            seen.setdefault(p)
            if len(seen) == n:
                return list(seen)
    return list(seen)


def eval_problem_sets(task: Task, seed: int = 0, n_id: int = 1000, n_per_length: int = 200,
                      lengths: Sequence[int] | None = None) -> dict[str, list[Problem]]:
    """Held-out problems for accuracy: ``id`` (training distribution) and ``len{L}`` per operand length.

    Every set uses its own generator from ``[TASK_EVAL_STREAM, seed, L]``, so adding a length leaves the
    others unchanged; problems within a set are distinct.
    """
    _check_positive(n_id=n_id, n_per_length=n_per_length)
    sets = {"id": _unique_heldout(task, np.random.default_rng([TASK_EVAL_STREAM, int(seed), 0]), n_id, None)}
    for L in lengths or task.eval_lengths():
        rng = np.random.default_rng([TASK_EVAL_STREAM, int(seed), int(L)])
        sets[f"len{L}"] = _unique_heldout(task, rng, n_per_length, int(L))
    return sets


def problems_fingerprint(sets: dict[str, list[Problem]]) -> str:
    h = hashlib.sha256()
    for name in sorted(sets):
        h.update(f"{name}:".encode() + ",".join(map(str, sets[name])).encode() + b"\n")
    return h.hexdigest()[:16]


def task_eval_batches(task: Task, batch_size: int, n_batches: int, seed: int = 0,
                      context: int | None = None) -> EvalBatches:
    """``n_batches`` fixed batches of held-out problems from the training distribution (loss only)."""
    _check_positive(batch_size=batch_size, n_batches=n_batches)
    context = task.train_context() if context is None else int(context)
    rng = np.random.default_rng([TASK_LOSS_STREAM, int(seed)])
    problems = task.sample(rng, int(batch_size) * int(n_batches), split="heldout")
    out = EvalBatches(encode_problems(task, problems[i * batch_size:(i + 1) * batch_size], context)
                      for i in range(n_batches))
    h = hashlib.sha256()
    h.update(f"task-eval|{task.spec}|{batch_size}|{context}|{n_batches}|".encode())
    for x, y in out:
        h.update(x.numpy().astype("<i8").tobytes())
        h.update(y.numpy().astype("<i8").tobytes())
    out.offsets = None  # problems, not offsets into a token array
    out.problems = problems
    out.fingerprint = h.hexdigest()[:16]
    return out


__all__ = [
    "TASK_EVAL_STREAM",
    "TASK_LOSS_STREAM",
    "TASK_TRAIN_STREAM",
    "TaskBatches",
    "encode_problems",
    "eval_problem_sets",
    "problems_fingerprint",
    "task_eval_batches",
]
