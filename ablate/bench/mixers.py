"""`ablate bench mixers`: forward+backward time per token of each token mixer against context length.

The lecture's claim, measured: a recurrent network is sequential in T (one step per position, each
waiting for the last), while attention computes every position at once. Each mixer is one
attention-slot module at the same width d, timed alone (no position scheme, no MLP) on a batch of
``batch_tokens`` tokens split into sequences of the context length, so every context does the same
number of tokens per step: longer contexts mean fewer, longer sequences. Medians over ``repeats``
timed steps after ``warmup`` untimed ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ablate.bench._timing import (
    build_mixer,
    check_dims,
    describe_device,
    forward_backward,
    markdown_table,
    median_step_seconds,
    no_position,
    params,
    pick_device,
    torch_threads,
)
from ablate.bench.defaults import DEFAULT_CONTEXTS, DEFAULT_MIXERS
from ablate.errors import AblateError
from ablate.slots import Dims

COLUMNS = ("T", "batch", "mixer", "params", "ms/step", "µs/tok", "tok/s", "×")


@dataclass(frozen=True)
class MixerTiming:
    mixer: str
    context: int
    batch: int
    params: int
    seconds: float  # median forward+backward time of one step of batch × context tokens

    @property
    def tokens(self) -> int:
        return self.batch * self.context

    @property
    def us_per_token(self) -> float:
        return 1e6 * self.seconds / self.tokens

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


@dataclass
class MixerBench:
    """The timings and what they were measured on."""

    device: str
    threads: int
    d_model: int
    n_heads: int
    batch_tokens: int
    warmup: int
    repeats: int
    dtype: str
    timings: list[MixerTiming] = field(default_factory=list)

    @property
    def setup(self) -> str:
        return (f"{self.device}, {self.dtype}, width {self.d_model}, {self.n_heads} heads, "
                f"{self.batch_tokens} tokens/step (batch = that // T, at least 1 sequence), forward+backward, "
                f"median of {self.repeats} "
                f"after {self.warmup} warm-up; × = step time over the first mixer's")

    def cells(self) -> list[list[str]]:
        """One row per (context T, mixer), in COLUMNS order; the last column is the step time over the
        first mixer's at the same context."""
        reference = {}
        for t in self.timings:
            reference.setdefault(t.context, t)
        rows = []
        for t in self.timings:
            ref = reference[t.context]
            rows.append([str(t.context), str(t.batch), t.mixer, f"{t.params:,}", f"{1e3 * t.seconds:.2f}",
                         f"{t.us_per_token:.3f}", f"{t.tokens_per_s:,.0f}", f"{t.seconds / ref.seconds:.2f}×"])
        return rows

    def columns(self) -> tuple[str, ...]:
        first = self.timings[0].mixer if self.timings else "mha"
        return (*COLUMNS[:-1], f"× {first}")

    def table(self):
        from rich.table import Table

        table = Table(title="Token mixers: forward+backward speed vs context", caption=self.setup)
        for name in self.columns():
            if name == "mixer":
                table.add_column(name, overflow="fold", min_width=8)
            else:
                table.add_column(name, justify="right", no_wrap=True)
        rows = self.cells()
        for i, row in enumerate(rows):
            last_of_context = i + 1 == len(rows) or rows[i + 1][0] != row[0]
            table.add_row(*row, end_section=last_of_context)
        return table

    def markdown(self) -> str:
        return f"Setup: {self.setup}.\n\n" + markdown_table(self.columns(), self.cells())

    def to_dict(self) -> dict:
        data = asdict(self)
        data["timings"] = [{**asdict(t), "us_per_token": t.us_per_token, "tokens_per_s": t.tokens_per_s}
                           for t in self.timings]
        return data

    def plot(self, path: str | Path) -> Path:
        """µs/token and tokens/s against context, one line per mixer (log-log), saved as a PNG."""
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for mixer in dict.fromkeys(t.mixer for t in self.timings):
            points = [t for t in self.timings if t.mixer == mixer]
            ctx = [t.context for t in points]
            left.plot(ctx, [t.us_per_token for t in points], marker="o", label=mixer)
            right.plot(ctx, [t.tokens_per_s for t in points], marker="o", label=mixer)
        for ax, ylabel in ((left, "µs per token (forward+backward)"), (right, "tokens per second")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("context length T")
            ax.set_ylabel(ylabel)
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: tick_label(v)))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xticks([t.context for t in self.timings], [str(t.context) for t in self.timings])
            ax.grid(True, which="both", alpha=0.3)
        left.legend()
        fig.suptitle(f"Token mixers at width {self.d_model}: {self.device}, {self.batch_tokens} tokens/step",
                     fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def tick_label(value: float) -> str:
    """A log axis's label: thousands separated, and below 1 the digits that matter (0.5, not 0)."""
    return f"{value:,.0f}" if value >= 1 else f"{value:.3g}"


def run_mixers(
    mixers: Sequence[str] = DEFAULT_MIXERS,
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    d_model: int = 128,
    n_heads: int = 4,
    batch_tokens: int = 8192,
    warmup: int = 2,
    repeats: int = 5,
    device: str | None = None,
    threads: int | None = None,
    dtype: str = "float32",
    seed: int = 0,
) -> MixerBench:
    """Time forward+backward of each mixer at each context (batch = batch_tokens // context, at least 1)."""
    check_dims(d_model, n_heads)
    if not contexts or min(contexts) < 1:
        raise AblateError(f"contexts must be positive lengths, got {list(contexts)}")
    if not mixers:
        raise AblateError("no mixers to time; e.g. --mixers mha,lstm")
    dev = pick_device(device)
    torch_dtype = _dtype(dtype)
    with torch_threads(threads) as n_threads:
        bench = MixerBench(describe_device(dev), n_threads, d_model, n_heads, batch_tokens, warmup, repeats, dtype)
        for context in contexts:
            batch = max(1, batch_tokens // context)
            dims = Dims(d_model, 1, n_heads, context, vocab_size=1)
            for name in mixers:
                torch.manual_seed(seed)
                module = build_mixer(name, dims).to(dev, torch_dtype).train()
                g = torch.Generator(device=dev).manual_seed(seed)
                x = torch.randn(batch, context, d_model, device=dev, dtype=torch_dtype, generator=g).requires_grad_()
                grad = torch.randn(batch, context, d_model, device=dev, dtype=torch_dtype, generator=g)
                step = forward_backward(module, no_position(dims), x, grad)
                seconds = median_step_seconds(step, dev, warmup, repeats)
                bench.timings.append(MixerTiming(name, context, batch, params(module), seconds))
                del module, x, grad
    return bench


def _dtype(name: str) -> torch.dtype:
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in choices:
        raise AblateError(f"unknown dtype {name!r}; choose one of {', '.join(choices)}")
    return choices[name]
