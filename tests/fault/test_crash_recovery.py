"""Durability under process death: crash points inside the storage code, kill -9 at random moments, and a
hard stop of the whole cluster. The promise checked each time: every acknowledged write is still there,
and all replicas converge to the same state.

Nodes run as real processes (bin/cluster-node) on free loopback ports; writers go through the embeddable
Client; a node that dies is restarted without its crash point, as an operator would.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from actors.messages import RequestKind, Status
from cluster import Client, OutcomeUnknown, Unavailable
from cluster.kv.machine import MAX_RANGE_LIMIT, encode_query
from cluster.storage.crash import CRASH_EXIT_CODE, CRASH_POINTS
from tests.integration.util import (
    Cluster,
    NodeHandle,
    get_status,
    request,
    result_of,
    send_request,
    start_cluster,
    try_status,
    wait_until,
)

# Small snapshots and WAL segments so snapshotting, segment rolling and compaction all happen under load.
STORAGE_ARGS = ["--snapshot-entries", "60", "--wal-segment-bytes", "4096"]


class Writers:
    """Threads writing unique keys through one Client until stopped; records what was acknowledged."""

    def __init__(self, client: Client, threads: int = 4) -> None:
        self.client = client
        self.acked: dict[str, Any] = {}
        self.unknown: set[str] = set()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            key, value = f"w{worker}/{n:06d}", {"worker": worker, "n": n}
            n += 1
            try:
                self.client.put(key, value)
            except (OutcomeUnknown, Unavailable):
                with self._lock:
                    self.unknown.add(key)
                continue
            except BaseException as exc:  # anything else is a test failure, reported by the main thread
                self.errors.append(exc)
                return
            with self._lock:
                self.acked[key] = value

    def count(self) -> int:
        with self._lock:
            return len(self.acked)


@contextmanager
def running_cluster(env_per_node: dict[str, dict[str, str]] | None = None) -> Iterator[Cluster]:
    with start_cluster(3, extra_args=STORAGE_ARGS) as cluster:
        if env_per_node:
            for node in cluster.nodes:  # restart the nodes that carry a crash point, armed
                if node.name in env_per_node:
                    node.kill()
                    node.env = env_per_node[node.name]
                    node.start()
        yield cluster


def client_urls(cluster: Cluster) -> list[str]:
    return [n.client_url for n in cluster.nodes]


def restart_dead(cluster: Cluster, exits: dict[str, list[int]]) -> None:
    """Restart any node that exited, without its crash point; remember how it exited."""
    for node in cluster.nodes:
        if node.proc is not None and node.proc.poll() is not None:
            exits.setdefault(node.name, []).append(node.proc.returncode)
            node.env = {}
            node.start()


def serial_range(node: NodeHandle) -> list[Any] | None:
    """Every key of the node's local copy, page by page (None when it does not answer)."""
    kvs: list[Any] = []
    after = ""
    while True:
        query = encode_query(["range", "", MAX_RANGE_LIMIT, after])
        try:
            resp = send_request(node.client_url, request(RequestKind.SERIAL_READ, query), 2.0)
        except TimeoutError:
            return None
        assert resp.status == Status.OK
        page = result_of(resp)
        kvs += page["kvs"]
        if not page["more"]:
            return kvs
        after = page["kvs"][-1]["key"]


def assert_converged_and_durable(cluster: Cluster, client: Client, acked: dict[str, Any]) -> None:
    # every acknowledged write is readable, linearizably
    for key, value in acked.items():
        assert client.get(key) == value, f"acknowledged write {key} lost"

    # all replicas applied the same index and hold the same data
    def same_applied() -> bool:
        statuses = [try_status(n.client_url) for n in cluster.nodes]
        if any(s is None for s in statuses):
            return False
        applied = {s["applied"] for s in statuses if s}
        commits = {s["commit"] for s in statuses if s}
        return len(applied) == 1 and applied == commits

    wait_until(same_applied, 20.0, "all replicas to apply the same index")
    contents = [serial_range(n) for n in cluster.nodes]
    assert contents[0] is not None and contents[0] == contents[1] == contents[2]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_point_under_load_loses_nothing_acknowledged(point: str) -> None:
    # Every node is armed at a different hit count, so they die one at a time while writes continue.
    hits = (
        {"n1": 2, "n2": 3, "n3": 4}
        if point.startswith(("snap", "compact"))
        else {"n1": 40, "n2": 80, "n3": 120}
    )
    env = {name: {"ZRAFT_CRASH_POINT": point, "ZRAFT_CRASH_AFTER": str(n)} for name, n in hits.items()}
    exits: dict[str, list[int]] = {}
    with running_cluster(env) as cluster, Client(client_urls(cluster), timeout=10.0) as client:
        with Writers(client) as writers:

            def all_crashed_or_a_write_failed() -> bool:
                restart_dead(cluster, exits)
                return len(exits) == 3 or bool(writers.errors)

            wait_until(all_crashed_or_a_write_failed, 60, f"every node to reach crash point {point}", 0.02)
        assert not writers.errors, writers.errors
        assert sorted(exits) == ["n1", "n2", "n3"], f"crash point {point} was not reached on every node"
        assert all(codes == [CRASH_EXIT_CODE] for codes in exits.values()), exits
        assert writers.acked, "nothing was acknowledged"
        assert_converged_and_durable(cluster, client, writers.acked)


def test_kill_9_at_random_moments_loses_nothing_acknowledged() -> None:
    rng = random.Random(20261128)
    with running_cluster() as cluster, Client(client_urls(cluster), timeout=10.0) as client:
        with Writers(client) as writers:
            for _ in range(6):
                time.sleep(rng.uniform(0.1, 0.6))
                victim = rng.choice(cluster.nodes)
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=10)
                time.sleep(rng.uniform(0.0, 0.5))
                victim.start()
            wait_until(lambda: writers.count() > 50, 20.0, "writes to go on after the last kill")
        assert not writers.errors, writers.errors
        assert_converged_and_durable(cluster, client, writers.acked)


def test_full_cluster_hard_stop_and_restart_keeps_every_acknowledged_write() -> None:
    with running_cluster() as cluster:
        urls = [n.client_url for n in cluster.nodes]
        with Client(urls, timeout=10.0) as client:
            acked = {f"full/{i:04d}": {"i": i, "pad": "x" * 50} for i in range(300)}
            for key, value in acked.items():
                client.put(key, value)
        for node in cluster.nodes:  # power off everything at once
            node.kill()
        for node in cluster.nodes:
            node.start()
        with Client(urls, timeout=10.0) as client:
            assert_converged_and_durable(cluster, client, acked)
            assert len(list(client.range_all("full/"))) == 300
            status = get_status(cluster.nodes[0].client_url)
            assert status["term"] >= 2  # a new election happened after the restart
