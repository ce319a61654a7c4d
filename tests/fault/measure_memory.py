"""Measure node memory: write N keys of 100-byte values into a real 3-node cluster, print each node's RSS.

    python -m tests.fault.measure_memory --keys 100000 [--page-size 1000]

Prints each node's resident size (and its peak so far, VmHWM) after the writes, with what it holds then
(log entries above its snapshot, the snapshot's index), again after a full paged listing of every key
(linearizable reads: the leader serves them), and after a follower is killed and started again (its peak
is then the recovery's: the newest snapshot loaded, the WAL replayed). A measurement, not a test: nothing
here asserts on size or speed.
"""

from __future__ import annotations

import argparse
import threading
import time

from cluster import Client
from tests.integration.util import Cluster, get_status, start_cluster, try_status, wait_for_leader, wait_until


def rss_kb(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    return {k: int(v.split()[0]) for k, v in fields.items()}


def report(cluster: Cluster, phase: str) -> None:
    for node in cluster.nodes:
        assert node.proc is not None
        status = get_status(node.client_url, timeout=10)
        mem = rss_kb(node.proc.pid)
        print(
            f"{phase}: {node.name} {status['role']:9} applied {status['applied']} log entries "
            f"{status['last_index'] - status['snapshot_index']} snapshot at {status['snapshot_index']}: "
            f"RSS {mem['VmRSS'] / 1024:.0f} MB (peak {mem['VmHWM'] / 1024:.0f} MB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    with start_cluster(3, election_timeout_ms=1000, heartbeat_ms=100) as cluster:
        wait_for_leader(cluster)
        with Client([n.client_url for n in cluster.nodes], timeout=30) as client:
            started = time.monotonic()

            def writer(first: int) -> None:
                for k in range(first, args.keys, args.threads):
                    client.put(f"{k:08d}", "v" * 100)

            threads = [threading.Thread(target=writer, args=(i,)) for i in range(args.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(f"{args.keys} puts in {time.monotonic() - started:.1f}s")
            last = get_status(wait_for_leader(cluster).client_url)["commit"]
            wait_until(
                lambda: all(get_status(n.client_url, timeout=10)["applied"] >= last for n in cluster.nodes),
                120,
                "every node applied every write",
            )
            report(cluster, "written")
            started = time.monotonic()
            keys = sum(1 for _ in client.range_all("", page_size=args.page_size))
            print(f"listed {keys} keys through the leader in {time.monotonic() - started:.1f}s")
        report(cluster, "listed")
        # Recovery: a follower killed and started again loads the newest snapshot and replays the WAL.
        leader = wait_for_leader(cluster)
        follower = next(n for n in cluster.nodes if n is not leader)
        follower.kill()
        started = time.monotonic()
        follower.start()
        wait_until(lambda: (try_status(follower.client_url) or {}).get("applied", 0) >= last, 300, "recovery")
        print(f"{follower.name} restarted and caught up in {time.monotonic() - started:.1f}s")
        report(cluster, "restarted")


if __name__ == "__main__":
    main()
