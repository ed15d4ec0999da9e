"""Exact-match accuracy by greedy decoding with the KV cache.

``evaluate_accuracy(model, task, device)`` decodes every held-out problem of
``eval_problem_sets(task, eval_seed)`` greedily (problems with equal prompt length share one batch and
one KV cache) and returns, as fractions in [0, 1] (higher is better):

- ``acc``            the in-distribution held-out set (the training distribution of lengths/operators)
- ``acc_op_<name>``  the same set per operator (``add sub mul div``), for tasks with several operators
- ``acc_len<L>``     problems whose longer operand has L digits, L = 1 .. 2·digits
- ``acc_longer``     the mean of ``acc_len<L>`` over lengths never trained on (L > digits)

A prediction is right iff the generated completion holds an end token and the text before it (after the
last ``>`` when there is a trace) equals the final answer exactly; the trace is not scored.

Positions: decoding a problem of total length S feeds S-1 positions. A model whose position scheme
has a table (learned absolute positions) must be built with ``context >= task.eval_context()`` (what
``TaskData.context`` gives) to be evaluated at longer lengths; its positions beyond the training
context are then simply untrained, which is the point of the length-generalisation question. If the
model still refuses a set (its forward raises ``ValueError``, e.g. a table too small), or the set's
problems need more positions than the model's context (their answers would be cut off and counted
wrong), that set's metrics are left out and the reason is returned in ``AccuracyResult.skipped``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ablate.tasks.base import END, OP_NAMES, Problem, Task
from ablate.tasks.batches import eval_problem_sets


@dataclass
class AccuracyResult:
    metrics: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)  # set name -> why it was not evaluated
    examples: dict[str, list[tuple[str, str, bool]]] = field(default_factory=dict)  # set -> (prompt, output, ok)


def _autocast(device: str | torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=str(device).split(":")[0], dtype=dtype)


@torch.no_grad()
def greedy_complete(model, task: Task, prompts: Sequence[str], max_new: int, device="cpu",
                    amp_dtype: torch.dtype | None = None) -> list[str]:
    """Greedy completions (up to and including the end token, at most ``max_new`` tokens) of prompts
    that all have the same length, decoded together through the model's KV cache."""
    if not prompts:
        return []
    tok = task.tokenizer
    ids = [tok.encode(p) for p in prompts]
    if len({len(i) for i in ids}) != 1:
        raise ValueError("greedy_complete needs prompts of equal length; group them first")
    idx = torch.tensor(ids, dtype=torch.long, device=device)
    b, p = idx.shape
    caches = model.new_caches(b, p + max_new)
    out = torch.full((b, max_new), tok.pad, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    with _autocast(device, amp_dtype):
        logits, _ = model(idx, caches=caches)
        n = 0
        for t in range(max_new):
            nxt = logits[:, -1, :].argmax(dim=-1)
            out[:, t] = nxt
            n = t + 1
            done |= nxt == tok.eot
            if t == max_new - 1 or bool(done.all()):
                break
            logits, _ = model(nxt[:, None], caches=caches)
    rows = out[:, :n].tolist()
    texts = []
    for row in rows:
        if tok.eot in row:
            row = row[: row.index(tok.eot) + 1]
        texts.append(tok.decode(row))
    return texts


def score_problems(model, task: Task, problems: Sequence[Problem], device="cpu", batch_size: int = 512,
                   amp_dtype: torch.dtype | None = None) -> list[tuple[str, bool]]:
    """(generated completion, right?) per problem, in the order given."""
    groups: dict[int, list[int]] = defaultdict(list)
    rendered = [task.render(p) for p in problems]
    for i, (prompt, _) in enumerate(rendered):
        groups[len(prompt)].append(i)
    results: list[tuple[str, bool] | None] = [None] * len(problems)
    for _, members in sorted(groups.items()):
        for s in range(0, len(members), batch_size):
            chunk = members[s:s + batch_size]
            max_new = max(len(rendered[i][1]) for i in chunk)  # longer outputs are wrong anyway
            outs = greedy_complete(model, task, [rendered[i][0] for i in chunk], max_new, device, amp_dtype)
            for i, o in zip(chunk, outs):
                results[i] = (o, task.score(problems[i], o))
    return results  # type: ignore[return-value]


def positions_needed(task: Task, problems: Sequence[Problem]) -> int:
    """Positions the longest of ``problems`` feeds the model: prompt and answer, less the last answer token."""
    return max((len(task.tokenizer.encode(q)) + len(task.tokenizer.encode(a)) - 1
                for q, a in map(task.render, problems)), default=0)


def _mean(xs: Sequence[bool]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def evaluate_task(model, task: Task, device="cpu", sets: dict[str, list[Problem]] | None = None, *,
                  eval_seed: int = 0, batch_size: int = 512, amp_dtype: torch.dtype | None = None,
                  n_examples: int = 3) -> AccuracyResult:
    """Accuracy metrics (see the module docstring), what was skipped and why, and a few examples."""
    sets = sets if sets is not None else eval_problem_sets(task, eval_seed)
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    examples: dict[str, list[tuple[str, str, bool]]] = {}
    context = getattr(getattr(model, "dims", None), "context", None)
    try:
        for name, problems in sets.items():
            if context is not None and (need := positions_needed(task, problems)) > context:  # answers would be cut
                skipped[name] = f"its problems need {need} positions and the context is {context}"  # off: unasked
                continue
            try:
                res = score_problems(model, task, problems, device, batch_size, amp_dtype)
            except ValueError as err:  # e.g. learned positions asked beyond their table
                skipped[name] = str(err)
                continue
            examples[name] = [(task.render(p)[0], o, ok) for p, (o, ok) in list(zip(problems, res))[:n_examples]]
            oks = [ok for _, ok in res]
            if name == "id":
                metrics["acc"] = _mean(oks)
                if len(task.ops) > 1:
                    for op in task.ops:
                        metrics[f"acc_op_{OP_NAMES[op]}"] = _mean([ok for p, ok in zip(problems, oks) if p.op == op])
            else:
                metrics[f"acc_{name}"] = _mean(oks)
    finally:
        model.train(was_training)
    metrics = {k: v for k, v in metrics.items() if not math.isnan(v)}
    longer = [v for k, v in metrics.items()
              if k.startswith("acc_len") and k[7:].isdigit() and int(k[7:]) > task.digits]
    if longer:
        metrics["acc_longer"] = sum(longer) / len(longer)
    return AccuracyResult(metrics, skipped, examples)


def evaluate_accuracy(model, task: Task, device="cpu", sets: dict[str, list[Problem]] | None = None, *,
                      eval_seed: int = 0, batch_size: int = 512,
                      amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """The accuracy metrics only; see ``evaluate_task``."""
    return evaluate_task(model, task, device, sets, eval_seed=eval_seed, batch_size=batch_size,
                         amp_dtype=amp_dtype).metrics


def answer_room(model, prompt_tokens: int) -> int:
    """How many tokens an answer to a prompt of ``prompt_tokens`` may take: up to the model's context."""
    return max(1, model.dims.context - prompt_tokens + 1) if hasattr(model, "dims") else 64


def answer_prompt(model, task: Task, prompt: str, device="cpu", max_new: int | None = None) -> tuple[str, object]:
    """Answer one typed problem (``"123+456="``): the generated completion and the value it reads as
    (reversed digits read back; None when malformed). For ``ablate sample --prompt`` on a task run. A
    prompt that is not one of the task's problems (another operator, ÷0, not a problem) is an
    ``AblateError``; the model reads the problem as training wrote it (``"007+1"`` as ``"7+1="``)."""
    prompt = task.render(task.read_problem(prompt))[0]
    length = len(task.tokenizer.encode(prompt))
    reach = getattr(getattr(model, "position", None), "max_positions", None)
    if reach is not None and length >= reach:  # a learned table has no row for the answer's positions
        from ablate.errors import AblateError

        raise AblateError(f"the prompt {prompt!r} is {length} tokens, and this run's positions cover {reach} "
                          f"(prompt and answer together); ask a shorter problem, or train with positions "
                          f"that extrapolate (rope, alibi, none)")
    room = answer_room(model, length)
    max_new = room if max_new is None else max(1, min(max_new, room))  # never past the context
    was_training = model.training
    model.eval()
    try:
        out = greedy_complete(model, task, [prompt], max_new, device)[0]
    finally:
        model.train(was_training)
    return out, (task.read_answer(out) if END in out else None)


__all__ = ["AccuracyResult", "answer_prompt", "answer_room", "evaluate_accuracy", "evaluate_task", "greedy_complete",
           "score_problems"]
