"""Hypothesis strategies for the fuzz targets: wire messages of every kind (field values near and far from
valid), KV commands and queries, WAL segments and snapshots, and byte mutations of valid encodings.

The generated values aim at the code behind the first validation layer: mostly well-formed shapes with
hostile numbers and strings, some garbage, and valid encodings with a few bytes changed.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from actors.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ClientRequest,
    ClientResponse,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestKind,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)
from cluster.kv.ops import pack
from cluster.kv.snapshot import encode_snapshot
from cluster.storage.records import (
    RecordType,
    append_entries,
    encode_record,
    hard_state_payload,
    snapshot_mark_payload,
    sync_payload,
    truncate_payload,
)
from transport.codec import encode, encode_batch

MEMBERS = ("n1", "n2", "n3")
U63 = 2**63 - 1

small = st.integers(0, 12)
u63 = st.one_of(small, st.integers(0, U63), st.sampled_from([U63, 2**32, 2**31 - 1]))
any_int = st.one_of(u63, st.integers(-(2**63), 2**64 - 1))  # what msgpack can carry
node_id = st.one_of(st.sampled_from([*MEMBERS, "", "x", "n1-advertise"]), st.text(max_size=6))
keys = st.one_of(
    st.sampled_from(["a", "b", "svc/a", "__zraft/members/n1", "", "a" * 600]), st.text(min_size=1, max_size=8)
)
scalars = st.one_of(
    st.none(), st.booleans(), any_int, st.floats(), st.text(max_size=8), st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
WRITE_OPS = ["put", "del", "del_prefix", "cas", "cas_del", "lease_grant", "lease_revoke", "put_lease",
             "lease_checkpoint"]  # fmt: skip
QUERY_OPS = ["get", "range", "lease_keepalive", "lease_info", "lease_list"]


def _op(names: list[str]) -> st.SearchStrategy[list[Any]]:
    name = st.one_of(st.sampled_from(names), st.text(max_size=6))
    args = st.lists(
        st.one_of(keys, values, any_int, st.lists(st.lists(any_int, max_size=3), max_size=3)), max_size=4
    )
    return st.builds(lambda n, a: [n, *a], name, args)


commands = st.builds(lambda s, q, f, op: pack([s, q, f, op]), any_int, any_int, any_int, _op(WRITE_OPS))
queries = _op(QUERY_OPS).map(pack)
payloads = st.one_of(commands, queries, st.binary(max_size=40), values.map(pack))


def entries(data: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[tuple[Entry, ...]]:
    payload = data if data is not None else st.one_of(commands, st.binary(max_size=16))
    entry = st.builds(Entry, small, small, st.integers(0, 2), payload)
    return st.lists(entry, max_size=4).map(tuple)


metas = st.builds(SnapshotMeta, u63, u63, st.lists(node_id, max_size=4).map(tuple))
snapshot_chunks = st.one_of(st.binary(max_size=64), st.just(b""))

peer_messages = st.one_of(
    st.builds(RequestVote, node_id, node_id, u63, u63, u63, st.booleans(), st.booleans()),
    st.builds(RequestVoteResponse, node_id, node_id, u63, st.booleans(), st.booleans()),
    st.builds(AppendEntries, node_id, node_id, u63, small, small, entries(), u63, u63),
    st.builds(AppendEntriesResponse, node_id, node_id, u63, st.booleans(), u63, u63, u63, u63),
    st.builds(InstallSnapshot, node_id, node_id, u63, metas, u63, snapshot_chunks, st.booleans()),
    st.builds(InstallSnapshotResponse, node_id, node_id, u63, u63, u63, st.booleans()),
    st.builds(TimeoutNow, node_id, node_id, u63),
)
request_kinds = st.one_of(st.sampled_from([int(k) for k in RequestKind]), st.integers(0, 30))
client_requests = st.builds(ClientRequest, node_id, node_id, u63, request_kinds, payloads)


def mutate(data: bytes) -> st.SearchStrategy[bytes]:
    """`data` with a few bytes flipped, inserted, deleted, or cut off."""

    def apply(edits: list[tuple[int, int, int]]) -> bytes:
        buf = bytearray(data)
        for kind, pos, byte in edits:
            if not buf:
                buf.append(byte)
                continue
            at = pos % len(buf)
            if kind == 0:
                buf[at] ^= byte or 1
            elif kind == 1:
                buf.insert(at, byte)
            elif kind == 2:
                del buf[at]
            else:
                del buf[at:]
        return bytes(buf)

    edit = st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255))
    return st.lists(edit, min_size=1, max_size=4).map(apply)


frames_of_messages = st.one_of(
    peer_messages.map(encode),
    client_requests.map(encode),
    st.lists(client_requests, min_size=1, max_size=4).map(
        lambda reqs: encode_batch([ClientRequest("c", "n1", r.req_id, r.kind, r.payload) for r in reqs])
    ),
)
advertise_answers = st.builds(
    lambda dst, req_id, status, result: encode(ClientResponse("n2", dst, req_id, status, result, "")),
    st.sampled_from(["n1/advertise", "n1", "x"]),
    u63,
    st.integers(0, 12),
    st.binary(max_size=16),
)
hostile_frames = st.one_of(
    st.binary(max_size=80), frames_of_messages, frames_of_messages.flatmap(mutate), values.map(pack)
)


# --- WAL segments ---------------------------------------------------------------------------------------


def _record(kind: int, a: int, b: int, items: tuple[Entry, ...]) -> bytes:
    if kind == 0:
        buf = bytearray()
        append_entries(buf, items)
        return bytes(buf)
    if kind == 1:
        return encode_record(
            RecordType.HARD_STATE, hard_state_payload(HardState(a, "n1" if b % 2 else None, b))
        )
    if kind == 2:
        return encode_record(RecordType.TRUNCATE, truncate_payload(a))
    if kind == 3:
        return encode_record(RecordType.SNAPSHOT_MARK, snapshot_mark_payload(a, b))
    return encode_record(RecordType.SYNC, sync_payload(a))


# the WAL reader never looks inside an entry's data: plain bytes keep the generation cheap
wal_records = st.builds(_record, st.integers(0, 4), small, small, entries(st.binary(max_size=12)))
wal_segments = st.one_of(
    st.lists(wal_records, max_size=6).map(b"".join),
    st.lists(wal_records, min_size=1, max_size=6).map(b"".join).flatmap(mutate),
    st.binary(max_size=120),
)


# --- snapshots ------------------------------------------------------------------------------------------


def _snapshot(revision: int, items: dict[str, Any], sessions: list[Any], leases: list[Any]) -> bytes:
    keys_sorted = sorted(items)
    records = {k: (v, 1, max(1, revision), 1) for k, v in items.items()}
    return encode_snapshot(0, 0, max(1, revision), keys_sorted, records, sessions, leases)


snapshot_bytes = st.one_of(
    st.builds(
        _snapshot,
        small,
        st.dictionaries(keys, values, max_size=4),
        st.lists(st.lists(any_int, max_size=4), max_size=3),
        st.one_of(st.just([1, 0, []]), st.lists(any_int, max_size=3)),
    ),
    st.builds(
        _snapshot, small, st.dictionaries(keys, values, max_size=3), st.just([]), st.just([1, 0, []])
    ).flatmap(mutate),
    st.lists(st.one_of(any_int, values), max_size=9).map(pack),
    st.binary(max_size=64),
)
