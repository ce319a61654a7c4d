"""Inside a worker process: run one workload with N threads against one driver, and time every operation.

A Cell is prepared first (its threads start and build their operations, which may write a key for "cas"),
then run once: every thread starts at the same wall-clock instant, runs operations back to back until the
end, and records the latency of each operation that started after the warm-up and finished before the
end. Many threads share the worker's one driver (one client connection), so one worker keeps up to N
requests in flight.
"""

from __future__ import annotations

import random
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster.bench.workloads import Driver, Op, ThreadContext, make_op, make_value

PREPARE_TIMEOUT = 60.0
ERROR_PAUSE = 0.001
MAX_SAMPLES = 500_000  # latencies shipped per worker and cell; beyond this every k-th one


@dataclass(slots=True)
class _ThreadResult:
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: int = 0
    misses: int = 0
    error_sample: str = ""


class Cell:
    """One workload at one thread count in this worker: prepare(), then run() once."""

    def __init__(
        self, driver: Driver, workload: str, threads: int, worker: int, seed: int, read_set: int
    ) -> None:
        self.driver = driver
        self.workload = workload
        self.contexts = [ThreadContext(worker, t, seed, read_set) for t in range(threads)]
        self._ready = threading.Semaphore(0)
        self._go = threading.Event()
        self._results = [_ThreadResult() for _ in range(threads)]
        self._setup_errors: list[str] = []
        self._start = self._measure = self._end = 0.0
        self._threads = [
            threading.Thread(target=self._thread_main, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def prepare(self, timeout: float = PREPARE_TIMEOUT) -> None:
        """Start the threads and wait until each has built its operation; raises if one could not."""
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for _ in self._threads:
            if not self._ready.acquire(timeout=max(0.0, deadline - time.monotonic())):
                self._abort()
                raise RuntimeError(f"{self.workload}: threads not ready within {timeout:g}s")
        if self._setup_errors:
            self._abort()
            raise RuntimeError(f"{self.workload}: setup failed: {self._setup_errors[0]}")

    def run(self, start_wall: float, warmup: float, duration: float) -> dict[str, Any]:
        """Run from wall-clock start_wall for warmup + duration seconds; the answer for the bench."""
        now_perf, now_wall = time.perf_counter(), time.time()
        self._start = now_perf + (start_wall - now_wall)
        self._measure = self._start + warmup
        self._end = self._measure + duration
        cpu_before = time.process_time()
        self._go.set()
        for thread in self._threads:
            thread.join()
        latencies = array("d")
        errors = misses = 0
        sample = ""
        for r in self._results:
            latencies.extend(r.latencies)
            errors += r.errors
            misses += r.misses
            sample = sample or r.error_sample
        ops = len(latencies)
        if ops > MAX_SAMPLES:  # a very fast local read: ship an evenly thinned sample of the latencies
            latencies = latencies[:: -(-ops // MAX_SAMPLES)]
        return {
            "ok": True,
            "ops": ops,
            "errors": errors,
            "misses": misses,
            "error_sample": sample,
            "latencies": latencies.tobytes(),
            "cpu_s": time.process_time() - cpu_before,
        }

    def _abort(self) -> None:
        self._end = 0.0
        self._go.set()

    def _thread_main(self, index: int) -> None:
        try:
            op = make_op(self.workload, self.driver, self.contexts[index])
        except Exception as exc:  # reported by prepare()
            self._setup_errors.append(f"{type(exc).__name__}: {exc}")
            self._ready.release()
            return
        self._ready.release()
        self._go.wait()
        if self._end == 0.0:
            return
        delay = self._start - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        _loop(op, self._measure, self._end, self._results[index])


def _loop(op: Op, measure: float, end: float, out: _ThreadResult) -> None:
    """Run op back to back until `end`; keep latencies of ops inside [measure, end]."""
    perf = time.perf_counter
    record = out.latencies.append
    while True:
        t0 = perf()
        if t0 >= end:
            return
        try:
            ok = op()
        except Exception as exc:
            if t0 >= measure:
                out.errors += 1
                out.error_sample = out.error_sample or f"{type(exc).__name__}: {exc}"[:300]
            time.sleep(ERROR_PAUSE)  # an instant failure must not spin a core the systems need
            continue
        t1 = perf()
        if t0 >= measure and t1 <= end:
            record(t1 - t0)
            if not ok:
                out.misses += 1


def preload(driver: Driver, keys: Sequence[str], threads: int, seed: int) -> dict[str, Any]:
    """Put every key once (a 100-byte value), with `threads` threads; the answer for the bench."""
    value = make_value(random.Random(seed))
    errors: list[str] = []

    def put_share(share: Sequence[str]) -> None:
        for key in share:
            for _attempt in range(3):
                try:
                    driver.put(key, value)
                    break
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

    workers = [
        threading.Thread(target=put_share, args=(keys[i::threads],), daemon=True)
        for i in range(max(1, threads))
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"ok": True, "keys": len(keys), "errors": len(errors), "error_sample": errors[0] if errors else ""}
