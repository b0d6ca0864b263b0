"""Long-running commands stop cleanly: SIGINT and SIGTERM only set an event."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Make Ctrl-C and SIGTERM set ``stop`` (the loop finishes its batch); answer a function that undoes it.

    The handler only sets the event: writing output from a signal handler can re-enter the stream.
    """

    def handler(signum, frame) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
