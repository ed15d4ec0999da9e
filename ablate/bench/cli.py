"""`ablate bench mixers|attention|train|decode`: the speed benchmarks as commands (see ``add_bench_commands``).

    ablate bench mixers [--contexts 64,128,256,512,1024] [--mixers mha,heads,lstm,gru] [--width 128]
                        [--heads 4] [--batch-tokens 8192] [--threads N] [--out bench/mixers.png]
    ablate bench attention [--sizes 64x4x128,128x4x256,...] [--batch 8] [--threads N] [--out FILE.json]
    ablate bench train [--variants baseline,rope,...] [--size cpu] [--steps 30] [--dtype bfloat16] [--threads N]
    ablate bench decode [--variants baseline,gqa(kv_heads=2),mqa] [--size cpu] [--prompt 32] [--new-tokens 32]
                        [--dtype bfloat16]

Each prints a table and writes a JSON file of the numbers (and, for mixers, the plot).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ablate.cli.console import console
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
        if min(width, heads, context) < 1:
            raise AblateError(f"a size's width, heads and context must be at least 1; got {item.strip()!r}")
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


def _variants(text: str) -> list[str]:
    names = _mixers(text)
    if not names:
        raise AblateError(f"no variants in --variants {text!r}; give them comma-separated, e.g. baseline,rope")
    return names


def _out(path: str, suffixes: tuple[str, ...] = ()) -> Path:
    """``--out``, checked before anything is measured: a file path (not a folder) whose folder can be made,
    with one of ``suffixes`` when given (JSON may also go to a device such as /dev/null)."""
    from ablate.config import check_folder
    from ablate.fileio import written_in_place

    out = Path(path)
    if out.is_dir():
        raise AblateError(f"--out {path} is a folder; give a file path, e.g. {out / 'bench.json'}")
    if suffixes == (".json",) and written_in_place(out):  # /dev/null, /dev/stdout (not the mixers' plot, whose
        return out  # numbers go beside it)
    if suffixes and out.suffix.lower() not in suffixes:
        what = "the numbers are written as JSON" if suffixes == (".json",) else f"the plot is written as {', '.join(suffixes)}"
        raise AblateError(f"--out {path}: {what}; give a file name ending {' or '.join(suffixes)}")
    check_folder(out.parent, "--out's folder")  # a file on the way, not writable, or folders cannot be made there
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(out: Path, numbers: dict) -> None:
    from ablate.fileio import atomic_write_text

    atomic_write_text(out, json.dumps(numbers, indent=2) + "\n")
    console.print(f"numbers: {out}", highlight=False)


def _at_least(low: int):
    """An argparse type: an integer >= ``low`` (a usage error, one line, otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when there is one)")
    p.add_argument("--threads", type=_at_least(1), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps; the median is reported (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs (default 0)")


def cmd_bench_mixers(args) -> int:
    from ablate.bench.mixers import run_mixers

    out = _out(args.out, (".png", ".svg", ".pdf"))
    bench = run_mixers(mixers=_mixers(args.mixers), contexts=_ints(args.contexts), d_model=args.width,
                       n_heads=args.heads, batch_tokens=args.batch_tokens, warmup=args.warmup,
                       repeats=args.repeats, device=args.device, threads=args.threads, dtype=args.dtype,
                       seed=args.seed)
    console.print(bench.table())
    _write_json(out.with_suffix(".json"), bench.to_dict())  # the numbers first: they matter more than the plot
    bench.plot(out)
    console.print(f"plot: {out}", highlight=False)
    return 0


def cmd_bench_attention(args) -> int:
    from ablate.bench.attention import run_attention

    out = _out(args.out, (".json",))
    bench = run_attention(sizes=_sizes(args.sizes), batch=args.batch, warmup=args.warmup, repeats=args.repeats,
                          device=args.device, threads=args.threads, seed=args.seed)
    console.print(bench.table())
    _write_json(out, bench.to_dict())
    if not bench.agree:
        console.print("[red]the separate-heads and batched forms disagree beyond the tolerance[/red]")
        return 1
    return 0


COMPILE_WARMUP = 3  # steps torch.compile needs before the step is steady (forward, backward, optimizer graphs)


def cmd_bench_train(args) -> int:
    from ablate.bench import train as bench_train
    from ablate.bench._timing import pick_device, torch_threads
    from ablate.presets import get_size

    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        raise AblateError("need --steps >= 1, --warmup >= 0 and --batch-size >= 1")
    variants, out, device = _variants(args.variants), _out(args.out, (".json",)), pick_device(args.device)
    if args.compile and args.warmup < COMPILE_WARMUP:  # compilation spans the first steps: they are not steady
        print(f"ablate: warning: --compile with --warmup {args.warmup}: compiling takes the first {COMPILE_WARMUP} "
              f"steps, so the timed steps include it; give --warmup {COMPILE_WARMUP} or more", file=sys.stderr)
    with torch_threads(args.threads) as threads:
        setup = {"size": args.size, "context": args.context or get_size(args.size).context,
                 "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "dtype": args.dtype,
                 "compile": args.compile, "device": str(device), "threads": threads}
        results, peak, source = bench_train.run_train(
            variants, size=args.size, batch_size=args.batch_size, context=args.context, steps=args.steps,
            warmup=args.warmup, dtype=args.dtype, device=device, compile=args.compile, probe=not args.no_probe)
        console.print(bench_train.table(results, peak, source, device, setup).to_rich())
    _write_json(out, bench_train.to_dict(results, peak, source, setup))
    return 0


def cmd_bench_decode(args) -> int:
    from ablate.bench import decode as bench_decode
    from ablate.bench._timing import pick_device, torch_threads

    if args.prompt < 1 or args.new_tokens < 1 or args.batch < 1 or args.repeats < 1:
        raise AblateError("need --prompt, --new-tokens, --batch and --repeats of at least 1")
    variants, out, device = _variants(args.variants), _out(args.out, (".json",)), pick_device(args.device)
    with torch_threads(args.threads) as threads:
        results = [bench_decode.bench_variant(v, size=args.size, batch=args.batch, prompt=args.prompt,
                                              new_tokens=args.new_tokens, repeats=args.repeats, dtype=args.dtype,
                                              device=device)
                   for v in variants]
        console.print(bench_decode.table(results, device, args.batch, args.prompt, args.new_tokens,
                                         args.dtype).to_rich())
    setup = {"size": args.size, "batch": args.batch, "prompt": args.prompt, "new_tokens": args.new_tokens,
             "repeats": args.repeats, "dtype": args.dtype, "device": str(device), "threads": threads}
    _write_json(out, bench_decode.to_dict(results, setup))
    return 0


def add_bench_commands(subparsers) -> None:
    """Register ``bench mixers``, ``attention``, ``train`` and ``decode`` on an argparse subparsers object."""
    from ablate.bench.defaults import DEFAULT_CONTEXTS, DEFAULT_MIXERS, DEFAULT_SIZES

    bench = subparsers.add_parser(
        "bench", help="speed benchmarks: training step and MFU, decoding, token mixers vs context, EX1 heads")
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="{mixers,attention,train,decode}")

    p = sub.add_parser("mixers", help="forward+backward time per token vs context for attention, heads, LSTM, GRU",
                       description="Time each token mixer alone (one attention-slot module at equal width) at "
                                   "each context length, the same tokens per step at every length.")
    p.add_argument("--mixers", default=",".join(DEFAULT_MIXERS),
                   help="attention-slot components, with options allowed (default mha,heads,lstm,gru)")
    p.add_argument("--contexts", default=",".join(map(str, DEFAULT_CONTEXTS)),
                   help="context lengths (default 64,128,256,512,1024)")
    p.add_argument("--width", type=int, default=128, help="model width d (default 128)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--batch-tokens", type=_at_least(1), default=8192,
                   help="tokens per step; batch = this // context (default 8192)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="parameter and activation type (default float32)")
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

    p = sub.add_parser("train", help="median step time, tokens/s, FLOP/s and MFU of training steps per variant",
                       description="Train each variant on random tokens for --warmup + --steps optimizer steps; "
                                   "report the median step after warm-up and MFU against the peak measured here.")
    p.add_argument("--variants", default="baseline,rope,rmsnorm,swiglu,gqa(kv_heads=2),alibi,post",
                   help="variants, comma-separated (options allowed)")
    p.add_argument("--size", default="cpu", help="size preset (default cpu: nanoGPT's CPU configuration)")
    p.add_argument("--context", type=_at_least(0), default=None, help="context length (default or 0: the size's)")
    p.add_argument("--batch-size", type=int, default=12, help="sequences per step (default 12)")
    p.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "tf32"),
                   help="float32, bfloat16 (autocast) or tf32 (CUDA), as `ablate run --dtype` (default float32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (its cold cost is in warm-up)")
    p.add_argument("--no-probe", action="store_true", help="on a known GPU, use its data-sheet peak instead")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when there is one)")
    p.add_argument("--threads", type=_at_least(1), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="bench/train.json", help="where the numbers go (JSON)")
    p.set_defaults(func=cmd_bench_train)

    p = sub.add_parser("decode", help="prefill and KV-cached decode tokens/s and cache bytes per token per variant",
                       description="Why MQA and GQA exist: the decoding state per token and what it costs.")
    p.add_argument("--variants", default="baseline,gqa(kv_heads=2),mqa,lstm(match_params=true)+none",
                   help="variants, comma-separated (options allowed)")
    p.add_argument("--size", default="cpu", help="size preset (default cpu)")
    p.add_argument("--batch", type=int, default=1, help="sequences decoded at once (default 1)")
    p.add_argument("--prompt", type=int, default=32, help="prompt tokens (default 32)")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated after the prompt (default 32)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; medians reported (default 3)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="float32, or bfloat16 autocast with a bfloat16 cache (default float32)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when there is one)")
    p.add_argument("--threads", type=_at_least(1), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="bench/decode.json", help="where the numbers go (JSON)")
    p.set_defaults(func=cmd_bench_decode)


add_commands = add_bench_commands  # the name ablate.cli's command groups use
