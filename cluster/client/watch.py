"""Watch: the caller's side of `Client.watch()`, an iterator over change events, closable.

    with c.watch("servers/") as w:              # every change under the prefix from now on
        for event in w:                          # blocks until the next event
            print(event["type"], event["key"], event["value"], event["revision"])
            w.revision                           # every change up to here was delivered

Events are dicts {"type": "PUT" | "DELETE", "key", "value" (None for DELETE), "revision" (the change's
mod revision), "create_revision", "version" (both 0 for DELETE)}, in revision order, each change exactly
once. A del_prefix is one revision, delivered as one DELETE per key in key order. There is no "prev" (the
previous value): read it before, or keep it from the earlier event.

The I/O thread (cluster/client/io_thread.py) drives a WatchFollower (cluster/client/watching.py), which
resumes the watch on another node when its node goes silent, and pushes events into this object's
queue; the queue holds at most about two windows of events, since the node sends no more than a window
the consumer has not taken. Iteration ends with an exception when the watch ends: Compacted (re-list,
then watch from the listing's revision + 1), WatchCancelled, InvalidRequest, or ClientClosed; a watch
closed by its caller just stops.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from cluster.errors import WatchCancelled

_WAIT_SLICE = 0.5  # wake up this often while blocked, so Ctrl-C reaches a waiting main thread


class Watch:
    """An open watch; see the module docstring. Thread-safe between the I/O thread and one consumer."""

    def __init__(self, key: str, prefix: bool, window: int, start: int = 0) -> None:
        self.key = key
        self.prefix = prefix
        self.window = window
        self.start = start  # the first revision wanted; 0: from now
        self._cond = threading.Condition()
        self._events: deque[dict[str, Any]] = deque()
        self._end: BaseException | None = None
        self._revision = start - 1 if start else 0
        self._closed = False
        self._taken = 0  # consumed, not yet reported to the I/O thread
        # Set by the Client: report consumed events, and close, to the I/O thread.
        self.on_consumed: Callable[[int], None] = lambda n: None
        self.on_close: Callable[[], None] = lambda: None

    # --- the consumer -----------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """Every change up to this revision was delivered (progress notifications advance it)."""
        return self._revision

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        event = self.next(None)
        assert event is not None
        return event

    def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next event; None if none came within `timeout` seconds (None: wait for ever)."""
        report = 0
        with self._cond:
            remaining = timeout
            if self._closed:
                raise StopIteration
            while not self._events:
                if self._end is not None or self._closed:
                    self._report(self._taken)
                    if self._closed:
                        raise StopIteration
                    assert self._end is not None
                    raise self._end
                if self._taken:  # about to wait: let the node send more first
                    report, self._taken = self._taken, 0
                    self._cond.release()
                    try:
                        self.on_consumed(report)
                    finally:
                        self._cond.acquire()
                    continue
                if remaining is not None and remaining <= 0:
                    return None
                step = _WAIT_SLICE if remaining is None else min(_WAIT_SLICE, remaining)
                self._cond.wait(step)
                if remaining is not None:
                    remaining -= step
            event = self._events.popleft()
            self._taken += 1
            if self._taken >= max(1, self.window // 4):
                report, self._taken = self._taken, 0
        if report:
            self.on_consumed(report)
        return event

    def close(self) -> None:
        """Cancel the watch (idempotent); iteration stops."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self.on_close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the I/O thread ---------------------------------------------------------------------------

    def deliver(self, events: list[dict[str, Any]], revision: int) -> None:
        with self._cond:
            self._events.extend(events)
            self._revision = max(self._revision, revision)
            self._cond.notify_all()

    def end(self, error: BaseException) -> None:
        with self._cond:
            if self._end is None and not (self._closed and isinstance(error, WatchCancelled)):
                self._end = error
            self._cond.notify_all()

    def _report(self, n: int) -> None:
        if n:
            self._taken = 0
            self.on_consumed(n)
