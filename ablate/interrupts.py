"""Holding Ctrl-C and SIGTERM while a run saves what it has: a Ctrl-C (people press it twice) must not cut
the checkpoint, ``result.json`` or the MLflow run's last metrics and status short."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def held() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside are held, not acted on; when it ends, their handlers come back
    and the first one held is delivered again (so a stop asked for while a finished run saved its result
    still stops the process, after the result is safe). Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: arrived.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if arrived:
            signal.raise_signal(arrived[0])
