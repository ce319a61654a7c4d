"""ZeroMQ endpoints of one node: the peer mesh (one ROUTER in, one DEALER out per peer) and the client port.

This module owns socket creation, socket options, binding and connecting, and the framing of a send or a
receive (identity frames, envelopes, non-blocking sends that drop instead of blocking). It knows nothing of
Raft: payloads are opaque bytes, and peers and senders are plain strings.

The shape is the ZeroMQ guide's peer pattern (DESIGN.md "Sockets"): every node binds a ROUTER on its peer
URL and connects one DEALER per peer, with its own name as the DEALER's identity, so the receiving ROUTER
sees who sent each frame. A DEALER send never blocks: a full queue (or no connection yet) drops the frame
and counts it; Raft retries whatever matters. ZeroMQ reconnects on its own.

Dead connections: no socket here uses ZMTP heartbeats (see the last paragraph for why). Both ROUTERs and
the DEALERs turn on TCP keepalive, and peer sockets also set TCP_MAXRT (TCP_USER_TIMEOUT on Linux): a peer
connection whose sent data stays unacknowledged for PEER_MAXRT_MS, or that stays silent and unanswered
for the keepalive probes, is closed by the kernel. So a peer that died with its host (no FIN, no RST)
frees its identity on our ROUTER, and our DEALER reconnects once it is back. A peer that is merely paused
(SIGSTOP) keeps its connections: its kernel still acknowledges what we send.

The peer ROUTER hands an identity over to the newest connection (ROUTER_HANDOVER). Without it, a peer that
reconnects while its previous connection is still registered here (a partition or a one-way loss hides the
old one's end until TCP gives up on it) is never identified: libzmq keeps the new connection open and
never delivers a frame from it, so that peer is silent to us for good (found by
the network-fault soak: a leader probing two followers forever while their answers vanished). With
handover, whoever connects with a member's name takes the name until the member reconnects; authentication
(CurveZMQ) is what makes a name a proof. The client ROUTER keeps handover off: clients' identities are
their own business, and one client must never be able to take over another's connection.

No ZMTP heartbeats: libzmq 4.3.x (4.3.5 is the newest release and what pyzmq bundles) aborts the whole
process ("Assertion failed: !_io_error (stream_engine_base.cpp:310)", zeromq/libzmq#4364, #3937, #4767) when
a heartbeat falls due on a connection whose input is stopped and whose other end has meanwhile closed it.
Input stops in two ways: our receive queue is at its high-water mark (a node behind on its peer traffic died
when a peer restarted), or the connection was handed over (ROUTER_HANDOVER) and frames still arrive on the
old one, which has no pipe left to take them (tests/fault/test_peer_backlog.py shows it in a second; the
30-minute soak, seed 2027, most likely lost a node this way: paused for longer than the peers' heartbeat
timeout, it came back to its peers' old and new connections at once). The first is also closed by RCVHWM 0
on peer sockets: what a peer can have in flight to us is bounded by Raft itself (a window of appends per
follower, one heartbeat per interval, one snapshot chunk at a time) and by MAXMSGSIZE. The second cannot be
closed while handover is on, so the heartbeat timer, the only caller that reaches the assertion, is off. The
client port keeps its bounded receive queue (clients are not trusted to pace themselves).

CURVE: given a keypair, both ROUTERs are CURVE servers (ZAP domains PEER_DOMAIN and CLIENT_DOMAIN of
transport/zap.py decide which client keys get in) and each DEALER is a CURVE client of the peer key it is
given, so it only talks to that peer. recv_batch_users() hands the owner each message's User-Id, the key
its connection proved; with it, handover can no longer let a stranger take a member's name.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass, field

import zmq

from transport.curve import KeyPair, client_options, server_options
from transport.zap import CLIENT_DOMAIN, PEER_DOMAIN

PEER_SNDHWM = 1000  # frames queued per peer before sends drop
CLIENT_SNDHWM = 10_000
MAX_ENVELOPE_FRAMES = 4  # routing frames a client may put before its payload (e.g. a REQ delimiter)
MAX_ENVELOPE_FRAME_BYTES = 256
PEER_KEEPALIVE_IDLE_S = 2  # a peer connection silent this long is probed ...
PEER_KEEPALIVE_INTERVAL_S = 1  # ... this often, and closed after
PEER_KEEPALIVE_COUNT = 3  # ... this many unanswered probes
PEER_MAXRT_MS = 5000  # a peer connection whose sent data stays unacknowledged this long is closed
CLIENT_KEEPALIVE_IDLE_S = 5  # a client connection silent this long is probed ...
CLIENT_KEEPALIVE_INTERVAL_S = 2  # ... this often, and closed after
CLIENT_KEEPALIVE_COUNT = 5  # ... this many unanswered probes


class BindError(Exception):
    """A socket could not bind its URL (port in use, bad address). The message names the URL."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot bind {url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(slots=True)
class SendStats:
    sent: int = 0
    dropped_full: int = 0  # the queue was at its high-water mark, or no connection yet (zmq.Again)
    dropped_unroutable: int = 0  # a ROUTER reply to an identity that is not connected
    dropped_unknown: int = 0  # no socket for that destination

    def as_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "dropped_full": self.dropped_full,
            "dropped_unroutable": self.dropped_unroutable,
            "dropped_unknown": self.dropped_unknown,
        }


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach whoever sent a frame to a ROUTER: that socket, and the envelope to put first."""

    socket: zmq.Socket[bytes]
    envelope: tuple[bytes, ...]  # the identity frame, then any routing frames the sender used


def _bind(sock: zmq.Socket[bytes], url: str) -> None:
    try:
        sock.bind(url)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        if exc.errno == errno.EADDRINUSE:
            raise BindError(url, "address already in use (is another node running on this port?)") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BindError(url, "address not available on this host") from None
        raise BindError(url, str(exc)) from None


def _common_options(sock: zmq.Socket[bytes], sndhwm: int, max_frame: int) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame)  # ZeroMQ drops a connection that sends more than this


def _peer_options(sock: zmq.Socket[bytes]) -> None:
    # No HEARTBEAT_IVL here: a ZMTP heartbeat can abort the process (see the module docstring).
    sock.setsockopt(zmq.RCVHWM, 0)  # a peer's input never stops on a full queue (module docstring)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, PEER_KEEPALIVE_IDLE_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, PEER_KEEPALIVE_INTERVAL_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, PEER_KEEPALIVE_COUNT)
    sock.setsockopt(zmq.TCP_MAXRT, PEER_MAXRT_MS)


def _client_options(sock: zmq.Socket[bytes]) -> None:
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, CLIENT_KEEPALIVE_IDLE_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, CLIENT_KEEPALIVE_INTERVAL_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, CLIENT_KEEPALIVE_COUNT)


def _router(
    ctx: zmq.Context[zmq.Socket[bytes]],
    url: str,
    sndhwm: int,
    max_frame: int,
    peer: bool,
    curve: KeyPair | None = None,
) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.ROUTER)
    _common_options(sock, sndhwm, max_frame)
    if curve is not None:  # a CURVE server: plaintext clients fail the handshake, ZAP checks the keys
        server_options(sock, curve, PEER_DOMAIN if peer else CLIENT_DOMAIN)
    if peer:
        _peer_options(sock)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting peer must be heard (module docstring)
    else:
        _client_options(sock)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unroutable reply raises instead of vanishing silently
    _bind(sock, url)
    return sock


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes], stats: SendStats) -> bool:
    """Send one multipart message without blocking; False (and counted) when it was dropped."""
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK)
    except zmq.Again:
        stats.dropped_full += 1
        return False
    except zmq.ZMQError as exc:
        if exc.errno == errno.EHOSTUNREACH:
            stats.dropped_unroutable += 1
            return False
        raise
    stats.sent += 1
    return True


def recv_batch(sock: zmq.Socket[bytes], limit: int, max_bytes: int) -> list[list[bytes]]:
    """Up to `limit` multipart messages that are waiting on `sock`, without blocking, stopping once they
    hold `max_bytes` or more (the first message is always taken, whatever its size). The rest stay queued
    in ZeroMQ, which stops reading the connection when its high-water mark is reached."""
    out: list[list[bytes]] = []
    taken = 0
    while len(out) < limit and taken < max_bytes:
        try:
            frames = sock.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            break
        out.append(frames)
        taken += sum(len(f) for f in frames)
    return out


def recv_batch_users(sock: zmq.Socket[bytes], limit: int, max_bytes: int) -> list[tuple[list[bytes], str]]:
    """recv_batch() for a CURVE server socket: each message with the User-Id its connection proved (the
    client's public key in Z85, as the ZAP handler set it; "" if there is none)."""
    out: list[tuple[list[bytes], str]] = []
    taken = 0
    while len(out) < limit and taken < max_bytes:
        try:
            parts = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            break
        try:
            user = str(parts[-1].get("User-Id") or "")
        except zmq.ZMQError:
            user = ""
        frames = [p.bytes for p in parts]
        out.append((frames, user))
        taken += sum(len(f) for f in frames)
    return out


class MissingPeerKey(Exception):
    """A CURVE mesh was asked to connect to a member whose public key it does not know."""

    def __init__(self, peer: str) -> None:
        super().__init__(f"no public key for member {peer}: cannot connect to it securely")
        self.peer = peer


@dataclass(slots=True)
class PeerMesh:
    """The node's peer ROUTER (bound) and one DEALER per peer (connected, identity = our name)."""

    name: str
    router: zmq.Socket[bytes]
    dealers: dict[str, zmq.Socket[bytes]]
    stats: SendStats = field(default_factory=SendStats)
    urls: dict[str, str] = field(default_factory=dict)  # peer -> the URL its DEALER is connected to
    keys: dict[str, bytes] = field(default_factory=dict)  # peer -> the CURVE key its DEALER expects
    ctx: zmq.Context[zmq.Socket[bytes]] | None = None
    sndhwm: int = PEER_SNDHWM
    max_frame: int = 0
    curve: KeyPair | None = None  # our keypair when the mesh speaks CURVE

    @classmethod
    def open(
        cls,
        ctx: zmq.Context[zmq.Socket[bytes]],
        name: str,
        bind_url: str,
        peers: Mapping[str, str],
        max_frame: int,
        sndhwm: int = PEER_SNDHWM,
        curve: KeyPair | None = None,
        peer_keys: Mapping[str, bytes] | None = None,
    ) -> PeerMesh:
        """Bind the ROUTER on `bind_url` and connect a DEALER to each peer URL in `peers` (name -> URL).

        With `curve` (our keypair) every socket speaks CURVE: the ROUTER as a server, each DEALER as a
        client that only completes its handshake with the peer holding the key `peer_keys[name]`.
        """
        router = _router(ctx, bind_url, sndhwm, max_frame, peer=True, curve=curve)
        mesh = cls(
            name=name, router=router, dealers={}, ctx=ctx, sndhwm=sndhwm, max_frame=max_frame, curve=curve
        )
        try:
            for peer, url in sorted(peers.items()):
                mesh.connect(peer, url, (peer_keys or {}).get(peer))
        except MissingPeerKey:
            mesh.close()
            raise
        except zmq.ZMQError as exc:
            mesh.close()
            raise BindError(bind_url, f"cannot connect to a peer: {exc}") from None
        return mesh

    def connect(self, peer: str, url: str, server_key: bytes | None = None) -> zmq.Socket[bytes]:
        """A DEALER to `peer` at `url` (a member added, moved or with a new key: the old DEALER must be
        gone first).

        With CURVE the DEALER is a CURVE client that only completes its handshake with the holder of
        `server_key`; without that key there is no secure connection, so it raises MissingPeerKey (never
        falls back to plaintext).
        """
        assert self.ctx is not None and peer not in self.dealers
        if self.curve is not None and not server_key:
            raise MissingPeerKey(peer)
        dealer = self.ctx.socket(zmq.DEALER)
        self.dealers[peer] = dealer
        self.urls[peer] = url
        self.keys[peer] = server_key or b""
        dealer.setsockopt(zmq.IDENTITY, self.name.encode("utf-8"))  # before connect, or it has no effect
        _common_options(dealer, self.sndhwm, self.max_frame)
        _peer_options(dealer)
        dealer.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for a peer we are not connected to
        if self.curve is not None and server_key:
            client_options(dealer, self.curve, server_key)
        dealer.connect(url)
        return dealer

    def disconnect(self, peer: str) -> None:
        """Close the DEALER to `peer` (removed, or about to move); stop polling it first."""
        dealer = self.dealers.pop(peer, None)
        self.urls.pop(peer, None)
        self.keys.pop(peer, None)
        if dealer is not None:
            dealer.close(linger=0)

    def send(self, peer: str, frame: bytes) -> bool:
        """Send one frame to `peer` through our DEALER; dropped (and counted) when it cannot go now."""
        dealer = self.dealers.get(peer)
        if dealer is None:
            self.stats.dropped_unknown += 1
            return False
        return send_frames(dealer, [frame], self.stats)

    def close(self) -> None:
        self.router.close(linger=0)
        for dealer in self.dealers.values():
            dealer.close(linger=0)


@dataclass(slots=True)
class ClientPort:
    """The node's client ROUTER. Replies go back through the Route a request arrived on (see reply())."""

    router: zmq.Socket[bytes]

    @classmethod
    def open(
        cls,
        ctx: zmq.Context[zmq.Socket[bytes]],
        bind_url: str,
        max_frame: int,
        sndhwm: int = CLIENT_SNDHWM,
        curve: KeyPair | None = None,
    ) -> ClientPort:
        return cls(router=_router(ctx, bind_url, sndhwm, max_frame, peer=False, curve=curve))

    def close(self) -> None:
        self.router.close(linger=0)


def split_envelope(frames: list[bytes]) -> tuple[tuple[bytes, ...], bytes] | None:
    """(envelope, payload) of a message received on a ROUTER, or None when it cannot be one.

    The envelope is the identity frame plus any routing frames before the payload (a REQ socket adds an
    empty delimiter); a reply echoes it so it reaches the same sender the same way.
    """
    if len(frames) < 2 or len(frames) > MAX_ENVELOPE_FRAMES + 1:
        return None
    envelope = tuple(frames[:-1])
    if any(len(f) > MAX_ENVELOPE_FRAME_BYTES for f in envelope):
        return None
    return envelope, frames[-1]


def reply(route: Route, frame: bytes, stats: SendStats) -> bool:
    """Send `frame` back along `route`; dropped (and counted) when unroutable or the queue is full."""
    return send_frames(route.socket, [*route.envelope, frame], stats)
