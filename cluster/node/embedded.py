"""Node: the embeddable node, a full zraft node on a thread of an application process.

    from cluster import Node

    with Node(["--name", "n1", "--data-dir", "/var/lib/app/zraft",
               "--peer-url", "tcp://10.0.0.5:7101", "--client-url", "tcp://10.0.0.5:7001",
               "--initial-cluster", "n1=tcp://10.0.0.5:7101,n2=...,n3=..."]) as node:
        with node.client() as c:
            c.put("servers/a", {...})

The node is exactly what `cluster-node` runs (cluster/node/server.py: the same assembly, storage, runtime
and configuration: a NodeConfig, or the command-line arguments, ZRAFT_* variables and TOML file that
cluster-node reads), driven by its own event loop on a thread of its own. What differs:

- no signal handlers: the application owns its signals (and Python allows handlers only on the main
  thread); `stop()` is the node's SIGTERM: a leader hands its leadership to the most up-to-date follower
  first (cluster/node/shutdown.py), then the node closes its sockets, storage and data-directory lock;
- no logging set-up: the node logs through loguru as configured by the application;
- `start()` returns once the node is serving, or raises what stopped it from starting (ConfigError, a port
  in use, a locked or unusable data directory); a node that fails later is logged and reported by
  `stop()` (NodeFailed).

stop() only records the request and wakes the node's loop (the loop alone touches Raft state, DESIGN
rule 8), then waits for the thread. A Node whose application exits without stop() is stopped at
interpreter exit (atexit), the thread being a daemon so that a forgotten node never blocks the exit.
Several Nodes may run in one process (each has its own ZeroMQ context, loop and data directory).
"""

from __future__ import annotations

import atexit
import signal
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from loguru import logger

from cluster.client.aio import AsyncClient
from cluster.client.api import Client
from cluster.node.config import NodeConfig, load_config
from cluster.node.runtime import NodeRuntime
from cluster.node.server import serve

START_TIMEOUT = 60.0  # recovery of a large WAL may take a while
STOP_TIMEOUT = 30.0


class NodeFailed(Exception):
    """The embedded node stopped because of an error (its cause is attached); it was logged then."""


class Node:
    """A zraft node on its own thread; see the module docstring. start() once, stop() once or more."""

    def __init__(self, config: NodeConfig | Sequence[str]) -> None:
        """Take a NodeConfig as is, or read cluster-node's arguments (and its ZRAFT_* variables and
        --config file) with its checks: ConfigError for a bad one."""
        self.config = config if isinstance(config, NodeConfig) else load_config(list(config))
        self._lock = threading.Lock()  # guards _runtime and _stopping against the node's thread
        self._runtime: NodeRuntime | None = None
        self._stopping = False
        self._serving = threading.Event()  # set when serving, or when the thread ended before that
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what ended the node, when it did not stop cleanly

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def client_url(self) -> str:
        return self.config.client_url

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = START_TIMEOUT) -> Node:
        """Start the node's thread and wait until it serves; raises what kept it from starting."""
        if self._thread is not None:
            raise RuntimeError(f"node {self.name} was started already")
        self._thread = threading.Thread(target=self._run, name=f"zraft-node-{self.name}", daemon=True)
        self._thread.start()
        if not self._serving.wait(timeout):
            self.stop()
            raise TimeoutError(f"node {self.name} did not start within {timeout:g}s")
        if self._runtime is None:  # it ended before serving
            self._thread.join()
            assert self.error is not None
            raise self.error
        atexit.register(self._stop_at_exit)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the node as SIGTERM stops cluster-node (a leader transfers its leadership first) and wait
        for its thread. Safe to call more than once, and before start(). Raises NodeFailed when the node
        had stopped because of an error, TimeoutError when its thread did not end in time."""
        with self._lock:
            self._stopping = True
            runtime = self._runtime
        thread = self._thread
        if thread is None:
            return
        if runtime is not None and thread.is_alive():
            _request_stop(runtime)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"node {self.name} did not stop within {timeout:g}s")
        atexit.unregister(self._stop_at_exit)
        if self.error is not None and self._runtime is not None:
            raise NodeFailed(f"node {self.name} stopped because of an error: {self.error}") from self.error

    def client(self, timeout: float = 5.0, **options: Any) -> Client:
        """A Client connected to the cluster through this node (it discovers the other members)."""
        return Client([self.client_url], timeout, **options)

    def async_client(self, timeout: float = 5.0, **options: Any) -> AsyncClient:
        """An AsyncClient for the cluster through this node; connect it with `async with`."""
        return AsyncClient([self.client_url], timeout, **options)

    def __enter__(self) -> Node:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.stop()
            return
        try:  # do not hide the block's own exception behind the node's
            self.stop()
        except (NodeFailed, TimeoutError) as failure:
            logger.error("{}: {}", self.name, failure)

    # --- the node's thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            serve(self.config, stop_signals=False, on_start=self._on_start)
        except BaseException as exc:  # noqa: BLE001 - every failure is the application's to see
            self.error = exc
            if self._runtime is not None:
                logger.opt(exception=exc).error("{}: the embedded node failed", self.name)
        finally:
            self._serving.set()

    def _on_start(self, runtime: NodeRuntime) -> None:
        with self._lock:
            self._runtime = runtime
            stopping = self._stopping
        if stopping:  # stop() came while the node was recovering
            _request_stop(runtime)
        self._serving.set()

    def _stop_at_exit(self) -> None:
        try:
            self.stop()
        except Exception as exc:  # noqa: BLE001 - at exit there is no caller left to raise to
            logger.error("{}: {}", self.name, exc)


def _request_stop(runtime: NodeRuntime) -> None:
    """What SIGTERM does to cluster-node: record the request, then wake the loop to act on it."""
    runtime.stop.request(signal.SIGTERM, "stop requested by the application")
    runtime.loop.wakeup()
