"""In the bench: worker processes (`python -m cluster.bench.worker`) and the commands sent to them.

A WorkerPool is the set of processes that generate one system's load: separate load-generator processes
for zraft and etcd, the node processes themselves for PySyncObj. Each worker's stderr goes to a log file
in the run directory; when a worker fails, the error names that file and quotes its last lines.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import cluster
from cluster.bench.ipc import WorkerGone, read_message, write_message

REPO_ROOT = Path(cluster.__file__).resolve().parent.parent
START_TIMEOUT = 60.0
COMMAND_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Worker:
    """One worker process. Its first message (`init`) says which driver to build."""

    def __init__(self, name: str, init: dict[str, Any], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cluster.bench.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                bufsize=0,
                env=env,
                start_new_session=True,
            )
        self.send(init)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def _stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def _failure(self, what: str) -> BenchError:
        tail = log_tail(self.log_path)
        more = f"\n--- last lines of {self.log_path} ---\n{tail}" if tail else f" (log: {self.log_path})"
        return BenchError(f"worker {self.name}: {what}{more}")

    def send(self, message: dict[str, Any]) -> None:
        try:
            write_message(self._stdin(), message)
        except (BrokenPipeError, OSError) as exc:
            raise self._failure(f"cannot send ({exc}); exit status {self.proc.poll()}") from None

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            answer = read_message(self._stdout(), timeout)
        except WorkerGone as exc:
            raise self._failure(f"{exc}; exit status {self.proc.poll()}") from None
        if not answer.get("ok"):
            raise self._failure(str(answer.get("error", "failed")))
        return answer

    def request(self, message: dict[str, Any], timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        self.send(message)
        return self.receive(timeout)

    def ask_to_stop(self) -> None:
        """Send "stop" and close stdin: the worker exits after its current command (EOF ends it too)."""
        if self.proc.poll() is None:
            with contextlib.suppress(BenchError):
                self.send({"cmd": "stop"})
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def wait_or_kill(self, deadline: float) -> None:
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self.ask_to_stop()
        self.wait_or_kill(time.monotonic() + timeout)


class WorkerPool:
    """The workers of one system; commands go to all of them (or to those given load) at once."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)
        self._running: list[Worker] = []

    @classmethod
    def start(cls, specs: Sequence[tuple[str, dict[str, Any]]], log_dir: Path) -> WorkerPool:
        """Start one worker per (name, init) and wait until each has built its driver."""
        workers: list[Worker] = []
        try:
            for name, init in specs:
                workers.append(Worker(name, init, log_dir / f"{name}.log"))
            for worker in workers:
                worker.receive(START_TIMEOUT)
        except BaseException:
            for worker in workers:
                worker.stop(timeout=2.0)
            raise
        return cls(workers)

    def __len__(self) -> int:
        return len(self.workers)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def preload(self, keys: int, seed: int, in_flight: int = 32) -> dict[str, Any]:
        return self.workers[0].request({"cmd": "preload", "keys": keys, "in_flight": in_flight, "seed": seed})

    def prepare(
        self, workload: str, in_flight: Sequence[int], seed: int, read_set: int, client: str = "async"
    ) -> None:
        """Have worker i prepare `in_flight[i]` load slots (none where 0) and wait until all are ready;
        `client` is how they call it: "async" (one closed loop) or "threads" (a blocking call per thread)."""
        self._running = []
        for index, (worker, count) in enumerate(zip(self.workers, in_flight, strict=True)):
            if count:
                worker.send(
                    {
                        "cmd": "prepare",
                        "workload": workload,
                        "in_flight": count,
                        "worker": index,
                        "seed": seed,
                        "read_set": read_set,
                        "client": client,
                    }
                )
                self._running.append(worker)
        for worker in self._running:
            worker.receive(COMMAND_TIMEOUT)

    def go(self, start: float, warmup: float, duration: float) -> None:
        for worker in self._running:
            worker.send({"cmd": "go", "start": start, "warmup": warmup, "duration": duration})

    def results(self, timeout: float) -> list[dict[str, Any]]:
        return [worker.receive(timeout) for worker in self._running]

    def info(self) -> list[dict[str, Any]]:
        return [worker.request({"cmd": "info"}, 10.0) for worker in self.workers]

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every worker: all are asked at once, those still running after `timeout` are killed."""
        for worker in self.workers:
            worker.ask_to_stop()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.wait_or_kill(deadline)
