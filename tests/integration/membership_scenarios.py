"""Membership changes against real processes, with a client writing throughout.

The scenarios (grow 3 -> 5 through two learners, shrink 5 -> 3 removing the leader among others, replace a
node with a fresh data dir under a new name, move a node to a new port) run in order on one cluster while
a Writer puts keys one after another; at the end every acknowledged write must read back. Each change
records the longest gap between two acknowledged writes while it ran. Used by
tests/integration/test_membership.py, and as a measurement:

    .venv/bin/python -m tests.integration.membership_scenarios --preload 100000

which also times how long a learner takes to catch up with `--preload` keys written before it joins.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cluster.client.api import Client
from cluster.errors import ZraftError
from tests.integration.util import (
    TEST_ELECTION_TIMEOUT_MS,
    TEST_HEARTBEAT_MS,
    Cluster,
    NodeHandle,
    free_ports,
    start_cluster,
    wait_until,
)

WAIT = 60.0  # bound on each wait for the cluster (generous: CI machines are shared)


@dataclass
class Writer:
    """Puts w/0, w/1, ... one at a time until stopped; remembers what was acknowledged, and when."""

    endpoints: list[str]
    acked: dict[str, int] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with Client(self.endpoints, timeout=5.0) as client:
            i = 0
            while not self._stop.is_set():
                key = f"w/{i}"
                try:
                    client.put(key, i)
                except ZraftError:
                    self.errors += 1  # unknown or refused: not acknowledged, so not checked
                else:
                    self.acked[key] = i
                    self.times.append(time.monotonic())
                i += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without an acknowledged write within [start, end]."""
        marks = [start, *(t for t in list(self.times) if start <= t <= end), end]
        return max(b - a for a, b in zip(marks, marks[1:], strict=False))


def voters_and_learners(client: Client) -> tuple[list[str], list[str]]:
    members = client.member_list()
    return (
        sorted(m["name"] for m in members if not m.get("learner")),
        sorted(m["name"] for m in members if m.get("learner")),
    )


def leader_of(client: Client) -> str:
    return wait_until(lambda: client.status().get("leader") or "", WAIT, "a leader")


class Scenarios:
    """One cluster and its writer; each method is one change, timed."""

    def __init__(self, cluster: Cluster, client: Client, writer: Writer) -> None:
        self.cluster = cluster
        self.client = client
        self.writer = writer
        self.gaps: dict[str, float] = {}
        self.durations: dict[str, float] = {}
        self.ports_given: set[int] = {
            int(u.rsplit(":", 1)[1]) for n in cluster.nodes for u in (n.peer_url, n.client_url)
        }

    def fresh_ports(self, count: int) -> list[int]:
        """Free ports never handed out before in this run: a node started a moment ago may not have bound
        its ports yet, so the kernel can offer them again (n5 once got n4's client port)."""
        for _ in range(100):
            ports = free_ports(count)
            if not self.ports_given.intersection(ports):
                self.ports_given.update(ports)
                return ports
        raise AssertionError("no fresh ports after 100 tries")

    @contextmanager
    def change(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        end = time.monotonic()
        wait_until(lambda: any(t > end for t in self.writer.times), WAIT, f"a write after {name}")
        self.durations[name] = end - start
        self.gaps[name] = self.writer.longest_gap(start, time.monotonic())

    def new_node(self, name: str, data_dir: Path | None = None) -> NodeHandle:
        """A node that joins the running cluster (after `member add`)."""
        peer_port, client_port = self.fresh_ports(2)
        peer_url, client_url = f"tcp://127.0.0.1:{peer_port}", f"tcp://127.0.0.1:{client_port}"
        join = ",".join(n.client_url for n in self.cluster.nodes if n.alive())
        base = self.cluster.base_dir
        handle = NodeHandle(
            name,
            peer_url,
            client_url,
            data_dir or base / name,
            base / f"{name}.log",
            join_args(name, data_dir or base / name, peer_url, client_url, join),
        )
        self.cluster.nodes.append(handle)
        return handle

    def add_learner(self, name: str) -> NodeHandle:
        node = self.new_node(name)
        self.client.member_add(name, node.peer_url, node.client_url)
        node.start()
        return node

    def caught_up(self, name: str, lag: int = 100) -> bool:
        """The leader has heard from `name` and holds at most `lag` entries it lacks."""
        row = next((m for m in self.client.member_list(timeout=1.0) if m["name"] == name), None)
        if row is None or not row.get("match") or row.get("lag") is None:
            return False
        return bool(row["lag"] <= lag)

    def promote(self, name: str) -> None:
        wait_until(lambda: self.caught_up(name), WAIT, f"{name} to catch up")
        self.client.member_promote(name, timeout=WAIT)

    def grow(self) -> None:
        with self.change("grow 3 -> 5"):
            for name in ("n4", "n5"):
                self.add_learner(name)
            for name in ("n4", "n5"):
                self.promote(name)
        assert voters_and_learners(self.client) == (["n1", "n2", "n3", "n4", "n5"], [])

    def shrink(self) -> list[str]:
        """Remove the leader and one other voter; returns who was removed."""
        leader = leader_of(self.client)
        other = next(n for n in ("n1", "n2", "n3", "n4", "n5") if n != leader)
        with self.change("shrink 5 -> 3"):
            self.client.member_remove(leader, timeout=WAIT)
            self.client.member_remove(other, timeout=WAIT)
        voters, _ = voters_and_learners(self.client)
        assert leader not in voters and other not in voters and len(voters) == 3
        for name in (leader, other):
            node = self.cluster.node(name)
            wait_until(lambda node=node: "removed from the cluster" in node.log_text(), WAIT, f"{name} told")
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=WAIT)
        return [leader, other]

    def replace(self, old: str, new: str) -> None:
        """Remove `old` and put a node with a fresh data dir under the name `new` in its place."""
        with self.change(f"replace {old} by {new}"):
            self.client.member_remove(old, timeout=WAIT)
            self.cluster.node(old).kill()
            self.add_learner(new)
            self.promote(new)

    def move(self, name: str) -> None:
        """Give `name` a new peer port with `member update`, then restart it there on its data dir."""
        node = self.cluster.node(name)
        (port,) = self.fresh_ports(1)
        new_url = f"tcp://127.0.0.1:{port}"
        with self.change(f"move {name} to a new port"):
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=WAIT)
            self.client.member_update(name, new_url, node.client_url, timeout=WAIT)
            join = ",".join(n.client_url for n in self.cluster.nodes if n.alive())
            node.peer_url = new_url
            node.args = join_args(name, node.data_dir, new_url, node.client_url, join)
            node.start()
            wait_until(lambda: self.caught_up(name, lag=10), WAIT, f"{name} back at {new_url}")


def join_args(name: str, data_dir: Path, peer_url: str, client_url: str, join: str) -> list[str]:
    return [
        "--name", name,
        "--data-dir", str(data_dir),
        "--peer-url", peer_url,
        "--client-url", client_url,
        "--initial-cluster-state", "existing",
        "--join", join,
        "--election-timeout-ms", str(TEST_ELECTION_TIMEOUT_MS),
        "--heartbeat-ms", str(TEST_HEARTBEAT_MS),
    ]  # fmt: skip


def check_acknowledged(client: Client, acked: dict[str, int]) -> None:
    """Every acknowledged write reads back (linearizably) with its value."""
    found = {kv["key"]: kv["value"] for kv in client.range_all("w/")}
    missing = [k for k, v in acked.items() if found.get(k) != v]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def run_all(base: Path | None = None, report: Callable[[str], None] = print) -> Scenarios:
    with start_cluster(3, base_dir=base) as cluster:
        endpoints = [n.client_url for n in cluster.nodes]
        with Client(endpoints, timeout=10.0) as client:
            leader_of(client)
            writer = Writer(endpoints)
            writer.start()
            s = Scenarios(cluster, client, writer)
            try:
                s.grow()
                removed = s.shrink()
                voters, _ = voters_and_learners(client)
                s.replace(voters[0], "n6")
                voters, _ = voters_and_learners(client)
                s.move(next(v for v in voters if v != leader_of(client)))
            finally:
                writer.stop()
            check_acknowledged(client, writer.acked)
            report(f"removed {removed}; {len(writer.acked)} writes acknowledged, {writer.errors} not")
            for name, gap in s.gaps.items():
                took = s.durations[name]
                report(f"{name}: took {took:.2f}s, longest gap in acknowledged writes {gap:.3f}s")
            return s


def catch_up_time(preload: int, report: Callable[[str], None] = print) -> float:
    """Seconds from `member add` to a learner within 100 entries of the leader, after `preload` keys."""
    with start_cluster(3, extra_args=("--snapshot-entries", "20000")) as cluster:
        endpoints = [n.client_url for n in cluster.nodes]
        with Client(endpoints, timeout=30.0) as client:
            leader_of(client)
            batch = 500
            for start in range(0, preload, batch):
                futures = [client.put_async(f"p/{i}", i) for i in range(start, min(preload, start + batch))]
                for f in futures:
                    f.result(timeout=60)
            s = Scenarios(cluster, client, Writer(endpoints))
            began = time.monotonic()
            s.add_learner("n4")
            wait_until(lambda: s.caught_up("n4"), 600.0, "the learner to catch up", interval=0.05)
            took = time.monotonic() - began
            report(f"learner caught up with {preload} keys in {took:.2f}s")
            return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--preload", type=int, default=100_000, help="keys before the learner joins")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="zraft-members-"))
    try:
        run_all(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    catch_up_time(args.preload)


if __name__ == "__main__":
    main()
