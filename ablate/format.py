"""Number formatting for tables and messages: one place, so every report writes numbers the same way."""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"


def short(value: Any) -> str:
    """Floats to three significant digits (``0.00123``, ``3e-04``), anything else as ``str``."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def num(x: float | None, decimals: int = 4, sign: bool = False) -> str:
    """A fixed-point number, ``—`` when missing or not finite; ``sign`` writes ``+`` for positives."""
    if x is None or not math.isfinite(x):
        return MISSING
    return f"{x:+.{decimals}f}" if sign else f"{x:.{decimals}f}"


def pval(p: float | None) -> str:
    """A p-value to three decimals, ``<0.001`` below that."""
    if p is None or math.isnan(p):
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def si(x: float | None, binary: bool = False, unit: str = "") -> str:
    """Compact magnitudes: ``124.4M``, ``750.0M``, ``36.0 KiB``."""
    if x is None or not math.isfinite(float(x)):
        return MISSING
    x = float(x)
    prefixes = ["", "Ki", "Mi", "Gi", "Ti"] if binary else ["", "k", "M", "G", "T", "P"]
    base = 1024.0 if binary else 1000.0
    i = 0
    while abs(x) >= base and i < len(prefixes) - 1:
        x /= base
        i += 1
    text = (f"{x:.0f}" if x == int(x) else f"{x:.3g}") if i == 0 else f"{x:.1f}"
    sep = " " if binary else ""
    return f"{text}{sep}{prefixes[i]}{unit}"
