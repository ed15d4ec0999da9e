"""`ablate bench mixers|attention|train|decode`: speed benchmarks; the measuring and flags live in ``ablate.bench``."""

from __future__ import annotations


def add_commands(sub) -> None:
    from ablate.bench.cli import add_bench_commands

    add_bench_commands(sub)
