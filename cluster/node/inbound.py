"""Admission of incoming frames: which decoded messages a node accepts on which socket, and why not.

The codec (transport/codec.py) checks that a frame is a well-formed message; this module checks that it
may arrive where it did (DESIGN.md rule 7, never trust the wire):

* peer ROUTER: a peer message whose `src` equals the ZeroMQ identity it came with (our peers set that
  identity to their name), or a ClientRequest from "<peer>/advertise" (a peer publishing its client URL);
* client ROUTER: ClientRequests only, alone or in a batch frame (transport/codec.py);
* our DEALER to a peer: ClientResponses from that peer (answers to our advertise writes).

Every refusal is a Rejected with a counter name and a short reason. For a client, `salvage_ids` digs the
sender and request id out of a frame the codec refused, so the error reply can still be correlated.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

import msgpack

from actors.messages import PEER_MESSAGE_TYPES, ClientRequest, ClientResponse, Message, PeerMessage
from transport.codec import (
    BATCH_TAGS,
    MAX_NODE_ID_CHARS,
    PROTOCOL_VERSION,
    TAGS,
    DecodeError,
    decode,
    decode_frame,
)

ADVERTISE_SUFFIX: Final = "/advertise"
_CLIENT_REQUEST_TAGS: Final = frozenset((TAGS[ClientRequest], BATCH_TAGS[ClientRequest]))
_MAX_REQ_ID: Final = 2**63 - 1


class Rejected(Exception):
    """A frame that is dropped (peer) or answered with BAD_REQUEST (client)."""

    def __init__(self, counter: str, reason: str) -> None:
        super().__init__(reason)
        self.counter = counter
        self.reason = reason


def advertiser_id(node: str) -> str:
    """The client id a node uses for its own advertise writes."""
    return node + ADVERTISE_SUFFIX


def _decode(frame: bytes, max_bytes: int, counter: str) -> Message:
    try:
        return decode(frame, max_bytes)
    except DecodeError as exc:
        raise Rejected(counter, str(exc)) from None


def admit_peer_frame(
    identity: bytes, frame: bytes, peers: Collection[str], max_bytes: int, proven: str | None = None
) -> PeerMessage | ClientRequest:
    """The message a peer ROUTER frame carries, if it may arrive there; otherwise Rejected.

    `proven` is the member whose CURVE key the frame's connection proved ("" for a key of no member),
    or None when the cluster runs without CURVE (then the declared identity is all there is to go on).
    """
    try:
        sender = identity.decode("utf-8")
    except UnicodeDecodeError:
        sender = ""
    if proven is not None and sender != proven:
        raise Rejected(
            "unproven_peer", f"identity {identity[:40]!r} is not the member its key proves ({proven or '-'})"
        )
    if sender not in peers:
        raise Rejected("unknown_peer", f"frame from an unknown peer identity {identity[:40]!r}")
    msg = _decode(frame, max_bytes, "malformed_peer")
    if isinstance(msg, ClientRequest):
        if msg.src != advertiser_id(sender):
            raise Rejected(
                "spoofed_peer", f"client request from {msg.src!r} arrived with identity {sender!r}"
            )
        return msg
    if not isinstance(msg, PEER_MESSAGE_TYPES):
        raise Rejected("unexpected_peer", f"{type(msg).__name__} is not a peer message")
    if msg.src != sender:
        raise Rejected(
            "spoofed_peer", f"{type(msg).__name__} claims src {msg.src!r} but came from {sender!r}"
        )
    return msg  # type: ignore[return-value]


def _decode_all(frame: bytes, max_bytes: int, counter: str) -> list[Message]:
    try:
        return decode_frame(frame, max_bytes)
    except DecodeError as exc:
        raise Rejected(counter, str(exc)) from None


def admit_client_frame(frame: bytes, max_bytes: int) -> list[ClientRequest]:
    """The ClientRequests a client ROUTER frame carries (one, or a batch); otherwise Rejected."""
    msgs = _decode_all(frame, max_bytes, "malformed_client")
    for msg in msgs:
        if not isinstance(msg, ClientRequest):
            raise Rejected("unexpected_client", f"expected a ClientRequest, got {type(msg).__name__}")
    return msgs  # type: ignore[return-value]


def admit_dealer_frame(peer: str, frame: bytes, me: str, max_bytes: int) -> list[ClientResponse]:
    """The ClientResponses a peer sent back to our DEALER (only advertise answers come that way)."""
    msgs = _decode_all(frame, max_bytes, "malformed_peer")
    for msg in msgs:
        if not isinstance(msg, ClientResponse) or msg.src != peer or msg.dst != advertiser_id(me):
            raise Rejected("unexpected_peer", f"unexpected {type(msg).__name__} from {peer!r} on our DEALER")
    return msgs  # type: ignore[return-value]


def salvage_ids(frame: bytes, max_bytes: int) -> tuple[str, int]:
    """(src, req_id) of a frame laid out like a ClientRequest, best effort; ("", 0) when unknown.

    The codec's layout is [version, tag, src, dst, req_id, ...]; a batch has its items where req_id
    would be, so its req_id is unknown (0). Unpacking is bounded as in the codec,
    so hostile bytes cannot make it allocate much; any failure just means "unknown".
    """
    if not frame or len(frame) > max_bytes:
        return "", 0
    try:
        obj = msgpack.unpackb(
            frame,
            use_list=False,
            raw=False,
            max_bin_len=len(frame),
            max_str_len=min(len(frame), 4 * MAX_NODE_ID_CHARS),
            max_array_len=16,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception:  # noqa: BLE001 - any failure of untrusted input means "unknown"
        return "", 0
    if (
        type(obj) is not tuple
        or len(obj) < 5
        or obj[0] != PROTOCOL_VERSION
        or obj[1] not in _CLIENT_REQUEST_TAGS
    ):
        return "", 0
    src, req_id = obj[2], obj[4]
    if type(src) is not str or len(src) > MAX_NODE_ID_CHARS:
        return "", 0
    if type(req_id) is not int or not 0 <= req_id <= _MAX_REQ_ID:
        req_id = 0
    return src, req_id
