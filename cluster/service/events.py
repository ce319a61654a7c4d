"""Cluster events: what a listener receives, what a sender gets back, and the two wire messages.

Events travel directly between registrants over ZeroMQ (cluster/service/event_socket.py), to the event
address each one states in its alive key (cluster/service/records.py); the Raft log carries none of them.

    event   ["zev1", "ev", sender_token, seq, sender_name, topic, payload]
    ack     ["zev1", "ack", seq, status, listeners, errors]      status "ok" | "overloaded"

`sender_token` is the sending ClusterService's random incarnation token and `seq` counts its events (one
counter for all receivers). A receiver runs an event's listeners only if its seq is above the last one it
ran from that token, so each listener sees an event at most once and a sender's events in send order; an
event that arrived out of order would be dropped and show as not acknowledged, never run late. The ack
goes back after every listener for the topic has returned, with how many ran and the error of each that
raised (the receiver goes on). Every field is checked on receipt; a malformed message is counted and
dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgpack

MAGIC = "zev1"
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_FRAME_BYTES = MAX_PAYLOAD_BYTES + 64 * 1024
MAX_TOPIC_BYTES = 256
MAX_SENDERS = 10_000  # senders whose last seq a receiver remembers
OK = "ok"
OVERLOADED = "overloaded"


@dataclass(frozen=True, slots=True)
class Event:
    """What a listener receives."""

    topic: str
    payload: Any
    sender: str  # the sender's name (its first registration, KIND/ID), or "client-<token>"
    id: str  # "<sender token>:<seq>", unique per event


@dataclass(frozen=True, slots=True)
class Delivery:
    """One target's outcome: acknowledged (with how many of its listeners ran and their errors) or not,
    with the reason (timeout, not live, no event address, ...)."""

    target: str
    acked: bool
    listeners: int = 0
    errors: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class EventResult:
    """The outcome of a broadcast or unicast, per target (KIND/ID)."""

    event_id: str
    topic: str
    deliveries: tuple[Delivery, ...]

    @property
    def acked(self) -> list[str]:
        return [d.target for d in self.deliveries if d.acked]

    @property
    def not_acked(self) -> dict[str, str]:
        return {d.target: d.reason for d in self.deliveries if not d.acked}

    @property
    def errors(self) -> dict[str, tuple[str, ...]]:
        """Targets where a listener raised: the errors."""
        return {d.target: d.errors for d in self.deliveries if d.errors}

    @property
    def ok(self) -> bool:
        """Every target acknowledged and no listener raised."""
        return all(d.acked and not d.errors for d in self.deliveries)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "topic": self.topic,
            "acked": self.acked,
            "not_acked": self.not_acked,
            "errors": {k: list(v) for k, v in self.errors.items()},
            "listeners": {d.target: d.listeners for d in self.deliveries if d.acked},
        }


class BadMessage(ValueError):
    """A received event-socket message that is not one of ours."""


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def encode_event(token: str, seq: int, sender: str, topic: str, payload: Any) -> bytes:
    """The event message; ValueError for a payload msgpack cannot encode or that is too large."""
    try:
        data = _pack([MAGIC, "ev", token, seq, sender, topic, payload])
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"event payload cannot be sent: {exc}") from None
    if len(data) > MAX_FRAME_BYTES:
        raise ValueError(f"event payload too large ({len(data)} bytes > {MAX_PAYLOAD_BYTES})")
    return data


def encode_ack(seq: int, status: str, listeners: int, errors: list[str]) -> bytes:
    return _pack([MAGIC, "ack", seq, status, listeners, [e[:1000] for e in errors[:100]]])


def check_topic(topic: str) -> str:
    if type(topic) is not str or not topic or len(topic.encode()) > MAX_TOPIC_BYTES:
        raise ValueError(f"bad topic {topic!r}: a non-empty str of at most {MAX_TOPIC_BYTES} bytes")
    return topic


def decode(data: bytes) -> list[Any]:
    """A checked event or ack message; BadMessage otherwise."""
    if len(data) > MAX_FRAME_BYTES:
        raise BadMessage("too large")
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # noqa: BLE001 - any undecodable input is just a bad message
        raise BadMessage(f"undecodable: {exc}") from None
    if not isinstance(msg, list) or len(msg) < 2 or msg[0] != MAGIC:
        raise BadMessage("not an event-socket message")
    if msg[1] == "ev":
        ok = (
            len(msg) == 7
            and isinstance(msg[2], str)
            and 0 < len(msg[2]) <= 64
            and type(msg[3]) is int
            and msg[3] > 0
            and isinstance(msg[4], str)
            and len(msg[4]) <= 2048
            and isinstance(msg[5], str)
        )
        if not ok:
            raise BadMessage("malformed event")
        try:
            check_topic(msg[5])
        except ValueError as exc:
            raise BadMessage(str(exc)) from None
        return msg
    if msg[1] == "ack":
        ok = (
            len(msg) == 6
            and type(msg[2]) is int
            and msg[3] in (OK, OVERLOADED)
            and type(msg[4]) is int
            and isinstance(msg[5], list)
            and all(isinstance(e, str) for e in msg[5])
        )
        if not ok:
            raise BadMessage("malformed ack")
        return msg
    raise BadMessage(f"unknown kind {msg[1]!r}")


class Deduper:
    """The last seq run per sender token (bounded: the least recently heard sender is forgotten first)."""

    def __init__(self, limit: int = MAX_SENDERS) -> None:
        self.limit = limit
        self._last: OrderedDict[str, int] = OrderedDict()
        self.dropped = 0

    def accept(self, token: str, seq: int) -> bool:
        """True if (token, seq) is new and in order: run it. False: a repeat or out of order; drop it."""
        last = self._last.get(token, 0)
        if seq <= last:
            self.dropped += 1
            return False
        self._last[token] = seq
        self._last.move_to_end(token)
        while len(self._last) > self.limit:
            self._last.popitem(last=False)
        return True
