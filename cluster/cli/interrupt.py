"""Stopping a long-running cluster-ctl command (watch, register, event listen) on a signal by setting a
flag, never by raising KeyboardInterrupt.

An exception raised at an arbitrary point can land between a lock's acquire and its `with` block (in a
watch, in the client's I/O thread hand-off, in the cluster service's threads) and leave the lock held, so
the close that follows waits for ever; a flag the command checks between bounded waits cannot.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

# How often a command waiting for something looks at its stop flag.
STOP_POLL_S = 0.2


class StopFlag:
    """Set by the signals given to `stop_on`; read with `bool(flag)` between bounded waits."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on(*signums: int) -> Iterator[StopFlag]:
    """Within the block the given signals (default SIGINT) set the flag instead of their usual action;
    the previous handlers come back after it. From a thread other than the main one (run() called by an
    application) no handler can be installed, and the flag stays unset."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def on_signal(signum: int, _frame: object) -> None:
        flag.signal = signum

    wanted = signums or (signal.SIGINT,)
    previous = {s: signal.signal(s, on_signal) for s in wanted}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
