"""Registrant processes for the cluster-service tests: `cluster-ctl register ...` started through bin/, each
in its own process group, its stdout lines (the registration, then each event received) collected by a thread.

    with registrants() as procs:
        s1 = procs.start(urls, "server", "s1", port=9001, listen=["NOTE"])
        s1.wait_registered()
        s1.wait_line(lambda line: line.get("payload") == 7, 10, "s1 to get event 7")
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from tests.integration.util import REPO_ROOT, wait_until

CTL_BIN = REPO_ROOT / "bin" / "cluster-ctl"
INTERVAL = 0.5
TIMEOUT = 2.5  # the heartbeat timeout (lease TTL): four renewals may be late on a loaded machine
GRACE = 4.0


class Registrant:
    """One `cluster-ctl register` process and the JSON lines it printed."""

    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.args = args
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, str(CTL_BIN), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(REPO_ROOT),
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.raw.append(line.rstrip("\n"))
                with suppress(ValueError):
                    parsed = json.loads(line)
                    if isinstance(parsed, dict):
                        self.lines.append(parsed)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [line for line in self.lines if "topic" in line]

    def wait_line(self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            with self._lock:
                return next((line for line in self.lines if match(line)), None)

        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.output()}")
        line = wait_until(found, timeout, f"{what} (output: {self.output()[-2000:]})")
        assert line is not None
        return line

    def wait_registered(self, timeout: float = 20.0) -> None:
        self.wait_line(lambda line: "registered" in line, timeout, f"{self.name} to register")

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.raw)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=20)


class Registrants:
    def __init__(self) -> None:
        self.started: list[Registrant] = []

    def start(
        self,
        urls: list[str],
        kind: str,
        name: str,
        *,
        port: int,
        group: str = "g1",
        listen: tuple[str, ...] = ("NOTE",),
        extra: tuple[str, ...] = (),
    ) -> Registrant:
        ids = [group, name] if kind == "process" else [name]
        args = [
            "--endpoints", ",".join(urls), "-w", "json", "register", kind, *ids, "127.0.0.1", str(port),
            "--interval", str(INTERVAL), "--heartbeat-timeout", str(TIMEOUT), "--grace", str(GRACE),
            *(arg for topic in listen for arg in ("--listen", topic)), *extra,
        ]  # fmt: skip
        reg = Registrant(name, args)
        self.started.append(reg)
        return reg


@contextmanager
def registrants() -> Iterator[Registrants]:
    procs = Registrants()
    try:
        yield procs
    finally:
        for reg in procs.started:
            reg.kill()
