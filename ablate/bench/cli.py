"""`ablate bench mixers|attention`: the speed benchmarks as commands (registered by ``add_bench_commands``).

    ablate bench mixers [--contexts 64,128,256,512,1024] [--mixers mha,heads,lstm,gru] [--width 128]
                        [--heads 4] [--batch-tokens 8192] [--threads N] [--out bench/mixers.png]
    ablate bench attention [--sizes 64x4x128,128x4x256,...] [--batch 8] [--threads N] [--out DIR]

Each prints a table and writes a JSON file of the numbers (and, for mixers, the plot).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ablate.errors import AblateError


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AblateError(f"expected comma-separated integers, e.g. 64,256,1024; got {text!r}") from None
    if not values:
        raise AblateError(f"expected comma-separated integers, e.g. 64,256,1024; got {text!r}")
    return values


def _sizes(text: str) -> list[tuple[int, int, int]]:
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        try:
            width, heads, context = (int(p) for p in parts)
        except ValueError:
            raise AblateError(f"a size is WIDTHxHEADSxCONTEXT, e.g. 128x4x256; got {item.strip()!r}") from None
        sizes.append((width, heads, context))
    return sizes


def _mixers(text: str) -> list[str]:
    """Split on commas outside parentheses, so options survive: lstm(match_params=true),gru."""
    names, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            names.append(current.strip())
            current = ""
        else:
            current += ch
    names.append(current.strip())
    return [n for n in names if n]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when there is one)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps; the median is reported (default 5)")
    p.add_argument("--seed", type=int, default=0)


def cmd_bench_mixers(args) -> int:
    from rich.console import Console

    from ablate.bench.mixers import run_mixers

    bench = run_mixers(mixers=_mixers(args.mixers), contexts=_ints(args.contexts), d_model=args.width,
                       n_heads=args.heads, batch_tokens=args.batch_tokens, warmup=args.warmup,
                       repeats=args.repeats, device=args.device, threads=args.threads, dtype=args.dtype,
                       seed=args.seed)
    console = Console()
    console.print(bench.table())
    out = Path(args.out)
    bench.plot(out)
    out.with_suffix(".json").write_text(json.dumps(bench.to_dict(), indent=2))
    console.print(f"plot: {out}   numbers: {out.with_suffix('.json')}")
    return 0


def cmd_bench_attention(args) -> int:
    from rich.console import Console

    from ablate.bench.attention import run_attention

    bench = run_attention(sizes=_sizes(args.sizes), batch=args.batch, warmup=args.warmup, repeats=args.repeats,
                          device=args.device, threads=args.threads, seed=args.seed)
    console = Console()
    console.print(bench.table())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench.to_dict(), indent=2))
    console.print(f"numbers: {out}")
    if not bench.agree:
        console.print("[red]the separate-heads and batched forms disagree beyond the tolerance[/red]")
        return 1
    return 0


def add_bench_commands(subparsers) -> None:
    """Register ``bench mixers`` and ``bench attention`` on an argparse subparsers object."""
    from ablate.bench.attention import DEFAULT_SIZES
    from ablate.bench.mixers import DEFAULT_CONTEXTS, DEFAULT_MIXERS

    bench = subparsers.add_parser("bench", help="speed benchmarks: token mixers vs context, EX1 heads vs batched")
    sub = bench.add_subparsers(dest="bench_command", required=True)

    p = sub.add_parser("mixers", help="forward+backward time per token vs context for attention, heads, LSTM, GRU",
                       description="Time each token mixer alone (one attention-slot module at equal width) at "
                                   "each context length, the same tokens per step at every length.")
    p.add_argument("--mixers", default=",".join(DEFAULT_MIXERS),
                   help="attention-slot components, with options allowed (default mha,heads,lstm,gru)")
    p.add_argument("--contexts", default=",".join(map(str, DEFAULT_CONTEXTS)),
                   help="context lengths (default 64,128,256,512,1024)")
    p.add_argument("--width", type=int, default=128, help="model width d (default 128)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--batch-tokens", type=int, default=8192,
                   help="tokens per step; batch = this // context (default 8192)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--out", default="bench/mixers.png", help="plot path; the numbers go beside it as .json")
    _common(p)
    p.set_defaults(func=cmd_bench_mixers)

    p = sub.add_parser("attention", help="EX1: separate heads vs batched attention: agreement and speedup",
                       description="Copy the batched module's weights into the separate heads, check both give "
                                   "the same outputs and gradients, and time both.")
    p.add_argument("--sizes", default=",".join(f"{w}x{h}x{t}" for w, h, t in DEFAULT_SIZES),
                   help="WIDTHxHEADSxCONTEXT sizes, comma-separated")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--out", default="bench/attention.json", help="where the numbers go (JSON)")
    _common(p)
    p.set_defaults(func=cmd_bench_attention)


add_commands = add_bench_commands  # the name ablate.cli's command groups use
