"""Run the benchmark's cells: every (workload, concurrency) for every system, the systems alternating.

Cells go workload by workload, concurrency by concurrency; within each (workload, concurrency) every
system runs once, and the order of the systems rotates from one cell to the next, so slow drifts of the
machine (other jobs, page cache, thermal) hit every system alike.

One cell: split the concurrency over the system's workers, let them prepare their load slots (each worker
keeps its share of the requests in flight through the client's asynchronous API, or with the client mode
"threads" one thread per request making blocking calls), start them all at one
wall-clock instant; after the warm-up sample node CPU, reset the nodes' peak RSS and read the
durability counters; at the end sample again and collect the latencies.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cluster.bench import procstats
from cluster.bench.progress import Progress
from cluster.bench.stats import histogram, summarize
from cluster.bench.system import System
from cluster.bench.workloads import STREAM_SYSTEMS, STREAM_WORKLOADS, split_concurrency

START_DELAY = 0.15  # seconds between the go command and the common start instant
RESULT_GRACE = 30.0  # extra wait for the workers' answers beyond the client timeout


BLOCKING_SYSTEMS = frozenset({"zraft", "zraft-secure", "etcd"})  # a blocking client: blocking_drivers.py


def can_run(system: str, workload: str, client: str = "async") -> bool:
    """Whether the system offers what the workload needs (watches and leases: zraft and etcd only) through
    the client mode: "threads" (blocking calls from threads) covers the key-value workloads of the systems
    with a client library (not PySyncObj, whose load runs inside its nodes)."""
    if workload in STREAM_WORKLOADS and system not in STREAM_SYSTEMS:
        return False
    return client == "async" or (system in BLOCKING_SYSTEMS and workload not in STREAM_WORKLOADS)


def plan_cells(
    workloads: Sequence[str],
    concurrencies: Sequence[int],
    systems: Sequence[str],
    clients: Sequence[str] = ("async",),
    per_workload: Mapping[str, Sequence[int]] | None = None,
) -> list[tuple[str, int, str, str]]:
    """(workload, concurrency, system, client mode) in run order: within each (workload, concurrency)
    every (client mode, system) pair runs once, the order rotating by one every cell. A pair that cannot
    run the workload sits it out. `per_workload` gives some workloads concurrencies of their own."""
    plan = []
    cell = 0
    for workload in workloads:
        able = [(c, s) for c in clients for s in systems if can_run(s, workload, c)]
        for concurrency in (per_workload or {}).get(workload, concurrencies):
            if not able:
                continue
            k = cell % len(able)
            for client, system in [*able[k:], *able[:k]]:
                plan.append((workload, concurrency, system, client))
            cell += 1
    return plan


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    node_cpu: dict[str, float | None]
    client_cpu: dict[int, float | None]
    counters: dict[str, dict[str, int]] | None


def take_snapshot(system: System, client_pids: Sequence[int]) -> Snapshot:
    return Snapshot(
        at=time.monotonic(),
        node_cpu={name: procstats.cpu_seconds(pid) for name, pid in system.node_pids().items()},
        client_cpu={pid: procstats.cpu_seconds(pid) for pid in client_pids},
        counters=system.counters(),
    )


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def make_row(
    system: str,
    workload: str,
    concurrency: int,
    duration: float,
    answers: Sequence[dict[str, Any]],
    before: Snapshot,
    after: Snapshot,
    peaks: dict[str, int | None],
    pids: dict[str, int],
    peak_scope: str,
    client: str = "async",
) -> dict[str, Any]:
    """One result row (JSON-ready) from the workers' answers and the two snapshots."""
    latencies: array[float] = array("d")
    for answer in answers:
        latencies.frombytes(answer["latencies"])
    ops = sum(int(a["ops"]) for a in answers)
    ordered = sorted(latencies)
    summary = summarize(ordered, is_sorted=True)
    nodes = {
        name: {
            "pid": pids[name],
            "cpu_s": _round(_delta(after.node_cpu.get(name), before.node_cpu.get(name)), 3),
            "peak_rss_mb": _megabytes(peaks.get(name)),
        }
        for name in pids
    }
    client_cpu = [_delta(after.client_cpu.get(pid), before.client_cpu.get(pid)) for pid in after.client_cpu]
    known_client_cpu = [c for c in client_cpu if c is not None]
    window = max(after.at - before.at, 1e-9)
    fsync_by_node: dict[str, dict[str, int]] = {}
    if before.counters is not None and after.counters is not None:
        for name, end in after.counters.items():
            start = before.counters.get(name)
            if start is not None:
                fsync_by_node[name] = {k: end[k] - start[k] for k in ("fsyncs", "entries")}
    # Leader changes during the cell: the most new terms any node saw (a spurious election under load
    # shows here). None when the system reports no terms.
    new_terms = [
        end["terms"] - before.counters[name]["terms"]
        for name, end in (after.counters or {}).items()
        if "terms" in end and before.counters is not None and "terms" in before.counters.get(name, {})
    ]
    fsyncs = sum(c["fsyncs"] for c in fsync_by_node.values())
    entries = sum(c["entries"] for c in fsync_by_node.values())
    writes = [int(a["writes"]) for a in answers if "writes" in a]  # the watch workload's writer
    extra = {"writes_per_s": round(sum(writes) / duration, 1)} if writes else {}
    return extra | {
        "system": system,
        "client": client,
        "workload": workload,
        "concurrency": concurrency,
        "duration_s": round(duration, 3),
        "ops": ops,
        "ops_per_s": round(ops / duration, 1),
        "errors": sum(int(a["errors"]) for a in answers),
        "misses": sum(int(a["misses"]) for a in answers),
        "error_sample": next((a["error_sample"] for a in answers if a.get("error_sample")), ""),
        "latency_ms": summary.to_dict() | {"count": ops},
        "histogram": histogram(ordered),
        "nodes": nodes,
        "node_cpu_s": _round(sum(n["cpu_s"] for n in nodes.values() if n["cpu_s"] is not None), 3),
        "client_cpu_s": _round(sum(known_client_cpu), 3) if known_client_cpu else None,
        "peak_rss_scope": peak_scope,
        "durability": "none" if before.counters is None else "fsync",
        "fsyncs_per_s": round(fsyncs / window, 1) if fsync_by_node else None,
        "entries_per_fsync": round(entries / fsyncs, 2) if fsyncs else None,
        "fsync_by_node": fsync_by_node or None,
        "leader_changes": max(new_terms) if new_terms else None,
    }


def _megabytes(size: int | None) -> float | None:
    return None if size is None else round(size / 2**20, 1)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class Runner:
    def __init__(
        self,
        systems: dict[str, System],
        *,
        duration: float,
        warmup: float,
        read_set: int,
        seed: int,
        op_timeout: float,
        progress: Progress,
    ) -> None:
        self.systems = systems
        self.duration = duration
        self.warmup = warmup
        self.read_set = read_set
        self.seed = seed
        self.op_timeout = op_timeout
        self.progress = progress

    def run(self, plan: Sequence[tuple[str, int, str, str]]) -> list[dict[str, Any]]:
        rows = []
        for workload, concurrency, name, client in plan:
            self.progress.cell(f"{name} {workload} c={concurrency} {client}")
            rows.append(self.run_cell(self.systems[name], workload, concurrency, client))
        self.progress.done()
        return rows

    def run_cell(
        self, system: System, workload: str, concurrency: int, client: str = "async"
    ) -> dict[str, Any]:
        pool = system.pool
        self.progress.update(0.0, self.warmup + self.duration, "preparing")
        pool.prepare(workload, split_concurrency(concurrency, len(pool)), self.seed, self.read_set, client)
        pids = system.node_pids()
        client_pids = [p for p in pool.pids if p not in pids.values()]
        start = time.time() + START_DELAY
        pool.go(start, self.warmup, self.duration)
        measure_at = start + self.warmup
        end_at = measure_at + self.duration
        self._wait_until(measure_at, start)
        scope = (
            "cell" if all([procstats.reset_peak_rss(pid) for pid in pids.values()]) else "process lifetime"
        )
        before = take_snapshot(system, client_pids)
        self._wait_until(end_at, start)
        after = take_snapshot(system, client_pids)
        peaks = {name: procstats.peak_rss_bytes(pid) for name, pid in pids.items()}
        self.progress.update(self.warmup + self.duration, self.warmup + self.duration, "collecting")
        answers = pool.results(self.op_timeout + RESULT_GRACE)
        return make_row(
            system.name,
            workload,
            concurrency,
            self.duration,
            answers,
            before,
            after,
            peaks,
            pids,
            scope,
            client,
        )

    def _wait_until(self, deadline: float, start: float) -> None:
        total = self.warmup + self.duration
        while True:
            now = time.time()
            if now >= deadline:
                return
            self.progress.update(max(0.0, now - start), total, "warm-up" if now < start + self.warmup else "")
            time.sleep(min(0.2, deadline - now))
