"""Measure the HTTP status server on a loaded store: how long scrapes of /metrics and /api/v1/cluster/nodes
take with many keys, and what a scraper costs concurrent writes.

    python -m tests.integration.measure_status_http --keys 100000 --servers 100 --processes 5

Starts a real 3-node cluster (fsync on) with HTTP status servers, writes --keys plain keys and a registry of
--servers servers with --processes processes each, then times GETs of each endpoint on the leader and on a
follower (median, p90, worst): --scrapes back to back (mostly served from the server's short-lived caches)
and --cold more, each after those caches expired. Last, it times --writes sequential puts alone, then
while one thread and then --scrapers threads GET every endpoint of the leader back to back, then alone
again. A measurement, not a test: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable

from cluster import Client
from tests.integration.test_status_http import process_record, server_record
from tests.integration.util import free_ports, start_cluster, wait_for_leader, wait_until

PATHS = ("/metrics", "/api/v1/cluster/nodes", "/api/v1/cluster/status")


def fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return len(response.read())


COLD_PAUSE = 1.1  # longer than the server's shared registry read and rendered bodies live


def cold_samples(url: str, n: int) -> list[float]:
    """`n` GETs, each after the server's caches expired (the pause itself is not timed)."""
    out = []
    for _ in range(n):
        time.sleep(COLD_PAUSE)
        t = time.perf_counter()
        fetch(url)
        out.append(time.perf_counter() - t)
    return sorted(out)


def keys(base_url: str) -> int:
    with urllib.request.urlopen(base_url + "/api/v1/node/status", timeout=30) as response:
        return int(json.load(response)["body"]["kv"]["keys"])


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return sorted(out)


def summary(samples: list[float]) -> str:
    p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
    median, worst = statistics.median(samples), samples[-1]
    return f"median {median * 1e3:7.1f} ms  p90 {p90 * 1e3:7.1f} ms  worst {worst * 1e3:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--processes", type=int, default=5, help="processes per server")
    parser.add_argument("--scrapes", type=int, default=30, help="back-to-back GETs per endpoint")
    parser.add_argument(
        "--cold", type=int, default=5, help="GETs per endpoint, each after the caches expired"
    )
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--scrapers", type=int, default=8, help="concurrent scraping threads, last round")
    args = parser.parse_args()
    ports = dict(zip(("n1", "n2", "n3"), free_ports(3), strict=True))
    http = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    with start_cluster(
        3, election_timeout_ms=1000, heartbeat_ms=100, node_args_of=lambda name: ["--http-url", http[name]]
    ) as cluster:
        leader = wait_for_leader(cluster, 30).name
        follower = next(n for n in http if n != leader)
        with Client([n.client_url for n in cluster.nodes], timeout=30.0) as client:
            t = time.perf_counter()
            pending = []
            for i in range(args.keys):
                pending.append(client.put_async(f"data/{i:08d}", {"i": i, "pad": "x" * 64}))
                if len(pending) >= 512:
                    for f in pending:
                        f.result()
                    pending.clear()
            for s in range(args.servers):
                name = f"srv-{s:04d}"
                procs = [f"{name}-p{p}" for p in range(args.processes)]
                status = "OFFLINE" if s % 10 == 0 else "ONLINE"
                pending.append(
                    client.put_async(
                        f"SERVER_META/{name}", server_record(name, status, INTP_PROCESS_LIST=procs)
                    )
                )
                for p in procs:
                    pending.append(client.put_async(f"INTP_PROCESS_META/{p}", process_record(p, None)))
            for f in pending:
                f.result()
            total = args.keys + args.servers * (1 + args.processes)
            print(f"wrote {total} keys in {time.perf_counter() - t:.1f}s")
            for name in http:  # every node has applied everything
                wait_until(lambda name=name: keys(http[name]) >= total, 120, f"{name} caught up")
            for name in (leader, follower):
                role = "leader" if name == leader else "follower"
                for path in PATHS:
                    url = http[name] + path
                    size = fetch(url)
                    warm = summary(timed(lambda url=url: fetch(url), args.scrapes))
                    print(f"{role:8s} {path:24s} {size / 1024:8.1f} KiB  back to back: {warm}")
                    cold = summary(cold_samples(url, args.cold))
                    print(f"{'':8s} {'':24s} {'':8s}      each {COLD_PAUSE}s apart: {cold}")

            def puts(tag: str) -> list[float]:
                return timed(lambda: client.put(f"probe/{tag}", "x" * 100), args.writes)

            alone = puts("alone")
            print(f"put alone:                   {summary(alone)}")
            for scrapers in (1, args.scrapers):
                busy, scrapes = scraped(lambda tag=f"s{scrapers}": puts(tag), http[leader], scrapers)
                print(f"put, {scrapers} scraper(s) looping: {summary(busy)}  ({scrapes} scrapes meanwhile)")
            print(f"put alone again:             {summary(puts('again'))}")


def scraped(work: Callable[[], list[float]], base_url: str, threads: int) -> tuple[list[float], int]:
    """`work()` while `threads` threads GET every path of `base_url` back to back."""
    stop = threading.Event()
    counts = [0] * threads

    def scraper(k: int) -> None:
        while not stop.is_set():
            for path in (*PATHS, "/api/v1/node/status", "/health"):
                fetch(base_url + path)
                counts[k] += 1

    pool = [threading.Thread(target=scraper, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    try:
        result = work()
    finally:
        stop.set()
        for t in pool:
            t.join()
    return result, sum(counts)


if __name__ == "__main__":
    main()
