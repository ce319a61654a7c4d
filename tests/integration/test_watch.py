"""Watches against real node processes: a watcher across a kill -9 of the node serving it, Compacted for
a revision below the window, and cluster-ctl watch printing events. Waits are bounded; nothing is timed."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from cluster import Client
from cluster.client.watch import Watch
from cluster.errors import Compacted
from tests.integration.util import REPO_ROOT, Cluster, get_status, start_cluster, wait_for_leader, wait_until

pytestmark = pytest.mark.integration

CTL = REPO_ROOT / "bin" / "cluster-ctl"
EVENT_WAIT = 20.0  # bounded wait for one event (a failover takes a few election timeouts)


def take(w: Watch, n: int) -> list[dict[str, Any]]:
    events = []
    for _ in range(n):
        event = w.next(EVENT_WAIT)
        assert event is not None, f"no event within {EVENT_WAIT}s after {len(events)} of {n}"
        events.append(event)
    return events


def serving_node(cluster: Cluster) -> str:
    def find() -> str | None:
        for node in cluster.alive():
            status = get_status(node.client_url)
            if status.get("clients", {}).get("watches", {}).get("open"):
                return node.name
        return None

    return wait_until(find, 10.0, "a node serving the watch")


def test_a_watch_survives_kill_9_of_its_node_with_every_revision_once() -> None:
    with start_cluster(3) as cluster:
        wait_for_leader(cluster)
        urls = [n.client_url for n in cluster.nodes]
        with Client(urls, timeout=10.0) as writer, Client(urls, timeout=10.0) as watcher:
            first = writer.put("other", 0)
            with watcher.watch("w/", start_revision=first) as w:
                revisions = [writer.put(f"w/{i}", i) for i in range(20)]
                before = take(w, 20)
                victim = serving_node(cluster)
                cluster.node(victim).kill()
                revisions += [writer.put(f"w/{i}", i) for i in range(20, 40)]
                after = take(w, 20)
                assert w.next(0.5) is None  # nothing more: no duplicates
        events = before + after
        assert [e["revision"] for e in events] == revisions
        assert [(e["type"], e["key"], e["value"]) for e in events] == [
            ("PUT", f"w/{i}", i) for i in range(40)
        ]
        assert w.revision >= revisions[-1]


def test_a_start_below_every_node_s_window_is_compacted() -> None:
    with start_cluster(3, extra_args=["--history-events", "5"]) as cluster:
        wait_for_leader(cluster)
        with Client([n.client_url for n in cluster.nodes], timeout=10.0) as c:
            for i in range(10):
                c.put("k", i)

            def all_applied() -> bool:  # a follower one revision behind would hold revisions 5..9 only
                rows = c.status()["members"]
                return all(r["reachable"] for r in rows) and len({r.get("applied") for r in rows}) == 1

            wait_until(all_applied, 30.0, "every node to apply the puts")
            with c.watch("k", start_revision=1) as w, pytest.raises(Compacted) as info:
                w.next(EVENT_WAIT)
            assert info.value.compact_revision >= 5


def test_cluster_ctl_watch_prints_events_as_json_lines() -> None:
    with start_cluster(3) as cluster:
        wait_for_leader(cluster)
        endpoints = ",".join(n.client_url for n in cluster.nodes)
        with Client(endpoints, timeout=10.0) as c:
            start = c.put("c/0", "a")
            c.put("c/1", {"x": 1})
            c.delete("c/0")
            result = subprocess.run(
                [sys.executable, str(CTL), "--endpoints", endpoints, "-w", "json", "watch", "c/", "--prefix",
                 "--rev", str(start), "--count", "3"],
                capture_output=True,
                text=True,
                timeout=60,
            )  # fmt: skip
            with c.watch("c/", start_revision=start, prev_kv=True) as w:  # the previous values too
                with_prev = [w.next(30.0) for _ in range(3)]
        assert [(e["key"], e["prev"]) for e in with_prev if e] == [("c/0", None), ("c/1", None), ("c/0", "a")]
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(e["type"], e["key"], e["value"]) for e in lines] == [
            ("PUT", "c/0", "a"),
            ("PUT", "c/1", {"x": 1}),
            ("DELETE", "c/0", None),
        ]
        assert [e["revision"] for e in lines] == [start, start + 1, start + 2]


def test_cluster_ctl_watch_exits_0_on_ctrl_c() -> None:
    with start_cluster(3) as cluster:
        wait_for_leader(cluster)
        endpoints = ",".join(n.client_url for n in cluster.nodes)
        proc = subprocess.Popen(
            [sys.executable, str(CTL), "--endpoints", endpoints, "watch", "s/", "--prefix"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)  # type: ignore[union-attr]
        reader.start()
        try:
            with Client(endpoints, timeout=10.0) as c:

                def printed() -> bool:
                    c.put("s/a", "v")  # the watch opens at some point after the start: put until one shows
                    try:
                        return lines.get(timeout=0.2) == "PUT\n"
                    except queue.Empty:
                        return False

                wait_until(printed, 30.0, "cluster-ctl watch to print an event")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
