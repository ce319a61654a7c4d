"""A 5-node cluster works like a 3-node one, and a graceful stop of the leader costs clients nothing."""

from __future__ import annotations

import signal

from cluster import Client
from tests.fault.test_crash_recovery import Writers, client_urls
from tests.integration.util import find_leader, start_cluster, wait_for_leader, wait_until


def test_five_nodes_elect_a_leader_and_serve_writes_through_any_node() -> None:
    with start_cluster(5) as cluster:
        leader = wait_for_leader(cluster)
        for node in cluster.nodes:  # a client that only knows this node still gets its writes in
            with Client([node.client_url], timeout=10.0) as client:
                client.put(f"via/{node.name}", node.name)
        with Client(client_urls(cluster), timeout=10.0) as client:
            assert [kv["value"] for kv in client.range_all("via/")] == sorted(n.name for n in cluster.nodes)
            status = client.status()
            assert status["leader"] == leader.name


def test_graceful_stop_of_the_leader_fails_no_client_request() -> None:
    with start_cluster(3) as cluster, Client(client_urls(cluster), timeout=10.0) as client:
        leader = wait_for_leader(cluster)
        with Writers(client, threads=4) as writers:
            wait_until(lambda: writers.count() > 100, 20.0, "writes before the stop")
            leader.send_signal(signal.SIGTERM)
            assert leader.wait(timeout=15) == 0
            before = writers.count()
            wait_until(lambda: writers.count() > before + 100, 20.0, "writes after the handoff")
        assert not writers.errors, writers.errors
        assert not writers.unknown, f"{len(writers.unknown)} writes failed or timed out during the handoff"
        successor = find_leader(cluster)
        assert successor is not None and successor.name != leader.name
        for key, value in list(writers.acked.items())[-50:]:
            assert client.get(key) == value
