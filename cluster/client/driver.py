"""ClientCore: what every client driver does between its sockets and the ClientActor, shared by the blocking
Client's I/O thread (io_thread.py) and AsyncClient's event-loop driver (aio.py).

ClientCore owns Discovery (node names and URLs), the ClientActor (request ids, session seqs, leader guess,
retries), the callbacks of the requests in flight, the decoding and checking of incoming frames, and the
batching of outgoing requests into one frame per node per turn. It waits for nothing and reads no clock: a
driver hands it frames, submissions and the time, asks it when it next needs a turn (`next_due`), and gives it
`Links` that keep one socket per URL and send without blocking. DealerLinks is those links over ZeroMQ DEALER
sockets with the options both drivers use (each driver's own plain ZeroMQ context).

Streaming calls plug in here, beside the request callbacks: watches (watch events pushed by a node) are
told apart in `receive` by their stream id and driven by a WatchFollower per watch; see the `stream
hooks` note in ClientCore.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Container, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

import zmq
from loguru import logger
from zmq.utils.monitor import parse_monitor_message

from actors.client import ClientActor, ClientOptions, Completion, Outcome, WriteEncoder
from actors.messages import ClientRequest, ClientResponse, NodeId, RequestKind
from cluster.client.curve import ClientCurve
from cluster.client.discovery import PROBE_ID_BASE, Discovery
from cluster.client.handshakes import HANDSHAKE_EVENTS, HandshakeLog
from cluster.client.watch import WatchFeed
from cluster.client.watching import FollowerOptions, WatchFollower
from cluster.errors import ClientClosed as ClientClosedError
from cluster.kv.ops import MAX_COMMAND_BYTES
from transport import codec
from transport.batches import batches
from transport.curve import client_options

BATCH_MAX_BYTES = MAX_COMMAND_BYTES // 2  # payload bytes in one batch frame, well under a node's limit
_HWM = 100_000  # pipelined requests may burst; a full queue drops the send and the actor retries
_STREAM_ID_BASE = PROBE_ID_BASE >> 1  # watch stream ids: above every ClientActor handle, below the probes
WatchControl = tuple[str, WatchFeed, int]  # ("open" | "consumed" | "close", the watch, events consumed)


OnDone = Callable[[Completion | BaseException], None]  # runs in the driver; must not raise


@dataclass(frozen=True, slots=True)
class Submission:
    kind: RequestKind
    body: bytes | WriteEncoder  # the query for reads, the command encoder for writes, b"" for STATUS
    deadline: float  # time.monotonic() value
    on_done: OnDone  # called once, by the driver
    node: NodeId = ""  # STATUS only: the node to ask


class Links(Protocol):
    """One socket per URL, owned by a driver."""

    def open(self, url: str) -> bool:
        """Make sure a socket to `url` exists; False when the URL cannot be connected to."""

    def send(self, url: str, frame: bytes) -> None:
        """Send without blocking; a frame that does not fit is dropped (the actor's retry covers it)."""


class DealerLinks:
    """Links over ZeroMQ DEALER sockets; `on_open` lets the driver watch each new socket for input."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        on_open: Callable[[zmq.Socket[Any]], None],
        curve: ClientCurve | None = None,
        on_monitor: Callable[[zmq.Socket[Any]], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._on_open = on_open
        self._on_monitor = on_monitor  # a driver that polls may watch the handshake monitors too
        self._curve = curve
        self.sockets: dict[str, zmq.Socket[Any]] = {}
        self._bad_urls: set[str] = set()
        # Each DEALER's handshake events (cluster/client/handshakes.py), read through a plain socket of the
        # same underlying context (inproc needs it), so both drivers can drain them without blocking.
        self.handshakes = HandshakeLog(curve is not None)
        self._sync_ctx: zmq.Context[Any] = zmq.Context.shadow(ctx.underlying)
        self._monitors: dict[str, zmq.Socket[Any]] = {}
        self._monitor_ids = itertools.count()

    def open(self, url: str) -> bool:
        if url in self.sockets:
            return True
        if url in self._bad_urls:
            return False
        server_key = None
        if self._curve is not None:
            server_key = self._curve.server_key(url)
            if server_key is None:
                logger.warning("zraft client: no server public key for {}; not connecting to it", url)
                self._bad_urls.add(url)
                return False
        sock = self._ctx.socket(zmq.DEALER)
        if self._curve is not None and server_key is not None:
            client_options(sock, self._curve.pair, server_key)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.RCVHWM, _HWM)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        monitor_url = f"inproc://zraft-handshakes-{id(self):x}-{next(self._monitor_ids)}"
        sock.monitor(monitor_url, HANDSHAKE_EVENTS)
        monitor = self._sync_ctx.socket(zmq.PAIR)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(monitor_url)
        self._monitors[url] = monitor
        try:
            sock.connect(url)
        except zmq.ZMQError as exc:
            logger.warning("zraft client: cannot connect to {} ({})", url, exc)
            self._close_monitor(url, sock)
            sock.close(linger=0)
            self._bad_urls.add(url)
            return False
        self.sockets[url] = sock
        self._on_open(sock)
        if self._on_monitor is not None:
            self._on_monitor(monitor)
        return True

    def send(self, url: str, frame: bytes) -> None:
        if not self.open(url):
            return
        with suppress(zmq.Again):  # queue full: dropped, and the actor's retry timer covers it
            self.sockets[url].send(frame, zmq.NOBLOCK)

    def take_handshakes(self, ready: Container[zmq.Socket[Any]] | None = None) -> None:
        """Move the handshake events that arrived into `handshakes` (never waits). A driver that polls the
        monitors (`on_monitor`) passes the ones its poll found readable as `ready`; otherwise each monitor's
        EVENTS is asked first, which costs less than the zmq.Again a blind receive raises when it is empty
        (most turns)."""
        for url, monitor in self._monitors.items():
            if ready is not None:
                if monitor not in ready:
                    continue
            elif not int(monitor.get(zmq.EVENTS)) & zmq.POLLIN:
                continue
            for _ in range(64):
                try:
                    frames = monitor.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                event = parse_monitor_message(frames)
                self.handshakes.record(url, event["event"], event["value"])

    def close(self) -> None:
        self.take_handshakes()  # the last word on why nobody answered, for the error the caller gets
        for url, sock in self.sockets.items():
            self._close_monitor(url, sock)
            sock.close(linger=0)
        self.sockets.clear()

    def _close_monitor(self, url: str, sock: zmq.Socket[Any]) -> None:
        monitor = self._monitors.pop(url, None)
        if monitor is None:
            return
        with suppress(zmq.ZMQError):
            sock.disable_monitor()
        monitor.close(linger=0)


class ClientCore:
    """Discovery, the ClientActor and the requests in flight, driven by one driver (never two threads).

    A turn is: `receive` every frame that arrived, then `turn(submissions, now)`, which probes, starts the
    submissions, runs the actor's timers and flushes one batch frame per node. `next_due()` says when the
    next turn is needed if nothing arrives.

    Stream hooks: watch events arrive as frames that are not answers to a request; `receive` tells them
    apart by the stream id the opening request got and hands them to the watch's WatchFollower and on to
    its WatchFeed (cluster/client/watch.py), as `_pending` hands answers to OnDone callbacks. Watches are
    opened, credited and closed through the `watch_controls` of a turn. A lease keepalive is an ordinary
    read the client submits on a timer of its own (cluster/client/leases.py).
    """

    def __init__(
        self,
        client_id: NodeId,
        session: int,
        endpoints: list[str],
        options: ClientOptions,
        links: Links,
        now: float,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self._client_id = client_id
        self._session = session
        self._options = options
        self._links = links
        self._on_ready = on_ready
        self._discovery = Discovery(client_id, endpoints, now)
        self.actor: ClientActor | None = None
        # Copies for callers in other threads: replaced, never mutated.
        self.known: dict[NodeId, str] = {}  # node name -> client URL, as far as discovered
        self.members: frozenset[NodeId] = frozenset()  # member names the nodes reported
        self._pending: dict[int, OnDone] = {}  # by the actor's request handle
        # Watches (cluster/client/watch.py), each driven by a WatchFollower (cluster/client/watching.py)
        self._followers: dict[WatchFeed, WatchFollower] = {}
        self._stream_owner: dict[int, WatchFeed] = {}  # current stream id -> its watch
        self._current_stream: dict[WatchFeed, int] = {}
        self._next_stream = _STREAM_ID_BASE

    @property
    def ready(self) -> bool:
        """Some node answered, so node names are known and requests can be started."""
        return self.actor is not None

    @property
    def idle(self) -> bool:
        """Nothing to wait for: names known, no request, registration, watch or probe round in flight, no
        timer set (next_due() is inf). A driver may then stop polling until it is given something."""
        actor = self.actor
        return (
            actor is not None
            and not self._pending
            and not self._followers
            and actor.in_flight == 0
            and self._discovery.next_due() == math.inf
        )

    def next_due(self) -> float:
        """When the next turn is needed if nothing arrives (a time.monotonic() value, may be inf)."""
        due = self._discovery.next_due()
        if self.actor is not None:
            due = min(due, self.actor.next_deadline())
        for follower in self._followers.values():
            due = min(due, follower.next_deadline())
        return due

    def receive(self, frame: bytes, now: float) -> None:
        """Take in one frame from a node (answers are acted on; the next turn flushes what they cause)."""
        try:
            msgs = codec.decode_frame(frame)
        except codec.DecodeError as exc:
            logger.warning("zraft client: dropped an undecodable frame ({})", exc)
            return
        for msg in msgs:
            if not isinstance(msg, ClientResponse) or msg.dst != self._client_id:
                logger.warning("zraft client: dropped an unexpected {}", type(msg).__name__)
                continue
            self._on_response(msg, now)

    def turn(
        self, submissions: Sequence[Submission], now: float, watch_controls: Sequence[WatchControl] = ()
    ) -> None:
        """Probe if due, start the submissions, run the actor's timers, send, and report completions."""
        for url, request in self._discovery.due_probes(now):
            self._send(url, (request,))
        self._accept(submissions, now)
        self._watch_controls(watch_controls, now)
        if self.actor is not None:
            self.actor.tick(now)
            self._flush()
        self._drive_watches(now)

    def fail_all(self, error: BaseException) -> None:
        """End every request in flight with `error` (the client is closing)."""
        pending, self._pending = self._pending, {}
        for on_done in pending.values():
            on_done(error)
        followers, self._followers = self._followers, {}
        for watch in followers:
            watch.end(error)

    # --- internals --------------------------------------------------------------------------------

    def _accept(self, submissions: Sequence[Submission], now: float) -> None:
        actor = self.actor
        for sub in submissions:
            if actor is None:  # no node has answered yet (clients wait for one before taking calls)
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
            elif sub.kind == RequestKind.MEMBER:
                assert isinstance(sub.body, bytes)
                handle = actor.member(sub.body, now, timeout)
            else:
                assert isinstance(sub.body, bytes)
                handle = actor.read(sub.body, now, timeout, sub.kind == RequestKind.SERIAL_READ)
            self._pending[handle] = sub.on_done

    def _on_response(self, msg: ClientResponse, now: float) -> None:
        watch = self._stream_owner.get(msg.req_id)
        if watch is not None:
            follower = self._followers.get(watch)
            if follower is not None:
                events = follower.on_response(msg, now)
                watch.deliver(events, follower.through)
            return
        if self._discovery.is_probe(msg.req_id):
            if self._discovery.on_answer(msg, now):
                self._learned()
            return
        if self.actor is None:
            return
        if msg.leader_hint and msg.leader_hint not in self.actor.nodes:
            self._discovery.request_round(now)
        self.actor.step(msg, now)  # the turn flushes once, after every answer it received

    def _watch_controls(self, controls: Sequence[WatchControl], now: float) -> None:
        for what, watch, n in controls:
            follower = self._followers.get(watch)
            if what == "open":
                if self.actor is None:
                    watch.end(ClientClosedError())
                    continue
                nodes = self.actor.nodes
                follower = WatchFollower(
                    self._client_id,
                    nodes,
                    watch.key,
                    watch.prefix,
                    watch.start,
                    self._new_stream_id,
                    FollowerOptions(window=watch.window, prev_kv=watch.prev_kv),
                    first_node=random.randrange(len(nodes)),
                )
                self._followers[watch] = follower
                follower.begin(now)
            elif follower is None:
                continue
            elif what == "consumed":
                follower.consumed(n)
            else:
                follower.close()

    def _new_stream_id(self) -> int:
        self._next_stream += 1
        return self._next_stream

    def _drive_watches(self, now: float) -> None:
        for watch, follower in list(self._followers.items()):
            follower.tick(now)
            for request in follower.take_messages():
                if request.kind == RequestKind.WATCH:  # a new stream: the old one's late frames are ignored
                    self._stream_owner.pop(self._current_stream.get(watch, 0), None)
                    self._current_stream[watch] = request.req_id
                    self._stream_owner[request.req_id] = watch
                url = self.known.get(request.dst)
                if url is not None:
                    self._send(url, (request,))
            if follower.ended is not None:
                watch.end(follower.ended)
                del self._followers[watch]
                self._stream_owner.pop(self._current_stream.pop(watch, 0), None)

    def _learned(self) -> None:
        """Discovery's map changed: open sockets for new URLs and tell the actor the node names."""
        names = self._discovery.names
        for url in self._discovery.urls():
            self._links.open(url)
        self.known = names
        self.members = frozenset(self._discovery.members)
        nodes = tuple(sorted(names))
        if self.actor is None:
            self.actor = ClientActor(self._client_id, nodes, self._session, random.Random(), self._options)
            self._on_ready()
        elif nodes != self.actor.nodes:
            self.actor.nodes = nodes

    def _flush(self) -> None:
        """Send what the actor wants sent, one batch frame per node, then report finished requests."""
        assert self.actor is not None
        by_url: dict[str, list[ClientRequest]] = {}
        for request in self.actor.take_messages():
            url = self.known.get(request.dst)
            if url is not None:
                by_url.setdefault(url, []).append(request)
        for url, requests in by_url.items():
            for batch in batches(requests, BATCH_MAX_BYTES, _payload_size):
                self._send(url, batch)
        for done in self.actor.take_completions():
            on_done = self._pending.pop(done.handle, None)
            if on_done is not None:
                on_done(done)

    def _send(self, url: str, requests: Sequence[ClientRequest]) -> None:
        self._links.send(url, codec.encode_batch(requests))


def _payload_size(request: ClientRequest) -> int:
    return len(request.payload)
