"""The Client's background thread: ZeroMQ sockets and a poller loop that drives a ClientActor.

The thread owns everything mutable on the network side: its own ZeroMQ context, one DEALER per known
node URL (DealerLinks) and the ClientCore (cluster/client/driver.py: Discovery, the ClientActor, frame
decoding and batching), which it drives with the poller. Callers in other threads hand it Submissions
through a locked inbox and wake it through an inproc PAIR socket; each Submission carries a callback that
the thread calls exactly once, with the actor's Completion or with the exception that ended the client
(a `Waiter` is one that a blocking caller waits on). Watches (cluster/client/watch.py) reach the core
the same way, through a locked list of controls (open, consumed, close). Nothing here interprets
results: api.py does that (with cluster/client/calls.py), in the caller's thread for a blocking call and
in the callback itself for an asynchronous one.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import suppress
from typing import Any

import zmq
from loguru import logger

from actors.client import ClientOptions, Completion
from actors.messages import NodeId
from cluster.client.curve import ClientCurve
from cluster.client.driver import ClientCore, DealerLinks, OnDone, Submission, WatchControl
from cluster.client.watch import WatchFeed
from cluster.errors import ClientClosed, ZraftError

__all__ = ["ClientLoop", "OnDone", "Submission", "Waiter"]

_MAX_POLL_MS = 1000
_RECV_BATCH = 4096  # frames taken from one socket per loop turn, so one busy node cannot starve others


class Waiter:
    """The OnDone of a blocking call: the caller waits on it and takes the outcome. One lock, taken at
    creation and released by the completion, is all the hand-off needs (a Future's Condition costs a
    second lock, a waiter list and a notify per call)."""

    __slots__ = ("_lock", "outcome")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.outcome: Completion | BaseException | None = None

    def __call__(self, outcome: Completion | BaseException) -> None:
        if self.outcome is None:  # only the first outcome counts (a failing thread may end a call twice)
            self.outcome = outcome
            self._lock.release()

    def wait(self, timeout: float) -> Completion | BaseException | None:
        """The outcome, or None when there was none within `timeout` seconds."""
        if self._lock.acquire(timeout=max(0.0, timeout)):
            self._lock.release()  # a second wait (none today) returns at once
            return self.outcome
        return None


class ClientLoop:
    """Owns the I/O thread. submit() is thread-safe; everything else runs on the thread."""

    def __init__(
        self,
        client_id: NodeId,
        session: int,
        endpoints: list[str],
        options: ClientOptions,
        curve: ClientCurve | None = None,
    ) -> None:
        self._client_id = client_id
        self._session = session
        self._options = options
        self._ctx = zmq.Context()
        self._wake_addr = f"inproc://zraft-wake-{client_id}"
        self._wake_in = self._ctx.socket(zmq.PAIR)
        self._wake_in.bind(self._wake_addr)
        self._wake_out = self._ctx.socket(zmq.PAIR)
        self._wake_out.connect(self._wake_addr)
        self._lock = threading.Lock()  # guards _inbox, _wake_signalled, _closed and _wake_out
        self._inbox: list[Submission] = []
        self._taken: list[Submission] = []  # the current turn's submissions, until the core holds them
        self._watch_inbox: list[WatchControl] = []  # watches to open, consumption to report, to close
        self._wake_signalled = False
        self._closed = False  # no more submissions; the thread stops at its next turn
        self._released = False  # close() ran
        self._ready = threading.Event()
        # Thread-side state
        self._poller = zmq.Poller()
        self._links = DealerLinks(self._ctx, self._watch, curve)
        self._core = ClientCore(
            client_id, session, endpoints, options, self._links, time.monotonic(), self._ready.set
        )
        self._thread = threading.Thread(target=self._run, name=f"zraft-{client_id}", daemon=True)

    # --- caller side ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until some node answered a probe, so node names are known."""
        return self._ready.wait(timeout)

    def known_nodes(self) -> dict[NodeId, str]:
        """Node name -> client URL, as far as discovered."""
        return self._core.known

    def refusals(self) -> dict[str, str]:
        """Node URL -> why that node refused our last handshake (cluster/client/handshakes.py)."""
        return self._links.handshakes.refusals()

    def members(self) -> frozenset[NodeId]:
        """Member names the nodes reported (some may have no known URL)."""
        return self._core.members

    def submit(self, sub: Submission) -> None:
        with self._lock:
            if self._closed:
                raise ClientClosed()
            self._inbox.append(sub)
            if threading.get_ident() != self._thread.ident:  # the thread itself polls without waiting
                self._signal()

    def watch_control(self, what: str, watch: WatchFeed, n: int = 0) -> None:
        """Open a watch, report `n` of its events consumed, or close it (thread-safe)."""
        with self._lock:
            if self._closed:
                if what == "open":
                    raise ClientClosed()
                return
            self._watch_inbox.append((what, watch, n))
            if threading.get_ident() != self._thread.ident:
                self._signal()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and release the sockets and the context; safe to call more than once."""
        with self._lock:
            if self._released:
                return
            self._released = True
            if not self._closed:
                self._closed = True
                self._signal()
        if self._thread.ident is None:  # never started: its sockets are ours to close
            self._wake_in.close(linger=0)
        elif threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        with self._lock:
            self._wake_out.close(linger=0)
        if not self._thread.is_alive():
            self._ctx.term()

    def _signal(self) -> None:
        if not self._wake_signalled:
            self._wake_signalled = True
            with suppress(zmq.Again):  # cannot be full with at most one wake in flight; stay safe
                self._wake_out.send(b"", zmq.NOBLOCK)

    # --- the thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        self._poller.register(self._wake_in, zmq.POLLIN)
        failure: BaseException | None = None
        try:
            while self._turn():
                pass
        except BaseException as exc:  # report to every waiting caller instead of leaving them hanging
            logger.exception("zraft client I/O thread failed")
            failure = exc
        finally:
            with self._lock:
                self._closed = True
                leftovers = self._taken + self._inbox  # a failed turn may not have handed all to the core
                self._inbox = []
            error = ClientClosed() if failure is None else ZraftError(f"client I/O thread failed: {failure}")
            self._core.fail_all(error)
            for sub in leftovers:
                sub.on_done(error)
            for _, watch, _ in self._watch_inbox:
                watch.end(error)
            self._wake_in.close(linger=0)
            self._links.close()
            self._ready.set()  # a constructor still waiting sees no known nodes and gives up at once

    def _turn(self) -> bool:
        """One loop turn; False once the client is closing."""
        events = dict(self._poller.poll(self._poll_ms(time.monotonic())))
        now = time.monotonic()
        if self._wake_in in events:
            self._drain_wake()
        with self._lock:
            if self._closed:
                return False
            self._taken, self._inbox = self._inbox, []
            controls, self._watch_inbox = self._watch_inbox, []
            self._wake_signalled = False
        for sock in list(self._links.sockets.values()):  # an answer may teach us a new URL (a new socket)
            if sock in events:
                self._receive(sock, now)
        self._core.turn(self._taken, now, controls)
        self._taken = []
        self._links.take_handshakes()
        return True

    def _poll_ms(self, now: float) -> int:
        if self._inbox:  # submitted from this thread (a completion callback): no wake was sent
            return 0
        due = self._core.next_due()
        if due == math.inf:
            return _MAX_POLL_MS
        return max(0, min(_MAX_POLL_MS, math.ceil((due - now) * 1000)))

    def _drain_wake(self) -> None:
        # At most one wake is in flight (_wake_signalled), and the poll saw it: one receive takes it. A
        # loop until zmq.Again would raise (and build) an exception on every wake.
        with suppress(zmq.Again):
            self._wake_in.recv(zmq.NOBLOCK)

    def _receive(self, sock: zmq.Socket[Any], now: float) -> None:
        # The poll saw input; after each frame the socket's EVENTS tell whether another is waiting, which
        # costs less than the zmq.Again a blind receive raises at the end of every batch.
        for _ in range(_RECV_BATCH):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._core.receive(frame, now)
            if not int(sock.get(zmq.EVENTS)) & zmq.POLLIN:
                return

    def _watch(self, sock: zmq.Socket[Any]) -> None:
        self._poller.register(sock, zmq.POLLIN)
