"""Raft timing and sizing knobs shared by the actors. Times are in seconds of whatever clock drives them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RaftConfig:
    election_timeout: float = 1.0  # base; each timer draws uniformly from [base, 2 * base)
    heartbeat_interval: float = 0.1
    pre_vote: bool = True  # dissertation 9.6
    check_quorum: bool = True  # a leader steps down without a majority's contact for an election timeout
    max_append_bytes: int = 1 << 20  # payload cap of one AppendEntries
    max_inflight: int = 256  # AppendEntries in flight per follower while replicating
    snapshot_threshold: int = 100_000  # applied entries between automatic snapshots (0: never)
    snapshot_threshold_bytes: int = 64 << 20  # ...or applied command bytes, whichever comes first (0: never)
    snapshot_keep: int = 1_000  # entries kept below a snapshot so slightly lagging followers use the log
    snapshot_chunk_bytes: int = 1 << 20
    max_snapshot_bytes: int = 1 << 32  # bound on a snapshot received from a leader, held in memory
    max_pending_reads: int = 100_000
    # A leader refuses proposals (Refusal.BUSY) while this many entries, or bytes of entries, wait for
    # commit, so a leader that cannot reach a majority does not grow its log without bound. One proposal
    # is always taken when nothing is uncommitted, however big (etcd's MaxUncommittedEntriesSize).
    max_uncommitted_entries: int = 10_000
    max_uncommitted_bytes: int = 64 << 20
    learner_max_lag: int = 1_000  # a learner is promoted to voter only this many entries behind, or closer

    def __post_init__(self) -> None:
        if self.heartbeat_interval <= 0 or self.election_timeout <= 2 * self.heartbeat_interval:
            raise ValueError("need 0 < 2 * heartbeat_interval < election_timeout")
        if (
            self.max_append_bytes <= 0
            or self.max_inflight <= 0
            or self.snapshot_chunk_bytes <= 0
            or self.max_snapshot_bytes <= 0
        ):
            raise ValueError("sizes must be positive")
        if min(self.max_pending_reads, self.max_uncommitted_entries, self.max_uncommitted_bytes) <= 0:
            raise ValueError("limits must be positive")
