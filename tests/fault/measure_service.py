"""Measure the cluster service on a real 3-node cluster with real registrant processes: event latency of a
broadcast to 10 processes (and of a unicast), and the time from kill -9 of a registrant to its OFFLINE record.

    python -m tests.fault.measure_service [--events 300] [--kills 3] [--interval 3 --timeout 9]

Each registrant is a `cluster-ctl register process ... --listen BENCH` process. Latency is the time of the
whole broadcast() call: the linearizable read of the live registrants, the sends, and every ack (each
receiver runs its listener, which prints a line, before it acks); "send only" leaves out the registry read.
OFFLINE detection is measured from the kill to the OFFLINE change seen by a watching service. A
measurement, not a test: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from cluster import Client
from cluster.service import OFFLINE, ClusterService
from cluster.service.records import STATUS
from tests.integration.service_util import registrants
from tests.integration.util import start_cluster, wait_for_leader, wait_until


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def show(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(
        f"{name}: n={len(ms)} p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
        f"max {max(ms):.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=9.0)
    args = parser.parse_args()
    extra = ("--interval", str(args.interval), "--heartbeat-timeout", str(args.timeout), "--grace", "600")
    with start_cluster(3, election_timeout_ms=1000, heartbeat_ms=100) as cluster:
        wait_for_leader(cluster, timeout=30)
        urls = [n.client_url for n in cluster.nodes]
        with Client(urls, timeout=10.0) as client, registrants() as procs:
            svc = ClusterService(client, interval=args.interval, timeout=args.timeout, grace=600)
            offline_at: dict[str, float] = {}
            lock = threading.Lock()

            def seen(change: dict[str, Any]) -> None:
                record = change["record"]
                if change["type"] == "PUT" and record.get(STATUS) == OFFLINE:
                    with lock:
                        offline_at.setdefault(change["id"], time.monotonic())

            svc.on_change(seen)
            regs = [
                procs.start(urls, "process", f"p{i}", port=9100 + i, listen=("BENCH",), extra=extra)
                for i in range(args.processes)
            ]
            for reg in regs:
                reg.wait_registered(60)
            for _ in range(20):  # warm up connections
                svc.broadcast("BENCH", 0, timeout=5.0)

            whole, send_only, unicast = [], [], []
            live = [(n, v.get("events")) for n, v in svc.live() if v.get("owner") != svc.token]
            endpoint = svc._endpoint  # the measured send path without the registry read
            assert endpoint is not None
            for i in range(args.events):
                t = time.perf_counter()
                result = svc.broadcast("BENCH", i, timeout=5.0)
                whole.append(time.perf_counter() - t)
                assert len(result.acked) == args.processes, result
                t = time.perf_counter()
                result = endpoint.send(live, "BENCH", i, 5.0, svc.sender_name)
                send_only.append(time.perf_counter() - t)
                assert len(result.acked) == args.processes, result
                t = time.perf_counter()
                assert svc.unicast("p0", "BENCH", i, timeout=5.0).ok
                unicast.append(time.perf_counter() - t)
            show(f"broadcast to {args.processes} processes, whole call", whole)
            show(f"broadcast to {args.processes} processes, send only", send_only)
            show("unicast to one process, whole call", unicast)

            detections = []
            for k in range(min(args.kills, len(regs))):
                reg = regs[k]
                reg.kill()
                killed = time.monotonic()
                wait_until(lambda r=reg: r.name in offline_at, args.timeout * 3 + 10, f"{reg.name} OFFLINE")
                detections.append(offline_at[reg.name] - killed)
                print(f"kill -9 {reg.name}: OFFLINE after {detections[-1]:.2f}s (timeout {args.timeout:g}s)")
            if detections:
                print(
                    f"OFFLINE detection over {len(detections)} kills: "
                    f"median {statistics.median(detections):.2f}s, worst {max(detections):.2f}s "
                    f"(interval {args.interval:g}s, timeout {args.timeout:g}s)"
                )
            svc.close()


if __name__ == "__main__":
    main()
