"""LoopBridge: the only way other threads of a node (the HTTP status server) see or ask anything of its loop.

DESIGN.md rule 8: only the loop touches Raft and KV state. The bridge offers two things, nothing more:

* a status snapshot the loop publishes at the end of a turn (at most every PUBLISH_INTERVAL seconds, or at
  the next turn when a reader asked for a fresh one): a plain dict built in the loop that nobody changes
  afterwards, swapped in as one reference, so a reader takes it without a lock;
* loop calls: a read-only client request (READ, SERIAL_READ or STATUS; never a write) that another thread
  hands to the loop through a bounded queue and whose answer it waits for, at most `timeout` seconds.
  The loop takes at most CALLS_PER_TURN of them per turn and gives each to the KV service like any
  client's request, with the LoopCall itself standing for the connection; the service's answer comes
  back through the runtime, which resolves the call's future.

A reader never blocks the loop: a full queue is refused at once (LoopBusy), and a caller that stopped
waiting simply never reads the future the loop resolves later.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final

from actors.messages import ClientRequest, ClientResponse, RequestKind

PUBLISH_INTERVAL: Final = 0.1  # seconds between two snapshots of a busy node
MAX_PENDING_CALLS: Final = 64
CALLS_PER_TURN: Final = 8
READ_ONLY_KINDS: Final = frozenset({RequestKind.READ, RequestKind.SERIAL_READ, RequestKind.STATUS})
CALLER_ID: Final = "__http"


class LoopBusy(Exception):
    """Too many loop calls wait already."""


class LoopTimeout(Exception):
    """The loop did not answer in time (it is busy, stalled, or stopping)."""


class LoopCall:
    """One request handed to the loop, and the future its answer resolves. Hashable by identity: the KV
    service keys its answers by it as it does by a client's connection."""

    __slots__ = ("request", "future")

    def __init__(self, request: ClientRequest) -> None:
        self.request = request
        self.future: Future[ClientResponse] = Future()

    def resolve(self, answers: list[ClientResponse]) -> None:
        """The loop's side: the first answer to our request settles the call."""
        if self.future.done():
            return
        for answer in answers:
            if answer.req_id == self.request.req_id:
                self.future.set_result(answer)
                return


class LoopBridge:
    def __init__(self, wakeup: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._wakeup = wakeup
        self._clock = clock
        self._calls: queue.Queue[LoopCall] = queue.Queue(MAX_PENDING_CALLS)
        self._latest: dict[str, Any] | None = None
        self._published_at = -1.0
        self._fresh_wanted = False
        self._ids = itertools.count(1)
        self.published = 0
        self.refused_busy = 0

    # --- other threads --------------------------------------------------------------------------------

    def latest(self) -> dict[str, Any] | None:
        """The last snapshot the loop published (None before the first). Never changed after publishing."""
        return self._latest

    def want_fresh(self) -> None:
        """Ask the loop to publish at the end of its next turn, and wake it."""
        self._fresh_wanted = True
        self._wakeup()

    def call(self, kind: RequestKind, payload: bytes, timeout: float) -> ClientResponse:
        """Hand a read-only request to the loop and wait for its answer. Raises LoopBusy or LoopTimeout."""
        if kind not in READ_ONLY_KINDS:
            raise ValueError(f"loop calls are read-only; {kind!r} is not")
        request = ClientRequest(
            src=CALLER_ID, dst="", req_id=next(self._ids), kind=int(kind), payload=payload
        )
        call = LoopCall(request)
        try:
            self._calls.put_nowait(call)
        except queue.Full:
            self.refused_busy += 1
            raise LoopBusy(f"{MAX_PENDING_CALLS} requests wait for the node's loop already") from None
        self._wakeup()
        try:
            return call.future.result(timeout)
        except FutureTimeout:
            raise LoopTimeout(f"the node's loop did not answer within {timeout:g}s") from None

    # --- the loop -------------------------------------------------------------------------------------

    def take_calls(self) -> list[LoopCall]:
        """At most CALLS_PER_TURN waiting calls, oldest first."""
        out: list[LoopCall] = []
        for _ in range(CALLS_PER_TURN):
            try:
                out.append(self._calls.get_nowait())
            except queue.Empty:
                break
        return out

    def has_calls(self) -> bool:
        return not self._calls.empty()

    def publish_due(self, now: float) -> bool:
        return self._fresh_wanted or now - self._published_at >= PUBLISH_INTERVAL

    def publish(self, snapshot: dict[str, Any], now: float) -> None:
        self._fresh_wanted = False
        self._published_at = now
        self.published += 1
        self._latest = snapshot
