"""zraft as a system under test: a fresh local cluster started through bin/cluster-node, or --endpoints.

Nodes get exactly the flags cluster-local gives them (cluster.cli.local.node_argv), on a free block of ports
laid out like cluster-local's (client base+i, peer base+100+i), with data directories in a temporary
directory that is removed afterwards. Writes are fsynced before they are acknowledged (always on).
Load: separate load-generator processes, each with one cluster.Client driven through its asynchronous API.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cluster.bench.pool import WorkerPool
from cluster.bench.ports import pick_base_port
from cluster.bench.system import ServerProcess, stop_servers, wait_for
from cluster.cli.local import node_argv
from cluster.cli.local_keys import LocalKeys, ensure_keys
from cluster.client.api import Client
from cluster.client.endpoints import PEER_PORT_OFFSET, local_endpoints, node_name
from cluster.errors import ZraftError

START_TIMEOUT = 30.0


class ZraftCluster:
    name = "zraft"

    def __init__(
        self,
        nodes: int = 3,
        endpoints: list[str] | None = None,
        data_root: str | None = None,
        op_timeout: float = 10.0,
        secure: bool = False,
    ) -> None:
        self.secure = secure
        self.name = "zraft-secure" if secure else "zraft"
        self.keys: LocalKeys | None = None
        self.nodes = nodes
        self.endpoints = endpoints
        self.external = endpoints is not None
        self.data_root = data_root
        self.op_timeout = op_timeout
        self.servers: list[ServerProcess] = []
        self.data_dir: Path | None = None
        self.client: Client | None = None
        self.pool = WorkerPool([])
        self._clients = 0

    def start(self, clients: int, run_dir: Path) -> None:
        self._clients = clients
        if self.endpoints is None:
            self.endpoints = self._start_nodes(run_dir)
        endpoints = self.endpoints
        curve = self._curve()
        self.client = wait_for(
            lambda: _leader_client(endpoints, curve), self.servers, START_TIMEOUT, "a zraft leader"
        )
        self.pool = WorkerPool.start(
            [
                (
                    f"zraft-load{i + 1}",
                    {"driver": "zraft", "endpoints": endpoints, "timeout": self.op_timeout, **curve},
                )
                for i in range(clients)
            ],
            run_dir,
        )

    def _start_nodes(self, run_dir: Path) -> list[str]:
        offsets = [i for i in range(1, self.nodes + 1)] + [
            PEER_PORT_OFFSET + i for i in range(1, self.nodes + 1)
        ]
        base = pick_base_port(offsets)
        self.data_dir = Path(tempfile.mkdtemp(prefix="zraft-bench-", dir=self.data_root))
        layout = argparse.Namespace(
            nodes=self.nodes, base_port=base, election_timeout_ms=None, heartbeat_ms=None, log_level=None
        )
        endpoints = local_endpoints(self.nodes, base)
        if self.secure:
            self.keys = ensure_keys(self.data_dir, self.nodes, endpoints)
        for i in range(1, self.nodes + 1):
            name = node_name(i)
            argv = node_argv(layout, i, self.data_dir, self.keys)
            self.servers.append(ServerProcess(name, argv, run_dir / f"{self.name}-{name}.log"))
        return endpoints

    def _curve(self) -> dict[str, str]:
        """The Client's CURVE arguments for this cluster (none when it is plaintext)."""
        if self.keys is None:
            return {}
        return {"curve_secret_key": str(self.keys.client_secret), "server_public_key": self.keys.server_spec}

    def describe(self) -> dict[str, str]:
        where = (
            f"existing cluster at {','.join(self.endpoints or [])}"
            if self.external
            else f"{self.nodes} local processes started via bin/cluster-node (cluster-local's flags), "
            f"data in a temporary directory under {self.data_root or tempfile.gettempdir()}"
        )
        return {
            "cluster": where,
            "client": "cluster.Client (ZeroMQ DEALER + msgpack); linearizable get = ReadIndex, "
            "serializable get = served locally by the receiving node",
            "load": f"{self._clients} load-generator process(es), each with one Client driven through its "
            "asynchronous API (put_async/get_async/cas_async futures): a closed loop keeps the process's "
            "share of the concurrency in flight, each completion callback issuing the next request",
            "durability": "fsync before acknowledging (always on)",
            "security": "CURVE (CurveZMQ) on the peer and client ports, keys made for the run"
            if self.secure
            else "plaintext (no --curve-secret-key)",
        }

    def node_pids(self) -> dict[str, int]:
        return {s.name: s.pid for s in self.servers}

    def counters(self) -> dict[str, dict[str, int]] | None:
        if self.client is None:
            return None
        try:
            status = self.client.status(timeout=2.0)
        except ZraftError:
            return {}
        out: dict[str, dict[str, int]] = {}
        for member in status.get("members", []):
            storage: Any = member.get("storage")
            if isinstance(storage, dict) and "fsyncs" in storage and "entries" in storage:
                out[str(member["name"])] = {
                    "fsyncs": int(storage["fsyncs"]),
                    "entries": int(storage["entries"]),
                    "terms": int(member.get("term", 0)),  # every election starts a new term
                }
        return out

    def notes(self) -> list[str]:
        return []

    def stop(self) -> None:
        self.pool.close()
        if self.client is not None:
            self.client.close()
            self.client = None
        stop_servers(self.servers)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _leader_client(endpoints: list[str], curve: dict[str, str]) -> Client | None:
    """A connected Client once the cluster has a leader; None while it has not."""
    try:
        client = Client(
            endpoints,
            timeout=1.0,
            curve_secret_key=curve.get("curve_secret_key"),
            server_public_key=curve.get("server_public_key"),
        )
    except ZraftError:
        return None
    try:
        if client.status(timeout=1.0).get("leader"):
            return client
    except ZraftError:
        pass
    client.close()
    return None
