"""Elections, one claim per test, each naming the section of the Raft paper or dissertation it checks."""

from __future__ import annotations

import random

from actors.contracts import Recovered
from actors.messages import AppendEntries, Entry, EntryKind, HardState, RequestVote, RequestVoteResponse
from actors.node import NodeActor, Role
from cluster.kv.machine import KVStateMachine
from tests.unit.raft_fixture import CONFIG, Cluster


def test_a_single_leader_is_elected_and_others_follow() -> None:
    """Paper 5.2: a candidate that wins a majority becomes leader; the others learn of it."""
    c = Cluster(3)
    leader = c.elect("n1")
    assert leader == "n1"
    c.advance_time(0.3)
    assert c.leaders() == ["n1"]
    assert all(n.leader == "n1" and n.term == 1 for n in c.nodes.values())


def test_single_node_cluster_elects_itself() -> None:
    c = Cluster(1)
    assert c.elect() == "n1"


def test_vote_is_granted_at_most_once_per_term() -> None:
    """Paper 5.2: each server votes for at most one candidate in a given term, first come first served."""
    c = Cluster(3)
    n1 = c.nodes["n1"]
    n1.step(RequestVote("n2", "n1", 1, 0, 0, pre_vote=False, transfer=False), c.now)
    n1.step(RequestVote("n3", "n1", 1, 0, 0, pre_vote=False, transfer=False), c.now)
    votes = [m for m in c.flush("n1") if isinstance(m, RequestVoteResponse)]
    assert [(m.dst, m.granted) for m in votes] == [("n2", True), ("n3", False)]
    # and the vote survives a restart: it was persisted before the answer left (DESIGN rule 3)
    c.restart("n1")
    c.nodes["n1"].step(RequestVote("n3", "n1", 1, 0, 0, pre_vote=False, transfer=False), c.now)
    assert [m.granted for m in c.flush("n1") if isinstance(m, RequestVoteResponse)] == [False]


def test_vote_answer_is_in_the_same_ready_as_the_persisted_vote() -> None:
    """DESIGN rule 3: a vote never leaves before the vote is durable."""
    c = Cluster(3)
    n1 = c.nodes["n1"]
    n1.step(RequestVote("n2", "n1", 4, 0, 0, pre_vote=False, transfer=False), c.now)
    rd = n1.ready(c.now)
    assert rd.hard_state is not None and rd.hard_state.term == 4 and rd.hard_state.vote == "n2"
    assert any(isinstance(m, RequestVoteResponse) and m.granted for m in rd.messages)


def test_vote_only_for_an_up_to_date_log() -> None:
    """Paper 5.4.1: a voter denies a candidate whose log is less up to date than its own."""
    c = Cluster(3)
    c.elect("n1")
    c.request(_write(1))
    c.deliver_all()  # everyone holds entries of term 1 now (no-op + the write)
    n2 = c.nodes["n2"]
    n2.step(RequestVote("n3", "n2", 5, 0, 0, pre_vote=False, transfer=True), c.now)
    assert [m.granted for m in c.flush("n2") if isinstance(m, RequestVoteResponse)] == [False]
    last = n2.log.last_index()
    n2.step(RequestVote("n3", "n2", 6, last, 1, pre_vote=False, transfer=True), c.now)
    assert [m.granted for m in c.flush("n2") if isinstance(m, RequestVoteResponse)] == [True]


def test_pre_vote_keeps_a_partitioned_node_from_inflating_its_term() -> None:
    """Dissertation 9.6: a node that cannot win does not increment its term while cut off."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.blocked.add("n3")
    c.advance_time(10.0)
    assert c.nodes["n3"].term == c.nodes[leader].term == 1
    assert c.nodes["n3"].role in (Role.PRE_CANDIDATE, Role.FOLLOWER)


def test_rejoining_node_does_not_depose_a_healthy_leader() -> None:
    """Dissertation 9.6 with CheckQuorum's lease (4.2.3): the returning node's votes are ignored."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.blocked.add("n3")
    c.advance_time(10.0)
    c.blocked.clear()
    c.advance_time(3.0)
    assert c.leaders() == [leader]
    assert c.nodes[leader].term == 1


def test_leader_without_a_majority_steps_down() -> None:
    """CheckQuorum (dissertation 6.2): without a majority for an election timeout, a leader steps down."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.blocked.update({"n2", "n3"})
    start = c.now
    while c.nodes[leader].role is Role.LEADER and c.now - start < 5.0:
        c.now += 0.05
        c.nodes[leader].tick(c.now)
        c.flush(leader)
        c.queue.clear()
    node = c.nodes[leader]
    assert node.role is Role.FOLLOWER and node.leader is None
    assert c.now - start <= 2 * c.config.election_timeout + 0.1


def test_stale_leader_steps_down_on_a_newer_term() -> None:
    """Paper 5.1: a server that sees a larger term reverts to follower."""
    c = Cluster(3)
    leader = c.elect("n1")
    node = c.nodes[leader]
    node.step(AppendEntries("n2", leader, 7, 0, 0, (), 0, 0), c.now)
    assert node.role is Role.FOLLOWER and node.term == 7 and node.leader == "n2"


def test_messages_from_older_terms_are_answered_with_our_term_and_otherwise_ignored() -> None:
    """Paper 5.1: a request with a stale term is rejected."""
    c = Cluster(3)
    c.elect("n1")
    n2 = c.nodes["n2"]
    n2.step(AppendEntries("n3", "n2", 0, 0, 0, (), 0, 0), c.now)
    replies = c.flush("n2")
    assert len(replies) == 1 and replies[0].term == 1 and replies[0].success is False  # type: ignore[union-attr]
    assert n2.leader == "n1"


def test_leadership_transfer_hands_over_with_timeout_now() -> None:
    """Dissertation 3.10: the leader brings the target up to date and sends TimeoutNow; the target wins."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.request(_write(1))
    c.deliver_all()
    target = c.nodes[leader].transfer_leadership(c.now, "n2")
    assert target == "n2"
    c.deliver_all()
    assert c.leaders() == ["n2"]
    assert c.nodes["n2"].term == 2


def _write(req_id: int):  # type: ignore[no-untyped-def]
    from actors.messages import ClientRequest, RequestKind
    from cluster.kv.machine import encode_command

    return ClientRequest(
        "c", "n1", req_id, RequestKind.WRITE, encode_command(1, req_id, 1, ["put", "k", req_id])
    )


def test_recovered_entries_newer_than_the_recovered_term_raise_the_term_without_a_vote() -> None:
    # Power loss can keep an unsynced batch's entries and lose the hard-state record beside them.
    recovered = Recovered(HardState(2, "n2", 0), None, [Entry(3, 1, EntryKind.NOOP, b"")])
    node = NodeActor("n1", ("n1", "n2", "n3"), CONFIG, KVStateMachine(), random.Random(1), recovered, 0.0)
    assert (node.term, node.role) == (3, Role.FOLLOWER)
    rd = node.ready(0.0)
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (3, None)


def test_a_follower_whose_leader_connection_closed_campaigns_within_its_slot() -> None:
    """A closed connection to the leader (its process died) starts the next election within a few tenths
    of the timeout instead of a whole one; the followers' slots, by rank, never overlap."""
    c = Cluster(3)
    c.elect("n1")
    c.blocked.add("n1")  # dead: nothing more from it
    killed = c.now
    for nid in ("n2", "n3"):
        c.nodes[nid].peer_disconnected("n1", c.now)
        assert c.nodes[nid].leader is None
    n2, n3 = c.nodes["n2"].next_deadline() - killed, c.nodes["n3"].next_deadline() - killed
    tenth = CONFIG.election_timeout / 10
    assert tenth <= n2 < 2 * tenth and 3 * tenth <= n3 < 4 * tenth, (n2, n3)
    c.advance_time(2 * tenth, step=0.01)
    assert c.leaders() == ["n2"] and c.nodes["n3"].leader == "n2"
    assert c.nodes["n2"].status()["stats"]["leader_disconnects"] == 1


def test_a_closed_connection_to_a_node_that_is_not_our_leader_changes_nothing() -> None:
    c = Cluster(3)
    c.elect("n1")
    n2 = c.nodes["n2"]
    deadline = n2.next_deadline()
    n2.peer_disconnected("n3", c.now)
    assert n2.leader == "n1" and n2.next_deadline() == deadline
    c.nodes["n1"].peer_disconnected("n2", c.now)  # a leader keeps leading: CheckQuorum judges followers
    assert c.nodes["n1"].role is Role.LEADER


def test_a_false_alarm_about_a_live_leader_deposes_nobody() -> None:
    """Dissertation 9.6: the other follower, still in the leader's lease, ignores the early pre-vote, and
    the leader's next heartbeat gives the follower its leader back, in the same term."""
    c = Cluster(3)
    c.elect("n1")
    c.nodes["n3"].peer_disconnected("n1", c.now)  # a reset connection; n1 runs on
    c.advance_time(1.0, step=0.01)
    assert c.leaders() == ["n1"] and all(n.term == 1 and n.leader == "n1" for n in c.nodes.values())


def test_a_campaign_ignored_by_a_follower_still_in_the_lease_is_retried_a_slot_later() -> None:
    """Only n2 saw the dead leader's connection close; n3, which did not, ignores pre-votes until the
    leader's lease (one timeout from its last heartbeat) ends (dissertation 9.6). n2 keeps to its short
    slot instead of a whole randomized timeout, so it wins soon after the lease ends."""
    c = Cluster(3)
    c.elect("n1")
    c.advance_time(0.2)  # heartbeats reach both followers
    c.blocked.add("n1")
    killed = c.now
    c.nodes["n2"].peer_disconnected("n1", c.now)
    tenth = CONFIG.election_timeout / 10
    c.advance_time(CONFIG.election_timeout - 2 * tenth, step=0.01)
    assert c.leaders() == [] and c.nodes["n2"].term == 1  # n3 still in the lease: no pre-vote granted
    c.advance_time(4 * tenth, step=0.01)
    assert c.leaders() == ["n2"], c.now - killed
