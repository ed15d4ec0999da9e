"""How a run is paced: when it evaluates (``EvalPlan``), how fast its training steps go (``Meter``), and when
it reads its losses off the device (``read_losses``: at log points, never every step)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Meter:
    """Training throughput over optimizer steps only (no evaluation, checkpoint or tracking time):
    per session (since this process started or resumed, after its first step, which pays for
    ``torch.compile`` and the allocator's first requests; that step alone where it is the only one)
    and per logging window."""

    session_tokens: int = 0
    session_seconds: float = 0.0
    window_tokens: int = 0
    window_seconds: float = 0.0
    first_tokens: int = 0
    first_seconds: float = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        """``tokens`` trained in ``seconds``; 0 tokens: waiting for the device to finish the steps before."""
        if self.first_tokens and (tokens or self.session_tokens):  # steps after the first, and waits for them
            self.session_tokens += tokens
            self.session_seconds += seconds
        elif tokens or self.first_tokens:  # the first step, and the wait for it
            self.first_tokens += tokens
            self.first_seconds += seconds
        self.window_tokens += tokens
        self.window_seconds += seconds

    def window_rate(self) -> float:
        """Tokens/s since the last call; starts a new window."""
        rate = self.window_tokens / max(self.window_seconds, 1e-9)
        self.window_tokens, self.window_seconds = 0, 0.0
        return rate

    @property
    def session_rate(self) -> float:
        if self.session_tokens:
            return self.session_tokens / self.session_seconds
        return self.first_tokens / self.first_seconds if self.first_seconds else 0.0


class EvalPlan:
    """When to evaluate: ``eval_points`` evenly spaced points of the budget, plus step 0.

    A step budget evaluates at fixed steps; a time budget at each k/n of the seconds, so every run
    of a comparison is evaluated at the same fractions of its budget.
    """

    def __init__(self, points: int, total_steps: int | None, done_steps: Sequence[int]):
        self.points, self.total_steps = points, total_steps
        self.steps = {round(k * total_steps / points) for k in range(points + 1)} if total_steps else set()
        self.done = set(done_steps)
        self.next_k = len(self.done)

    def due(self, step: int, progress: float, finished: bool) -> bool:
        if step in self.done:
            return False
        return step in self.steps if self.total_steps else (progress >= self.next_k / self.points or finished)

    def mark(self, step: int) -> None:
        self.done.add(step)
        self.next_k += 1


def divergence(run, loss: float, step: int) -> str:
    """Why the run has diverged at this loss, or "": not finite, or above ``divergence_factor`` times its
    first loss or, where that is lower (a finetuned run starts near zero), times a uniform guess's loss
    ln(vocabulary), so that a finetune's ordinary noise is not a divergence."""
    if not math.isfinite(loss):
        return f"loss {loss:.4g} at step {step} (not finite)"
    factor, uniform = run.config.divergence_factor, math.log(max(2, run.model.dims.vocab_size))
    if loss > factor * max(run.initial_loss, uniform):
        what = (f"the initial {run.initial_loss:.4g}" if run.initial_loss >= uniform
                else f"{uniform:.4g}, a uniform guess's loss (the initial was {run.initial_loss:.4g})")
        return f"loss {loss:.4g} at step {step} (> {factor}x {what})"
    return ""


def read_losses(run) -> str:
    """Read a run's (``ablate.train.Run``) unread losses and grad norms off the device in one transfer
    (the only host sync of the training loop: at log points, evaluations, checkpoints and the end), fill
    in their history rows and check them for divergence; returns why the first bad step diverged, or "".

    The wait for the device to finish those steps counts as training time.
    """
    if not run.unread:
        return ""
    t0 = time.perf_counter()
    values = torch.stack([v.float() for pair in run.unread for v in pair]).tolist()
    waited = time.perf_counter() - t0
    run.state.train_seconds += waited
    run.meter.add(0, waited)
    rows = run.history[len(run.history) - len(run.unread):]
    run.unread = []
    message, bad_step = "", 0
    for row, loss, grad_norm in zip(rows, values[0::2], values[1::2]):
        row["train_loss"], row["grad_norm"] = loss, grad_norm
        if run.initial_loss is None:
            run.initial_loss = loss
        if not message:
            message, bad_step = divergence(run, loss, int(row["step"])), int(row["step"])
    if message and bad_step != run.state.step:  # found at the next log point, up to log_every steps later
        message += f"; stopped at step {run.state.step}"
    return message
