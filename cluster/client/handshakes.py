"""Why a node never answers this client: the CURVE/ZMTP handshake results of the client's own sockets.

A node that refuses a client's handshake never answers it, so without this the client sees only timeouts.
Each DEALER of a client (DealerLinks) has a monitor socket for its handshake events; the driver drains
them every turn into a HandshakeLog, which keeps, per node URL, the last refusal (cleared when a handshake
to that URL succeeds) and logs each kind of refusal once per URL. A connect that no node answered raises
HandshakeRefused, naming each URL and what went wrong there, instead of a bare Unavailable.

What libzmq 4.3 reports, on the client side (checked against a CURVE ROUTER with a ZAP handler):
HANDSHAKE_FAILED_AUTH (ZAP status, e.g. 400) when the node's allow-list refused our key;
HANDSHAKE_FAILED_NO_DETAIL when the node could not decrypt our HELLO: the server public key we hold for it
is not its key; HANDSHAKE_FAILED_PROTOCOL with a mechanism mismatch when one side uses CURVE and the other
does not. Nothing here ever names a key.
"""

from __future__ import annotations

import threading

import zmq
from loguru import logger

HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def describe(event: int, value: int, curve: bool) -> str | None:
    """What a handshake failure means for this client (None for a success or an unrelated event)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"the node refused our CURVE key: it is not on the node's allow-list (ZAP status {value})"
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        if curve:
            return (
                "server key mismatch: the node could not complete the CURVE handshake with the public key "
                "we hold for it (is it that node's key?)"
            )
        return "the handshake failed (the node may require CURVE keys)"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            if curve:
                return "the node does not use CURVE (it runs without keys): this client's keys cannot be used"
            return "the node requires CURVE: this client has no keys (--curve-secret-key and co.)"
        return f"the handshake failed with protocol error {value:#x}"
    return None


class HandshakeLog:
    """Per node URL, the last handshake refusal not yet followed by a success. Written by the driver (one
    thread or one event loop), read by any thread."""

    def __init__(self, curve: bool) -> None:
        self._curve = curve
        self._lock = threading.Lock()
        self._refused: dict[str, str] = {}
        self._logged: set[tuple[str, str]] = set()

    def record(self, url: str, event: int, value: int) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            with self._lock:
                self._refused.pop(url, None)
            return
        what = describe(event, value, self._curve)
        if what is None:
            return
        with self._lock:
            self._refused[url] = what
            first = (url, what) not in self._logged
            if first and len(self._logged) < 1000:  # bounded: URLs come from discovery
                self._logged.add((url, what))
        if first:
            logger.warning("zraft client: {}: {}", url, what)

    def refusals(self) -> dict[str, str]:
        """URL -> why its node refused us, for the URLs whose last handshake failed."""
        with self._lock:
            return dict(self._refused)
