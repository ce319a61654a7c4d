"""Membership changes in the Raft core: configurations, learners, one change at a time, removal of the
leader, persistence. Each claim names the dissertation section it checks (chapter 4: single-server
changes)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from actors.contracts import Refusal
from actors.membership import (
    ChangeError,
    ConfigChange,
    Configuration,
    Member,
    already_done,
    apply_change,
    decode_configuration,
)
from actors.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ClientRequest,
    EntryKind,
    RequestKind,
    RequestVote,
)
from actors.node import ChangeRefused, Role
from actors.replication import LeaderContext, ReplicationActor
from cluster.kv.machine import encode_command
from tests.unit.raft_fixture import CONFIG, Cluster

THREE = Configuration.of([Member(n, f"tcp://{n}:1", f"tcp://{n}:2") for n in ("n1", "n2", "n3")])


def write(c: Cluster, leader: str, n: int, start: int = 1) -> None:
    for i in range(start, start + n):
        cmd = encode_command(7, i, 1, ["put", f"k{i}", i])
        c.request(ClientRequest("c", leader, i, RequestKind.WRITE, cmd))
    c.deliver_all()


def add_learner(c: Cluster, leader: str, name: str) -> int:
    config = c.nodes[leader].configuration
    change = ConfigChange("add", name, f"tcp://{name}:1", f"tcp://{name}:2")
    index = c.nodes[leader].propose_change(change, c.now)
    assert isinstance(index, int), index
    c.add_node(name, apply_change(config, change))
    c.deliver_all()
    return index


def test_configuration_round_trips_and_keeps_unknown_fields() -> None:
    raw = b'{"members":[{"client_url":"c","key":"abc","learner":true,"name":"a","peer_url":"p"},' + (
        b'{"client_url":"","learner":false,"name":"b","peer_url":""}],"v":1}'
    )
    config = decode_configuration(raw)
    assert config.voters == ("b",) and config.learners == ("a",)
    assert config.get("a") == Member("a", "p", "c", True, (("key", "abc"),))
    assert decode_configuration(config.encode()) == config
    assert config.encode() == raw


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"v":2,"members":[]}',
        b'{"v":1,"members":[]}',
        b'{"v":1,"members":[{"name":"a","peer_url":"","client_url":"","learner":true}]}',  # no voter
        b'{"v":1,"members":[{"name":"","peer_url":"","client_url":"","learner":false}]}',
        b'{"v":1,"members":[{"name":"b","peer_url":"","client_url":"","learner":false},'
        b'{"name":"a","peer_url":"","client_url":"","learner":false}]}',  # unsorted
        b'{"v":1,"members":[{"name":"a","peer_url":1,"client_url":"","learner":false}]}',
    ],
)
def test_bad_configurations_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_configuration(raw)


def test_changes_move_at_most_one_voter_and_refuse_nonsense() -> None:
    """Dissertation 4.1: one server at a time, so majorities of consecutive configurations overlap."""
    added = apply_change(THREE, ConfigChange("add", "n4", "tcp://n4:1"))
    assert added.voters == THREE.voters and added.learners == ("n4",)
    promoted = apply_change(added, ConfigChange("promote", "n4"))
    assert promoted.voters == ("n1", "n2", "n3", "n4")
    moved = apply_change(promoted, ConfigChange("update", "n2", "tcp://new:9"))
    assert moved.get("n2") == Member("n2", "tcp://new:9", "tcp://n2:2")
    for bad, why in [
        (ConfigChange("add", "n1", "tcp://x:1"), "already a member"),
        (ConfigChange("add", "n5", "tcp://n1:1"), "belongs to another member"),
        (ConfigChange("promote", "n1"), "already a voter"),
        (ConfigChange("remove", "n9"), "not a member"),
        (ConfigChange("grow", "n9"), "unknown membership change"),
    ]:
        with pytest.raises(ChangeError, match=why):
            apply_change(promoted, bad)
    with pytest.raises(ChangeError, match="last voter"):
        apply_change(Configuration.voters_only(["a"]), ConfigChange("remove", "a"))


def test_a_member_record_carries_its_curve_key_through_changes_and_the_encoding() -> None:
    """The configuration in force gives each member's CURVE public key (nodes connect with it)."""
    key, other = "k" * 40, "o" * 40
    added = apply_change(THREE, ConfigChange("add", "n4", "tcp://n4:1", "", key))

    def n4(config: Configuration) -> Member:
        member = config.get("n4")
        assert member is not None
        return member

    assert n4(added).curve_key == key and n4(added).as_dict()["curve_public_key"] == key
    assert decode_configuration(added.encode()) == added
    moved = apply_change(added, ConfigChange("update", "n4", "tcp://n4:9"))  # no key: keeps the one it has
    assert n4(moved).curve_key == key and n4(moved).peer_url == "tcp://n4:9"
    rekeyed = apply_change(moved, ConfigChange("update", "n4", "tcp://n4:9", "", other))
    assert n4(rekeyed).curve_key == other
    assert already_done(added, ConfigChange("add", "n4", "tcp://n4:1", "", key))
    assert not already_done(added, ConfigChange("add", "n4", "tcp://n4:1", "", other))
    with pytest.raises(ChangeError, match="belongs to another member"):
        apply_change(added, ConfigChange("add", "n5", "tcp://n5:1", "", key))
    with pytest.raises(ChangeError, match="printable string"):
        apply_change(THREE, ConfigChange("add", "n5", "tcp://n5:1", "", "x" * 65))


def test_a_learner_gets_the_log_but_neither_votes_nor_counts() -> None:
    """Learners (dissertation 4.2.1, "catching up"): they receive entries but are not in any majority."""
    c = Cluster(3)
    leader = c.elect("n1")
    write(c, leader, 5)
    add_learner(c, leader, "n4")
    assert c.nodes["n4"].applied_index == c.nodes[leader].commit_index
    assert c.nodes["n4"].configuration.learners == ("n4",)
    # it replayed the log from the start, through configurations that did not list it: never "removed"
    assert not c.nodes["n4"].removed and not c.nodes["n4"].status()["removed"]
    # with the two other voters cut off, the learner's acknowledgements commit nothing
    c.blocked |= {"n2", "n3"}
    before = c.nodes[leader].commit_index
    write(c, leader, 2, start=10)
    assert c.nodes["n4"].log.last_index() > before
    assert c.nodes[leader].commit_index == before
    c.blocked.clear()
    c.advance_time(1.0)  # the leader resends what the cut-off followers never acknowledged
    assert c.nodes[leader].commit_index > before
    # and a learner never campaigns, however long it hears nothing
    term = c.nodes["n4"].term
    c.blocked = {"n1", "n2", "n3"}
    c.advance_time(10.0)
    n4 = c.nodes["n4"]
    assert n4.role is Role.FOLLOWER and n4.term == term and n4.status()["stats"]["elections"] == 0


def test_promotion_waits_for_the_learner_to_catch_up() -> None:
    c = Cluster(3, config=replace(CONFIG, learner_max_lag=3))
    leader = c.elect("n1")
    add_learner(c, leader, "n4")
    c.blocked.add("n4")
    write(c, leader, 6)
    refused = c.nodes[leader].propose_change(ConfigChange("promote", "n4"), c.now)
    assert isinstance(refused, ChangeRefused)
    assert "n4 is 6 entries behind" in refused.reason and "at most 3" in refused.reason
    c.advance_time(2.0)  # and a learner the leader has not heard from lately is not promoted at all
    silent = c.nodes[leader].propose_change(ConfigChange("promote", "n4"), c.now)
    assert isinstance(silent, ChangeRefused) and "has not answered the leader" in silent.reason
    c.blocked.clear()
    c.advance_time(0.5)
    index = c.nodes[leader].propose_change(ConfigChange("promote", "n4"), c.now)
    assert isinstance(index, int)
    c.deliver_all()
    assert all(n.configuration.voters == ("n1", "n2", "n3", "n4") for n in c.nodes.values())
    # four voters: a majority is three, so two cut off stop commits
    c.blocked |= {"n3", "n4"}
    before = c.nodes[leader].commit_index
    write(c, leader, 1, start=20)
    assert c.nodes[leader].commit_index == before


def test_one_change_at_a_time_and_only_after_an_entry_of_the_leaders_term() -> None:
    """Dissertation 4.1 and its later fix: a leader proposes a change only once an entry of its own term
    committed, and never while another change is uncommitted."""
    c = Cluster(3)
    c.elect("n1")
    c.advance_time(0.3)
    c.blocked = {"n1"}
    n2 = c.nodes["n2"]
    c.now = max(c.now, n2.next_deadline())
    n2.tick(c.now)
    while n2.role is not Role.LEADER:  # deliver one message at a time until n2 wins, then stop
        c.flush_all()
        msg = c.queue.pop(0)
        if msg.dst not in c.blocked and msg.src not in c.blocked:
            c.nodes[msg.dst].step(msg, c.now)
    c.queue.clear()
    assert n2.log.term_at(n2.commit_index) != n2.term  # its no-op is not committed yet
    assert n2.propose_change(ConfigChange("add", "n4", "tcp://n4:1"), c.now) == Refusal.BUSY
    c.advance_time(0.3)
    assert n2.log.term_at(n2.commit_index) == n2.term
    first = n2.propose_change(ConfigChange("add", "n4", "tcp://n4:1"), c.now)
    assert isinstance(first, int)
    assert n2.configuration.learners == ("n4",)  # in force once appended, before it commits
    second = n2.propose_change(ConfigChange("add", "n5", "tcp://n5:1"), c.now)
    assert second == Refusal.BUSY
    c.deliver_all()
    assert n2.commit_index >= first
    assert isinstance(n2.propose_change(ConfigChange("add", "n5", "tcp://n5:1"), c.now), int)


def test_removing_the_leader_hands_over_first_and_the_removed_node_stays_quiet() -> None:
    """Dissertation 4.2.2 (via 3.10's transfer): the leader hands over, then the new leader removes it;
    a removed server never campaigns (4.2.3)."""
    c = Cluster(3)
    leader = c.elect("n1")
    write(c, leader, 3)
    assert c.nodes[leader].propose_change(ConfigChange("remove", leader), c.now) == Refusal.TRANSFERRING
    c.advance_time(0.5)
    new = c.leaders()[0]
    assert new != leader
    c.advance_time(0.3)
    index = c.nodes[new].propose_change(ConfigChange("remove", leader), c.now)
    assert isinstance(index, int)
    c.deliver_all()
    c.advance_time(0.3)
    old = c.nodes[leader]
    assert old.removed and old.status()["removed"]
    term = old.term
    c.blocked = {n for n in c.ids if n != leader}
    c.advance_time(10.0)
    assert old.role is Role.FOLLOWER and old.term == term  # no campaign, no term bump
    c.restart(leader)  # it knows it was removed from its own log, whatever its --initial-cluster says
    assert c.nodes[leader].removed
    c.advance_time(5.0)
    assert c.nodes[leader].role is Role.FOLLOWER and c.nodes[leader].term == term
    c.blocked.clear()
    before = c.nodes[new].commit_index
    write(c, new, 2, start=10)
    c.advance_time(0.3)
    (other,) = [n for n in ("n1", "n2", "n3") if n not in (leader, new)]
    assert c.nodes[new].commit_index == c.nodes[other].applied_index > before  # two voters commit


def test_configurations_survive_restarts_from_the_log_and_from_snapshots() -> None:
    """A configuration is persisted in the log (an entry like any other) and in snapshots (4.1, 5.1)."""
    c = Cluster(3, config=replace(CONFIG, snapshot_threshold=4, snapshot_keep=0))
    leader = c.elect("n1")
    add_learner(c, leader, "n4")
    c.advance_time(0.3)
    c.restart("n2")
    assert c.nodes["n2"].configuration.learners == ("n4",)
    write(c, leader, 12)
    c.advance_time(0.3)
    snap = c.disks["n3"].snapshot
    assert snap is not None and snap.meta.index > c.nodes["n3"].configuration_index - 1
    assert decode_configuration(snap.meta.config).learners == ("n4",)
    c.restart("n3")
    n3 = c.nodes["n3"]
    assert n3.log.base_index >= 1 and n3.configuration.get("n4") == Member(
        "n4", "tcp://n4:1", "tcp://n4:2", True
    )


def test_an_uncommitted_configuration_is_undone_with_its_entry() -> None:
    """4.1: a server uses the latest configuration in its log, committed or not; when a new leader cuts
    that entry, the server falls back to the one before."""
    c = Cluster(5)
    leader = c.elect("n1")
    c.advance_time(0.3)
    c.blocked = {"n3", "n4", "n5"}  # the entry reaches n2 only
    c.nodes[leader].propose_change(ConfigChange("add", "n6", "tcp://n6:1"), c.now)
    c.deliver_all()
    assert c.nodes["n2"].configuration.learners == ("n6",)
    assert c.nodes[leader].commit_index < c.nodes[leader].configuration_index
    c.blocked = {leader, "n2"}
    new = c.elect("n3")
    c.blocked = {leader}
    c.advance_time(1.0)
    assert c.nodes["n2"].leader == new
    assert c.nodes["n2"].configuration.names == ("n1", "n2", "n3", "n4", "n5")
    assert all(e.kind != EntryKind.CONFIG for e in c.nodes["n2"].log.entries_from(1))


def test_messages_from_non_members_are_dropped_and_from_new_members_taken() -> None:
    """DESIGN.md rule 7: only members (and names the runtime authenticates) are heard."""
    c = Cluster(3)
    leader = c.elect("n1")
    c.nodes["n2"].step(RequestVote("n9", "n2", 9, 0, 0, pre_vote=True, transfer=False), c.now)
    assert [i.peer for i in c.nodes["n2"].take_invalid()] == ["n9"]
    add_learner(c, leader, "n4")
    c.advance_time(0.3)
    assert c.nodes[leader].status()["progress"]["n4"]["match"] == c.nodes[leader].log.last_index()
    assert not any(n.take_invalid() for n in c.nodes.values())
    # a removed member is sent the log until it holds its removal, then it is a stranger
    assert isinstance(c.nodes[leader].propose_change(ConfigChange("remove", "n4"), c.now), int)
    c.deliver_all()
    assert c.nodes["n4"].removed
    assert "n4" not in c.nodes[leader].status()["progress"]
    term = c.nodes[leader].term
    c.nodes[leader].step(AppendEntriesResponse("n4", leader, term, True, 1, 0, 0, 0), c.now)
    assert [i.peer for i in c.nodes[leader].take_invalid()] == ["n4"]
    # ...unless the runtime still vouches for it
    c.nodes["n2"].step(RequestVote("n4", "n2", term + 1, 0, 0, pre_vote=True, transfer=False), c.now)
    assert [i.peer for i in c.nodes["n2"].take_invalid()] == ["n4"]
    c.nodes["n2"].set_known_peers(frozenset({"n4"}))
    c.nodes["n2"].step(RequestVote("n4", "n2", term + 1, 0, 0, pre_vote=True, transfer=False), c.now)
    assert not c.nodes["n2"].take_invalid()


@pytest.mark.parametrize("removed", [False, True])
def test_the_commit_is_told_to_learners_and_not_to_a_member_just_removed(removed: bool) -> None:
    """The leader's commit-only AppendEntries (ReplicationActor.send_commit) go to every member of the
    configuration, learners included (they apply and serve watches too), but not to a member just removed,
    which is still sent the log only until it learns that it left."""
    c = Cluster(3)
    leader = c.elect("n1")
    write(c, leader, 3)
    add_learner(c, leader, "n4")
    node = c.nodes[leader]
    last, term = node.log.last_index(), node.term
    repl = ReplicationActor(leader, ("n2", "n3", "n4"), CONFIG, ("n1", "n2", "n3"))
    repl.start(last, c.now)

    def ctx(commit: int) -> LeaderContext:
        return LeaderContext(leader, term, commit, 0, node.log, None, c.now)

    probes = repl.send_all(ctx(last - 1))  # one probe each, carrying the commit index last - 1
    assert sorted(m.dst for m in probes) == ["n2", "n3", "n4"]
    for peer in ("n2", "n3", "n4"):
        assert repl.on_append_response(
            AppendEntriesResponse(peer, leader, term, True, last, 0, 0, 0), ctx(last - 1)
        )
    if removed:
        repl.set_members(("n2", "n3"), ("n1", "n2", "n3"), last + 1, c.now, leading=True)
        assert repl.tracks("n4")  # still sent the log: it has not yet learned that it left
    told = repl.send_commit(ctx(last))
    assert all(isinstance(m, AppendEntries) and not m.entries and m.leader_commit == last for m in told)
    assert sorted(m.dst for m in told) == (["n2", "n3"] if removed else ["n2", "n3", "n4"])
    assert repl.send_commit(ctx(last)) == []  # told once


@pytest.mark.parametrize("who", ["learner", "removed"])
def test_a_non_voter_whose_leader_connection_closes_forgets_the_leader_and_never_campaigns(who: str) -> None:
    """A closed connection to the leader shortens a voter's election timer by its rank among the other
    voters (actors/election.py leader_gone); a learner or a removed member has no rank and no campaign."""
    c = Cluster(3)
    leader = c.elect("n1")
    write(c, leader, 2)
    if who == "learner":
        add_learner(c, leader, "n4")
        name = "n4"
    else:
        assert isinstance(c.nodes[leader].propose_change(ConfigChange("remove", "n3"), c.now), int)
        c.deliver_all()
        c.advance_time(0.3)
        name = "n3"
        assert c.nodes[name].removed
    node = c.nodes[name]
    assert node.leader == leader
    node.peer_disconnected(leader, c.now)
    assert node.leader is None and node.status()["stats"]["leader_disconnects"] == 1
    term = node.term
    c.blocked = set(c.ids)
    c.advance_time(10.0)
    assert node.role is Role.FOLLOWER and node.term == term and node.status()["stats"]["elections"] == 0
