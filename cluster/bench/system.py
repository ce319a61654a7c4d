"""What the runner needs from a system under test (zraft, etcd, PySyncObj), and server processes.

A System starts its cluster and its load generators (a WorkerPool), reports the pids of its node
processes, its per-node durability counters ({"fsyncs", "entries", "terms"}: "terms" counts the leader
changes the node has seen, its Raft term for zraft; None when it does not fsync) and any
notes for the report, and stops everything it started.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from cluster.bench.pool import BenchError, WorkerPool, log_tail

T = TypeVar("T")


class System(Protocol):
    name: str
    pool: WorkerPool

    def start(self, clients: int, run_dir: Path) -> None: ...

    def describe(self) -> dict[str, str]: ...

    def node_pids(self) -> dict[str, int]: ...

    def counters(self) -> dict[str, dict[str, int]] | None: ...

    def notes(self) -> list[str]: ...

    def stop(self) -> None: ...


class ServerProcess:
    """A node of a cluster the bench started: its own session, output to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_running(self) -> None:
        code = self.proc.poll()
        if code is not None:
            tail = log_tail(self.log_path)
            raise BenchError(f"{self.name} exited with status {code}; last lines of {self.log_path}:\n{tail}")


def stop_servers(servers: Sequence[ServerProcess], grace: float = 10.0) -> None:
    """SIGTERM every server, wait up to `grace` seconds, then SIGKILL the rest."""
    for s in servers:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for s in servers:
        try:
            s.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()


def wait_for(probe: Callable[[], T | None], servers: Sequence[ServerProcess], timeout: float, what: str) -> T:
    """Poll `probe` until it returns a value; BenchError when a server exits or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for s in servers:
            s.check_running()
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)
