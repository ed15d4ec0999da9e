"""Speed benchmarks of the lecture's claims: `mixers` (recurrence is sequential in T, attention is not) and
`attention` (EX1: the separate-heads and batched forms agree, and how much faster batching is).

    from ablate.bench import run_mixers, run_attention
    print(run_mixers(contexts=(64, 256)).markdown())
"""

from ablate.bench.attention import AttentionBench, run_attention
from ablate.bench.mixers import MixerBench, run_mixers

__all__ = ["AttentionBench", "MixerBench", "run_attention", "run_mixers"]
