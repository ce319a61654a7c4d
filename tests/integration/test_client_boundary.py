"""The client boundary of real node processes (issue 9): what a client sends is checked before anything is
proposed, the reserved "__zraft/" keys belong to the nodes, answers follow the connection a request came
in on, and a leader that cannot commit refuses writes as BUSY instead of queueing them without end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import msgpack
import pytest
import zmq

from actors.messages import ClientRequest, ClientResponse, EntryKind, RequestKind, Status
from cluster import Client, InvalidRequest
from cluster.kv.machine import encode_command, encode_query
from cluster.storage import DiskStorage
from cluster.storage.fs import RealFS
from tests.integration.util import (
    REPO_ROOT,
    client_id,
    followers,
    get_status,
    request,
    send_request,
    start_cluster,
    wait_for_leader,
    wait_until,
)
from transport.codec import decode_frame, encode

pytestmark = pytest.mark.integration

GARBAGE_WRITES = [
    b"\xc1",  # not msgpack
    b"",  # nothing at all
    msgpack.packb([0, 0, 0]),  # a command without an op
    msgpack.packb([0, 0, 0, ["put", "k"]]),  # an op without its value
    msgpack.packb([0, 0, 0, ["drop_table", "k"]]),  # an unknown op
    msgpack.packb([0, 0, 0, ["put", "", 1]]),  # an empty key
    msgpack.packb([0, 0, 0, ["put", "k", {1: "int map key"}]]),  # a value the store refuses
    msgpack.packb([0, 0, 0, ["put", "k", "x" * (2 << 20)]]),  # oversized
    msgpack.packb([1, 5, 9, ["put", "k", 1]]),  # ack floor above seq
]


def dealer(url: str) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    return sock


def collect(sock: zmq.Socket[bytes], req_ids: Collection[int], timeout: float) -> list[ClientResponse]:
    """Every answer arriving on `sock` (plain or batch frames) until those to `req_ids` are all in, or
    TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    got: list[ClientResponse] = []
    while not set(req_ids) <= {m.req_id for m in got}:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not sock.poll(int(remaining * 1000) + 1):
            raise TimeoutError(f"answers to {sorted(req_ids)} did not all come within {timeout}s")
        got.extend(m for m in decode_frame(sock.recv()) if isinstance(m, ClientResponse))
    return got


def test_garbage_writes_are_refused_and_never_reach_the_wal(tmp_path: Path) -> None:
    with start_cluster(1, base_dir=tmp_path) as cluster:
        node = wait_for_leader(cluster)
        for payload in GARBAGE_WRITES:
            answer = send_request(node.client_url, request(RequestKind.WRITE, payload), timeout=5.0)
            assert answer.status == Status.BAD_REQUEST and answer.result, payload[:20]
        valid = encode_command(0, 0, 0, ["put", "marker", "written"])
        assert (
            send_request(node.client_url, request(RequestKind.WRITE, valid), timeout=5.0).status == Status.OK
        )
        refused = get_status(node.client_url)["clients"]["refused"]
        assert refused["invalid_command"] == len(GARBAGE_WRITES)
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=15) == 0

    storage = DiskStorage(RealFS(), str(node.data_dir), cluster_id="zraft", node_name=node.name)
    try:
        logged = [e.data for e in storage.recover().entries if e.kind == EntryKind.COMMAND]
    finally:
        storage.close()
    assert valid in logged  # the WAL is read right: what was accepted is there
    assert not set(GARBAGE_WRITES) & set(logged)


def test_reserved_keys_are_refused_to_clients_while_nodes_still_advertise(tmp_path: Path) -> None:
    with start_cluster(3, base_dir=tmp_path) as cluster:
        leader = wait_for_leader(cluster)
        # The nodes' own advertise writes arrive on the peer port and go through.
        wait_until(
            lambda: len(get_status(leader.client_url)["client_urls"]) == 3, 15.0, "every node advertised"
        )
        with Client([leader.client_url], timeout=5.0) as c:
            with pytest.raises(InvalidRequest, match="reserved"):
                c.put("__zraft/members/n1", {"client_url": "tcp://attacker:1"})
            with pytest.raises(InvalidRequest, match="reserved"):
                c.delete("__zraft/members/n2")
            with pytest.raises(InvalidRequest, match="reserved"):
                c.delete_prefix("")  # would take the reserved keys with everything else
            c.put("ordinary", 1)
            assert c.delete_prefix("ord") == 1
            assert c.get(f"__zraft/members/{leader.name}")["client_url"] == leader.client_url  # reads open
        ctl = subprocess.run(
            [sys.executable, str(REPO_ROOT / "bin" / "cluster-ctl"), "--endpoints", leader.client_url]
            + ["status", "-w", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        rows = json.loads(ctl.stdout)["members"]
        # Whichever node a request reached refused it (checks come before the leader question).
        assert sum(row["clients"]["refused"].get("reserved_key", 0) for row in rows) == 3


def test_answers_follow_the_connection_not_the_name_a_client_declares(tmp_path: Path) -> None:
    with start_cluster(3, base_dir=tmp_path) as cluster:
        leader = wait_for_leader(cluster)
        victim, thief = dealer(leader.client_url), dealer(leader.client_url)
        try:
            name = client_id()
            # Hold the commit back, so the thief's requests (declaring the victim's name) arrive while the
            # victim's write is pending: a node routing by name would send the victim's answer to the thief.
            for node in followers(cluster, leader):
                node.send_signal(signal.SIGSTOP)
            own = ClientRequest(name, "", 1, RequestKind.WRITE, encode_command(0, 0, 0, ["put", "k", "mine"]))
            victim.send(encode(own))
            assert wait_until(
                lambda: get_status(leader.client_url)["clients"]["pending_proposals"], 5.0, "the write"
            )
            theirs = [
                ClientRequest(name, "", 2, RequestKind.READ, encode_query(["get", "k"])),
                ClientRequest(
                    name, "", 3, RequestKind.WRITE, encode_command(0, 0, 0, ["put", "k", "theirs"])
                ),
            ]
            for req in theirs:
                thief.send(encode(req))
            for node in followers(cluster, leader):
                node.send_signal(signal.SIGCONT)
            (mine,) = collect(victim, [1], 15.0)
            assert mine.status in (Status.OK, Status.UNKNOWN)
            assert sorted(m.req_id for m in collect(thief, [2, 3], 15.0)) == [2, 3]
            assert not victim.poll(0) and not thief.poll(0)  # nobody got anything twice
        finally:
            victim.close(linger=0)
            thief.close(linger=0)


def test_a_leader_that_cannot_commit_answers_busy_and_its_log_stays_bounded(tmp_path: Path) -> None:
    limit = 16
    writes_per_client = 3
    # A long election timeout keeps the leader leading (check-quorum) for seconds after its followers stop.
    with start_cluster(
        3,
        base_dir=tmp_path,
        election_timeout_ms=3000,
        extra_args=["--max-uncommitted-entries", str(limit)],
    ) as cluster:
        leader = wait_for_leader(cluster, timeout=30.0)
        wait_until(lambda: get_status(leader.client_url)["uncommitted"] == 0, 10.0, "an idle leader")
        for node in followers(cluster, leader):
            node.send_signal(signal.SIGSTOP)
        clients = [dealer(leader.client_url) for _ in range(64)]
        try:
            sent: dict[zmq.Socket[bytes], list[int]] = {}
            for i, sock in enumerate(clients):
                for j in range(writes_per_client):
                    req = request(RequestKind.WRITE, encode_command(0, 0, 0, ["put", f"k{i}", j]))
                    sock.send(encode(req))
                    sent.setdefault(sock, []).append(req.req_id)
            answers = [m for sock, req_ids in sent.items() for m in collect(sock, req_ids, 20.0)]
            status = get_status(leader.client_url, timeout=5.0)
        finally:
            for sock in clients:
                sock.close(linger=0)
        statuses = [a.status for a in answers]
        assert Status.OK not in statuses  # nothing can commit
        assert set(statuses) <= {Status.BUSY, Status.UNKNOWN, Status.NOT_LEADER}
        assert len(answers) == 64 * writes_per_client
        # At most `limit` writes were ever taken as proposals (those end UNKNOWN when the leader steps down);
        # every other one was refused at once: BUSY, or NOT_LEADER once check-quorum has deposed the leader.
        assert statuses.count(Status.UNKNOWN) <= limit
        assert statuses.count(Status.BUSY) > 0
        assert status["uncommitted"] <= limit and status["clients"]["pending_proposals"] <= limit
        assert status["clients"]["refused"]["busy_proposals"] == statuses.count(Status.BUSY)
