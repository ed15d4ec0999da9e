"""The one console every command prints to."""

from __future__ import annotations

import sys

from rich.console import Console

# wide tables when writing to a file or pipe (rich would otherwise assume 80 columns)
console = Console() if sys.stdout.isatty() else Console(width=200)


def echo(text: str) -> None:
    """A plain line, flushed at once: progress lines of long commands and of worker processes."""
    print(text, flush=True)
