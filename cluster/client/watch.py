"""The caller's side of a watch: `Watch` (Client.watch, an iterator) and `AsyncWatch` (AsyncClient.watch,
an async iterator), both closable, over the bookkeeping they share (`WatchFeed`).

    with c.watch("servers/") as w:              # every change under the prefix from now on
        for event in w:                          # blocks until the next event
            print(event["type"], event["key"], event["value"], event["revision"])
            w.revision                           # every change up to here was delivered

    async with c.watch("servers/") as w:        # AsyncClient: the same, awaited
        async for event in w: ...

Events are dicts {"type": "PUT" | "DELETE", "key", "value" (None for DELETE), "revision" (the change's
mod revision), "create_revision", "version" (both 0 for DELETE)}, in revision order, each change exactly
once. A del_prefix is one revision, delivered as one DELETE per key in key order. A watch opened with
prev_kv=True also gets "prev" in every event: the key's value before the change (etcd's prev_kv), None when
the key was absent. A stored None is also None: a PUT with version 1 created the key, and a DELETE always
removed a key that existed.

The client's driver (the Client's I/O thread, or AsyncClient's turns in its event loop) drives a
WatchFollower (cluster/client/watching.py) in ClientCore, which resumes the watch on another node when its
node goes silent, and pushes events into this object's queue (`deliver`, `end`); the queue holds at most
about two windows of events, since the node sends no more than a window the consumer has not taken. The
consumer reports what it took (`on_consumed`, every window/4 events and before it waits), which is the
credit the follower returns to the node. Iteration ends with an exception when the watch ends: Compacted
(re-list, then watch from the listing's revision + 1), WatchCancelled, InvalidRequest, or ClientClosed; a
watch closed by its caller just stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from cluster.errors import InvalidRequest, WatchCancelled

_WAIT_SLICE = 0.5  # wake up this often while blocked, so Ctrl-C reaches a waiting main thread

F = TypeVar("F", bound="WatchFeed")


class Step(enum.Enum):
    EVENT = 1  # here is the next event
    WAIT = 2  # nothing yet
    END = 3  # the watch ended with an error
    STOP = 4  # the caller closed it


class WatchFeed:
    """What the driver feeds and the consumer drains: the events, the revision, the end, the credit.

    Subclasses add the waiting (a thread's condition, or an asyncio event) and guard every method with
    `_guard`, which the driver's side (deliver, end) and the consumer's side (`_step`, close) share."""

    def __init__(self, key: str, prefix: bool, window: int, start: int = 0, prev_kv: bool = False) -> None:
        self.key = key
        self.prefix = prefix
        self.window = window
        self.prev_kv = prev_kv
        self.start = start  # the first revision wanted; 0: from now
        self._events: deque[dict[str, Any]] = deque()
        self._end: BaseException | None = None
        self._revision = start - 1 if start else 0
        self._closed = False
        self._taken = 0  # consumed, not yet reported to the driver
        # Set by the client: report consumed events, and close, to the driver.
        self.on_consumed: Callable[[int], None] = lambda n: None
        self.on_close: Callable[[], None] = lambda: None

    @classmethod
    def checked(
        cls: type[F], key: str, prefix: bool, start_revision: int | None, window: int, prev_kv: bool = False
    ) -> F:
        """A new watch from the caller's arguments; InvalidRequest when they make no sense."""
        if type(key) is not str or (not key and not prefix):
            raise InvalidRequest("watch", "the key must be a str, non-empty unless prefix=True")
        if start_revision is not None and (type(start_revision) is not int or start_revision < 1):
            raise InvalidRequest("watch", "start_revision must be a revision >= 1")
        if type(window) is not int or window < 1:
            raise InvalidRequest("watch", "window must be >= 1")
        if type(prev_kv) is not bool:
            raise InvalidRequest("watch", "prev_kv must be a bool")
        return cls(key, prefix, window, start_revision or 0, prev_kv)

    @property
    def revision(self) -> int:
        """Every change up to this revision was delivered (progress notifications advance it)."""
        return self._revision

    # --- the driver -------------------------------------------------------------------------------

    def deliver(self, events: list[dict[str, Any]], revision: int) -> None:
        with self._guard:
            self._events.extend(events)
            self._revision = max(self._revision, revision)
            self._wake()

    def end(self, error: BaseException) -> None:
        with self._guard:
            if self._end is None and not (self._closed and isinstance(error, WatchCancelled)):
                self._end = error
            self._wake()

    # --- the consumer -----------------------------------------------------------------------------

    def _close(self) -> bool:
        """Mark closed; True the first time (the caller then tells the driver, outside the guard)."""
        with self._guard:
            if self._closed:
                return False
            self._closed = True
            self._wake()
            return True

    def _step(self) -> tuple[Step, Any, int]:
        """Without waiting: what the consumer gets next, and how many consumed events to report first
        (before waiting or ending, report all, so the node can send more)."""
        if self._closed:
            return Step.STOP, None, 0
        if self._events:
            event = self._events.popleft()
            self._taken += 1
            report = 0
            if self._taken >= max(1, self.window // 4):
                report, self._taken = self._taken, 0
            return Step.EVENT, event, report
        report, self._taken = self._taken, 0
        if self._end is not None:
            return Step.END, self._end, report
        return Step.WAIT, None, report

    # --- for the subclasses -----------------------------------------------------------------------

    _guard: contextlib.AbstractContextManager[Any]

    def _wake(self) -> None:
        raise NotImplementedError


class Watch(WatchFeed):
    """An open watch of the blocking Client; see the module docstring. Thread-safe between the I/O
    thread and one consumer."""

    def __init__(self, key: str, prefix: bool, window: int, start: int = 0, prev_kv: bool = False) -> None:
        super().__init__(key, prefix, window, start, prev_kv)
        self._cond = threading.Condition()
        self._guard = self._cond

    def _wake(self) -> None:
        self._cond.notify_all()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        event = self.next(None)
        assert event is not None
        return event

    def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next event; None if none came within `timeout` seconds (None: wait for ever)."""
        remaining = timeout
        with self._cond:
            while True:
                step, item, report = self._step()
                if report:  # the driver's side takes its own lock: never call it holding ours
                    self._cond.release()
                    try:
                        self.on_consumed(report)
                    finally:
                        self._cond.acquire()
                if step is Step.EVENT:
                    return item  # type: ignore[no-any-return]
                if step is Step.STOP:
                    raise StopIteration
                if step is Step.END:
                    raise item
                if report:
                    continue  # look again: something may have come in meanwhile
                if remaining is not None and remaining <= 0:
                    return None
                wait = _WAIT_SLICE if remaining is None else min(_WAIT_SLICE, remaining)
                self._cond.wait(wait)
                if remaining is not None:
                    remaining -= wait

    def close(self) -> None:
        """Cancel the watch (idempotent); iteration stops."""
        if self._close():
            self.on_close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncWatch(WatchFeed):
    """An open watch of an AsyncClient; see the module docstring. Everything runs in the client's event
    loop, so no lock is needed: `deliver` and `end` are called by the client's turns."""

    def __init__(self, key: str, prefix: bool, window: int, start: int = 0, prev_kv: bool = False) -> None:
        super().__init__(key, prefix, window, start, prev_kv)
        self._guard = contextlib.nullcontext()
        self._changed = asyncio.Event()

    def _wake(self) -> None:
        self._changed.set()

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> dict[str, Any]:
        event = await self.next(None)
        assert event is not None
        return event

    async def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next event; None if none came within `timeout` seconds (None: wait for ever). Raises
        StopAsyncIteration once closed (the end of an `async for`). Cancelling a task that waits here
        loses nothing: an event is taken off the queue only when it is returned."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            step, item, report = self._step()
            if report:
                self.on_consumed(report)
            if step is Step.EVENT:
                return item  # type: ignore[no-any-return]
            if step is Step.STOP:
                raise StopAsyncIteration
            if step is Step.END:
                raise item
            if report:
                continue
            self._changed.clear()
            if deadline is None:
                await self._changed.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def close(self) -> None:
        """Cancel the watch (idempotent); iteration stops."""
        if self._close():
            self.on_close()

    async def aclose(self) -> None:
        """close(), for code that expects an async iterator's aclose()."""
        self.close()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
