"""How a run is paced: when it evaluates (``EvalPlan``) and how fast its training steps go (``Meter``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Meter:
    """Training throughput over optimizer steps only (no evaluation, checkpoint or tracking time):
    per session (since this process started or resumed) and per logging window."""

    session_tokens: int = 0
    session_seconds: float = 0.0
    window_tokens: int = 0
    window_seconds: float = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        self.session_tokens += tokens
        self.session_seconds += seconds
        self.window_tokens += tokens
        self.window_seconds += seconds

    def window_rate(self) -> float:
        """Tokens/s since the last call; starts a new window."""
        rate = self.window_tokens / max(self.window_seconds, 1e-9)
        self.window_tokens, self.window_seconds = 0, 0.0
        return rate

    @property
    def session_rate(self) -> float:
        return self.session_tokens / self.session_seconds if self.session_seconds else 0.0


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
