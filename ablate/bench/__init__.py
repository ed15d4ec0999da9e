"""Speed benchmarks of the lecture's claims: `mixers` (recurrence is sequential in T, attention is not) and
`attention` (EX1: the separate-heads and batched forms agree, and how much faster batching is).

    from ablate.bench import run_mixers, run_attention
    print(run_mixers(contexts=(64, 256)).markdown())
"""

from __future__ import annotations

import importlib

__all__ = ["AttentionBench", "MixerBench", "run_attention", "run_mixers"]
_LAZY = {"AttentionBench": "attention", "run_attention": "attention", "MixerBench": "mixers", "run_mixers": "mixers"}


def __getattr__(name: str):  # torch is imported when a benchmark is used, not when the CLI builds its parser
    if name in _LAZY:
        return getattr(importlib.import_module(f"ablate.bench.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ablate.bench' has no attribute {name!r}")
