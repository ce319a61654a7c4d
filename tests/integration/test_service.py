"""The cluster service against real processes: 3 nodes, 3 servers and 2 processes each registered by its own
`cluster-ctl register` process; events between them; kill -9 of a registrant (OFFLINE, then deleted after the
grace period, or back ONLINE when restarted first); kill -9 of the Raft leader (nothing lost, nobody marked
OFFLINE wrongly); quorum loss (health() and queued writes that complete when quorum returns).

Timings are shortened: heartbeat every 0.5 s, timeout 2.5 s, grace 4 s (tests/integration/service_util.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cluster import Client
from cluster.service import OFFLINE, ONLINE, ClusterService
from cluster.service.records import INTP_PROCESS_LIST, SERVER_PORT, STATUS
from tests.integration.service_util import CTL_BIN, GRACE, INTERVAL, TIMEOUT, registrants
from tests.integration.util import Cluster, start_cluster, wait_for_leader, wait_until

pytestmark = pytest.mark.integration

# Generous bounds for waits on a loaded 2-core machine; the measured times are printed.
SLACK = 8.0
ALL = ["INTP_PROCESS_META/p1", "INTP_PROCESS_META/p2", "SERVER_META/s1", "SERVER_META/s2", "SERVER_META/s3"]


def urls(cluster: Cluster) -> list[str]:
    return [n.client_url for n in cluster.nodes]


class Changes:
    """Every registry change the observer saw, with the time it arrived."""

    def __init__(self, svc: ClusterService) -> None:
        self.items: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.stop = svc.on_change(self._add)

    def _add(self, change: dict[str, Any]) -> None:
        with self._lock:
            self.items.append((time.monotonic(), change))

    def first(self, kind: str, ident: str, after: float, status: str | None) -> float | None:
        """When the first change of the record after `after` with that STATUS (None: a DELETE) came."""
        with self._lock:
            for at, change in self.items:
                if at < after or (change["kind"], change["id"]) != (kind, ident):
                    continue
                if status is None and change["type"] == "DELETE":
                    return at
                if status is not None and change["type"] == "PUT" and change["record"][STATUS] == status:
                    return at
        return None

    def offline(self) -> list[str]:
        with self._lock:
            return [
                f"{c['kind']}/{c['id']}"
                for _, c in self.items
                if c["type"] == "PUT" and c["record"].get(STATUS) == OFFLINE
            ]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with start_cluster(3) as c:
        wait_for_leader(c)
        yield c


@pytest.fixture
def observer(cluster: Cluster) -> Iterator[ClusterService]:
    with Client(urls(cluster), timeout=5.0) as client:
        svc = ClusterService(client, interval=INTERVAL, timeout=TIMEOUT, grace=GRACE)
        try:
            yield svc
        finally:
            svc.close()


def statuses(svc: ClusterService) -> dict[str, str]:
    out = {f"SERVER_META/{s['NODE_NAME']}": s[STATUS] for s in svc.servers()}
    out.update({f"INTP_PROCESS_META/{p['INTP_PROCESS_NAME']}": p[STATUS] for p in svc.processes()})
    return out


def ctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(CTL_BIN), "--endpoints", ",".join(urls(cluster)), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_registry_events_liveness_and_a_leader_kill_with_real_processes(
    cluster: Cluster, observer: ClusterService
) -> None:
    changes = Changes(observer)
    with registrants() as procs:
        regs = {f"s{i}": procs.start(urls(cluster), "server", f"s{i}", port=9000 + i) for i in (1, 2, 3)}
        regs.update({f"p{i}": procs.start(urls(cluster), "process", f"p{i}", port=9100 + i) for i in (1, 2)})
        for reg in regs.values():
            reg.wait_registered()
        assert statuses(observer) == dict.fromkeys(ALL, ONLINE)

        # cluster-ctl shows them (the original's /nodes columns).
        table = ctl(cluster, "servers")
        assert table.returncode == 0 and "127.0.0.1:9001" in table.stdout and " = " in table.stdout
        listed = json.loads(ctl(cluster, "processes", "-w", "json").stdout)
        assert [r["INTP_PROCESS_NAME"] for r in listed["records"]] == ["p1", "p2"]

        # A broadcast reaches every live registrant, each acknowledges.
        result = observer.broadcast("NOTE", {"n": 1}, timeout=5.0)
        assert result.ok and result.acked == ALL
        for reg in regs.values():
            reg.wait_line(lambda line: line.get("payload") == {"n": 1}, 10, f"{reg.name} to print event 1")

        # A unicast reaches only its target: the next broadcast arrives after it, in send order.
        assert observer.unicast("p1", "NOTE", {"n": 2}, timeout=5.0).acked == ["INTP_PROCESS_META/p1"]
        assert observer.broadcast("NOTE", {"n": 3}, timeout=5.0).ok
        for reg in regs.values():
            reg.wait_line(lambda line: line.get("payload") == {"n": 3}, 10, f"{reg.name} to print event 3")
            payloads = [e["payload"]["n"] for e in reg.events()]
            assert payloads == ([1, 2, 3] if reg.name == "p1" else [1, 3]), reg.name

        # cluster-ctl event send from outside: prints who acknowledged, exit 0.
        sent = ctl(cluster, "-w", "json", "event", "send", "NOTE", '{"n": 4}', "--to", "s2")
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["acked"] == ["SERVER_META/s2"]

        # Kill -9 the Raft leader meanwhile: heartbeats, events and updates go on; nobody goes OFFLINE.
        leader = wait_for_leader(cluster)
        leader.kill()
        killed_at = time.monotonic()
        wait_for_leader(cluster, timeout=20, exclude=[leader.name])
        observer.update("server", "s1", {INTP_PROCESS_LIST: ["p1", "p2"]})
        assert observer.broadcast("NOTE", {"n": 5}, timeout=5.0).acked == ALL
        leader.start()
        # A lease TTL after the kill, plus an election and the new leader's grace of an election timeout.
        after_ttl = killed_at + TIMEOUT + 1.5
        wait_until(lambda: time.monotonic() > after_ttl, 10, "a lease TTL and an election to pass")
        assert changes.offline() == []
        assert statuses(observer) == dict.fromkeys(ALL, ONLINE)
        assert observer.get("server", "s1")["INTP_PROCESS_COUNT"] == 2  # the update survived heartbeats

        # kill -9 a server: OFFLINE after the timeout (measured), then deleted after the grace period.
        regs["s3"].kill()
        t0 = time.monotonic()
        wait_until(lambda: changes.first("SERVER_META", "s3", t0, OFFLINE), TIMEOUT + 2 + SLACK, "s3 OFFLINE")
        offline_at = changes.first("SERVER_META", "s3", t0, OFFLINE)
        assert offline_at is not None
        print(f"OFFLINE detected {offline_at - t0:.2f}s after kill -9 (timeout {TIMEOUT}s)")
        record = observer.get("server", "s3")
        assert record is not None and record[SERVER_PORT] == 9003  # only STATUS changed
        result = observer.broadcast("NOTE", {"n": 6}, timeout=5.0)
        assert "SERVER_META/s3" not in result.acked + list(result.not_acked) and result.ok

        # kill -9 another; restarted before its grace period ends, it takes its record back ONLINE.
        regs["s2"].kill()
        t1 = time.monotonic()
        wait_until(lambda: changes.first("SERVER_META", "s2", t1, OFFLINE), TIMEOUT + 2 + SLACK, "s2 OFFLINE")
        again = procs.start(urls(cluster), "server", "s2", port=9202)
        again.wait_registered()
        assert observer.get("server", "s2")[SERVER_PORT] == 9202

        wait_until(lambda: changes.first("SERVER_META", "s3", t0, None), GRACE + SLACK, "s3 to be deleted")
        deleted_at = changes.first("SERVER_META", "s3", t0, None)
        assert deleted_at is not None and offline_at is not None
        print(f"deleted {deleted_at - offline_at:.2f}s after OFFLINE (grace {GRACE}s)")
        # s2's old grace period has ended by now too: it stays.
        old_grace_end = t1 + TIMEOUT + GRACE + 1
        wait_until(lambda: time.monotonic() > old_grace_end, GRACE + SLACK, "s2's old grace period to end")
        assert observer.get("server", "s2")[STATUS] == ONLINE
        assert observer.get("server", "s3") is None
        live = ["INTP_PROCESS_META/p1", "INTP_PROCESS_META/p2", "SERVER_META/s1", "SERVER_META/s2"]
        assert observer.broadcast("NOTE", {"n": 7}, timeout=5.0).acked == live

        # cluster-ctl event listen: a bare listener that broadcasts reach too.
        command = [sys.executable, str(CTL_BIN), "--endpoints", ",".join(urls(cluster))]
        listener = subprocess.Popen(
            [*command, "-w", "json", "event", "listen", "NOTE", "--count", "1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: any(n.startswith("LISTENER/") for n, _ in observer.live()), 20, "the listener")
            result = observer.broadcast("NOTE", {"n": 8}, timeout=5.0)
            assert len(result.acked) == 5 and result.ok
            out, _ = listener.communicate(timeout=20)
        finally:
            listener.kill()
        assert listener.returncode == 0 and json.loads(out)["payload"] == {"n": 8}

        # Ctrl-C on a registrant: it deregisters (its record is deleted) and exits 0.
        regs["p2"].kill(signal.SIGINT)
        assert regs["p2"].proc.returncode == 0, regs["p2"].output()
        wait_until(lambda: observer.get("process", "p2") is None, 20, "p2's record to be deleted on Ctrl-C")

        # Ctrl-C on `event listen` without --count: exit 0.
        before = {n for n, _ in observer.live()}
        listener = subprocess.Popen([*command, "event", "listen", "NOTE"], stdout=subprocess.PIPE, text=True)
        try:
            wait_until(
                lambda: any(n.startswith("LISTENER/") and n not in before for n, _ in observer.live()),
                20,
                "the second listener",
            )
            listener.send_signal(signal.SIGINT)
            assert listener.wait(timeout=30) == 0
        finally:
            listener.kill()


def test_quorum_loss_shows_in_health_and_queued_writes_complete_when_it_returns(
    cluster: Cluster, observer: ClusterService
) -> None:
    changes = Changes(observer)
    with registrants() as procs:
        server = procs.start(urls(cluster), "server", "s1", port=9001)
        server.wait_registered()
        assert observer.health()["quorum"] is True
        leader = wait_for_leader(cluster)
        down = [n for n in cluster.nodes if n.name != leader.name]
        for node in down:
            node.kill()
        wait_until(lambda: observer.health(timeout=0.5)["quorum"] is False, 20, "health to show no quorum")
        fut = observer.update("server", "s1", {"ZONE": "b"}, wait=False)
        wait_until(lambda: observer.health(timeout=0.2)["retrying"], 20, "the update to be retried")
        assert observer.health(timeout=0.2)["pending_writes"] >= 1 and not fut.done()
        for node in down:
            node.start()
        record = fut.result(timeout=30)
        assert record["ZONE"] == "b"
        wait_until(lambda: observer.health()["pending_writes"] == 0, 20, "the queue to drain")
        health = observer.health()
        assert health["quorum"] is True and health["failed_writes"] == []
        # The registrant kept its lease through the outage (a new leader extends leases).
        assert observer.get("server", "s1")[STATUS] == ONLINE and changes.offline() == []
