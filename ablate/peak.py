"""A device's peak FLOP/s, the denominator of MFU: measured in this process (the best of a few square
matmuls at the run's dtype), or a GPU's data-sheet dense bf16 peak when asked for."""

from __future__ import annotations

import time
from functools import lru_cache

import torch

# dense bf16 data-sheet peaks (FLOP/s) by device-name fragment
KNOWN_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12, "4090": 165e12}


def known_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in KNOWN_PEAKS.items() if k in name), None)


def measured_peak(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 10) -> float:
    """The best FLOP/s of ``repeats`` square matmuls at ``dtype`` (2·n³ FLOPs each, after one warm-up)."""
    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        (a @ b).sum()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


@lru_cache(maxsize=8)
def run_peak(device: str, dtype: str) -> float:
    """The peak every run of this process divides by (its MFU on every run): one quick probe per (device,
    ``dtype``: the type the matmuls run in, ``bfloat16`` or ``float32``), cached, so a run's MFU costs a
    fraction of a second once (a GPU's data-sheet peak needs no probe)."""
    dev = torch.device(device)
    known = known_peak(dev)
    if known:
        return known
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    return measured_peak(dev, torch_dtype, size=1024 if dev.type == "cpu" else 4096, repeats=3)
