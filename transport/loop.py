"""EventLoop: the single-threaded poll loop of one process, plus a self-pipe to wake it from signals.

This module owns the zmq.Poller, the wakeup socket pair and the loop's shape; it knows nothing of Raft.
Each turn waits until a registered socket is readable, the wakeup pipe is written, or the deadline the
previous turn asked for arrives; it then calls the readable sockets' callbacks (each drains what it can,
bounded) and finally the turn function, which does the work of the turn and returns the next deadline
(time.monotonic seconds), or None to stop the loop.

Signals: `catch_signals` installs handlers that only record the signal and let the C-level wakeup fd
(signal.set_wakeup_fd) write a byte to the pipe, so a poll that is waiting returns at once.
"""

from __future__ import annotations

import contextlib
import math
import signal
import socket
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

import zmq

MAX_POLL_MS = 1000  # never sleep longer than this, whatever the deadline says
Clock = Callable[[], float]
Turn = Callable[[float], float | None]


class EventLoop:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.turns = 0
        self._poller = zmq.Poller()
        self._readers: dict[Any, Callable[[], None]] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller.register(self._wake_r.fileno(), zmq.POLLIN)
        self._closed = False

    def add_reader(self, sock: zmq.Socket[bytes], on_readable: Callable[[], None]) -> None:
        """Call `on_readable()` in every turn in which `sock` has something to receive."""
        self._readers[sock] = on_readable
        self._poller.register(sock, zmq.POLLIN)

    def remove_reader(self, sock: zmq.Socket[bytes]) -> None:
        """Stop watching `sock` (before closing it)."""
        if self._readers.pop(sock, None) is not None:
            self._poller.unregister(sock)

    def wakeup_fd(self) -> int:
        """A non-blocking fd whose writes wake the loop (for signal.set_wakeup_fd)."""
        return self._wake_w.fileno()

    def wakeup(self) -> None:
        """Make a waiting poll return now. Safe from signal handlers and other threads."""
        with contextlib.suppress(OSError):  # a full pipe: the loop is going to wake up anyway
            self._wake_w.send(b"\0")

    def poll(self, deadline: float) -> None:
        """Wait until something is readable or `deadline` passes, then run the readable callbacks."""
        wait = max(0.0, deadline - self.clock())
        timeout_ms = min(MAX_POLL_MS, math.ceil(wait * 1000))
        events = self._poller.poll(timeout_ms)
        wake_fd = self._wake_r.fileno()
        for sock, _ in events:
            if sock == wake_fd:
                self._drain_wakeups()
            else:
                reader = self._readers.get(sock)  # an earlier callback may have removed it
                if reader is not None:
                    reader()

    def run(self, turn: Turn) -> None:
        """Poll, then call `turn(now)`, until it returns None. Its result is the next poll's deadline."""
        deadline = self.clock()
        while True:
            self.poll(deadline)
            self.turns += 1
            next_deadline = turn(self.clock())
            if next_deadline is None:
                return
            deadline = next_deadline

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sock in self._readers:
            self._poller.unregister(sock)
        self._readers.clear()
        self._wake_r.close()
        self._wake_w.close()

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(OSError):  # drained (BlockingIOError) or closed
            while self._wake_r.recv(4096):
                pass


def catch_signals(
    loop: EventLoop, signals: Iterable[signal.Signals], on_signal: Callable[[int], None]
) -> Callable[[], None]:
    """Route `signals` to `on_signal(signum)` and wake `loop` when one arrives. Main thread only.

    `on_signal` runs in the main thread between bytecodes, possibly in the middle of a turn: it must only
    record the signal (set a flag). Returns a function that restores the previous handlers.
    """
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        on_signal(signum)
        loop.wakeup()  # in case the C-level wakeup fd was replaced by someone else

    for sig in signals:
        previous[sig] = signal.signal(sig, handler)
    old_fd = signal.set_wakeup_fd(loop.wakeup_fd(), warn_on_full_buffer=False)

    def restore() -> None:
        signal.set_wakeup_fd(old_fd)
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
