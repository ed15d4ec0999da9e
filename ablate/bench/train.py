"""`ablate bench train`: what one training step of a variant costs on this device, and how close it runs
to the device's peak (MFU).

Each variant trains for ``warmup + steps`` optimizer steps on random tokens (speed does not depend on
the text) with the trainer's own optimizer (AdamW, weight decay on matrices), gradient clipping and
autocast. The first ``warmup`` steps (allocator, autocast caches, compilation) are timed separately
and left out of the figures. Achieved FLOP/s is the accounting's training FLOPs per token (6N + 12·L·H·Q·T)
times tokens/s; MFU divides it by the device's peak **measured in the same process** at the run's
dtype (the best of a few large matmuls), or, on a GPU, by its data-sheet dense peak when known.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch

from ablate.bench._timing import describe_device, markdown_table, synchronize, variant_dims
from ablate.format import si
from ablate.peak import known_peak, measured_peak


@dataclass
class TrainBench:
    variant: str
    params: int
    flops_per_token: float
    tokens_per_step: int
    warmup_seconds: float
    median_step_ms: float
    tokens_per_s: float
    achieved_flops: float
    peak_flops: float
    mfu: float
    peak_memory_mb: float


def bench_variant(variant_text: str, *, size: str = "cpu", vocab: int | None = None, batch_size: int = 12,
                  context: int | None = None, steps: int = 30, warmup: int = 5, dtype: str = "float32",
                  device: torch.device, peak: float, compile: bool = False, seed: int = 0) -> TrainBench:
    """One variant at ``size`` (its vocabulary: see ``variant_dims``)."""
    from ablate.accounting import cost
    from ablate.config import RunConfig
    from ablate.model import build_model
    from ablate.optim import autocast_dtype, keep_freed_memory, make_optimizer

    if device.type == "cpu":
        keep_freed_memory()  # as the trainer does
    variant, dims = variant_dims(variant_text, size, vocab, context)
    torch.manual_seed(seed)
    model = build_model(variant, dims, device=str(device))
    config = RunConfig(lr=1e-3)
    optimizer = make_optimizer(model, config, str(device))
    amp = autocast_dtype(str(device), dtype)
    stepper = torch.compile(model) if compile else model
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, dims.vocab_size, (batch_size, dims.context + 1), generator=gen) for _ in range(4)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def one_step(i: int) -> None:
        block = batches[i % len(batches)].to(device, non_blocking=True)
        x, y = block[:, :-1].contiguous(), block[:, 1:].contiguous()
        with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
            _, loss = stepper(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)  # each step's time is its own (the trainer itself reads losses only at log points)

    model.train()
    start = time.perf_counter()
    for i in range(warmup):
        one_step(i)
    warmup_seconds = time.perf_counter() - start
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        one_step(warmup + i)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    tokens = batch_size * dims.context
    flops = float(cost(model).flops_per_token)
    tps = tokens / step_s
    memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return TrainBench(variant.name, sum(p.numel() for p in model.parameters()), flops, tokens, warmup_seconds,
                      step_s * 1e3, tps, flops * tps, peak, flops * tps / peak, memory / 2**20)


def run_train(variants: list[str], *, dtype: str = "float32", device: torch.device, probe: bool = True,
              **kwargs) -> tuple[list[TrainBench], float, str]:
    """Every variant's figures, the peak used for MFU and where that peak came from."""
    from ablate.optim import set_matmul_precision

    torch_dtype = {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    set_matmul_precision(str(device), dtype)  # as the trainer; set before the probe, which then measures
    # the matmuls the steps will run
    known = known_peak(device) if dtype == "bfloat16" else None  # the table holds bf16 peaks
    sheet = not probe and known is not None
    before = known if sheet else measured_peak(device, torch_dtype)
    results = [bench_variant(v, dtype=dtype, device=device, peak=before, **kwargs) for v in variants]
    if sheet:
        return results, known, "data-sheet dense bf16 peak"
    peak = max(before, measured_peak(device, torch_dtype))  # probed before and after the steps: a busy
    # minute during one probe lowers the peak, and MFU would overstate
    results = [replace(r, peak_flops=peak, mfu=r.achieved_flops / peak) for r in results]
    return results, peak, f"measured: best {dtype} matmul in this process, before and after the steps"


COLUMNS = ("variant", "params", "ms/step", "tokens/s", "FLOP/s", "MFU", "warm-up s", "peak MB")


def rows(results: list[TrainBench]) -> list[list[str]]:
    return [[r.variant, si(r.params), f"{r.median_step_ms:.1f}", f"{r.tokens_per_s:,.0f}", si(r.achieved_flops),
             f"{r.mfu:.1%}", f"{r.warmup_seconds:.2f}", f"{r.peak_memory_mb:,.0f}"] for r in results]


def table(results: list[TrainBench], peak: float, source: str, device: torch.device, setup: dict):
    from ablate.report.tables import CellTable

    shape = f"batch {setup['batch_size']} x context {setup['context']}"
    mode = setup["dtype"] + (", compiled" if setup["compile"] else "")
    where = "allocated on the GPU" if device.type == "cuda" else "the process's RSS high-water mark so far"
    memory = f"peak MB: {where}"
    cells = CellTable(f"training step on {describe_device(device)}, {mode}, size {setup['size']}, {shape}: median "
                      f"of {setup['steps']} steps after warm-up; MFU against {si(peak)}FLOP/s ({source}); {memory}",
                      list(COLUMNS), right=range(1, 8))
    for row in rows(results):
        cells.add(*row)
    if any(r.mfu > 1 for r in results):
        cells.title += " — MFU above 100%: the probe ran on a busier machine than the steps; rerun when idle"
    return cells


def markdown(results: list[TrainBench]) -> str:
    return markdown_table(COLUMNS, rows(results))


def to_dict(results: list[TrainBench], peak: float, source: str, setup: dict) -> dict:
    return {"setup": setup, "peak_flops": peak, "peak_source": source, "results": [asdict(r) for r in results]}
