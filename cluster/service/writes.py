"""The local queue of registry writes: executed in order by one background thread, retried with backoff while
the cluster cannot commit them, never dropped without a trace.

    queue = WriteQueue()
    queue.start()
    future = queue.submit("update SERVER_META/a", action)      # action() does the store calls
    future.result()                                             # wait for confirmation, or don't

A write that gets no answer (NoAnswer: no quorum, no leader, or an outcome unknown) or Busy stays at the
head of the queue and is run again after a backoff (0.05 s doubling to 2 s), so later writes never overtake
it. Actions must therefore be safe to run again: every registry write is a put of a whole value or a
read-merge-compare-and-swap, which are. A definite failure (the cluster refused it, or the action raised
anything else) fails the write's future, is logged as an error and is kept in `failed()` (the last 100),
so a write nobody waits for is still reported. Writes pending at close() fail with ServiceClosed.

A write submitted with a `coalesce` key replaces a not-yet-started pending write with the same key (both
futures get the newer one's outcome): heartbeats pile up as one pending write per registrant while the
cluster has no quorum, not one per interval. The queue is bounded (`max_pending`): past it, submit raises
QueueFull at once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from cluster.errors import Busy, ClientClosed, NoAnswer, ZraftError

BACKOFF_START = 0.05
BACKOFF_MAX = 2.0
FAILED_KEPT = 100


class ServiceClosed(ZraftError):
    """The cluster service was closed before this write could be committed."""


class QueueFull(ZraftError):
    """Too many registry writes are waiting for the cluster; this one was not queued."""


def retryable(exc: BaseException) -> bool:
    """Whether a failed write may be run again: the cluster did not answer, or was too busy to."""
    return isinstance(exc, NoAnswer | Busy)


@dataclass
class _Pending:
    description: str
    action: Callable[[], Any]
    coalesce: str | None
    futures: list[Future[Any]] = field(default_factory=list)
    started: bool = False


class WriteQueue:
    """See the module docstring. `sleep` is the backoff wait (tests pass their own)."""

    def __init__(
        self,
        *,
        max_pending: int = 10_000,
        backoff_start: float = BACKOFF_START,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.max_pending = max_pending
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._failed: deque[tuple[float, str, str]] = deque(maxlen=FAILED_KEPT)
        self._closed = False
        self._thread: threading.Thread | None = None
        self.last_error: str = ""
        self.retrying = False  # the head write is waiting for the cluster
        self.completed = 0

    # --- callers ------------------------------------------------------------------------------------

    def submit(self, description: str, action: Callable[[], Any], coalesce: str | None = None) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise ServiceClosed(f"{description}: the cluster service is closed")
            if coalesce is not None:
                for item in self._queue:
                    if item.coalesce == coalesce and not item.started:
                        item.action, item.description = action, description
                        item.futures.append(fut)
                        return fut
            if len(self._queue) >= self.max_pending:
                raise QueueFull(f"{description}: {len(self._queue)} registry writes are already waiting")
            self._queue.append(_Pending(description, action, coalesce, [fut]))
            self._cond.notify_all()
        return fut

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def failed(self) -> list[tuple[float, str, str]]:
        """(time, write, error) of the last writes that failed for good."""
        with self._cond:
            return list(self._failed)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending; False if something still is after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # --- the worker ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="zraft-service-writes", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 0.0) -> None:
        """Wait up to `timeout` for pending writes, then stop; what is left fails with ServiceClosed."""
        if timeout > 0:
            self.wait_idle(timeout)
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        for item in left:
            self._fail(item, ServiceClosed(f"{item.description}: closed before the cluster committed it"))

    def run_head(self) -> bool:
        """Run the head write once. True when it is done (succeeded or failed for good), False when it
        stays at the head to be retried (or there was none)."""
        with self._cond:
            if not self._queue:
                return False
            item = self._queue[0]
            item.started = True
        try:
            result = item.action()
        except BaseException as exc:  # noqa: BLE001 - every failure is the write's outcome
            if retryable(exc) and not isinstance(exc, ClientClosed):
                with self._cond:
                    if not self.retrying:
                        logger.warning("registry write {!r} waits for the cluster: {}", item.description, exc)
                    self.retrying = True
                    self.last_error = str(exc)
                return False
            with self._cond:
                self._queue.popleft()
                self.retrying = False
                self._cond.notify_all()
            self._fail(item, exc)
            return True
        with self._cond:
            self._queue.popleft()
            if self.retrying:
                logger.info("registry write {!r} committed after waiting", item.description)
            self.retrying = False
            self.completed += 1
            self._cond.notify_all()
        for fut in item.futures:
            fut.set_result(result)
        return True

    def _fail(self, item: _Pending, exc: BaseException) -> None:
        if not isinstance(exc, ServiceClosed | ClientClosed):
            logger.error("registry write {!r} failed: {}", item.description, exc)
        with self._cond:
            self._failed.append((time.time(), item.description, f"{type(exc).__name__}: {exc}"))
            self.last_error = str(exc)
        for fut in item.futures:
            fut.set_exception(exc)

    def _run(self) -> None:
        delay = self.backoff_start
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            if self.run_head():
                delay = self.backoff_start
                continue
            with self._cond:  # the head must wait: back off (close() wakes us)
                if self._closed:
                    return
                self._cond.wait(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self.backoff_max)
