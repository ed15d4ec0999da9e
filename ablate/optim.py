"""What the trainer runs on and how it steps: device, autocast precision, AdamW and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from ablate.config import RunConfig
from ablate.errors import AblateError


def pick_device(name: str) -> str:
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AblateError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise AblateError("device 'mps' asked for, but MPS is not available here; use --device cpu or auto")
    return name


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks instead of handing them back to the system.

    A CPU training step frees and reallocates the same few megabytes of activations every step; by
    default glibc returns them to the system (blocks above its mmap/trim thresholds), so every step
    page-faults them in again: 700-1400 minor faults per step at nanoGPT's CPU size, 2-3% of the step
    (62.9 vs 64.6 ms median, one thread, 4 alternated processes), the same peak memory. Process-wide
    and harmless elsewhere; a no-op (False) without glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_mmap_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def autocast_dtype(device: str, dtype: str) -> torch.dtype | None:
    if dtype in ("float32", "tf32"):
        return None
    if dtype == "bfloat16":
        return torch.bfloat16
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # CPU and MPS train in float32 by default


def set_matmul_precision(device: str, dtype: str) -> None:
    """On CUDA, float32 matrix multiplies use TF32 tensor cores (10-bit mantissa inputs, float32
    accumulation) unless the run asked for exact float32: with ``tf32``, and with ``auto``/``bfloat16``,
    whose autocast leaves some matmuls in float32. ``float32`` keeps IEEE float32. Other devices keep
    torch's default; ``tf32`` there is a user error (NVIDIA tensor cores only)."""
    if not device.startswith("cuda"):
        if dtype == "tf32":
            raise AblateError(f"dtype tf32 needs a CUDA device (NVIDIA tensor cores), not {device}; "
                              "use float32 or bfloat16 here")
        return
    torch.set_float32_matmul_precision("highest" if dtype == "float32" else "high")


def lr_at(config: RunConfig, progress: float, total_steps: int | None) -> float:
    """The learning rate at ``progress`` ∈ [0, 1] of the budget: linear warmup, then the schedule.

    With a known step count this is nanoGPT's schedule exactly (warmup lr·(it+1)/(warmup+1), then
    cosine from lr to min_lr); a time budget uses the same curve over the fraction of seconds spent.
    """
    w = config.warmup if config.warmup < 1 else config.warmup / (total_steps or config.warmup * 20)
    eps = 1 / total_steps if total_steps else 1e-3 * max(w, 1e-3)
    if progress < w:
        return config.lr * (progress + eps) / (w + eps)
    rest = min(1.0, (progress - w) / max(1 - w, 1e-9))
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        return config.min_lr + 0.5 * (1 + math.cos(math.pi * rest)) * (config.lr - config.min_lr)
    if config.schedule == "linear":
        return config.lr - rest * (config.lr - config.min_lr)
    # inverse square root (Vaswani et al. 2017): lr · sqrt(w / progress) after warmup
    return max(config.min_lr, config.lr * math.sqrt(max(w, 1e-3) / max(progress, w, 1e-3)))


def check_warmup(config: RunConfig, total_steps: int | None) -> int | None:
    """``total_steps``, once a warmup given in steps is known to end before the budget does."""
    if total_steps is not None and config.warmup >= 1 and config.warmup >= total_steps:
        raise AblateError(f"warmup {config.warmup:g} steps is not shorter than the budget's {total_steps} steps, so the "
                          f"learning rate would never reach its peak; give fewer warmup steps or a fraction of the "
                          f"budget (e.g. --warmup 0.05)")
    return total_steps


def make_optimizer(model: torch.nn.Module, config: RunConfig, device: str) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices (and embeddings) only, never on biases or norm gains."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), **adamw_kernel(device))


FUSED_DEVICES = ("cuda", "cpu")


def adamw_kernel(device: str) -> dict[str, bool]:
    """AdamW's implementation on ``device``: the fused kernel on CUDA and CPU (one kernel over all
    parameters; on this project's 2-core CPU at nanoGPT's CPU size 2.6 → 0.6 ms per step, within
    one float32 ulp of the per-tensor loop), torch's default elsewhere."""
    return {"fused": True} if device.split(":")[0] in FUSED_DEVICES else {}
