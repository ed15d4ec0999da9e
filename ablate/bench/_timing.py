"""What every bench shares: the device, thread count, building one attention-slot module, timing a step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ablate.errors import AblateError
from ablate.slots import Attention, Dims, Position


def pick_device(device: str | None) -> torch.device:
    """``None`` or ``auto``: CUDA when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise AblateError(f"unknown device {device!r} ({err}); use cpu, cuda or auto") from None
    if dev.type not in ("cpu", "cuda"):
        raise AblateError(f"the benchmarks run on cpu or cuda, not {device!r}; use --device cpu, cuda or auto")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AblateError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    return dev


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} torch thread{'s' if threads != 1 else ''})"


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run with ``threads`` intra-op threads (None: leave as is); yields the count in effect."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def check_dims(d_model: int, n_heads: int) -> None:
    if d_model < 1 or n_heads < 1:
        raise AblateError(f"width and heads must be at least 1, got width {d_model} and {n_heads} heads; "
                          "e.g. --width 128 --heads 4")
    if d_model % n_heads:
        raise AblateError(f"width {d_model} is not divisible by {n_heads} heads; pick dims that divide")


def build_mixer(name: str, dims: Dims) -> Attention:
    """The attention-slot module ``name`` (options allowed, e.g. ``lstm(match_params=true)``) at ``dims``."""
    from ablate.variant import parse_variant

    variant = parse_variant(name)
    choice = next(c for c in variant.choices if c.slot == "attention")
    base = name.split("(")[0].strip()
    if choice.name != base:
        slot = next((c.slot for c in variant.choices if c.name == base), None)
        what = f"a {slot} component" if slot else "a preset"
        raise AblateError(f"{base!r} is {what}, not a token mixer (the attention slot); "
                          f"run `ablate list attention` for the choices")
    norm = next(c for c in variant.choices if c.slot == "norm")
    try:
        return choice.spec.cls(choice.options, dims, lambda dim: norm.spec.cls(norm.options, dim, dims.bias))
    except ValueError as err:
        raise AblateError(f"cannot build {name} at width {dims.d_model}, {dims.n_heads} heads: {err}") from None


def variant_dims(variant_text: str, size: str, vocab: int | None = None, context: int | None = None):
    """(variant, dims) of a benched model at the size preset ``size``: the preset's own vocabulary where it
    has one (gpt2-small: 50,257), else ``vocab``, else Tiny Shakespeare's 65 characters; ``context``
    (when given) instead of the preset's."""
    from ablate.model import make_dims
    from ablate.presets import get_size
    from ablate.variant import parse_variant

    variant, preset = parse_variant(variant_text), get_size(size)
    overrides = {"context": context} if context else {}
    return variant, make_dims(preset, variant, vocab or preset.vocab_size or 65, **overrides)


def no_position(dims: Dims) -> Position:
    """A position scheme that does nothing, so a bench times the mixing alone."""
    return Position(None, dims)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timing covers it (the CPU runs synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_step_seconds(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``step`` over ``repeats`` calls after ``warmup`` untimed ones (synchronised on GPU)."""
    if repeats < 1 or warmup < 0:
        raise AblateError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_backward(module: nn.Module, position: Position, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    """One training step's worth of work for a mixer: forward, then backward to its weights and its input."""
    pos = torch.arange(x.shape[1], device=x.device)

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x, position, pos).backward(grad)

    return step


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def markdown_table(columns, rows) -> str:
    """A Markdown table; ``|`` inside a cell is escaped."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(columns), "|" + "---|" * len(columns), *(line(r) for r in rows)])
