"""The Client's background thread: ZeroMQ sockets and a poller loop that drives a ClientActor.

The thread owns everything mutable on the network side: its own ZeroMQ context, one DEALER per known
node URL, the ClientActor (request ids, session sequence numbers, leader guess, retries) and Discovery
(node names and URLs). Callers in other threads hand it Submissions through a locked inbox and wake it
through an inproc PAIR socket; each Submission carries a callback that the thread calls exactly once, with
the actor's Completion or with the exception that ended the client (`future_completer` makes one that
completes a Future). Nothing here interprets results: cluster/client/api.py does that, in the caller's thread
for a blocking call and in the callback itself for an asynchronous one.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass

import zmq
from loguru import logger

from actors.client import ClientActor, ClientOptions, Completion, Outcome, WriteEncoder
from actors.messages import ClientRequest, ClientResponse, NodeId, RequestKind
from cluster.client.discovery import Discovery
from cluster.errors import ClientClosed, ZraftError
from cluster.kv.ops import MAX_COMMAND_BYTES
from transport import codec
from transport.batches import batches

_MAX_POLL_MS = 1000
_RECV_BATCH = 4096  # frames taken from one socket per loop turn, so one busy node cannot starve others
_BATCH_MAX_BYTES = MAX_COMMAND_BYTES // 2  # payload bytes in one batch frame, well under a node's limit
_HWM = 100_000  # pipelined requests may burst; a full queue drops the send and the actor retries


OnDone = Callable[[Completion | BaseException], None]  # runs on the I/O thread; must not raise


@dataclass(frozen=True, slots=True)
class Submission:
    kind: RequestKind
    body: bytes | WriteEncoder  # the query for reads, the command encoder for writes, b"" for STATUS
    deadline: float  # time.monotonic() value
    on_done: OnDone  # called once, on the I/O thread
    node: NodeId = ""  # STATUS only: the node to ask


def future_completer(fut: Future[Completion]) -> OnDone:
    """An OnDone that completes `fut` (with the Completion, or the exception)."""

    def on_done(outcome: Completion | BaseException) -> None:
        if fut.done():
            return
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)

    return on_done


class ClientLoop:
    """Owns the I/O thread. submit() is thread-safe; everything else runs on the thread."""

    def __init__(self, client_id: NodeId, session: int, endpoints: list[str], options: ClientOptions) -> None:
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
        self._wake_signalled = False
        self._closed = False  # no more submissions; the thread stops at its next turn
        self._released = False  # close() ran
        self._ready = threading.Event()
        self._known: dict[NodeId, str] = {}  # copy of discovery's names for callers; replaced, never mutated
        self._members: frozenset[NodeId] = frozenset()
        # Thread-side state
        self._discovery = Discovery(client_id, endpoints, time.monotonic())
        self._actor: ClientActor | None = None
        self._dealers: dict[str, zmq.Socket[bytes]] = {}
        self._bad_urls: set[str] = set()
        self._poller = zmq.Poller()
        self._pending: dict[int, OnDone] = {}  # by the actor's request handle
        self._thread = threading.Thread(target=self._run, name=f"zraft-{client_id}", daemon=True)

    # --- caller side ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until some node answered a probe, so node names are known."""
        return self._ready.wait(timeout)

    def known_nodes(self) -> dict[NodeId, str]:
        """Node name -> client URL, as far as discovered."""
        return self._known

    def members(self) -> frozenset[NodeId]:
        """Member names the nodes reported (some may have no known URL)."""
        return self._members

    def submit(self, sub: Submission) -> None:
        with self._lock:
            if self._closed:
                raise ClientClosed()
            self._inbox.append(sub)
            if threading.get_ident() != self._thread.ident:  # the thread itself polls without waiting
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
                leftovers = self._inbox
                self._inbox = []
            error = ClientClosed() if failure is None else ZraftError(f"client I/O thread failed: {failure}")
            for on_done in [*self._pending.values(), *(s.on_done for s in leftovers)]:
                on_done(error)
            for sock in [self._wake_in, *self._dealers.values()]:
                sock.close(linger=0)
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
            inbox, self._inbox = self._inbox, []
            self._wake_signalled = False
        for sock in list(self._dealers.values()):  # an answer may teach us a new URL (a new socket)
            if sock in events:
                self._receive(sock, now)
        self._probe(now)
        self._accept(inbox, now)
        if self._actor is not None:
            self._actor.tick(now)
            self._flush()
        return True

    def _poll_ms(self, now: float) -> int:
        if self._inbox:  # submitted from this thread (a completion callback): no wake was sent
            return 0
        due = self._discovery.next_due()
        if self._actor is not None:
            due = min(due, self._actor.next_deadline())
        if due == math.inf:
            return _MAX_POLL_MS
        return max(0, min(_MAX_POLL_MS, math.ceil((due - now) * 1000)))

    def _drain_wake(self) -> None:
        while True:
            try:
                self._wake_in.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _accept(self, inbox: list[Submission], now: float) -> None:
        actor = self._actor
        for sub in inbox:
            if actor is None:  # no node has answered yet (Client waits for one before taking calls)
                sub.on_done(Completion(0, Outcome.TIMEOUT, b""))
                continue
            timeout = max(0.0, sub.deadline - now)
            if sub.kind == RequestKind.WRITE:
                assert callable(sub.body)
                handle = actor.write(sub.body, now, timeout)
            elif sub.kind == RequestKind.STATUS:
                if sub.node not in actor.nodes:
                    sub.on_done(Completion(0, Outcome.REJECTED, b"unknown node"))
                    continue
                handle = actor.status(sub.node, now, timeout)
            else:
                assert isinstance(sub.body, bytes)
                handle = actor.read(sub.body, now, timeout, sub.kind == RequestKind.SERIAL_READ)
            self._pending[handle] = sub.on_done

    def _receive(self, sock: zmq.Socket[bytes], now: float) -> None:
        for _ in range(_RECV_BATCH):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msgs = codec.decode_frame(frame)
            except codec.DecodeError as exc:
                logger.warning("zraft client: dropped an undecodable frame ({})", exc)
                continue
            for msg in msgs:
                if not isinstance(msg, ClientResponse) or msg.dst != self._client_id:
                    logger.warning("zraft client: dropped an unexpected {}", type(msg).__name__)
                    continue
                self._on_response(msg, now)

    def _on_response(self, msg: ClientResponse, now: float) -> None:
        if self._discovery.is_probe(msg.req_id):
            if self._discovery.on_answer(msg, now):
                self._learned()
            return
        if self._actor is None:
            return
        if msg.leader_hint and msg.leader_hint not in self._actor.nodes:
            self._discovery.request_round(now)
        self._actor.step(msg, now)  # the turn flushes once, after every answer it received

    def _probe(self, now: float) -> None:
        for url, request in self._discovery.due_probes(now):
            self._send(url, (request,))

    def _learned(self) -> None:
        """Discovery's map changed: open sockets for new URLs and tell the actor the node names."""
        names = self._discovery.names
        for url in self._discovery.urls():
            self._dealer(url)
        self._known = names
        self._members = frozenset(self._discovery.members)
        nodes = tuple(sorted(names))
        if self._actor is None:
            self._actor = ClientActor(self._client_id, nodes, self._session, random.Random(), self._options)
            self._ready.set()
        elif nodes != self._actor.nodes:
            self._actor.nodes = nodes

    def _flush(self) -> None:
        """Send what the actor wants sent, one batch frame per node, then report finished requests."""
        assert self._actor is not None
        by_url: dict[str, list[ClientRequest]] = {}
        for request in self._actor.take_messages():
            url = self._known.get(request.dst)
            if url is not None:
                by_url.setdefault(url, []).append(request)
        for url, requests in by_url.items():
            for batch in batches(requests, _BATCH_MAX_BYTES, _payload_size):
                self._send(url, batch)
        for done in self._actor.take_completions():
            on_done = self._pending.pop(done.handle, None)
            if on_done is not None:
                on_done(done)

    def _send(self, url: str, requests: Sequence[ClientRequest]) -> None:
        sock = self._dealer(url)
        if sock is None:
            return
        with suppress(zmq.Again):  # queue full: dropped, and the actor's retry timer covers it
            sock.send(codec.encode_batch(requests), zmq.NOBLOCK)

    def _dealer(self, url: str) -> zmq.Socket[bytes] | None:
        sock = self._dealers.get(url)
        if sock is not None or url in self._bad_urls:
            return sock
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.RCVHWM, _HWM)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        try:
            sock.connect(url)
        except zmq.ZMQError as exc:
            logger.warning("zraft client: cannot connect to {} ({})", url, exc)
            sock.close(linger=0)
            self._bad_urls.add(url)
            return None
        self._dealers[url] = sock
        self._poller.register(sock, zmq.POLLIN)
        return sock


def _payload_size(request: ClientRequest) -> int:
    return len(request.payload)
