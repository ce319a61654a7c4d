"""Real node processes started through bin/cluster-node, spoken to with a raw ZeroMQ DEALER.

Covers: leader election, a write and a linearizable read through the leader, NOT_LEADER with a leader
hint from followers, client URLs advertised through the cluster and reported by STATUS, malformed frames
on the client and the peer port (the node keeps serving), SIGTERM on the leader (exit 0, leadership handed
over, writes continue, the node restarts from its data directory), SIGINT on a follower, a follower that
catches up from the leader's snapshot, and start-up refusals (port in use, data directory in use, bad
configuration) with exit status 2.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from actors.messages import ClientResponse, RequestKind, RequestVote, Status
from cluster.node.runtime import CLIENT_MAX_FRAME, PEER_MAX_FRAME
from tests.integration.util import (
    NODE_BIN,
    Cluster,
    NodeHandle,
    client_id,
    find_leader,
    followers,
    free_ports,
    get_status,
    read_request,
    receive_response,
    request,
    result_of,
    send_raw,
    send_request,
    start_cluster,
    try_request,
    try_status,
    wait_for_leader,
    wait_until,
    write_request,
    write_through_leader,
)
from transport.codec import encode

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with start_cluster(3) as running:
        yield running


def all_follow(cluster: Cluster, leader: NodeHandle) -> bool:
    return all(get_status(n.client_url)["leader"] == leader.name for n in cluster.nodes)


def replicated_everywhere(leader: NodeHandle) -> bool:
    """The leader sees every follower's log match its own (each follower's acks reach it)."""
    status = get_status(leader.client_url)
    progress = status.get("progress", {})
    return bool(progress) and all(p["match"] == status["last_index"] for p in progress.values())


def test_a_leader_is_elected_and_everyone_follows_it(cluster: Cluster) -> None:
    leader = wait_for_leader(cluster)
    wait_until(lambda: all_follow(cluster, leader), 10, f"every node to follow {leader.name}")
    statuses = [get_status(n.client_url) for n in cluster.nodes]
    assert [s["role"] for s in statuses].count("leader") == 1
    assert len({s["term"] for s in statuses}) == 1


def test_write_then_linearizable_read_through_the_leader(cluster: Cluster) -> None:
    leader = wait_for_leader(cluster)
    written = send_request(leader.client_url, write_request("greeting", {"text": "hello", "n": 1}))
    assert written.status == Status.OK, written
    assert result_of(written)["ok"] is True

    read = send_request(leader.client_url, read_request("greeting"))
    assert read.status == Status.OK, read
    kv = result_of(read)["kv"]
    assert kv["value"] == {"text": "hello", "n": 1}
    assert kv["mod_revision"] == result_of(written)["rev"]

    # A follower's local (serializable) read catches up once the commit index reaches it.
    def follower_sees_it() -> bool:
        return all(
            result_of(send_request(f.client_url, read_request("greeting", RequestKind.SERIAL_READ)))["kv"]
            is not None
            for f in followers(cluster, leader)
        )

    wait_until(follower_sees_it, 10, "followers to apply the write")


def test_followers_answer_not_leader_with_the_leaders_name(cluster: Cluster) -> None:
    leader = wait_for_leader(cluster)
    wait_until(lambda: all_follow(cluster, leader), 10, f"every node to follow {leader.name}")
    for follower in followers(cluster, leader):
        for req in (write_request("k", 1), read_request("k")):
            response = send_request(follower.client_url, req)
            assert response.status == Status.NOT_LEADER, response
            assert response.leader_hint == leader.name
            assert (response.src, response.dst, response.req_id) == (follower.name, req.src, req.req_id)


def test_status_reports_every_nodes_client_url(cluster: Cluster) -> None:
    expected = {n.name: n.client_url for n in cluster.nodes}

    def everyone_knows() -> bool:
        return all(get_status(n.client_url)["client_urls"] == expected for n in cluster.nodes)

    wait_until(everyone_knows, 15, "all client URLs to be advertised to every node")
    for node in cluster.nodes:
        status = get_status(node.client_url)
        assert (status["id"], status["client_url"], status["peer_url"]) == (
            node.name,
            node.client_url,
            node.peer_url,
        )
        assert set(status["storage"]) >= {"fsyncs", "batches", "entries", "entries_per_fsync"}
        assert status["storage"]["fsyncs"] > 0
        assert status["uptime"] > 0


def test_malformed_frames_on_the_client_port_get_bad_request(cluster: Cluster) -> None:
    leader = wait_for_leader(cluster)
    target = followers(cluster, leader)[0]  # a follower: it still answers what it can

    def refused(status: dict[str, Any]) -> int:
        return int(
            status["runtime"].get("malformed_client", 0) + status["runtime"].get("unexpected_client", 0)
        )

    before = refused(get_status(target.client_url))
    valid = encode(request(RequestKind.STATUS))
    bad_kind_src = client_id()
    bad_kind = msgpack.packb([1, 8, bad_kind_src, "", 77, 99, b""], use_bin_type=True)  # unknown request kind
    frames = [
        b"\xc1garbage\xff",
        b"",
        valid[:-3],  # truncated
        msgpack.packb([1, 99, "x", "y"], use_bin_type=True),  # unknown tag
        msgpack.packb([7, 8, "x", "", 1, 3, b""], use_bin_type=True),  # unknown protocol version
        msgpack.packb({"not": "an array"}),
        b"\x00" * (CLIENT_MAX_FRAME + 1),  # oversized
        encode(RequestVote("n1", target.name, 99, 0, 0, False, False)),  # a peer message on the client port
        bad_kind,
    ]
    sock = send_raw(target.client_url, [[f] for f in frames])
    try:
        answers = [receive_response(sock, None, 5.0) for _ in frames]
    finally:
        sock.close(linger=0)
    assert all(a.status == Status.BAD_REQUEST for a in answers), answers
    assert all(a.result for a in answers)  # a short reason each
    assert any(b"exceeds" in a.result for a in answers)
    salvaged = [a for a in answers if a.dst == bad_kind_src]
    assert len(salvaged) == 1 and salvaged[0].req_id == 77 and b"unknown request kind" in salvaged[0].result

    # A message with too many envelope frames cannot be answered safely: dropped, nothing else happens.
    send_raw(target.client_url, [[b"x"] * 9]).close()
    wait_until(
        lambda: refused(get_status(target.client_url)) >= before + len(frames) + 1,
        5,
        "the bad client frames to be counted",
    )
    assert all(n.alive() for n in cluster.nodes)
    assert write_through_leader(cluster, "after-client-garbage", 1).status == Status.OK


PEER_COUNTERS = ("malformed_peer", "spoofed_peer", "unexpected_peer", "unknown_peer")


def peer_counts(node: NodeHandle) -> dict[str, int]:
    runtime = get_status(node.client_url)["runtime"]
    return {k: int(runtime.get(k, 0)) for k in PEER_COUNTERS}


def bad_peer_frames(sender: str, receiver: str) -> list[list[bytes]]:
    valid_vote = encode(RequestVote(sender, receiver, 1, 0, 0, True, False))
    return [
        [b"\xc1garbage\xff"],
        [valid_vote[:-2]],  # truncated
        [msgpack.packb([1, 99, sender, receiver], use_bin_type=True)],  # unknown tag
        [msgpack.packb([7, 1, sender, receiver], use_bin_type=True)],  # unknown protocol version
        [b"\x00" * (PEER_MAX_FRAME + 1)],  # oversized
        [b""],
        [b"a", b"b"],  # two frames where one is expected
    ]


def test_frames_from_strangers_on_the_peer_port_are_dropped(cluster: Cluster) -> None:
    leader = wait_for_leader(cluster)
    follower = followers(cluster, leader)[0]
    targets = (leader, follower)
    before = {n.name: peer_counts(n) for n in targets}
    frames = bad_peer_frames("n1", "n2")
    for node in targets:
        for identity in (b"intruder", None):  # an unknown name; no identity at all (ZeroMQ makes one up)
            send_raw(node.peer_url, frames, identity=identity).close()

    def all_counted() -> bool:
        for node in targets:
            now, then = peer_counts(node), before[node.name]
            if now["unknown_peer"] < then["unknown_peer"] + 2 * (len(frames) - 1):
                return False
            if now["malformed_peer"] < then["malformed_peer"] + 2:  # the two-frame messages
                return False
        return True

    wait_until(all_counted, 10, "the stray peer frames to be counted")
    assert all(n.alive() for n in cluster.nodes)
    assert write_through_leader(cluster, "after-peer-garbage", 2).status == Status.OK
    current = wait_for_leader(cluster)
    wait_until(lambda: replicated_everywhere(current), 10, "every follower to acknowledge the leader")


def test_malformed_frames_with_a_members_identity_are_dropped(tmp_path: Path) -> None:
    """A member's identity gets frames past ZeroMQ to the decoder; nothing bad may come of them."""
    with start_cluster(3, base_dir=tmp_path) as cluster:
        leader = wait_for_leader(cluster)
        stopped = followers(cluster, leader)[0]
        wait_until(
            lambda: get_status(stopped.client_url)["leader"] == leader.name, 10, "the follower to follow"
        )
        # SIGINT on a follower: a clean exit, and its identity is free on the leader's peer ROUTER.
        stopped.send_signal(signal.SIGINT)
        assert stopped.wait(timeout=15) == 0
        assert "SIGINT received" in stopped.log_text() and "stopped cleanly" in stopped.log_text()
        assert write_through_leader(cluster, "two-of-three", 1).status == Status.OK

        identity = stopped.name.encode()
        before = peer_counts(leader)

        def identity_is_free() -> bool:
            send_raw(leader.peer_url, [[b"\xc1probe"]], identity=identity).close()
            return wait_until_or_none(
                lambda: peer_counts(leader)["malformed_peer"] > before["malformed_peer"], 0.5
            )

        wait_until(identity_is_free, 10, f"the leader to accept frames from identity {stopped.name}")
        before = peer_counts(leader)
        term_before = get_status(leader.client_url)["term"]
        frames = bad_peer_frames(stopped.name, leader.name)
        spoofed = [encode(RequestVote("n-nobody", leader.name, 10**6, 10**6, 10**6, False, False))]
        unexpected = [encode(ClientResponse(stopped.name, leader.name, 1, Status.OK, b"", ""))]
        send_raw(leader.peer_url, [*frames, spoofed, unexpected], identity=identity).close()

        def counted() -> bool:
            now = peer_counts(leader)
            return (
                now["malformed_peer"] >= before["malformed_peer"] + len(frames)
                and now["spoofed_peer"] > before["spoofed_peer"]
                and now["unexpected_peer"] > before["unexpected_peer"]
            )

        wait_until(counted, 10, "the leader to count the bad frames")
        status = get_status(leader.client_url)
        assert (
            status["role"] == "leader" and status["term"] == term_before
        )  # the spoofed vote was not stepped
        assert all(n.alive() for n in cluster.nodes if n is not stopped)
        assert write_through_leader(cluster, "after-member-garbage", 3).status == Status.OK

        # The real member comes back and is replicated to again.
        stopped.start()
        wait_until(lambda: replicated_everywhere(leader), 15, f"{stopped.name} to rejoin")


def wait_until_or_none(predicate: Callable[[], bool], timeout: float) -> bool:
    try:
        return bool(wait_until(predicate, timeout, "condition"))
    except AssertionError:
        return False


def test_sigterm_on_the_leader_hands_over_and_exits_0(tmp_path: Path) -> None:
    with start_cluster(3, base_dir=tmp_path) as cluster:
        leader = wait_for_leader(cluster)
        assert write_through_leader(cluster, "before", "stop").status == Status.OK
        wait_until(lambda: replicated_everywhere(leader), 10, "the write to reach every follower")

        leader.send_signal(signal.SIGTERM)
        assert leader.wait(timeout=15) == 0
        log = leader.log_text()
        assert "SIGTERM received" in log and "transferring leadership to" in log
        assert "leadership moved to" in log and "stopped cleanly" in log

        successor = wait_for_leader(cluster, exclude=[leader.name])
        assert successor.name != leader.name
        assert write_through_leader(cluster, "after", "stop").status == Status.OK
        read = send_request(successor.client_url, read_request("before"))
        assert read.status == Status.OK and result_of(read)["kv"]["value"] == "stop"

        # The stopped node restarts from its data directory and catches up.
        leader.start()

        def caught_up() -> bool:
            reply = try_request(leader.client_url, read_request("after", RequestKind.SERIAL_READ))
            return reply is not None and reply.status == Status.OK and result_of(reply)["kv"] is not None

        wait_until(caught_up, 15, f"{leader.name} to restart and catch up")
        assert find_leader(cluster) is not None


def test_a_follower_behind_the_snapshot_catches_up_and_writes_are_batched(tmp_path: Path) -> None:
    with start_cluster(3, base_dir=tmp_path, extra_args=["--snapshot-entries", "200"]) as cluster:
        leader = wait_for_leader(cluster)
        behind = followers(cluster, leader)[0]
        # A leader needs only two nodes: the third may still be starting, before its SIGTERM handler is set.
        wait_until(lambda: try_status(behind.client_url) is not None, 15, f"{behind.name} to serve")
        behind.send_signal(signal.SIGTERM)
        assert behind.wait(timeout=15) == 0

        # Pipeline many writes on one connection: the leader appends each turn's batch with one fsync.
        writes = [write_request(f"key-{i}", i) for i in range(1500)]
        sock = send_raw(leader.client_url, [[encode(w)] for w in writes])
        try:
            answers = [receive_response(sock, None, 10.0) for _ in writes]
        finally:
            sock.close(linger=0)
        assert all(a.status == Status.OK for a in answers)
        status = get_status(leader.client_url)
        assert status["snapshot_index"] > 1000  # its log now starts past where the stopped follower ends
        assert status["storage"]["batches"] < status["storage"]["entries"]

        behind.start()

        def has_last_write() -> bool:
            reply = try_request(behind.client_url, read_request("key-1499", RequestKind.SERIAL_READ))
            return reply is not None and reply.status == Status.OK and result_of(reply)["kv"] is not None

        wait_until(has_last_write, 15, f"{behind.name} to catch up from the leader's snapshot")
        assert get_status(behind.client_url)["snapshot_index"] > 0


# --- start-up refusals ----------------------------------------------------------------------------------


def run_node(args: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(NODE_BIN), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("busy", ["peer", "client", "http"])
def test_a_port_in_use_exits_2_with_a_clear_message(tmp_path: Path, busy: str) -> None:
    peer_port, client_port, http_port = free_ports(3)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", {"peer": peer_port, "client": client_port, "http": http_port}[busy]))
        holder.listen(1)
        peer_url, client_url = f"tcp://127.0.0.1:{peer_port}", f"tcp://127.0.0.1:{client_port}"
        http_url = f"http://127.0.0.1:{http_port}"
        done = run_node(
            ["--name", "solo", "--data-dir", str(tmp_path / "solo"), "--peer-url", peer_url,
             "--client-url", client_url, "--initial-cluster", f"solo={peer_url}", "--http-url", http_url]
        )  # fmt: skip
    finally:
        holder.close()
    assert done.returncode == 2, done.stderr
    busy_url = {"peer": peer_url, "client": client_url, "http": http_url}[busy]
    assert f"cluster-node: error: cannot bind {busy_url}: address already in use" in done.stderr


def test_a_data_dir_in_use_exits_2(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    done = run_node(node.args)
    assert done.returncode == 2, done.stderr
    assert "is in use by another process" in done.stderr
    assert node.alive()


def test_a_config_error_exits_2(tmp_path: Path) -> None:
    done = run_node(["--name", "n1", "--data-dir", str(tmp_path), "--client-url", "tcp://127.0.0.1:1"])
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "cluster-node: error: missing the initial cluster: pass --initial-cluster n1=URL,n2=URL,... "
        "or set ZRAFT_INITIAL_CLUSTER"
    )


def test_help_lists_every_flag() -> None:
    done = run_node(["--help"])
    assert done.returncode == 0
    for flag in ("--name", "--data-dir", "--peer-url", "--client-url", "--initial-cluster", "--cluster-id",
                 "--config", "--election-timeout-ms", "--heartbeat-ms", "--snapshot-entries", "--log-level",
                 "--log-json"):  # fmt: skip
        assert flag in done.stdout
