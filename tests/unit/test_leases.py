"""Leases: the replicated table (through KVStateMachine.apply), the leader's expiry tracker and log clock
(manual time), and the KV service's lease protocol over a unit cluster (tests/unit/raft_fixture.py)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from actors.messages import ClientRequest, RequestKind, Status
from cluster.kv.leases import LeaseTable, LeaseTracker, LogClock
from cluster.kv.machine import KVStateMachine, decode_result, encode_command, encode_query
from cluster.kv.ops import LEASE_EXPIRED_CODE, LEASE_NOT_FOUND_CODE
from tests.unit.raft_fixture import Cluster


class Machine:
    def __init__(self, sm: KVStateMachine | None = None) -> None:
        self.sm = sm if sm is not None else KVStateMachine()
        self.index = 0

    def do(self, *op: Any) -> dict[str, Any]:
        self.index += 1
        return decode_result(self.sm.apply(self.index, encode_command(0, 0, 0, list(op))))

    def get(self, key: str) -> Any:
        kv = decode_result(self.sm.query(encode_query(["get", key])))["kv"]
        return None if kv is None else kv["value"]


# --- the replicated table ---------------------------------------------------------------------------


def test_grant_attach_and_revoke_deletes_each_key_as_its_own_revision() -> None:
    m = Machine()
    grant = m.do("lease_grant", 5000, 17)
    assert grant["ok"] and grant["id"] == 1 and grant["ttl_ms"] == 5000
    m.do("put_lease", "a", 1, 1)
    m.do("put_lease", "b", 2, 1)
    m.do("put", "c", 3)
    before = m.sm.revision
    revoked = m.do("lease_revoke", 1, 20)
    assert revoked == {"ok": True, "rev": before + 2, "deleted": 2}
    assert m.get("a") is None and m.get("b") is None and m.get("c") == 3
    assert len(m.sm.leases) == 0
    assert m.sm.leases.log_time == 20


def test_put_to_unknown_lease_writes_nothing() -> None:
    m = Machine()
    before = m.sm.revision
    result = m.do("put_lease", "a", 1, 7)
    assert not result["ok"] and result["code"] == LEASE_NOT_FOUND_CODE
    assert m.get("a") is None and m.sm.revision == before
    assert m.do("lease_revoke", 7, 0)["code"] == LEASE_NOT_FOUND_CODE


def test_plain_put_and_deletes_detach_keys_from_their_lease() -> None:
    m = Machine()
    m.do("lease_grant", 5000, 0)
    for key in ("a", "b", "p/x", "p/y", "c"):
        m.do("put_lease", key, 0, 1)
    m.do("put", "a", "mine now")  # detaches, as in etcd
    m.do("del", "b")
    m.do("del_prefix", "p/")
    m.do("cas", "c", 1, 2)  # not swapped: c stays attached
    lease = m.sm.leases.get(1)
    assert lease is not None and lease.keys == {"c"}
    m.do("lease_revoke", 1, 0)
    assert m.get("a") == "mine now" and m.get("c") is None


def test_checkpoints_record_the_remaining_ttl_and_travel_in_snapshots() -> None:
    m = Machine()
    m.do("lease_grant", 60_000, 0)
    m.do("lease_grant", 60_000, 0)
    assert m.do("lease_checkpoint", [[1, 20_000], [2, 90_000], [9, 1]], 5)["ok"]
    one, two = m.sm.leases.get(1), m.sm.leases.get(2)
    assert one is not None and one.remaining_ms == 20_000
    assert two is not None and two.remaining_ms is None  # at or above the TTL: no checkpoint
    restored = KVStateMachine()
    restored.restore(m.sm.snapshot())
    assert restored.leases.encoded() == m.sm.leases.encoded()
    tracker = LeaseTracker(election_timeout=1.0)
    tracker.sync(restored.leases, term=4, now=100.0)
    assert tracker.deadline(1) == 120.0 and tracker.deadline(2) == 161.0


def test_lease_count_is_bounded() -> None:
    m = Machine(KVStateMachine(max_leases=2))
    assert m.do("lease_grant", 5000, 0)["ok"] and m.do("lease_grant", 5000, 0)["ok"]
    refused = m.do("lease_grant", 5000, 0)
    assert not refused["ok"] and "too many leases" in refused["error"]
    m.do("lease_revoke", 1, 0)
    assert m.do("lease_grant", 5000, 0)["id"] == 3


def test_log_time_never_goes_backwards() -> None:
    m = Machine()
    m.do("lease_grant", 5000, 100)
    m.do("lease_grant", 5000, 40)  # a stamp from a leader that proposed earlier in log time
    assert m.sm.leases.log_time == 100


def test_leases_are_in_snapshots_and_digests() -> None:
    m = Machine()
    m.do("lease_grant", 5000, 3)
    m.do("put_lease", "a", 1, 1)
    m.do("put", "b", 2)
    data = m.sm.snapshot()
    job = m.sm.snapshot_job()
    out = None
    while out is None:
        out = job.step()
    assert out == data
    other = KVStateMachine()
    other.restore(data)
    assert other.digest() == m.sm.digest()
    assert other.leases.encoded() == m.sm.leases.encoded()
    assert other.leases.lease_of("a") == 1 and other.leases.generation == 1
    plain = Machine()
    plain.do("lease_grant", 6000, 3)
    plain.do("put", "a", 1)
    plain.do("put", "b", 2)
    assert plain.sm.digest() != m.sm.digest()  # the lease's key set is replicated data


def test_snapshot_with_a_lease_key_that_does_not_exist_is_refused() -> None:
    m = Machine()
    m.do("lease_grant", 5000, 0)
    m.do("put_lease", "a", 1, 1)
    raw = msgpack.unpackb(m.sm.snapshot())
    raw[7][2][0][3] = ["ghost"]
    with pytest.raises(ValueError, match="lease key"):
        KVStateMachine().restore(msgpack.packb(raw))


def test_a_format_1_snapshot_restores_without_leases() -> None:
    m = Machine()
    m.do("put", "a", 1)
    raw = msgpack.unpackb(m.sm.snapshot())
    old = [1, *raw[1:7]]
    restored = KVStateMachine()
    restored.restore(msgpack.packb(old))
    assert len(restored.leases) == 0 and Machine(restored).get("a") == 1


def test_lease_queries_are_refused_by_the_state_machine() -> None:
    result = decode_result(KVStateMachine().query(encode_query(["lease_keepalive", 1])))
    assert not result["ok"] and "leader" in result["error"]


# --- the leader's tracker and clock (manual time) --------------------------------------------------------


def table_with(*ttls_ms: int) -> LeaseTable:
    table = LeaseTable()
    for ttl in ttls_ms:
        table.grant(ttl, 0)
    return table


def test_a_new_leadership_gives_every_lease_its_ttl_plus_the_election_timeout() -> None:
    table = table_with(3000, 10_000)
    tracker = LeaseTracker(election_timeout=1.0)
    tracker.sync(table, term=2, now=100.0)
    assert tracker.deadline(1) == 104.0 and tracker.deadline(2) == 111.0
    assert tracker.due(103.9, retry_after=2.0) == []
    assert tracker.due(104.0, retry_after=2.0) == [1]
    assert tracker.due(105.0, retry_after=2.0) == []  # its revoke is in flight
    assert tracker.due(106.0, retry_after=2.0) == [1]  # ... and was never applied: propose it again
    tracker.sync(table, term=3, now=200.0)  # a later leadership starts afresh
    assert tracker.deadline(1) == 204.0


def test_keepalive_renews_only_a_live_lease() -> None:
    table = table_with(3000)
    tracker = LeaseTracker(election_timeout=1.0)
    tracker.sync(table, term=1, now=0.0)
    assert tracker.keepalive(1, 3.0, now=3.5)
    assert tracker.deadline(1) == 6.5
    assert tracker.due(6.0, retry_after=2.0) == []
    assert not tracker.keepalive(1, 3.0, now=6.5)  # expired: it stays expired
    assert not tracker.keepalive(2, 3.0, now=1.0)  # unknown
    assert tracker.due(6.5, retry_after=2.0) == [1]


def test_tracker_follows_grants_and_removals_and_restores() -> None:
    table = table_with(3000)
    tracker = LeaseTracker(election_timeout=1.0)
    tracker.sync(table, term=1, now=0.0)
    table.grant(5000, 0)
    table.remove(1)
    tracker.sync(table, term=1, now=10.0)
    assert tracker.deadline(1) is None and tracker.deadline(2) == 16.0
    assert tracker.due(100.0, retry_after=2.0) == [2]
    table.replace((5, 0, {}))
    tracker.sync(table, term=1, now=101.0)
    assert len(tracker) == 0


def test_stale_heap_entries_stay_bounded() -> None:
    table = table_with(3000)
    tracker = LeaseTracker(election_timeout=1.0)
    tracker.sync(table, term=1, now=0.0)
    for i in range(1000):
        tracker.keepalive(1, 3.0, now=i * 0.001)
    assert len(tracker._heap) <= 2 * len(tracker) + 65


def test_log_clock_continues_from_the_applied_stamp_across_leaders() -> None:
    old, new = LogClock(), LogClock()
    assert old.stamp(term=1, now=5000.0, applied_log_time=0) == 0
    assert old.stamp(term=1, now=5002.5, applied_log_time=0) == 2500
    # another node, whose monotonic clock reads far less, leads next
    assert new.stamp(term=2, now=3.0, applied_log_time=2500) == 2500
    assert new.stamp(term=2, now=4.0, applied_log_time=2500) == 3500
    assert new.stamp(term=2, now=3.5, applied_log_time=2500) == 3500  # never backwards


# --- the service's lease protocol on a unit cluster ------------------------------------------------------


def elected() -> tuple[Cluster, str]:
    c = Cluster(3)
    leader = c.elect("n1")
    c.deliver_all()
    c.answered = []
    return c, leader


def ask(c: Cluster, kind: RequestKind, payload: bytes, dst: str) -> tuple[Status, bytes]:
    c.answered = []
    c.request(ClientRequest("c", dst, 9, kind, payload))
    c.deliver_all()
    c.advance_time(0.2)
    answers = [m for conn, m in c.answered if conn == "c"]
    assert len(answers) == 1, answers
    return Status(answers[0].status), answers[0].result


def write(c: Cluster, dst: str, *op: Any) -> dict[str, Any]:
    status, result = ask(c, RequestKind.WRITE, encode_command(0, 0, 0, list(op)), dst)
    assert status is Status.OK, (status, result)
    return decode_result(result)


def query(c: Cluster, dst: str, *op: Any, kind: RequestKind = RequestKind.READ) -> dict[str, Any]:
    status, result = ask(c, kind, encode_query(list(op)), dst)
    assert status is Status.OK, (status, result)
    return decode_result(result)


def test_a_grant_below_the_minimum_ttl_is_refused_before_proposing() -> None:
    c, leader = elected()
    applied = c.nodes[leader].applied_index
    status, text = ask(c, RequestKind.WRITE, encode_command(0, 0, 0, ["lease_grant", 2999, 0]), leader)
    assert status is Status.BAD_REQUEST and b"lease ttl must be between 3s" in text
    assert c.nodes[leader].applied_index == applied


def test_the_leader_stamps_grants_with_its_log_time() -> None:
    c, leader = elected()
    c.advance_time(2.0)
    grant = write(c, leader, "lease_grant", 5000, 999_999_999)  # a client's stamp is overwritten
    table = c.sms[leader].leases
    lease = table.get(grant["id"])
    assert lease is not None and 1500 <= lease.granted_at <= 3000
    assert all(c.sms[n].leases.encoded() == table.encoded() for n in c.ids)


def test_a_lease_write_sent_to_a_follower_does_not_move_its_log_time() -> None:
    """Only the leader stamps: a follower that stamped refused grants would carry its own clock's
    elapsed time into its log time and, once it leads, grant leases that look that much older."""
    c, leader = elected()
    followers = [n for n in c.ids if n != leader]
    for seconds in (0.0, 200.0):  # each follower's service clock 200 s on at its second refused grant
        for follower in followers:
            c.services[follower].set_time(c.now + seconds)
            grant = encode_command(0, 0, 0, ["lease_grant", 5000, 0])
            assert ask(c, RequestKind.WRITE, grant, follower)[0] is Status.NOT_LEADER
    log_time = c.sms[followers[0]].leases.log_time
    c.blocked.add(leader)  # the old leader falls silent
    new_leader = c.elect(followers[0])
    grant_id = write(c, new_leader, "lease_grant", 5000, 0)["id"]
    lease = c.sms[new_leader].leases.get(grant_id)
    assert lease is not None and lease.granted_at - log_time < 100_000  # not the 200 s the follower saw


def test_a_kept_alive_lease_lives_and_an_abandoned_one_is_revoked_within_ttl() -> None:
    c, leader = elected()
    kept = write(c, leader, "lease_grant", 3000, 0)["id"]
    dropped = write(c, leader, "lease_grant", 3000, 0)["id"]
    write(c, leader, "put_lease", "kept", 1, kept)
    write(c, leader, "put_lease", "dropped", 1, dropped)
    granted_at = c.now
    for _ in range(10):  # 10 x (0.8 + 0.2) s: far beyond the TTL
        assert query(c, leader, "lease_keepalive", kept)["ttl"] > 2.5
        c.advance_time(0.8)
    for nid in c.ids:
        m = Machine(c.sms[nid])
        assert m.get("kept") == 1 and m.get("dropped") is None
    assert c.services[leader].leases_expired == 1
    info = query(c, leader, "lease_info", kept)
    assert info["keys"] == ["kept"] and info["granted_ttl"] == 3.0
    assert [item["id"] for item in query(c, leader, "lease_list")["leases"]] == [kept]
    gone = query(c, leader, "lease_keepalive", dropped)
    assert gone["code"] == LEASE_NOT_FOUND_CODE
    assert c.now - granted_at < 3.0 + 1.0 + 10  # sanity of the loop above, not a timing claim


def test_a_put_to_an_expired_lease_not_yet_revoked_is_refused() -> None:
    c, leader = elected()
    lease_id = write(c, leader, "lease_grant", 3000, 0)["id"]
    c.now += 4.5  # past TTL + grace, and nothing delivered: the revoke is proposed, not yet committed
    c.services[leader].tick(c.now)
    assert c.services[leader].leases_expired == 1
    put = encode_command(0, 0, 0, ["put_lease", "k", 1, lease_id])
    c.answered = []
    c.request(ClientRequest("c", leader, 9, RequestKind.WRITE, put))
    c.flush(leader)
    answers = [m for conn, m in c.answered if conn == "c"]
    assert len(answers) == 1 and decode_result(answers[0].result)["code"] == LEASE_EXPIRED_CODE
    c.deliver_all()
    assert Machine(c.sms[leader]).get("k") is None and len(c.sms[leader].leases) == 0


def test_a_serializable_lease_query_is_refused() -> None:
    c, leader = elected()
    lease_id = write(c, leader, "lease_grant", 3000, 0)["id"]
    follower = next(n for n in c.ids if n != leader)
    answer = query(c, follower, "lease_keepalive", lease_id, kind=RequestKind.SERIAL_READ)
    assert not answer["ok"]
    status, _ = ask(c, RequestKind.READ, encode_query(["lease_keepalive", lease_id]), follower)
    assert status is Status.NOT_LEADER


def test_a_leader_change_never_expires_a_live_lease() -> None:
    c, leader = elected()
    lease_id = write(c, leader, "lease_grant", 3000, 0)["id"]
    write(c, leader, "put_lease", "k", 1, lease_id)
    c.advance_time(2.5)
    assert query(c, leader, "lease_keepalive", lease_id)["ok"]
    renewed = c.now
    c.blocked = {leader}
    new = c.elect()
    assert new != leader
    promoted = c.now
    # the new leader knows nothing of the renewal, but gives the lease its full TTL plus the election timeout
    while c.now < promoted + 3.0 + 1.0 - 0.1:
        c.advance_time(0.1)
        assert Machine(c.sms[new]).get("k") == 1
    assert c.now >= renewed + 3.0
    c.advance_time(1.0)
    assert Machine(c.sms[new]).get("k") is None  # and it does expire once nobody renews it


def test_a_client_cannot_write_a_checkpoint() -> None:
    c, leader = elected()
    lease_id = write(c, leader, "lease_grant", 5000, 0)["id"]
    payload = encode_command(0, 0, 0, ["lease_checkpoint", [[lease_id, 1]], 0])
    status, text = ask(c, RequestKind.WRITE, payload, leader)
    assert status is Status.BAD_REQUEST and b"leader only" in text


def checkpointing_cluster() -> tuple[Cluster, str]:
    c = Cluster(3, lease_checkpoint_interval=1.0)  # leases above 2 s are checkpointed every second
    leader = c.elect("n1")
    c.deliver_all()
    return c, leader


def test_checkpoints_end_an_abandoned_lease_despite_leader_changes_faster_than_its_ttl() -> None:
    c, leader = checkpointing_cluster()
    lease_id = write(c, leader, "lease_grant", 6000, 0)["id"]
    write(c, leader, "put_lease", "k", 1, lease_id)
    granted = c.now
    while lease_id in c.sms[leader].leases and c.now < granted + 60:
        c.advance_time(2.0)  # each leader sees the lease for 2 s only: a fresh TTL each time never ends it
        c.blocked = {leader}
        leader = c.elect()
        c.blocked = set()
        c.deliver_all()
    assert lease_id not in c.sms[leader].leases, "the lease outlived 60 s of leader changes"
    assert Machine(c.sms[leader]).get("k") is None


def test_a_keepalive_resets_the_checkpoint_before_it_is_answered() -> None:
    c, leader = checkpointing_cluster()
    lease_id = write(c, leader, "lease_grant", 6000, 0)["id"]
    write(c, leader, "put_lease", "k", 1, lease_id)
    c.advance_time(3.5)  # checkpoints of a remaining below the TTL are applied
    lease = c.sms[leader].leases.get(lease_id)
    assert lease is not None and lease.remaining_ms is not None and lease.remaining_ms < 6000
    assert query(c, leader, "lease_keepalive", lease_id)["ttl"] > 5.5
    renewed = c.now
    for nid in c.ids:
        replica = c.sms[nid].leases.get(lease_id)
        assert replica is not None and replica.remaining_ms is None
    c.blocked = {leader}
    new = c.elect()
    c.blocked = set()
    while c.now < renewed + 6.0:  # the renewal holds under the new leader for the whole TTL
        assert Machine(c.sms[new]).get("k") == 1
        c.advance_time(0.2)
