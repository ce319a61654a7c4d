"""The I/O-free parts of the node runtime: frame admission (cluster/node/inbound.py), the route table, the log
rate limiter, the member advertiser and the graceful-stop sequence. No sockets, manual time."""

from __future__ import annotations

import signal

import msgpack
import pytest
import zmq

from actors.messages import ClientRequest, ClientResponse, RequestKind, RequestVote, Status
from cluster.kv.machine import MAX_RANGE_LIMIT, KVStateMachine, encode_command
from cluster.node.advertise import Advertiser, client_urls, member_key
from cluster.node.inbound import (
    Rejected,
    admit_client_frame,
    admit_dealer_frame,
    admit_peer_frame,
    salvage_ids,
)
from cluster.node.shutdown import GracefulStop
from tests.unit.raft_fixture import Cluster
from transport.codec import encode, encode_batch
from transport.endpoints import recv_batch, split_envelope
from transport.ratelimit import LogRateLimiter

PEERS = frozenset({"n2", "n3"})
LIMIT = 1 << 20


def vote(src: str = "n2", dst: str = "n1") -> RequestVote:
    return RequestVote(src, dst, 3, 0, 0, False, False)


def rejected_counter(call: object) -> str:
    assert callable(call)
    with pytest.raises(Rejected) as info:
        call()
    return info.value.counter


# --- admission ---------------------------------------------------------------------------------------


def test_a_peer_message_from_its_own_identity_is_admitted() -> None:
    assert admit_peer_frame(b"n2", encode(vote()), PEERS, LIMIT) == vote()


def test_peer_frames_are_refused_by_kind() -> None:
    frame = encode(vote())
    assert rejected_counter(lambda: admit_peer_frame(b"n9", frame, PEERS, LIMIT)) == "unknown_peer"
    assert rejected_counter(lambda: admit_peer_frame(b"\xff\xfe", frame, PEERS, LIMIT)) == "unknown_peer"
    assert rejected_counter(lambda: admit_peer_frame(b"n3", frame, PEERS, LIMIT)) == "spoofed_peer"
    assert rejected_counter(lambda: admit_peer_frame(b"n2", frame[:-1], PEERS, LIMIT)) == "malformed_peer"
    assert rejected_counter(lambda: admit_peer_frame(b"n2", frame, PEERS, len(frame) - 1)) == "malformed_peer"
    response = encode(ClientResponse("n2", "n1", 1, Status.OK, b"", ""))
    assert rejected_counter(lambda: admit_peer_frame(b"n2", response, PEERS, LIMIT)) == "unexpected_peer"


def test_only_a_peers_own_advertiser_may_send_client_requests_on_the_peer_port() -> None:
    own = ClientRequest("n2/advertise", "n1", 1, RequestKind.WRITE, b"x")
    assert admit_peer_frame(b"n2", encode(own), PEERS, LIMIT) == own
    other = ClientRequest("n3/advertise", "n1", 1, RequestKind.WRITE, b"x")
    assert rejected_counter(lambda: admit_peer_frame(b"n2", encode(other), PEERS, LIMIT)) == "spoofed_peer"


def test_the_client_port_takes_client_requests_only() -> None:
    req = ClientRequest("c", "n1", 5, RequestKind.READ, b"q")
    assert admit_client_frame(encode(req), LIMIT) == [req]
    assert rejected_counter(lambda: admit_client_frame(encode(vote()), LIMIT)) == "unexpected_client"
    assert rejected_counter(lambda: admit_client_frame(b"\x91", LIMIT)) == "malformed_client"


def test_the_client_port_takes_a_batch_of_requests_in_order() -> None:
    reqs = [ClientRequest("c", "n1", i, RequestKind.WRITE, bytes([i])) for i in range(1, 6)]
    assert admit_client_frame(encode_batch(reqs), LIMIT) == reqs
    answers = [ClientResponse("n1", "c", i, Status.OK, b"", "") for i in (1, 2)]
    assert rejected_counter(lambda: admit_client_frame(encode_batch(answers), LIMIT)) == "unexpected_client"
    assert salvage_ids(encode_batch(reqs), LIMIT) == ("c", 0)  # a refused batch: sender known, id not


def test_our_dealers_take_advertise_answers_from_that_peer_only() -> None:
    answer = ClientResponse("n2", "n1/advertise", 1, Status.OK, b"", "")
    assert admit_dealer_frame("n2", encode(answer), "n1", LIMIT) == [answer]
    from_n3 = encode(answer)
    assert rejected_counter(lambda: admit_dealer_frame("n3", from_n3, "n1", LIMIT)) == "unexpected_peer"
    to_client = encode(ClientResponse("n2", "someone", 1, Status.OK, b"", ""))
    assert rejected_counter(lambda: admit_dealer_frame("n2", to_client, "n1", LIMIT)) == "unexpected_peer"


def test_salvage_ids_finds_sender_and_request_id_of_a_refused_request() -> None:
    bad_kind = msgpack.packb([1, 8, "client-7", "n1", 42, 99, b""], use_bin_type=True)
    assert salvage_ids(bad_kind, LIMIT) == ("client-7", 42)
    assert salvage_ids(msgpack.packb([1, 8, "c", "n1", -1, 0, b""]), LIMIT) == ("c", 0)
    for junk in (b"", b"\xc1", msgpack.packb([1, 3, "c", "n1", 1]), msgpack.packb({"a": 1}), b"\x00" * 10):
        assert salvage_ids(junk, LIMIT) == ("", 0)
    assert salvage_ids(bad_kind, len(bad_kind) - 1) == ("", 0)


def test_split_envelope() -> None:
    assert split_envelope([b"id", b"payload"]) == ((b"id",), b"payload")
    assert split_envelope([b"id", b"", b"payload"]) == ((b"id", b""), b"payload")  # a REQ socket's delimiter
    assert split_envelope([b"id"]) is None
    assert split_envelope([b"id"] + [b"x"] * 9) is None
    assert split_envelope([b"id", b"x" * 1000, b"payload"]) is None


# --- small helpers -------------------------------------------------------------------------------------


def test_rate_limiter_reports_what_it_suppressed() -> None:
    limiter = LogRateLimiter(5.0)
    assert limiter.allow("bad", 0.0) == 0
    assert limiter.allow("bad", 1.0) is None
    assert limiter.allow("bad", 2.0) is None
    assert limiter.allow("other", 2.0) == 0
    assert limiter.allow("bad", 5.0) == 2
    assert limiter.allow("bad", 6.0) is None


# --- advertising ---------------------------------------------------------------------------------------


def test_advertiser_writes_until_the_local_state_shows_its_record() -> None:
    sm = KVStateMachine()
    adv = Advertiser("n1", "tcp://h:7001", "tcp://h:7101", retry_interval=2.0)
    assert adv.poll(0.0, None, sm) is None and adv.next_due() == float("inf")  # no leader: nothing to do
    req = adv.poll(1.0, "n2", sm)
    assert req is not None
    assert (req.src, req.dst, req.kind) == ("n1/advertise", "n2", RequestKind.WRITE)
    assert adv.poll(2.0, "n2", sm) is None  # retry interval not over yet
    assert adv.next_due() == 3.0
    retry = adv.poll(3.0, "n2", sm)
    assert retry is not None and retry.req_id == req.req_id + 1
    assert adv.poll(3.5, "n3", sm) is not None  # a new leader: at once

    sm.apply(1, req.payload)  # the put commits and is applied locally
    assert adv.poll(10.0, "n3", sm) is None and adv.published
    assert client_urls(sm) == {"n1": "tcp://h:7001"}

    sm.apply(2, encode_command(0, 0, 0, ["put", member_key("n1"), {"client_url": "old"}]))
    assert adv.poll(100.0, "n3", sm) is not None  # the stored record is stale again


def test_client_urls_skips_records_of_the_wrong_shape() -> None:
    sm = KVStateMachine()
    sm.apply(1, encode_command(0, 0, 0, ["put", member_key("a"), {"client_url": "tcp://a:1"}]))
    sm.apply(2, encode_command(0, 0, 0, ["put", member_key("b"), "not a map"]))
    sm.apply(3, encode_command(0, 0, 0, ["put", member_key("c"), {"client_url": 5}]))
    sm.apply(4, encode_command(0, 0, 0, ["put", "unrelated", {"client_url": "tcp://x:1"}]))
    assert client_urls(sm) == {"a": "tcp://a:1"}


def test_client_urls_reads_every_page_of_members() -> None:
    sm = KVStateMachine()
    count = MAX_RANGE_LIMIT + 3  # more than one page holds
    for i in range(count):
        sm.apply(i + 1, encode_command(0, 0, 0, ["put", member_key(f"n{i:05d}"), {"client_url": f"u{i}"}]))
    urls = client_urls(sm)
    assert len(urls) == count and urls["n00000"] == "u0" and urls[f"n{count - 1:05d}"] == f"u{count - 1}"


# --- graceful stop -------------------------------------------------------------------------------------


def test_a_follower_stops_at_once() -> None:
    cluster = Cluster(3)
    leader = cluster.elect("n1")
    stop = GracefulStop("n2", election_timeout=1.0)
    assert not stop.step(cluster.nodes["n2"], cluster.now)  # nothing requested
    stop.request(signal.SIGTERM)
    assert stop.step(cluster.nodes["n2"], cluster.now) and stop.done
    assert cluster.nodes[leader].role.value == "leader"


def test_a_leader_hands_over_before_stopping() -> None:
    cluster = Cluster(3)
    cluster.elect("n1")
    stop = GracefulStop("n1", election_timeout=1.0)
    stop.request(signal.SIGTERM)
    assert not stop.step(cluster.nodes["n1"], cluster.now)
    assert stop.next_deadline() == cluster.now + 2.0
    for _ in range(50):
        cluster.flush_all()
        cluster.deliver_all()
        if stop.step(cluster.nodes["n1"], cluster.now):
            break
        cluster.advance_time(0.05)
    assert stop.done
    assert cluster.nodes["n1"].leader in ("n2", "n3")


def test_a_leader_stops_anyway_when_nobody_takes_over() -> None:
    cluster = Cluster(3)
    cluster.elect("n1")
    stop = GracefulStop("n1", election_timeout=1.0)
    stop.request(signal.SIGTERM)
    assert not stop.step(cluster.nodes["n1"], cluster.now)  # TimeoutNow is never delivered
    assert not stop.step(cluster.nodes["n1"], cluster.now + 1.9)
    assert stop.step(cluster.nodes["n1"], cluster.now + 2.0)


def test_a_second_signal_skips_the_handover() -> None:
    cluster = Cluster(3)
    cluster.elect("n1")
    stop = GracefulStop("n1", election_timeout=1.0)
    stop.request(signal.SIGTERM)
    assert not stop.step(cluster.nodes["n1"], cluster.now)
    stop.request(signal.SIGINT)
    assert stop.step(cluster.nodes["n1"], cluster.now)


def test_one_turn_takes_a_bounded_number_of_bytes_from_a_socket() -> None:
    """DESIGN rule 7 (every queue has a bound): one read of a socket stops past its byte budget, and
    always takes at least one frame, however big."""
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    sender = ctx.socket(zmq.DEALER)
    try:
        router.bind("inproc://intake-budget")
        sender.connect("inproc://intake-budget")
        for _ in range(10):
            sender.send(b"x" * 1000)
        assert router.poll(5000)  # inproc delivers at once; the bound only guards a broken test
        first = recv_batch(router, 100, 2500)
        assert len(first) == 3  # 1000 + 1000 + 1000 bytes of payload (plus identities) reach the budget
        assert len(recv_batch(router, 100, 1)) == 1  # over budget at once: still one frame
        assert len(recv_batch(router, 4, 1 << 20)) == 4  # the frame count limit still holds
        assert len(recv_batch(router, 100, 1 << 20)) == 2
    finally:
        sender.close(linger=0)
        router.close(linger=0)
