"""Holding Ctrl-C and SIGTERM while a stopping run saves what it has: a second Ctrl-C (people press it
twice) must not cut the checkpoint, ``result.json`` or the MLflow run's last metrics and status short."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def held() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM inside (the run is stopping already); their handlers come back after.
    Outside the main thread, where handlers cannot be set, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
