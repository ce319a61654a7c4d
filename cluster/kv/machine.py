"""The replicated key-value state machine of one replica: it ties the keyspace, the client sessions and
the snapshot encoding together behind `actors.contracts.StateMachine` (apply/query/snapshot/restore).

    cluster/kv/ops.py        command, query and result formats; validation of untrusted input
    cluster/kv/keyspace.py   keys, records, revisions; what each op does
    cluster/kv/sessions.py   client sessions: exactly-once writes, the cached answers, their bounds
    cluster/kv/snapshot.py   the snapshot encoding, whole or in slices (SnapshotJob), and its validation
    cluster/kv/history.py    the watch history: the latest changes in a bounded ring (not in snapshots)

The names other modules import (encode_command, encode_query, decode_result, the limits, ...) are
re-exported here.

The ops and their results are listed in cluster/kv/ops.py.

DESIGN.md rule 5: apply depends only on the entry and the prior state: no clock, no randomness, no I/O.
Rule 7: commands and snapshots are untrusted bytes and are validated before anything changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from cluster.kv.history import DEFAULT_HISTORY_BYTES, DEFAULT_HISTORY_EVENTS, History
from cluster.kv.keyspace import Keyspace, Record
from cluster.kv.leases import DEFAULT_MAX_LEASES, LeaseTable
from cluster.kv.ops import (
    ALREADY_APPLIED_CODE,
    DEFAULT_RANGE_LIMIT,
    LEASE_NOT_FOUND_CODE,
    LEASE_QUERIES,
    MAX_COMMAND_BYTES,
    MAX_KEY_BYTES,
    MAX_QUERY_BYTES,
    MAX_RANGE_BYTES,
    MAX_RANGE_LIMIT,
    MAX_VALUE_BYTES,
    MAX_VALUE_DEPTH,
    UINT64_MAX,
    Invalid,
    Value,
    decode_result,
    encode_command,
    encode_query,
    error,
    pack,
    parse_query,
    parse_stamped,
    unpack,
)
from cluster.kv.sessions import (
    ALREADY_APPLIED,
    DEFAULT_MAX_RESPONSES_PER_SESSION,
    DEFAULT_MAX_SESSION_BYTES,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SESSION_TTL_MS,
    Session,
    SessionTable,
)
from cluster.kv.snapshot import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_STEP_KEYS,
    SnapshotJob,
    decode_snapshot,
    encode_snapshot,
    snapshot_job,
    state_digest,
)

__all__ = [
    "ALREADY_APPLIED",
    "ALREADY_APPLIED_CODE",
    "DEFAULT_MAX_RESPONSES_PER_SESSION",
    "DEFAULT_MAX_SESSION_BYTES",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_RANGE_LIMIT",
    "DEFAULT_SESSION_TTL_MS",
    "MAX_COMMAND_BYTES",
    "MAX_KEY_BYTES",
    "MAX_QUERY_BYTES",
    "MAX_RANGE_BYTES",
    "MAX_RANGE_LIMIT",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_STEP_KEYS",
    "ApplyOrderError",
    "KVStateMachine",
    "Record",
    "SnapshotJob",
    "Value",
    "decode_result",
    "encode_command",
    "encode_query",
]


# What parse_stamped gives: (session, seq, ack_floor, op, stamp).
Parsed = tuple[int, int, int, list[Any], int | None]
MAX_WATCHED_PREFIXES = 8  # prefixes prefix_changes counts: each costs a startswith per change
# Parsed commands held for apply (KVStateMachine.parsed): the leader's uncommitted entries, and more.
MAX_PARSED = 65536

# Ops whose third element is the leader's log time.
_STAMPED_OPS = frozenset(("lease_grant", "lease_revoke", "lease_checkpoint", "session_open"))


def _lease_not_found(lease_id: int) -> bytes:
    return error(f"lease {lease_id} not found (never granted, revoked, or expired)", LEASE_NOT_FOUND_CODE)


class ApplyOrderError(AssertionError):
    """apply() was called with an index at or below the last applied one: a bug in the caller."""


class KVStateMachine:
    """The KV store of one replica; implements actors.contracts.StateMachine."""

    __slots__ = (
        "_applied_count",
        "_applied_index",
        "_keyspace",
        "_sessions",
        "_snapshot_step",
        "_parsed",
        "_watched_prefixes",
        "history",
        "leases",
    )

    def __init__(
        self,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_responses_per_session: int = DEFAULT_MAX_RESPONSES_PER_SESSION,
        snapshot_step_keys: int = SNAPSHOT_STEP_KEYS,
        max_session_bytes: int = DEFAULT_MAX_SESSION_BYTES,
        history_events: int = DEFAULT_HISTORY_EVENTS,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        max_leases: int = DEFAULT_MAX_LEASES,
    ) -> None:
        """The bounds of the session table are explained in cluster/kv/sessions.py; every replica of a
        cluster must use the same ones, since they decide what apply forgets."""
        bounds = (max_sessions, max_responses_per_session, snapshot_step_keys, max_session_bytes)
        if min(bounds) < 1:
            raise ValueError(
                "max_sessions, max_responses_per_session, snapshot_step_keys and max_session_bytes"
                " must be >= 1"
            )
        self._snapshot_step = snapshot_step_keys
        # The history bounds are this replica's own: no replica's state depends on them.
        self.history = History(history_events, history_bytes)
        self._keyspace = Keyspace(self._changed)
        self._watched_prefixes: dict[str, int] = {}  # prefix -> changes under it (prefix_changes)
        self._sessions = SessionTable(max_sessions, max_responses_per_session, max_session_bytes)
        self._applied_index = 0
        self._applied_count = 0
        self.leases = LeaseTable(max_leases)  # read by the leader's service; changed only here
        # index -> (command, its parse): commands the leader's service parsed before proposing them, so
        # that apply does not parse them again (see parsed()). Held only until that index is applied.
        self._parsed: dict[int, tuple[bytes, Parsed]] = {}

    # -- read-only accessors -----------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._keyspace.revision

    @property
    def applied_index(self) -> int:
        return self._applied_index

    @property
    def applied_count(self) -> int:
        """How many entries apply() has seen (including rejected and deduplicated ones)."""
        return self._applied_count

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def sessions_expired(self) -> int:
        """Sessions this replica forgot because their TTL ran out by the log time (a counter, not state)."""
        return self._sessions.expired

    @property
    def log_time(self) -> int:
        """The largest leader stamp applied (ms): the time sessions and leases are judged by."""
        return self.leases.log_time

    def session(self, session_id: int) -> Session | None:
        return self._sessions.get(session_id)

    @property
    def session_bytes(self) -> int:
        """The session table's size as max_session_bytes counts it."""
        return self._sessions.size

    def __len__(self) -> int:
        return len(self._keyspace)

    def session_ids(self) -> list[int]:
        """Session ids, least recently used first (the eviction order)."""
        return self._sessions.ids()

    # -- StateMachine ------------------------------------------------------------------------------------

    def prefix_changes(self, prefix: str) -> int:
        """A count that changes whenever a key under `prefix` may have changed (counted from the first
        call for that prefix), so a reader of a small prefix can keep what it read until then. The node's
        status snapshot rereads the members' records by it (ten times a second otherwise)."""
        watched = self._watched_prefixes
        if prefix not in watched:
            if len(watched) >= MAX_WATCHED_PREFIXES:
                raise ValueError(f"at most {MAX_WATCHED_PREFIXES} prefixes are counted")
            watched[prefix] = 0
        return watched[prefix]

    def _changed(self, revision: int, key: str, new: Record | None, prev: Record | None) -> None:
        """Every change of a key (the keyspace's hook): the watch history, and the counted prefixes."""
        self.history.record(revision, key, new, prev)
        watched = self._watched_prefixes
        if watched:
            for prefix in watched:
                if key.startswith(prefix):
                    watched[prefix] += 1

    def parsed(self, index: int, command: bytes, parse: Parsed) -> None:
        """`parse` is what parse_stamped(command) gives, for the command proposed at `index`: apply takes
        it instead of parsing again if the entry it applies there holds this very bytes object (an entry
        of another leader at that index is another object, and is parsed). Only the leader calls this,
        for entries above its applied index; at most MAX_PARSED are held."""
        if index > self._applied_index:
            if len(self._parsed) >= MAX_PARSED:
                self._parsed.clear()  # only a cache: apply parses what it does not find
            self._parsed[index] = (command, parse)

    def apply(self, index: int, command: bytes) -> bytes:
        if index <= self._applied_index:
            raise ApplyOrderError(f"apply index {index} is not above applied index {self._applied_index}")
        self._applied_index = index
        self._applied_count += 1
        held = self._parsed.pop(index, None) if self._parsed else None
        if held is not None and held[0] is command:
            session_id, seq, ack_floor, op, stamp = held[1]
        else:
            try:
                session_id, seq, ack_floor, op, stamp = parse_stamped(command)
            except Invalid as exc:
                return error(str(exc))
        leases, sessions = self.leases, self._sessions
        if stamp is not None:
            leases.advance_time(stamp)
        if op[0] in _STAMPED_OPS:
            leases.advance_time(op[2])
        sessions.sweep(leases.log_time)
        if session_id == 0:
            return self._execute(op, index)
        answer = sessions.answer(session_id, seq, leases.log_time)
        if answer is not None:
            return answer
        result = self._execute(op, index)
        sessions.remember(session_id, seq, ack_floor, leases.log_time, result)
        return result

    def _execute(self, op: list[Any], index: int) -> bytes:
        """One write op, with what it does to leases (cluster/kv/leases.py) and sessions."""
        name, ks, leases = op[0], self._keyspace, self.leases
        if name == "session_open":
            ttl_ms = op[1] or DEFAULT_SESSION_TTL_MS
            self._sessions.open(index, ttl_ms, leases.log_time)
            return pack({"ok": True, "rev": ks.revision, "session": index, "ttl_ms": ttl_ms})
        if name == "lease_grant":
            leases.advance_time(op[2])
            granted = leases.grant(op[1], op[2])
            if isinstance(granted, str):
                return error(granted)
            return pack({"ok": True, "rev": ks.revision, "id": granted, "ttl_ms": op[1]})
        if name == "lease_revoke":
            leases.advance_time(op[2])
            if op[1] not in leases:
                return _lease_not_found(op[1])
            deleted = 0
            for key in leases.remove(op[1]):
                deleted += unpack(ks.execute(["del", key]))["deleted"]
            return pack({"ok": True, "rev": ks.revision, "deleted": deleted})
        if name == "lease_checkpoint":
            leases.advance_time(op[2])
            leases.checkpoint(op[1])
            return pack({"ok": True, "rev": ks.revision})
        if name == "put_lease":
            key, lease_id = op[1], op[3]
            if lease_id not in leases:
                return _lease_not_found(lease_id)
            too_many = leases.can_attach(lease_id, key)
            if too_many is not None:
                return error(too_many)
            result = ks.execute(["put", key, op[2]])
            leases.attach(key, lease_id)
            return result
        before = ks.revision
        result = ks.execute(op)
        if ks.revision != before:  # the op changed something: a key it wrote or deleted leaves its lease
            if name == "del_prefix":
                records = ks.records
                leases.detach_missing(op[1], records.__contains__)
            else:
                leases.detach(op[1])
        return result

    def query(self, query: bytes) -> bytes:
        try:
            op = parse_query(query)
        except Invalid as exc:
            return error(str(exc))
        if op[0] in LEASE_QUERIES:
            return error(f"{op[0]} is answered by the leader only; ask without serializable")
        if op[0] == "get":
            return self._keyspace.get(op[1])
        return self._keyspace.range(op[1], op[2], op[3])

    def snapshot(self) -> bytes:
        ks = self._keyspace
        return encode_snapshot(
            self._applied_index,
            self._applied_count,
            ks.revision,
            ks.sorted_keys(),
            ks.records,
            self._sessions.encoded(),
            self.leases.encoded(),
        )

    def snapshot_job(self) -> SnapshotJob:
        """The snapshot() of this moment, to be encoded a slice per SnapshotJob.step() while the store
        goes on changing (a copy of the key table is taken now: a few ms for 100k keys)."""
        ks = self._keyspace
        sessions = self._sessions.encoded()
        keys = ks.sorted_keys()  # never mutated in place: a change replaces or drops the cached list
        return snapshot_job(
            self._applied_index,
            self._applied_count,
            ks.revision,
            keys,
            dict(ks.records),
            sessions,
            self._snapshot_step,
            self.leases.encoded(),
        )

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; raises ValueError (changing nothing) if invalid."""
        self.prepare_restore(data, UINT64_MAX)()

    def prepare_restore(self, data: bytes, index: int) -> Callable[[], None]:
        """Decode and validate a snapshot taken at log index `index` into fresh structures; the returned
        call swaps them in. Raises ValueError, changing nothing, if the bytes are not such a snapshot."""
        try:
            state = decode_snapshot(data)
        except Invalid as exc:
            raise ValueError(f"invalid snapshot: {exc}") from None
        applied_index, applied_count, revision, keys, records, sessions, leases = state
        if applied_index > index:
            # apply() would then refuse every entry after the snapshot's index
            raise ValueError(f"invalid snapshot: applied index {applied_index} beyond its log index {index}")
        table = dict(zip(keys, records, strict=True))

        def swap() -> None:
            self._applied_index = applied_index
            self._applied_count = applied_count
            self._keyspace.replace(revision, keys, table)
            self._sessions.replace(sessions)
            self.history.reset(revision)
            self.leases.replace(leases)
            self._parsed.clear()
            for prefix in self._watched_prefixes:  # anything may have changed
                self._watched_prefixes[prefix] += 1

        return swap

    # -- extras ------------------------------------------------------------------------------------------

    def digest(self) -> str:
        """sha256 of the replicated data: revision, keys with metadata, sessions.

        The apply position (applied_index/applied_count) is left out, so an entry that changes nothing
        (a rejected command) leaves the digest unchanged, and replicas with equal data have equal digests.
        """
        ks = self._keyspace
        body = state_digest(
            ks.revision, ks.sorted_keys(), ks.records, self._sessions.encoded(), self.leases.encoded()
        )
        return hashlib.sha256(body).hexdigest()
