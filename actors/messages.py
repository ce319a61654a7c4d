"""The message vocabulary of zraft: every message that crosses the wire, plus the log and state records.

Names follow the Raft paper (Ongaro & Ousterhout) and the dissertation. Every class is a frozen, slotted
dataclass with `src`/`dst` fields for messages; transport/codec.py maps each one to a small integer tag.
Client commands and query results travel as opaque msgpack bytes: Raft never looks inside them, so an
entry's payload is encoded once by the client and passes through the log, the WAL and the wire as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

NodeId = str


class EntryKind(IntEnum):
    """What a log entry carries."""

    COMMAND = 0  # a client command for the state machine (opaque bytes)
    NOOP = 1  # appended by every new leader so it can commit entries of earlier terms (paper 5.4.2, 8)
    CONFIG = 2  # a cluster configuration (actors/membership.py), in force once appended (dissertation 4.1)


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: int
    data: bytes


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before a vote or an acknowledgement leaves the node (paper Figure 2)."""

    term: int
    vote: NodeId | None
    commit: int


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int  # last included index
    term: int  # last included term
    members: tuple[NodeId, ...]  # every member's name, voters and learners
    config: bytes = b""  # the configuration in force at `index` (actors/membership.py); b"" in old snapshots


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes  # the state machine's own encoding (KV data, revisions, session table)


# --- Raft peer messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestVote:
    src: NodeId
    dst: NodeId
    term: int  # for a pre-vote: the term the candidate would use, its own term + 1
    last_log_index: int
    last_log_term: int
    pre_vote: bool
    transfer: bool  # sent because of TimeoutNow: voters ignore their leader lease (dissertation 3.10)


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    src: NodeId
    dst: NodeId
    term: int
    granted: bool
    pre_vote: bool


@dataclass(frozen=True, slots=True)
class AppendEntries:
    src: NodeId
    dst: NodeId
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int
    read_round: int  # heartbeat round, echoed back; confirms leadership for ReadIndex (dissertation 6.4)


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    src: NodeId
    dst: NodeId
    term: int
    success: bool
    match_index: int  # on success: last index known to match; on reject: the rejected prev_log_index
    conflict_index: int  # on reject: where the leader should retry (fast backtracking hint)
    conflict_term: int  # on reject: term of the follower's entry at prev_log_index, 0 if it has none
    read_round: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    src: NodeId
    dst: NodeId
    term: int
    meta: SnapshotMeta
    offset: int
    data: bytes  # one chunk
    done: bool


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    src: NodeId
    dst: NodeId
    term: int
    snapshot_index: int
    next_offset: int  # bytes the follower holds so far; equals the size when installed
    done: bool


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    src: NodeId
    dst: NodeId
    term: int


# --- Client messages ------------------------------------------------------------------------------


class RequestKind(IntEnum):
    WRITE = 0  # payload is a state machine command; replicated through the log
    READ = 1  # linearizable read through ReadIndex; payload is a state machine query
    SERIAL_READ = 2  # served from the receiving node's state, possibly stale
    STATUS = 3  # the node's own view of the cluster
    MEMBER = 4  # a membership change (cluster/kv/members.py), answered once its configuration commits
    # Watch streams (cluster/kv/watches.py): the WATCH request's req_id names the stream on its connection
    WATCH = 16  # open a stream of change events; answered by STREAM frames until it ends
    WATCH_CANCEL = 17  # close a stream (payload: its id); the node ends it with WATCH_CANCELLED
    WATCH_ACK = 18  # credit: the client consumed this many events of a stream (payload: [id, count])


class Status(IntEnum):
    OK = 0
    NOT_LEADER = 1  # try leader_hint (or another node when empty)
    BAD_REQUEST = 2  # the request was rejected and never applied
    UNAVAILABLE = 3  # the node cannot serve now (e.g. leadership transfer in progress); retry
    UNKNOWN = 4  # the outcome is unknown (leadership lost after the write was proposed); retry same seq
    BUSY = 5  # the leader holds too much uncommitted work; the request was never proposed: retry later
    STREAM = 16  # one frame of an open watch stream: events and/or the revision it is complete through
    WATCH_COMPACTED = 17  # the stream ended: its next revision is older than the node's history window
    WATCH_CANCELLED = 18  # the stream ended for the reason in result (cancelled, or a node bound)


@dataclass(frozen=True, slots=True)
class ClientRequest:
    src: NodeId  # the client's id
    dst: NodeId
    req_id: int
    kind: int  # RequestKind
    payload: bytes


@dataclass(frozen=True, slots=True)
class ClientResponse:
    src: NodeId
    dst: NodeId
    req_id: int
    status: int  # Status
    result: bytes  # state machine result (msgpack), or an error text for BAD_REQUEST
    leader_hint: NodeId  # "" when unknown


PeerMessage = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
)
Message = PeerMessage | ClientRequest | ClientResponse

PEER_MESSAGE_TYPES: tuple[type, ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
)
