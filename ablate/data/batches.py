"""Batches whose content depends only on (seed, step): the same for every variant, no state to resume.

``TrainBatches(tokens, batch_size, context, seed).get(step)`` draws ``batch_size`` window offsets
from ``np.random.default_rng([TRAIN_STREAM, seed, step])`` and returns ``(x, y)``, int64 tensors of
shape (batch_size, context) with ``y`` the next token after each position of ``x``. Asking for
step 5 gives the same batch whether or not steps 0-4 were asked for first, so a resumed run picks up
exactly where it stopped, and two variants trained with one seed see identical data in identical
order.

``eval_batches(tokens, batch_size, context, n_batches, seed)`` gives a fixed list of held-out
batches (from a separate random stream), with a ``fingerprint`` over the offsets and the tokens so a
report can check that two runs were scored on the same batches.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ablate.errors import AblateError

TRAIN_STREAM = 0x747261696E  # "train": keeps train offsets independent of eval offsets
EVAL_STREAM = 0x6576616C  # "eval"


def _as_array(tokens) -> np.ndarray:
    if isinstance(tokens, torch.Tensor):
        return tokens.detach().cpu().numpy()
    return tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)


def _check(tokens: np.ndarray, batch_size: int, context: int, seed: int, what: str) -> None:
    for name, v in (("batch_size", batch_size), ("context", context)):
        if int(v) != v or v < 1:
            raise AblateError(f"{name} must be a positive integer, got {v!r}")
    if int(seed) != seed or seed < 0:
        raise AblateError(f"seed must be a non-negative integer, got {seed!r}")
    if tokens.ndim != 1:
        raise ValueError("tokens must be a 1-D array")
    if len(tokens) < context + 1:
        raise AblateError(
            f"context {context} needs at least {context + 1} {what} tokens but the split has "
            f"{len(tokens)}; use a shorter context or a larger corpus"
        )


def gather(tokens: np.ndarray, offsets: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows ``tokens[o : o + context + 1]`` for each offset, as (x, y) int64 tensors."""
    idx = offsets[:, None] + np.arange(context + 1, dtype=np.int64)
    block = np.asarray(tokens[idx]).astype(np.int64)
    x = torch.from_numpy(np.ascontiguousarray(block[:, :-1]))
    y = torch.from_numpy(np.ascontiguousarray(block[:, 1:]))
    return x, y


def rank_share(rows, batch_size: int, rank: int = 0, world_size: int = 1):
    """This rank's contiguous share of a batch's rows, so data-parallel ranks together see exactly the
    single-process batch."""
    if world_size == 1:
        return rows
    if world_size < 1 or not 0 <= rank < world_size or batch_size % world_size:
        raise AblateError(f"batch_size {batch_size} must split evenly over {world_size} ranks (rank {rank}); "
                          "pick a batch size divisible by the number of processes")
    share = batch_size // world_size
    return rows[rank * share:(rank + 1) * share]


class TrainBatches:
    """Training batches addressed by step; see the module docstring."""

    def __init__(self, tokens, batch_size: int, context: int, seed: int) -> None:
        self.tokens = _as_array(tokens)
        _check(self.tokens, batch_size, context, seed, "training")
        self.batch_size = int(batch_size)
        self.context = int(context)
        self.seed = int(seed)
        self._n_starts = len(self.tokens) - self.context  # offsets lie in [0, n_starts)

    def offsets(self, step: int) -> np.ndarray:
        if int(step) != step or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        rng = np.random.default_rng([TRAIN_STREAM, self.seed, int(step)])
        return rng.integers(0, self._n_starts, size=self.batch_size, dtype=np.int64)

    def get(self, step: int, *, rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch for ``step``. With ``world_size`` > 1, this rank's contiguous share of the rows,
        so data-parallel ranks together see exactly the single-process batch."""
        offsets = rank_share(self.offsets(step), self.batch_size, rank, world_size)
        return gather(self.tokens, offsets, self.context)

    __call__ = get


class EvalBatches(list):
    """A list of (x, y) batches with the ``offsets`` they were cut at and a ``fingerprint``."""

    offsets: np.ndarray
    fingerprint: str


def eval_batches(tokens, batch_size: int, context: int, n_batches: int, seed: int) -> EvalBatches:
    """``n_batches`` fixed held-out batches drawn with ``seed`` (same seed, same batches)."""
    arr = _as_array(tokens)
    _check(arr, batch_size, context, seed, "validation")
    if int(n_batches) != n_batches or n_batches < 1:
        raise AblateError(f"n_batches must be a positive integer, got {n_batches!r}")
    rng = np.random.default_rng([EVAL_STREAM, int(seed)])
    offsets = rng.integers(0, len(arr) - context, size=(int(n_batches), int(batch_size)), dtype=np.int64)
    out = EvalBatches(gather(arr, row, int(context)) for row in offsets)
    h = hashlib.sha256()
    h.update(f"eval|{len(arr)}|{batch_size}|{context}|{n_batches}|".encode())
    h.update(offsets.astype("<i8").tobytes())
    for x, y in out:  # the tokens too, so different data under the same offsets differs
        h.update(x.numpy().astype("<i8").tobytes())
        h.update(y.numpy().astype("<i8").tobytes())
    out.offsets = offsets
    out.fingerprint = h.hexdigest()[:16]
    return out


__all__ = ["TrainBatches", "EvalBatches", "eval_batches", "gather"]
