"""Checks of a peer message on its own, before the receiver looks at its state (DESIGN.md rule 7).

The codec already guarantees types and non-negative ranges for frames off the wire; these checks are what
a well-behaved peer's message always satisfies whatever the receiver's state: terms and indexes within
0..MAX_NUMBER, entries contiguous from prev_log_index + 1 with non-decreasing terms no newer than the
message's term, a prev_log_term no newer than the term, a sane snapshot meta, chunk offsets inside the
snapshot bound. Each returns None for a sane message, else a short reason. What depends on the
receiver's state (commit index, role, the leader's progress) is checked by NodeActor and
ReplicationActor. The range checks repeat the codec's so that a message built in-process (tests, the
simulator) gets the same treatment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from actors.messages import (
    AppendEntries,
    AppendEntriesResponse,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)

_ENTRY_KINDS: Final = frozenset(int(k) for k in EntryKind)
# Terms and indexes only ever grow by small steps; a bound far below the wire's 63 bits keeps a node that
# adopts a hostile term from ever counting past what the codec carries.
MAX_NUMBER: Final = 2**62


def _out_of_range(**fields: int) -> str | None:
    for name, value in fields.items():
        if not 0 <= value <= MAX_NUMBER:
            return f"{name} {value} outside 0..2**62"
    return None


def append_entries_problem(msg: AppendEntries) -> str | None:
    problem = _out_of_range(
        term=msg.term,
        prev_log_index=msg.prev_log_index,
        prev_log_term=msg.prev_log_term,
        leader_commit=msg.leader_commit,
        read_round=msg.read_round,
    )
    if problem:
        return problem
    if msg.prev_log_term > msg.term:
        return f"prev_log_term {msg.prev_log_term} is newer than the term {msg.term}"
    if (msg.prev_log_index == 0) != (msg.prev_log_term == 0):
        return f"prev_log_index {msg.prev_log_index} with prev_log_term {msg.prev_log_term}"
    expected_index, last_term = msg.prev_log_index + 1, msg.prev_log_term
    for entry in msg.entries:
        if entry.index != expected_index:
            return f"entry index {entry.index} where {expected_index} was due (not contiguous)"
        if entry.term < max(last_term, 1) or entry.term > msg.term:
            return f"entry {entry.index} has term {entry.term} outside {last_term}..{msg.term}"
        if entry.kind not in _ENTRY_KINDS:
            return f"entry {entry.index} has unknown kind {entry.kind}"
        expected_index += 1
        last_term = entry.term
    return None


def snapshot_meta_problem(meta: SnapshotMeta, term: int) -> str | None:
    problem = _out_of_range(index=meta.index, meta_term=meta.term)
    if problem:
        return problem
    if meta.index == 0 or meta.term == 0:
        return f"snapshot at index {meta.index}, term {meta.term} covers nothing"
    if meta.term > term:
        return f"snapshot term {meta.term} is newer than the message's term {term}"
    if len(set(meta.members)) != len(meta.members):
        return "snapshot members repeat"
    return None


def install_snapshot_problem(msg: InstallSnapshot, max_snapshot_bytes: int) -> str | None:
    problem = _out_of_range(term=msg.term, offset=msg.offset)
    if problem:
        return problem
    problem = snapshot_meta_problem(msg.meta, msg.term)
    if problem:
        return problem
    end = msg.offset + len(msg.data)
    if end > max_snapshot_bytes:
        return f"snapshot chunk ends at {end}, beyond the bound of {max_snapshot_bytes}"
    return None


def request_vote_problem(msg: RequestVote) -> str | None:
    problem = _out_of_range(term=msg.term, last_log_index=msg.last_log_index, last_log_term=msg.last_log_term)
    if problem:
        return problem
    # No bound of last_log_term by the term: a node that crashed may recover entries whose term record it
    # lost (never acknowledged, so never counted), and campaign from that log in an older term.
    if (msg.last_log_index == 0) != (msg.last_log_term == 0):
        return f"last_log_index {msg.last_log_index} with last_log_term {msg.last_log_term}"
    return None


def vote_response_problem(msg: RequestVoteResponse) -> str | None:
    return _out_of_range(term=msg.term)


def append_response_problem(msg: AppendEntriesResponse) -> str | None:
    problem = _out_of_range(
        term=msg.term,
        match_index=msg.match_index,
        conflict_index=msg.conflict_index,
        conflict_term=msg.conflict_term,
        read_round=msg.read_round,
    )
    if problem:
        return problem
    if msg.conflict_term > msg.term:
        return f"conflict_term {msg.conflict_term} is newer than the term {msg.term}"
    return None


def snapshot_response_problem(msg: InstallSnapshotResponse) -> str | None:
    return _out_of_range(term=msg.term, snapshot_index=msg.snapshot_index, next_offset=msg.next_offset)


def timeout_now_problem(msg: TimeoutNow) -> str | None:
    return _out_of_range(term=msg.term)


def shape_checks(max_snapshot_bytes: int) -> dict[type, Callable[[Any], str | None]]:
    """The check for each peer message class."""
    return {
        AppendEntries: append_entries_problem,
        AppendEntriesResponse: append_response_problem,
        InstallSnapshot: lambda msg: install_snapshot_problem(msg, max_snapshot_bytes),
        InstallSnapshotResponse: snapshot_response_problem,
        RequestVote: request_vote_problem,
        RequestVoteResponse: vote_response_problem,
        TimeoutNow: timeout_now_problem,
    }
