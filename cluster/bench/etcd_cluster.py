"""etcd as a system under test: a fresh 3-member etcd on loopback with temporary data directories.

Uses the `etcd` binary of Debian's etcd-server package. Every member writes its WAL with fsync (etcd's
default). Load: separate load-generator processes, each with one gRPC channel (cluster/bench/drivers.py)
driven through grpc.aio, connected to member (i mod 3) like etcd's own benchmark spreads connections.
Durability counters come from each member's Prometheus /metrics: WAL fsyncs
(etcd_disk_wal_fsync_duration_seconds_count) and entries (etcd_server_proposals_committed_total, the
member's committed raft index; its advance approximates the entries appended).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from cluster.bench.drivers import ETCD_CLIENT
from cluster.bench.pool import WorkerPool
from cluster.bench.ports import HOST, pick_base_port
from cluster.bench.system import ServerProcess, stop_servers, wait_for

INSTALL_HINT = (
    "etcd is not installed. Install Debian's etcd-server package (it provides /usr/bin/etcd):\n"
    "    sudo apt-get update && sudo apt-get install -y etcd-server\n"
    "or put an etcd binary on PATH (set ETCD_BIN=/path/to/etcd to use a specific one)."
)
FSYNC_METRIC = "etcd_disk_wal_fsync_duration_seconds_count"
ENTRIES_METRIC = "etcd_server_proposals_committed_total"
LEADER_CHANGES_METRIC = "etcd_server_leader_changes_seen_total"
START_TIMEOUT = 30.0
MEMBERS = 3


def find_etcd() -> str | None:
    """The etcd binary: $ETCD_BIN, else `etcd` on PATH, else Debian's /usr/bin/etcd."""
    explicit = os.environ.get("ETCD_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None


def parse_metrics(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """The values of unlabelled Prometheus samples `names` in a /metrics text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        if name in names:
            out[name] = float(value.split()[0])
    return out


def member_argv(binary: str, i: int, base: int, data_dir: Path, token: str) -> list[str]:
    """Member e<i> (1-based): client port base+i, peer port base+100+i."""
    peers = ",".join(f"e{j}=http://{HOST}:{base + 100 + j}" for j in range(1, MEMBERS + 1))
    client = f"http://{HOST}:{base + i}"
    peer = f"http://{HOST}:{base + 100 + i}"
    return [
        binary,
        "--name", f"e{i}",
        "--data-dir", str(data_dir / f"e{i}"),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", peers,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", token,
        "--logger", "zap",
        "--log-outputs", "stderr",
        "--log-level", "warn",
    ]  # fmt: skip


class EtcdCluster:
    name = "etcd"

    def __init__(self, binary: str, data_root: str | None = None, op_timeout: float = 10.0) -> None:
        self.binary = binary
        self.data_root = data_root
        self.op_timeout = op_timeout
        self.servers: list[ServerProcess] = []
        self.client_urls: list[str] = []
        self.data_dir: Path | None = None
        self.pool = WorkerPool([])
        self._clients = 0

    def start(self, clients: int, run_dir: Path) -> None:
        self._clients = clients
        members = range(1, MEMBERS + 1)
        base = pick_base_port([*members, *(100 + i for i in members)])
        self.data_dir = Path(tempfile.mkdtemp(prefix="etcd-bench-", dir=self.data_root))
        token = f"bench-{base}-{os.getpid()}"
        for i in members:
            argv = member_argv(self.binary, i, base, self.data_dir, token)
            self.servers.append(ServerProcess(f"e{i}", argv, run_dir / f"etcd-e{i}.log"))
        self.client_urls = [f"{HOST}:{base + i}" for i in members]
        wait_for(self._healthy, self.servers, START_TIMEOUT, "a healthy etcd cluster")
        self.pool = WorkerPool.start(
            [
                (
                    f"etcd-load{i + 1}",
                    {"driver": "etcd", "endpoint": self.client_urls[i % MEMBERS], "timeout": self.op_timeout},
                )
                for i in range(clients)
            ],
            run_dir,
        )

    def _get(self, url: str, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://{url}{path}", timeout=2.0) as response:
                return str(response.read().decode("utf-8", "replace"))
        except OSError:
            return None

    def _healthy(self) -> bool | None:
        for url in self.client_urls:
            body = self._get(url, "/health")
            if body is None or '"true"' not in body:
                return None
        return True

    def describe(self) -> dict[str, str]:
        return {
            "cluster": f"{MEMBERS} local etcd members ({self.binary}, version {self._version()}), "
            f"data in a temporary directory under {self.data_root or tempfile.gettempdir()}",
            "client": f"{ETCD_CLIENT}; linearizable get = default Range, serializable get = Range with "
            "serializable=True, compare-and-swap = Txn(value == expected -> put)",
            "load": f"{self._clients} load-generator process(es), each with one grpc.aio channel (KV stub "
            "Put/Range/Txn calls on an asyncio loop thread): a closed loop keeps the process's share of the "
            "concurrency in flight, each completion issuing the next request; "
            f"connected to member (i mod {MEMBERS}), followers forward writes to the leader",
            "durability": "WAL fsync before acknowledging (etcd's default); fsyncs counted from /metrics "
            f"({FSYNC_METRIC}), entries from {ENTRIES_METRIC}",
        }

    def _version(self) -> str:
        body = self._get(self.client_urls[0], "/version") if self.client_urls else None
        try:
            return str(json.loads(body or "")["etcdserver"])
        except (ValueError, KeyError, TypeError):
            return "unknown"

    def node_pids(self) -> dict[str, int]:
        return {s.name: s.pid for s in self.servers}

    def counters(self) -> dict[str, dict[str, int]] | None:
        out: dict[str, dict[str, int]] = {}
        for server, url in zip(self.servers, self.client_urls, strict=True):
            body = self._get(url, "/metrics")
            if body is None:
                continue
            values = parse_metrics(body, (FSYNC_METRIC, ENTRIES_METRIC, LEADER_CHANGES_METRIC))
            if FSYNC_METRIC in values and ENTRIES_METRIC in values:
                out[server.name] = {
                    "fsyncs": int(values[FSYNC_METRIC]),
                    "entries": int(values[ENTRIES_METRIC]),
                    "terms": int(values.get(LEADER_CHANGES_METRIC, 0)),
                }
        return out

    def notes(self) -> list[str]:
        return []

    def stop(self) -> None:
        self.pool.close()
        stop_servers(self.servers)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
