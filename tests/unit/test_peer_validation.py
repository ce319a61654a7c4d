"""A peer message that decodes but makes no sense is dropped, counted and reported; it never raises.

DESIGN.md rule 7 ("never trust the wire"). Each case steps one crafted message into a node of a healthy
three-node cluster and checks that the node changed nothing (role, term, vote, leader, commit, applied,
log, state machine), sent nothing, counted the drop under the message's kind, reported it for the
runtime to log, and that the cluster still commits and applies writes afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

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
from actors.node import MAX_INVALID_REPORTS, Role
from cluster.kv.machine import KVStateMachine, decode_result, encode_command, encode_query
from tests.unit.raft_fixture import CONFIG, Cluster

MEMBERS = ("n1", "n2", "n3")
_req_ids = itertools.count(1)


def write(c: Cluster, leader: str, key: str, value: object) -> None:
    req_id = next(_req_ids)
    command = encode_command(0, 0, 0, ["put", key, value])
    c.request(ClientRequest("c", leader, req_id, RequestKind.WRITE, command))
    c.deliver_all()


def value_on(c: Cluster, nid: str, key: str) -> object:
    result = decode_result(c.sms[nid].query(encode_query(["get", key])))
    return None if result["kv"] is None else result["kv"]["value"]


def healthy_cluster(config: Any = CONFIG) -> Cluster:
    """n1 leads; three writes are committed and applied everywhere."""
    c = Cluster(3, config=config)
    assert c.elect("n1") == "n1"
    for i in range(3):
        write(c, "n1", f"k{i}", i)
    c.advance_time(0.3)
    assert all(c.nodes[n].applied_index == c.nodes["n1"].log.last_index() for n in c.ids)
    return c


def facts(c: Cluster, nid: str) -> tuple[Any, ...]:
    node = c.nodes[nid]
    log = node.log
    return (
        node.role,
        node.term,
        c.disks[nid].hard_state,
        node.leader,
        node.commit_index,
        node.applied_index,
        log.base_index,
        log.entries_from(log.base_index + 1),
        c.sms[nid].digest(),
        node.status().get("progress"),
    )


def assert_dropped(c: Cluster, nid: str, msg: Message) -> None:
    """Step `msg` into `nid`: nothing changes, nothing is sent, the drop is counted and reported."""
    node = c.nodes[nid]
    c.flush(nid)
    before = facts(c, nid)
    counted = dict(node.status()["dropped_invalid"])
    node.take_invalid()
    node.step(msg, c.now)
    assert c.flush(nid) == []
    assert facts(c, nid) == before
    kind = type(msg).__name__
    counted[kind] = counted.get(kind, 0) + 1
    assert node.status()["dropped_invalid"] == counted
    reported = node.take_invalid()
    assert [(r.peer, r.kind) for r in reported] == [(msg.src, kind)] and reported[0].reason


def assert_serves(c: Cluster) -> None:
    """The cluster still commits a write and every reachable node applies it."""
    c.blocked.clear()
    leader = c.elect()
    key = f"after{next(_req_ids)}"
    write(c, leader, key, "ok")
    c.advance_time(1.0)
    assert [value_on(c, nid, key) for nid in c.ids] == ["ok"] * 3


def kv_snapshot(applied_index: int) -> bytes:
    sm = KVStateMachine()
    sm.apply(applied_index, encode_command(0, 0, 0, ["put", "x", 1]))
    return sm.snapshot()


# --- AppendEntries and InstallSnapshot sent to follower n2 -------------------------------------------------

Forge = Callable[[int, int, int], Message]  # (term, last index, commit) of n2 -> the hostile message


def _entries(term: int, first: int, terms: list[int], gap_after: int | None = None) -> tuple[Entry, ...]:
    out, index = [], first
    for i, t in enumerate(terms):
        out.append(Entry(t, index, EntryKind.COMMAND, encode_command(0, 0, 0, ["put", "evil", i])))
        index += 2 if gap_after == i else 1
    return tuple(out)


FOLLOWER_CASES: dict[str, Forge] = {
    "entries_not_contiguous": lambda t, last, commit: AppendEntries(
        "n1", "n2", t, last, t, _entries(t, last + 1, [t, t, t], gap_after=0), commit, 0
    ),
    "entries_not_starting_after_prev": lambda t, last, commit: AppendEntries(
        "n1", "n2", t, last, t, _entries(t, last + 2, [t]), commit, 0
    ),
    "entry_terms_decreasing": lambda t, last, commit: AppendEntries(
        "n1", "n2", t + 2, last, t, _entries(t, last + 1, [t + 2, t + 1]), commit, 0
    ),
    "entry_term_newer_than_message": lambda t, last, commit: AppendEntries(
        "n1", "n2", t, last, t, _entries(t, last + 1, [t + 1]), commit, 0
    ),
    "entry_term_older_than_prev_log_term": lambda t, last, commit: AppendEntries(
        "n1", "n2", t + 1, last, t, _entries(t, last + 1, [t - 1]), commit, 0
    ),
    "prev_log_term_newer_than_message": lambda t, last, commit: AppendEntries(
        "n1", "n2", t, last, t + 1, (), commit, 0
    ),
    "prev_log_index_0_with_a_term": lambda t, last, commit: AppendEntries("n1", "n2", t, 0, t, (), commit, 0),
    "negative_index": lambda t, last, commit: AppendEntries("n1", "n2", t, -1, 0, (), commit, 0),
    "second_leader_of_the_followers_term": lambda t, last, commit: AppendEntries(
        "n3", "n2", t, last, t, _entries(t, last + 1, [t]), commit, 0
    ),
    "conflict_at_a_committed_index": lambda t, last, commit: AppendEntries(
        "n3", "n2", t + 1, commit - 2, t, _entries(t, commit - 1, [t + 1, t + 1]), commit, 0
    ),
    "snapshot_that_does_not_decode": lambda t, last, commit: InstallSnapshot(
        "n1", "n2", t, SnapshotMeta(commit + 10, t, MEMBERS), 0, b"\x93garbage, not a snapshot", True
    ),
    "snapshot_of_a_newer_term_that_does_not_decode": lambda t, last, commit: InstallSnapshot(
        "n1", "n2", t + 1, SnapshotMeta(commit + 10, t + 1, MEMBERS), 0, b"\x93garbage", True
    ),
    "snapshot_of_a_state_beyond_its_index": lambda t, last, commit: InstallSnapshot(
        "n1", "n2", t, SnapshotMeta(commit + 10, t, MEMBERS), 0, kv_snapshot(commit + 1000), True
    ),
    "snapshot_term_newer_than_message": lambda t, last, commit: InstallSnapshot(
        "n1", "n2", t, SnapshotMeta(commit + 10, t + 1, MEMBERS), 0, kv_snapshot(1), True
    ),
    "snapshot_members_not_ours": lambda t, last, commit: InstallSnapshot(
        "n1", "n2", t, SnapshotMeta(commit + 10, t, ("n1", "n2", "x9")), 0, kv_snapshot(1), True
    ),
    "snapshot_at_index_0": lambda t, last, commit: InstallSnapshot(
        "n1", "n2", t, SnapshotMeta(0, 0, MEMBERS), 0, kv_snapshot(1), True
    ),
    "snapshot_conflicting_with_a_committed_entry": lambda t, last, commit: InstallSnapshot(
        "n3", "n2", t + 1, SnapshotMeta(commit, t + 1, MEMBERS), 0, kv_snapshot(1), True
    ),
    "snapshot_chunk_beyond_the_size_bound": lambda t, last, commit: InstallSnapshot(
        "n1", "n2", t, SnapshotMeta(commit + 10, t, MEMBERS), CONFIG.max_snapshot_bytes, b"x", False
    ),
    "snapshot_from_a_second_leader": lambda t, last, commit: InstallSnapshot(
        "n3", "n2", t, SnapshotMeta(commit + 10, t, MEMBERS), 0, kv_snapshot(1), True
    ),
    "timeout_now_from_a_non_leader": lambda t, last, commit: TimeoutNow("n3", "n2", t),
    "timeout_now_from_a_newer_term": lambda t, last, commit: TimeoutNow("n1", "n2", t + 1),
    "vote_request_with_a_log_term_but_no_log": lambda t, last, commit: RequestVote(
        "n3", "n2", t + 1, 0, t, False, True
    ),
    "term_beyond_any_sane_range": lambda t, last, commit: RequestVote(
        "n3", "n2", 2**63 - 1, last, t, False, True
    ),
    "message_for_another_node": lambda t, last, commit: AppendEntries("n1", "n3", t, last, t, (), commit, 0),
    "message_from_a_stranger": lambda t, last, commit: AppendEntries("n9", "n2", t + 1, last, t, (), 0, 0),
}


@pytest.mark.parametrize("case", sorted(FOLLOWER_CASES))
def test_follower_drops_an_impossible_message(case: str) -> None:
    c = healthy_cluster()
    n2 = c.nodes["n2"]
    assert n2.commit_index >= 3
    assert_dropped(c, "n2", FOLLOWER_CASES[case](n2.term, n2.log.last_index(), n2.commit_index))
    assert_serves(c)


def test_the_same_snapshot_with_a_valid_state_installs() -> None:
    """The garbage-snapshot cases fail for their bytes, not their shape: the real thing installs."""
    c = healthy_cluster()
    n2 = c.nodes["n2"]
    term, index = n2.term, n2.commit_index + 10
    data = c.sms["n1"].snapshot()
    n2.step(InstallSnapshot("n1", "n2", term, SnapshotMeta(index, term, MEMBERS), 0, data, True), c.now)
    c.flush("n2")
    assert n2.status()["dropped_invalid"] == {}
    assert n2.log.base_index == index and n2.applied_index == index


def test_a_chunked_snapshot_that_does_not_decode_is_dropped_with_its_last_chunk() -> None:
    c = healthy_cluster()
    n2 = c.nodes["n2"]
    term = n2.term
    data = c.sms["n1"].snapshot()
    meta = SnapshotMeta(n2.commit_index + 10, term, MEMBERS)
    n2.step(InstallSnapshot("n1", "n2", term, meta, 0, data[:10], False), c.now)
    c.flush("n2")
    c.queue.clear()
    assert n2.status()["dropped_invalid"] == {} and n2.term == term
    assert_dropped(c, "n2", InstallSnapshot("n1", "n2", term, meta, 10, b"\xff" * 8, True))
    assert_serves(c)


# --- messages sent to leader n1 -------------------------------------------------------------------------


def test_leader_drops_append_entries_of_its_own_term() -> None:
    """Paper 5.2: one leader per term. Before, this stopped the node with SafetyViolation."""
    c = healthy_cluster()
    n1 = c.nodes["n1"]
    last = n1.log.last_index()
    assert_dropped(c, "n1", AppendEntries("n2", "n1", n1.term, last, n1.term, (), n1.commit_index, 0))
    assert n1.role is Role.LEADER
    assert_serves(c)


def test_leader_drops_install_snapshot_of_its_own_term() -> None:
    c = healthy_cluster()
    n1 = c.nodes["n1"]
    meta = SnapshotMeta(n1.commit_index, n1.term, MEMBERS)
    assert_dropped(c, "n1", InstallSnapshot("n3", "n1", n1.term, meta, 0, c.sms["n1"].snapshot(), True))
    assert_serves(c)


def test_leader_drops_timeout_now_of_its_own_term() -> None:
    c = healthy_cluster()
    assert_dropped(c, "n1", TimeoutNow("n2", "n1", c.nodes["n1"].term))
    assert_serves(c)


def test_a_match_never_sent_does_not_count_toward_a_quorum() -> None:
    """A follower claiming an index the leader never sent it must not help commit that index."""
    c = healthy_cluster()
    n1 = c.nodes["n1"]
    c.blocked.update({"n2", "n3"})
    claimed = n1.log.last_index() + 1  # the next write's index, claimed before it exists
    assert_dropped(c, "n1", AppendEntriesResponse("n2", "n1", n1.term, True, claimed, 0, 0, 0))
    write(c, "n1", "lonely", 1)
    c.flush("n1")  # the leader's own fsync: with the forged match this would be a majority of two
    assert n1.log.last_index() == claimed and n1.commit_index < claimed
    assert_serves(c)


def test_leader_drops_a_rejection_beyond_what_it_sent() -> None:
    """Before, a rejected index beyond the log sent the leader probing from a non-existent entry."""
    c = healthy_cluster()
    n1 = c.nodes["n1"]
    last = n1.log.last_index()
    assert_dropped(c, "n1", AppendEntriesResponse("n2", "n1", n1.term, False, last + 50, last + 40, 0, 0))
    assert_serves(c)


def test_leader_drops_a_read_round_it_never_started() -> None:
    """A forged ReadIndex confirmation would let the leader answer a read without a real quorum."""
    c = healthy_cluster()
    n1 = c.nodes["n1"]
    held = n1.status()["progress"]["n2"]["match"]  # an index the follower really holds
    forged = AppendEntriesResponse("n2", "n1", n1.term, True, held, 0, 0, 10**9)
    assert_dropped(c, "n1", forged)
    assert_serves(c)


def test_leader_drops_a_success_from_a_newer_term() -> None:
    """A follower succeeds only in the term of the request, so a success of a newer term is a lie;
    honouring it would depose the leader."""
    c = healthy_cluster()
    n1 = c.nodes["n1"]
    assert_dropped(c, "n1", AppendEntriesResponse("n2", "n1", n1.term + 5, True, 1, 0, 0, 0))
    assert_dropped(c, "n1", InstallSnapshotResponse("n3", "n1", n1.term + 5, 1, 1, True))
    assert_dropped(c, "n1", RequestVoteResponse("n2", "n1", n1.term + 5, True, False))
    assert n1.role is Role.LEADER
    assert_serves(c)


def test_leader_drops_a_response_from_a_stranger() -> None:
    c = healthy_cluster()
    n1 = c.nodes["n1"]
    assert_dropped(c, "n1", AppendEntriesResponse("n9", "n1", n1.term, True, 1, 0, 0, 0))
    assert_dropped(c, "n1", InstallSnapshotResponse("n1", "n1", n1.term, 1, 1, True))
    assert_serves(c)


def test_leader_drops_a_snapshot_offset_beyond_what_it_sent() -> None:
    config = replace(CONFIG, snapshot_threshold=10, snapshot_keep=2, snapshot_chunk_bytes=64)
    c = healthy_cluster(config)
    n1 = c.nodes["n1"]
    c.blocked.add("n3")
    for i in range(30):
        write(c, "n1", f"big{i}", "x" * 20)
    c.advance_time(0.3)
    assert n1.log.base_index > c.nodes["n3"].log.last_index()  # n3 now needs the snapshot
    chunks: list[InstallSnapshot] = []
    while not chunks and c.now < 10:  # n3 stays cut off: each chunk is "in flight" when we answer
        c.now += config.heartbeat_interval
        n1.tick(c.now)
        chunks = [m for m in c.flush("n1") if isinstance(m, InstallSnapshot) and m.dst == "n3"]
        c.queue.clear()
    assert chunks and not chunks[0].done and n1.status()["progress"]["n3"]["mode"] == "snapshot"
    index = chunks[0].meta.index
    assert_dropped(c, "n1", InstallSnapshotResponse("n3", "n1", n1.term, index, 10**6, False))
    assert_dropped(c, "n1", InstallSnapshotResponse("n3", "n1", n1.term, index + 10**6, 0, True))
    assert_serves(c)
    assert c.sms["n3"].digest() == c.sms["n1"].digest()


def test_the_runtime_gets_only_the_latest_reports_but_every_drop_is_counted() -> None:
    c = healthy_cluster()
    n1 = c.nodes["n1"]
    flood = MAX_INVALID_REPORTS + 10
    for _ in range(flood):
        n1.step(TimeoutNow("n2", "n1", n1.term), c.now)
    assert n1.status()["dropped_invalid"] == {"TimeoutNow": flood}
    assert len(n1.take_invalid()) == MAX_INVALID_REPORTS
    assert n1.take_invalid() == []
