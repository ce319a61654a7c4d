"""Measure failover: kill -9 the leader of a real 3-node cluster, time until a write succeeds again.

    python -m tests.fault.measure_failover --kills 20 [--election-timeout-ms 1000] [--heartbeat-ms 100]

Before each kill every node must be up and following the leader (the killed one is restarted after each
failover, and a kill while it is still starting would leave one node alone). Prints each failover split
in two: when a new leader was elected (the first "became leader" line of a newer term in the nodes'
logs, by their wall-clock stamps) and when the client's write was accepted; then the median and the worst
of each, and the client's single-request put latency. A measurement, not a
test: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import time
from datetime import datetime
from pathlib import Path

from cluster import Client
from tests.integration.util import Cluster, NodeHandle, start_cluster, try_status, wait_until

_BECAME_LEADER = re.compile(r"^(\S+ \S+) \| \S+\s*\| (\S+): became leader \(term (\d+)\)", re.MULTILINE)


def leaders_elected(cluster: Cluster) -> list[tuple[float, int, str]]:
    """Every (wall time, term, node) at which a node's log says it became leader."""
    found = []
    for node in cluster.nodes:
        for stamp, name, term in _BECAME_LEADER.findall(node.log_text()):
            wall = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()  # node logs local time
            found.append((wall, int(term), name))
    return sorted(found)


def elected_after(cluster: Cluster, killed_wall: float, old_term: int) -> tuple[float, int] | None:
    """Seconds from the kill to the first leader of a newer term, and how many terms it took."""
    newer = [(wall, term) for wall, term, _ in leaders_elected(cluster) if term > old_term]
    if not newer:
        return None
    wall, term = newer[0]
    return wall - killed_wall, term - old_term


def settled_leader(cluster: Cluster) -> NodeHandle | None:
    """The leader, once every node is up and names it: the cluster is whole again before a kill (a node
    still starting after the previous kill would leave the survivors without a quorum)."""
    statuses = [try_status(n.client_url) for n in cluster.nodes]
    leaders = {s["leader"] if s is not None else "" for s in statuses}
    return cluster.node(leaders.pop()) if len(leaders) == 1 and "" not in leaders else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--election-timeout-ms", type=int, default=1000)
    parser.add_argument("--heartbeat-ms", type=int, default=100)
    parser.add_argument("--keep-logs", type=Path, help="keep the nodes here (DEBUG logs)")
    args = parser.parse_args()
    if args.keep_logs is not None:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
    with start_cluster(
        3,
        election_timeout_ms=args.election_timeout_ms,
        heartbeat_ms=args.heartbeat_ms,
        base_dir=args.keep_logs,
        extra_args=["--log-level", "DEBUG"] if args.keep_logs is not None else [],
    ) as c:
        cluster = c
        urls = [n.client_url for n in cluster.nodes]
        with Client(urls, timeout=30.0) as client:
            client.put("warm", 0)
            latencies = []
            for i in range(300):
                t = time.perf_counter()
                client.put(f"lat/{i}", "x" * 100)
                latencies.append(time.perf_counter() - t)
            latencies.sort()
            print(f"single put latency: p50 {latencies[150] * 1e3:.2f} ms, p99 {latencies[296] * 1e3:.2f} ms")
            failovers: list[float] = []
            elections: list[float] = []
            for k in range(args.kills):
                leader = wait_until(lambda: settled_leader(cluster), 60, "every node following one leader")
                client.put("probe", k)
                old_term = max((term for _, term, name in leaders_elected(cluster) if name == leader.name))
                killed_wall, killed = time.time(), time.monotonic()
                leader.send_signal(signal.SIGKILL)
                client.put("probe", k + 1)  # blocks until a new leader accepts it
                failovers.append(time.monotonic() - killed)
                elected = elected_after(cluster, killed_wall, old_term)
                if elected is not None:
                    elections.append(elected[0])
                said = f"leader elected after {elected[0]:.3f}s ({elected[1]} term(s))" if elected else "?"
                print(f"kill {k + 1}: {leader.name}: {said}, write accepted after {failovers[-1]:.3f}s")
                leader.wait(timeout=10)
                leader.start()
            print(
                f"failover over {len(failovers)} kills: median {statistics.median(failovers):.3f}s, "
                f"worst {max(failovers):.3f}s; new leader elected: "
                f"median {statistics.median(elections):.3f}s, "
                f"worst {max(elections):.3f}s (election timeout {args.election_timeout_ms} ms, heartbeat "
                f"{args.heartbeat_ms} ms)"
            )


if __name__ == "__main__":
    main()
