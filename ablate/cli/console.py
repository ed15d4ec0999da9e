"""The one console every command prints to."""

from __future__ import annotations

import os
import sys

from rich.console import Console

# wide tables when writing to a file or pipe (rich would otherwise assume 80 columns)
console = Console() if sys.stdout.isatty() else Console(width=200)


def echo(text: str) -> None:
    """A plain line, flushed at once: progress lines of long commands and of worker processes."""
    print(text, flush=True)


class OutlivesItsReader:
    """Standard output (or error) that outlives its reader: once the pipe it writes to is closed (``ablate run | head``),
    the rest goes to /dev/null and the command carries on, so a training run is not killed, and its
    results not lost, because its viewer stopped reading."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def _drop_the_rest(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.stream.fileno())
        os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._drop_the_rest()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._drop_the_rest()
            self.stream.flush()  # what was buffered goes to /dev/null

    def __getattr__(self, name: str):
        return getattr(self.stream, name)
