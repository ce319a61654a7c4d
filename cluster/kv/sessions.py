"""Client sessions: the exactly-once bookkeeping of writes (Raft dissertation section 6.3).

A command carries a client session id, a sequence number and an ack floor (every seq below it has been
answered to the client). Session 0 means "no session": always applied, never deduplicated. For another
session a seq with a cached response gets that response back without being applied again, a new seq is
applied and its response cached, and a seq below the session's floor is not applied again either: it gets
{"ok": False, "code": "already_applied"}. That is true for every write a client still waits for, as long
as the client keeps its open writes within the window below: its own ack floor never passes its open
writes, and within the window no answer is dropped for the per-session bound, so the floor passes an open
write only once the write was applied. (A client that broke the window could also get it for a write of
its that was never applied and now never will be: the floor rose past it when newer answers were
dropped.) The client raises AlreadyApplied (cluster/errors.py).

Bounds. The table changes in apply on every replica, so it is bounded deterministically (DESIGN.md rule
5: its size is a function of its content, never of time or memory):

* each session keeps at most `max_responses` responses: beyond, the smallest seqs are dropped and the
  session's floor rises past them, so a retry of one of them is answered as already applied, never
  applied again. The client keeps its open writes within a window a little smaller than this
  (cluster/client/calls.py SEQ_WINDOW, from DEFAULT_MAX_RESPONSES_PER_SESSION), so a write it still
  waits for keeps its answer;
* at most `max_sessions` sessions, and at most `max_bytes` in total, counted as the snapshot encodes
  them (each response's bytes plus RESPONSE_OVERHEAD_BYTES, plus SESSION_OVERHEAD_BYTES per session).
  Beyond either bound whole sessions are evicted, the one touched longest ago (smallest log index of its
  last applied or answered write) first; the session being written is never evicted, so the total may
  pass `max_bytes` by at most that one session. Evicting whole sessions (rather than trimming the
  responses of busy ones) keeps the per-session window above true for every session still known.

Cached responses are write results, which hold revisions, counts and flags but never a value
(cluster/kv/keyspace.py), so each is a few dozen bytes and the table, which every snapshot copies, stays
a few MiB at most. A session that was evicted is forgotten: a retry of one of its writes would be applied
again, as a new session's would.
"""

from __future__ import annotations

from typing import Any

from cluster.kv.ops import ALREADY_APPLIED_CODE, Invalid, check_uint, error

DEFAULT_MAX_SESSIONS = 10_000
DEFAULT_MAX_RESPONSES_PER_SESSION = 1024
DEFAULT_MAX_SESSION_BYTES = 8 * 1024 * 1024
# A session's id, floor and last index, and a response's seq and pair header, as the snapshot encodes
# them (rounded up): part of what max_bytes counts.
SESSION_OVERHEAD_BYTES = 32
RESPONSE_OVERHEAD_BYTES = 12

# The error text for a seq below a session's floor: it was applied (the floor only rises past seqs the
# client was answered for, or whose cached answers were dropped for the bound), but its answer is gone.
ALREADY_APPLIED = "write already applied; its result is no longer kept"


class Session:
    """One client session: cached responses by seq, the floor below which seqs are refused, the log index
    of its last activity, and its size as max_bytes counts it."""

    __slots__ = ("floor", "last_index", "responses", "size")

    def __init__(self, floor: int, last_index: int, responses: dict[int, bytes]) -> None:
        self.floor = floor
        self.last_index = last_index
        self.responses = responses
        self.size = SESSION_OVERHEAD_BYTES + sum(len(r) + RESPONSE_OVERHEAD_BYTES for r in responses.values())


class SessionTable:
    """Every live session, least recently touched first."""

    __slots__ = ("_bytes", "_max_bytes", "_max_responses", "_max_sessions", "_sessions")

    def __init__(self, max_sessions: int, max_responses: int, max_bytes: int) -> None:
        self._max_sessions = max_sessions
        self._max_responses = max_responses
        self._max_bytes = max_bytes
        # Ordered by last_index, oldest first: every touch moves a session to the end, so the first
        # session is always the one with the smallest last_index (the next to evict).
        self._sessions: dict[int, Session] = {}
        self._bytes = 0  # the sum of the sessions' sizes

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def size(self) -> int:
        """The table's size as max_bytes counts it."""
        return self._bytes

    def ids(self) -> list[int]:
        """Session ids, least recently used first (the eviction order)."""
        return list(self._sessions)

    def answer(self, session_id: int, seq: int, index: int) -> bytes | None:
        """The answer to a write that must not be applied (a cached response, or a refusal), else None.

        A cached response counts as activity of the session at log `index`; a refusal does not."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if seq < session.floor:
            return error(ALREADY_APPLIED, ALREADY_APPLIED_CODE)
        cached = session.responses.get(seq)
        if cached is not None:
            self._touch(session_id, session, index)
        return cached

    def remember(self, session_id: int, seq: int, ack_floor: int, index: int, result: bytes) -> None:
        """Cache the result of a write just applied at log `index` (answer() gave None for its seq)."""
        session = self._sessions.get(session_id)
        if session is None:
            if len(self._sessions) >= self._max_sessions:
                self._evict_oldest()
            session = Session(0, index, {})
            self._bytes += session.size
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
        self._touch(session_id, session, index)
        while self._bytes > self._max_bytes and len(self._sessions) > 1:
            self._evict_oldest()  # never the session just touched: it is the newest

    def replace(self, sessions: dict[int, Session]) -> None:
        """Take the sessions of a snapshot (already in eviction order), trimmed to this table's bounds."""
        self._sessions = sessions
        self._bytes = sum(s.size for s in sessions.values())
        while len(sessions) > self._max_sessions or (self._bytes > self._max_bytes and len(sessions) > 1):
            self._evict_oldest()

    def encoded(self) -> list[Any]:
        """The snapshot form: [[id, floor, last_index, [[seq, response], ...]], ...] in eviction order."""
        return [
            [sid, s.floor, s.last_index, [[seq, s.responses[seq]] for seq in sorted(s.responses)]]
            for sid, s in self._sessions.items()
        ]

    def _touch(self, session_id: int, session: Session, index: int) -> None:
        session.last_index = index
        self._sessions.pop(session_id, None)
        self._sessions[session_id] = session

    def _drop_response(self, session: Session, seq: int) -> None:
        removed = len(session.responses.pop(seq)) + RESPONSE_OVERHEAD_BYTES
        session.size -= removed
        self._bytes -= removed

    def _evict_oldest(self) -> None:
        oldest = next(iter(self._sessions))
        self._bytes -= self._sessions.pop(oldest).size


def decode_sessions(raw_sessions: object) -> dict[int, Session]:
    """Validate the snapshot form of the sessions; they come back in eviction order. Raises Invalid."""
    if type(raw_sessions) is not list:
        raise Invalid("sessions must be a list")
    entries: list[tuple[int, int, Session]] = []
    seen: set[int] = set()
    for raw in raw_sessions:
        if type(raw) is not list or len(raw) != 4 or type(raw[3]) is not list:
            raise Invalid("session is malformed")
        sid = check_uint(raw[0], "session id")
        floor = check_uint(raw[1], "session floor")
        last_index = check_uint(raw[2], "session last_index")
        if sid == 0 or sid in seen:
            raise Invalid("session ids must be non-zero and unique")
        seen.add(sid)
        responses: dict[int, bytes] = {}
        for pair in raw[3]:
            if type(pair) is not list or len(pair) != 2 or type(pair[1]) is not bytes:
                raise Invalid("session response is malformed")
            seq = check_uint(pair[0], "session seq")
            if seq < floor or seq in responses:
                raise Invalid("session responses must be unique and not below the floor")
            responses[seq] = pair[1]
        entries.append((last_index, sid, Session(floor, last_index, responses)))
    entries.sort(key=lambda e: (e[0], e[1]))
    return {sid: session for _, sid, session in entries}
