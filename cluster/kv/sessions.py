"""Client sessions: the exactly-once bookkeeping of writes (Raft dissertation section 6.3).

A command carries a client session id, a sequence number and an ack floor (every seq below it has been
answered to the client). Session 0 means "no session": always applied, never deduplicated. For another
session a seq below the session's floor is refused, a seq with a cached response gets that response back
without being applied again, and a new seq is applied and its response cached.

The table is bounded deterministically, since it changes in apply on every replica (DESIGN.md rule 5):
the session touched longest ago, i.e. with the smallest log index, is evicted first; each session keeps
at most `max_responses` responses, dropping the smallest seqs and raising its floor past them. The table
is part of the snapshot.
"""

from __future__ import annotations

from typing import Any

from cluster.kv.ops import Invalid, check_uint, error

DEFAULT_MAX_SESSIONS = 10_000
DEFAULT_MAX_RESPONSES_PER_SESSION = 1024

ALREADY_ACKNOWLEDGED = "request already acknowledged"


class Session:
    """One client session: cached responses by seq, the floor below which seqs are refused, last index."""

    __slots__ = ("floor", "last_index", "responses")

    def __init__(self, floor: int, last_index: int, responses: dict[int, bytes]) -> None:
        self.floor = floor
        self.last_index = last_index
        self.responses = responses


class SessionTable:
    """Every live session, least recently touched first."""

    __slots__ = ("_max_responses", "_max_sessions", "_sessions")

    def __init__(self, max_sessions: int, max_responses: int) -> None:
        self._max_sessions = max_sessions
        self._max_responses = max_responses
        # Ordered by last_index, oldest first: every touch moves a session to the end, so the first
        # session is always the one with the smallest last_index (the next to evict).
        self._sessions: dict[int, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

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
            return error(ALREADY_ACKNOWLEDGED)
        cached = session.responses.get(seq)
        if cached is not None:
            self._touch(session_id, session, index)
        return cached

    def remember(self, session_id: int, seq: int, ack_floor: int, index: int, result: bytes) -> None:
        """Cache the result of a write just applied at log `index`."""
        session = self._sessions.get(session_id)
        if session is None:
            if len(self._sessions) >= self._max_sessions:
                del self._sessions[next(iter(self._sessions))]
            session = Session(0, index, {})
        responses = session.responses
        responses[seq] = result
        if ack_floor > session.floor:
            for old in [s for s in responses if s < ack_floor]:
                del responses[old]
            session.floor = ack_floor
        if len(responses) > self._max_responses:
            for old in sorted(responses)[: len(responses) - self._max_responses]:
                del responses[old]
                session.floor = max(session.floor, old + 1)
        self._touch(session_id, session, index)

    def replace(self, sessions: dict[int, Session]) -> None:
        """Take the sessions of a snapshot (already in eviction order), trimmed to this table's bound."""
        while len(sessions) > self._max_sessions:
            del sessions[next(iter(sessions))]
        self._sessions = sessions

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
