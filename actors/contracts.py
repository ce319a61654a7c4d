"""The contracts between the actors and whoever runs them: Ready, the state machine, recovered state.

A runtime drives a NodeActor like this (etcd-raft's Ready/Advance shape):

    node.step(message, now) / node.tick(now)                       # any number of times
    node.propose(data) / node.read_index(token)                    # what the service above asks for
    send(node.take_replication(now))                               # optional: new entries, at once
    rd = node.ready(now)                                           # what happened, batched
    send(rd.early_messages)                                        # may leave at once
    storage.persist(rd.hard_state, rd.truncate_from, rd.entries, rd.snapshot)   # one write + one fsync
    send(rd.messages)                                              # only after the fsync
    node.advance(rd, now)                                          # the persisted state counts from now on

Between ready() and advance() the runtime may keep stepping messages in, but must not call ready() again.
`messages` never leave before the Ready's persistent parts are durable (DESIGN.md rule 3: persist before
you speak); that is what makes votes and acknowledgements safe across crashes. `early_messages` depend on
nothing the Ready persists. They are the leader's AppendEntries and InstallSnapshot, which depend only on
the leader's term, durable since before it won, so the leader replicates while its own write is in flight
and counts itself toward a quorum only after advance() (dissertation 10.2.1); and client answers, which
report entries already committed (durable on a majority) or need nothing durable (redirects, refusals,
reads of applied state), so an answer never waits behind the fsync of the next batch.

NodeActor knows nothing of clients. Whoever serves them (cluster/kv/service.py) proposes commands and asks
for read indexes, and learns from each Ready what became of them: `applied` holds the results of the
commands this node proposed as leader of its current term, `reads` the read tokens that are now safe to
serve from the state machine, `failed_reads` those that never will be (leadership lost), and
`lost_leadership` the term whose leadership ended (its proposals' outcome is unknown). Answers built from
them depend on nothing the Ready persists: send them with `early_messages`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from actors.messages import Entry, HardState, Message, NodeId, Snapshot


class Refusal(Enum):
    """Why NodeActor did not take a proposal or a read."""

    NOT_LEADER = "not_leader"
    TRANSFERRING = "transferring"  # leadership transfer in progress: the target is about to take over
    BUSY = "busy"  # too many uncommitted entries or bytes, or too many pending reads


@dataclass(frozen=True, slots=True)
class Applied:
    """A command this node proposed, now applied: its index, the term it was proposed in, the result."""

    index: int
    term: int
    result: bytes


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None = None  # new term/vote/commit to persist, None when unchanged
    truncate_from: int | None = None  # drop every persisted entry with index >= this before appending
    entries: list[Entry] = field(default_factory=list)  # to append, in index order
    snapshot: Snapshot | None = None  # a snapshot to persist (taken locally or installed from the leader)
    # True when `snapshot` is one this node took itself: nothing in this Ready depends on it being durable
    # (the log still holds what it covers), so storage may write it in the background.
    snapshot_is_own: bool = False
    messages: list[Message] = field(default_factory=list)  # to send once the above is durable
    early_messages: list[Message] = field(default_factory=list)  # may be sent before persisting
    applied: list[Applied] = field(default_factory=list)  # results of our own proposals applied now
    reads: list[int] = field(default_factory=list)  # read tokens now safe to serve from the state machine
    failed_reads: list[int] = field(default_factory=list)  # read tokens that will never be (not leader)
    lost_leadership: int | None = None  # the term we stopped leading: its proposals' outcome is unknown

    def needs_persist(self) -> bool:
        return (
            self.hard_state is not None
            or self.truncate_from is not None
            or bool(self.entries)
            or self.snapshot is not None
        )

    def is_empty(self) -> bool:
        return (
            not self.needs_persist()
            and not self.messages
            and not self.early_messages
            and not self.applied
            and not self.reads
            and not self.failed_reads
            and self.lost_leadership is None
        )


@dataclass(slots=True)
class Recovered:
    """What storage hands a restarting node: the newest valid snapshot and the log entries after it."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class InvalidInput:
    """A peer message the node dropped because it made no sense against its state (DESIGN.md rule 7).

    The node keeps the latest few for the runtime to log (actors do no I/O); it counts them all."""

    peer: NodeId
    kind: str  # the message class
    reason: str


class SnapshotJob(Protocol):
    """A snapshot being encoded in slices, so that taking one never pauses a node for long."""

    def step(self) -> bytes | None:
        """Encode the next slice: the snapshot's bytes once complete, else None."""


class StateMachine(Protocol):
    """The replicated state machine (hashicorp/raft's FSM shape). Deterministic: no clock, no I/O."""

    def apply(self, index: int, command: bytes) -> bytes:
        """Apply one committed command; return the msgpack-encoded result for the client."""

    def query(self, query: bytes) -> bytes:
        """Answer a read-only query; return the msgpack-encoded result."""

    def snapshot_job(self) -> SnapshotJob:
        """The whole state of this moment (client session table included), encoded a slice per step()
        while the state goes on changing."""

    def prepare_restore(self, data: bytes, index: int) -> Callable[[], None]:
        """Decode and check a snapshot of the state after log index `index`, changing nothing: raise
        ValueError when the bytes are not such a snapshot. Return the call that swaps the decoded state in;
        it cannot fail, so the node calls it only once nothing else can go wrong."""
