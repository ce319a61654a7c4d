"""cluster.Node: full nodes on threads of this test process, on free loopback ports and temporary data
directories. Three of them form a cluster, a stopped leader hands its leadership over first, a stopped
node restarts from its data, start-up errors reach the caller, and no signal handler is touched. Waits
are bounded; nothing is timed."""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from cluster import Client, Node, NodeFailed
from cluster.node.config import ConfigError
from cluster.node.lockfile import DataDirLocked
from tests.integration.util import free_ports, node_args, wait_until
from transport.endpoints import BindError

pytestmark = pytest.mark.integration

WAIT = 20.0


def cluster_args(base: Path, n: int = 3) -> list[list[str]]:
    """cluster-node's arguments for n nodes n1..nN on free ports, data under `base`."""
    ports = free_ports(2 * n)
    names = [f"n{i + 1}" for i in range(n)]
    initial = ",".join(f"{name}=tcp://127.0.0.1:{ports[i]}" for i, name in enumerate(names))
    return [
        node_args(
            name, base / name, f"tcp://127.0.0.1:{ports[i]}", f"tcp://127.0.0.1:{ports[n + i]}", initial
        )
        for i, name in enumerate(names)
    ]


@pytest.fixture
def base() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="zraft-embedded-") as tmp:
        yield Path(tmp)


@pytest.fixture
def nodes_log() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    yield lines
    logger.remove(sink)


def leader_of(c: Client) -> str | None:
    status = c.status(timeout=2.0)
    leader = status.get("leader")
    return str(leader) if leader else None


def test_three_nodes_in_one_process_form_a_cluster_and_a_stopped_leader_hands_over(
    base: Path, nodes_log: list[str]
) -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    nodes = [Node(args) for args in cluster_args(base)]
    try:
        for node in nodes:
            node.start()
        assert all(node.running for node in nodes)
        assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # the application's own
        with nodes[0].client(timeout=10.0) as c:
            wait_until(lambda: leader_of(c), WAIT, "a leader")
            rev = c.put("embedded/a", {"x": 1})
            assert c.get("embedded/a") == {"x": 1}
            leader_name = leader_of(c)
        leader = next(node for node in nodes if node.name == leader_name)
        others = [node for node in nodes if node is not leader]
        leader.stop()
        assert not leader.running
        assert any(f"{leader.name}: transferring leadership to" in line for line in nodes_log), nodes_log[
            -20:
        ]
        with others[0].client(timeout=10.0) as c:
            new_leader = wait_until(lambda: leader_of(c), WAIT, "a new leader")
            assert new_leader != leader.name
            assert c.put("embedded/b", 2) > rev  # two of three still make a majority
            # The stopped node released its data directory: it restarts from its data and catches up.
            restarted = Node(leader.config).start()
            nodes.append(restarted)
            with restarted.client(timeout=10.0) as own:
                wait_until(
                    lambda: own.get("embedded/b", serializable=True) == 2,
                    WAIT,
                    "the restarted node to catch up",
                )
                assert own.get("embedded/a") == {"x": 1}
    finally:
        for node in nodes:
            node.stop()
    assert not any(node.running for node in nodes)


def test_start_up_errors_reach_the_caller(base: Path) -> None:
    with pytest.raises(ConfigError):
        Node(["--name", "n1"])  # no data dir, no URLs
    first, second, *_ = cluster_args(base)
    busy = socket.socket()
    busy.bind(("127.0.0.1", int(first[first.index("--client-url") + 1].rsplit(":", 1)[1])))
    busy.listen()
    try:
        node = Node(first)
        with pytest.raises(BindError):
            node.start()
        assert not node.running
        node.stop()  # nothing to stop: no error either
    finally:
        busy.close()
    holder = Node(second).start()
    try:
        with pytest.raises(DataDirLocked):  # the lock is taken before any port is bound
            Node(second).start()
    finally:
        holder.stop()


def test_a_node_as_a_context_manager_stops_at_the_end_and_stop_is_idempotent(base: Path) -> None:
    [args] = cluster_args(base, 1)
    never = Node(args)
    never.stop()  # before start: nothing happens
    with Node(args) as node:
        assert node.running
        with node.client(timeout=10.0) as c:  # a single-node cluster elects itself
            wait_until(lambda: leader_of(c) == "n1", WAIT, "n1 to lead")
            assert c.put("solo", 1) > 0
        with pytest.raises(RuntimeError, match="started already"):
            node.start()
    assert not node.running
    node.stop()


def test_an_async_client_of_an_embedded_node(base: Path) -> None:
    [args] = cluster_args(base, 1)

    async def body(node: Node) -> Any:
        async with node.async_client(timeout=10.0) as c:
            await c.put("async/k", 7)
            return await c.get("async/k")

    with Node(args) as node:
        with node.client(timeout=10.0) as c:
            wait_until(lambda: leader_of(c) == "n1", WAIT, "n1 to lead")
        assert asyncio.run(asyncio.wait_for(body(node), WAIT)) == 7


def test_a_node_that_fails_while_serving_is_reported_by_stop(base: Path) -> None:
    [args] = cluster_args(base, 1)
    node = Node(args).start()
    runtime = node._runtime
    assert runtime is not None

    def broken(now: float) -> None:
        raise RuntimeError("boom")

    runtime.service.tick = broken  # type: ignore[method-assign]  # the next turn fails
    runtime.loop.wakeup()
    wait_until(lambda: not node.running, WAIT, "the failing node's thread to end")
    with pytest.raises(NodeFailed, match="boom"):
        node.stop()
    assert isinstance(node.error, RuntimeError)
