"""Membership changes with real processes while a client writes (tests/integration/membership_scenarios.py):
grow 3 -> 5 through two learners, shrink 5 -> 3 removing the leader among others, replace a node by a
fresh one under a new name, move a node to a new port; every acknowledged write reads back at the end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from cluster.client.api import Client
from tests.integration.membership_scenarios import join_args, run_all
from tests.integration.test_security import secure_client, secure_cluster
from tests.integration.util import REPO_ROOT, Cluster, NodeHandle, free_ports, start_cluster, wait_until
from transport.curve import key_text, read_secret_key, write_keypair


def test_grow_shrink_replace_and_move_while_writing(tmp_path: Path) -> None:
    lines: list[str] = []
    s = run_all(tmp_path, lines.append)
    assert list(s.gaps)[:2] == ["grow 3 -> 5", "shrink 5 -> 3"] and len(s.gaps) == 4, s.gaps
    assert len(s.writer.acked) > 0  # and run_all checked that every one of them reads back
    print("\n".join(lines))


def _ctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    endpoints = ",".join(n.client_url for n in cluster.nodes[:3])
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "bin" / "cluster-ctl"), "--endpoints", endpoints, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _joiner(cluster: Cluster, name: str, extra: tuple[str, ...] = ()) -> NodeHandle:
    peer_port, client_port = free_ports(2)
    peer_url, client_url = f"tcp://127.0.0.1:{peer_port}", f"tcp://127.0.0.1:{client_port}"
    join = ",".join(n.client_url for n in cluster.nodes[:3])
    data_dir = cluster.base_dir / name
    args = [*join_args(name, data_dir, peer_url, client_url, join), *extra]
    node = NodeHandle(name, peer_url, client_url, data_dir, cluster.base_dir / f"{name}.log", args)
    cluster.nodes.append(node)
    return node


def test_cluster_ctl_member_commands_join_checks_and_restart(tmp_path: Path) -> None:
    with start_cluster(3, base_dir=tmp_path) as cluster:
        listed = wait_until(lambda: _ctl(cluster, "member", "list", "-w", "json"), 30, "member list")
        rows = json.loads(listed.stdout)["members"]
        assert sorted(r["name"] for r in rows) == ["n1", "n2", "n3"] and not any(r["learner"] for r in rows)
        n4 = _joiner(cluster, "n4")
        added = _ctl(cluster, "member", "add", "n4", "--peer-url", n4.peer_url, "--client-url", n4.client_url)
        assert added.returncode == 0, added.stderr
        # n4 is not running: promoting it is refused with the reason, a definite failure
        refused = _ctl(cluster, "member", "promote", "n4")
        assert refused.returncode == 1 and "has not answered the leader" in refused.stderr, refused.stderr
        # a node of another cluster id, or one the cluster does not list, refuses to start
        other = _joiner(cluster, "n4x", ("--cluster-id", "elsewhere"))
        other.start()
        assert other.wait(timeout=60) == 2 and "cluster id" in other.log_text()
        stranger = _joiner(cluster, "n5")
        stranger.start()
        assert stranger.wait(timeout=60) == 2 and "add it first" in stranger.log_text()
        n4.start()
        promoted = wait_until(
            lambda: (r := _ctl(cluster, "member", "promote", "n4", "-w", "json")).returncode == 0 and r,
            60,
            "n4 promoted",
        )
        assert [m["learner"] for m in json.loads(promoted.stdout)["members"] if m["name"] == "n4"] == [False]
        status = _ctl(cluster, "status")
        voters = re.search(r"^voters: (.*)$", status.stdout, re.M)
        assert voters is not None and re.findall(r"(n\d) \(", voters.group(1)) == ["n1", "n2", "n3", "n4"]
        assert "learners: -" in status.stdout, status.stdout
        # Every original member crashes and restarts while n4 is a voter: each recovers the configuration
        # from its log (not --initial-cluster, which lacks n4) and must connect to n4 at once, so the leader
        # replicates to it and n4 answers votes (regression: the DEALERs used to follow only at the next
        # configuration change).
        for node in cluster.nodes[:3]:
            node.kill()
        for node in cluster.nodes[:3]:
            node.start()

        with Client([n.client_url for n in cluster.nodes[:3]], timeout=10.0) as client:

            def recovered_from_the_log() -> bool:
                rows = client.status(timeout=1.0).get("members") or []
                return sum(int(r.get("configuration_index") or 0) > 0 for r in rows if r["name"] != "n4") == 3

            def n4_follows() -> bool:
                n4_row = next((m for m in client.member_list(timeout=1.0) if m["name"] == "n4"), {})
                return bool(n4_row.get("match")) and n4_row.get("lag") == 0

            client.put("after-restart", 1, timeout=60)  # once a leader is elected
            wait_until(recovered_from_the_log, 60, "every member to recover the configuration from its log")
            wait_until(n4_follows, 30, "the leader to replicate to n4 after the restart")
        removed = _ctl(cluster, "member", "remove", "n4")
        assert removed.returncode == 0, removed.stderr
        wait_until(lambda: "removed from the cluster" in n4.log_text(), 30, "n4 to learn it was removed")
        with Client([n.client_url for n in cluster.nodes[:3]], timeout=10.0) as client:
            assert sorted(m["name"] for m in client.member_list()) == ["n1", "n2", "n3"]


def test_a_learner_joins_a_curve_cluster_by_its_key_in_the_configuration(tmp_path: Path) -> None:
    """A secured cluster grows without touching the members' peer key files or restarting them: the
    member record carries n4's public key, the members connect to n4 and admit it with that key, and n4
    joins with --join URL=KEY (the key of the node behind each URL) over CURVE."""
    with secure_cluster(tmp_path, 3) as (cluster, keys):
        write_keypair(keys.folder, "n4")
        keys.nodes["n4"] = read_secret_key(keys.folder / "n4.key_secret")
        own_peers = keys.folder / "peers-n4"  # n4's own file: the original members' keys and its own
        own_peers.write_text(keys.peers_file.read_text() + "n4 = n4.key\n")
        join = ",".join(f"{n.client_url}={key_text(keys.nodes[n.name].public)}" for n in cluster.nodes)
        n4 = _joiner(cluster, "n4", ("--curve-secret-key", str(keys.folder / "n4.key_secret")))
        n4.args = [*n4.args, "--curve-peers", str(own_peers), "--curve-clients", str(keys.clients_dir)]
        n4.args[n4.args.index("--join") + 1] = join
        with secure_client(cluster, keys, timeout=30.0) as client:
            public = key_text(keys.nodes["n4"].public)
            added = client.member_add("n4", n4.peer_url, n4.client_url, curve_public_key=public)
            assert [m.get("curve_public_key") for m in added if m["name"] == "n4"] == [public]
            n4.start()

            def n4_caught_up() -> bool:  # the leader reached n4 and n4 answered it, both over CURVE
                row = next((m for m in client.member_list(timeout=1.0) if m["name"] == "n4"), {})
                return bool(row.get("match")) and row.get("lag") is not None and row["lag"] <= 10

            wait_until(n4_caught_up, 60, "n4 to catch up over CURVE")
            promoted = client.member_promote("n4", timeout=60)
            assert [m["learner"] for m in promoted if m["name"] == "n4"] == [False]
            assert client.put("grown", "yes") > 0
            status = client.status(timeout=5.0)
            commit = next(r["commit"] for r in status["members"] if r["name"] == status["leader"])
            wait_until(lambda: row_of(client, "n4").get("applied", 0) >= commit, 30, "n4 to apply the put")
        assert "no CURVE public key" not in "".join(n.log_text() for n in cluster.nodes)


def row_of(client: Client, name: str) -> dict[str, Any]:
    rows = {r["name"]: r for r in client.status(timeout=1.0)["members"]}
    return dict(rows.get(name) or {})
