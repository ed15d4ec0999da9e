"""What a run shows the code that watches it: ``Callback`` hooks (trackers, the live view, pruners), the
``RunState`` they read while it goes, the ``RunResult`` it ends with, and ``StopRun`` to end it early.
Kept apart from ``ablate.train`` so that a tracker does not import the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ablate.budget import Budget
    from ablate.config import RunConfig
    from ablate.model import GPT


class StopRun(Exception):
    """Raised by a callback to end a run early (e.g. an Optuna pruner); ``status`` is recorded."""

    def __init__(self, status: str, message: str = ""):
        super().__init__(message or status)
        self.status = status


class Callback:
    """Hooks the trainer calls; trackers, live views and pruners implement the ones they need."""

    def on_start(self, run: RunState) -> None: ...
    def on_step(self, run: RunState, row: dict[str, float]) -> None: ...
    def on_eval(self, run: RunState, row: dict[str, float]) -> None: ...
    def on_end(self, run: RunState, result: RunResult) -> None: ...
    def on_error(self, run: RunState, error: BaseException) -> None: ...


@dataclass
class RunState:
    """What callbacks may read while a run is in progress."""

    config: RunConfig
    variant_name: str
    variant_hash: str
    run_dir: Path
    model: GPT
    tokenizer: Any
    cost: dict[str, Any]
    dims: dict[str, Any]
    data_meta: dict[str, Any]
    fairness: dict[str, str]
    total_steps: int | None
    budget: Budget
    device: str
    step: int = 0
    tokens: int = 0
    progress: float = 0.0
    train_seconds: float = 0.0
    resumed_from: int | None = None
    init: dict[str, Any] = field(default_factory=dict)  # the parent run (--init-from), {} from scratch


@dataclass
class RunResult:
    status: str  # finished | diverged | pruned | interrupted
    variant: str
    variant_hash: str
    seed: int
    steps: int
    tokens: int
    final: dict[str, float]
    evals: list[dict[str, float]]
    history: list[dict[str, float]]
    cost: dict[str, Any]
    fairness: dict[str, str]
    tokens_per_s: float
    train_seconds: float
    wall_seconds: float
    run_dir: str
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}
