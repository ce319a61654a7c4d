"""PySyncObj as a system under test: 3 node processes, each a SyncObj with a replicated dict.

The node processes are cluster-bench workers (cluster/bench/pysyncobj_node.py): PySyncObj has no client
protocol, so the load generator runs inside the node processes and calls the replicated dict directly,
asynchronously (replicated methods with callback=). The total concurrency is spread over the 3 nodes.
PySyncObj keeps its log in memory and never fsyncs. Its warnings about truncating already-applied log
entries (a known PySyncObj safety problem) are counted from the node logs and reported.
"""

from __future__ import annotations

from pathlib import Path

from cluster.bench.pool import WorkerPool
from cluster.bench.ports import HOST, pick_base_port
from cluster.bench.system import wait_for

NODES = 3
START_TIMEOUT = 30.0
TRUNCATION_WARNING = "truncating already-applied log entries"


class PySyncObjCluster:
    name = "pysyncobj"

    def __init__(self, op_timeout: float = 10.0) -> None:
        self.op_timeout = op_timeout
        self.pool = WorkerPool([])

    def start(self, clients: int, run_dir: Path) -> None:
        base = pick_base_port(range(NODES))
        addresses = [f"{HOST}:{base + i}" for i in range(NODES)]
        self.pool = WorkerPool.start(
            [
                (
                    f"pysyncobj-node{i + 1}",
                    {
                        "driver": "pysyncobj",
                        "self": addr,
                        "partners": [a for a in addresses if a != addr],
                        "timeout": self.op_timeout,
                    },
                )
                for i, addr in enumerate(addresses)
            ],
            run_dir,
        )
        wait_for(self._leader, [], START_TIMEOUT, "a PySyncObj leader")

    def _leader(self) -> str | None:
        infos = self.pool.info()
        leaders = {i.get("leader") for i in infos}
        if len(leaders) == 1 and all(i.get("ready") for i in infos):
            leader = leaders.pop()
            return str(leader) if leader else None
        return None

    def describe(self) -> dict[str, str]:
        return {
            "cluster": f"{NODES} local PySyncObj node processes (SyncObj + replicated dict, unbatched "
            "AppendEntries, in-memory log, compaction off during the run)",
            "client": "none: PySyncObj has no client protocol; the load generator calls the node's "
            "replicated dict in-process. Linearizable get = a read command through the log (no ReadIndex); "
            "serializable get = the local dict; compare-and-swap = a replicated method",
            "load": f"inside the {NODES} node processes (the concurrency is split over them), through "
            "PySyncObj's asynchronous form (replicated methods with callback=, no sync=True waits): a closed "
            "loop keeps the node's share in flight, each callback issuing the next command; node CPU "
            "therefore includes the load generation",
            "durability": "none: PySyncObj does not fsync (in-memory log, no journal file)",
        }

    def node_pids(self) -> dict[str, int]:
        return {w.name.removeprefix("pysyncobj-"): w.pid for w in self.pool.workers}

    def counters(self) -> dict[str, dict[str, int]] | None:
        return None

    def notes(self) -> list[str]:
        count = sum(_occurrences(w.log_path, TRUNCATION_WARNING) for w in self.pool.workers)
        if not count:
            return []
        return [
            f"PySyncObj logged {count} warnings '{TRUNCATION_WARNING}' (state machines may have diverged)"
        ]

    def stop(self) -> None:
        self.pool.close()


def _occurrences(path: Path, text: str) -> int:
    try:
        return path.read_text(errors="replace").count(text)
    except OSError:
        return 0
