"""`ablate bench attention` (EX1): the lecture's separate ``Head`` modules against one batched module.

On the same weights (the batched ``mha``'s fused qkv projection copied into each ``Head``'s query, key
and value) both forms must compute the same outputs and input gradients, to float32 rounding:
|heads − mha| ≤ ATOL + RTOL·|mha| elementwise. The speedup is the separate form's forward+backward
time over the batched form's, medians after warm-up, at a few (width, heads, context) sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ablate.bench._timing import (
    build_mixer,
    check_dims,
    describe_device,
    forward_backward,
    markdown_table,
    median_step_seconds,
    no_position,
    pick_device,
    torch_threads,
)
from ablate.bench.defaults import DEFAULT_SIZES
from ablate.errors import AblateError
from ablate.slots import Dims

ATOL, RTOL = 1e-5, 1e-4  # float32
COLUMNS = ("d", "H", "T", "B", "max|Δ|y", "max|Δ|dx", "agree", "heads ms", "mha ms", "speedup")


@torch.no_grad()
def copy_batched_to_heads(batched: nn.Module, heads: nn.Module) -> None:
    """Give the separate-heads module the batched module's weights (qkv rows: all queries, keys, values)."""
    n, hd = len(heads.heads), heads.heads[0].query.out_features
    width = n * hd
    for kind in ("weight", "bias"):
        fused = getattr(batched.qkv, kind)
        if fused is None:
            continue
        for part, name in zip(fused.split(width, dim=0), ("query", "key", "value")):
            for i, head in enumerate(heads.heads):
                getattr(getattr(head, name), kind).copy_(part[i * hd : (i + 1) * hd])
    heads.out_proj.load_state_dict(batched.out_proj.state_dict())


@dataclass(frozen=True)
class AttentionRow:
    d_model: int
    n_heads: int
    context: int
    batch: int
    max_out_diff: float
    max_grad_diff: float
    agree: bool
    heads_seconds: float
    mha_seconds: float

    @property
    def speedup(self) -> float:
        return self.heads_seconds / self.mha_seconds


@dataclass
class AttentionBench:
    device: str
    threads: int
    warmup: int
    repeats: int
    rows: list[AttentionRow] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return all(r.agree for r in self.rows)

    @property
    def setup(self) -> str:
        return (f"{self.device}, float32, width d, H heads, context T, batch B, forward+backward, median of "
                f"{self.repeats} after {self.warmup} warm-up; agree: |heads − mha| ≤ {ATOL:g} + {RTOL:g}·|mha| "
                f"for outputs y and input gradients dx; speedup = heads ms / mha ms")

    def cells(self) -> list[list[str]]:
        return [[str(r.d_model), str(r.n_heads), str(r.context), str(r.batch), f"{r.max_out_diff:.1e}",
                 f"{r.max_grad_diff:.1e}", "yes" if r.agree else "NO", f"{1e3 * r.heads_seconds:.2f}",
                 f"{1e3 * r.mha_seconds:.2f}", f"{r.speedup:.1f}×"] for r in self.rows]

    def table(self):
        from rich.table import Table

        table = Table(title="EX1: separate heads vs batched multi-head attention (same weights)", caption=self.setup)
        for name in COLUMNS:
            table.add_column(name, justify="right", no_wrap=True)
        for row in self.cells():
            table.add_row(*row)
        return table

    def markdown(self) -> str:
        return f"Setup: {self.setup}.\n\n" + markdown_table(COLUMNS, self.cells())

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rows"] = [{**asdict(r), "speedup": r.speedup} for r in self.rows]
        return data


def _within(a: torch.Tensor, ref: torch.Tensor) -> bool:
    return bool(((a - ref).abs() <= ATOL + RTOL * ref.abs()).all())


def run_attention(
    sizes: Sequence[tuple[int, int, int]] = DEFAULT_SIZES,
    batch: int = 8,
    warmup: int = 2,
    repeats: int = 5,
    device: str | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> AttentionBench:
    """Check heads == mha on copied weights, then time both, at each (width, heads, context) size."""
    if not sizes:
        raise AblateError("no sizes to measure; e.g. --sizes 128x4x256")
    if batch < 1:
        raise AblateError(f"batch must be at least 1, got {batch}")
    dev = pick_device(device)
    with torch_threads(threads) as n_threads:
        bench = AttentionBench(describe_device(dev), n_threads, warmup, repeats)
        for d_model, n_heads, context in sizes:
            check_dims(d_model, n_heads)
            dims = Dims(d_model, 1, n_heads, context, vocab_size=1)
            torch.manual_seed(seed)
            mha = build_mixer("mha", dims).to(dev).train()
            heads = build_mixer("heads", dims).to(dev).train()
            copy_batched_to_heads(mha, heads)
            position = no_position(dims)
            g = torch.Generator(device=dev).manual_seed(seed)
            x = torch.randn(batch, context, d_model, device=dev, generator=g).requires_grad_()
            grad = torch.randn(batch, context, d_model, device=dev, generator=g)
            pos = torch.arange(context, device=dev)
            outs, grads = [], []
            for module in (mha, heads):
                x.grad = None
                y = module(x, position, pos)
                y.backward(grad)
                outs.append(y.detach())
                grads.append(x.grad.detach().clone())
            agree = _within(outs[1], outs[0]) and _within(grads[1], grads[0])
            mha_s = median_step_seconds(forward_backward(mha, position, x, grad), dev, warmup, repeats)
            heads_s = median_step_seconds(forward_backward(heads, position, x, grad), dev, warmup, repeats)
            bench.rows.append(AttentionRow(d_model, n_heads, context, batch, (outs[1] - outs[0]).abs().max().item(),
                                           (grads[1] - grads[0]).abs().max().item(), agree, heads_s, mha_s))
    return bench
