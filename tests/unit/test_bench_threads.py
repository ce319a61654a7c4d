"""cluster-bench --client threads: the threaded cell (one thread per slot, blocking calls) against a fake
blocking driver, how cells are planned across client modes, the ratios and the table's client column, the
option, and the worker's choice of cell. Nothing here measures or asserts speed."""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

import pytest

from cluster.bench.blocking_drivers import build_blocking_driver
from cluster.bench.loadgen import Cell
from cluster.bench.options import parse_options
from cluster.bench.report import add_ratios, format_table, sort_rows
from cluster.bench.runner import Snapshot, make_row, plan_cells
from cluster.bench.threadload import ThreadedCell
from cluster.bench.worker import make_cell
from cluster.bench.workloads import VALUE_SIZE, Fail, read_keys


class BlockingDriver:
    """Blocks the calling thread for `delay` seconds per call, then completes it before returning (as the
    blocking drivers do); counts the calls, the calls in flight at once, and the threads that called."""

    def __init__(self, delay: float = 0.002, fail_every: int = 0) -> None:
        self.delay = delay
        self.fail_every = fail_every
        self.data: dict[str, bytes] = {k: b"v" * VALUE_SIZE for k in read_keys(20)}
        self._lock = threading.Lock()
        self.calls = 0
        self.completed = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.threads: set[int] = set()

    def _block(self) -> bool:
        with self._lock:
            self.calls += 1
            number = self.calls
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
            self.completed += 1
        return bool(self.fail_every) and number % self.fail_every == 0

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
        if self._block():
            fail(RuntimeError("injected"))
            return
        self.data[key] = value
        done()

    def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None:
        if self._block():
            fail(RuntimeError("injected"))
            return
        done(self.data.get(key))

    def cas(self, key: str, expected: bytes, new: bytes, done: Callable[[bool], None], fail: Fail) -> None:
        if self._block():
            fail(RuntimeError("injected"))
            return
        swapped = self.data.get(key) == expected
        if swapped:
            self.data[key] = new
        done(swapped)

    def close(self) -> None:
        pass


def run_threaded(
    driver: BlockingDriver, workload: str, in_flight: int
) -> tuple[ThreadedCell, dict[str, Any]]:
    cell = ThreadedCell(driver, workload, in_flight, worker=0, seed=3, read_set=20)
    cell.prepare(timeout=5.0)
    return cell, cell.run(time.time() + 0.02, 0.05, 0.3)


def test_each_slot_runs_on_its_own_thread_and_every_call_is_accounted_for() -> None:
    driver = BlockingDriver()
    threads_before = threading.active_count()
    _, answer = run_threaded(driver, "get", 6)
    assert len(driver.threads) == 6 and threading.get_ident() not in driver.threads
    assert driver.max_in_flight == 6  # blocking calls of all the slots at once
    assert driver.in_flight == 0 and driver.completed == driver.calls  # drained before run() returned
    assert answer["errors"] == 0 and answer["misses"] == 0
    samples: array[float] = array("d")
    samples.frombytes(answer["latencies"])
    assert answer["ops"] == len(samples) > 0
    assert min(samples) >= driver.delay
    # Only the calls in the window count: fewer than made, the difference within the warm-up and edges.
    assert answer["ops"] < driver.calls
    assert threading.active_count() == threads_before  # the slot threads ended


def test_failures_pause_the_failing_thread_and_are_counted() -> None:
    driver = BlockingDriver(fail_every=4)
    _, answer = run_threaded(driver, "put", 3)
    assert answer["errors"] > 0 and "injected" in answer["error_sample"]
    assert answer["ops"] > 0  # the slots went on after their failures
    ratio = answer["errors"] / (answer["errors"] + answer["ops"])
    assert 0.1 < ratio < 0.4  # about one in four


def test_the_cas_chain_works_from_blocking_calls() -> None:
    driver = BlockingDriver(delay=0.0005)
    _, answer = run_threaded(driver, "cas", 4)
    assert answer["errors"] == 0 and answer["misses"] == 0 and answer["ops"] > 0


def test_threads_cells_are_planned_for_systems_with_a_blocking_client_and_alternate() -> None:
    plan = plan_cells(["put", "lease"], [1, 8], ["zraft", "etcd", "pysyncobj"], ("async", "threads"))
    threaded = {(w, c, s) for w, c, s, m in plan if m == "threads"}
    assert threaded == {("put", c, s) for c in (1, 8) for s in ("zraft", "etcd")}
    put_1 = [(s, m) for w, c, s, m in plan if (w, c) == ("put", 1)]
    put_8 = [(s, m) for w, c, s, m in plan if (w, c) == ("put", 8)]
    assert len(put_1) == len(put_8) == 5 and put_1[0] != put_8[0]  # the order rotates
    assert {s for w, _, s, _ in plan if w == "lease"} == {"zraft", "etcd"}


def _row(system: str, client: str, ops: int) -> dict[str, Any]:
    none = Snapshot(0.0, {}, {}, None)
    answer = {"ops": ops, "errors": 0, "misses": 0, "error_sample": "", "latencies": b"", "cpu_s": 0.0}
    return make_row(system, "put", 16, 1.0, [answer], none, none, {}, {}, "cell", client)


def test_ratios_pair_rows_of_the_same_client_mode_and_the_table_names_the_mode() -> None:
    rows = [
        _row("etcd", "threads", 100),
        _row("zraft", "threads", 300),
        _row("zraft", "async", 400),
        _row("etcd", "async", 200),
    ]
    sort_rows(rows, ["put"], ["zraft", "etcd"], ["async", "threads"])
    assert [(r["system"], r["client"]) for r in rows] == [
        ("zraft", "async"),
        ("etcd", "async"),
        ("zraft", "threads"),
        ("etcd", "threads"),
    ]
    add_ratios(rows)
    assert rows[0]["ratios"] == {"etcd": 2.0} and "of_async" not in rows[0]
    assert rows[2]["ratios"] == {"etcd": 3.0} and rows[2]["of_async"] == 0.75
    lines = format_table(rows, ["etcd"]).splitlines()
    assert lines[0].split()[:4] == ["workload", "conc", "system", "client"]
    assert lines[0].split()[-1] == "threads/async"
    zraft_threads = next(ln for ln in lines if ln.split()[2:4] == ["zraft", "threads"])
    assert zraft_threads.split()[-2:] == ["3.00x", "0.75x"]


def test_client_option() -> None:
    assert parse_options([]).client_modes == ("async",)
    assert parse_options(["--client", "async,threads"]).client_modes == ("async", "threads")
    with pytest.raises(SystemExit):
        parse_options(["--client", "fibers"])


def test_the_worker_builds_a_threaded_cell_for_the_threads_mode() -> None:
    driver = BlockingDriver()
    msg = {"workload": "put", "in_flight": 2, "worker": 0, "seed": 1, "read_set": 20}
    assert type(make_cell(driver, msg, 1.0)) is Cell
    threaded = make_cell(driver, msg | {"client": "threads"}, 1.0, lambda: driver)
    assert isinstance(threaded, ThreadedCell) and len(threaded.slots) == 2
    with pytest.raises(ValueError, match="no blocking client"):
        make_cell(driver, msg | {"client": "threads", "workload": "lease"}, 1.0, lambda: driver)
    with pytest.raises(ValueError, match="no blocking client"):
        build_blocking_driver({"driver": "pysyncobj"}, driver)
