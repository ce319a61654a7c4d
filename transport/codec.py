"""The wire codec: zraft messages to msgpack frames and back, validating everything it decodes.

This module owns the byte layout of every message that crosses the wire and of a log entry as the
write-ahead log stores it. actors/messages.py owns the vocabulary; this module owns only its encoding.

Frame layout: one msgpack array ``[PROTOCOL_VERSION, tag, field1, field2, ...]``, with the fields in
dataclass field order. Nested values are arrays too: an Entry is ``[term, index, kind, data]`` and a
SnapshotMeta is ``[index, term, [members...], config]`` (config: the configuration's bytes, absent from old
senders). Tags come from the fixed table ``TAGS``. Each number is
written out by hand, so adding a message class never renumbers the others. A number is never reused:
retire it instead.

Never trust the wire (DESIGN.md rule 7). ``decode`` checks the frame size, the protocol version, the
tag, the exact field count and every field's type and range. Any problem raises ``DecodeError`` (a
ValueError) with a short reason, and nothing else escapes it for any input bytes. The msgpack limits
come from the frame size, so a few hostile bytes cannot make the unpacker allocate a huge buffer.

Batches: a client may put several ClientRequests for one node in one frame, and a node several
ClientResponses for one client, so a loop turn's worth of requests or answers costs one ZeroMQ message
instead of one each. A batch frame is ``[PROTOCOL_VERSION, tag, src, dst, [item, ...]]`` with the tag
from ``BATCH_TAGS``; a request item is ``[req_id, kind, payload]`` and a response item is
``[req_id, status, result, leader_hint]``, i.e. the message's fields after src and dst. Actors never
see batches: ``decode_frame`` returns the messages a frame holds, single or batched, each validated as
if it had come alone.

``encode`` trusts its input, because the node builds those messages itself. It does not validate them
or cap the frame size. Whoever batches entries must keep frames under the receiver's limit
(MAX_FRAME_BYTES, MAX_ENTRIES_PER_MESSAGE).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from operator import attrgetter, itemgetter
from typing import Any, Final

from msgpack import UnpackException, packb, unpackb

from actors.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ClientRequest,
    ClientResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestKind,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    Status,
    TimeoutNow,
)

__all__ = [
    "MAX_ENTRIES_PER_MESSAGE",
    "MAX_FRAME_BYTES",
    "MAX_MEMBERS",
    "MAX_NODE_ID_CHARS",
    "PROTOCOL_VERSION",
    "TAGS",
    "DecodeError",
    "BATCH_TAGS",
    "MAX_BATCH_ITEMS",
    "decode",
    "decode_frame",
    "encode",
    "encode_batch",
    "msgpack_array_header",
]

PROTOCOL_VERSION: Final = 1
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024  # default limit for one frame (decode's max_bytes)
MAX_NODE_ID_CHARS: Final = 256  # src, dst, leader_hint and snapshot members
MAX_ENTRIES_PER_MESSAGE: Final = 65536  # entries in one AppendEntries
MAX_MEMBERS: Final = 1024  # members in one SnapshotMeta
MAX_CONFIG_BYTES: Final = 1 << 20  # the configuration carried in one SnapshotMeta (actors/membership.py)
MAX_BATCH_ITEMS: Final = 4096  # requests or responses in one batch frame

_U63_MAX: Final = 2**63 - 1  # indexes, terms, ids, offsets and counters are all in 0.._U63_MAX
_MAX_STR_BYTES: Final = 4 * MAX_NODE_ID_CHARS  # every str on the wire is a node id
# The biggest array a frame holds:
_MAX_ARRAY_LEN: Final = max(MAX_ENTRIES_PER_MESSAGE, MAX_MEMBERS, MAX_BATCH_ITEMS, 16)

# The tag table. Fixed and explicit: never derive it from class order, and never reuse a retired number.
TAGS: Final[dict[type, int]] = {
    RequestVote: 1,
    RequestVoteResponse: 2,
    AppendEntries: 3,
    AppendEntriesResponse: 4,
    InstallSnapshot: 5,
    InstallSnapshotResponse: 6,
    TimeoutNow: 7,
    ClientRequest: 8,
    ClientResponse: 9,
}
# Batch frames of several messages of one class between one src and one dst (see the module docstring).
BATCH_TAGS: Final[dict[type, int]] = {
    ClientRequest: 10,
    ClientResponse: 11,
}


class DecodeError(ValueError):
    """A frame or stored entry is not a valid zraft encoding. The message is a short reason."""


# --- schema -----------------------------------------------------------------------------------------
# Field kinds. Each kind fixes the Python type that msgpack decodes it to (with raw=False, use_list=False)
# and the extra checks applied to it.
_U63 = "u63"  # int (not bool) in 0.._U63_MAX
_BOOL = "bool"
_NODE = "node"  # str of at most MAX_NODE_ID_CHARS characters
_BYTES = "bytes"
_ENTRIES = "entries"  # array of [term, index, kind, data], at most MAX_ENTRIES_PER_MESSAGE
_META = "meta"  # [index, term, [members...]]
_REQUEST_KIND = "request_kind"  # int, a RequestKind value
_STATUS = "status"  # int, a Status value

_PY_TYPE: Final[dict[str, type]] = {
    _U63: int,
    _BOOL: bool,
    _NODE: str,
    _BYTES: bytes,
    _ENTRIES: tuple,
    _META: tuple,
    _REQUEST_KIND: int,
    _STATUS: int,
}
_ENTRY_KINDS: Final = frozenset(int(k) for k in EntryKind)
_ENUM_VALUES: Final[dict[str, frozenset[int]]] = {
    _REQUEST_KIND: frozenset(int(k) for k in RequestKind),
    _STATUS: frozenset(int(s) for s in Status),
}

# Per message class: (field name, kind) in dataclass field order. The import-time check below makes sure
# this stays in step with actors/messages.py.
_SCHEMA: Final[dict[type, tuple[tuple[str, str], ...]]] = {
    RequestVote: (
        ("src", _NODE),
        ("dst", _NODE),
        ("term", _U63),
        ("last_log_index", _U63),
        ("last_log_term", _U63),
        ("pre_vote", _BOOL),
        ("transfer", _BOOL),
    ),
    RequestVoteResponse: (
        ("src", _NODE),
        ("dst", _NODE),
        ("term", _U63),
        ("granted", _BOOL),
        ("pre_vote", _BOOL),
    ),
    AppendEntries: (
        ("src", _NODE),
        ("dst", _NODE),
        ("term", _U63),
        ("prev_log_index", _U63),
        ("prev_log_term", _U63),
        ("entries", _ENTRIES),
        ("leader_commit", _U63),
        ("read_round", _U63),
    ),
    AppendEntriesResponse: (
        ("src", _NODE),
        ("dst", _NODE),
        ("term", _U63),
        ("success", _BOOL),
        ("match_index", _U63),
        ("conflict_index", _U63),
        ("conflict_term", _U63),
        ("read_round", _U63),
    ),
    InstallSnapshot: (
        ("src", _NODE),
        ("dst", _NODE),
        ("term", _U63),
        ("meta", _META),
        ("offset", _U63),
        ("data", _BYTES),
        ("done", _BOOL),
    ),
    InstallSnapshotResponse: (
        ("src", _NODE),
        ("dst", _NODE),
        ("term", _U63),
        ("snapshot_index", _U63),
        ("next_offset", _U63),
        ("done", _BOOL),
    ),
    TimeoutNow: (
        ("src", _NODE),
        ("dst", _NODE),
        ("term", _U63),
    ),
    ClientRequest: (
        ("src", _NODE),
        ("dst", _NODE),
        ("req_id", _U63),
        ("kind", _REQUEST_KIND),
        ("payload", _BYTES),
    ),
    ClientResponse: (
        ("src", _NODE),
        ("dst", _NODE),
        ("req_id", _U63),
        ("status", _STATUS),
        ("result", _BYTES),
        ("leader_hint", _NODE),
    ),
}


def _check_schema() -> None:
    """Fail at import, not on the wire, when messages.py and this codec disagree."""
    if set(_SCHEMA) != set(TAGS):
        raise RuntimeError("transport/codec.py: _SCHEMA and TAGS list different classes")
    all_tags = [*TAGS.values(), *BATCH_TAGS.values()]
    if len(set(all_tags)) != len(all_tags):
        raise RuntimeError("transport/codec.py: two message classes or batches share a tag")
    for cls, fields in _SCHEMA.items():
        actual = tuple(f.name for f in dataclasses.fields(cls))
        if actual != tuple(name for name, _ in fields):
            raise RuntimeError(
                f"transport/codec.py: schema for {cls.__name__} lists {[n for n, _ in fields]}, "
                f"but actors/messages.py has {list(actual)}"
            )
    for cls in BATCH_TAGS:
        if cls not in _SCHEMA or [name for name, _ in _SCHEMA[cls][:2]] != ["src", "dst"]:
            raise RuntimeError(f"transport/codec.py: a batch of {cls.__name__} needs src and dst first")
    if tuple(f.name for f in dataclasses.fields(Entry)) != ("term", "index", "kind", "data"):
        raise RuntimeError("transport/codec.py: Entry fields changed; update the entry layout")
    if tuple(f.name for f in dataclasses.fields(SnapshotMeta)) != ("index", "term", "members", "config"):
        raise RuntimeError("transport/codec.py: SnapshotMeta fields changed; update the meta layout")


_check_schema()


# --- helpers ------------------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return type(value).__name__


def _unpack(data: Any, max_bytes: int) -> Any:
    """Unpack one msgpack object from an untrusted buffer. Raises only DecodeError."""
    if type(data) is bytes:
        size = len(data)
    elif isinstance(data, bytearray | memoryview):
        size = memoryview(data).nbytes
    else:
        raise DecodeError(f"expected bytes, got {_type_name(data)}")
    if size == 0:
        raise DecodeError("empty frame")
    if size > max_bytes:
        raise DecodeError(f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
    try:
        return unpackb(
            data,
            use_list=False,
            raw=False,
            strict_map_key=True,
            # No object can be longer than the frame holding it. No message has an array longer than
            # _MAX_ARRAY_LEN, a str other than a node id (at most 4 UTF-8 bytes per char), or any map
            # or ext value. These limits stop a few hostile header bytes from making the unpacker
            # allocate a huge list, str or bytes buffer.
            max_bin_len=size,
            max_str_len=min(size, _MAX_STR_BYTES),
            max_array_len=min(size, _MAX_ARRAY_LEN),
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError, OverflowError, BufferError, RecursionError, UnpackException) as exc:
        detail = str(exc)[:80]
        reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise DecodeError(f"malformed msgpack ({reason})") from None


def _u63_problem(value: object) -> str | None:
    if type(value) is not int:
        return f"expected int, got {_type_name(value)}"
    if not 0 <= value <= _U63_MAX:
        return f"int {value} out of range 0..2**63-1"
    return None


def _node_problem(value: object) -> str | None:
    if type(value) is not str:
        return f"expected str, got {_type_name(value)}"
    if len(value) > MAX_NODE_ID_CHARS:
        return f"node id of {len(value)} chars exceeds {MAX_NODE_ID_CHARS}"
    return None


def _entry_problem(where: str, raw: object) -> str:
    """Why `raw` is not a valid [term, index, kind, data] entry (only called once it was found bad)."""
    if type(raw) is not tuple:
        return f"{where}: expected an entry array, got {_type_name(raw)}"
    if len(raw) != 4:
        return f"{where}: expected 4 entry fields [term, index, kind, data], got {len(raw)}"
    term, index, kind, data = raw
    for name, value in (("term", term), ("index", index)):
        problem = _u63_problem(value)
        if problem:
            return f"{where}.{name}: {problem}"
    if type(kind) is not int:
        return f"{where}.kind: expected int, got {_type_name(kind)}"
    if kind not in _ENTRY_KINDS:
        return f"{where}.kind: unknown entry kind {kind}"
    if type(data) is not bytes:
        return f"{where}.data: expected bytes, got {_type_name(data)}"
    return f"{where}: invalid entry"  # not reached: every check above passed


def _entry_from(raw: Any) -> Entry | None:
    """The Entry `raw` encodes, or None when it is not a valid entry. Inlined checks: the hot path."""
    if type(raw) is tuple and len(raw) == 4:
        term, index, kind, data = raw
        if (
            type(term) is int
            and type(index) is int
            and type(kind) is int
            and type(data) is bytes
            and 0 <= term <= _U63_MAX
            and 0 <= index <= _U63_MAX
            and kind in _ENTRY_KINDS
        ):
            return Entry(term, index, kind, data)
    return None


def _decode_entries(raw: tuple[Any, ...]) -> tuple[Entry, ...]:
    if len(raw) > MAX_ENTRIES_PER_MESSAGE:
        raise DecodeError(f"AppendEntries.entries: {len(raw)} entries exceed {MAX_ENTRIES_PER_MESSAGE}")
    out: list[Entry] = []
    append = out.append
    for item in raw:
        entry = _entry_from(item)
        if entry is None:
            raise DecodeError(_entry_problem(f"AppendEntries.entries[{len(out)}]", item))
        append(entry)
    return tuple(out)


def _decode_meta(raw: tuple[Any, ...]) -> SnapshotMeta:
    if len(raw) not in (3, 4):
        raise DecodeError(
            f"InstallSnapshot.meta: expected [index, term, members, config], got {len(raw)} fields"
        )
    index, term, members = raw[:3]
    config = raw[3] if len(raw) == 4 else b""
    if type(config) is not bytes or len(config) > MAX_CONFIG_BYTES:
        raise DecodeError(f"InstallSnapshot.meta.config: expected bytes of at most {MAX_CONFIG_BYTES}")
    for name, value in (("index", index), ("term", term)):
        problem = _u63_problem(value)
        if problem:
            raise DecodeError(f"InstallSnapshot.meta.{name}: {problem}")
    if type(members) is not tuple:
        raise DecodeError(f"InstallSnapshot.meta.members: expected array, got {_type_name(members)}")
    if len(members) > MAX_MEMBERS:
        raise DecodeError(f"InstallSnapshot.meta.members: {len(members)} members exceed {MAX_MEMBERS}")
    for i, member in enumerate(members):
        problem = _node_problem(member)
        if problem:
            raise DecodeError(f"InstallSnapshot.meta.members[{i}]: {problem}")
    return SnapshotMeta(index, term, members, config)


_NESTED_DECODERS: Final[dict[str, Callable[[tuple[Any, ...]], Any]]] = {
    _ENTRIES: _decode_entries,
    _META: _decode_meta,
}


def _field_problem(kind: str, value: object) -> str | None:
    """Why `value` is not a valid field of this kind (the slow path, for error messages only)."""
    if kind in (_U63, _REQUEST_KIND, _STATUS):
        problem = _u63_problem(value)
        if problem:
            return problem
        if kind in _ENUM_VALUES and value not in _ENUM_VALUES[kind]:
            label = "request kind" if kind == _REQUEST_KIND else "status"
            return f"unknown {label} {value}"
        return None
    if kind == _NODE:
        return _node_problem(value)
    expected = _PY_TYPE[kind]
    if type(value) is not expected:
        name = "array" if expected is tuple else expected.__name__
        return f"expected {name}, got {_type_name(value)}"
    return None


def _tuple_getter(positions: Sequence[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Like operator.itemgetter, but always returns a tuple (itemgetter returns a bare item for one)."""
    if not positions:
        return lambda _a: ()
    if len(positions) == 1:
        pos = positions[0]
        return lambda a: (a[pos],)
    return itemgetter(*positions)  # type: ignore[no-any-return]


# --- decoders, built once at import -------------------------------------------------------------------

_FieldsDecoder = Callable[[tuple[Any, ...]], Message]


def _make_decoder(cls: type, fields: tuple[tuple[str, str], ...]) -> _FieldsDecoder:
    """A function that turns an unpacked [version, tag, fields...] array into a `cls` instance.

    The fast path checks every field's type at once by comparing the tuple of types with the expected
    signature, and checks ranges with min/max and string lengths with max(map(len)). Only when a check
    fails does the slow path walk the fields one by one to name the bad field.
    """
    name = cls.__name__
    kinds = tuple(kind for _, kind in fields)
    count = len(fields) + 2
    signature = (int, int, *(_PY_TYPE[k] for k in kinds))
    # Version and tag are ints in range already; including them keeps the getter's result a tuple.
    ints = _tuple_getter([0, 1] + [i + 2 for i, k in enumerate(kinds) if _PY_TYPE[k] is int])
    strs = _tuple_getter([i + 2 for i, k in enumerate(kinds) if k == _NODE])
    enums = tuple((i + 2, _ENUM_VALUES[k]) for i, k in enumerate(kinds) if k in _ENUM_VALUES)
    nested = tuple((i + 2, _NESTED_DECODERS[k]) for i, k in enumerate(kinds) if k in _NESTED_DECODERS)

    def explain(a: tuple[Any, ...]) -> DecodeError:
        if len(a) != count:
            return DecodeError(f"{name}: expected {count - 2} fields, got {len(a) - 2}")
        for (field, kind), value in zip(fields, a[2:], strict=True):
            problem = _field_problem(kind, value)
            if problem:
                return DecodeError(f"{name}.{field}: {problem}")
        return DecodeError(f"{name}: invalid fields")  # not reached: the fast path rejected something

    def decode_fields(a: tuple[Any, ...]) -> Message:
        if tuple(map(type, a)) != signature:
            raise explain(a)
        int_values = ints(a)
        if min(int_values) < 0 or max(int_values) > _U63_MAX:
            raise explain(a)
        if max(map(len, strs(a)), default=0) > MAX_NODE_ID_CHARS:
            raise explain(a)
        for pos, allowed in enums:
            if a[pos] not in allowed:
                raise explain(a)
        if nested:
            args = list(a)
            for pos, convert in nested:
                args[pos] = convert(a[pos])
            return cls(*args[2:])  # type: ignore[no-any-return]
        return cls(*a[2:])  # type: ignore[no-any-return]

    decode_fields.__name__ = f"decode_{name}"
    return decode_fields


_DECODERS: Final[dict[int, _FieldsDecoder]] = {
    tag: _make_decoder(cls, _SCHEMA[cls]) for cls, tag in TAGS.items()
}


def _make_batch_decoder(cls: type) -> Callable[[tuple[Any, ...]], list[Message]]:
    """A function that turns an unpacked batch array into its messages, each checked like a lone one."""
    name = cls.__name__
    tag = TAGS[cls]
    decode_one = _DECODERS[tag]

    def decode_batch(a: tuple[Any, ...]) -> list[Message]:
        if len(a) != 5:
            raise DecodeError(f"{name} batch: expected [version, tag, src, dst, items], got {len(a)} items")
        _version, _tag, src, dst, items = a
        if type(items) is not tuple:
            raise DecodeError(f"{name} batch: expected an array of items, got {_type_name(items)}")
        if not 0 < len(items) <= MAX_BATCH_ITEMS:
            raise DecodeError(f"{name} batch: {len(items)} items, expected 1..{MAX_BATCH_ITEMS}")
        out: list[Message] = []
        append = out.append
        for item in items:
            if type(item) is not tuple:
                raise DecodeError(f"{name} batch item {len(out)}: expected an array, got {_type_name(item)}")
            try:
                append(decode_one((PROTOCOL_VERSION, tag, src, dst, *item)))
            except DecodeError as exc:
                raise DecodeError(f"batch item {len(out)}: {exc}") from None
        return out

    decode_batch.__name__ = f"decode_{name}_batch"
    return decode_batch


_BATCH_DECODERS: Final[dict[int, Callable[[tuple[Any, ...]], list[Message]]]] = {
    tag: _make_batch_decoder(cls) for cls, tag in BATCH_TAGS.items()
}


# --- encoders, built once at import -------------------------------------------------------------------

_entry_fields = attrgetter("term", "index", "kind", "data")


def _encode_entries(entries: Sequence[Entry]) -> list[tuple[Any, ...]]:
    return list(map(_entry_fields, entries))


def _encode_meta(meta: SnapshotMeta) -> tuple[Any, ...]:
    return (meta.index, meta.term, meta.members, meta.config)


_NESTED_ENCODERS: Final[dict[str, Callable[[Any], Any]]] = {
    _ENTRIES: _encode_entries,
    _META: _encode_meta,
}


def _make_encoder(tag: int, fields: tuple[tuple[str, str], ...]) -> Callable[[Any], bytes]:
    head = (PROTOCOL_VERSION, tag)
    getter = attrgetter(*(name for name, _ in fields))  # every message has >= 2 fields: returns a tuple
    nested = tuple((i, _NESTED_ENCODERS[k]) for i, (_, k) in enumerate(fields) if k in _NESTED_ENCODERS)

    if not nested:

        def encode_flat(msg: Any) -> bytes:
            return packb(head + getter(msg), use_bin_type=True)  # type: ignore[no-any-return]

        return encode_flat

    def encode_nested(msg: Any) -> bytes:
        values = list(getter(msg))
        for pos, convert in nested:
            values[pos] = convert(values[pos])
        return packb((*head, *values), use_bin_type=True)  # type: ignore[no-any-return]

    return encode_nested


_ENCODERS: Final[dict[type, Callable[[Any], bytes]]] = {
    cls: _make_encoder(tag, _SCHEMA[cls]) for cls, tag in TAGS.items()
}
# Per batchable class: the item of one message, i.e. its fields after src and dst.
_BATCH_ITEMS: Final[dict[type, Callable[[Any], tuple[Any, ...]]]] = {
    cls: attrgetter(*(name for name, _ in _SCHEMA[cls][2:])) for cls in BATCH_TAGS
}


# --- public API ---------------------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """Encode a wire message as one frame. Raises TypeError for anything that is not a wire message."""
    try:
        encoder = _ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"not a zraft wire message: {_type_name(msg)}") from None
    return encoder(msg)


def encode_batch(msgs: Sequence[ClientRequest] | Sequence[ClientResponse]) -> bytes:
    """Encode messages of one batchable class, from one src to one dst, as one frame.

    A single message is encoded as itself (what `encode` gives), so a receiver of one request sees
    nothing new. Raises ValueError for an empty or oversized batch or mixed senders, receivers or classes;
    keeping the frame under the receiver's byte limit is the caller's job.
    """
    if not msgs:
        raise ValueError("an empty batch")
    first = msgs[0]
    if len(msgs) == 1:
        return encode(first)
    cls = type(first)
    item_of = _BATCH_ITEMS.get(cls)
    if item_of is None:
        raise TypeError(f"{_type_name(first)} cannot be batched")
    if len(msgs) > MAX_BATCH_ITEMS:
        raise ValueError(f"a batch of {len(msgs)} messages exceeds {MAX_BATCH_ITEMS}")
    src, dst = first.src, first.dst
    items = []
    for msg in msgs:
        if type(msg) is not cls or msg.src != src or msg.dst != dst:
            raise ValueError("a batch must hold messages of one class from one src to one dst")
        items.append(item_of(msg))
    return packb((PROTOCOL_VERSION, BATCH_TAGS[cls], src, dst, items), use_bin_type=True)  # type: ignore[no-any-return]


def decode(frame: bytes | bytearray | memoryview, max_bytes: int = MAX_FRAME_BYTES) -> Message:
    """Decode and validate one frame from the network. Raises DecodeError (only) on any invalid input.

    A batch frame is refused here: use decode_frame where batches may arrive.
    """
    obj = _unpack_message(frame, max_bytes)
    decoder = _DECODERS.get(obj[1])
    if decoder is None:
        raise DecodeError(f"unknown message tag {obj[1]}")
    return decoder(obj)


def decode_frame(frame: bytes | bytearray | memoryview, max_bytes: int = MAX_FRAME_BYTES) -> list[Message]:
    """The messages one frame holds: one for a plain frame, all of them for a batch, each validated."""
    obj = _unpack_message(frame, max_bytes)
    tag = obj[1]
    decoder = _DECODERS.get(tag)
    if decoder is not None:
        return [decoder(obj)]
    batch_decoder = _BATCH_DECODERS.get(tag)
    if batch_decoder is None:
        raise DecodeError(f"unknown message tag {tag}")
    return batch_decoder(obj)


def _unpack_message(frame: bytes | bytearray | memoryview, max_bytes: int) -> tuple[Any, ...]:
    """The unpacked [version, tag, ...] array of a frame, version checked and tag an int."""
    obj = _unpack(frame, max_bytes)
    if type(obj) is not tuple or len(obj) < 2:
        raise DecodeError(f"expected an array [version, tag, ...], got {_type_name(obj)}")
    version = obj[0]
    if type(version) is not int or version != PROTOCOL_VERSION:
        shown = version if type(version) is int else _type_name(version)
        raise DecodeError(f"unsupported protocol version {shown} (expected {PROTOCOL_VERSION})")
    if type(obj[1]) is not int:
        raise DecodeError(f"unknown message tag {_type_name(obj[1])}")
    return obj  # type: ignore[no-any-return]


def msgpack_array_header(length: int) -> bytes:
    """The msgpack header of an array with `length` items (fixarray, array 16 or array 32)."""
    if length < 16:
        return bytes((0x90 | length,))
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")
