"""Hypothesis: a node fed random, well-formed but hostile peer messages never raises and stays safe.

One node (n2 of a three-node cluster), brought to the follower, candidate or leader role by an honest
exchange, is then cut off and receives only crafted messages claiming to come from n1 and n3 (and now and
then a stranger): random terms, indexes and entries, snapshots of valid or garbage bytes, forged answers.
Its own messages are discarded. After every step its safety invariants must hold: the term never
decreases, the vote never changes within a term, the commit index never decreases, committed entries
never change, and what it applies is the committed log in order (paper Figure 3).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ClientRequest,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestKind,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)
from actors.node import NodeActor, Role
from cluster.kv.machine import KVStateMachine, encode_command
from tests.unit.raft_fixture import CONFIG, Cluster

MEMBERS: tuple[str, ...] = ("n1", "n2", "n3")
SENDERS = st.sampled_from(["n1", "n3", "n1", "n3", "x9"])


def command(n: int) -> bytes:
    return encode_command(0, 0, 0, ["put", f"k{n % 5}", n])


class RecordingStateMachine(KVStateMachine):
    """The KV state machine, remembering what it applied since its last restore."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[tuple[int, bytes]] = []

    def apply(self, index: int, command: bytes) -> bytes:
        self.applied.append((index, command))
        return super().apply(index, command)

    def prepare_restore(self, data: bytes, index: int) -> Callable[[], None]:
        swap = super().prepare_restore(data, index)

        def swap_and_record() -> None:
            swap()
            self.applied.append((index, b"<snapshot>"))

        return swap_and_record


class HostilePeers(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c = Cluster(3)
        self.sm = RecordingStateMachine()
        self.c.sms["n2"] = self.sm
        self.c.nodes["n2"] = NodeActor("n2", MEMBERS, CONFIG, self.sm, random.Random(7), None, 0.0)
        self.node = self.c.nodes["n2"]
        self.term = 0
        self.votes: dict[int, str | None] = {}
        self.commit = 0
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data), once seen committed
        self.applied_seen = 0
        self.last_applied = 0
        self.writes = 0

    # --- setup ------------------------------------------------------------------------------------

    @initialize(role=st.sampled_from(["follower", "candidate", "leader"]), writes=st.integers(0, 4))
    def reach_role(self, role: str, writes: int) -> None:
        c = self.c
        leader = c.elect("n2" if role == "leader" else "n1")
        for n in range(writes):
            self._client_write(leader, n)
            c.deliver_all()
        c.advance_time(0.3)
        if role == "candidate":
            c.blocked.update({"n1", "n3"})
            while self.node.role is not Role.PRE_CANDIDATE:
                c.advance_time(0.1)
            c.blocked.clear()
            self.node.step(RequestVoteResponse("n3", "n2", self.node.term + 1, True, True), c.now)
            assert self.node.status()["role"] == Role.CANDIDATE.value
        assert role != "leader" or self.node.role is Role.LEADER
        self._settle()
        self.sm.applied.clear()
        self.last_applied = self.node.applied_index
        self.check_safety()

    # --- hostile input ----------------------------------------------------------------------------

    def _claimed_leader(self, data: st.DataObject, src: str, term: int) -> str:
        """Mostly the node's own leader when the term is its own, so the message gets past that check."""
        leader = self.node.leader
        if term == self.node.term and leader in ("n1", "n3") and data.draw(st.integers(0, 3)):
            return leader
        return src

    @rule(data=st.data(), src=SENDERS, plausible=st.booleans())
    def append_entries(self, data: st.DataObject, src: str, plausible: bool) -> None:
        """Plausible: entries that continue some prefix of the node's log (what a new leader sends);
        otherwise anything in range, contiguous or not."""
        node, log = self.node, self.node.log
        last = log.last_index()
        if plausible:
            term = node.term + data.draw(st.integers(0, 1))
            prev = data.draw(st.integers(log.base_index, last))
            prev_term = log.term_at(prev) or 0
            steps = [1] * 4
        else:
            term = node.term + data.draw(st.integers(-1, 2))
            prev = data.draw(st.integers(0, last + 3))
            prev_term = data.draw(st.integers(0, term + 1))
            steps = [1, 1, 1, 0, 2]
        src = self._claimed_leader(data, src, term)
        entries: list[Entry] = []
        index, entry_term = prev + 1, max(prev_term, 1)
        for _ in range(data.draw(st.integers(0, 4))):
            low = entry_term if plausible else max(0, entry_term - 1)
            entry_term = data.draw(st.integers(low, max(low, term) + (0 if plausible else 1)))
            entries.append(Entry(entry_term, index, EntryKind.COMMAND, command(index)))
            index += data.draw(st.sampled_from(steps))
        commit = data.draw(st.integers(0, prev + len(entries) + 2))
        read_round = data.draw(st.integers(0, 5))
        self._deliver(AppendEntries(src, "n2", term, prev, prev_term, tuple(entries), commit, read_round))

    @rule(data=st.data(), src=SENDERS, plausible=st.booleans())
    def install_snapshot(self, data: st.DataObject, src: str, plausible: bool) -> None:
        node = self.node
        if plausible:
            term = node.term + data.draw(st.integers(0, 1))
            index = node.commit_index + data.draw(st.integers(1, 6))
            meta_term = data.draw(st.integers(max(1, node.log.last_term()), term))
            members = MEMBERS
        else:
            term = node.term + data.draw(st.integers(-1, 2))
            index = data.draw(st.integers(0, node.log.last_index() + 6))
            meta_term = data.draw(st.integers(0, term + 1))
            members = data.draw(st.sampled_from([MEMBERS, ("n1", "n2"), ("n3", "n2", "n1", "n4")]))
        src = self._claimed_leader(data, src, term)
        kind = data.draw(st.sampled_from(["leader_state", "small_state", "garbage", "empty"]))
        if kind == "leader_state":
            payload = self.c.sms["n1"].snapshot()
        elif kind == "small_state":
            small = KVStateMachine()
            small.apply(data.draw(st.integers(1, 12)), command(1))
            payload = small.snapshot()
        elif kind == "garbage":
            payload = data.draw(st.binary(max_size=40))
        else:
            payload = b""
        cut = data.draw(st.integers(0, len(payload)))
        offset, chunk, done = data.draw(
            st.sampled_from([(0, payload, True), (0, payload[:cut], False), (cut, payload[cut:], True)])
        )
        meta = SnapshotMeta(index, meta_term, members)
        self._deliver(InstallSnapshot(src, "n2", term, meta, offset, chunk, done))

    @rule(data=st.data(), src=SENDERS)
    def request_vote(self, data: st.DataObject, src: str) -> None:
        node = self.node
        term = node.term + data.draw(st.integers(-1, 2))
        last = data.draw(st.integers(0, node.log.last_index() + 2))
        last_term = data.draw(st.integers(0, term + 1))
        pre_vote, transfer = data.draw(st.booleans()), data.draw(st.booleans())
        self._deliver(RequestVote(src, "n2", term, last, last_term, pre_vote, transfer))

    @rule(data=st.data(), src=SENDERS)
    def vote_response(self, data: st.DataObject, src: str) -> None:
        term = self.node.term + data.draw(st.integers(-1, 2))
        self._deliver(
            RequestVoteResponse(src, "n2", term, data.draw(st.booleans()), data.draw(st.booleans()))
        )

    @rule(data=st.data(), src=SENDERS)
    def append_response(self, data: st.DataObject, src: str) -> None:
        node = self.node
        term = node.term + data.draw(st.integers(-1, 1))
        last = node.log.last_index()
        match = data.draw(st.integers(0, last + 3))
        conflict_index = data.draw(st.integers(0, last + 3))
        conflict_term = data.draw(st.integers(0, term + 1))
        read_round = data.draw(st.integers(0, 20))
        success = data.draw(st.booleans())
        self._deliver(
            AppendEntriesResponse(src, "n2", term, success, match, conflict_index, conflict_term, read_round)
        )

    @rule(data=st.data(), src=SENDERS)
    def snapshot_response(self, data: st.DataObject, src: str) -> None:
        node = self.node
        term = node.term + data.draw(st.integers(-1, 1))
        index = data.draw(st.integers(0, node.log.last_index() + 3))
        offset = data.draw(st.integers(0, 5000))
        self._deliver(InstallSnapshotResponse(src, "n2", term, index, offset, data.draw(st.booleans())))

    @rule(data=st.data(), src=SENDERS)
    def timeout_now(self, data: st.DataObject, src: str) -> None:
        self._deliver(TimeoutNow(src, "n2", self.node.term + data.draw(st.integers(-1, 1))))

    # --- honest life ------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.05, 0.1, 0.5, 1.5]))
    def time_passes(self, seconds: float) -> None:
        self.c.now += seconds
        self.node.tick(self.c.now)
        self._settle()

    @rule()
    def client_write(self) -> None:
        self.writes += 1
        self._client_write("n2", 100 + self.writes)
        self._settle()

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def check_safety(self) -> None:
        node, log = self.node, self.node.log
        hard = self.c.disks["n2"].hard_state
        assert node.term >= self.term, "the term went back"
        self.term = node.term
        cast = self.votes.get(hard.term)
        assert cast is None or hard.vote == cast, f"the vote of term {hard.term} changed"
        self.votes[hard.term] = hard.vote
        assert node.commit_index >= self.commit, "the commit index went back"
        assert log.base_index <= node.applied_index <= node.commit_index <= log.last_index()
        for index in range(max(self.commit, log.base_index) + 1, node.commit_index + 1):
            entry = log.entry(index)
            self.committed.setdefault(index, (entry.term, entry.data))
        for index, (term, data) in self.committed.items():
            if index > log.base_index:
                entry = log.entry(index)
                assert (entry.term, entry.data) == (term, data), f"committed entry {index} changed"
        self.commit = node.commit_index
        for index, data in self.sm.applied:
            assert index > self.last_applied, f"applied {index} after {self.last_applied}"
            if data != b"<snapshot>" and index in self.committed:
                assert self.committed[index][1] == data, f"applied a different entry at {index}"
            self.last_applied = index
        self.sm.applied.clear()

    # --- helpers ----------------------------------------------------------------------------------

    def _deliver(self, msg: Message) -> None:
        self.node.step(msg, self.c.now)
        self._settle()

    def _settle(self) -> None:
        """Persist and apply what the node has ready; its messages go nowhere."""
        self.c.flush("n2")
        self.c.queue.clear()
        self.c.to_clients.clear()
        self.node.take_invalid()

    def _client_write(self, leader: str, n: int) -> None:
        request = ClientRequest("c", leader, n, RequestKind.WRITE, command(n))
        self.c.request(request)


def _settings(**overrides: Any) -> settings:
    return settings(
        max_examples=100,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        **overrides,
    )


HostilePeers.TestCase.settings = _settings()
test_hostile_peers_never_crash_or_break_safety = HostilePeers.TestCase
