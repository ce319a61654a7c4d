"""KVService (cluster/kv/service.py) above NodeActor's client-free primitives: checks before proposing,
reserved keys, answers routed by connection, bounded proposals and reads, refusal counters.

Connections here are plain strings chosen by the test, deliberately different from the `src` a request
declares, so a test fails if anything routes by the declared name.
"""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest

from actors.contracts import Refusal
from actors.membership import ConfigChange
from actors.messages import AppendEntries, ClientRequest, ClientResponse, RequestKind, Status
from actors.node import Role
from cluster.kv.machine import encode_command, encode_query
from cluster.kv.members import encode_member_request, parse_member_request
from cluster.kv.ops import command_op, parse_stamped
from cluster.kv.permissions import USERS_PREFIX, user_record
from cluster.kv.service import RESERVED_PREFIX, KVService, Origin, touches_reserved
from tests.unit.raft_fixture import CONFIG, Cluster


def write_op(op: list[object], req_id: int = 1, src: str = "c", dst: str = "n1") -> ClientRequest:
    return ClientRequest(src, dst, req_id, RequestKind.WRITE, encode_command(0, 0, 0, op))


def raw_write(payload: bytes, req_id: int = 1) -> ClientRequest:
    return ClientRequest("c", "n1", req_id, RequestKind.WRITE, payload)


def elected(n: int = 3, **config: int) -> tuple[Cluster, str, KVService[str]]:
    c = Cluster(n, config=replace(CONFIG, **config)) if config else Cluster(n)
    leader = c.elect("n1")
    c.deliver_all()
    c.answered = []
    return c, leader, c.services[leader]


def settle(c: Cluster) -> dict[str, list[ClientResponse]]:
    """Let the cluster run until quiet (a heartbeat or two); every answer given since, by connection."""
    c.deliver_all()
    c.advance_time(0.3)
    out: dict[str, list[ClientResponse]] = {}
    for conn, msg in c.answered:
        out.setdefault(conn, []).append(msg)
    c.answered = []
    return out


# --- checks before proposing (DESIGN.md rule 7) --------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # not msgpack at all
        msgpack.packb([0, 0, 0]),  # wrong arity of the command
        msgpack.packb([0, 0, 0, ["put", "k"]]),  # wrong arity of the op
        msgpack.packb([0, 0, 0, ["explode", "k"]]),  # unknown op
        msgpack.packb([0, 0, 0, ["put", "", 1]]),  # empty key
        msgpack.packb([0, 0, 0, ["put", 7, 1]]),  # key of the wrong type
        msgpack.packb([-1, 0, 0, ["put", "k", 1]]),  # negative session
        msgpack.packb([0, 0, 0, ["put", "k", 1]]) + b"\x00",  # trailing bytes
        msgpack.packb([0, 0, 0, ["put", "k", "x" * (2 << 20)]]),  # oversized
    ],
)
def test_a_write_the_state_machine_would_refuse_is_answered_and_never_logged(payload: bytes) -> None:
    c, leader, service = elected()
    node = c.nodes[leader]
    last = node.log.last_index()
    service.request(raw_write(payload, req_id=9), "conn-a", Origin.CLIENT)
    assert node.log.last_index() == last and not node.has_ready()
    (answer,) = service.take_answers()["conn-a"]
    assert (answer.req_id, answer.status) == (9, Status.BAD_REQUEST) and answer.result
    assert service.refused["invalid_command"] == 1


def test_command_op_names_what_the_state_machine_would_refuse() -> None:
    assert command_op(encode_command(0, 0, 0, ["put", "k", 1])) == ["put", "k", 1]
    with pytest.raises(ValueError, match="unknown op"):
        command_op(msgpack.packb([0, 0, 0, ["explode", "k"]]))


def test_unknown_request_kind_is_a_bad_request() -> None:
    c, leader, service = elected()
    service.request(ClientRequest("c", leader, 4, 99, b""), "conn", Origin.CLIENT)
    (answer,) = service.take_answers()["conn"]
    assert answer.status == Status.BAD_REQUEST and service.refused["unknown_kind"] == 1


# --- reserved keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [
        ["put", RESERVED_PREFIX + "members/n1", {"client_url": "tcp://evil:1"}],
        ["del", RESERVED_PREFIX + "members/n1"],
        ["cas", RESERVED_PREFIX + "x", None, 1],
        ["cas_del", RESERVED_PREFIX + "x", 1],
        ["del_prefix", ""],  # every key, the reserved ones too
        ["del_prefix", "__z"],
        ["del_prefix", RESERVED_PREFIX],
        ["del_prefix", RESERVED_PREFIX + "members/"],
    ],
)
def test_client_writes_that_could_touch_reserved_keys_are_refused(op: list[object]) -> None:
    c, leader, service = elected()
    last = c.nodes[leader].log.last_index()
    service.request(write_op(op, dst=leader), "conn", Origin.CLIENT)
    assert c.nodes[leader].log.last_index() == last
    (answer,) = service.take_answers()["conn"]
    assert answer.status == Status.BAD_REQUEST and b"reserved" in answer.result
    assert service.refused["reserved_key"] == 1


@pytest.mark.parametrize(
    "op", [["put", "__zraft", 1], ["put", "_zraft/x", 1], ["del_prefix", "a"], ["del_prefix", "__zraft0"]]
)
def test_writes_beside_the_reserved_keys_pass(op: list[object]) -> None:
    assert not touches_reserved(op)


def test_members_may_write_reserved_keys_through_the_peer_port() -> None:
    c, leader, service = elected()
    req = write_op(["put", RESERVED_PREFIX + "members/n2", {"client_url": "tcp://h:1"}], dst=leader)
    service.request(req, "peer-n2", Origin.MEMBER)
    got = settle(c)
    (answer,) = got["peer-n2"]
    assert answer.status == Status.OK and service.refused == {}


# --- answers go back on the connection, whatever src says (rule 7) ------------------------------------


def test_answers_follow_the_connection_not_the_declared_src() -> None:
    c, leader, service = elected()
    own = write_op(["put", "a", 1], req_id=1, src="victim", dst=leader)
    service.request(own, "victim-conn", Origin.CLIENT)
    other = write_op(["put", "b", 2], req_id=2, src="victim", dst=leader)
    service.request(other, "thief-conn", Origin.CLIENT)
    read = ClientRequest("victim", leader, 3, RequestKind.READ, encode_query(["get", "a"]))
    service.request(read, "thief-conn", Origin.CLIENT)
    got = settle(c)
    assert [m.req_id for m in got["victim-conn"]] == [1]
    assert sorted(m.req_id for m in got["thief-conn"]) == [2, 3]
    assert all(m.status == Status.OK and m.dst == "victim" for ms in got.values() for m in ms)


def test_the_nodes_own_requests_are_served_and_answered_to_nobody() -> None:
    c, leader, service = elected()
    service.request(write_op(["put", RESERVED_PREFIX + "members/n1", 1], dst=leader), None, Origin.MEMBER)
    assert settle(c) == {} and service.unanswerable == 1


# --- NodeActor's primitives and their bounds ------------------------------------------------------------


def test_only_a_leader_takes_proposals_and_reads() -> None:
    c, leader, _ = elected()
    follower = c.nodes["n2"]
    assert follower.role is Role.FOLLOWER
    assert follower.propose(b"x") is Refusal.NOT_LEADER
    assert follower.read_index(1) is Refusal.NOT_LEADER
    assert c.nodes[leader].transfer_leadership(c.now, "n2") == "n2"
    assert c.nodes[leader].propose(b"x") is Refusal.TRANSFERRING


def test_a_leader_that_cannot_commit_refuses_past_its_bound_on_uncommitted_entries() -> None:
    c, leader, service = elected(max_uncommitted_entries=5)
    c.blocked.update({"n2", "n3"})
    node = c.nodes[leader]
    for i in range(50):
        service.request(write_op(["put", f"k{i}", i], req_id=i, dst=leader), f"conn{i}", Origin.CLIENT)
    c.flush(leader)
    assert node.status()["uncommitted"] == 5
    busy = [m for m in c.queue if isinstance(m, ClientResponse) and m.status == Status.BUSY]
    assert len(busy) == 45 and service.refused["busy_proposals"] == 45
    assert service.describe()["pending_proposals"] == 5


def test_the_byte_bound_admits_one_big_entry_when_nothing_waits() -> None:
    c, leader, _ = elected(max_uncommitted_bytes=1000)
    c.blocked.update({"n2", "n3"})
    node = c.nodes[leader]
    assert isinstance(node.propose(b"x" * 5000), int)  # alone it may exceed the bound
    assert node.propose(b"y") is Refusal.BUSY
    assert node.status()["uncommitted_bytes"] == 5000
    c.blocked.clear()
    c.advance_time(0.5)  # it commits: room again
    assert node.status()["uncommitted"] == 0 and node.status()["uncommitted_bytes"] == 0
    assert isinstance(node.propose(b"y" * 900), int)


def test_pending_reads_are_bounded() -> None:
    c, leader, service = elected(max_pending_reads=3)
    c.blocked.update({"n2", "n3"})
    for i in range(5):
        read = ClientRequest("c", leader, i, RequestKind.READ, encode_query(["get", "k"]))
        service.request(read, "conn", Origin.CLIENT)
    statuses = [m.status for m in service.take_answers()["conn"]]
    assert statuses == [Status.BUSY, Status.BUSY] and service.refused["busy_reads"] == 2


def test_lost_leadership_makes_proposals_unknown_and_reads_not_leader() -> None:
    """The service learns it from the Ready: nothing is left waiting for an answer that never comes."""
    c, leader, service = elected()
    c.blocked.update({"n2", "n3"})
    service.request(write_op(["put", "k", 1], req_id=1, dst=leader), "w", Origin.CLIENT)
    read = ClientRequest("c", leader, 2, RequestKind.READ, encode_query(["get", "k"]))
    service.request(read, "r", Origin.CLIENT)
    c.flush(leader)
    node = c.nodes[leader]
    node.step(AppendEntries("n2", leader, node.term + 1, 0, 0, (), 0, 0), c.now)
    rd = node.ready(c.now)
    assert rd.lost_leadership is not None and rd.failed_reads
    service.on_ready(rd)
    got = service.take_answers()
    assert [m.status for m in got["w"]] == [Status.UNKNOWN]
    assert [m.status for m in got["r"]] == [Status.NOT_LEADER]
    assert service.describe()["pending_proposals"] == 0 and service.describe()["pending_reads"] == 0


def test_status_reports_what_was_refused_by_reason() -> None:
    c, leader, service = elected()
    service.request(raw_write(b"\xc1"), "conn", Origin.CLIENT)
    service.request(write_op(["del_prefix", ""], dst=leader), "conn", Origin.CLIENT)
    c.services["n2"].request(write_op(["put", "k", 1], dst="n2"), "conn", Origin.CLIENT)
    service.request(ClientRequest("c", leader, 5, RequestKind.STATUS, b""), "conn", Origin.CLIENT)
    status = msgpack.unpackb(service.take_answers()["conn"][-1].result)
    assert status["clients"]["refused"] == {"invalid_command": 1, "reserved_key": 1}
    assert status["uncommitted"] == 0 and status["role"] == "leader"
    assert c.services["n2"].refused == {"not_leader": 1}


def test_watch_requests_go_to_the_registry_on_any_role_and_bad_ones_are_refused() -> None:
    c, leader, _ = elected()
    follower = next(n for n in c.ids if n != leader)
    service = c.services[follower]  # a follower serves watches from its applied state
    payload = msgpack.packb({"key": "a/", "prefix": True, "start": 0, "window": 10})
    service.request(ClientRequest("c", follower, 5, RequestKind.WATCH, payload), "conn", Origin.CLIENT)
    (opened,) = service.take_answers()["conn"]
    assert opened.status == Status.STREAM and opened.req_id == 5
    assert service.describe()["watches"]["open"] == 1
    for kind, bad in [
        (RequestKind.WATCH, b"\x01"),
        (RequestKind.WATCH_CANCEL, b"\xc1"),
        (RequestKind.WATCH_ACK, msgpack.packb([5])),
    ]:
        service.request(ClientRequest("c", follower, 6, kind, bad), "conn", Origin.CLIENT)
        (answer,) = service.take_answers()["conn"]
        assert answer.status == Status.BAD_REQUEST
    assert service.refused["invalid_watch"] == 3
    service.request(
        ClientRequest("c", follower, 7, RequestKind.WATCH_CANCEL, msgpack.packb(5)), "conn", Origin.CLIENT
    )
    (cancelled,) = service.take_answers()["conn"]
    assert cancelled.status == Status.WATCH_CANCELLED and cancelled.req_id == 5
    assert service.describe()["watches"]["open"] == 0


# --- client sessions: the leader stamps them (cluster/kv/sessions.py) -------------------------------


def _open_session(c: Cluster, leader: str, req_id: int = 50) -> int:
    register = encode_command(0, 0, 0, ["session_open", 0, 0])
    c.request(ClientRequest("c", leader, req_id, RequestKind.WRITE, register))
    (answer,) = [m for m in settle(c).get("c", []) if m.req_id == req_id]
    result = msgpack.unpackb(answer.result)
    assert result["ok"] is True
    session: int = result["session"]
    return session


def test_the_leader_fills_in_a_registrations_ttl_and_stamp_and_the_id_is_its_index() -> None:
    c = Cluster(3, session_ttl=42.0)
    leader = c.elect("n1")
    c.deliver_all()
    c.advance_time(1.0)
    session = _open_session(c, leader)
    entry = c.nodes[leader].log.entry(session)
    _, _, _, op, _ = parse_stamped(entry.data)
    assert op[0] == "session_open" and op[1] == 42_000 and op[2] > 0  # the client sent 0 and 0
    assert all(sm.session(session) is not None for sm in c.sms.values())


def test_session_writes_carry_the_leaders_log_time_whatever_stamp_the_client_sent() -> None:
    c, leader, _ = elected()
    session = _open_session(c, leader)
    opened_at = c.sms[leader].log_time
    c.advance_time(2.0)
    forged = msgpack.packb([session, 1, 1, ["put", "k", 1], 2**40])  # a client's own "stamp"
    c.request(ClientRequest("c", leader, 7, RequestKind.WRITE, forged))
    settle(c)
    node = c.nodes[leader]
    stamp = parse_stamped(node.log.entry(node.log.last_index()).data)[4]
    assert stamp is not None and opened_at + 1900 <= stamp < opened_at + 3000
    assert c.sms[leader].log_time == stamp


def test_an_idle_session_expires_by_the_log_time_and_its_write_is_refused_unapplied() -> None:
    c = Cluster(3, session_ttl=1.0)
    leader = c.elect("n1")
    c.deliver_all()
    idle = _open_session(c, leader, req_id=50)
    c.advance_time(1.5)  # no entry meanwhile: nothing expires yet, the log time stands still
    assert c.sms[leader].session(idle) is not None
    _open_session(c, leader, req_id=51)  # another client's stamped entry: 1.5 s later
    assert all(sm.session(idle) is None for sm in c.sms.values())
    c.request(ClientRequest("c", leader, 8, RequestKind.WRITE, encode_command(idle, 1, 1, ["put", "k", 1])))
    (answer,) = [m for m in settle(c)["c"] if m.req_id == 8]
    assert msgpack.unpackb(answer.result)["code"] == "session_expired"
    assert all(sm.revision == 0 for sm in c.sms.values())
    clients = c.services[leader].describe()
    assert clients["sessions"] == 1 and clients["sessions_expired"] == 1


def test_membership_changes_from_the_client_port_are_for_administrators() -> None:
    """With users configured, a MEMBER request is allowed, like managing users, only to an administrator
    (a user who may write every key, or a member's key); anyone else is refused and nothing is proposed."""
    c, leader, service = elected()
    admin, reader = "A" * 40, "R" * 40
    for i, (name, key, rights) in enumerate((("admin", admin, [""]), ("reader", reader, ["svc/"])), 1):
        record = user_record(key, rights, rights)
        service.request(
            write_op(["put", USERS_PREFIX + name, record], req_id=i, dst=leader), "setup", Origin.CLIENT
        )
    assert all(m.status == Status.OK for m in settle(c)["setup"])
    add = ConfigChange("add", "n4", "tcp://n4:1", "tcp://n4:2", "K" * 40)  # with n4's CURVE public key
    assert parse_member_request(encode_member_request(add)) == add
    for bad in (replace(add, curve_key="short"), replace(add, op="promote")):
        with pytest.raises(ValueError, match="40 characters of Z85"):
            parse_member_request(encode_member_request(bad))
    request = ClientRequest("c", leader, 10, RequestKind.MEMBER, encode_member_request(add))
    before = c.nodes[leader].configuration_index
    service.request(request, "reader-conn", Origin.CLIENT, reader)
    (denied,) = settle(c)["reader-conn"]
    assert b"permission_denied" in denied.result and b"changes members" in denied.result
    assert c.nodes[leader].configuration_index == before and service.refused["permission_denied"] == 1
    service.request(replace(request, req_id=11), "admin-conn", Origin.CLIENT, admin)
    (done,) = settle(c)["admin-conn"]
    assert done.status == Status.OK and c.nodes[leader].configuration.learners == ("n4",)
    n4 = c.nodes[leader].configuration.get("n4")
    assert n4 is not None and n4.curve_key == "K" * 40


# --- the leader parses a write once (KVStateMachine.parsed) ----------------------------------------------


@pytest.mark.parametrize(
    ("op", "client_stamp"),
    [
        (["put", "k", [1, {"a": b"x"}]], None),
        (["put", "k", 1], 5),  # a stamp the client sent: the leader replaces it (session writes)
        (["del", "k"], None),
        (["cas", "k", None, 2], None),
        (["lease_grant", 9000, 0], None),
    ],
)
def test_the_parse_the_leader_hands_to_apply_is_the_parse_of_the_proposed_entry(
    op: list[object], client_stamp: int | None
) -> None:
    """Whatever the leader does to a command before proposing it (a session's stamp appended, a client's
    stamp replaced, a lease op re-encoded), a parse it hands on equals parsing the entry's bytes again."""
    c, leader, _ = elected()
    session = _open_session(c, leader)
    held = c.sms[leader]._parsed
    node = c.nodes[leader]
    for sid, seq in ((0, 0), (session, 1)):
        command = msgpack.packb([sid, seq, 0, op] + ([] if client_stamp is None else [client_stamp]))
        c.request(ClientRequest("c", leader, seq + 1, RequestKind.WRITE, command))
        index = node.log.last_index()
        data = node.log.entry(index).data
        if index in held:
            assert held[index][0] is data and held[index][1] == parse_stamped(data)
        else:
            assert op[0] == "lease_grant"  # re-encoded with the leader's stamp: apply parses it
        results = settle(c)["c"]
        assert results[-1].status == Status.OK
        assert index not in held  # applied: nothing is kept


def test_apply_takes_a_handed_parse_only_for_that_very_command_object() -> None:
    from cluster.kv.machine import KVStateMachine

    sm = KVStateMachine()
    command = encode_command(0, 0, 0, ["put", "k", "from-bytes"])
    # A parse that differs from the bytes shows which one apply used.
    sm.parsed(1, command, (0, 0, 0, ["put", "k", "handed"], None))
    sm.apply(1, command)
    assert msgpack.unpackb(sm.query(encode_query(["get", "k"])))["kv"]["value"] == "handed"
    equal_but_other = bytes(bytearray(command))  # another leader's entry at the index: same bytes, new object
    sm.parsed(2, command, (0, 0, 0, ["put", "k", "handed"], None))
    sm.apply(2, equal_but_other)
    assert msgpack.unpackb(sm.query(encode_query(["get", "k"])))["kv"]["value"] == "from-bytes"
    sm.parsed(2, command, (0, 0, 0, ["put", "k", "late"], None))  # at or below the applied index: ignored
    sm.parsed(5, command, (0, 0, 0, ["put", "k", "x"], None))
    sm.restore(KVStateMachine().snapshot())  # a snapshot replaces the state: nothing handed survives
    sm.apply(5, command)
    assert msgpack.unpackb(sm.query(encode_query(["get", "k"])))["kv"]["value"] == "from-bytes"
