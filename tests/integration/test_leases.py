"""Leases against real node processes started through bin/: the Client's lease calls and cluster-ctl lease,
expiry of an abandoned lease within its bound, and a kept-alive lease surviving leader kills (kill -9).

The bounds asserted are correctness bounds (a lease is never revoked before its TTL; an abandoned one is
revoked within TTL + 2 election timeouts), measured with a generous margin for a loaded machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from cluster import Client, InvalidRequest, LeaseNotFound
from cluster.client.leases import KeptLease
from tests.integration.util import (
    REPO_ROOT,
    TEST_ELECTION_TIMEOUT_MS,
    Cluster,
    NodeHandle,
    find_leader,
    start_cluster,
    wait_for_leader,
    wait_until,
)

pytestmark = pytest.mark.integration

ELECTION_TIMEOUT = TEST_ELECTION_TIMEOUT_MS / 1000
MARGIN = 3.0  # scheduling delays of a loaded 2-core machine, on top of a correctness bound
CTL = REPO_ROOT / "bin" / "cluster-ctl"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with start_cluster(3) as c:
        wait_for_leader(c)
        yield c


def client_of(cluster: Cluster) -> Client:
    return Client([n.client_url for n in cluster.nodes], timeout=5.0)


def test_grant_attach_info_list_keepalive_revoke(cluster: Cluster) -> None:
    with client_of(cluster) as c:
        with pytest.raises(InvalidRequest, match="lease ttl must be between"):
            c.lease_grant(ELECTION_TIMEOUT)
        lease = c.lease_grant(5)
        assert lease.ttl == 5.0
        c.put("lease/a", 1, lease=lease.id)
        c.put("lease/b", 2, lease=lease.id)
        info = c.lease_info(lease.id)
        assert info.keys == ("lease/a", "lease/b") and info.granted_ttl == 5.0
        assert 0 < info.ttl <= 5.0 + ELECTION_TIMEOUT  # the grace a grant gets (cluster/kv/leases.py)
        assert lease.id in [i.id for i in c.lease_list()]
        assert 4.0 < c.lease_keepalive(lease.id) <= 5.0
        assert c.lease_revoke(lease.id) == 2
        assert c.get("lease/a") is None and c.get("lease/b") is None
        with pytest.raises(LeaseNotFound):
            c.lease_keepalive(lease.id)
        with pytest.raises(LeaseNotFound):
            c.put("lease/c", 3, lease=lease.id)
        assert c.get("lease/c") is None  # nothing written


def test_the_keepalive_helper_revokes_on_exit(cluster: Cluster) -> None:
    with client_of(cluster) as c:
        with c.lease(2 * ELECTION_TIMEOUT * 3) as lease:
            c.put("helper/k", 1, lease=lease.id)
            time.sleep(lease.ttl * 1.5)  # longer than the TTL: only the helper's renewals keep it
            assert c.get("helper/k") == 1 and lease.alive and lease.renewals >= 2
        assert c.get("helper/k") is None


def test_an_abandoned_lease_is_revoked_within_ttl_plus_two_election_timeouts(cluster: Cluster) -> None:
    ttl = 3 * ELECTION_TIMEOUT
    with client_of(cluster) as c:
        sent = time.monotonic()
        lease = c.lease_grant(ttl)
        c.put("abandoned/k", 1, lease=lease.id)
        gone = wait_until(
            lambda: c.get("abandoned/k") is None and time.monotonic(),
            ttl + 2 * ELECTION_TIMEOUT + MARGIN,
            "the abandoned lease's key to be deleted",
            interval=0.01,
        )
        assert gone - sent >= ttl  # never before its TTL
        assert c.get("abandoned/k") is None
        with pytest.raises(LeaseNotFound):
            c.lease_info(lease.id)


def test_a_lease_whose_keepalives_stop_is_revoked_within_ttl_plus_two_election_timeouts_of_the_last(
    cluster: Cluster,
) -> None:
    ttl = 3 * ELECTION_TIMEOUT
    renewed: list[tuple[float, float]] = []  # (sent, answered) of every keepalive answered OK
    with client_of(cluster) as c:

        def keepalive(lease_id: int, limit: float) -> float:
            sent = time.monotonic()
            left = c.lease_keepalive(lease_id, timeout=limit)
            renewed.append((sent, time.monotonic()))
            return left

        kept = KeptLease(c.lease_grant(ttl), keepalive, c.lease_revoke)
        c.put("stopped/k", 1, lease=kept.id)
        # Renewed for longer than one TTL, so an expiry counted from the grant would already show.
        wait_until(lambda: len(renewed) >= 5, 10 * ttl, "five renewals")
        kept.close(revoke=False)  # the keepalives stop, as when their process dies
        last_sent, last_answered = renewed[-1]
        assert c.get("stopped/k") == 1
        gone = wait_until(
            lambda: c.get("stopped/k") is None and time.monotonic(),
            ttl + 2 * ELECTION_TIMEOUT + MARGIN,
            "the key of the lease whose keepalives stopped to be deleted",
            interval=0.01,
        )
        assert gone - last_sent >= ttl  # never before a TTL after the last renewal
        assert gone - last_answered <= ttl + 2 * ELECTION_TIMEOUT + MARGIN
        with pytest.raises(LeaseNotFound):
            c.lease_info(kept.id)


def ctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    endpoints = ",".join(n.client_url for n in cluster.nodes)
    return subprocess.run(
        [sys.executable, str(CTL), "--endpoints", endpoints, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cluster_ctl_lease_commands(cluster: Cluster) -> None:
    granted = ctl(cluster, "-w", "json", "lease", "grant", "300")  # revoked below; 30 s ran out at load 28
    assert granted.returncode == 0, granted.stderr
    lease_id = json.loads(granted.stdout)["id"]
    put = ctl(cluster, "put", "ctl-lease/k", "v", "--lease", str(lease_id))
    assert put.returncode == 0, put.stderr
    info = ctl(cluster, "-w", "json", "lease", "info", str(lease_id))
    assert info.returncode == 0 and json.loads(info.stdout)["keys"] == ["ctl-lease/k"]
    listed = ctl(cluster, "-w", "json", "lease", "list")
    assert lease_id in [item["id"] for item in json.loads(listed.stdout)["leases"]]
    kept = ctl(cluster, "lease", "keepalive", str(lease_id))
    assert kept.returncode == 0 and f"lease {lease_id} kept alive" in kept.stdout
    revoked = ctl(cluster, "-w", "json", "lease", "revoke", str(lease_id))
    assert json.loads(revoked.stdout) == {"id": lease_id, "deleted": 1}
    missing = ctl(cluster, "lease", "keepalive", str(lease_id))
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad = ctl(cluster, "put", "ctl-lease/k", "v", "--lease", str(lease_id))
    assert bad.returncode == 1 and "not found" in bad.stderr


def sigkill(node: NodeHandle) -> None:
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)


def test_a_kept_alive_lease_survives_three_leader_kills() -> None:
    with start_cluster(3) as cluster, client_of(cluster) as c:
        wait_for_leader(cluster)
        with c.lease(10 * ELECTION_TIMEOUT) as lease:
            c.put("survivor/k", 1, lease=lease.id)
            for _ in range(3):
                leader = wait_for_leader(cluster)
                sigkill(leader)
                wait_for_leader(cluster, timeout=20.0, exclude=[leader.name])
                leader.start()  # back as a follower, so that the next kill leaves a majority
                wait_until(lambda: find_leader(cluster) is not None, 20.0, "a leader after the restart")
                time.sleep(lease.ttl)  # a whole TTL under the new leader, renewed only by the helper
                assert c.get("survivor/k") == 1
            assert lease.alive and lease.lost is None
        assert c.get("survivor/k") is None
