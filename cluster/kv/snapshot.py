"""The snapshot encoding of the KV state: one msgpack array, written at once or a slice at a time.

    [SNAPSHOT_FORMAT, applied_index, applied_count, revision, [key, ...], [record, ...], sessions, leases]

Keys are sorted and unique, a record is [value, create_revision, mod_revision, version], and sessions are
in the form cluster/kv/sessions.py gives, leases in the form cluster/kv/leases.py gives. Older formats are
still read: format 1 (before leases: no leases field) and format 2 (before registered sessions: sessions
as [id, floor, last_index, responses], taken as registered at the snapshot's log time with the default
TTL, cluster/kv/sessions.py decode_legacy_sessions). Any other format is refused with its number.
A snapshot is untrusted bytes (it may come from a peer):
`decode_snapshot` validates every field before anything is replaced (DESIGN.md rule 7).
"""

from __future__ import annotations

import io
from typing import Any

from cluster.kv.keyspace import Record
from cluster.kv.leases import Lease, decode_leases
from cluster.kv.ops import Invalid, check_key, check_uint, check_value_shape, is_int, pack, unpack
from cluster.kv.sessions import Session, decode_legacy_sessions, decode_sessions
from transport.codec import msgpack_array_header

SNAPSHOT_FORMAT = 3
SNAPSHOT_STEP_KEYS = 4096  # keys (or records) encoded per SnapshotJob.step(): about a millisecond


def _packed_items(items: list[Any]) -> bytes:
    """The msgpack encodings of `items`, back to back: an array of them without its header."""
    return pack(items)[len(msgpack_array_header(len(items))) :]


class SnapshotJob:
    """A point-in-time snapshot, encoded in slices so that no single step pauses the node for long.

    The bytes are exactly what snapshot() gave at the moment the job was made: a msgpack array is its
    header followed by its items, so the keys and records are packed a slice at a time and appended. They
    go into one growing buffer whose bytes are handed out at the end without a copy (io.BytesIO), so the
    encoding never holds the snapshot twice (slices plus their join would, at 1M keys ~120 MB more).
    """

    def __init__(
        self, head: bytes, keys: list[str], records: dict[str, Record], sessions: bytes, budget: int
    ) -> None:
        count = len(keys)
        self._budget = budget
        self._keys = keys
        self._records = records
        self._out = io.BytesIO()
        self._out.write(b"\x98" + head + msgpack_array_header(count))
        self._sessions = sessions
        self._next = 0  # position in keys, then in keys again (offset by count) for the records
        self._count = count

    @property
    def done(self) -> bool:
        return self._next >= 2 * self._count

    def step(self) -> bytes | None:
        """Encode the next slice of keys or records; the snapshot's bytes once all are, else None."""
        count, pos, budget, out = self._count, self._next, self._budget, self._out
        if pos < count:
            end = min(count, pos + budget)
            out.write(_packed_items(self._keys[pos:end]))
            if end == count:
                out.write(msgpack_array_header(count))
            self._next = end
        elif pos < 2 * count:
            end = min(2 * count, pos + budget)
            records = self._records
            out.write(_packed_items([records[k] for k in self._keys[pos - count : end - count]]))
            self._next = end
        if self._next < 2 * count:
            return None
        if not count:
            out.write(msgpack_array_header(0))
        out.write(self._sessions)
        data = out.getvalue()
        self._out = io.BytesIO()
        self._keys, self._records = [], {}  # the job's point-in-time view is no longer needed
        self._next = 2 * count + 1  # finished: a further step() is a mistake
        return data


def snapshot_job(
    applied_index: int,
    applied_count: int,
    revision: int,
    keys: list[str],
    records: dict[str, Record],
    sessions: list[Any],
    budget: int,
    leases: list[Any],
) -> SnapshotJob:
    """A job for the snapshot of this state; `keys` and `records` must not change while it runs."""
    head = pack(SNAPSHOT_FORMAT) + pack(applied_index) + pack(applied_count) + pack(revision)
    return SnapshotJob(head, keys, records, pack(sessions) + pack(leases), budget)


def decode_snapshot(
    data: bytes,
) -> tuple[int, int, int, list[str], list[Record], dict[int, Session], tuple[int, int, dict[int, Lease]]]:
    """Decode and fully validate a snapshot; raises Invalid."""
    try:
        obj = unpack(data)
    except Exception:
        raise Invalid("not a single valid msgpack object") from None
    if type(obj) is not list or not obj or not is_int(obj[0]):
        raise Invalid("not a KV snapshot")
    if obj[0] not in (1, 2, SNAPSHOT_FORMAT):
        raise Invalid(f"unsupported snapshot format {obj[0]} (this build reads 1 to {SNAPSHOT_FORMAT})")
    if len(obj) != (7 if obj[0] == 1 else 8):
        raise Invalid("wrong number of fields")
    if obj[0] == 1:
        obj.append([1, 0, []])  # before leases: none
    _, applied_index, applied_count, revision, keys, raw_records, raw_sessions, raw_leases = obj
    check_uint(applied_index, "applied_index")
    check_uint(applied_count, "applied_count")
    check_uint(revision, "revision")
    if type(keys) is not list or type(raw_records) is not list or len(keys) != len(raw_records):
        raise Invalid("keys and records must be lists of equal length")
    records: list[Record] = []
    previous: str | None = None
    for key, raw in zip(keys, raw_records, strict=True):
        check_key(key)
        if previous is not None and key <= previous:
            raise Invalid("keys are not strictly increasing")
        previous = key
        if type(raw) is not list or len(raw) != 4:
            raise Invalid(f"record of key {key[:64]!r} is malformed")
        value, create, mod, version = raw
        check_value_shape(value)
        if not (
            is_int(create)
            and is_int(mod)
            and is_int(version)
            and 1 <= create <= mod <= revision
            and version >= 1
        ):
            raise Invalid(f"record of key {key[:64]!r} has bad revisions")
        records.append((value, create, mod, version))
    leases = decode_leases(raw_leases, set(keys))
    if obj[0] < 3:
        sessions = decode_legacy_sessions(raw_sessions, leases[1])
    else:
        sessions = decode_sessions(raw_sessions)
    return applied_index, applied_count, revision, keys, records, sessions, leases


def encode_snapshot(
    applied_index: int,
    applied_count: int,
    revision: int,
    keys: list[str],
    records: dict[str, Record],
    sessions: list[Any],
    leases: list[Any],
) -> bytes:
    """The whole snapshot at once (the bytes a SnapshotJob of the same state gives)."""
    body = _body(revision, keys, records, sessions, leases)
    return pack([SNAPSHOT_FORMAT, applied_index, applied_count, *body])


def state_digest(
    revision: int, keys: list[str], records: dict[str, Record], sessions: list[Any], leases: list[Any]
) -> bytes:
    """The snapshot's encoding without the apply position: what replicas with equal data share."""
    return pack([SNAPSHOT_FORMAT, *_body(revision, keys, records, sessions, leases)])


def _body(
    revision: int, keys: list[str], records: dict[str, Record], sessions: list[Any], leases: list[Any]
) -> list[Any]:
    return [revision, keys, [records[k] for k in keys], sessions, leases]
