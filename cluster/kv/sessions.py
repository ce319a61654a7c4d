"""Client sessions: the exactly-once bookkeeping of writes (Raft dissertation section 6.3).

Registration. A client registers a session through the log: a `session_open` entry, which the leader
stamps with its log time and its session TTL (cluster/kv/service.py, the same LogClock as the lease
entries); the session's id is the entry's log index, so ids are never reused. Every later write of the
client carries that id, a sequence number and an ack floor (every seq below it has been answered to the
client), and the leader stamps it with its log time too.

Expiry. A session lives while it is active: each write of it (applied, or answered from the cache) sets
its `last_active` to the log time of that moment, and once the log time passes `last_active + ttl` it has
expired. Time here is only the log time the state machine has applied (the largest stamp so far,
cluster/kv/leases.py), never a clock (DESIGN.md rule 5): every replica expires the same sessions at the
same entry. The log time runs with the leader's monotonic clock and stands still between leaders (a new
leader continues from the largest stamp it applied), so a session can only live longer than its TTL in
wall time, never shorter.

Answers. Session 0 means "no session": always applied, never deduplicated (the nodes' own writes). For a
registered, live session a seq with a cached response gets that response back without being applied
again, a new seq is applied and its response cached, and a seq below the session's floor is not applied
again either: it gets {"ok": False, "code": "already_applied"} (the client raises AlreadyApplied). A
write of a session that is unknown (never registered, expired, or evicted for the bounds below) is
refused and never applied: {"ok": False, "code": "session_expired"}. That is what makes a retry safe
whatever the table forgot: a session the table no longer knows can never have a write applied again.
The client (actors/client.py) registers a fresh session for later writes, and resends the refused write
under it only when no earlier attempt of it can have been applied.

Bounds. The table changes in apply on every replica, so it is bounded deterministically (rule 5: its
size is a function of its content, never of time or memory):

* each session keeps at most `max_responses` responses: beyond, the smallest seqs are dropped and the
  session's floor rises past them, so a retry of one of them is answered as already applied, never
  applied again. The client keeps its open writes within a window a little smaller than this
  (cluster/client/calls.py SEQ_WINDOW), so a write it still waits for keeps its answer;
* at most `max_sessions` sessions, and at most `max_bytes` in total, counted as the snapshot encodes
  them (each response's bytes plus RESPONSE_OVERHEAD_BYTES, plus SESSION_OVERHEAD_BYTES per session).
  Beyond either bound whole sessions are evicted, the one active longest ago first; the session being
  written is never evicted, so the total may pass `max_bytes` by at most that one session. An evicted
  session is simply unknown from then on: its writes are refused, never applied twice.

Cached responses are write results, which hold revisions, counts and flags but never a value
(cluster/kv/keyspace.py), so each is a few dozen bytes and the table, which every snapshot copies, stays
a few MiB at most.
"""

from __future__ import annotations

from typing import Any

from cluster.kv.ops import ALREADY_APPLIED_CODE, SESSION_EXPIRED_CODE, Invalid, check_uint, error

DEFAULT_MAX_SESSIONS = 10_000
DEFAULT_MAX_RESPONSES_PER_SESSION = 1024
DEFAULT_MAX_SESSION_BYTES = 8 * 1024 * 1024
# Five minutes: far above any write's retry window (a client call's default timeout is 5 s, and a
# client re-registers before writing after TTL/2 of idleness), so only a client that was cut off for
# minutes while a write of it was in flight ever sees its session expire; and short enough that the
# sessions of clients that went away leave the table soon (etcd's client leases are of that order).
DEFAULT_SESSION_TTL_MS = 300_000
MAX_SESSION_TTL_MS = 24 * 3600 * 1000
# A session's id, floor, last activity and TTL, and a response's seq and pair header, as the snapshot
# encodes them (rounded up): part of what max_bytes counts.
SESSION_OVERHEAD_BYTES = 40
RESPONSE_OVERHEAD_BYTES = 12

# The error text for a seq below a session's floor: it was applied (the floor only rises past seqs the
# client was answered for, or whose cached answers were dropped for the bound), but its answer is gone.
ALREADY_APPLIED = "write already applied; its result is no longer kept"


def session_unknown(session_id: int) -> bytes:
    """The refusal of a write from a session the table does not know (any more)."""
    text = (
        f"session {session_id} is unknown (expired, evicted, or never registered); the write was not applied"
    )
    return error(text, SESSION_EXPIRED_CODE)


class Session:
    """One client session: cached responses by seq, the floor below which seqs are refused, the log time
    of its last activity and its TTL (ms), and its size as max_bytes counts it."""

    __slots__ = ("floor", "last_active", "responses", "size", "ttl_ms")

    def __init__(self, floor: int, last_active: int, ttl_ms: int, responses: dict[int, bytes]) -> None:
        self.floor = floor
        self.last_active = last_active
        self.ttl_ms = ttl_ms
        self.responses = responses
        self.size = SESSION_OVERHEAD_BYTES + sum(len(r) + RESPONSE_OVERHEAD_BYTES for r in responses.values())

    def expired(self, log_time: int) -> bool:
        return log_time > self.last_active + self.ttl_ms


class SessionTable:
    """Every live session, least recently active first."""

    __slots__ = (
        "_bytes",
        "_max_bytes",
        "_max_responses",
        "_max_sessions",
        "_sessions",
        "expired",
    )

    def __init__(self, max_sessions: int, max_responses: int, max_bytes: int) -> None:
        self._max_sessions = max_sessions
        self._max_responses = max_responses
        self._max_bytes = max_bytes
        # Ordered by last_active, oldest first: every touch sets last_active to the log time, which never
        # goes back, and moves the session to the end.
        self._sessions: dict[int, Session] = {}
        self._bytes = 0  # the sum of the sessions' sizes
        self.expired = 0  # sessions removed because their TTL ran out (not part of the state)

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    @property
    def size(self) -> int:
        """The table's size as max_bytes counts it."""
        return self._bytes

    def ids(self) -> list[int]:
        """Session ids, least recently active first (the eviction order)."""
        return list(self._sessions)

    def get(self, session_id: int) -> Session | None:
        return self._sessions.get(session_id)

    def open(self, session_id: int, ttl_ms: int, log_time: int) -> None:
        """Register a session (its id is its registration's log index, so it is new)."""
        if len(self._sessions) >= self._max_sessions:
            self._evict_oldest()
        session = Session(0, log_time, ttl_ms, {})
        self._sessions[session_id] = session
        self._bytes += session.size
        while self._bytes > self._max_bytes and len(self._sessions) > 1:
            self._evict_oldest()

    def sweep(self, log_time: int) -> None:
        """Forget the sessions expired by `log_time`, from the least recently active on. Run at every
        apply and cached nowhere, so that it depends on the table's content alone: a replica restored
        from a snapshot sweeps exactly as one that applied the whole log. With sessions of different
        TTLs (leaders with different settings), one behind an unexpired front may stay past its expiry
        until the front goes; answer() refuses its writes meanwhile all the same."""
        sessions = self._sessions
        while sessions:
            oldest = next(iter(sessions))
            if not sessions[oldest].expired(log_time):
                return
            self._bytes -= sessions.pop(oldest).size
            self.expired += 1

    def answer(self, session_id: int, seq: int, log_time: int) -> bytes | None:
        """The answer to a write that must not be applied (a cached response, or a refusal), else None.

        A cached response counts as activity of the session at `log_time`; a refusal does not."""
        session = self._sessions.get(session_id)
        if session is not None and session.expired(log_time):
            self._bytes -= self._sessions.pop(session_id).size
            self.expired += 1
            session = None
        if session is None:
            return session_unknown(session_id)
        if seq < session.floor:
            return error(ALREADY_APPLIED, ALREADY_APPLIED_CODE)
        cached = session.responses.get(seq)
        if cached is not None:
            self._touch(session_id, session, log_time)
        return cached

    def remember(self, session_id: int, seq: int, ack_floor: int, log_time: int, result: bytes) -> None:
        """Cache the result of a write of a live session just applied (answer() gave None for its seq)."""
        session = self._sessions[session_id]
        responses = session.responses
        responses[seq] = result
        added = len(result) + RESPONSE_OVERHEAD_BYTES
        session.size += added
        self._bytes += added
        if ack_floor > session.floor:
            for old in [s for s in responses if s < ack_floor]:
                self._drop_response(session, old)
            session.floor = ack_floor
        if len(responses) > self._max_responses:
            for old in sorted(responses)[: len(responses) - self._max_responses]:
                self._drop_response(session, old)
                session.floor = max(session.floor, old + 1)
        self._touch(session_id, session, log_time)
        while self._bytes > self._max_bytes and len(self._sessions) > 1:
            self._evict_oldest()  # never the session just touched: it is the newest

    def replace(self, sessions: dict[int, Session]) -> None:
        """Take the sessions of a snapshot (already in eviction order), trimmed to this table's bounds."""
        self._sessions = sessions
        self._bytes = sum(s.size for s in sessions.values())
        while len(sessions) > self._max_sessions or (self._bytes > self._max_bytes and len(sessions) > 1):
            self._evict_oldest()

    def encoded(self) -> list[Any]:
        """The snapshot form: [[id, floor, last_active, ttl_ms, [[seq, response], ...]], ...] in eviction
        order."""
        return [
            [sid, s.floor, s.last_active, s.ttl_ms, [[seq, s.responses[seq]] for seq in sorted(s.responses)]]
            for sid, s in self._sessions.items()
        ]

    def _touch(self, session_id: int, session: Session, log_time: int) -> None:
        session.last_active = max(session.last_active, log_time)
        self._sessions.pop(session_id, None)
        self._sessions[session_id] = session

    def _drop_response(self, session: Session, seq: int) -> None:
        removed = len(session.responses.pop(seq)) + RESPONSE_OVERHEAD_BYTES
        session.size -= removed
        self._bytes -= removed

    def _evict_oldest(self) -> None:
        oldest = next(iter(self._sessions))
        self._bytes -= self._sessions.pop(oldest).size


def _decode_responses(raw: object, floor: int) -> dict[int, bytes]:
    if type(raw) is not list:
        raise Invalid("session is malformed")
    responses: dict[int, bytes] = {}
    for pair in raw:
        if type(pair) is not list or len(pair) != 2 or type(pair[1]) is not bytes:
            raise Invalid("session response is malformed")
        seq = check_uint(pair[0], "session seq")
        if seq < floor or seq in responses:
            raise Invalid("session responses must be unique and not below the floor")
        responses[seq] = pair[1]
    return responses


def decode_sessions(raw_sessions: object) -> dict[int, Session]:
    """Validate the snapshot form of the sessions (SessionTable.encoded); they come back in the order
    given, which must be the eviction order (last_active never decreasing). Raises Invalid."""
    if type(raw_sessions) is not list:
        raise Invalid("sessions must be a list")
    sessions: dict[int, Session] = {}
    previous = 0
    for raw in raw_sessions:
        if type(raw) is not list or len(raw) != 5:
            raise Invalid("session is malformed")
        sid = check_uint(raw[0], "session id")
        floor = check_uint(raw[1], "session floor")
        last_active = check_uint(raw[2], "session last_active")
        ttl_ms = check_uint(raw[3], "session ttl")
        if sid == 0 or sid in sessions:
            raise Invalid("session ids must be non-zero and unique")
        if last_active < previous:
            raise Invalid("sessions are not in the order of their last activity")
        previous = last_active
        sessions[sid] = Session(floor, last_active, ttl_ms, _decode_responses(raw[4], floor))
    return sessions


def decode_legacy_sessions(raw_sessions: object, log_time: int) -> dict[int, Session]:
    """The sessions of a snapshot of format 1 or 2, from before registered sessions: [[id, floor,
    last_index, responses], ...]. Their clients never registered them; each is taken as registered and
    last active at the snapshot's log time with the default TTL, in last_index order, so the writes
    they cached keep their exactly-once answers until the sessions expire. Raises Invalid."""
    if type(raw_sessions) is not list:
        raise Invalid("sessions must be a list")
    entries: list[tuple[int, int, Session]] = []
    seen: set[int] = set()
    for raw in raw_sessions:
        if type(raw) is not list or len(raw) != 4:
            raise Invalid("session is malformed")
        sid = check_uint(raw[0], "session id")
        floor = check_uint(raw[1], "session floor")
        last_index = check_uint(raw[2], "session last_index")
        if sid == 0 or sid in seen:
            raise Invalid("session ids must be non-zero and unique")
        seen.add(sid)
        session = Session(floor, log_time, DEFAULT_SESSION_TTL_MS, _decode_responses(raw[3], floor))
        entries.append((last_index, sid, session))
    entries.sort(key=lambda e: (e[0], e[1]))
    return {sid: session for _, sid, session in entries}
