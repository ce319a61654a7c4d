"""ReplicationActor: the leader's view of every follower's log and the messages that move it forward.

It owns only per-follower progress (DESIGN.md rule 2): match/next index, probe vs pipelined replicate vs
snapshot state, the window of in-flight AppendEntries, snapshot transfer offsets and the ReadIndex round each
follower last confirmed. It reads the log through LogView and returns messages and facts (the quorum match,
the confirmed read round); NodeActor decides what they mean for its own state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from actors.config import RaftConfig
from actors.log import LogView
from actors.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    NodeId,
    Snapshot,
)


class Mode(Enum):
    PROBE = "probe"  # one AppendEntries at a time until the follower's match point is found
    REPLICATE = "replicate"  # optimistic pipelining, up to max_inflight messages in flight
    SNAPSHOT = "snapshot"  # the follower needs entries we compacted: stream the snapshot in chunks


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    mode: Mode = Mode.PROBE
    paused: bool = False  # a probe is out; wait for its answer or the next heartbeat
    inflight: deque[int] = field(default_factory=deque)  # last index carried by each message in flight
    last_progress: float = 0.0
    acked_round: int = 0
    snap_index: int = 0
    snap_offset: int = 0
    sent: int = 0  # the highest log index any message of this term offered: no follower can match beyond
    snap_sent: int = 0  # bytes of the snapshot at snap_index sent so far: no follower can hold more
    commit_sent: int = 0  # the highest commit index a message of this term let the follower take


@dataclass(frozen=True, slots=True)
class LeaderContext:
    """What the leader's messages are built from; passed in, never stored."""

    node_id: NodeId
    term: int
    commit: int
    read_round: int
    log: LogView
    snapshot: Snapshot | None
    now: float


class ReplicationActor:
    def __init__(
        self, node_id: NodeId, peers: tuple[NodeId, ...], config: RaftConfig, voters: tuple[NodeId, ...]
    ) -> None:
        self._id = node_id
        self._peers = peers  # every member but us: voters and learners all receive the log
        self._voters = voters  # who counts toward a majority, us included when we vote
        self._config = config
        self._progress: dict[NodeId, Progress] = {}
        # Members just removed: still sent the log until they hold the configuration that removed them
        # (its index here), so that they learn they left and stop campaigning; never counted.
        self._leaving: dict[NodeId, int] = {}

    def start(self, last_index: int, now: float) -> None:
        """A new term of leadership: nothing is known about the followers (paper 5.3)."""
        self._progress = {p: Progress(next=last_index + 1, last_progress=now) for p in self._peers}
        self._leaving = {}

    def stop(self) -> None:
        """Our leadership ended: what we knew of the followers is of no use to anyone."""
        self._progress = {}
        self._leaving = {}

    def tracks(self, peer: NodeId) -> bool:
        """True for a member, and for a member just removed that has not yet learned it."""
        return peer in self._progress

    def set_members(
        self,
        peers: tuple[NodeId, ...],
        voters: tuple[NodeId, ...],
        last_index: int,
        now: float,
        leading: bool,
    ) -> None:
        """A new configuration is in force: replicate to its members, count its voters (dissertation 4.1).
        A member new to us starts as a follower does at the start of a term; a leaving one is forgotten."""
        self._peers, self._voters = peers, voters
        if not leading:
            return
        gone = {p: last_index for p in self._progress if p not in peers}
        self._leaving = {p: i for p, i in {**self._leaving, **gone}.items() if p not in peers}
        self._progress = {
            p: self._progress.get(p) or Progress(next=last_index + 1, last_progress=now)
            for p in (*peers, *self._leaving)
        }

    def match_of(self, peer: NodeId) -> int:
        pr = self._progress.get(peer)
        return pr.match if pr is not None else 0

    def describe(self) -> dict[NodeId, dict[str, object]]:
        return {
            peer: {"match": pr.match, "next": pr.next, "mode": pr.mode.value, "inflight": len(pr.inflight)}
            for peer, pr in self._progress.items()
        }

    def most_up_to_date(self) -> NodeId | None:
        """The voter (not us) holding the most of our log: the best target of a leadership transfer."""
        voters = [p for p in self._progress if p in self._voters]
        if not voters:
            return None
        return max(voters, key=lambda p: (self._progress[p].match, p))

    # --- quorum facts -----------------------------------------------------------------------------

    def quorum_match(self, own_durable_index: int) -> int:
        """The highest index stored durably on a majority; the leader counts its own fsynced index only."""
        return self._quorum_value(own_durable_index, lambda pr: pr.match)

    def quorum_round(self, own_round: int) -> int:
        return self._quorum_value(own_round, lambda pr: pr.acked_round)

    def _quorum_value(self, own: int, of: Callable[[Progress], int]) -> int:
        """The highest value a majority of the voters has reached (the leader's own counts if it votes)."""
        values = [own] if self._id in self._voters else []
        for voter in self._voters:
            pr = self._progress.get(voter)
            if voter != self._id:
                values.append(of(pr) if pr is not None else 0)
        values.sort(reverse=True)
        return values[len(values) // 2] if values else 0

    # --- sending ----------------------------------------------------------------------------------

    def send_all(self, ctx: LeaderContext) -> list[Message]:
        out: list[Message] = []
        for peer in self._progress:
            out.extend(self.send_to(peer, ctx))
        return out

    def send_to(self, peer: NodeId, ctx: LeaderContext) -> list[Message]:
        """As many AppendEntries as the follower's mode and window allow."""
        pr = self._progress[peer]
        out: list[Message] = []
        log = ctx.log
        while True:
            if pr.mode is Mode.SNAPSHOT or (pr.mode is Mode.PROBE and pr.paused):
                return out
            if pr.next <= log.base_index:
                snap = self._begin_snapshot(peer, pr, ctx)
                if snap is not None:
                    out.append(snap)
                return out
            last = log.last_index()
            if pr.mode is Mode.REPLICATE and (
                pr.next > last or len(pr.inflight) >= self._config.max_inflight
            ):
                return out
            prev = pr.next - 1
            prev_term = log.term_at(prev)
            assert prev_term is not None, (prev, log.base_index)
            entries = log.slice(pr.next, last + 1, self._config.max_append_bytes) if pr.next <= last else []
            out.append(
                AppendEntries(
                    src=self._id,
                    dst=peer,
                    term=ctx.term,
                    prev_log_index=prev,
                    prev_log_term=prev_term,
                    entries=tuple(entries),
                    leader_commit=ctx.commit,
                    read_round=ctx.read_round,
                )
            )
            pr.sent = max(pr.sent, prev + len(entries))
            pr.commit_sent = max(pr.commit_sent, min(ctx.commit, prev + len(entries)))
            if pr.mode is Mode.PROBE:
                pr.paused = True
                return out
            pr.next = entries[-1].index + 1
            pr.inflight.append(pr.next - 1)

    def heartbeat(self, ctx: LeaderContext) -> list[Message]:
        """One message per follower: retransmit what stalled, otherwise an empty AppendEntries.

        The empty one claims only the follower's known match point, so it cannot be rejected by a follower
        that is behind, and it carries the current ReadIndex round.
        """
        out: list[Message] = []
        stall = 3 * self._config.heartbeat_interval
        for peer, pr in self._progress.items():
            if pr.mode is Mode.REPLICATE and pr.inflight and ctx.now - pr.last_progress >= stall:
                self._to_probe(pr, pr.match + 1, ctx.now)  # something was lost: resend from the match point
            if pr.mode is Mode.PROBE:
                pr.paused = False
                sent = self.send_to(peer, ctx)
                if sent:
                    out.extend(sent)
                    continue
            if pr.mode is Mode.SNAPSHOT and ctx.now - pr.last_progress >= stall:
                chunk = self._snapshot_chunk(peer, pr, ctx)  # the last chunk or its answer was lost
                if chunk is not None:
                    pr.last_progress = ctx.now
                    out.append(chunk)
                    continue
            empty = self._empty_append(peer, pr, ctx)
            if empty is not None:  # None: the match point was compacted; the snapshot chunk is on its way
                out.append(empty)
        return out

    def send_commit(self, ctx: LeaderContext) -> list[Message]:
        """An empty AppendEntries to each follower not yet told the commit index it can take (ours, up to
        its match point), so that it applies, and serves its watches, without waiting for the next entries
        or heartbeat (etcd-raft broadcasts an append once the commit advances). Call it after the turn's
        entries went out: a follower that they told already gets nothing. Learners are told too (they
        apply and serve reads and watches); a member just removed (still sent the log until it learns it
        left, see _leaving) is not: it serves nothing any more, and its heartbeats carry the commit."""
        out: list[Message] = []
        for peer, pr in self._progress.items():
            if peer in self._leaving:
                continue
            if pr.mode is not Mode.SNAPSHOT and min(pr.match, ctx.commit) > pr.commit_sent:
                empty = self._empty_append(peer, pr, ctx)
                if empty is not None:
                    out.append(empty)
        return out

    # --- receiving --------------------------------------------------------------------------------

    def append_response_problem(self, msg: AppendEntriesResponse, ctx: LeaderContext) -> str | None:
        """Why an AppendEntriesResponse of our term cannot be a follower's honest answer, or None.

        A follower only ever answers for indexes we sent it and for read rounds we started, so a claim
        beyond them would count a match (or a ReadIndex confirmation) toward a quorum it never had.
        """
        pr = self._progress.get(msg.src)
        if pr is None:
            return "not a follower of ours"
        if msg.match_index > pr.sent:
            return f"match_index {msg.match_index} beyond the last index sent to it ({pr.sent})"
        if msg.read_round > ctx.read_round:
            return f"read_round {msg.read_round} beyond the current round {ctx.read_round}"
        return None

    def snapshot_response_problem(self, msg: InstallSnapshotResponse) -> str | None:
        """Why an InstallSnapshotResponse of our term cannot be a follower's honest answer, or None."""
        pr = self._progress.get(msg.src)
        if pr is None:
            return "not a follower of ours"
        if msg.snapshot_index > pr.sent:
            return f"snapshot_index {msg.snapshot_index} beyond anything sent to it ({pr.sent})"
        transfer = pr.mode is Mode.SNAPSHOT and msg.snapshot_index == pr.snap_index
        if transfer and not msg.done and msg.next_offset > pr.snap_sent:
            return f"next_offset {msg.next_offset} beyond the {pr.snap_sent} bytes sent"
        return None

    def on_append_response(self, msg: AppendEntriesResponse, ctx: LeaderContext) -> bool:
        """Update the follower's progress; True when its match index advanced."""
        pr = self._progress.get(msg.src)
        if pr is None:
            return False
        pr.acked_round = max(pr.acked_round, msg.read_round)
        if msg.success:
            advanced = msg.match_index > pr.match
            if advanced:
                pr.match = msg.match_index
                if pr.match >= self._leaving.get(msg.src, pr.match + 1):  # it knows it left: let go
                    del self._progress[msg.src], self._leaving[msg.src]
                    return False
                pr.last_progress = ctx.now
                while pr.inflight and pr.inflight[0] <= pr.match:
                    pr.inflight.popleft()
            if pr.mode is Mode.PROBE and msg.match_index >= pr.next - 1:
                pr.mode = Mode.REPLICATE
                pr.paused = False
                pr.inflight.clear()
                pr.last_progress = ctx.now
            if pr.next <= pr.match:
                pr.next = pr.match + 1
            return advanced
        rejected = msg.match_index
        if pr.mode is Mode.REPLICATE and rejected <= pr.match:
            return False  # stale: that message was sent before we learned a later match
        if pr.mode is Mode.PROBE and rejected != pr.next - 1:
            return False
        if pr.mode is Mode.SNAPSHOT:
            return False
        hint = msg.conflict_index
        if msg.conflict_term > 0:
            ours = ctx.log.last_index_of_term(msg.conflict_term)
            if ours > 0:
                hint = ours + 1
        self._to_probe(pr, max(pr.match + 1, min(hint, rejected)), ctx.now)
        return False

    def on_snapshot_response(self, msg: InstallSnapshotResponse, ctx: LeaderContext) -> list[Message]:
        pr = self._progress.get(msg.src)
        if pr is None or pr.mode is not Mode.SNAPSHOT or msg.snapshot_index != pr.snap_index:
            return []
        pr.last_progress = ctx.now
        if msg.done:
            pr.match = max(pr.match, msg.snapshot_index)
            pr.last_progress = ctx.now
            self._to_probe(pr, pr.match + 1, ctx.now)
            return self.send_to(msg.src, ctx)
        pr.snap_offset = msg.next_offset
        chunk = self._snapshot_chunk(msg.src, pr, ctx)
        return [chunk] if chunk is not None else []

    # --- internals --------------------------------------------------------------------------------

    def _empty_append(self, peer: NodeId, pr: Progress, ctx: LeaderContext) -> AppendEntries | None:
        """An AppendEntries without entries at the follower's known match point, which it cannot reject
        however far behind it is; None when that point was compacted."""
        match_term = ctx.log.term_at(pr.match)
        if match_term is None:
            return None
        commit = min(pr.match, ctx.commit)
        pr.commit_sent = max(pr.commit_sent, commit)
        return AppendEntries(
            src=self._id,
            dst=peer,
            term=ctx.term,
            prev_log_index=pr.match,
            prev_log_term=match_term,
            entries=(),
            leader_commit=commit,
            read_round=ctx.read_round,
        )

    def _to_probe(self, pr: Progress, next_index: int, now: float) -> None:
        pr.mode = Mode.PROBE
        pr.next = next_index
        pr.paused = False
        pr.inflight.clear()
        pr.last_progress = now

    def _begin_snapshot(self, peer: NodeId, pr: Progress, ctx: LeaderContext) -> InstallSnapshot | None:
        if ctx.snapshot is None:
            return None
        pr.mode = Mode.SNAPSHOT
        if pr.snap_index != ctx.snapshot.meta.index:
            pr.snap_sent = 0
        pr.snap_index = ctx.snapshot.meta.index
        pr.snap_offset = 0
        pr.inflight.clear()
        pr.last_progress = ctx.now
        return self._snapshot_chunk(peer, pr, ctx)

    def _snapshot_chunk(self, peer: NodeId, pr: Progress, ctx: LeaderContext) -> InstallSnapshot | None:
        snap = ctx.snapshot
        if snap is None:
            return None
        if snap.meta.index != pr.snap_index:  # a newer snapshot replaced the one being sent: start over
            pr.snap_index = snap.meta.index
            pr.snap_offset = 0
            pr.snap_sent = 0
        start = min(pr.snap_offset, len(snap.data))
        end = min(start + self._config.snapshot_chunk_bytes, len(snap.data))
        pr.sent = max(pr.sent, snap.meta.index)
        pr.snap_sent = max(pr.snap_sent, end)
        return InstallSnapshot(
            src=self._id,
            dst=peer,
            term=ctx.term,
            meta=snap.meta,
            offset=start,
            data=snap.data[start:end],
            done=end == len(snap.data),
        )
