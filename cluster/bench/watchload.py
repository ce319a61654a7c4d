"""Inside a worker process: the watch workload's cell, 1 writer and N watchers of one prefix.

The bench splits the N watchers over its workers like any concurrency; the writer lives in worker 0 (which
always has a share). prepare() opens this worker's watchers (from now on) and then puts marker values under
the prefix until every watcher of this worker has seen one, so every watch is live before the clock starts;
each worker writes its own markers, so no worker waits for another. run() runs the writer (a loadgen Cell
of one "watch" slot: one stamped put in flight at a time, through the driver's asynchronous API) from the
common start instant, keeps the watchers' samples of the measured window, then cancels the watches.

A sample is the arrival of a timed value at a watcher minus the time.monotonic() stamped into it when its
put started (the same clock in every process of the machine); it is kept when the put started after the
warm-up and the event arrived before the end. "ops" are the events kept, so ops/s is events per second
over all watchers (about N times the writer's puts per second). A watcher that fails is an error.
"""

from __future__ import annotations

import random
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

from cluster.bench.loadgen import DEFAULT_OP_TIMEOUT, MAX_SAMPLES, PREPARE_TIMEOUT, Cell
from cluster.bench.workloads import WATCH_PREFIX, StreamDriver, make_value, read_stamp, stamped_value

MARKER_INTERVAL = 0.05  # seconds between two marker puts while waiting for the watchers to see one


class _Watcher:
    """One watch's tally; on_value runs on the driver's thread."""

    def __init__(self, cell: WatchCell) -> None:
        self.cell = cell
        self.marked = threading.Event()  # saw a marker: the watch is live
        self.cancel: Callable[[], None] = lambda: None

    def on_value(self, value: bytes) -> None:
        arrived = time.monotonic()
        stamp = read_stamp(value)
        if stamp is None:
            return
        marker, started = stamp
        if marker:
            self.marked.set()
            return
        cell = self.cell
        if started >= cell.measure and arrived <= cell.end:
            with cell.lock:
                cell.latencies.append(arrived - started)

    def fail(self, exc: BaseException) -> None:
        cell = self.cell
        with cell.lock:
            if cell.closing:
                return  # our own cancel
            cell.errors += 1
            cell.error_sample = cell.error_sample or f"watch: {type(exc).__name__}: {exc}"[:300]
        self.marked.set()  # prepare must not wait for a watch that ended


class WatchCell:
    """The watch workload in one worker: prepare(), then run() once (the same contract as loadgen.Cell)."""

    def __init__(
        self,
        driver: StreamDriver,
        watchers: int,
        worker: int,
        seed: int,
        read_set: int,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
    ) -> None:
        self.driver = driver
        self.worker = worker
        self.writer = Cell(driver, "watch", 1 if worker == 0 else 0, worker, seed, read_set, op_timeout)
        self.watchers = [_Watcher(self) for _ in range(watchers)]
        self.lock = threading.Lock()
        self.latencies: array[float] = array("d")
        self.errors = 0
        self.error_sample = ""
        self.closing = False
        self.measure = self.end = float("inf")  # time.monotonic() values, set by run()
        self._marker_base = make_value(random.Random(seed * 7919 + worker))

    def prepare(self, timeout: float = PREPARE_TIMEOUT) -> None:
        """Open the watches and wait until each saw a marker; raises if that takes longer than `timeout`."""
        for watcher in self.watchers:
            watcher.cancel = self.driver.watch(WATCH_PREFIX, watcher.on_value, watcher.fail)
        deadline = time.monotonic() + timeout
        put_failed: list[BaseException] = []
        while True:
            unmarked = [w for w in self.watchers if not w.marked.is_set()]
            if not unmarked:
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(f"watch: the watchers saw no marker within {timeout:g}s {put_failed[:1]}")
            value = stamped_value(self._marker_base, marker=True)
            self.driver.put(f"{WATCH_PREFIX}m{self.worker}", value, lambda: None, put_failed.append)
            unmarked[0].marked.wait(MARKER_INTERVAL)
        if self.errors:
            raise RuntimeError(f"watch: {self.error_sample}")
        self.writer.prepare(timeout)

    def run(self, start_wall: float, warmup: float, duration: float) -> dict[str, Any]:
        """The writer (in worker 0) and the watchers' samples from start_wall for warmup + duration."""
        now_mono, now_wall = time.monotonic(), time.time()
        start = now_mono + (start_wall - now_wall)
        self.measure = start + warmup
        self.end = self.measure + duration
        cpu_before = time.process_time()
        written = self.writer.run(start_wall, warmup, duration)  # returns after the end (and its drain)
        remaining = self.end - time.monotonic()
        if remaining > 0:  # a worker without the writer waits out the window
            time.sleep(remaining)
        with self.lock:
            self.closing = True
        for watcher in self.watchers:
            watcher.cancel()
        return self._answer(written, time.process_time() - cpu_before)

    def _answer(self, written: dict[str, Any], cpu_s: float) -> dict[str, Any]:
        with self.lock:
            latencies = self.latencies
            errors = self.errors + int(written["errors"])
            sample = self.error_sample or written["error_sample"]
        ops = len(latencies)
        if ops > MAX_SAMPLES:
            latencies = latencies[:: -(-ops // MAX_SAMPLES)]
        return {
            "ok": True,
            "ops": ops,
            "errors": errors,
            "misses": 0,
            "error_sample": sample,
            "latencies": latencies.tobytes(),
            "cpu_s": cpu_s,
            "writes": int(written["ops"]),
        }
