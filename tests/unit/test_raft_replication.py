"""Log replication, commitment, reads and snapshots: one claim per test, naming the section it checks."""

from __future__ import annotations

from dataclasses import replace

from actors.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ClientRequest,
    ClientResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    RequestKind,
    RequestVoteResponse,
    Status,
)
from actors.node import Role
from cluster.kv.machine import decode_result, encode_command, encode_query
from tests.unit.raft_fixture import CONFIG, Cluster


def write(dst: str, req_id: int, key: str = "k", value: object = 1, session: int = 0) -> ClientRequest:
    return ClientRequest(
        "c", dst, req_id, RequestKind.WRITE, encode_command(session, req_id, 1, ["put", key, value])
    )


def read(dst: str, req_id: int, key: str = "k", kind: RequestKind = RequestKind.READ) -> ClientRequest:
    return ClientRequest("c", dst, req_id, kind, encode_query(["get", key]))


def responses(c: Cluster) -> list[ClientResponse]:
    out = [m for m in c.to_clients + c.queue if isinstance(m, ClientResponse)]
    c.queue = [m for m in c.queue if not isinstance(m, ClientResponse)]
    c.to_clients = []
    return out


def entry(term: int, index: int, data: bytes = b"") -> Entry:
    return Entry(term, index, EntryKind.NOOP if not data else EntryKind.COMMAND, data)


def test_committed_write_is_applied_everywhere_and_answered_once() -> None:
    """Paper 5.3: an entry replicated on a majority is committed and applied by every server in order."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.request(write(leader, 1, value="v"))
    c.deliver_all()
    c.advance_time(0.3)  # a heartbeat spreads the commit index
    got = [m for m in responses(c) if m.req_id == 1]
    assert [m.status for m in got] == [Status.OK]
    for nid in c.ids:
        result = decode_result(c.sms[nid].query(encode_query(["get", "k"])))
        assert result["kv"]["value"] == "v"


def test_leader_counts_itself_only_after_its_own_fsync() -> None:
    """DESIGN rule 3 / dissertation 10.2.1: the leader replicates while its own write is in flight, but
    its entry counts toward the quorum only once it is durable."""
    c = Cluster(3)
    leader = c.elect("n1")
    node = c.nodes[leader]
    c.request(write(leader, 1))
    rd = node.ready(c.now)  # handed to storage, not yet durable
    index = rd.entries[-1].index
    sent = [m for m in rd.early_messages if isinstance(m, AppendEntries)]
    assert {m.dst for m in sent} == {"n2", "n3"} and all(m.entries[-1].index == index for m in sent)
    assert not any(isinstance(m, AppendEntries) for m in rd.messages)
    follower_ack = AppendEntriesResponse("n2", leader, node.term, True, index, 0, 0, 0)
    node.step(follower_ack, c.now)
    assert node.commit_index < index  # one follower alone is not a majority of three
    node.advance(rd, c.now)
    assert node.commit_index == index


def test_follower_acknowledges_only_what_it_persists_in_the_same_ready() -> None:
    """DESIGN rule 3: an append acknowledgement never leaves before the entries are durable."""
    c = Cluster(3)
    n2 = c.nodes["n2"]
    n2.step(AppendEntries("n1", "n2", 1, 0, 0, (entry(1, 1),), 0, 0), c.now)
    rd = n2.ready(c.now)
    assert [e.index for e in rd.entries] == [1]
    acks = [m for m in rd.messages if isinstance(m, AppendEntriesResponse)]
    assert acks and acks[0].success and acks[0].match_index == 1


def test_follower_rejects_when_the_previous_entry_does_not_match() -> None:
    """Paper 5.3 (log matching): AppendEntries is refused unless the entry at prev_log_index matches."""
    c = Cluster(3)
    n2 = c.nodes["n2"]
    n2.step(AppendEntries("n1", "n2", 2, 0, 0, (entry(1, 1), entry(1, 2)), 0, 0), c.now)
    c.flush("n2")
    n2.step(AppendEntries("n1", "n2", 2, 2, 2, (entry(2, 3),), 0, 0), c.now)
    (reply,) = c.flush("n2")
    assert isinstance(reply, AppendEntriesResponse) and not reply.success
    assert reply.conflict_term == 1 and reply.conflict_index == 1  # fast backtracking hint
    n2.step(AppendEntries("n1", "n2", 2, 5, 2, (), 0, 0), c.now)
    (reply,) = c.flush("n2")
    assert not reply.success and reply.conflict_term == 0 and reply.conflict_index == 3  # type: ignore[union-attr]


def test_follower_never_truncates_entries_that_match() -> None:
    """Paper 5.3: a delayed, shorter AppendEntries must not remove entries that match the leader's."""
    c = Cluster(3)
    n2 = c.nodes["n2"]
    full = (entry(1, 1), entry(1, 2, b"a"), entry(1, 3, b"b"))
    n2.step(AppendEntries("n1", "n2", 1, 0, 0, full, 0, 0), c.now)
    n2.step(AppendEntries("n1", "n2", 1, 0, 0, full[:1], 0, 0), c.now)  # stale duplicate
    rd = n2.ready(c.now)
    assert rd.truncate_from is None
    assert n2.log.last_index() == 3


def test_follower_truncates_at_a_real_conflict_and_logs_it_durably() -> None:
    """Paper 5.3: a conflicting entry and all that follow it are deleted, then the leader's are appended."""
    c = Cluster(3)
    n2 = c.nodes["n2"]
    n2.step(AppendEntries("n1", "n2", 1, 0, 0, (entry(1, 1), entry(1, 2, b"old")), 0, 0), c.now)
    c.flush("n2")
    n2.step(AppendEntries("n3", "n2", 2, 1, 1, (entry(2, 2, b"new"),), 0, 0), c.now)
    rd = n2.ready(c.now)
    assert rd.truncate_from == 2 and [e.data for e in rd.entries] == [b"new"]


def test_entries_of_earlier_terms_are_not_committed_by_counting_replicas() -> None:
    """Paper 5.4.2 (Figure 8): a leader commits an old-term entry only through an entry of its own term."""
    c = Cluster(3)
    c.elect("n1")
    n1 = c.nodes["n1"]
    c.blocked.update({"n2", "n3"})
    c.request(write("n1", 1))  # a term-1 entry only n1 stores
    c.flush("n1")
    c.queue.clear()
    old_index = n1.log.last_index()
    n1.step(AppendEntries("n2", "n1", 2, 0, 0, (), 0, 0), c.now)  # n1 learns of term 2 and follows
    c.flush("n1")
    c.queue.clear()
    assert n1.role is Role.FOLLOWER and n1.log.last_index() == old_index
    c.now = n1.next_deadline()
    n1.tick(c.now)  # pre-vote, then a real election for term 3, with n2's votes delivered by hand
    n1.step(RequestVoteResponse("n2", "n1", 3, True, pre_vote=True), c.now)
    n1.step(RequestVoteResponse("n2", "n1", 3, True, pre_vote=False), c.now)
    assert n1.role is Role.LEADER and n1.term == 3
    c.flush("n1")
    c.queue.clear()
    noop_index = n1.log.last_index()
    assert noop_index == old_index + 1 and n1.log.term_at(noop_index) == 3
    # n2 now stores the old entry too: a majority holds it, but it is from term 1
    n1.step(AppendEntriesResponse("n2", "n1", 3, True, old_index, 0, 0, 0), c.now)
    assert n1.commit_index < old_index
    # once the term-3 no-op is on a majority, it commits, and the old entry with it
    n1.step(AppendEntriesResponse("n2", "n1", 3, True, noop_index, 0, 0, 0), c.now)
    assert n1.commit_index == noop_index


def test_retried_write_is_applied_once() -> None:
    """Dissertation 6.3: a write retried with the same session and sequence number applies once."""
    c = Cluster(3)
    leader = c.elect("n1")
    register = encode_command(0, 0, 0, ["session_open", 0, 0])
    c.request(ClientRequest("c", leader, 100, RequestKind.WRITE, register))
    c.deliver_all()
    session = decode_result(next(m for m in responses(c) if m.req_id == 100).result)["session"]
    req = ClientRequest("c", leader, 1, RequestKind.WRITE, encode_command(session, 1, 1, ["put", "x", "v"]))
    c.request(req)
    c.request(replace(req, req_id=2))  # the retry
    c.deliver_all()
    got = {m.req_id: decode_result(m.result) for m in responses(c)}
    assert got[1] == got[2]
    kv = decode_result(c.sms[leader].query(encode_query(["get", "x"])))["kv"]
    assert kv["version"] == 1


def test_linearizable_read_waits_for_a_majority_to_confirm_leadership() -> None:
    """Dissertation 6.4 (ReadIndex): a read is answered only after a heartbeat round reaches a majority."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.request(write(leader, 1, value="v"))
    c.deliver_all()
    responses(c)
    c.blocked.update({"n2", "n3"})
    c.request(read(leader, 2))
    c.deliver_all()
    assert not [m for m in responses(c) if m.req_id == 2]  # no majority: no answer
    c.blocked.clear()
    c.request(read(leader, 3))
    c.deliver_all()
    answered = {
        m.req_id: decode_result(m.result)["kv"]["value"] for m in responses(c) if m.status == Status.OK
    }
    assert answered == {2: "v", 3: "v"}  # both confirmed by one round


def test_many_reads_share_one_confirmation_round() -> None:
    """Rule 6 / dissertation 6.4: reads arriving in one turn are confirmed by a single heartbeat round."""
    c = Cluster(3)
    leader = c.elect("n1")
    node = c.nodes[leader]
    for i in range(50):
        c.request(read(leader, 100 + i))
    rd = node.ready(c.now)
    heartbeats = [m for m in rd.early_messages if isinstance(m, AppendEntries)]
    assert len(heartbeats) == 2  # one per follower
    node.advance(rd, c.now)
    c.queue.extend(rd.early_messages + rd.messages)
    c.deliver_all()
    assert len([m for m in responses(c) if m.status == Status.OK]) == 50


def test_followers_redirect_and_serve_serializable_reads_locally() -> None:
    c = Cluster(3)
    leader = c.elect("n1")
    c.request(write(leader, 1, value="v"))
    c.deliver_all()
    c.advance_time(0.3)
    responses(c)
    c.request(read("n2", 5))
    c.request(read("n2", 6, kind=RequestKind.SERIAL_READ))
    c.flush("n2")
    got = {m.req_id: m for m in responses(c)}
    assert got[5].status == Status.NOT_LEADER and got[5].leader_hint == leader
    assert got[6].status == Status.OK and decode_result(got[6].result)["kv"]["value"] == "v"


def test_deposed_leader_reports_unknown_outcome_for_pending_writes() -> None:
    """A write proposed by a leader that loses leadership may or may not commit: say so, never OK."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.blocked.update({"n2", "n3"})
    c.request(write(leader, 1))
    c.flush(leader)
    c.nodes[leader].step(AppendEntries("n2", leader, 5, 0, 0, (), 0, 0), c.now)
    c.flush(leader)
    (resp,) = [m for m in responses(c) if m.req_id == 1]
    assert resp.status == Status.UNKNOWN and resp.leader_hint == "n2"


def test_lagging_follower_catches_up_through_a_chunked_snapshot() -> None:
    """Paper 7: a follower behind the leader's first retained entry receives InstallSnapshot in chunks."""
    config = replace(CONFIG, snapshot_threshold=10, snapshot_keep=2, snapshot_chunk_bytes=64)
    c = Cluster(3, config=config)
    leader = c.elect("n1")
    c.blocked.add("n3")
    for i in range(30):
        c.request(write(leader, i + 1, key=f"k{i}", value="x" * 20))
        c.deliver_all()
    c.advance_time(0.3)
    assert c.nodes[leader].log.base_index > 0  # compacted
    c.blocked.clear()
    for _ in range(100):
        c.now += 0.05
        for nid in c.ids:
            c.nodes[nid].tick(c.now)
        c.deliver_all()
        if c.nodes["n3"].applied_index == c.nodes[leader].applied_index:
            break
    chunks = [m for m in c.sent if isinstance(m, InstallSnapshot) and m.dst == "n3"]
    assert len({m.offset for m in chunks}) > 1  # really chunked
    assert c.sms["n3"].digest() == c.sms[leader].digest()
    assert c.disks["n3"].snapshot is not None  # installed durably
    # and it survives a restart from what it persisted
    c.restart("n3")
    c.flush("n3")  # re-applies the committed entries after the snapshot
    assert c.sms["n3"].digest() == c.sms[leader].digest()


def test_leader_takes_snapshots_and_compacts_its_log() -> None:
    config = replace(CONFIG, snapshot_threshold=5, snapshot_keep=2)
    c = Cluster(1, config=config)
    leader = c.elect()
    for i in range(12):
        c.request(write(leader, i + 1, key=f"k{i}"))
        c.flush(leader)
    node = c.nodes[leader]
    assert node.latest_snapshot is not None and node.latest_snapshot.meta.index >= 5
    assert node.log.base_index == node.latest_snapshot.meta.index - 2
    c.restart(leader)
    assert c.sms[leader].digest() != "" and len(c.sms[leader]) >= 5


def test_snapshot_points_are_staggered_by_member() -> None:
    """Taking a snapshot pauses a node; members snapshot at different indexes so two never pause together,
    each still once per threshold entries (member k of n at multiples of N plus k*N/n)."""
    config = replace(CONFIG, snapshot_threshold=30, snapshot_keep=2)
    c = Cluster(3, config=config)
    leader = c.elect("n1")
    taken: dict[str, list[int]] = {nid: [] for nid in c.nodes}
    for i in range(100):
        c.request(write(leader, i + 1, key=f"k{i}"))
        c.deliver_all()
        for nid, node in c.nodes.items():
            snap = node.latest_snapshot
            if snap is not None and (not taken[nid] or taken[nid][-1] != snap.meta.index):
                taken[nid].append(snap.meta.index)
    assert taken["n1"] == [30, 60, 90]  # phase 0
    assert taken["n2"] == [15, 40, 70, 100]  # phase 10; the first no sooner than 15 entries in
    assert taken["n3"] == [20, 50, 80]  # phase 20


def test_take_replication_hands_out_new_entries_before_ready_and_only_once() -> None:
    c = Cluster(3)
    leader = c.elect("n1")
    c.deliver_all()
    node = c.nodes[leader]
    c.request(write(leader, 1, key="a"))
    early = node.take_replication(c.now)
    assert sorted(m.dst for m in early) == ["n2", "n3"]
    assert all(
        isinstance(m, AppendEntries) and [e.index for e in m.entries] == [node.log.last_index()]
        for m in early
    )
    assert node.take_replication(c.now) == []  # nothing new since
    rd = node.ready(c.now)
    assert not [m for m in rd.early_messages + rd.messages if isinstance(m, AppendEntries) and m.entries]
    node.advance(rd, c.now)
    assert c.nodes["n2"].take_replication(c.now) == []  # followers never replicate


def test_stepping_down_before_ready_leaves_nothing_pending() -> None:
    """Regression (simulator seeds 70, 725, 983): a read or write received just before losing leadership
    must not leave work flagged that only a leader would do, or has_ready() stays true forever."""
    c = Cluster(3)
    leader = c.elect("n1")
    node = c.nodes[leader]
    c.flush(leader)
    c.request(read(leader, 1))
    c.request(write(leader, 2))
    node.step(AppendEntries("n2", leader, node.term + 1, 0, 0, (), 0, 0), c.now)
    c.flush(leader)
    assert not node.has_ready()
    statuses = {m.req_id: m.status for m in responses(c)}
    assert statuses == {1: Status.NOT_LEADER, 2: Status.UNKNOWN}


def test_snapshot_is_also_taken_after_enough_applied_bytes() -> None:
    config = replace(CONFIG, snapshot_threshold=0, snapshot_threshold_bytes=1000, snapshot_keep=0)
    c = Cluster(1, config=config)
    leader = c.elect()
    for i in range(3):
        c.request(write(leader, i + 1, key=f"k{i}", value="x" * 100))
        c.flush(leader)
    assert c.nodes[leader].latest_snapshot is None  # about 3 x 120 bytes: not yet
    for i in range(3, 12):
        c.request(write(leader, i + 1, key=f"k{i}", value="x" * 100))
        c.flush(leader)
    snap = c.nodes[leader].latest_snapshot
    assert snap is not None and 8 <= snap.meta.index <= 11


def test_followers_learn_a_new_commit_without_a_further_proposal_or_heartbeat() -> None:
    """A follower applies an entry (and so serves watches of it) once the leader commits it, not at the
    next write or heartbeat: the leader tells each follower the new commit index in the turn it advances,
    as etcd-raft broadcasts an append after a commit. No clock tick happens here."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.deliver_all()
    c.request(write(leader, 1, value="v"))
    c.deliver_all()  # message delivery only: the heartbeat timer never fires
    index = c.nodes[leader].commit_index
    assert c.nodes[leader].log.entry(index).kind == EntryKind.COMMAND
    for nid in c.ids:
        assert c.nodes[nid].commit_index == index and c.nodes[nid].applied_index == index
        assert decode_result(c.sms[nid].query(encode_query(["get", "k"])))["kv"]["value"] == "v"


def test_a_follower_answers_entries_and_heartbeats_but_not_a_commit_notice_that_tells_nothing_new() -> None:
    """A commit notice (an empty AppendEntries at the follower's match point, in a read round it already
    answered) gets no answer: the answer would tell the leader nothing new, and at one write at a time it
    doubled the messages each write costs. The follower still takes the commit. Entries, a heartbeat's new
    round and the first message of a term are answered."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.deliver_all()
    c.sent.clear()
    c.request(write(leader, 1, value="v"))
    c.deliver_all()  # entries out, answers back, the commit advances, commit notices out: no clock tick
    index = c.nodes[leader].commit_index
    notices = [m for m in c.sent if isinstance(m, AppendEntries) and not m.entries and m.src == leader]
    assert {m.dst for m in notices} == {"n2", "n3"} and all(m.leader_commit == index for m in notices)
    answers = [m for m in c.sent if isinstance(m, AppendEntriesResponse)]
    assert sorted((m.src, m.match_index) for m in answers) == [("n2", index), ("n3", index)]  # the entries'
    for nid in ("n2", "n3"):
        assert c.nodes[nid].commit_index == index and c.nodes[nid].applied_index == index
    c.sent.clear()
    c.advance_time(CONFIG.heartbeat_interval)  # a heartbeat starts a new read round: answered
    c.deliver_all()
    answers = [m for m in c.sent if isinstance(m, AppendEntriesResponse)]
    assert {m.src for m in answers} == {"n2", "n3"}
    heartbeats = [m for m in c.sent if isinstance(m, AppendEntries) and m.src == leader]
    assert {m.read_round for m in answers} == {m.read_round for m in heartbeats} != {notices[0].read_round}


def test_a_follower_acknowledges_new_entries_before_it_applies_committed_ones() -> None:
    """With new entries to persist, a follower's Ready carries their acknowledgement and applies nothing;
    the entries that were committed meanwhile are applied by the next Ready. The leader's commit waits on
    that acknowledgement, not on the follower's apply work."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.deliver_all()
    follower = c.nodes["n2"]
    c.request(write(leader, 1, key="a"))
    rd = c.nodes[leader].ready(c.now)
    first = [m for m in rd.early_messages if isinstance(m, AppendEntries) and m.dst == "n2"]
    c.disks[leader].persist(rd)
    c.nodes[leader].advance(rd, c.now)
    follower.step(first[0], c.now)
    rd = follower.ready(c.now)  # persist and acknowledge the first entry
    c.disks["n2"].persist(rd)
    follower.advance(rd, c.now)
    index = first[0].entries[-1].index
    assert follower.applied_index < index
    # The leader's next AppendEntries carries a new entry and the commit of the first one.
    lead = c.nodes[leader]
    lead.step(AppendEntriesResponse("n2", leader, lead.term, True, index, 0, 0, 0), c.now)
    c.request(write(leader, 2, key="b"))
    second = [m for m in c.nodes[leader].take_replication(c.now) if m.dst == "n2"]
    assert second[0].entries and second[0].leader_commit == index
    follower.step(second[0], c.now)
    rd = follower.ready(c.now)
    assert rd.entries and [m for m in rd.messages if isinstance(m, AppendEntriesResponse)]
    assert follower.applied_index < index  # acknowledged first
    c.disks["n2"].persist(rd)
    follower.advance(rd, c.now)
    assert follower.has_ready()
    rd = follower.ready(c.now)
    assert follower.applied_index == index and not rd.entries
    assert decode_result(c.sms["n2"].query(encode_query(["get", "a"])))["kv"]["value"] == 1


def test_the_commit_is_told_once_per_follower_and_not_when_the_entries_carried_it() -> None:
    """DESIGN rule 6: a follower gets at most one commit-only AppendEntries per advance of the commit,
    and none when an AppendEntries with entries already carried the new commit index to it."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.deliver_all()
    node = c.nodes[leader]
    c.request(write(leader, 1))
    rd = node.ready(c.now)
    index = rd.entries[-1].index
    c.disks[leader].persist(rd)
    node.advance(rd, c.now)
    node.step(AppendEntriesResponse("n2", leader, node.term, True, index, 0, 0, 0), c.now)
    assert node.commit_index == index
    rd = node.ready(c.now)
    told = [m for m in rd.early_messages if isinstance(m, AppendEntries)]
    # n3 has not acknowledged the entry: it cannot take the commit yet, so only n2 is told
    assert [(m.dst, m.entries, m.leader_commit) for m in told] == [("n2", (), index)]
    c.disks[leader].persist(rd)
    node.advance(rd, c.now)
    assert not node.has_ready()  # told once: nothing more to send
    node.step(AppendEntriesResponse("n3", leader, node.term, True, index, 0, 0, 0), c.now)
    rd = node.ready(c.now)
    told = [m for m in rd.early_messages if isinstance(m, AppendEntries)]
    assert [(m.dst, m.entries, m.leader_commit) for m in told] == [("n3", (), index)]
    c.disks[leader].persist(rd)
    node.advance(rd, c.now)
    # A second write's entries carry the commit index: no commit-only message goes with them.
    c.request(write(leader, 2))
    sent = node.take_replication(c.now)
    assert {m.dst for m in sent} == {"n2", "n3"} and all(m.entries for m in sent)
    rd = node.ready(c.now)
    assert not [m for m in rd.early_messages if isinstance(m, AppendEntries)]
