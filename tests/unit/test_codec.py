"""Unit tests for transport/codec.py: round trips, the pinned wire format, strict rejection and fuzzing."""

from __future__ import annotations

import types
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.messages import (
    PEER_MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    ClientRequest,
    ClientResponse,
    Entry,
    EntryKind,
    HardState,
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
from transport.codec import (
    BATCH_TAGS,
    MAX_BATCH_ITEMS,
    MAX_ENTRIES_PER_MESSAGE,
    MAX_FRAME_BYTES,
    MAX_MEMBERS,
    MAX_NODE_ID_CHARS,
    PROTOCOL_VERSION,
    TAGS,
    DecodeError,
    decode,
    decode_frame,
    encode,
    encode_batch,
)

U63_MAX = 2**63 - 1

# --- representative messages ------------------------------------------------------------------------

LONG_ID = "n" * MAX_NODE_ID_CHARS
UNICODE_IDS = ("节点-1", "nœud-ß", "🚀node", "")


def _entries(count: int, size: int = 8, term: int = 3) -> tuple[Entry, ...]:
    return tuple(Entry(term, i, int(EntryKind.COMMAND), bytes([i % 256]) * size) for i in range(1, count + 1))


EXAMPLES: list[Message] = [
    RequestVote("n1", "n2", 5, 10, 4, pre_vote=False, transfer=False),
    RequestVote("n1", "n2", 6, 0, 0, pre_vote=True, transfer=True),
    RequestVote(LONG_ID, UNICODE_IDS[0], U63_MAX, U63_MAX, U63_MAX, False, True),
    RequestVoteResponse("n2", "n1", 5, granted=True, pre_vote=False),
    RequestVoteResponse(UNICODE_IDS[1], UNICODE_IDS[2], 0, granted=False, pre_vote=True),
    AppendEntries("n1", "n2", 3, 0, 0, (), 0, 0),  # heartbeat: empty entries
    AppendEntries("n1", "n2", 3, 7, 2, (Entry(3, 8, int(EntryKind.NOOP), b""),), 7, 42),
    AppendEntries("n1", "n2", 3, 0, 0, _entries(1000), 999, 1),  # many entries
    AppendEntries("n1", "n2", 3, 0, 0, _entries(3, size=1 << 20), 2, 1),  # large payloads
    AppendEntriesResponse("n2", "n1", 3, True, 8, 0, 0, 42),
    AppendEntriesResponse("n2", "n1", 3, False, 0, 5, 2, U63_MAX),
    InstallSnapshot("n1", "n2", 4, SnapshotMeta(100, 3, ("n1", "n2", "n3")), 0, b"chunk", False),
    InstallSnapshot("n1", "n2", 4, SnapshotMeta(100, 3, ()), 1 << 40, b"\x00" * (4 << 20), True),
    InstallSnapshot("n1", "n2", 4, SnapshotMeta(0, 0, UNICODE_IDS), 0, b"", True),
    InstallSnapshotResponse("n2", "n1", 4, 100, 5, False),
    InstallSnapshotResponse("n2", "n1", 4, 100, 1 << 40, True),
    TimeoutNow("n1", "n2", 9),
    TimeoutNow(UNICODE_IDS[3], UNICODE_IDS[3], 0),
    *(ClientRequest("client-7", "n1", 11, int(kind), b"\x81\xa1k\xa1v") for kind in RequestKind),
    ClientRequest("client-7", "", U63_MAX, int(RequestKind.WRITE), b""),
    *(ClientResponse("n1", "client-7", 11, int(status), b"\xc0", "n2") for status in Status),
    ClientResponse("n1", "client-7", 12, int(Status.NOT_LEADER), b"", ""),
]


def _ids(msgs: list[Message]) -> list[str]:
    return [f"{i}-{type(m).__name__}" for i, m in enumerate(msgs)]


def _raw(msg: Message) -> list[Any]:
    """The unpacked array form of a frame, to build hand-made (and broken) frames from."""
    raw: list[Any] = msgpack.unpackb(encode(msg), raw=False)
    return raw


def _pack(obj: Any) -> bytes:
    frame: bytes = msgpack.packb(obj, use_bin_type=True)
    return frame


def _check_decode(frame: bytes) -> None:
    """decode either returns a valid message that round-trips, or raises DecodeError. Nothing else."""
    try:
        msg = decode(frame)
    except DecodeError:
        return
    assert type(msg) in TAGS
    assert decode(encode(msg)) == msg
    assert decode_frame(frame) == [msg]


def _check_decode_frame(frame: bytes) -> None:
    """decode_frame either returns messages that round-trip as a batch, or raises DecodeError."""
    try:
        msgs = decode_frame(frame)
    except DecodeError:
        return
    assert msgs
    assert all(type(m) in TAGS for m in msgs)
    if len(msgs) > 1:
        assert decode_frame(encode_batch(msgs)) == msgs  # type: ignore[arg-type]


# --- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("msg", EXAMPLES, ids=_ids(EXAMPLES))
def test_round_trip_examples(msg: Message) -> None:
    frame = encode(msg)
    assert isinstance(frame, bytes)
    decoded = decode(frame)
    assert type(decoded) is type(msg)
    assert decoded == msg
    assert encode(decoded) == frame


def test_examples_cover_every_message_type() -> None:
    assert {type(m) for m in EXAMPLES} == set(TAGS)


def test_round_trip_preserves_types() -> None:
    msg = decode(encode(AppendEntries("n1", "n2", 3, 0, 0, _entries(2), 1, 1)))
    assert isinstance(msg, AppendEntries)
    assert type(msg.entries) is tuple
    assert all(type(e) is Entry and type(e.data) is bytes for e in msg.entries)
    snap = decode(encode(InstallSnapshot("a", "b", 1, SnapshotMeta(1, 1, ("a", "b")), 0, b"", True)))
    assert isinstance(snap, InstallSnapshot)
    assert type(snap.meta) is SnapshotMeta
    assert type(snap.meta.members) is tuple


def test_int_enum_values_encode_as_plain_ints() -> None:
    msg = ClientRequest("c", "n1", 1, RequestKind.READ, b"")
    assert decode(encode(msg)) == msg
    assert encode(msg) == encode(ClientRequest("c", "n1", 1, 1, b""))


def test_decode_accepts_bytearray_and_memoryview() -> None:
    msg = EXAMPLES[0]
    frame = encode(msg)
    assert decode(bytearray(frame)) == msg
    assert decode(memoryview(frame)) == msg


def test_max_entries_per_message_round_trips() -> None:
    entries = tuple(Entry(1, i, 0, b"") for i in range(MAX_ENTRIES_PER_MESSAGE))
    msg = AppendEntries("n1", "n2", 1, 0, 0, entries, 0, 0)
    assert decode(encode(msg)) == msg


def test_max_members_round_trips() -> None:
    members = tuple(f"node-{i}" for i in range(MAX_MEMBERS))
    msg = InstallSnapshot("n1", "n2", 1, SnapshotMeta(1, 1, members), 0, b"", True)
    assert decode(encode(msg)) == msg


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        encode(Entry(1, 1, 0, b""))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode(HardState(1, None, 0))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode(object())  # type: ignore[arg-type]


# --- the pinned wire format -------------------------------------------------------------------------


def test_tag_table_is_stable() -> None:
    # These numbers are the wire format. Never change or reuse one; add new classes with new numbers.
    assert {cls.__name__: tag for cls, tag in TAGS.items()} == {
        "RequestVote": 1,
        "RequestVoteResponse": 2,
        "AppendEntries": 3,
        "AppendEntriesResponse": 4,
        "InstallSnapshot": 5,
        "InstallSnapshotResponse": 6,
        "TimeoutNow": 7,
        "ClientRequest": 8,
        "ClientResponse": 9,
    }
    assert TAGS[RequestVote] == 1
    assert TAGS[ClientResponse] == 9
    assert PROTOCOL_VERSION == 1


def test_every_wire_message_class_has_a_tag() -> None:
    union = typing.get_args(Message)
    assert union, "Message should be a union of the wire classes"
    assert set(TAGS) == set(union)
    assert set(TAGS) == set(PEER_MESSAGE_TYPES) | {ClientRequest, ClientResponse}
    assert isinstance(Message, types.UnionType)


def test_golden_frames() -> None:
    # [1, 7, "a", "b", 3]
    assert encode(TimeoutNow("a", "b", 3)) == bytes.fromhex("95 01 07 a1 61 a1 62 03")
    # [1, 3, "a", "b", term, prev_index, prev_term, [[2, 5, 0, b"hi"]], leader_commit, read_round]
    ae = AppendEntries("a", "b", 2, 4, 1, (Entry(2, 5, 0, b"hi"),), 4, 0)
    assert encode(ae) == bytes.fromhex("9a 01 03 a1 61 a1 62 02 04 01 91 94 02 05 00 c4 02 68 69 04 00")
    # [1, 5, "a", "b", term, [index, term, ["a"], config], offset, data, done]
    snap = InstallSnapshot("a", "b", 2, SnapshotMeta(9, 1, ("a",)), 0, b"", True)
    assert encode(snap) == bytes.fromhex("99 01 05 a1 61 a1 62 02 94 09 01 91 a1 61 c4 00 00 c4 00 c3")


def test_fields_are_in_dataclass_order() -> None:
    msg = AppendEntriesResponse("s", "d", 1, True, 2, 3, 4, 5)
    assert _raw(msg) == [PROTOCOL_VERSION, TAGS[AppendEntriesResponse], "s", "d", 1, True, 2, 3, 4, 5]
    req = ClientRequest("c", "n", 7, int(RequestKind.STATUS), b"p")
    assert _raw(req) == [PROTOCOL_VERSION, TAGS[ClientRequest], "c", "n", 7, 3, b"p"]


# --- rejection --------------------------------------------------------------------------------------


def test_empty_frame() -> None:
    with pytest.raises(DecodeError, match="empty"):
        decode(b"")


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",  # never-used msgpack byte
        b"\x00",  # a bare int
        b"\xc0",  # nil
        b"\xa3abc",  # a str
        b"\x90",  # empty array
        b"\x91\x01",  # [1]: no tag
        b"\x80",  # empty map
        b"\x81\xa1a\x01",  # a map
        b"\x81\x01\x02",  # a map with an int key
        b"\xd4\x01\x00",  # fixext
        b"\xd6\xff\x00\x00\x00\x00",  # timestamp ext
        b"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # a float
        b"\x92\x01\xa1\xff",  # invalid UTF-8 in a str
        b"\x91" * 100_000,  # deep nesting
        b"\xdd\xff\xff\xff\xff",  # claims an array of 4G items
        b"\xdf\xff\xff\xff\xff",  # claims a map of 4G pairs
        b"\xc6\xff\xff\xff\xff",  # claims 4 GiB of bin
        b"\xdb\xff\xff\xff\xff",  # claims 4 GiB of str
        b"\xc9\xff\xff\xff\xff\x01",  # claims 4 GiB of ext
        bytes(range(256)),
        b"\xff" * 64,
        b"hello world",
    ],
)
def test_garbage(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(frame)


@pytest.mark.parametrize("msg", EXAMPLES[:8] + EXAMPLES[9:12] + EXAMPLES[14:], ids=lambda m: type(m).__name__)
def test_every_prefix_is_rejected(msg: Message) -> None:
    frame = encode(msg)
    for end in range(len(frame)):
        with pytest.raises(DecodeError):
            decode(frame[:end])


def test_prefixes_of_large_frame_are_rejected() -> None:
    frame = encode(AppendEntries("n1", "n2", 3, 0, 0, _entries(50, size=100), 0, 0))
    for end in range(0, len(frame), 7):
        with pytest.raises(DecodeError):
            decode(frame[:end])


def test_trailing_bytes() -> None:
    frame = encode(EXAMPLES[0])
    with pytest.raises(DecodeError, match="ExtraData"):
        decode(frame + b"\x00")
    with pytest.raises(DecodeError):
        decode(frame + frame)


@pytest.mark.parametrize("version", [0, 2, 255, -1, 2**64 - 1, True, "1", b"\x01", None, 1.0, [1]])
def test_wrong_version(version: Any) -> None:
    raw = _raw(EXAMPLES[0])
    raw[0] = version
    with pytest.raises(DecodeError, match="protocol version"):
        decode(_pack(raw))


@pytest.mark.parametrize("tag", [0, 10, 99, 255, 2**63, -1, True, "1", b"\x01", None, 1.5, [1]])
def test_unknown_tag(tag: Any) -> None:
    raw = _raw(EXAMPLES[0])
    raw[1] = tag
    with pytest.raises(DecodeError, match="unknown message tag"):
        decode(_pack(raw))


@pytest.mark.parametrize("msg", EXAMPLES, ids=_ids(EXAMPLES))
def test_wrong_field_count(msg: Message) -> None:
    raw = _raw(msg)
    with pytest.raises(DecodeError, match="expected .* fields"):
        decode(_pack(raw[:-1]))
    with pytest.raises(DecodeError, match="expected .* fields"):
        decode(_pack([*raw, 0]))
    with pytest.raises(DecodeError, match="expected .* fields"):
        decode(_pack(raw[:2]))


BAD_U63 = [True, False, -1, 2**63, 2**64 - 1, -(2**63), 1.0, "1", b"1", None, [1]]
BAD_BOOL = [0, 1, None, "true", b"", 1.0, [True]]
BAD_NODE = [b"n1", 1, None, True, ["n1"], "x" * (MAX_NODE_ID_CHARS + 1)]
BAD_BYTES = ["text", 1, None, True, [b"x"]]
BAD_VALUES_BY_TYPE: dict[type, list[Any]] = {int: BAD_U63, bool: BAD_BOOL, str: BAD_NODE, bytes: BAD_BYTES}


def _bad_field_cases() -> list[tuple[Message, int, Any]]:
    """One case per (example message, scalar field, bad value of that field's kind)."""
    cases = []
    seen: set[type] = set()
    for msg in EXAMPLES:
        if type(msg) in seen:
            continue
        seen.add(type(msg))
        raw = _raw(msg)
        for pos in range(2, len(raw)):
            for bad in BAD_VALUES_BY_TYPE.get(type(raw[pos]), []):
                cases.append((msg, pos, bad))
    return cases


@pytest.mark.parametrize(("msg", "pos", "bad"), _bad_field_cases())
def test_wrong_field_type_or_range(msg: Message, pos: int, bad: Any) -> None:
    raw = _raw(msg)
    raw[pos] = bad
    with pytest.raises(DecodeError, match=rf"^{type(msg).__name__}\.\w+: "):
        decode(_pack(raw))


def test_error_names_the_field() -> None:
    raw = _raw(RequestVote("n1", "n2", 5, 10, 4, False, False))
    raw[4] = True
    with pytest.raises(DecodeError, match=r"^RequestVote\.term: expected int, got bool$"):
        decode(_pack(raw))
    raw[4] = -1
    with pytest.raises(DecodeError, match=r"^RequestVote\.term: int -1 out of range"):
        decode(_pack(raw))
    raw[4] = 5
    raw[7] = 1
    with pytest.raises(DecodeError, match=r"^RequestVote\.pre_vote: expected bool, got int$"):
        decode(_pack(raw))


@pytest.mark.parametrize("kind", [-1, len(RequestKind), 99, True, None])
def test_unknown_request_kind(kind: Any) -> None:
    raw = _raw(ClientRequest("c", "n1", 1, 0, b""))
    raw[5] = kind
    with pytest.raises(DecodeError, match=r"^ClientRequest\.kind: "):
        decode(_pack(raw))


@pytest.mark.parametrize("status", [-1, len(Status), 99, False, "OK"])
def test_unknown_status(status: Any) -> None:
    raw = _raw(ClientResponse("n1", "c", 1, 0, b"", ""))
    raw[5] = status
    with pytest.raises(DecodeError, match=r"^ClientResponse\.status: "):
        decode(_pack(raw))


GOOD_ENTRY = [3, 8, 0, b"data"]


@pytest.mark.parametrize(
    "bad_entry",
    [
        [3, 8, 0],  # too few fields
        [3, 8, 0, b"data", 1],  # too many
        [True, 8, 0, b"data"],
        [3, -1, 0, b"data"],
        [3, 2**63, 0, b"data"],
        [3, 8, 3, b"data"],  # unknown entry kind
        [3, 8, -1, b"data"],
        [3, 8, True, b"data"],  # bool is not a kind even though True == 1
        [3, 8, 0, "data"],  # str where bytes
        [3, 8, 0, None],
        [3, 8, 0, [b"data"]],
        7,
        None,
        b"\x94\x03\x08\x00\xc4\x00",  # an encoded entry as bytes is not an entry
    ],
)
def test_bad_entry_inside_append_entries(bad_entry: Any) -> None:
    raw = _raw(AppendEntries("n1", "n2", 3, 7, 2, (), 7, 1))
    raw[7] = [GOOD_ENTRY, GOOD_ENTRY, bad_entry]
    with pytest.raises(DecodeError, match=r"^AppendEntries\.entries\[2\][.:]"):
        decode(_pack(raw))


def test_entry_error_names_the_field() -> None:
    raw = _raw(AppendEntries("n1", "n2", 3, 7, 2, (), 7, 1))
    raw[7] = [GOOD_ENTRY, [3, -1, 0, b""]]
    with pytest.raises(DecodeError, match=r"^AppendEntries\.entries\[1\]\.index: int -1 out of range"):
        decode(_pack(raw))
    raw[7] = [GOOD_ENTRY, [3, 9, 5, b""]]
    with pytest.raises(DecodeError, match=r"^AppendEntries\.entries\[1\]\.kind: unknown entry kind 5$"):
        decode(_pack(raw))


def test_entries_must_be_an_array() -> None:
    raw = _raw(AppendEntries("n1", "n2", 3, 7, 2, (), 7, 1))
    for bad in [None, b"", 0, GOOD_ENTRY[3]]:
        raw[7] = bad
        with pytest.raises(DecodeError, match=r"^AppendEntries\.entries: expected array"):
            decode(_pack(raw))


def test_too_many_entries() -> None:
    raw = _raw(AppendEntries("n1", "n2", 1, 0, 0, (), 0, 0))
    raw[7] = [[1, i, 0, b""] for i in range(MAX_ENTRIES_PER_MESSAGE + 1)]
    with pytest.raises(DecodeError):
        decode(_pack(raw))


@pytest.mark.parametrize(
    "bad_meta",
    [
        [1, 1],
        [1, 1, [], 0],
        [-1, 1, []],
        [1, True, []],
        [1, 2**63, []],
        [1, 1, None],
        [1, 1, "n1"],
        [1, 1, ["n1", b"n2"]],
        [1, 1, ["n1", "x" * (MAX_NODE_ID_CHARS + 1)]],
        [1, 1, ["n1", None]],
        [1, 1, [f"n{i}" for i in range(MAX_MEMBERS + 1)]],
        None,
        7,
        b"meta",
    ],
)
def test_bad_snapshot_meta(bad_meta: Any) -> None:
    raw = _raw(InstallSnapshot("n1", "n2", 1, SnapshotMeta(1, 1, ("n1",)), 0, b"", True))
    raw[5] = bad_meta
    with pytest.raises(DecodeError, match=r"^InstallSnapshot\.meta"):
        decode(_pack(raw))


def test_oversized_frame() -> None:
    frame = b"\xc6" + (MAX_FRAME_BYTES).to_bytes(4, "big") + b"\x00" * MAX_FRAME_BYTES
    assert len(frame) > MAX_FRAME_BYTES
    with pytest.raises(DecodeError, match="exceeds"):
        decode(frame)


def test_max_bytes_parameter() -> None:
    frame = encode(EXAMPLES[6])
    assert decode(frame, max_bytes=len(frame)) == EXAMPLES[6]
    with pytest.raises(DecodeError, match=f"{len(frame)} bytes exceeds the {len(frame) - 1}-byte limit"):
        decode(frame, max_bytes=len(frame) - 1)
    big = encode(EXAMPLES[8])  # about 3 MiB of entries
    with pytest.raises(DecodeError, match="exceeds"):
        decode(big, max_bytes=1 << 20)


@pytest.mark.parametrize("frame", ["a string", None, 42, [1, 2], object()])
def test_non_bytes_input(frame: Any) -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        decode(frame)


def test_float_where_int() -> None:
    raw = _raw(TimeoutNow("a", "b", 3))
    raw[4] = 3.0
    with pytest.raises(DecodeError, match=r"TimeoutNow\.term: expected int, got float"):
        decode(_pack(raw))


# --- entries for the WAL ----------------------------------------------------------------------------


# --- property tests ---------------------------------------------------------------------------------

u63 = st.integers(min_value=0, max_value=U63_MAX)
node_ids = st.text(max_size=MAX_NODE_ID_CHARS)
small_ids = st.text(max_size=12)
payloads = st.binary(max_size=512)
entries_st = st.builds(Entry, u63, u63, st.sampled_from([int(k) for k in EntryKind]), payloads)
metas = st.builds(SnapshotMeta, u63, u63, st.lists(small_ids, max_size=7).map(tuple))

MESSAGE_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    RequestVote: st.builds(RequestVote, node_ids, node_ids, u63, u63, u63, st.booleans(), st.booleans()),
    RequestVoteResponse: st.builds(
        RequestVoteResponse, node_ids, node_ids, u63, st.booleans(), st.booleans()
    ),
    AppendEntries: st.builds(
        AppendEntries,
        small_ids,
        small_ids,
        u63,
        u63,
        u63,
        st.lists(entries_st, max_size=20).map(tuple),
        u63,
        u63,
    ),
    AppendEntriesResponse: st.builds(
        AppendEntriesResponse, node_ids, node_ids, u63, st.booleans(), u63, u63, u63, u63
    ),
    InstallSnapshot: st.builds(
        InstallSnapshot, small_ids, small_ids, u63, metas, u63, payloads, st.booleans()
    ),
    InstallSnapshotResponse: st.builds(
        InstallSnapshotResponse, node_ids, node_ids, u63, u63, u63, st.booleans()
    ),
    TimeoutNow: st.builds(TimeoutNow, node_ids, node_ids, u63),
    ClientRequest: st.builds(
        ClientRequest, small_ids, small_ids, u63, st.sampled_from([int(k) for k in RequestKind]), payloads
    ),
    ClientResponse: st.builds(
        ClientResponse,
        small_ids,
        small_ids,
        u63,
        st.sampled_from([int(s) for s in Status]),
        payloads,
        node_ids,
    ),
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())

# Arbitrary msgpack-encodable values, including the near misses (bools, negatives, big ints, floats).
msgpack_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, 1, 2, 3, 9, 10, -1, U63_MAX, 2**63]),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


def test_strategies_cover_every_message_type() -> None:
    assert set(MESSAGE_STRATEGIES) == set(TAGS)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip_property(msg: Message) -> None:
    frame = encode(msg)
    assert decode(frame) == msg
    assert encode(decode(frame)) == frame


@pytest.mark.parametrize("cls", list(MESSAGE_STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_round_trip_property_per_type(cls: type, data: st.DataObject) -> None:
    msg = data.draw(MESSAGE_STRATEGIES[cls])
    assert decode(encode(msg)) == msg


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(frame: bytes) -> None:
    _check_decode(frame)


@settings(max_examples=500, deadline=None)
@given(msgpack_values)
def test_fuzz_arbitrary_msgpack_objects(obj: Any) -> None:
    _check_decode(_pack(obj))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 0, 2]),
    st.integers(min_value=-1, max_value=11),
    st.lists(msgpack_values, max_size=10),
)
def test_fuzz_message_shaped_arrays(version: int, tag: int, fields: list[Any]) -> None:
    _check_decode(_pack([version, tag, *fields]))
    _check_decode_frame(_pack([version, tag, *fields]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(BATCH_TAGS.values())),
    st.sampled_from(["c", "", 7, None]),
    st.lists(st.lists(msgpack_values, max_size=5) | msgpack_values, max_size=4),
)
def test_fuzz_batch_shaped_arrays(tag: int, src: Any, items: list[Any]) -> None:
    _check_decode_frame(_pack([PROTOCOL_VERSION, tag, src, "n1", items]))


@settings(max_examples=300, deadline=None)
@given(st.lists(MESSAGE_STRATEGIES[ClientResponse], min_size=1, max_size=8), st.data())
def test_fuzz_batch_item_field_replaced(responses: list[ClientResponse], data: st.DataObject) -> None:
    items = [list(_raw(r)[4:]) for r in responses]
    which = data.draw(st.integers(min_value=0, max_value=len(items) - 1))
    pos = data.draw(st.integers(min_value=0, max_value=3))
    items[which][pos] = data.draw(msgpack_values)
    _check_decode_frame(_pack([PROTOCOL_VERSION, BATCH_TAGS[ClientResponse], "n1", "c", items]))


@settings(max_examples=1000, deadline=None)
@given(messages, st.data())
def test_fuzz_one_field_replaced(msg: Message, data: st.DataObject) -> None:
    raw = _raw(msg)
    pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[pos] = data.draw(msgpack_values)
    _check_decode(_pack(raw))
    _check_decode_frame(_pack(raw))


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_fuzz_entry_field_replaced(data: st.DataObject) -> None:
    entries = data.draw(st.lists(entries_st, min_size=1, max_size=5))
    raw = _raw(AppendEntries("n1", "n2", 1, 0, 0, tuple(entries), 0, 0))
    which = data.draw(st.integers(min_value=0, max_value=len(entries) - 1))
    pos = data.draw(st.integers(min_value=0, max_value=3))
    raw[7][which][pos] = data.draw(msgpack_values)
    _check_decode(_pack(raw))


@settings(max_examples=1000, deadline=None)
@given(messages, st.data())
def test_fuzz_corrupted_bytes(msg: Message, data: st.DataObject) -> None:
    frame = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        pos = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
        frame[pos] = data.draw(st.integers(min_value=0, max_value=255))
    _check_decode(bytes(frame))


# --- batch frames -------------------------------------------------------------------------------------


def _requests(count: int, src: str = "cli-1", dst: str = "n1") -> list[ClientRequest]:
    return [
        ClientRequest(src, dst, i, int(RequestKind.WRITE), bytes([i % 256]) * 3) for i in range(1, count + 1)
    ]


def test_batch_tags_are_stable_and_distinct_from_message_tags() -> None:
    assert {ClientRequest: 10, ClientResponse: 11} == BATCH_TAGS
    assert not set(BATCH_TAGS.values()) & set(TAGS.values())


def test_batch_golden_frame() -> None:
    responses = [
        ClientResponse("n1", "c", 1, Status.OK, b"a", ""),
        ClientResponse("n1", "c", 2, 0, b"", "n2"),
    ]
    frame = encode_batch(responses)
    assert frame == _pack([1, 11, "n1", "c", [[1, 0, b"a", ""], [2, 0, b"", "n2"]]])
    assert decode_frame(frame) == responses


@pytest.mark.parametrize("count", [2, 3, 100, MAX_BATCH_ITEMS])
def test_batch_round_trip_keeps_order(count: int) -> None:
    reqs = _requests(count)
    assert decode_frame(encode_batch(reqs)) == reqs


def test_a_batch_of_one_is_the_plain_frame() -> None:
    req = _requests(1)[0]
    assert encode_batch([req]) == encode(req)
    assert decode_frame(encode(req)) == [req]


@settings(max_examples=200, deadline=None)
@given(st.lists(MESSAGE_STRATEGIES[ClientRequest], min_size=1, max_size=10))
def test_batch_round_trip_property(reqs: list[ClientRequest]) -> None:
    same = [ClientRequest("c", "n1", r.req_id, r.kind, r.payload) for r in reqs]
    assert decode_frame(encode_batch(same)) == same


def test_encode_batch_refuses_what_cannot_be_one_batch() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_batch([])
    with pytest.raises(ValueError, match="one src to one dst"):
        encode_batch([*_requests(2), *_requests(1, dst="n2")])
    with pytest.raises(ValueError, match="one src to one dst"):
        encode_batch([*_requests(2), *_requests(1, src="other")])
    with pytest.raises(ValueError, match="one class"):
        encode_batch([_requests(1)[0], ClientResponse("cli-1", "n1", 1, 0, b"", "")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="exceeds"):
        encode_batch(_requests(MAX_BATCH_ITEMS + 1))
    with pytest.raises(TypeError, match="cannot be batched"):
        encode_batch([TimeoutNow("a", "b", 1), TimeoutNow("a", "b", 1)])  # type: ignore[list-item]


def test_plain_decode_refuses_a_batch_frame() -> None:
    with pytest.raises(DecodeError, match="unknown message tag 10"):
        decode(encode_batch(_requests(2)))


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ([], "0 items"),
        ("x", "expected an array of items"),
        ([[1, 2, b"p"], 5], "batch item 1: expected an array"),
        ([[1, 2, b"p"], [2, 99, b"p"]], "batch item 1: ClientRequest.kind: unknown request kind 99"),
        ([[1, 2, b"p"], [-1, 2, b"p"]], "batch item 1: ClientRequest.req_id"),
        ([[1, 2]], "batch item 0: ClientRequest: expected 5 fields, got 4"),
    ],
)
def test_bad_batches_are_refused_with_a_reason(items: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_frame(_pack([PROTOCOL_VERSION, BATCH_TAGS[ClientRequest], "c", "n1", items]))


def test_batch_with_too_many_items_or_bad_shape_is_refused() -> None:
    too_many = [[i, 2, b""] for i in range(MAX_BATCH_ITEMS + 1)]
    with pytest.raises(DecodeError, match="items, expected 1.."):
        decode_frame(_pack([PROTOCOL_VERSION, BATCH_TAGS[ClientRequest], "c", "n1", too_many]))
    with pytest.raises(DecodeError, match="expected \\[version, tag, src, dst, items\\]"):
        decode_frame(_pack([PROTOCOL_VERSION, BATCH_TAGS[ClientRequest], "c", "n1", [[1, 2, b""]], 0]))
    with pytest.raises(DecodeError, match="ClientRequest.src"):
        decode_frame(_pack([PROTOCOL_VERSION, BATCH_TAGS[ClientRequest], 5, "n1", [[1, 2, b""]]]))
