"""The event socket of one ClusterService: a ROUTER that receives events (when it listens), one DEALER per
receiver address for sending, one I/O thread that owns them all, and one dispatch thread that runs the
listeners (so a slow listener delays only the events behind it, never the socket).

    endpoint = EventEndpoint(token, bind_host="127.0.0.1")   # bind_host None: send only
    endpoint.start(); endpoint.url                            # "tcp://127.0.0.1:PORT"
    endpoint.subscribe("NOTE", callback)                      # callback(Event) on the dispatch thread
    result = endpoint.send([(target, url), ...], "NOTE", payload, timeout=2.0, sender="SERVER_META/a")

With `curve` (the service's CURVE keypair: its Client's) every event socket speaks CURVE: the ROUTER is a
CURVE server with that keypair (its public key is advertised in the registrant's alive value beside the
address), and a DEALER only connects to a receiver whose public key the sender was given; a receiver that
advertises no key gets nothing (never plaintext). A plain socket cannot send to a CURVE receiver (its
handshake fails) and a capture of the traffic shows no event. Any CURVE key may send: the event socket has
no allow-list of its own (the cluster's is the nodes'), so what a secured deployment gains here is
encryption and the sender's proof that it talks to the receiver the records name.

The wire format, ordering and at-most-once rules are in cluster/service/events.py. A listener that raises
is logged and its error goes back in the ack; the receiver keeps going. The dispatch queue is bounded:
past it an event is answered "overloaded" at once, not run, and shows as not acknowledged.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from loguru import logger

from cluster.client.curve import KeyPair, client_options, is_key, key_text
from cluster.service.events import (
    MAX_FRAME_BYTES,
    OK,
    OVERLOADED,
    BadMessage,
    Deduper,
    Delivery,
    Event,
    EventResult,
    check_topic,
    decode,
    encode_ack,
    encode_event,
)

MAX_DISPATCH = 10_000  # events waiting for their listeners
MAX_DEALERS = 256  # receiver connections kept open (least recently used closed first)
SEND_HWM = 1000
_LOOP_SLICE_MS = 200

Listener = Callable[[Event], Any]


@dataclass
class _Send:
    """One event being delivered: the names behind each address, and the acks so far."""

    seq: int
    topic: str
    by_url: dict[str, list[str]]
    acks: dict[str, Delivery] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)


class EventEndpoint:
    """See the module docstring."""

    def __init__(self, token: str, bind_host: str | None, curve: KeyPair | None = None) -> None:
        self.token = token
        self.bind_host = bind_host
        self.url: str | None = None
        self.bad_messages = 0
        self.listener_errors = 0
        self._curve = curve
        self.public_key: str | None = key_text(curve.public) if curve is not None else None
        # With CURVE, a context of our own: a ZAP handler that another part of the process installed on the
        # shared instance (an embedded node's) must not judge the event sockets' handshakes.
        self._own_ctx = curve is not None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = (
            zmq.Context() if curve is not None else zmq.Context.instance()
        )
        self._seq = itertools.count(1)
        self._send_lock = threading.Lock()  # seq order == order of commands to the I/O thread
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._listeners: dict[str, list[Listener]] = {}
        self._listeners_lock = threading.Lock()
        self._dispatch: queue.Queue[tuple[bytes, int, Event] | None] = queue.Queue(MAX_DISPATCH)
        self._deduper = Deduper()
        self._pending: dict[int, _Send] = {}
        self._pending_lock = threading.Lock()
        self._wake_url = f"inproc://zraft-events-{id(self)}-{token}"
        self._wake_in: zmq.Socket[bytes] = self._ctx.socket(zmq.PAIR)
        self._wake_in.bind(self._wake_url)
        self._wake_out: zmq.Socket[bytes] = self._ctx.socket(zmq.PAIR)
        self._wake_out.connect(self._wake_url)
        self._wake_lock = threading.Lock()
        self._router: zmq.Socket[bytes] | None = None
        if bind_host is not None:
            router: zmq.Socket[bytes] = self._ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
            if curve is not None:
                router.curve_server = True
                router.curve_secretkey = curve.secret
                router.curve_publickey = curve.public
            try:
                port = router.bind_to_random_port(f"tcp://{bind_host}")
            except zmq.ZMQError as exc:  # a host name, or an address this machine does not have
                logger.warning(
                    "events: cannot bind {} ({}); listening on all interfaces, advertised as {} "
                    "(pass event_host= to choose the interface)",
                    bind_host,
                    exc,
                    bind_host,
                )
                port = router.bind_to_random_port("tcp://0.0.0.0")
            self._router = router
            self.url = f"tcp://{bind_host}:{port}"
        self._closed = threading.Event()
        self._io = threading.Thread(target=self._io_loop, name="zraft-events-io", daemon=True)
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="zraft-events-dispatch", daemon=True
        )

    def start(self) -> None:
        self._io.start()
        self._dispatcher.start()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake()
        self._dispatch.put(None)
        self._io.join(timeout=5)
        self._dispatcher.join(timeout=5)
        with self._wake_lock:
            self._wake_out.close(linger=0)
        if self._own_ctx and not self._io.is_alive():
            self._ctx.destroy(linger=0)  # the I/O thread closed its sockets (or never ran)

    # --- listening ------------------------------------------------------------------------------------

    def subscribe(self, topic: str, callback: Listener) -> Callable[[], None]:
        """Run callback(Event) for each event on `topic`; returns a function that unsubscribes."""
        check_topic(topic)
        with self._listeners_lock:
            self._listeners.setdefault(topic, []).append(callback)

        def unsubscribe() -> None:
            with self._listeners_lock:
                listeners = self._listeners.get(topic, [])
                if callback in listeners:
                    listeners.remove(callback)

        return unsubscribe

    # --- sending --------------------------------------------------------------------------------------

    def send(
        self,
        targets: list[tuple[str, str | None]],
        topic: str,
        payload: Any,
        timeout: float,
        sender: str,
        keys: dict[str, str | None] | None = None,
    ) -> EventResult:
        """Send one event to each (name, url) target and wait up to `timeout` for their acks. With CURVE,
        `keys` maps each url to the public key its receiver advertised (a url without one is not sent to)."""
        check_topic(topic)
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        by_url: dict[str, list[str]] = {}
        missing: list[Delivery] = []
        server_keys: dict[str, bytes] = {}
        for name, url in targets:
            if not url:
                missing.append(Delivery(name, False, reason="no event address"))
                continue
            if self._curve is not None:
                key = (keys or {}).get(url)
                if not isinstance(key, str) or not is_key(key):
                    missing.append(Delivery(name, False, reason="no CURVE key for its event address"))
                    continue
                server_keys[url] = key.encode("ascii")
            by_url.setdefault(url, []).append(name)
        with self._send_lock:
            seq = next(self._seq)
            frame = encode_event(self.token, seq, sender, topic, payload)
            pending = _Send(seq, topic, by_url)
            if by_url:
                with self._pending_lock:
                    self._pending[seq] = pending
                self._commands.put(("send", (seq, list(by_url), frame, server_keys)))
                self._wake()
        if by_url:
            pending.done.wait(timeout)
            with self._pending_lock:
                self._pending.pop(seq, None)
                acks = dict(pending.acks)
        else:
            acks = {}
        deliveries = list(missing)
        for url, names in by_url.items():
            for name in names:
                got = acks.get(url)
                deliveries.append(
                    Delivery(name, got.acked, got.listeners, got.errors, got.reason)
                    if got
                    else Delivery(name, False, reason=f"no ack within {timeout:g}s")
                )
        deliveries.sort(key=lambda d: d.target)
        return EventResult(f"{self.token}:{seq}", topic, tuple(deliveries))

    # --- the I/O thread -------------------------------------------------------------------------------

    def _wake(self) -> None:
        with self._wake_lock:
            if not self._wake_out.closed:
                with contextlib.suppress(zmq.ZMQError):  # a full pipe: a wake-up is already queued
                    self._wake_out.send(b"", zmq.NOBLOCK)

    def _io_loop(self) -> None:
        dealers: OrderedDict[str, zmq.Socket[bytes]] = OrderedDict()  # by url (and key, with CURVE)
        poller = zmq.Poller()
        poller.register(self._wake_in, zmq.POLLIN)
        if self._router is not None:
            poller.register(self._router, zmq.POLLIN)
        try:
            while not self._closed.is_set():
                ready = dict(poller.poll(_LOOP_SLICE_MS))
                if self._wake_in in ready:
                    while self._wake_in.poll(0):
                        self._wake_in.recv()
                self._run_commands(dealers, poller)
                if self._router is not None and self._router in ready:
                    self._receive_events()
                for slot, sock in list(dealers.items()):
                    if sock in ready:
                        self._receive_acks(slot.split(" ", 1)[0], sock)
        except Exception:  # noqa: BLE001 - an I/O thread failure must be loud, not silent
            logger.exception("event socket I/O thread failed")
        finally:
            for sock in dealers.values():
                sock.close(linger=0)
            if self._router is not None:
                self._router.close(linger=0)
            self._wake_in.close(linger=0)

    def _run_commands(self, dealers: OrderedDict[str, zmq.Socket[bytes]], poller: zmq.Poller) -> None:
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "ack":
                identity, frame = arg
                if self._router is not None:
                    try:
                        self._router.send_multipart([identity, frame], zmq.NOBLOCK)
                    except zmq.ZMQError as exc:
                        logger.warning("event ack not sent: {}", exc)
                continue
            seq, urls, frame, server_keys = arg
            for url in urls:
                server_key = server_keys.get(url)
                slot = url if server_key is None else f"{url} {server_key.decode('ascii')}"
                sock = dealers.get(slot)
                if sock is None:
                    sock = self._ctx.socket(zmq.DEALER)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.SNDHWM, SEND_HWM)
                    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
                    if self._curve is not None and server_key is not None:
                        client_options(sock, self._curve, server_key)
                    sock.connect(url)
                    poller.register(sock, zmq.POLLIN)
                    dealers[slot] = sock
                    while len(dealers) > MAX_DEALERS:
                        _, old = dealers.popitem(last=False)
                        poller.unregister(old)
                        old.close(linger=0)
                dealers.move_to_end(slot)
                try:
                    sock.send(frame, zmq.NOBLOCK)
                except zmq.ZMQError as exc:
                    self._acked(seq, url, Delivery(url, False, reason=f"send queue full: {exc}"))

    def _receive_events(self) -> None:
        assert self._router is not None
        while self._router.poll(0):
            parts = self._router.recv_multipart()
            if len(parts) != 2:
                self.bad_messages += 1
                continue
            identity, data = parts
            try:
                msg = decode(data)
            except BadMessage as exc:
                self.bad_messages += 1
                logger.debug("event socket: bad message dropped ({})", exc)
                continue
            if msg[1] != "ev":
                self.bad_messages += 1
                continue
            _, _, token, seq, sender, topic, payload = msg
            if not self._deduper.accept(token, seq):
                continue
            event = Event(topic, payload, sender, f"{token}:{seq}")
            try:
                self._dispatch.put_nowait((identity, seq, event))
            except queue.Full:
                self._commands.put(("ack", (identity, encode_ack(seq, OVERLOADED, 0, []))))

    def _receive_acks(self, url: str, sock: zmq.Socket[bytes]) -> None:
        while sock.poll(0):
            data = sock.recv()
            try:
                msg = decode(data)
            except BadMessage:
                self.bad_messages += 1
                continue
            if msg[1] != "ack":
                self.bad_messages += 1
                continue
            _, _, seq, status, listeners, errors = msg
            if status == OK:
                self._acked(seq, url, Delivery(url, True, listeners, tuple(errors)))
            else:
                self._acked(seq, url, Delivery(url, False, reason="receiver overloaded: not run"))

    def _acked(self, seq: int, url: str, delivery: Delivery) -> None:
        with self._pending_lock:
            pending = self._pending.get(seq)
            if pending is None or url not in pending.by_url:
                return  # late (after the sender's timeout) or unknown
            pending.acks[url] = delivery
            if len(pending.acks) == len(pending.by_url):
                pending.done.set()

    # --- the dispatch thread --------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while True:
            item = self._dispatch.get()
            if item is None:
                return
            identity, seq, event = item
            with self._listeners_lock:
                listeners = list(self._listeners.get(event.topic, ()))
            errors: list[str] = []
            for listener in listeners:
                try:
                    listener(event)
                except Exception as exc:  # noqa: BLE001 - reported to the sender, never fatal here
                    self.listener_errors += 1
                    errors.append(f"{type(exc).__name__}: {exc}")
                    logger.warning(
                        "event listener for {!r} raised: {}",
                        event.topic,
                        "".join(traceback.format_exception_only(exc)).strip(),
                    )
            if self._closed.is_set():
                return
            self._commands.put(("ack", (identity, encode_ack(seq, OK, len(listeners), errors))))
            self._wake()
