"""An application that is a Raft member and a registrant at once: three "platform servers" in this process,
each embedding a cluster.Node and registering itself through that node's client; events between them; one
stops (its record goes, its node hands over) and the other two carry on with their quorum."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from cluster import Node
from cluster.service import ONLINE, ClusterService, Event
from tests.integration.test_embedded_node import cluster_args, leader_of
from tests.integration.util import wait_until

pytestmark = pytest.mark.integration


def test_embedded_nodes_register_their_applications_and_exchange_events() -> None:
    with tempfile.TemporaryDirectory(prefix="zraft-embedded-svc-") as tmp:
        nodes = [Node(args) for args in cluster_args(Path(tmp))]
        clients, services = [], []
        got: dict[str, list[Event]] = {}
        try:
            for node in nodes:
                node.start()
            for i, node in enumerate(nodes):
                client = node.client(timeout=10.0)
                clients.append(client)
                wait_until(lambda c=client: leader_of(c), 20, "a leader")
                svc = ClusterService(client, interval=0.5, timeout=2.5, grace=4.0)
                services.append(svc)
                name = f"app-{i + 1}"
                got[name] = []
                svc.subscribe("NOTE", got[name].append)
                svc.register_server(name, "127.0.0.1", 8080 + i)
            assert [s["NODE_NAME"] for s in services[0].servers()] == ["app-1", "app-2", "app-3"]
            assert {s["STATUS"] for s in services[0].servers()} == {ONLINE}

            result = services[0].broadcast("NOTE", "hello", timeout=5.0)
            assert result.ok and result.acked == ["SERVER_META/app-2", "SERVER_META/app-3"]
            assert [e.payload for e in got["app-2"]] == ["hello"] and got["app-1"] == []

            # app-3 shuts down: its record is deleted, its node hands over if it led, the others go on.
            services[2].close()
            clients[2].close()
            nodes[2].stop()
            assert [s["NODE_NAME"] for s in services[0].servers()] == ["app-1", "app-2"]
            assert services[1].unicast("app-1", "NOTE", "still here", timeout=5.0).ok
            assert services[1].health()["quorum"] is True
        finally:
            for svc in services:
                svc.close()
            for client in clients:
                client.close()
            for node in nodes:
                if node.running:
                    node.stop()
