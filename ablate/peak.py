"""A device's peak FLOP/s, the denominator of MFU: measured in this process (the best of a few square
matmuls at the run's dtype), or a known GPU's data-sheet dense bf16 peak for bf16 work."""

from __future__ import annotations

import re
import time

import torch

# dense bf16 data-sheet peaks (FLOP/s) by the model in the device's name, the more specific first: the
# PCIe and NVL cards run at lower clocks than the SXM parts ("NVIDIA H100 80GB HBM3"), and "L4" must not
# match an L40 or L40S
KNOWN_PEAKS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200 NVL", 835e12), ("H100", 989e12),
               ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
               ("A10G", 125e12), ("4090", 165e12))


def peak_for_name(name: str) -> float | None:
    """The data-sheet dense bf16 peak of a GPU called ``name`` (as torch reports it), or None if unknown."""
    for model, value in KNOWN_PEAKS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(model)}(?![A-Za-z0-9])", name, re.IGNORECASE):
            return value
    return None


def known_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return peak_for_name(torch.cuda.get_device_name(device))


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


_BEST: dict[tuple[str, str], float] = {}


def run_peak(device: str, dtype: str) -> float:
    """The peak a run's MFU divides by, per device. ``dtype`` is the type its matmuls run in (``bfloat16``
    or ``float32``). A known GPU training in bf16 uses its data-sheet peak; otherwise a quick probe
    (a few 1024² matmuls on the CPU, 4096² on a GPU), and the best of every probe this process made for
    (device, dtype): the trainer probes when a run starts and when it ends, so one probe slowed by a busy
    minute does not inflate MFU."""
    dev = torch.device(device)
    known = known_peak(dev) if dtype == "bfloat16" else None  # the table holds bf16 peaks
    if known:
        return known
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    probe = measured_peak(dev, torch_dtype, size=1024 if dev.type == "cpu" else 4096, repeats=3)
    _BEST[device, dtype] = max(_BEST.get((device, dtype), 0.0), probe)
    return _BEST[device, dtype]
