"""Client-side encoding of KV ops (cluster/kv/ops.py's format) and checking of their results.

Validation happens here, in the calling thread, through cluster.kv.ops' own encoders, so the
client refuses exactly what the state machine would refuse, with the same words, before anything is sent.
A write's op is encoded once: the command for each (session, seq, ack_floor) the ClientActor chooses is
that small header followed by the already-encoded op (a msgpack array is the concatenation of its items).
"""

from __future__ import annotations

from typing import Any

import msgpack

from actors.client import SessionHooks, WriteEncoder
from cluster.errors import (
    AlreadyApplied,
    InvalidRequest,
    LeaseExpired,
    LeaseNotFound,
    PermissionDenied,
    Rejected,
)
from cluster.kv import ops as kv
from cluster.kv.permissions import PERMISSION_DENIED_CODE


def _command_head(session: int, seq: int, ack_floor: int) -> bytes:
    # 0x94: a msgpack fixarray of 4 items, [session, seq, ack_floor, op]; the three ints packed as one
    # fixarray of 3 (one packb call) are that array's 0x93 followed by the same three items
    items: bytes = msgpack.packb((session, seq, ack_floor))
    return b"\x94" + items[1:]


def _reason(exc: Exception) -> str:
    """kv's validation message, or msgpack's complaint about a type or number it cannot encode."""
    reason = str(exc)
    if not isinstance(exc, ValueError):  # from msgpack: a set, an object, an int beyond 64 bits, ...
        return f"value cannot be stored ({reason}); use None, bool, int, float, str, bytes, list or dict"
    if reason.startswith("malformed command"):  # what we packed ourselves only fails kv's strict map keys
        return "map keys inside a value must be str or bytes"
    if reason.startswith("command too large"):
        reason += f"; a value may be at most {kv.MAX_VALUE_BYTES} bytes once encoded"
    return reason


_PROBE_HEAD = len(_command_head(0, 1, 1))


def write_encoder(operation: str, session: int, op: list[Any]) -> WriteEncoder:
    """Validate a write op now; return the encoder ClientActor.write calls. Raises InvalidRequest."""
    try:
        probe = kv.encode_command(0, 1, 1, op)  # the session only changes the head, cut off here
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(operation, _reason(exc)) from None
    body = probe[_PROBE_HEAD :]
    packb = msgpack.packb

    def encode(session: int, seq: int, ack_floor: int) -> bytes:
        items: bytes = packb((session, seq, ack_floor))
        return b"\x94" + items[1:] + body

    return encode


def encode_query(operation: str, op: list[Any]) -> bytes:
    """Validate and encode a read-only query. Raises InvalidRequest."""
    # Say which key is too large before kv would say "query too large".
    names = ("prefix", "limit", "after") if op[0] == "range" else ("key",)
    for what, key in zip(names, op[1:], strict=False):
        if isinstance(key, str) and len(key.encode("utf-8")) > kv.MAX_KEY_BYTES:
            size = len(key.encode("utf-8"))
            raise InvalidRequest(operation, f"{what} too large ({size} bytes > {kv.MAX_KEY_BYTES})")
    try:
        return kv.encode_query(op)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(operation, _reason(exc)) from None


def _opened(data: bytes) -> tuple[int, float] | None:
    """(session id, TTL in seconds) from a session_open result; None if it is not a success."""
    try:
        result = kv.decode_result(data)
    except ValueError:
        return None
    session, ttl_ms = result.get("session"), result.get("ttl_ms")
    if not result["ok"] or type(session) is not int or session <= 0 or type(ttl_ms) is not int or ttl_ms <= 0:
        return None
    return session, ttl_ms / 1000


def _session_refused(data: bytes) -> bool:
    # The refusal is a small map; a cheap substring test first keeps the common answer's cost nil.
    if kv.SESSION_EXPIRED_CODE.encode() not in data:
        return False
    try:
        return kv.decode_result(data).get("code") == kv.SESSION_EXPIRED_CODE
    except ValueError:
        return False


def session_refusal_text(data: bytes) -> str:
    """The cluster's words for a session refusal."""
    try:
        return str(kv.decode_result(data).get("error") or "")
    except ValueError:
        return ""


# How a client registers sessions through the log (cluster/kv/sessions.py); the leader fills in the
# TTL and the stamp.
SESSION_HOOKS = SessionHooks(kv.encode_command(0, 0, 0, ["session_open", 0, 0]), _opened, _session_refused)


# What nodes from before the "already_applied" code answered instead (the same situation).
_LEGACY_ALREADY_APPLIED = "request already acknowledged"


def check_result(operation: str, data: bytes, timeout: float = 0.0) -> dict[str, Any]:
    """The decoded state machine result. Raises AlreadyApplied when a retried write had been applied but
    its result is gone, Rejected for any other {"ok": False} or a malformed result. `timeout` is the
    request's, for the AlreadyApplied it raises."""
    try:
        result = kv.decode_result(data)
    except ValueError as exc:
        raise Rejected(operation, f"unreadable answer from the cluster: {exc}") from None
    if not result["ok"]:
        reason = str(result.get("error") or "unknown error")
        if result.get("code") == kv.ALREADY_APPLIED_CODE or reason == _LEGACY_ALREADY_APPLIED:
            raise AlreadyApplied(operation, timeout, reason)
        if result.get("code") == kv.LEASE_EXPIRED_CODE:
            raise LeaseExpired(operation, reason)
        if result.get("code") == kv.LEASE_NOT_FOUND_CODE:
            raise LeaseNotFound(operation, reason)
        if result.get("code") == PERMISSION_DENIED_CODE:
            raise PermissionDenied(operation, reason)
        raise Rejected(operation, reason)
    return result


def describe_bad_request(data: bytes) -> str:
    """The node's reason for a BAD_REQUEST answer (an error text)."""
    return data.decode("utf-8", "replace").strip() or "bad request"
