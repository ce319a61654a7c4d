"""Measure failover: kill -9 the leader of a real 3-node cluster, time until a write succeeds again.

    python -m tests.fault.measure_failover --kills 10 [--election-timeout-ms 1000]

Prints each failover, the median and the worst, and the client's single-request put latency. A
measurement, not a test: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time

from cluster import Client
from tests.integration.util import start_cluster, wait_for_leader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--election-timeout-ms", type=int, default=1000)
    parser.add_argument("--heartbeat-ms", type=int, default=100)
    args = parser.parse_args()
    with start_cluster(3, election_timeout_ms=args.election_timeout_ms, heartbeat_ms=args.heartbeat_ms) as c:
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
            failovers = []
            for k in range(args.kills):
                leader = wait_for_leader(cluster, timeout=30)
                client.put("probe", k)
                killed = time.monotonic()
                leader.send_signal(signal.SIGKILL)
                client.put("probe", k + 1)  # blocks until a new leader accepts it
                failovers.append(time.monotonic() - killed)
                print(f"kill {k + 1}: {leader.name} -> write accepted again after {failovers[-1]:.3f}s")
                leader.wait(timeout=10)
                leader.start()
            print(
                f"failover over {len(failovers)} kills: median {statistics.median(failovers):.3f}s, "
                f"worst {max(failovers):.3f}s (election timeout {args.election_timeout_ms} ms)"
            )


if __name__ == "__main__":
    main()
