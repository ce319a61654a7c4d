"""The ZAP handler of a process (which CURVE public keys may connect where) and handshake monitoring.

ZeroMQ asks the ZAP handler of the socket's context about every CURVE handshake on a server socket (with
a ZAP domain set). Gatekeeper runs pyzmq's ThreadAuthenticator with one callback per domain; the callback
answers from an immutable set of admitted keys that the owner replaces as a whole (`admit`), so a reload
is one reference swap and the authenticator thread never sees a half-built set. The User-Id of an admitted
connection is its public key in Z85: every message received on it carries that as its "User-Id" property,
which is how the receiver knows who sent it (the routing identity is only what the sender declared).

Without a handler bound, libzmq accepts every CURVE client key, so the Gatekeeper must be started before
any server socket binds.

HandshakeMonitor reads a server socket's monitor events and reports the handshakes it refused: a
plaintext (or other mechanism) client at a CURVE socket, a key the ZAP handler denied, a broken handshake.
It knows nothing of logging; the owner counts and logs them at its own pace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

PEER_DOMAIN: Final = "zraft-peer"
CLIENT_DOMAIN: Final = "zraft-client"
_REFUSALS: Final = (
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
MONITOR_DRAIN: Final = 1000


class _Admitted:
    """The callback pyzmq's authenticator calls for one domain (thread: the authenticator's)."""

    def __init__(self) -> None:
        self.keys: frozenset[bytes] = frozenset()

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


class Gatekeeper:
    """Which CURVE client keys each ZAP domain admits. admit() may be called at any time from the owner."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        quiet = logging.getLogger("zraft.zap")
        quiet.propagate = False  # pyzmq logs every decision at debug level; our owner reports refusals
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
        self._auth = ThreadAuthenticator(ctx, log=quiet)
        self._domains: dict[str, _Admitted] = {PEER_DOMAIN: _Admitted(), CLIENT_DOMAIN: _Admitted()}
        self._started = False

    def start(self) -> None:
        self._auth.start()
        for domain, admitted in self._domains.items():
            self._auth.configure_curve_callback(domain, credentials_provider=admitted)
        self._started = True

    def admit(self, domain: str, keys: Iterable[bytes]) -> None:
        """From now on, handshakes in `domain` succeed exactly for `keys` (Z85 public keys)."""
        self._domains[domain].keys = frozenset(keys)

    def admitted(self, domain: str) -> frozenset[bytes]:
        return self._domains[domain].keys

    def stop(self) -> None:
        if self._started:
            self._auth.stop()
            self._started = False


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: str  # "plaintext" (wrong security mechanism), "unknown_key" (ZAP denied), "handshake"
    detail: str


class HandshakeMonitor:
    """The refused handshakes of one server socket, read from its monitor socket."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.socket: zmq.Socket[bytes] = sock.get_monitor_socket(_REFUSALS)
        self._watched = sock

    def take(self) -> list[Refusal]:
        out: list[Refusal] = []
        for _ in range(MONITOR_DRAIN):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            event = parse_monitor_message(frames)
            out.append(_refusal(event["event"], event["value"]))
        return out

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):  # the watched socket may already be closed
            self._watched.disable_monitor()
        self.socket.close(linger=0)


def _refusal(event: int, value: int) -> Refusal:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return Refusal("unknown_key", f"the CURVE key was not admitted (ZAP status {value})")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return Refusal("plaintext", "the peer did not use CURVE (security mechanism mismatch)")
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return Refusal(
            "handshake",
            "a connection ended before its CURVE handshake completed (a plaintext peer, or one that "
            f"expected another server key; code {value:#x})",
        )
    return Refusal("handshake", f"the CURVE handshake failed (protocol error {value:#x})")
