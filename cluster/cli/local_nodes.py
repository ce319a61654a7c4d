"""Node processes for cluster-local: find the cluster-node launcher, start one node, stream its output
prefixed by its name, and stop it (SIGTERM, a bounded wait, then SIGKILL). Also: is a TCP port free?"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


def node_command() -> list[str]:
    """How to run cluster-node: bin/cluster-node of this checkout, else the installed console script."""
    script = Path(__file__).resolve().parents[2] / "bin" / "cluster-node"
    if script.is_file():
        return [sys.executable, str(script)]
    installed = shutil.which("cluster-node")
    if installed:
        return [installed]
    raise FileNotFoundError(
        "cannot find cluster-node (neither bin/cluster-node next to this package nor on PATH)"
    )


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on host:port (binding with SO_REUSEADDR, as ZeroMQ does, fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


class NodeProcess:
    """One running node; its merged stdout/stderr goes line by line to `emit` as "<name> | <line>"."""

    def __init__(self, name: str, argv: list[str], emit: Callable[[str], None]) -> None:
        self.name = name
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # A session of its own: Ctrl-C in the terminal reaches cluster-local only, which then stops
        # the nodes itself, in order, instead of every process racing to exit at once.
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self._reader = threading.Thread(
            target=self._stream, args=(self._proc.stdout, emit), name=f"log-{name}", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def exit_code(self) -> int | None:
        return self._proc.poll()

    def terminate(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> bool:
        """Wait until the process ended or time.monotonic() reaches deadline; True if it ended."""
        try:
            self._proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        self._reader.join(1.0)  # let the last lines through
        return True

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _stream(self, pipe: IO[bytes] | None, emit: Callable[[str], None]) -> None:
        if pipe is None:
            return
        with pipe:
            for raw in pipe:
                emit(f"{self.name} | {raw.decode('utf-8', 'replace').rstrip()}")


def stop_all(nodes: list[NodeProcess], grace: float) -> list[str]:
    """SIGTERM every node, wait up to `grace` seconds, SIGKILL the rest; the names that had to be killed."""
    for node in nodes:
        node.terminate()
    deadline = time.monotonic() + grace
    killed = []
    for node in nodes:
        if not node.wait(deadline):
            node.kill()
            killed.append(node.name)
    return killed
