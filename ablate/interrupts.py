"""Holding Ctrl-C and SIGTERM while a run saves what it has: a Ctrl-C (people press it twice) must not cut
the checkpoint, ``result.json`` or the MLflow run's last metrics and status short."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: a stop asked for while a finished run saved its result; a study's worker stops before its next trial
PENDING = threading.Event()


@contextmanager
def held(deliver: bool = True) -> Iterator[None]:
    """The first SIGINT or SIGTERM that arrives inside is held, not acted on, and says so; the handlers come
    back at once, so pressing Ctrl-C again abandons the saving. When the block ends, a held signal is
    delivered again (``deliver``), or else recorded in ``PENDING`` (a finished run returns its result, and
    whoever runs it next decides). Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous: dict[int, object] = {}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        previous.clear()

    def hold(signum, frame) -> None:
        arrived.append(signum)
        restore()
        print("ablate: stopping once the run's results are saved (Ctrl-C again abandons them)", file=sys.stderr,
              flush=True)

    previous.update({sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)})
    try:
        yield
    finally:
        restore()
        if arrived and deliver:
            signal.raise_signal(arrived[0])
        elif arrived:
            PENDING.set()
