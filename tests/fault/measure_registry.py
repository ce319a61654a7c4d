"""Measure what the cluster service's heartbeats cost the Raft leader: N registrants (servers registered
through ClusterService, each with its lease, alive key and record) spread over a few processes, and the
CPU the leader (and each follower) process spends over a window of steady heartbeats.

    python -m tests.fault.measure_registry [--registrants 1000] [--processes 4] [--seconds 60]
                                           [--interval 3 --timeout 9] [--record-every S] [--warmup S]

Each registrant process runs one ClusterService (monitor off: the monitors' cost is that of a watch, not of
heartbeats) and registers its share of servers; once every process reports its registrations done, the
leader's and followers' CPU time (utime + stime from /proc) and the cluster's applied index are read
before and after the window. Prints CPU as percent of one core, log entries per second and keepalives per
second. A measurement, not a test: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from cluster import Client
from tests.integration.util import REPO_ROOT, start_cluster, wait_for_leader

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def applied(client: Client, node: str) -> int:
    """The applied index `node` reports."""
    members = {m["name"]: m for m in client.status()["members"]}
    return int(members[node]["applied"])


def child(urls: list[str], names: list[str], interval: float, timeout: float, record_every: float) -> None:
    """One registrant process: register `names`, say so on stdout, heartbeat until stdin closes."""
    from cluster.service import ClusterService

    with Client(urls, timeout=30.0) as client:
        kwargs = {"record_every": record_every} if record_every > 0 else {}
        svc = ClusterService(client, interval=interval, timeout=timeout, grace=600, monitor=False, **kwargs)
        futures = [svc.register_server(n, "127.0.0.1", 10000 + i, wait=False) for i, n in enumerate(names)]
        for fut in futures:
            fut.result(timeout=600)
        print("registered", flush=True)
        sys.stdin.read()  # until the parent closes our stdin
        svc.close(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrants", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=9.0)
    parser.add_argument("--record-every", type=float, default=0.0, help="0: the service's default")
    parser.add_argument(
        "--warmup", type=float, default=6.0, help="seconds between the registrations and the window"
    )
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--urls", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.urls.split(","), args.child, args.interval, args.timeout, args.record_every)
        return
    with start_cluster(3, election_timeout_ms=1000, heartbeat_ms=100) as cluster:
        leader = wait_for_leader(cluster, timeout=30)
        urls = [n.client_url for n in cluster.nodes]
        names = [f"reg-{i:05d}" for i in range(args.registrants)]
        procs: list[subprocess.Popen[str]] = []
        try:
            for p in range(args.processes):
                share = names[p :: args.processes]
                common = ["--interval", str(args.interval), "--timeout", str(args.timeout)]
                common += ["--record-every", str(args.record_every), "--urls", ",".join(urls)]
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "tests.fault.measure_registry", *common, "--child", *share],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        cwd=str(REPO_ROOT),
                        start_new_session=True,
                    )
                )
            t0 = time.monotonic()
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line.strip() != "registered":
                    raise RuntimeError(f"a registrant process failed (exit {proc.poll()})")
            print(
                f"{args.registrants} registrants in {args.processes} processes: {time.monotonic() - t0:.1f}s"
            )
            time.sleep(args.warmup)  # the usage averages settle over the first 100 samples (5 min at 3 s)
            with Client(urls, timeout=10.0) as client:
                before_index = applied(client, leader.name)
                pids = {n.name: n.proc.pid for n in cluster.nodes if n.proc is not None}
                cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                start = time.monotonic()
                time.sleep(args.seconds)
                elapsed = time.monotonic() - start
                cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
                after_index = applied(client, leader.name)
                now_leader = client.status()["leader"]
            if now_leader != leader.name:
                print(f"warning: the leader changed during the window ({leader.name} -> {now_leader})")
            for name in pids:
                role = "leader" if name == leader.name else "follower"
                share = 100.0 * (cpu_after[name] - cpu_before[name]) / elapsed
                print(f"{name} ({role}): {share:.1f}% of one core")
            entries = (after_index - before_index) / elapsed
            print(
                f"log entries/s: {entries:.1f}; keepalives/s due: {args.registrants / args.interval:.0f}; "
                f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
            )
        finally:
            for proc in procs:
                if proc.stdin is not None:
                    proc.stdin.close()
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait(timeout=10)


if __name__ == "__main__":
    main()
