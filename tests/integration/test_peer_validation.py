"""Real node processes receive peer messages that decode but make no sense, sent under a member's name.

A three-node cluster runs through bin/cluster-node; one follower is stopped, and a ZeroMQ DEALER with its
identity speaks to the other nodes' peer ROUTER ports (ZeroMQ refuses a second live connection with one
identity, hence the stopped member). Every crafted message, encoded by transport/codec.py exactly as a
peer would, must be dropped and counted under `dropped_invalid` (shown by `cluster-ctl status -w json`),
logged, and change nothing: same term, same leader, the cluster keeps serving writes and reads.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from actors.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    SnapshotMeta,
    Status,
    TimeoutNow,
)
from cluster.kv.machine import encode_command
from tests.integration.util import (
    REPO_ROOT,
    NodeHandle,
    get_status,
    read_request,
    result_of,
    send_raw,
    send_request,
    start_cluster,
    wait_for_leader,
    wait_until,
    write_through_leader,
)
from transport.codec import encode

pytestmark = pytest.mark.integration

CTL = REPO_ROOT / "bin" / "cluster-ctl"
MEMBERS = ("n1", "n2", "n3")
COMMAND = encode_command(0, 0, 0, ["put", "forged", 1])


def dropped(node: NodeHandle) -> dict[str, int]:
    counts: dict[str, int] = get_status(node.client_url)["dropped_invalid"]
    return counts


def send_as(member: str, node: NodeHandle, msgs: Sequence[Message]) -> None:
    send_raw(node.peer_url, [[encode(m)] for m in msgs], identity=member.encode()).close()


def claim_identity(member: str, node: NodeHandle, term: int) -> None:
    """Wait until `node` takes frames from a DEALER named `member` (the stopped member's old connection
    may linger a moment): a TimeoutNow of the node's own term from a non-leader is a countable probe."""

    def probe_counted() -> bool:
        before = dropped(node).get("TimeoutNow", 0)
        send_as(member, node, [TimeoutNow(member, node.name, term)])
        try:
            return bool(wait_until(lambda: dropped(node).get("TimeoutNow", 0) > before, 0.5, "the probe"))
        except AssertionError:
            return False

    wait_until(probe_counted, 15, f"{node.name} to accept frames from identity {member}")


def counted_as(node: NodeHandle, expected: dict[str, int]) -> Callable[[], bool]:
    """The node's drops of these kinds are exactly as expected (a late identity probe may still arrive,
    so TimeoutNow is left out)."""
    return lambda: {kind: dropped(node).get(kind, 0) for kind in expected} == expected


def test_impossible_peer_messages_are_dropped_counted_and_the_node_keeps_serving(tmp_path: Path) -> None:
    with start_cluster(3, base_dir=tmp_path) as cluster:
        leader = wait_for_leader(cluster)
        wait_until(
            lambda: all(get_status(n.client_url)["leader"] == leader.name for n in cluster.nodes),
            10,
            "every node to follow the leader",
        )
        stopped, follower = [n for n in cluster.nodes if n is not leader]
        stopped.send_signal(signal.SIGINT)
        assert stopped.wait(timeout=15) == 0
        assert write_through_leader(cluster, "before", 1).status == Status.OK
        wait_until(
            lambda: get_status(follower.client_url)["commit"] == get_status(leader.client_url)["commit"],
            10,
            "the follower to commit what the leader did",
        )
        seen = get_status(follower.client_url)
        term, commit, last = seen["term"], seen["commit"], seen["last_index"]
        lead = get_status(leader.client_url)
        assert lead["term"] == term and commit >= 2
        s = stopped.name

        def entry(t: int, index: int) -> Entry:
            return Entry(t, index, EntryKind.COMMAND, COMMAND)

        to_follower: list[Message] = [
            # entries not contiguous (before, actors/log.py raised), with a newer term that must not stick
            AppendEntries(s, follower.name, term + 1, last, term, (entry(term + 1, last + 1),
                          entry(term + 1, last + 3)), commit, 0),
            # a conflicting entry at a committed index (before, _merge raised SafetyViolation)
            AppendEntries(s, follower.name, term + 1, commit - 1, term, (entry(term + 1, commit),),
                          commit, 0),
            # a second leader of the follower's term
            AppendEntries(s, follower.name, term, last, term, (), commit, 0),
            # a snapshot whose bytes are not a snapshot (before, raised after the log was reset)
            InstallSnapshot(s, follower.name, term + 1, SnapshotMeta(commit + 100, term + 1, MEMBERS), 0,
                            b"\x93not a snapshot", True),
        ]  # fmt: skip
        to_leader: list[Message] = [
            # AppendEntries and InstallSnapshot of the leader's own term (before: SafetyViolation)
            AppendEntries(s, leader.name, term, lead["last_index"], term, (), lead["commit"], 0),
            InstallSnapshot(s, leader.name, term, SnapshotMeta(commit, term, MEMBERS), 0, b"x", True),
            # a match far beyond anything the leader ever sent
            AppendEntriesResponse(s, leader.name, term, True, lead["last_index"] + 100, 0, 0, 0),
            # an installed snapshot claimed in a newer term (would depose the leader)
            InstallSnapshotResponse(s, leader.name, term + 5, commit, 1, True),
        ]
        for node, msgs in ((follower, to_follower), (leader, to_leader)):
            claim_identity(s, node, term)
            before = dropped(node)
            expected = {type(msg).__name__: before.get(type(msg).__name__, 0) for msg in msgs}
            send_as(s, node, msgs)
            for msg in msgs:
                expected[type(msg).__name__] += 1
            wait_until(counted_as(node, expected), 10, f"{node.name} to count the drops")

        for node in (leader, follower):
            status = get_status(node.client_url)
            assert (status["term"], status["leader"]) == (term, leader.name), status
            assert node.alive()
            assert "dropped an invalid" in node.log_text() and f"from {s}:" in node.log_text()
        assert get_status(leader.client_url)["role"] == "leader"

        assert write_through_leader(cluster, "after", "still serving").status == Status.OK
        answer = send_request(leader.client_url, read_request("after"), timeout=5.0)
        assert answer.status == Status.OK and result_of(answer)["kv"]["value"] == "still serving"

        endpoints = ",".join(n.client_url for n in cluster.nodes)
        shown = subprocess.run(
            [sys.executable, str(CTL), "--endpoints", endpoints, "-w", "json", "status"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO_ROOT,
        )
        assert shown.returncode == 0, shown.stderr
        rows: dict[str, dict[str, Any]] = {m["name"]: m for m in json.loads(shown.stdout)["members"]}
        assert rows[follower.name]["dropped_invalid"]["InstallSnapshot"] == 1
        assert rows[follower.name]["dropped_invalid"]["AppendEntries"] == 3
        assert rows[leader.name]["dropped_invalid"]["AppendEntriesResponse"] == 1
        assert rows[leader.name]["dropped_invalid"]["InstallSnapshotResponse"] == 1
        assert rows[s]["reachable"] is False
