"""Inside a worker process: a closed loop that keeps N operations of one workload in flight against one
driver through its asynchronous API, without a thread per request, and times every operation.

A Cell has N slots. prepare() builds each slot's operation and runs its setup (for "cas": writing the
slot's key, untimed); run() starts every slot at one wall-clock instant. A slot issues its next operation
from the completion callback of the previous one, on whatever thread the driver completes it (the zraft
client's I/O thread, a gRPC thread, PySyncObj's thread), until the end time: the worker keeps exactly N
requests in flight. An operation that completes before its start call returns is followed by the next one
in the same loop, never by recursion.

Latency = completion time - issue time, kept for operations issued after the warm-up and completed before
the end. A failed operation issued after the warm-up is an error, and its slot pauses ERROR_PAUSE before
the next one; the main thread re-issues paused slots, so no callback ever sleeps on a client's thread. The
main thread also expires operations the driver never completed (OP_GRACE past the client timeout; they
are errors and their late completion is ignored) and, after the end, waits for in-flight operations to
drain.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from cluster.bench.workloads import Driver, Operation, SlotContext, make_op, make_value

PREPARE_TIMEOUT = 60.0
PRELOAD_TIMEOUT = 120.0
PRELOAD_ATTEMPTS = 3
ERROR_PAUSE = 0.001  # an instant failure must not spin a core the systems need
OP_GRACE = 1.0  # an operation the driver has not ended this long after its own timeout is expired here
WATCHDOG_PERIOD = 0.25
MAX_SAMPLES = 500_000  # latencies shipped per worker and cell; beyond this every k-th one
DEFAULT_OP_TIMEOUT = 10.0

# What a slot's issuing loop does once the start call returns (set when the operation completed inside it).
_WAIT, _NEXT, _PAUSE = range(3)


class OperationExpired(Exception):
    """The driver did not end an operation within its timeout (plus OP_GRACE)."""


@dataclass(slots=True)
class _Tally:
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: int = 0
    misses: int = 0
    error_sample: str = ""


class _Slot:
    """One request in flight, over and over. The lock orders one operation's completion (on a client
    thread) against the issuing of the next (on another thread, maybe) and against the watchdog."""

    __slots__ = ("cell", "op", "lock", "tally", "number", "in_flight", "issued_at", "issuing", "then")

    def __init__(self, cell: Cell, op: Operation) -> None:
        self.cell = cell
        self.op = op
        self.lock = threading.Lock()
        self.tally = _Tally()
        self.number = 0  # how many operations this slot has issued
        self.in_flight = 0  # the number of the operation in flight, 0 when none
        self.issued_at = 0.0
        self.issuing = False  # inside the start call: a completion now hands the next step to that loop
        self.then = _WAIT

    def issue(self) -> None:
        """Issue operations until one is left in flight, the slot pauses, or the end time stops it."""
        cell = self.cell
        while True:
            t0 = time.perf_counter()
            if t0 >= cell.end:
                cell.slot_stopped()
                return
            with self.lock:
                self.number += 1
                number = self.in_flight = self.number
                self.issued_at = t0
                self.issuing = True
                self.then = _WAIT
            try:
                self.op(partial(self.finish, number, t0), partial(self.fail, number, t0))
            except Exception as exc:  # drivers report failures through fail(); stay alive if one did not
                self.fail(number, t0, exc)
            with self.lock:
                self.issuing = False
                then = self.then
            if then == _PAUSE:
                cell.pause(self)
            if then != _NEXT:
                return

    def finish(self, number: int, t0: float, ok: bool) -> None:
        t1 = time.perf_counter()
        cell = self.cell
        with self.lock:
            if self.in_flight != number:  # expired by the watchdog (or completed twice): ignore
                return
            self.in_flight = 0
            if t0 >= cell.measure and t1 <= cell.end:
                self.tally.latencies.append(t1 - t0)
                if not ok:
                    self.tally.misses += 1
            if self.issuing:
                self.then = _NEXT
                return
        self.issue()

    def fail(self, number: int, t0: float, exc: BaseException) -> None:
        with self.lock:
            if self.in_flight != number:
                return
            self.in_flight = 0
            if t0 >= self.cell.measure:
                self.tally.errors += 1
                self.tally.error_sample = self.tally.error_sample or f"{type(exc).__name__}: {exc}"[:300]
            if self.issuing:
                self.then = _PAUSE
                return
        self.cell.pause(self)

    def expire(self, now: float, limit: float) -> None:
        """Fail the operation in flight if it has been so for longer than `limit` seconds."""
        with self.lock:
            number, t0 = self.in_flight, self.issued_at
        if number and now - t0 > limit:
            self.fail(number, t0, OperationExpired(f"no completion within {limit:g}s"))


class Cell:
    """One workload with N requests in flight in this worker: prepare(), then run() once."""

    def __init__(
        self,
        driver: Driver,
        workload: str,
        in_flight: int,
        worker: int,
        seed: int,
        read_set: int,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
    ) -> None:
        self.driver = driver
        self.workload = workload
        self.op_timeout = op_timeout
        self.start = self.measure = self.end = 0.0
        self.slots = [
            _Slot(self, make_op(workload, driver, SlotContext(worker, i, seed, read_set)))
            for i in range(in_flight)
        ]
        self._cond = threading.Condition()  # guards _paused and _running; the main thread waits on it
        self._paused: list[tuple[float, int, _Slot]] = []  # a heap of (due time, tie-break, slot)
        self._order = itertools.count()
        self._running = 0  # slots not yet stopped by the end time

    def prepare(self, timeout: float = PREPARE_TIMEOUT) -> None:
        """Run every slot's setup, all at once, and wait for them; raises if one failed or hung."""
        lock = threading.Lock()
        all_done = threading.Event()
        errors: list[str] = []
        remaining = len(self.slots)

        def finished(exc: BaseException | None = None) -> None:
            nonlocal remaining
            with lock:
                if exc is not None:
                    errors.append(f"{type(exc).__name__}: {exc}")
                remaining -= 1
                if remaining == 0:
                    all_done.set()

        if not self.slots:
            return
        for slot in self.slots:
            try:
                slot.op.setup(finished, finished)
            except Exception as exc:
                finished(exc)
        if not all_done.wait(timeout):
            raise RuntimeError(f"{self.workload}: setup not finished within {timeout:g}s")
        if errors:
            raise RuntimeError(f"{self.workload}: setup failed: {errors[0]}")

    def run(self, start_wall: float, warmup: float, duration: float) -> dict[str, Any]:
        """Run from wall-clock start_wall for warmup + duration seconds; the answer for the bench."""
        now_perf, now_wall = time.perf_counter(), time.time()
        self.start = now_perf + (start_wall - now_wall)
        self.measure = self.start + warmup
        self.end = self.measure + duration
        cpu_before = time.process_time()
        delay = self.start - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with self._cond:
            self._running = len(self.slots)
        self.start_slots()
        self._supervise()
        self.finish_slots()
        return self._answer(time.process_time() - cpu_before)

    def start_slots(self) -> None:
        """Issue every slot's first operation (from this thread; the completions carry on)."""
        for slot in self.slots:
            slot.issue()

    def finish_slots(self) -> None:
        """After the supervision: nothing to wait for here (threadload.ThreadedCell joins its threads)."""

    # --- called by the slots, on any thread ---------------------------------------------------------

    def pause(self, slot: _Slot) -> None:
        """Have the main thread issue this slot's next operation after ERROR_PAUSE."""
        with self._cond:
            heapq.heappush(self._paused, (time.perf_counter() + ERROR_PAUSE, next(self._order), slot))
            self._cond.notify()

    def slot_stopped(self) -> None:
        with self._cond:
            self._running -= 1
            if self._running == 0:
                self._cond.notify()

    # --- the main thread ----------------------------------------------------------------------------

    def _supervise(self) -> None:
        """Re-issue paused slots when due and expire overdue operations, until every slot has stopped.

        After the end, operations still in flight drain: those that complete count as neither latency
        nor error (they crossed the end of the window); one the driver never ends is expired by the
        watchdog and counts as an error when it was issued in the window, as a client timeout would. The
        wait is bounded anyway: a slot still running at `give_up` is left alone and not counted.
        """
        limit = self.op_timeout + OP_GRACE
        give_up = self.end + limit + 2 * WATCHDOG_PERIOD
        next_check = time.perf_counter() + WATCHDOG_PERIOD
        while True:
            due: list[_Slot] = []
            with self._cond:
                now = time.perf_counter()
                while self._paused and self._paused[0][0] <= now:
                    due.append(heapq.heappop(self._paused)[2])
                if not due and now < next_check:
                    if self._running == 0 or now >= give_up:
                        return
                    wake = min(next_check, give_up, self._paused[0][0] if self._paused else give_up)
                    self._cond.wait(wake - now)
                    continue
            for slot in due:
                slot.issue()
            if now >= next_check:
                for slot in self.slots:
                    slot.expire(now, limit)
                next_check = now + WATCHDOG_PERIOD

    def _answer(self, cpu_s: float) -> dict[str, Any]:
        latencies: array[float] = array("d")
        errors = misses = 0
        sample = ""
        for slot in self.slots:
            with slot.lock:  # a straggler may still be failing on another thread
                latencies.extend(slot.tally.latencies)
                errors += slot.tally.errors
                misses += slot.tally.misses
                sample = sample or slot.tally.error_sample
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
            "cpu_s": cpu_s,
        }


def preload(
    driver: Driver, keys: Sequence[str], in_flight: int, seed: int, timeout: float = PRELOAD_TIMEOUT
) -> dict[str, Any]:
    """Put every key once (a 100-byte value), `in_flight` puts at a time, retrying failed ones; the answer
    for the bench ("errors" counts failed attempts)."""
    value = make_value(random.Random(seed))
    errors: list[str] = []
    todo = list(keys)
    deadline = time.monotonic() + timeout
    for _attempt in range(PRELOAD_ATTEMPTS):
        todo = _put_all(driver, todo, value, max(1, in_flight), errors, deadline)
        if not todo:
            break
    return {"ok": True, "keys": len(keys), "errors": len(errors), "error_sample": errors[0] if errors else ""}


def _put_all(
    driver: Driver, keys: Sequence[str], value: bytes, in_flight: int, errors: list[str], deadline: float
) -> list[str]:
    """Put each key with at most `in_flight` puts outstanding; the keys whose put failed."""
    window = threading.Semaphore(in_flight)
    lock = threading.Lock()
    failed: list[str] = []

    def put_failed(key: str, exc: BaseException) -> None:
        with lock:
            failed.append(key)
            errors.append(f"{type(exc).__name__}: {exc}")
        window.release()

    def acquire() -> None:
        if not window.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise RuntimeError("preload: puts did not complete in time")

    for key in keys:
        acquire()
        driver.put(key, value, window.release, partial(put_failed, key))
    for _ in range(in_flight):  # wait for the last ones
        acquire()
    return failed
