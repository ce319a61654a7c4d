"""NodeActor: one Raft node. The only owner and writer of term, vote, log, commit and applied index.

Every input (a peer message, a clock tick, a proposal, a read) goes through step()/tick()/propose()/
read_index(); all effects come out batched through ready() and are acknowledged by advance() once durable
(see actors/contracts.py). It knows nothing of clients, request kinds or encodings: commands are opaque
bytes, and what became of a proposal or a read comes out in the Ready for the service above
(cluster/kv/service.py) to answer.
Each incoming peer message is first checked, on its own (actors/validation.py) and against our state
(no second leader of our term, no conflict with a committed entry, no answer for more than was sent, a
snapshot that decodes); an impossible one is dropped, counted and kept for the runtime to log, and never
raises (DESIGN.md rule 7). Then it passes one term check before role-specific handling; role behaviour
is a handler table swapped on role change (DESIGN.md rule 4). Election and replication decisions come from
ElectionActor and ReplicationActor, which own their own state and never touch ours.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from actors.config import RaftConfig
from actors.contracts import Applied, InvalidInput, Ready, Recovered, Refusal, SnapshotJob, StateMachine
from actors.election import ElectionActor, Tally
from actors.log import RaftLog
from actors.membership import ChangeError, ConfigChange, Configuration, apply_change, decode_configuration
from actors.messages import (
    PEER_MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    NodeId,
    PeerMessage,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)
from actors.replication import LeaderContext, ReplicationActor
from actors.validation import shape_checks

# Messages that may leave before the Ready that carries them is durable: the leader's replication (its term
# is durable since before it won).
_EARLY_TYPES: tuple[type, ...] = (AppendEntries, InstallSnapshot)
MAX_INVALID_REPORTS = 256  # dropped peer messages kept for the runtime to log; older ones are only counted


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class ChangeRefused:
    """A membership change the leader will not propose, with the reason for the operator."""

    reason: str


class SafetyViolation(AssertionError):
    """An internal invariant of Raft broke: a bug, never a peer's fault."""


@dataclass(slots=True)
class PendingRead:
    token: int  # the caller's
    round: int  # the heartbeat round that must be confirmed by a majority
    index: int | None  # the read index; None until an entry of this term commits


Handler = Callable[[Any, float], None]
Check = Callable[[Any, float], str | None]


class NodeActor:
    def __init__(
        self,
        node_id: NodeId,
        members: tuple[NodeId, ...] | Configuration,
        config: RaftConfig,
        state_machine: StateMachine,
        rng: random.Random,
        recovered: Recovered | None = None,
        now: float = 0.0,
        joined: bool = False,
    ) -> None:
        """`members` is the configuration we start from: the --initial-cluster (the configuration at
        index 0), or, `joined`, the members a running cluster listed when we joined (not the one at index
        0: the log we receive replays the configurations before us)."""
        bootstrap = members if isinstance(members, Configuration) else Configuration.voters_only(members)
        if node_id not in bootstrap.names:
            raise ValueError(f"{node_id!r} is not one of the members {bootstrap.names}")
        self.id = node_id
        self._config = config
        self._sm = state_machine
        rec = recovered or Recovered(HardState(0, None, 0), None, [])
        self._term = rec.hard_state.term
        self._vote = rec.hard_state.vote
        self._snapshot: Snapshot | None = rec.snapshot
        base_index, base_term = (rec.snapshot.meta.index, rec.snapshot.meta.term) if rec.snapshot else (0, 0)
        self._log = RaftLog(base_index, base_term, rec.entries)
        last_term = self._log.term_at(self._log.last_index()) or 0
        if last_term > self._term:
            # A crash may keep an unsynced batch's entries and lose the hard state written with them (any
            # subset of unsynced pages survives). Those entries were never acknowledged; adopting their
            # term, with no vote, keeps every log entry's term at most the current term.
            self._term, self._vote = last_term, None
        if rec.snapshot is not None:
            self._sm.prepare_restore(rec.snapshot.data, rec.snapshot.meta.index)()  # our own: fail-stop
        # Configurations (dissertation 4.1): the one at the log's base (from the snapshot, else the bootstrap
        # one the runtime knows), then one per CONFIG entry in the log; the latest is in force, committed
        # or not.
        self._base_config = _snapshot_config(rec.snapshot, bootstrap) if rec.snapshot else bootstrap
        self._configs: list[tuple[int, Configuration]] = []
        self._configuration = self._base_config
        self._bootstrap_names = frozenset(bootstrap.names) - {node_id}
        self._known: frozenset[NodeId] = frozenset()  # senders the runtime vouches for (see accepts())
        self._was_listed = False  # a configuration from the log or a snapshot listed us (see removed)
        self._members = self._configuration.names
        self._peers = tuple(m for m in self._members if m != node_id)
        self._applied = base_index
        self._applied_bytes = 0  # command bytes applied since the last snapshot
        self._commit = max(base_index, min(rec.hard_state.commit, self._log.last_index()))
        self._stable_index = self._log.last_index()  # everything recovered is on disk
        # What storage holds: a term raised above makes the first Ready persist it.
        self._handed_hs = HardState(rec.hard_state.term, rec.hard_state.vote, self._commit)
        self._unstable_from = self._log.last_index() + 1
        self._pending_truncate: int | None = None
        self._pending_snapshot: Snapshot | None = None
        self._pending_snapshot_is_own = False
        self._snapshot_job: tuple[SnapshotMeta, SnapshotJob] | None = None  # being encoded, a slice a Ready
        self._outbox: list[Message] = []
        self._leader: NodeId | None = None
        self._role = Role.FOLLOWER
        self._handlers: dict[type, Handler] = {}
        voters = self._configuration.voters
        self._election = ElectionActor(node_id, voters, config, rng)
        self._replication = ReplicationActor(node_id, self._peers, config, voters)
        self._reads: list[PendingRead] = []
        self._reads_done: list[int] = []  # tokens safe to serve, for the next Ready
        self._reads_failed: list[int] = []
        self._applied_out: list[Applied] = []
        self._lost_leadership: int | None = None
        self._uncommitted_bytes = 0  # leader only: bytes of entries above the commit index
        self._read_round = 0
        self._acked = (0, 0, 0)  # follower: the term, and the highest read round and match answered in it
        self._round_wanted = False
        self._broadcast_wanted = False
        self._commit_news = False  # leader: the commit or a match point moved; followers may need telling
        self._heartbeat_due = 0.0
        self._incoming: tuple[SnapshotMeta, bytearray] | None = None
        # The snapshot a checked last chunk completes, decoded by the check, for that chunk's handler.
        self._completed: tuple[InstallSnapshot, Snapshot, Callable[[], None]] | None = None
        self._transfer: tuple[NodeId, float] | None = None
        self._ready_out = False
        self._stats = {
            "proposals": 0,
            "applied": 0,
            "snapshots": 0,
            "elections": 0,
            "dropped": 0,
            "config_changes": 0,
            "leader_disconnects": 0,  # times our leader's connection closed and we stopped waiting for it
        }
        self._shape_checks = shape_checks(config.max_snapshot_bytes)
        self._state_checks: dict[type, Check] = {
            AppendEntries: self._append_entries_problem,
            InstallSnapshot: self._install_snapshot_problem,
            TimeoutNow: self._timeout_now_problem,
            RequestVoteResponse: self._vote_response_problem,
            AppendEntriesResponse: self._append_response_problem,
            InstallSnapshotResponse: self._snapshot_response_problem,
        }
        self._dropped_invalid: dict[str, int] = {}  # message kind -> count
        self._invalid: deque[InvalidInput] = deque(maxlen=MAX_INVALID_REPORTS)
        self._election.reset_timer(now)
        self._set_role(Role.FOLLOWER)
        self._track_configs(self._log.base_index + 1, now)
        self._was_listed = any((i > 0 or not joined) and node_id in c.names for i, c in self.config_history)

    # --- read-only facts, for the runtime, status and tests -----------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def leader(self) -> NodeId | None:
        return self._leader

    @property
    def commit_index(self) -> int:
        return self._commit

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def log(self) -> RaftLog:
        """Read-only by convention: only this actor writes the log."""
        return self._log

    @property
    def latest_snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def configuration(self) -> Configuration:
        """The configuration in force: the latest in the log, committed or not (dissertation 4.1)."""
        return self._configuration

    @property
    def configuration_index(self) -> int:
        """The log index of the configuration in force; the log's base index when it came with it."""
        return self._configs[-1][0] if self._configs else self._log.base_index

    @property
    def config_history(self) -> tuple[tuple[int, Configuration], ...]:
        """(index, configuration) for the log's base and every configuration entry in the log, in order."""
        return ((self._log.base_index, self._base_config), *self._configs)

    @property
    def removed(self) -> bool:
        """True when a configuration from our log or a snapshot listed us and the one in force does not:
        we left the cluster. (A node that joined is not listed by the older configurations it replays
        first: it is not removed, only not yet a member.)"""
        return self._was_listed and self.id not in self._configuration.names

    def set_known_peers(self, names: frozenset[NodeId]) -> None:
        """Names the runtime authenticates as cluster members though our configuration may not list them
        yet (a member added while we were behind): their messages are accepted too. Messages from anyone
        else are dropped as invalid (DESIGN.md rule 7)."""
        self._known = frozenset(names) - {self.id}

    def accepts(self, src: NodeId) -> bool:
        """Whether a peer message from `src` is heard: the members of the configuration in force; a
        member just removed that we are still telling so; whom the runtime vouches for; and the members
        we started with (the --initial-cluster, or those learned at --join) until our log holds a
        configuration that lists us (a node that joined replays older configurations, which may lack
        the leader it joined under)."""
        if src in self._peers or src in self._known or self._replication.tracks(src):
            return True
        starting = self.configuration_index == 0 or self.id not in self._configuration.names
        return starting and src in self._bootstrap_names

    def accepted_senders(self) -> frozenset[NodeId]:
        """Every name accepts() takes now, for the runtime's admission of frames."""
        names = set(self._peers) | self._known | set(self._replication.describe())
        if self.configuration_index == 0 or self.id not in self._configuration.names:
            names |= self._bootstrap_names
        return frozenset(names)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "role": self._role.value,
            "term": self._term,
            "leader": self._leader or "",
            "commit": self._commit,
            "applied": self._applied,
            "last_index": self._log.last_index(),
            "snapshot_index": self._snapshot.meta.index if self._snapshot else 0,
            "members": list(self._members),
            "voters": list(self._configuration.voters),
            "learners": list(self._configuration.learners),
            "configuration": [m.as_dict() for m in self._configuration.members],
            "configuration_index": self.configuration_index,
            "removed": self.removed,
            "stats": dict(self._stats),
            "dropped_invalid": dict(self._dropped_invalid),
            "uncommitted": self._log.last_index() - self._commit,
            "uncommitted_bytes": self._uncommitted_bytes,
            "pending_reads": len(self._reads),
        }
        if self._role is Role.LEADER:
            out["progress"] = self._replication.describe()
        return out

    def take_invalid(self) -> list[InvalidInput]:
        """The peer messages dropped as invalid since the last call (the latest MAX_INVALID_REPORTS), for
        the runtime to log; status() counts them all."""
        out = list(self._invalid)
        self._invalid.clear()
        return out

    # --- inputs ---------------------------------------------------------------------------------------

    def step(self, msg: PeerMessage, now: float) -> None:
        """Handle one incoming peer message. Term check first, then the current role's handler."""
        if not isinstance(msg, PEER_MESSAGE_TYPES):  # client traffic belongs to the service above
            self._stats["dropped"] += 1
            return
        if not self.accepts(msg.src):
            self._drop_invalid(msg, f"{msg.src!r} is not one of our peers")
            return
        if msg.dst != self.id:
            self._drop_invalid(msg, f"addressed to {msg.dst!r}")
            return
        # Never trust the wire (DESIGN.md rule 7): nothing a peer sends may raise or reach our state unchecked
        problem = self._shape_checks[type(msg)](msg) or self._state_problem(msg, now)
        if problem is not None:
            self._drop_invalid(msg, problem)
            return
        if msg.term > self._term:
            if isinstance(msg, RequestVote):
                if not msg.transfer and self._election.in_lease(now, self._leader is not None):
                    return  # a leader is alive: ignore a disruptive (pre-)candidate (dissertation 9.6)
                if not msg.pre_vote:
                    self._become_follower(msg.term, None, now)
            elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
                pass  # a granted pre-vote carries the term we asked about, not a newer real term
            else:
                leader = msg.src if isinstance(msg, AppendEntries | InstallSnapshot) else None
                self._become_follower(msg.term, leader, now)
        elif msg.term < self._term:
            self._answer_stale(msg)
            return
        self._handlers[type(msg)](msg, now)

    def tick(self, now: float) -> None:
        """Fire whatever timers are due."""
        if self._role is Role.LEADER:
            if self._transfer is not None and now >= self._transfer[1]:
                self._transfer = None  # the target did not take over in time; serve again
            if now >= self._election.quorum_deadline() and not self._election.check_quorum(now):
                self._become_follower(self._term, None, now)
                return
            if now >= self._heartbeat_due:
                self._send_heartbeats(now)
        elif self._election.expired(now):
            if self._configuration.is_voter(self.id):
                self._campaign(now, pre_vote=self._config.pre_vote, transfer=False)
            else:  # a learner, a member not yet added or one removed: it never campaigns
                self._election.reset_timer(now)

    def next_deadline(self) -> float:
        if self._role is Role.LEADER:
            deadline = min(self._heartbeat_due, self._election.quorum_deadline())
            if self._transfer is not None:
                deadline = min(deadline, self._transfer[1])
            return deadline
        return self._election.deadline()

    def peer_disconnected(self, peer: NodeId, now: float) -> None:
        """The runtime saw our connection to `peer` close: its process ended, or its host reset the
        connection. A follower whose leader that is forgets it (no more redirects to it, and a pre-vote is
        no longer ignored as disruptive) and campaigns soon instead of after a whole election timeout.
        Only timing depends on this: a wrong report (the leader still runs) costs at most a pre-vote,
        which the followers still in the leader's lease ignore, and its next heartbeat restores it."""
        if self._role is not Role.FOLLOWER or peer != self._leader:
            return
        self._leader = None
        self._stats["leader_disconnects"] += 1
        # A learner or a removed member never campaigns: it only stops redirecting to the lost leader.
        others = [m for m in self._configuration.voters if m != peer]
        if self.id in others:
            self._election.leader_gone(now, others.index(self.id))

    def propose(self, data: bytes) -> int | Refusal:
        """Append a command to the log as leader; its index, or why not. Its result comes out in a later
        Ready's `applied` once committed and applied, unless `lost_leadership` reports our term ended."""
        if self._role is not Role.LEADER:
            return Refusal.NOT_LEADER
        if self._transfer is not None:
            return Refusal.TRANSFERRING
        uncommitted = self._log.last_index() - self._commit
        if uncommitted and (
            uncommitted >= self._config.max_uncommitted_entries
            or self._uncommitted_bytes + len(data) > self._config.max_uncommitted_bytes
        ):
            return Refusal.BUSY
        self._stats["proposals"] += 1
        return self._append(EntryKind.COMMAND, data)

    def read_index(self, token: int) -> Refusal | None:
        """Start a linearizable read (ReadIndex, dissertation 6.4): `token` comes out in a later Ready's
        `reads` once a heartbeat round sent after this call was acknowledged by a majority, an entry of
        our term is committed, and the state machine has applied the commit index of this moment; or in
        `failed_reads` if we lose leadership first. None when taken, else why not."""
        if self._role is not Role.LEADER:
            return Refusal.NOT_LEADER
        if self._transfer is not None:
            return Refusal.TRANSFERRING
        if len(self._reads) >= self._config.max_pending_reads:
            return Refusal.BUSY
        committed_in_term = self._log.term_at(self._commit) == self._term
        index = self._commit if committed_in_term else None
        self._reads.append(PendingRead(token, self._read_round + 1, index))
        self._round_wanted = True
        return None

    def propose_change(self, change: ConfigChange, now: float) -> int | Refusal | ChangeRefused:
        """Append a configuration with one membership change, as leader (dissertation 4.1): its index, or
        why not. It is in force once appended; its outcome comes out in `applied` like a command's.

        One change at a time, and only once an entry of our term has committed (the dissertation's fix
        of single-server changes: a leader of a new term could otherwise overlap an uncommitted change of
        an earlier term's leader); both are transient, answered BUSY. Removing ourselves first hands
        leadership to the most up-to-date voter (answered TRANSFERRING: ask the new leader). A learner is
        promoted only within `learner_max_lag` entries of our log."""
        if self._role is not Role.LEADER:
            return Refusal.NOT_LEADER
        if self._transfer is not None:
            return Refusal.TRANSFERRING
        try:
            new = apply_change(self._configuration, change)
        except ChangeError as exc:
            return ChangeRefused(str(exc))
        if self._log.term_at(self._commit) != self._term or self.configuration_index > self._commit:
            return Refusal.BUSY
        if change.op == "remove" and change.name == self.id:
            if self.transfer_leadership(now) is None:
                return ChangeRefused(f"{self.id} leads and no other voter can take over")
            return Refusal.TRANSFERRING
        if change.op == "promote":
            lag = self._log.last_index() - self._replication.match_of(change.name)
            if not self._election.heard_within(change.name, now):
                return ChangeRefused(
                    f"learner {change.name} has not answered the leader within the last election timeout "
                    "(is it running?); retry once it has caught up"
                )
            if lag > self._config.learner_max_lag:
                return ChangeRefused(
                    f"learner {change.name} is {lag} entries behind the leader (promotion needs at most "
                    f"{self._config.learner_max_lag}); retry once it has caught up"
                )
        self._stats["config_changes"] += 1
        index = self._append(EntryKind.CONFIG, new.encode())
        self._track_configs(index, now)
        return index

    def transfer_leadership(self, now: float, target: NodeId | None = None) -> NodeId | None:
        """Hand leadership to `target` (default: the most up-to-date voter). Dissertation 3.10."""
        if self._role is not Role.LEADER or not self._peers:
            return None
        target = target or self._replication.most_up_to_date()
        if target is None or target not in self._peers or not self._configuration.is_voter(target):
            return None
        self._transfer = (target, now + self._config.election_timeout)
        self._maybe_send_timeout_now(now)
        self._broadcast_wanted = True
        return target

    # --- outputs --------------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._outbox
            or self._broadcast_wanted
            or (self._commit_news and self._role is Role.LEADER)
            or self._round_wanted
            or self._log.last_index() >= self._unstable_from
            or self._pending_truncate is not None
            or self._pending_snapshot is not None
            or self._snapshot_job is not None
            or self._hard_state() != self._handed_hs
            or self._applied < min(self._commit, self._stable_index)
            or self._reads_done
            or self._reads_failed
            or self._lost_leadership is not None
        )

    def take_replication(self, now: float) -> list[Message]:
        """The leader's AppendEntries for entries appended since the last Ready, to send before calling
        ready(): they need nothing durable (see actors/contracts.py), and ready() first applies what was
        committed, which would otherwise hold them back. Empty when there is nothing to replicate."""
        if self._role is not Role.LEADER or not self._broadcast_wanted or self._ready_out:
            return []
        self._broadcast_wanted = False
        return self._replication.send_all(self._leader_context(now))

    def ready(self, now: float) -> Ready:
        """Everything to persist and send since the last Ready. Call advance() once it is durable."""
        if self._ready_out:
            raise RuntimeError("ready() called again before advance()")
        if self._role is Role.LEADER or self._log.last_index() < self._unstable_from:
            # A follower with new entries to persist applies in the next Ready instead: its acknowledgement,
            # which the leader's commit waits on, then leaves before the apply work.
            self._apply_committed()
        round_wanted, self._round_wanted = self._round_wanted, False
        broadcast_wanted, self._broadcast_wanted = self._broadcast_wanted, False
        if self._role is Role.LEADER:
            if round_wanted:
                self._send_heartbeats(now)
            self._serve_reads()
            if broadcast_wanted:
                self._outbox.extend(self._replication.send_all(self._leader_context(now)))
            if self._commit_news:  # after the entries: at most one more message per follower
                self._outbox.extend(self._replication.send_commit(self._leader_context(now)))
        self._commit_news = False
        self._maybe_snapshot()
        hs = self._hard_state()
        early: list[Message] = []  # depends on nothing this Ready persists (see actors/contracts.py)
        late: list[Message] = []
        for msg in self._outbox:
            (early if isinstance(msg, _EARLY_TYPES) else late).append(msg)
        rd = Ready(
            hard_state=hs if hs != self._handed_hs else None,
            truncate_from=self._pending_truncate,
            entries=self._log.entries_from(self._unstable_from),
            snapshot=self._pending_snapshot,
            snapshot_is_own=self._pending_snapshot_is_own,
            messages=late,
            early_messages=early,
            applied=self._applied_out,
            reads=self._reads_done,
            failed_reads=self._reads_failed,
            lost_leadership=self._lost_leadership,
        )
        self._applied_out = []
        self._reads_done = []
        self._reads_failed = []
        self._lost_leadership = None
        self._handed_hs = hs
        self._pending_truncate = None
        self._pending_snapshot = None
        self._unstable_from = self._log.last_index() + 1
        self._outbox = []
        self._ready_out = True
        return rd

    def advance(self, rd: Ready, now: float) -> None:
        """The Ready's entries, hard state and snapshot are durable; its messages have been sent."""
        self._ready_out = False
        if rd.entries:
            last = rd.entries[-1]
            if self._log.term_at(last.index) == last.term:  # not truncated meanwhile
                self._stable_index = max(self._stable_index, last.index)
        if self._role is Role.LEADER:
            self._maybe_commit(now)

    # --- role changes ---------------------------------------------------------------------------------

    def _set_role(self, role: Role) -> None:
        self._role = role
        self._handlers = {
            Role.FOLLOWER: self._follower_handlers,
            Role.PRE_CANDIDATE: self._candidate_handlers,
            Role.CANDIDATE: self._candidate_handlers,
            Role.LEADER: self._leader_handlers,
        }[role]()

    def _follower_handlers(self) -> dict[type, Handler]:
        return {
            RequestVote: self._on_request_vote,
            RequestVoteResponse: self._ignore,
            AppendEntries: self._on_append_entries,
            AppendEntriesResponse: self._ignore,
            InstallSnapshot: self._on_install_snapshot,
            InstallSnapshotResponse: self._ignore,
            TimeoutNow: self._on_timeout_now,
        }

    def _candidate_handlers(self) -> dict[type, Handler]:
        return {
            RequestVote: self._on_request_vote,
            RequestVoteResponse: self._on_vote_response,
            AppendEntries: self._follow_then(self._on_append_entries),
            AppendEntriesResponse: self._ignore,
            InstallSnapshot: self._follow_then(self._on_install_snapshot),
            InstallSnapshotResponse: self._ignore,
            TimeoutNow: self._ignore,
        }

    def _leader_handlers(self) -> dict[type, Handler]:
        return {
            RequestVote: self._on_request_vote,
            RequestVoteResponse: self._ignore,
            AppendEntries: self._on_second_leader,
            AppendEntriesResponse: self._on_append_response,
            InstallSnapshot: self._on_second_leader,
            InstallSnapshotResponse: self._on_snapshot_response,
            TimeoutNow: self._ignore,
        }

    def _become_follower(self, term: int, leader: NodeId | None, now: float) -> None:
        if term > self._term:
            self._term = term
            self._vote = None
        was_leader = self._role is Role.LEADER
        self._leader = leader
        self._set_role(Role.FOLLOWER)
        self._election.reset_timer(now)
        if was_leader:
            self._stop_leading()

    def _follow_then(self, handler: Handler) -> Handler:
        """A (pre-)candidate that hears from the leader of its term becomes its follower (paper 5.2)."""

        def follow(msg: AppendEntries | InstallSnapshot, now: float) -> None:
            self._become_follower(msg.term, msg.src, now)
            handler(msg, now)

        return follow

    def _campaign(self, now: float, pre_vote: bool, transfer: bool) -> None:
        self._election.reset_timer(now)
        if pre_vote:
            self._set_role(Role.PRE_CANDIDATE)
            vote_term = self._term + 1
        else:
            self._term += 1
            self._vote = self.id
            self._leader = None
            self._set_role(Role.CANDIDATE)
            vote_term = self._term
            self._stats["elections"] += 1
        if self._election.start_tally() is Tally.WON:
            self._on_won(now, pre_vote)
            return
        for peer in self._peers:
            self._outbox.append(
                RequestVote(
                    src=self.id,
                    dst=peer,
                    term=vote_term,
                    last_log_index=self._log.last_index(),
                    last_log_term=self._log.last_term(),
                    pre_vote=pre_vote,
                    transfer=transfer,
                )
            )

    def _on_won(self, now: float, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(now, pre_vote=False, transfer=False)
        else:
            self._become_leader(now)

    def _become_leader(self, now: float) -> None:
        self._set_role(Role.LEADER)
        self._leader = self.id
        self._transfer = None
        self._election.start_leading(now)
        self._replication.start(self._log.last_index(), now)
        self._uncommitted_bytes = sum(
            len(self._log.entry(i).data) for i in range(self._commit + 1, self._log.last_index() + 1)
        )
        self._append(EntryKind.NOOP, b"")  # commits earlier terms' entries once it commits (paper 5.4.2)
        self._heartbeat_due = now + self._config.heartbeat_interval
        self._maybe_commit(now)

    # --- peer input checked against our state (DESIGN.md rule 7) -----------------------------------------

    def _state_problem(self, msg: PeerMessage, now: float) -> str | None:
        """Why a well-formed peer message cannot come from a correct peer, given our state; None if it can.

        A message of an older term is not judged: it is answered with our term and changes nothing.
        """
        if msg.term < self._term:
            return None
        if msg.term == 0 and isinstance(msg, AppendEntries | InstallSnapshot | RequestVote | TimeoutNow):
            return "term 0, which no leader or candidate ever has"
        check = self._state_checks.get(type(msg))
        return check(msg, now) if check is not None else None

    def _leader_claim_problem(self, msg: AppendEntries | InstallSnapshot | TimeoutNow) -> str | None:
        """Only one node leads a term (paper 5.2): a second one claiming ours is lying."""
        if msg.term != self._term:
            return None
        if self._role is Role.LEADER:
            return f"claims to lead term {msg.term}, which we lead"
        if self._leader is not None and self._leader != msg.src:
            return f"claims to lead term {msg.term}, which {self._leader} leads"
        return None

    def _append_entries_problem(self, msg: AppendEntries, now: float) -> str | None:
        problem = self._leader_claim_problem(msg)
        if problem is not None:
            return problem
        for entry in msg.entries:
            if entry.kind == EntryKind.CONFIG:
                try:
                    decode_configuration(entry.data)
                except ValueError as exc:
                    return f"entry {entry.index}: {exc}"
        # A leader of our term or a newer one holds every entry we know committed (paper 5.4.1).
        for entry in msg.entries:
            if entry.index > self._commit:
                break
            local = self._log.term_at(entry.index)
            if local is not None and local != entry.term:
                return f"entry {entry.index} of term {entry.term} conflicts with our committed term {local}"
        return None

    def _install_snapshot_problem(self, msg: InstallSnapshot, now: float) -> str | None:
        problem = self._leader_claim_problem(msg)
        if problem is not None:
            return problem
        meta = msg.meta
        if meta.config:
            try:
                decode_configuration(meta.config)
            except ValueError as exc:
                return f"snapshot configuration: {exc}"
        elif sorted(meta.members) != list(self._members):
            return f"snapshot members {list(meta.members)[:8]} are not ours"
        local = self._log.term_at(meta.index) if meta.index <= self._commit else None
        if local is not None and local != meta.term:
            return f"snapshot at {meta.index} of term {meta.term} conflicts with our committed term {local}"
        data = self._completed_snapshot(msg)
        if data is not None:
            try:
                swap_in = self._sm.prepare_restore(data, meta.index)
            except ValueError as exc:
                return str(exc)
            self._completed = (msg, Snapshot(meta, data), swap_in)
        return None

    def _completed_snapshot(self, msg: InstallSnapshot) -> bytes | None:
        """The whole snapshot when `msg` is the last chunk of one we would install; otherwise None."""
        if not msg.done or msg.meta.index <= self._commit:
            return None
        if msg.offset == 0:
            return msg.data
        incoming = self._incoming
        if incoming is None or incoming[0] != msg.meta or msg.offset != len(incoming[1]):
            return None
        return bytes(incoming[1]) + msg.data

    def _timeout_now_problem(self, msg: TimeoutNow, now: float) -> str | None:
        if msg.term > self._term:  # the target of a transfer has acknowledged its leader's term durably
            return f"term {msg.term} is newer than ours, which a transfer target never sees"
        return self._leader_claim_problem(msg)

    def _vote_response_problem(self, msg: RequestVoteResponse, now: float) -> str | None:
        if msg.granted and not msg.pre_vote and msg.term > self._term:
            return f"a vote granted in term {msg.term}, newer than any we asked for"
        return None

    def _append_response_problem(self, msg: AppendEntriesResponse, now: float) -> str | None:
        if msg.term > self._term:
            return f"a success in term {msg.term}, newer than any we sent" if msg.success else None
        if self._role is not Role.LEADER or not self._replication.tracks(msg.src):
            return None  # a late answer to our leadership of this term, or from a member since removed
        return self._replication.append_response_problem(msg, self._leader_context(now))

    def _snapshot_response_problem(self, msg: InstallSnapshotResponse, now: float) -> str | None:
        if msg.term > self._term:
            return f"an installed snapshot in term {msg.term}, newer than any we sent" if msg.done else None
        if self._role is not Role.LEADER or not self._replication.tracks(msg.src):
            return None
        return self._replication.snapshot_response_problem(msg)

    def _drop_invalid(self, msg: Message, reason: str) -> None:
        kind = type(msg).__name__
        self._dropped_invalid[kind] = self._dropped_invalid.get(kind, 0) + 1
        self._invalid.append(InvalidInput(msg.src, kind, reason))

    # --- votes ----------------------------------------------------------------------------------------

    def _on_request_vote(self, msg: RequestVote, now: float) -> None:
        up_to_date = self._log.is_up_to_date(msg.last_log_index, msg.last_log_term)
        if msg.pre_vote:
            free = msg.term > self._term or (self._vote in (None, msg.src) and self._leader is None)
            granted = free and up_to_date
            reply_term = msg.term if granted else self._term
        else:
            granted = self._vote in (None, msg.src) and up_to_date
            if granted:
                self._vote = msg.src
                self._election.reset_timer(now)
            reply_term = self._term
        self._outbox.append(
            RequestVoteResponse(
                src=self.id, dst=msg.src, term=reply_term, granted=granted, pre_vote=msg.pre_vote
            )
        )

    def _on_vote_response(self, msg: RequestVoteResponse, now: float) -> None:
        expecting_pre = self._role is Role.PRE_CANDIDATE
        if msg.pre_vote != expecting_pre:
            return
        if msg.granted and msg.term != (self._term + 1 if expecting_pre else self._term):
            return
        tally = self._election.record_vote(msg.src, msg.granted)
        if tally is Tally.WON:
            self._on_won(now, expecting_pre)
        elif tally is Tally.LOST:
            self._become_follower(self._term, None, now)

    def _on_timeout_now(self, msg: TimeoutNow, now: float) -> None:
        if self._configuration.is_voter(self.id):  # a leader only picks voters; ours may be older
            self._campaign(now, pre_vote=False, transfer=True)

    # --- follower: replication ---------------------------------------------------------------------

    def _on_append_entries(self, msg: AppendEntries, now: float) -> None:
        self._leader = msg.src
        self._election.heard_from_leader(now)
        prev = msg.prev_log_index
        entries = msg.entries
        if prev < self._log.base_index:
            # Entries up to our snapshot are committed, so they match the leader's (leader completeness).
            entries = tuple(e for e in entries if e.index > self._log.base_index)
            prev, prev_term = self._log.base_index, self._log.base_term
        else:
            prev_term = msg.prev_log_term
        local_term = self._log.term_at(prev)
        if local_term is None or local_term != prev_term:
            if local_term is None:
                conflict_index, conflict_term = self._log.last_index() + 1, 0
            else:
                conflict_term = local_term
                conflict_index = max(self._log.first_index_of_term_at(prev), self._commit + 1)
            self._outbox.append(
                AppendEntriesResponse(
                    src=self.id,
                    dst=msg.src,
                    term=self._term,
                    success=False,
                    match_index=msg.prev_log_index,
                    conflict_index=conflict_index,
                    conflict_term=conflict_term,
                    read_round=msg.read_round,
                )
            )
            return
        changed_from = self._merge(entries)
        if changed_from is not None:
            self._track_configs(changed_from, now)
        last_new = msg.prev_log_index + len(msg.entries)
        new_commit = min(msg.leader_commit, last_new)
        if new_commit > self._commit:
            self._commit = new_commit
        term, acked_round, acked_match = self._acked
        told = term == self._term and msg.read_round <= acked_round and last_new <= acked_match
        if told and not msg.entries:
            # A commit notice (ReplicationActor.send_commit): the answer would tell the leader nothing it
            # was not told in this term already. Heartbeats always start a new round, so they are answered.
            return
        if term == self._term:
            self._acked = (term, max(acked_round, msg.read_round), max(acked_match, last_new))
        else:
            self._acked = (self._term, msg.read_round, last_new)
        self._outbox.append(
            AppendEntriesResponse(
                src=self.id,
                dst=msg.src,
                term=self._term,
                success=True,
                match_index=last_new,
                conflict_index=0,
                conflict_term=0,
                read_round=msg.read_round,
            )
        )

    def _merge(self, entries: tuple[Entry, ...]) -> int | None:
        """Append what we lack; truncate only at a real conflict, never entries that match (paper 5.3).
        Returns the first index that changed, None when nothing did."""
        for pos, entry in enumerate(entries):
            local = self._log.term_at(entry.index)
            if local == entry.term:
                continue
            if local is not None:
                if entry.index <= self._commit:
                    raise SafetyViolation(f"{self.id}: conflict at committed index {entry.index}")
                self._log.truncate_from(entry.index)
                self._stable_index = min(self._stable_index, entry.index - 1)
                self._pending_truncate = min(self._pending_truncate or entry.index, entry.index)
                self._unstable_from = min(self._unstable_from, entry.index)
            for new in entries[pos:]:
                self._log.append(new)
            return entry.index
        return None

    def _on_install_snapshot(self, msg: InstallSnapshot, now: float) -> None:
        self._leader = msg.src
        self._election.heard_from_leader(now)
        meta = msg.meta
        completed, self._completed = self._completed, None
        if meta.index <= self._commit:
            self._incoming = None
            self._answer_snapshot(msg, meta.index, done=True)
            return
        if completed is not None and completed[0] is msg:  # the last chunk, decoded when it was checked
            self._incoming = None
            self._install(completed[1], completed[2], now)
            self._answer_snapshot(msg, meta.index, done=True)
            return
        if msg.offset == 0:
            self._incoming = (meta, bytearray())
        incoming = self._incoming
        if incoming is None or incoming[0] != meta or msg.offset != len(incoming[1]):
            held = len(incoming[1]) if incoming is not None and incoming[0] == meta else 0
            self._answer_snapshot(msg, held, done=False)
            return
        if msg.done:
            raise SafetyViolation(f"{self.id}: the last chunk of snapshot {meta.index} was not checked")
        incoming[1].extend(msg.data)
        self._answer_snapshot(msg, len(incoming[1]), done=False)

    def _install(self, snap: Snapshot, swap_in: Callable[[], None], now: float) -> None:
        meta = snap.meta
        if self._log.term_at(meta.index) == meta.term:
            self._log.compact_to(meta.index)  # our log continues the snapshot: keep the suffix
        else:
            self._log.reset(meta.index, meta.term)
            self._pending_truncate = meta.index + 1
            self._unstable_from = meta.index + 1
            self._stable_index = meta.index
        self._base_config = _snapshot_config(snap, self._base_config)
        # Configurations of entries the snapshot covers, or of a conflicting log it replaced, are gone.
        base, last = self._log.base_index, self._log.last_index()
        self._configs = [(i, c) for i, c in self._configs if base < i <= last]
        self._config_changed(now)
        swap_in()
        self._snapshot_job = None  # one of our own in the making is older than the state now
        self._applied = meta.index
        self._applied_bytes = 0
        self._commit = max(self._commit, meta.index)
        self._snapshot = snap
        self._pending_snapshot = snap
        self._pending_snapshot_is_own = False  # the follower's answer waits for it to be durable

    def _answer_snapshot(self, msg: InstallSnapshot, next_offset: int, done: bool) -> None:
        self._outbox.append(
            InstallSnapshotResponse(
                src=self.id,
                dst=msg.src,
                term=self._term,
                snapshot_index=msg.meta.index,
                next_offset=next_offset,
                done=done,
            )
        )

    # --- leader ---------------------------------------------------------------------------------------

    def _leader_context(self, now: float) -> LeaderContext:
        return LeaderContext(
            node_id=self.id,
            term=self._term,
            commit=self._commit,
            read_round=self._read_round,
            log=self._log,
            snapshot=self._snapshot,
            now=now,
        )

    def _send_heartbeats(self, now: float) -> None:
        self._heartbeat_due = now + self._config.heartbeat_interval
        self._read_round += 1
        self._outbox.extend(self._replication.heartbeat(self._leader_context(now)))
        self._serve_reads()  # a newly confirmed round may release reads

    def _on_append_response(self, msg: AppendEntriesResponse, now: float) -> None:
        if not self._replication.tracks(msg.src):
            return  # a member since removed (or whose addition was cut from our log)
        self._election.heard_from_peer(msg.src, now)
        ctx = self._leader_context(now)
        if self._replication.on_append_response(msg, ctx):
            self._commit_news = True  # even without a new commit: this follower may lag behind the old one
            self._maybe_commit(now)
            self._maybe_send_timeout_now(now)
        if self._replication.tracks(msg.src):
            self._outbox.extend(self._replication.send_to(msg.src, self._leader_context(now)))
        self._serve_reads()  # a newly confirmed round may release reads

    def _on_snapshot_response(self, msg: InstallSnapshotResponse, now: float) -> None:
        if not self._replication.tracks(msg.src):
            return
        self._election.heard_from_peer(msg.src, now)
        self._outbox.extend(self._replication.on_snapshot_response(msg, self._leader_context(now)))

    def _on_second_leader(self, msg: AppendEntries | InstallSnapshot, now: float) -> None:
        # A peer's claim to lead our term is dropped by _leader_claim_problem: getting here is our own bug.
        raise SafetyViolation(f"{self.id}: {msg.src} also leads term {msg.term}")

    def _maybe_commit(self, now: float) -> None:
        quorum = self._replication.quorum_match(self._stable_index)
        # Only entries of the current term commit by counting replicas (paper 5.4.2).
        if quorum > self._commit and self._log.term_at(quorum) == self._term:
            for i in range(self._commit + 1, quorum + 1):
                self._uncommitted_bytes -= len(self._log.entry(i).data)
            self._commit = quorum
            self._commit_news = True
            for read in self._reads:  # reads that waited for the first commit of this term
                if read.index is None:
                    read.index = self._commit

    def _maybe_send_timeout_now(self, now: float) -> None:
        if self._transfer is None:
            return
        target = self._transfer[0]
        if self._replication.match_of(target) == self._log.last_index():
            self._outbox.append(TimeoutNow(src=self.id, dst=target, term=self._term))

    def _append(self, kind: EntryKind, data: bytes) -> int:
        index = self._log.last_index() + 1
        self._log.append(Entry(term=self._term, index=index, kind=kind, data=data))
        self._uncommitted_bytes += len(data)
        self._broadcast_wanted = True
        return index

    # --- reads and lost leadership ------------------------------------------------------------------

    def _serve_reads(self) -> None:
        if not self._reads:
            return
        confirmed = self._replication.quorum_round(self._read_round) if self._peers else self._read_round
        waiting: list[PendingRead] = []
        for read in self._reads:
            if read.round <= confirmed and read.index is not None and read.index <= self._applied:
                self._reads_done.append(read.token)
            else:
                waiting.append(read)
        self._reads = waiting

    def _stop_leading(self) -> None:
        """We lost leadership: proposals may or may not commit, reads cannot be confirmed by us. Reads
        already confirmed stay good: the state they will be served from is at least their read index."""
        self._lost_leadership = max(self._term, self._lost_leadership or 0)
        self._replication.stop()
        self._reads_failed.extend(read.token for read in self._reads)
        self._reads = []
        self._transfer = None
        self._uncommitted_bytes = 0

    # --- apply and snapshots --------------------------------------------------------------------------

    def _apply_committed(self) -> None:
        upto = min(self._commit, self._stable_index)
        own = self._role is Role.LEADER  # only a leader's entries of its own term can be our proposals
        while self._applied < upto:
            entry = self._log.entry(self._applied + 1)
            result = self._sm.apply(entry.index, entry.data) if entry.kind == EntryKind.COMMAND else b""
            self._applied = entry.index
            self._applied_bytes += len(entry.data)
            self._stats["applied"] += 1
            if own and entry.term == self._term and entry.kind != EntryKind.NOOP:
                self._applied_out.append(Applied(entry.index, entry.term, result))

    def _maybe_snapshot(self) -> None:
        """Snapshot every N applied entries or M applied bytes, whichever comes first.

        A snapshot is the state machine's state at one applied index, encoded a slice per Ready (the
        runtime polls its sockets between two Readies), so taking one never pauses the node for long;
        the log is compacted once the encoding is complete.

        The N-entry points are staggered by member: member k of n snapshots when its applied index
        crosses a multiple of N plus k*N/n (and at least N/2 entries after its last snapshot), so the
        members' snapshots do not all fall together.
        """
        if self._snapshot_job is not None:
            meta, job = self._snapshot_job
            data = job.step()
            if data is not None:
                self._snapshot_job = None
                self._finish_snapshot(Snapshot(meta, data))
            return
        entries, size = self._config.snapshot_threshold, self._config.snapshot_threshold_bytes
        last_snap = self._snapshot.meta.index if self._snapshot else 0
        due_by_entries = False
        if entries > 0 and self._applied - last_snap >= max(1, entries // 2):
            position = self._members.index(self.id) if self.id in self._members else 0
            phase = entries * position // len(self._members)
            due_by_entries = (self._applied - phase) // entries > (last_snap - phase) // entries
        due_by_bytes = size > 0 and self._applied_bytes >= size
        if not (due_by_entries or due_by_bytes) or self._applied == last_snap:
            return
        self._applied_bytes = 0
        term = self._log.term_at(self._applied)
        assert term is not None
        config = self._config_at(self._applied)
        meta = SnapshotMeta(self._applied, term, config.names, config.encode())
        self._snapshot_job = (meta, self._sm.snapshot_job())
        self._maybe_snapshot()  # the first slice now

    def _finish_snapshot(self, snap: Snapshot) -> None:
        self._snapshot = snap
        self._pending_snapshot = snap
        self._pending_snapshot_is_own = True
        self._stats["snapshots"] += 1
        keep_from = snap.meta.index - self._config.snapshot_keep
        self._log.compact_to(max(self._log.base_index, keep_from))
        base = self._log.base_index
        self._base_config = self._config_at(base)
        self._configs = [(i, c) for i, c in self._configs if i > base]

    # --- configurations (dissertation chapter 4) ----------------------------------------------------

    def _track_configs(self, from_index: int, now: float) -> None:
        """The log changed from `from_index` on (appended, or truncated and appended): forget the
        configurations of entries that are gone, note those of the new ones, put the latest in force."""
        self._configs = [(i, c) for i, c in self._configs if i < from_index]
        for index in range(max(from_index, self._log.base_index + 1), self._log.last_index() + 1):
            entry = self._log.entry(index)
            if entry.kind == EntryKind.CONFIG:
                self._configs.append((index, decode_configuration(entry.data)))  # checked on arrival
        self._config_changed(now)

    def _config_at(self, index: int) -> Configuration:
        """The configuration in force once the log up to `index` (at or above the base) is applied."""
        config = self._base_config
        for at, c in self._configs:
            if at > index:
                break
            config = c
        return config

    def _config_changed(self, now: float) -> None:
        new = self._configs[-1][1] if self._configs else self._base_config
        if self.id in new.names and (self.configuration_index > 0 or self._log.base_index > 0):
            self._was_listed = True
        if new == self._configuration:
            return
        self._configuration = new
        self._members = new.names
        self._peers = tuple(m for m in self._members if m != self.id)
        voters = new.voters
        self._election.set_voters(voters)
        leading = self._role is Role.LEADER
        self._replication.set_members(self._peers, voters, self._log.last_index(), now, leading)
        if self.id not in voters and self._role is not Role.FOLLOWER:
            # No longer a voter: never campaign nor lead (a leader hands over before it removes itself,
            # so this is a candidate whose log just learned of a removal).
            self._become_follower(self._term, None, now)
        elif leading:
            self._broadcast_wanted = True  # a new member gets its first AppendEntries now
            self._maybe_commit(now)  # fewer voters may make a smaller majority

    # --- small helpers --------------------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._commit)

    def _answer_stale(self, msg: Message) -> None:
        """Tell a sender from an older term about ours, so a deposed leader or candidate steps down."""
        if isinstance(msg, AppendEntries):
            self._outbox.append(
                AppendEntriesResponse(self.id, msg.src, self._term, False, msg.prev_log_index, 0, 0, 0)
            )
        elif isinstance(msg, InstallSnapshot):
            self._outbox.append(
                InstallSnapshotResponse(self.id, msg.src, self._term, msg.meta.index, 0, False)
            )
        elif isinstance(msg, RequestVote):
            self._outbox.append(RequestVoteResponse(self.id, msg.src, self._term, False, msg.pre_vote))

    def _ignore(self, msg: Message, now: float) -> None:
        pass


def _snapshot_config(snap: Snapshot, fallback: Configuration) -> Configuration:
    """The configuration a snapshot carries; an old snapshot without one has only its voters' names."""
    if snap.meta.config:
        return decode_configuration(snap.meta.config)
    if sorted(snap.meta.members) == list(fallback.names):
        return fallback  # the same members: keep what we know of them (their URLs)
    return Configuration.voters_only(snap.meta.members)
