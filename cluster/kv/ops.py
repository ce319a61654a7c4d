"""The byte formats of KV commands, queries and results, and the validation of untrusted ones.

    encode_command(session, seq, ack_floor, op) -> bytes    a write, proposed through the Raft log
    encode_query(op) -> bytes                                a read, answered by `KVStateMachine.query`
    decode_result(data) -> dict                              any result

Write ops (the last element of a command) and their results:

    ["put", key, value]           {"ok": True, "rev": rev, "created": bool (the key was absent)}
    ["del", key]                  {"ok": True, "rev": rev, "deleted": 0 | 1}
    ["del_prefix", prefix]        {"ok": True, "rev": rev, "deleted": count}          ("" = every key)
    ["cas", key, expected, new]   {"ok": True, "rev": rev, "swapped": bool}
    ["cas_del", key, expected]    {"ok": True, "rev": rev, "swapped": bool, "deleted": 0 | 1}
    ["cas_rev", key, mod_rev, new]     as cas, compared by the key's mod revision (0: the key is absent)
    ["cas_del_rev", key, mod_rev]      as cas_del, compared by the key's mod revision (0: absent)
    ["lease_grant", ttl_ms, stamp]      {"ok": True, "rev": rev, "id": lease id, "ttl_ms": ttl_ms}
    ["lease_revoke", id, stamp]         {"ok": True, "rev": rev, "deleted": count}  (each key its revision)
    ["put_lease", key, value, id]       as put, and the key is attached to lease `id`
    ["lease_checkpoint", [[id, remaining_ms], ...], stamp]   {"ok": True, "rev": rev}  (the leader's own)
    (a lease write's `stamp` is the leader's log time: cluster/kv/leases.py; an unknown lease gives
    {"ok": False, "code": "lease_not_found"} and changes nothing. A plain put or a delete detaches a key.)
    ["session_open", ttl_ms, stamp]     {"ok": True, "rev": rev, "session": id, "ttl_ms": ttl_ms}
    (session 0 only; the leader sets ttl_ms and stamp: cluster/kv/sessions.py. The id is the entry's
    log index.)

A command of a session (session != 0) that the leader proposes carries a fifth element, the leader's
log time when it proposed it: [session, seq, ack_floor, op, stamp] (`stamp_command`). Apply advances the
log time to it and judges the session's expiry by it; a write of an unknown or expired session gives
{"ok": False, "code": "session_expired"} and changes nothing.

A write's result holds no value (put gives no previous value, a failed cas not the current one: read it
with get): results are cached per client session to answer retries, and must stay small.

Query ops:

    ["get", key]                  {"ok": True, "rev": rev, "kv": None | kv}
    ["range", prefix, limit, after]
                                  {"ok": True, "rev": rev, "kvs": [kv, ...] sorted by key, "more": bool}
    (kv = {"key", "value", "create_revision", "mod_revision", "version"})
    ["lease_keepalive", id], ["lease_info", id], ["lease_list"]
                                  answered by the leader's KV service only (cluster/kv/service.py)

A range answers one page: the keys that start with `prefix` and sort after `after` ("" = from the first),
in order, at most `limit` of them (0 = DEFAULT_RANGE_LIMIT; above MAX_RANGE_LIMIT the query is refused,
not clamped, so a caller's mistake shows) and no more than MAX_RANGE_BYTES of encoded kvs (a page stops
before the entry that would pass it, but always holds at least one, which fits: a kv is at most a key and
a value). `more` says whether further keys match; the next page is asked for with `after` = the last key
of this one. So a page may hold fewer than `limit` keys while `more` is True. MAX_RANGE_BYTES keeps any
answer at about a quarter of the transport's frame limit (transport/codec.py MAX_FRAME_BYTES).

Pages and consistency: `rev` is the revision the page was read at. There is no history of older
revisions (unlike etcd, which reads every page at the first page's revision), so each page shows the
state of its own moment. A caller that pages through a prefix gets every key at most once, in order;
every key present from the first page's read to the last one's exactly once; a key created or deleted
meanwhile may or may not appear; and each value as of its page's `rev`. When every page has the same
`rev`, nothing changed in between and the pages together are exactly the prefix at that revision.

Any bad input gives {"ok": False, "error": "..."} and changes nothing. A retried write that was applied
already but whose cached result is gone gives {"ok": False, "code": "already_applied", "error": "..."}
(cluster/kv/sessions.py): it was applied once, and is not applied again. `rev` is always the revision after
the operation. In cas/cas_del, `expected` None means "the key is absent"; otherwise it matches a stored
value that is equal and of the same types throughout (1, 1.0 and True differ; floats compare bit for bit;
map order does not matter).

The client facade encodes through these functions, so it refuses exactly what the state machine would
refuse, with the same words. Everything here is pure: no state, no clock, no I/O. Values are None, bool,
int, float, str, bytes, lists and maps with str or bytes keys, nested at most MAX_VALUE_DEPTH deep, at most
MAX_VALUE_BYTES once msgpack-encoded; keys are non-empty str of at most MAX_KEY_BYTES UTF-8 bytes.

DESIGN.md rule 7: commands are untrusted bytes and are validated before anything changes.
"""

from __future__ import annotations

from typing import Any

import msgpack

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1024 * 1024
MAX_VALUE_DEPTH = 64
# A cas carries two values; anything longer than this cannot be a valid command, so it is never unpacked.
MAX_COMMAND_BYTES = 2 * MAX_VALUE_BYTES + MAX_KEY_BYTES + 256
MAX_QUERY_BYTES = 2 * MAX_KEY_BYTES + 256  # a range carries a prefix and an after-key
DEFAULT_RANGE_LIMIT = 1000  # keys in a range page when the query says 0
MAX_RANGE_LIMIT = 10_000  # the most keys a range query may ask for
MAX_RANGE_BYTES = 4 * 1024 * 1024  # encoded kvs in one range page (see above)

Value = Any  # None | bool | int | float | str | bytes | list[Value] | dict[str | bytes, Value]

# The "code" of a write result for a retry whose write was applied already but whose cached result is
# gone (cluster/kv/sessions.py); the client raises AlreadyApplied for it.
ALREADY_APPLIED_CODE = "already_applied"

# The "code" of a write refused because its session is unknown: never registered, expired or evicted
# (cluster/kv/sessions.py); the write was not applied and never will be.
SESSION_EXPIRED_CODE = "session_expired"

_SCALARS = (type(None), bool, int, float, str, bytes)
_WRITE_ARITY = {"put": 3, "del": 2, "del_prefix": 2, "cas": 4, "cas_del": 3, "cas_rev": 4, "cas_del_rev": 3}
_QUERY_ARITY = {"get": 2, "range": 4}
# Leases (cluster/kv/leases.py): the stamp is the leader's log time, set by the node that proposes.
_LEASE_WRITE_ARITY = {"lease_grant": 3, "lease_revoke": 3, "put_lease": 4, "lease_checkpoint": 3}
_LEASE_QUERY_ARITY = {"lease_keepalive": 2, "lease_info": 2, "lease_list": 1}
_WRITE_ARITY.update(_LEASE_WRITE_ARITY)
_WRITE_ARITY["session_open"] = 3
_QUERY_ARITY.update(_LEASE_QUERY_ARITY)
LEASE_QUERIES = frozenset(_LEASE_QUERY_ARITY)
LEASE_NOT_FOUND_CODE = "lease_not_found"
LEASE_EXPIRED_CODE = "lease_expired"
UINT64_MAX = 2**64 - 1


class Invalid(Exception):
    """The input failed validation; the message is the client-facing error text."""


# ---------------------------------------------------------------------------------------------------------
# Encoding helpers (shared with the client facade and the tests)


def pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)


def encode_command(session: int, seq: int, ack_floor: int, op: list[Any]) -> bytes:
    """Encode a write command; raises ValueError if the state machine would reject it as invalid."""
    data = pack([session, seq, ack_floor, op])
    try:
        parse_command(data)
    except Invalid as exc:
        raise ValueError(str(exc)) from None
    return data


def encode_query(op: list[Any]) -> bytes:
    """Encode a read-only query; raises ValueError if the state machine would reject it as invalid."""
    data = pack(op)
    try:
        parse_query(data)
    except Invalid as exc:
        raise ValueError(str(exc)) from None
    return data


def stamp_command(data: bytes, stamp: int) -> bytes:
    """A valid command with the leader's log time `stamp` as its fifth element (replacing any stamp a
    client sent). The common case, a client's 4-element command, costs one concatenation."""
    if data[:1] == b"\x94":  # a msgpack fixarray of 4: make it 5 and append the stamp
        return b"\x95" + data[1:] + pack(stamp)
    session, seq, ack_floor, op, _ = parse_stamped(data)
    return pack([session, seq, ack_floor, op, stamp])


def command_op(data: bytes) -> list[Any]:
    """The op of `data` when apply() would execute it as a command; otherwise ValueError with the reason it
    would refuse it (malformed msgpack, wrong arity, bad key or value, too large, unknown op). Nodes check
    client writes with it before proposing them, so nothing the state machine refuses reaches the log."""
    try:
        return parse_command(data)[3]
    except Invalid as exc:
        raise ValueError(str(exc)) from None


def decode_result(data: bytes) -> dict[str, Any]:
    """Decode a result from apply() or query(); raises ValueError if it is not a result."""
    try:
        result = unpack(data)
    except Exception as exc:
        raise ValueError(f"malformed result: {exc}") from None
    if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
        raise ValueError("malformed result: expected a map with a boolean 'ok'")
    return result


def error(message: str, code: str = "") -> bytes:
    """A failure result; `code`, when given, names a failure the client maps to its own exception."""
    return pack({"ok": False, "error": message, "code": code} if code else {"ok": False, "error": message})


# ---------------------------------------------------------------------------------------------------------
# Validation of untrusted input


def is_int(x: object) -> bool:
    return type(x) is int


def check_uint(x: object, what: str) -> int:
    if type(x) is not int or not 0 <= x <= UINT64_MAX:
        raise Invalid(f"{what} must be a non-negative integer")
    return x


def check_key(x: object, what: str = "key", allow_empty: bool = False) -> str:
    if type(x) is not str:
        raise Invalid(f"{what} must be a string")
    if not x and not allow_empty:
        raise Invalid(f"{what} must not be empty")
    size = len(x.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise Invalid(f"{what} too large ({size} bytes > {MAX_KEY_BYTES})")
    return x


def check_value_shape(value: object) -> None:
    """Allowed types only, nesting bounded; iterative, so deep input cannot exhaust the Python stack."""
    if type(value) in _SCALARS:
        return
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        if depth > MAX_VALUE_DEPTH:
            raise Invalid(f"value nested deeper than {MAX_VALUE_DEPTH}")
        if kind is list:
            stack.extend((x, depth + 1) for x in item)  # type: ignore[attr-defined]
        elif kind is dict:
            for k, v in item.items():  # type: ignore[attr-defined]
                if type(k) is not str and type(k) is not bytes:
                    raise Invalid("map keys inside a value must be str or bytes")
                stack.append((v, depth + 1))
        else:
            raise Invalid(f"unsupported value type {kind.__name__}")


def _check_value(value: object) -> Value:
    check_value_shape(value)
    try:
        size = len(pack(value))
    except Exception as exc:  # cannot happen for a validated shape; stay defensive on untrusted input
        raise Invalid(f"value cannot be encoded: {exc}") from None
    if size > MAX_VALUE_BYTES:
        raise Invalid(f"value too large ({size} bytes > {MAX_VALUE_BYTES})")
    return value


def _check_op(op: object, arity: dict[str, int]) -> list[Any]:
    if type(op) is not list or not op:
        raise Invalid("op must be a non-empty list")
    name = op[0]
    if type(name) is not str:
        raise Invalid("op name must be a string")
    want = arity.get(name)
    if want is None:
        raise Invalid(f"unknown op {name[:64]!r}")
    if len(op) != want:
        raise Invalid(f"op {name!r} takes {want - 1} argument(s), got {len(op) - 1}")
    if name in _LEASE_WRITE_ARITY or name in _LEASE_QUERY_ARITY:
        return _check_lease_op(op)
    if name == "session_open":
        check_uint(op[1], "session ttl (ms)")
        check_uint(op[2], "stamp")
        return op
    if name in ("put", "del", "cas", "cas_del", "cas_rev", "cas_del_rev", "get"):
        check_key(op[1])
    else:  # del_prefix, range
        check_key(op[1], "prefix", allow_empty=True)
    if name == "put":
        _check_value(op[2])
    elif name == "cas":
        _check_value(op[2])
        _check_value(op[3])
    elif name == "cas_del":
        _check_value(op[2])
    elif name == "cas_rev":
        check_uint(op[2], "mod revision")
        _check_value(op[3])
    elif name == "cas_del_rev":
        check_uint(op[2], "mod revision")
    elif name == "range":
        limit = check_uint(op[2], "limit")
        if limit > MAX_RANGE_LIMIT:
            raise Invalid(f"limit too large ({limit} > {MAX_RANGE_LIMIT}); ask for the next page with after")
        check_key(op[3], "after", allow_empty=True)
    return op


def _check_lease_op(op: list[Any]) -> list[Any]:
    name = op[0]
    if name == "lease_grant":
        check_uint(op[1], "lease ttl (ms)")
        check_uint(op[2], "stamp")
    elif name == "lease_revoke":
        check_uint(op[1], "lease id")
        check_uint(op[2], "stamp")
    elif name == "lease_checkpoint":
        if type(op[1]) is not list:
            raise Invalid("lease checkpoint must be a list of [id, remaining_ms]")
        for item in op[1]:
            if type(item) is not list or len(item) != 2:
                raise Invalid("lease checkpoint must be a list of [id, remaining_ms]")
            check_uint(item[0], "lease id")
            check_uint(item[1], "lease remaining ttl")
        check_uint(op[2], "stamp")
    elif name == "put_lease":
        check_key(op[1])
        _check_value(op[2])
        check_uint(op[3], "lease id")
    elif name in ("lease_keepalive", "lease_info"):
        check_uint(op[1], "lease id")
    return op


def _unpack_bounded(data: bytes, what: str, limit: int) -> Any:
    """Untrusted bytes -> one msgpack object, refusing anything that is not bytes or is over `limit`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Invalid(f"{what} must be bytes")
    if len(data) > limit:
        raise Invalid(f"{what} too large ({len(data)} bytes > {limit})")
    try:
        return unpack(data)
    except Exception:
        raise Invalid(f"malformed {what}: not a single valid msgpack object") from None


def parse_command(data: bytes) -> tuple[int, int, int, list[Any]]:
    """(session, seq, ack_floor, op) of a write command; raises Invalid."""
    return parse_stamped(data)[:4]  # type: ignore[return-value]


def parse_stamped(data: bytes) -> tuple[int, int, int, list[Any], int | None]:
    """(session, seq, ack_floor, op, stamp) of a write command, stamp None when it has none; raises
    Invalid."""
    obj = _unpack_bounded(data, "command", MAX_COMMAND_BYTES + 16)
    if type(obj) is not list or len(obj) not in (4, 5):
        raise Invalid("command must be [session, seq, ack_floor, op]")
    session = check_uint(obj[0], "session")
    seq = check_uint(obj[1], "seq")
    ack_floor = check_uint(obj[2], "ack_floor")
    if session != 0 and ack_floor > seq:
        raise Invalid("ack_floor must not be above seq")
    stamp = check_uint(obj[4], "stamp") if len(obj) == 5 else None
    op = _check_op(obj[3], _WRITE_ARITY)
    if op[0] == "session_open" and session != 0:
        raise Invalid("session_open is sent without a session (session 0)")
    return session, seq, ack_floor, op, stamp


def parse_query(data: bytes) -> list[Any]:
    """The op of a read-only query; raises Invalid."""
    return _check_op(_unpack_bounded(data, "query", MAX_QUERY_BYTES), _QUERY_ARITY)
