"""Synthetic tasks as a kind of data: problems from a seeded generator, masked prompts, exact-match scoring.

- ``parse_task("addition(digits=3)")`` / ``task_names()``  the registry (``addition``, ``calculator``)
- ``prepare_task(spec, seed=..., batch_size=...) -> TaskData``  batches, eval sets and the scorer
- ``TaskBatches(task, batch_size, seed).get(step)``  (x, y) with prompt/padding targets -1
- ``evaluate_accuracy(model, task, device)``  greedy KV-cached decoding -> {"acc", "acc_len4", ...}

See ``ablate.tasks.base`` (interface, held-out split), ``ablate.tasks.arithmetic`` (conventions),
``ablate.tasks.batches`` and ``ablate.tasks.accuracy``.
"""

from ablate.tasks import arithmetic as _arithmetic  # noqa: F401 - registers the built-ins
from ablate.tasks.accuracy import (
    AccuracyResult,
    answer_prompt,
    evaluate_accuracy,
    evaluate_task,
    greedy_complete,
    score_problems,
)
from ablate.tasks.arithmetic import Addition, Calculator
from ablate.tasks.base import (
    ALPHABET,
    END,
    PAD,
    TASKS,
    Problem,
    Task,
    TaskTokenizer,
    is_heldout,
    is_task_spec,
    parse_task,
    register_task,
    task_names,
)
from ablate.tasks.batches import (
    TaskBatches,
    encode_problems,
    eval_problem_sets,
    task_eval_batches,
)
from ablate.tasks.prepare import TaskData, prepare_task

__all__ = [
    "ALPHABET", "END", "PAD", "TASKS", "AccuracyResult", "Addition", "Calculator", "Problem", "Task",
    "TaskBatches", "TaskData", "TaskTokenizer", "answer_prompt", "encode_problems", "eval_problem_sets",
    "evaluate_accuracy", "evaluate_task", "greedy_complete", "is_heldout", "is_task_spec", "parse_task",
    "prepare_task", "register_task", "score_problems", "task_eval_batches", "task_names",
]
