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

Who runs the loop (the direct path). A blocking call made while the client has nothing else to do is run
by its caller's own thread: it takes the sockets and the core, sends, polls for its answer (with the
actor's retries and deadline as timers) and gives them back, so a lone caller's request and answer skip
the two thread wake-ups of the hand-off through the I/O thread. One `runner` at a time drives the core
and uses the sockets: the I/O thread, one direct caller, or nobody while the I/O thread is parked; it
changes only under `_lock`, whose release and acquire are the full memory barrier libzmq asks for when a
socket moves between threads. The I/O thread parks (a condition wait, no poll) when the core is idle
and its inboxes are empty; a blocking call then finds no runner and runs directly, unless a call found
the loop busy within the last _BUSY_WINDOW (threads calling together are batched better by the I/O
thread). Blocking calls made while a direct caller runs are sent and ended by it, in its turns. An
asynchronous call, a watch control or close() makes it hand the loop to the I/O thread at once (its own
request stays in the core, and it waits for it like any caller), so asynchronous callbacks and watch
events run on the I/O thread only, as before. A direct caller whose call ended leaves the runner empty
when the core is idle, else hands the loop to the I/O thread. Asynchronous calls, watches and status()
always start on the I/O thread.
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
_IO_THREAD = 0  # the runner id of the I/O thread; a direct caller's is its thread ident (never 0)
# After a blocking call found the loop busy, calls go through the I/O thread for this long (seconds): many
# threads calling at once are served better by one thread that batches them than by a direct caller
# that sends its own request alone and the others' after it (measured: -15% puts/s at 2 x 8 threads).
_BUSY_WINDOW = 0.05
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
        self._lock = threading.Lock()  # guards _inbox, _wake_signalled, _closed, _runner and _wake_out
        self._parked = threading.Condition(self._lock)  # the I/O thread waits on it while idle
        # Who drives the core and uses the sockets (see the module docstring); None: nobody, the I/O
        # thread is parked and a blocking call may run directly.
        self._runner: int | None = _IO_THREAD
        self._check_in = False  # the I/O thread's next turn polls without waiting
        self._busy_until = 0.0  # no direct calls before this time.monotonic() (see _BUSY_WINDOW)
        self._inbox: list[Submission] = []
        self._taken: list[Submission] = []  # the current turn's submissions, until the core holds them
        self._watch_inbox: list[WatchControl] = []  # watches to open, consumption to report, to close
        self._wake_signalled = False
        self._closed = False  # no more submissions; the thread stops at its next turn
        self._released = False  # close() ran
        self._ready = threading.Event()
        # Thread-side state
        self._poller = zmq.Poller()
        self._links = DealerLinks(self._ctx, self._watch, curve, self._watch)
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
            self._wake()

    def call(self, sub: Submission, waiter: Waiter) -> None:
        """Start a blocking call whose `sub.on_done` is `waiter`: on this thread when the client has
        nothing else to do (it returns once the waiter has its outcome, or after handing the loop to the
        I/O thread, which then completes it), else through the I/O thread like submit()."""
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise ClientClosed()
            if self._runner is not None or self._inbox or self._watch_inbox or now < self._busy_until:
                if self._runner is not None:
                    self._busy_until = now + _BUSY_WINDOW
                self._inbox.append(sub)
                self._wake()
                return
            self._runner = threading.get_ident()
        self._run_call(sub, waiter)

    def watch_control(self, what: str, watch: WatchFeed, n: int = 0) -> None:
        """Open a watch, report `n` of its events consumed, or close it (thread-safe)."""
        with self._lock:
            if self._closed:
                if what == "open":
                    raise ClientClosed()
                return
            self._watch_inbox.append((what, watch, n))
            self._wake()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and release the sockets and the context; safe to call more than once."""
        with self._lock:
            if self._released:
                return
            self._released = True
            if not self._closed:
                self._closed = True
                self._signal()  # a runner in its poll
                self._parked.notify()  # a parked I/O thread
        if self._thread.ident is None:  # never started: its sockets are ours to close
            self._wake_in.close(linger=0)
        elif threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        with self._lock:
            self._wake_out.close(linger=0)
        if not self._thread.is_alive():
            self._ctx.term()

    def _wake(self) -> None:
        """Tell whoever runs the loop that an inbox has something (under _lock)."""
        runner = self._runner
        if runner is None:
            self._parked.notify()
        elif runner != threading.get_ident() and not (
            runner == _IO_THREAD and threading.get_ident() == self._thread.ident
        ):  # the runner itself polls without waiting while an inbox has something
            self._signal()

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
                self._park_while_idle()
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
        self._receive_ready(events, now)
        self._core.turn(self._taken, now, controls)
        self._taken = []
        self._links.take_handshakes(events)
        return True

    def _receive_ready(self, events: dict[Any, int], now: float, limit: int = _RECV_BATCH) -> None:
        for sock in list(self._links.sockets.values()):  # an answer may teach us a new URL (a new socket)
            if sock in events:
                self._receive(sock, now, limit)

    def _park_while_idle(self) -> None:
        """Give up the loop while the core is idle and nothing was handed in; take it back when a direct
        caller hands it over, when work arrives while nobody runs it, or after _MAX_POLL_MS to read
        what may have arrived (late answers, handshake events) in a turn that does not wait."""
        if not self._core.idle:
            return
        with self._lock:
            if self._closed or self._inbox or self._watch_inbox:
                return
            self._runner = None
            while True:
                if self._runner == _IO_THREAD:  # handed over by a direct caller
                    return
                if self._runner is None and (self._closed or self._inbox or self._watch_inbox):
                    self._runner = _IO_THREAD
                    return
                if not self._parked.wait(_MAX_POLL_MS / 1000) and self._runner is None:
                    self._runner = _IO_THREAD
                    self._check_in = True
                    return

    def _run_call(self, sub: Submission, waiter: Waiter) -> None:
        """Drive the core on the caller's thread (which is the runner) until `waiter` has an outcome or
        another thread needs the loop, then give the loop up (see the module docstring)."""
        limit = 1  # frames per socket and poll while only our call is in flight (see below)
        try:
            self._core.turn((sub,), time.monotonic())
            while waiter.outcome is None:
                events = dict(self._poller.poll(self._poll_ms(time.monotonic())))
                now = time.monotonic()
                if self._wake_in in events:
                    self._drain_wake()  # with nothing in the inboxes, it was an old one
                taken: list[Submission] = []
                if self._closed or self._inbox or self._watch_inbox:
                    others = self._take_blocking_calls()
                    if others is None:
                        return  # the I/O thread takes the loop (finally) and completes our call
                    taken = others
                    limit = _RECV_BATCH  # their answers too: take all that came, as the I/O thread does
                # Alone, one frame per socket and poll: most wakes bring just our answer, and a frame
                # left behind makes the next poll return at once (cheaper than asking EVENTS after each).
                self._receive_ready(events, now, limit)
                self._core.turn(taken, now)
                self._links.take_handshakes(events)
        finally:
            with self._lock:
                if (
                    waiter.outcome is not None
                    and not (self._closed or self._inbox or self._watch_inbox)
                    and self._core.idle
                ):
                    self._runner = None  # the parked I/O thread waits on, and the next call may run here
                else:
                    self._runner = _IO_THREAD
                    self._parked.notify()

    def _take_blocking_calls(self) -> list[Submission] | None:
        """For a direct caller: the inbox, when it holds only other blocking calls (sent at once, in this
        caller's turns, and ended by whoever runs the loop when their answers come); None when the loop
        must go to the I/O thread instead (the client is closing, a watch control, an asynchronous call,
        whose callbacks run on the I/O thread only)."""
        with self._lock:
            if (
                self._closed
                or self._watch_inbox
                or not all(isinstance(s.on_done, Waiter) for s in self._inbox)
            ):
                return None
            taken, self._inbox = self._inbox, []
            self._wake_signalled = False  # a wake still unread is an old one by then
            return taken

    def _poll_ms(self, now: float) -> int:
        # Something in an inbox (submitted by the runner itself, or left by a direct caller that handed
        # the loop over after taking the wake), a closing client, or a check-in: no waiting.
        if self._inbox or self._watch_inbox or self._closed or self._check_in:
            self._check_in = False
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

    def _receive(self, sock: zmq.Socket[Any], now: float, limit: int) -> None:
        # The poll saw input; after each frame the socket's EVENTS tell whether another is waiting, which
        # costs less than the zmq.Again a blind receive raises at the end of every batch.
        for left in range(limit - 1, -1, -1):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._core.receive(frame, now)
            if not left or not int(sock.get(zmq.EVENTS)) & zmq.POLLIN:
                return

    def _watch(self, sock: zmq.Socket[Any]) -> None:
        self._poller.register(sock, zmq.POLLIN)
