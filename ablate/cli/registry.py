"""`ablate list`, `describe` and `inspect`: what the registry holds, and what a variant costs."""

from __future__ import annotations

import dataclasses
import inspect
import json

from rich.table import Table

from ablate.cli.console import console
from ablate.errors import AblateError


def cmd_list(args) -> int:
    from ablate.presets import ARCHITECTURES, SIZES
    from ablate.catalog import all_specs
    from ablate.registry import SLOTS

    import fnmatch

    specs = all_specs(args.pattern)
    pattern = (args.pattern or "*").strip()
    if pattern in SLOTS:  # a slot names components only
        archs, sizes = [], []
    else:
        archs = [name for name in ARCHITECTURES if fnmatch.fnmatchcase(name, pattern)]
        sizes = [name for name in SIZES if fnmatch.fnmatchcase(name, pattern)]
    if not (specs or archs or sizes):
        raise AblateError(f"nothing matches {args.pattern!r}; slots are {', '.join(SLOTS)}, or use a pattern like 'rope*'")
    if specs:
        table = Table(title="components", show_lines=False)
        for col in ("slot", "name", "summary", "paper", "origin"):
            table.add_column(col, overflow="fold")
        for s in specs:
            table.add_row(s.slot, s.name, s.summary, s.paper, s.origin)
        console.print(table)
    if archs:
        presets = Table(title="architecture presets")
        presets.add_column("name")
        presets.add_column("description", overflow="fold")
        for name in archs:
            presets.add_row(name, ARCHITECTURES[name][1])
        console.print(presets)
    if sizes:
        table = Table(title="size presets")
        for col in ("name", "d_model", "layers", "heads", "context", "vocab", "description"):
            table.add_column(col)
        for name in sizes:
            s = SIZES[name]
            table.add_row(name, str(s.d_model), str(s.n_layers), str(s.n_heads), str(s.context),
                          str(s.vocab_size or "tokenizer's"), s.description)
        console.print(table)
    return 0


def cmd_describe(args) -> int:
    from ablate.presets import ARCHITECTURES, SIZES
    from ablate.catalog import lookup

    if args.name in ARCHITECTURES:
        from ablate.variant import parse_variant

        source, desc = ARCHITECTURES[args.name]
        variant = parse_variant(args.name)
        console.print(f"[bold]{args.name}[/] (architecture preset): {desc}")
        console.print(f"variant: {source or 'baseline'}  →  canonical name {variant.name}, hash {variant.hash}")
        return 0
    if args.name in SIZES:
        size = SIZES[args.name]
        console.print(f"[bold]{args.name}[/] (size preset): {size.description}")
        console.print(f"d_model {size.d_model}, layers {size.n_layers}, heads {size.n_heads} (head dim "
                      f"{size.d_model // size.n_heads}), context {size.context}, vocabulary "
                      f"{size.vocab_size or 'the tokenizer' + chr(39) + 's'}")
        console.print(f"parameters, FLOPs and KV cache of a variant at this size: ablate inspect VARIANT --size {args.name}")
        return 0
    if any(mark in args.name for mark in "+(=/") or args.name.endswith((".toml", ".json")):
        return _describe_variant(args.name)  # a variant string or file: what each slot holds
    from ablate.registry import SLOTS

    slot, _, name = args.name.rpartition(":")
    try:
        spec = lookup(name, slot) if slot in SLOTS else lookup(args.name)  # "mlp:swiglu": one slot's component
    except AblateError as unknown:
        if slot:
            raise
        from ablate.variant import parse_variant

        try:  # "baseline", or a named variant file (variants/NAME.toml, $ABLATE_VARIANTS_PATH)
            parse_variant(args.name)
        except AblateError as as_variant:
            raise (as_variant if "no variant file" in str(as_variant) else unknown) from None
        return _describe_variant(args.name)
    console.print(f"[bold]{spec.name}[/] ({spec.slot}) — {spec.summary}")
    console.print(f"paper:    {spec.paper}")
    console.print(f"origin:   {spec.origin}")
    console.print(f"class:    {spec.cls.__module__}.{spec.cls.__qualname__}")
    fields = dataclasses.fields(spec.options)
    opts = ", ".join(f"{f.name}={f.default!r}" for f in fields) or "none"
    console.print(f"options:  {opts}")
    if spec.provides:
        console.print(f"provides: {', '.join(sorted(spec.provides))}")
    if spec.needs:
        console.print(f"needs:    {', '.join(sorted(spec.needs))}")
    for other, why in spec.conflicts.items():
        console.print(f"conflicts with {other}: {why}")
    doc = inspect.cleandoc(spec.cls.__doc__ or "")
    if "\n" in doc:
        console.print()
        console.print(doc, markup=False, highlight=False)
    return 0


def _describe_variant(text: str) -> int:
    from ablate.catalog import lookup
    from ablate.variant import parse_variant

    variant, baseline = parse_variant(text), parse_variant("baseline").to_dict()
    console.print(f"[bold]{variant.name}[/] (variant, hash {variant.hash}): each slot's component; "
                  f"* marks a change from the baseline")
    table = Table()
    for col in ("", "slot", "component", "options", "summary"):
        table.add_column(col, overflow="fold")
    for slot, resolved in variant.to_dict().items():
        values = dict(resolved)
        name = values.pop("component", "")
        changed = "*" if resolved != baseline.get(slot) else ""
        summary = lookup(name, slot).summary if name else "settings of the whole model"
        table.add_row(changed, slot, name, ", ".join(f"{k}={v}" for k, v in values.items()), summary)
    console.print(table)
    console.print(f"parameters, FLOPs and KV cache: ablate inspect {text!r}; one component's paper: ablate describe NAME")
    return 0


def inspect_variant(variant_text: str, size_name: str, vocab_size: int | None, kv_dtype: str) -> dict:
    from ablate.accounting import cost
    from ablate.model import build_model, make_dims
    from ablate.presets import get_size
    from ablate.variant import parse_variant

    variant = parse_variant(variant_text)
    size = get_size(size_name)
    dims = make_dims(size, variant, vocab_size or size.vocab_size or 50257)
    model = build_model(variant, dims, device="meta")
    return {
        "variant": variant.name,
        "hash": variant.hash,
        "size": size_name,
        "resolved": variant.to_dict(),
        "dims": dataclasses.asdict(dims),
        "cost": cost(model, kv_dtype).to_dict(),
    }


def cmd_inspect(args) -> int:
    if args.vocab_size is not None and args.vocab_size < 1:
        raise AblateError(f"--vocab-size must be at least 1, got {args.vocab_size}; e.g. --vocab-size 50257")
    info = inspect_variant(args.variant, args.size, args.vocab_size, args.kv_dtype)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    console.print(f"[bold]{info['variant']}[/]  (hash {info['hash']}, size {info['size']})")
    slots = Table(title="resolved variant")
    slots.add_column("slot")
    slots.add_column("component")
    slots.add_column("options")
    for slot, values in info["resolved"].items():
        values = dict(values)
        name = values.pop("component", "")
        slots.add_row(slot, name, ", ".join(f"{k}={v}" for k, v in values.items()))
    console.print(slots)
    d, c = info["dims"], info["cost"]
    table = Table(title="accounting")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("dims", f"d_model {d['d_model']}, layers {d['n_layers']}, heads {d['n_heads']}, "
                  f"context {d['context']}, vocab {d['vocab_size']}")
    table.add_row("parameters", f"{c['params']:,}")
    table.add_row("non-embedding parameters", f"{c['non_embedding_params']:,}")
    table.add_row("training FLOPs/token (6N + 12·L·H·Q·T)", f"{c['flops_per_token']:,}")
    table.add_row("  of which attention (12·L·H·Q·T)", f"{c['attention_flops_per_token']:,}")
    table.add_row(f"KV-cache bytes/token ({c['kv_dtype']})", f"{c['kv_cache_bytes_per_token']:,}")
    console.print(table)
    return 0



def add_commands(sub) -> None:
    p = sub.add_parser("list", help="list registered components (optionally one slot or a pattern like 'rope*')")
    p.add_argument("pattern", nargs="?", help="a slot (position, norm, ...) or a glob like 'rope*' (default: all)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("describe", help="describe a component, variant, architecture preset or size preset")
    p.add_argument("name", help="a component's name, e.g. rope, or slot:name when two slots share it; a variant "
                                "such as rope+swiglu; a preset")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("inspect", help="resolve a variant and print its parameters, FLOPs and KV cache (no training)")
    p.add_argument("variant", help="variant string, preset or variants/ file, e.g. rope+swiglu")
    p.add_argument("--size", default="gpt2-small", help="size preset (default gpt2-small; see `ablate list`)")
    p.add_argument("--vocab-size", type=int, help="vocabulary (default: the size's, else 50257; given, it replaces the size's)")
    p.add_argument("--kv-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16", "int8"],
                   help="element type assumed for the KV-cache bytes per token (default bfloat16)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)
