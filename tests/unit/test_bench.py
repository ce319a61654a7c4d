"""cluster/bench (cluster-bench): the pure parts — percentiles and histograms, workload keys and
operations (against in-memory drivers), the closed load loop (against a fake asynchronous driver that
completes on a timer thread), cell planning, row building, the table and the JSON, argument parsing,
/proc and /metrics parsing, the worker message framing. Nothing here measures or asserts speed."""

from __future__ import annotations

import heapq
import io
import json
import math
import random
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cluster.bench import loadgen
from cluster.bench import main as bench_main
from cluster.bench.etcd_cluster import ENTRIES_METRIC, FSYNC_METRIC, member_argv, parse_metrics
from cluster.bench.ipc import WorkerGone, encode_message, read_message
from cluster.bench.loadgen import ERROR_PAUSE, Cell, preload
from cluster.bench.options import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DURATION,
    DEFAULT_WATCH_CONCURRENCY,
    QUICK_CONCURRENCY,
    QUICK_DURATION,
    parse_options,
)
from cluster.bench.ports import pick_base_port
from cluster.bench.procstats import parse_stat_cpu, parse_status_kb
from cluster.bench.report import add_ratios, format_table, sort_rows, write_results
from cluster.bench.runner import Snapshot, make_row, plan_cells
from cluster.bench.stats import bucket_edges, cdf, histogram, percentile, summarize
from cluster.bench.workloads import (
    KEY_SIZE,
    KEY_SPACE,
    VALUE_SIZE,
    WORKLOADS,
    Fail,
    Operation,
    SlotContext,
    cas_key,
    key_for,
    make_op,
    numbered_value,
    read_keys,
    split_concurrency,
)

# --- percentiles and histograms ------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 99.9) == 100.0
    assert percentile(samples, 100) == 100.0
    assert percentile(samples, 1) == 1.0
    assert percentile(samples, 0.5) == 1.0


def test_percentile_tolerates_float_noise_at_exact_ranks() -> None:
    samples = [float(i) for i in range(1, 1001)]
    assert percentile(samples, 99.9) == 999.0  # 99.9/100*1000 is 999.0000000000001 in floating point


def test_percentile_of_one_sample_and_of_none() -> None:
    assert percentile([7.0], 50) == 7.0
    assert percentile([7.0], 99.9) == 7.0
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_percentile_refuses_out_of_range(p: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], p)


def test_summarize_reports_milliseconds() -> None:
    samples = [0.001] * 98 + [0.010, 0.100]  # seconds
    random.Random(3).shuffle(samples)
    s = summarize(samples)
    assert s.count == 100
    assert s.p50 == pytest.approx(1.0)
    assert s.p99 == pytest.approx(10.0)
    assert s.p999 == pytest.approx(100.0)
    assert s.max == pytest.approx(100.0)
    assert s.mean == pytest.approx((0.098 + 0.010 + 0.100) / 100 * 1000)


def test_summary_of_nothing_becomes_json_nulls() -> None:
    d = summarize([]).to_dict()
    assert d["count"] == 0
    assert d["p50"] is None and d["max"] is None
    json.dumps(d, allow_nan=False)


def test_histogram_counts_every_sample_in_its_bucket() -> None:
    edges = bucket_edges()
    samples = sorted([1e-7, 0.0005, 0.0005, 0.002, 1e4])  # below range, 0.5 ms twice, 2 ms, above range
    counts = histogram(samples)
    assert len(counts) == len(edges) - 1
    assert sum(counts) == len(samples)
    assert counts[0] == 1 and counts[-1] == 1
    half_ms = next(i for i in range(len(edges) - 1) if edges[i] <= 0.0005 < edges[i + 1])
    assert counts[half_ms] == 2


def test_cdf_rises_to_one() -> None:
    points = cdf(histogram(sorted([0.001, 0.002, 0.003, 0.050])))
    fractions = [f for _, f in points]
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)
    assert all(ms > 0 for ms, _ in points)
    assert cdf([0, 0, 0]) == []


# --- workloads ------------------------------------------------------------------------------------------


class FakeDriver:
    """An in-memory Driver that records what it was asked and completes every operation before the call
    returns (the way PySyncObj's local read does)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.calls: list[tuple[str, str, Any]] = []

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
        self.calls.append(("put", key, value))
        self.data[key] = value
        done()

    def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None:
        self.calls.append(("get", key, serializable))
        done(self.data.get(key))

    def cas(self, key: str, expected: bytes, new: bytes, done: Callable[[bool], None], fail: Fail) -> None:
        self.calls.append(("cas", key, (expected, new)))
        if self.data.get(key) != expected:
            done(False)
            return
        self.data[key] = new
        done(True)

    def close(self) -> None:
        pass


def preloaded(count: int) -> FakeDriver:
    driver = FakeDriver()
    for key in read_keys(count):
        driver.data[key] = b"v" * VALUE_SIZE
    driver.calls.clear()
    return driver


def run_once(op: Operation) -> bool:
    """Run one operation against a driver that completes at once; its ok flag (or raise its failure)."""
    outcome: list[bool | BaseException] = []
    op(outcome.append, outcome.append)
    assert len(outcome) == 1, "exactly one of done/fail must be called"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def set_up(op: Operation) -> None:
    outcome: list[BaseException | None] = []
    op.setup(lambda: outcome.append(None), outcome.append)
    assert outcome == [None]


def test_keys_are_eight_bytes_over_the_key_space() -> None:
    assert key_for(0) == "00000000"
    assert key_for(KEY_SPACE - 1) == "00099999"
    assert all(len(key_for(i).encode()) == KEY_SIZE for i in (0, 1, 12345, KEY_SPACE - 1))
    with pytest.raises(ValueError):
        key_for(-1)
    with pytest.raises(ValueError):
        key_for(10**KEY_SIZE)


def test_read_keys_are_distinct_and_spread_over_the_space() -> None:
    keys = read_keys(1000)
    assert len(set(keys)) == 1000
    assert keys[0] == key_for(0)
    assert int(keys[-1]) == 999 * KEY_SPACE // 1000
    assert read_keys(KEY_SPACE)[-1] == key_for(KEY_SPACE - 1)
    with pytest.raises(ValueError):
        read_keys(0)
    with pytest.raises(ValueError):
        read_keys(KEY_SPACE + 1)


def test_cas_keys_are_unique_per_slot_and_never_read_keys() -> None:
    keys = {cas_key(w, t) for w in range(4) for t in range(300)}
    assert len(keys) == 1200
    assert all(len(k) == KEY_SIZE for k in keys)
    assert not keys & set(read_keys(KEY_SPACE))


def test_split_concurrency_is_even_and_complete() -> None:
    assert split_concurrency(1, 2) == [1, 0]
    assert split_concurrency(16, 2) == [8, 8]
    assert split_concurrency(64, 3) == [22, 21, 21]
    assert split_concurrency(256, 1) == [256]
    for total in (1, 7, 16, 64, 255, 256):
        for workers in (1, 2, 3, 8):
            shares = split_concurrency(total, workers)
            assert sum(shares) == total and max(shares) - min(shares) <= 1
    with pytest.raises(ValueError):
        split_concurrency(0, 2)


def test_put_writes_random_keys_from_the_key_space_with_100_byte_values() -> None:
    driver = preloaded(10)
    op = make_op("put", driver, SlotContext(worker=0, slot=0, seed=1, read_set=10))
    set_up(op)
    for _ in range(200):
        assert run_once(op) is True
    puts = [c for c in driver.calls if c[0] == "put"]
    assert len(puts) == 200
    assert all(len(key) == KEY_SIZE and 0 <= int(key) < KEY_SPACE for _, key, _ in puts)
    assert all(len(value) == VALUE_SIZE for _, _, value in puts)
    assert len({key for _, key, _ in puts}) > 150  # random keys, not one key


@pytest.mark.parametrize(("workload", "serializable"), [("get", False), ("serial-get", True)])
def test_gets_read_preloaded_keys_with_the_right_consistency(workload: str, serializable: bool) -> None:
    driver = preloaded(50)
    op = make_op(workload, driver, SlotContext(worker=1, slot=2, seed=1, read_set=50))
    assert all(run_once(op) for _ in range(100))
    assert {c[0] for c in driver.calls} == {"get"}
    assert all(c[2] is serializable for c in driver.calls)
    assert {c[1] for c in driver.calls} <= set(read_keys(50))


def test_get_of_a_missing_key_is_a_miss() -> None:
    op = make_op("get", FakeDriver(), SlotContext(worker=0, slot=0, seed=1, read_set=50))
    assert run_once(op) is False


def test_mixed_is_mostly_linearizable_reads_over_the_read_set() -> None:
    driver = preloaded(100)
    op = make_op("mixed", driver, SlotContext(worker=0, slot=0, seed=4, read_set=100))
    for _ in range(2000):
        run_once(op)
    gets = [c for c in driver.calls if c[0] == "get"]
    puts = [c for c in driver.calls if c[0] == "put"]
    assert len(gets) + len(puts) == 2000
    assert 0.85 < len(gets) / 2000 < 0.95  # 90/10 mix, seeded
    assert all(c[2] is False for c in gets)
    assert {c[1] for c in driver.calls} <= set(read_keys(100))


def test_cas_always_swaps_the_value_it_last_wrote() -> None:
    driver = FakeDriver()
    op = make_op("cas", driver, SlotContext(worker=1, slot=3, seed=1, read_set=10))
    key = cas_key(1, 3)
    assert driver.calls == []  # nothing is written before setup
    set_up(op)
    assert driver.calls[0][0] == "put" and driver.calls[0][1] == key  # the setup write
    assert all(run_once(op) for _ in range(20))
    values = [c[2][1] for c in driver.calls if c[0] == "cas"]
    assert len(set(values)) == 20
    assert all(len(v) == VALUE_SIZE for v in values)
    assert driver.data[key] == values[-1]


def test_cas_resynchronises_after_a_foreign_write() -> None:
    driver = FakeDriver()
    op = make_op("cas", driver, SlotContext(worker=0, slot=0, seed=1, read_set=10))
    set_up(op)
    key = cas_key(0, 0)
    driver.data[key] = b"x" * VALUE_SIZE  # someone else wrote the slot's key
    driver.calls.clear()
    assert run_once(op) is False  # the swap missed; the chain read the key back
    assert [c[0] for c in driver.calls] == ["cas", "get"]
    assert run_once(op) is True
    del driver.data[key]  # the key vanished: the chain writes it again
    driver.calls.clear()
    assert run_once(op) is False
    assert [c[0] for c in driver.calls] == ["cas", "get", "put"]
    assert run_once(op) is True


def test_a_failure_inside_the_cas_chain_reaches_fail() -> None:
    class FailingGet(FakeDriver):
        def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None:
            fail(RuntimeError("read failed"))

    driver = FailingGet()
    op = make_op("cas", driver, SlotContext(worker=0, slot=0, seed=1, read_set=10))
    set_up(op)
    driver.data[cas_key(0, 0)] = b"x" * VALUE_SIZE
    with pytest.raises(RuntimeError, match="read failed"):
        run_once(op)


def test_numbered_values_differ_and_keep_their_size() -> None:
    base = bytes(VALUE_SIZE)
    assert numbered_value(base, 1) != numbered_value(base, 2)
    assert len(numbered_value(base, 2**40)) == VALUE_SIZE


def test_unknown_workload_is_refused() -> None:
    with pytest.raises(ValueError):
        make_op("scan", FakeDriver(), SlotContext(0, 0, 1, 10))


# --- the closed loop (loadgen) --------------------------------------------------------------------------


class TimerDriver:
    """An asynchronous in-memory Driver: every operation completes `delay` seconds after it started, on
    one timer thread (as a client's I/O thread would). Every `fail_every`-th operation fails and every
    `drop_every`-th one never completes. It records how many operations were in flight at each completion
    and when every operation started and completed."""

    def __init__(self, delay: float = 0.002, fail_every: int = 0, drop_every: int = 0) -> None:
        self.delay = delay
        self.fail_every = fail_every
        self.drop_every = drop_every
        self.data: dict[str, bytes] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.at_completion: list[tuple[float, int]] = []  # (time, operations in flight)
        self.spans: list[tuple[float, float]] = []  # (start, completion) of every completed operation
        self._count = 0
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, float, Callable[[], None]]] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="timer-driver", daemon=True)
        self._thread.start()

    def _start(self, complete: Callable[[bool], None]) -> None:
        with self._cond:
            self._count += 1
            number = self._count
            if self.drop_every and number % self.drop_every == 0:
                return
            failing = bool(self.fail_every) and number % self.fail_every == 0
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            now = time.perf_counter()
            heapq.heappush(self._due, (now + self.delay, number, now, lambda: complete(failing)))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._due or self._due[0][0] > time.perf_counter()):
                    self._cond.wait(self._due[0][0] - time.perf_counter() if self._due else None)
                if self._stopped:
                    return
                _, _, started, action = heapq.heappop(self._due)
                now = time.perf_counter()
                self.at_completion.append((now, self.in_flight))
                self.spans.append((started, now))
                self.in_flight -= 1
            action()

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
        def complete(failing: bool) -> None:
            if failing:
                fail(RuntimeError("injected failure"))
                return
            self.data[key] = value
            done()

        self._start(complete)

    def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None:
        self._start(lambda failing: fail(RuntimeError("injected")) if failing else done(self.data.get(key)))

    def cas(self, key: str, expected: bytes, new: bytes, done: Callable[[bool], None], fail: Fail) -> None:
        def complete(failing: bool) -> None:
            if failing:
                fail(RuntimeError("injected failure"))
            elif self.data.get(key) == expected:
                self.data[key] = new
                done(True)
            else:
                done(False)

        self._start(complete)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(5)


@pytest.fixture
def timer_driver() -> Iterator[TimerDriver]:
    driver = TimerDriver()
    yield driver
    driver.close()


def run_cell(
    driver: Any, workload: str, in_flight: int, warmup: float = 0.05, duration: float = 0.25, **kw: Any
) -> tuple[Cell, dict[str, Any]]:
    cell = Cell(driver, workload, in_flight, worker=0, seed=7, read_set=20, **kw)
    cell.prepare(timeout=5.0)
    answer = cell.run(time.time() + 0.02, warmup, duration)
    return cell, answer


def latencies_of(answer: dict[str, Any]) -> array[float]:
    samples: array[float] = array("d")
    samples.frombytes(answer["latencies"])
    return samples


def test_the_closed_loop_keeps_exactly_n_requests_in_flight(timer_driver: TimerDriver) -> None:
    cell, answer = run_cell(timer_driver, "put", 8)
    assert timer_driver.max_in_flight == 8
    # Every completion inside the window found all 8 in flight: the slot issues its next request from
    # the completion callback, before the timer thread completes anything else.
    inside = [n for t, n in timer_driver.at_completion if cell.measure <= t <= cell.end]
    assert inside and set(inside) == {8}
    assert answer["errors"] == 0 and answer["misses"] == 0
    assert timer_driver.in_flight == 0  # drained before run() returned


def test_latencies_are_kept_only_for_operations_inside_the_window(timer_driver: TimerDriver) -> None:
    in_flight = 4
    cell, answer = run_cell(timer_driver, "put", in_flight, warmup=0.1, duration=0.2)
    samples = latencies_of(answer)
    assert answer["ops"] == len(samples) > 0
    assert min(samples) >= timer_driver.delay
    inside = sum(1 for s, e in timer_driver.spans if s >= cell.measure and e <= cell.end)
    # The loop's clock reads bracket the driver's, so only operations at the window's edges may differ.
    assert abs(answer["ops"] - inside) <= 2 * in_flight
    warmup_ops = sum(1 for s, _ in timer_driver.spans if s < cell.measure)
    assert warmup_ops > in_flight  # there was load during the warm-up, and it was not counted
    assert len(timer_driver.spans) >= answer["ops"] + warmup_ops
    assert answer["cpu_s"] >= 0 and json.dumps({k: v for k, v in answer.items() if k != "latencies"})


def test_errors_and_misses_are_counted_and_errors_pause_the_slot() -> None:
    driver = TimerDriver(fail_every=5)
    try:
        _, answer = run_cell(driver, "get", 4)  # nothing preloaded: every completed get is a miss
    finally:
        driver.close()
    assert answer["errors"] > 0 and "injected" in answer["error_sample"]
    assert answer["misses"] == answer["ops"] > 0
    ratio = answer["errors"] / (answer["errors"] + answer["ops"])
    assert 0.1 < ratio < 0.3  # about one in five


def test_an_instant_failure_does_not_spin() -> None:
    class Refusing(FakeDriver):
        def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
            fail(ConnectionError("refused"))

    in_flight, duration = 4, 0.2
    _, answer = run_cell(Refusing(), "put", in_flight, duration=duration)
    assert answer["ops"] == 0 and answer["errors"] > 0
    assert "ConnectionError: refused" in answer["error_sample"]
    assert answer["errors"] <= in_flight * (duration / ERROR_PAUSE + 1)  # at most one per pause per slot


def test_operations_completing_inside_the_call_loop_without_recursion() -> None:
    driver = preloaded(20)  # completes every operation before the call returns
    _, answer = run_cell(driver, "serial-get", 3, duration=0.2)
    assert answer["ops"] > 1000 and answer["errors"] == 0 and answer["misses"] == 0


def test_an_operation_the_driver_never_completes_is_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loadgen, "OP_GRACE", 0.05)
    monkeypatch.setattr(loadgen, "WATCHDOG_PERIOD", 0.02)
    driver = TimerDriver(drop_every=10)
    try:
        started = time.monotonic()
        _, answer = run_cell(driver, "put", 4, duration=0.4, op_timeout=0.05)
        elapsed = time.monotonic() - started
    finally:
        driver.close()
    assert answer["errors"] > 0 and "OperationExpired" in answer["error_sample"]
    assert answer["ops"] > 0  # the slots went on after their lost operation
    assert elapsed < 3.0  # the drain did not wait for the lost operations beyond the expiry


def test_the_cas_chain_resynchronises_inside_the_loop(timer_driver: TimerDriver) -> None:
    cell = Cell(timer_driver, "cas", 3, worker=0, seed=7, read_set=20)
    cell.prepare(timeout=5.0)
    keys = [cas_key(0, slot) for slot in range(3)]
    assert all(k in timer_driver.data for k in keys)  # the setup wrote every slot's key

    def foreign_writes() -> None:
        for i in range(5):
            time.sleep(0.03)
            timer_driver.data[keys[i % 3]] = numbered_value(b"x" * VALUE_SIZE, 10**6 + i)

    writer = threading.Thread(target=foreign_writes)
    writer.start()
    answer = cell.run(time.time() + 0.02, 0.0, 0.3)
    writer.join()
    assert answer["errors"] == 0
    assert 1 <= answer["misses"] <= 5
    assert answer["ops"] > 10 * answer["misses"]  # back to swapping after each resync


def test_a_failing_setup_fails_prepare() -> None:
    class Refusing(FakeDriver):
        def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
            fail(ConnectionError("refused"))

    cell = Cell(Refusing(), "cas", 2, worker=0, seed=1, read_set=10)
    with pytest.raises(RuntimeError, match="setup failed: ConnectionError: refused"):
        cell.prepare(timeout=1.0)


def test_preload_puts_every_key_with_a_bounded_window_and_retries(timer_driver: TimerDriver) -> None:
    keys = read_keys(200)
    answer = preload(timer_driver, keys, 16, seed=1)
    assert answer == {"ok": True, "keys": 200, "errors": 0, "error_sample": ""}
    assert set(timer_driver.data) == set(keys)
    assert timer_driver.max_in_flight == 16
    flaky = TimerDriver(fail_every=10)  # fails 20 of the first 200 puts, 2 of their 20 retries, then none
    try:
        answer = preload(flaky, keys, 16, seed=1)
    finally:
        flaky.close()
    assert answer["errors"] == 22 and "injected failure" in answer["error_sample"]
    assert set(flaky.data) == set(keys)  # every failed put was retried until it succeeded


# --- planning and rows ----------------------------------------------------------------------------------


def test_plan_runs_every_cell_for_every_system_with_the_order_rotating() -> None:
    plan = plan_cells(["put", "get"], [1, 16], ["zraft", "etcd", "pysyncobj"])
    assert len(plan) == 12
    assert {(w, c, s, m) for w, c, s, m in plan} == {
        (w, c, s, "async") for w in ("put", "get") for c in (1, 16) for s in ("zraft", "etcd", "pysyncobj")
    }
    firsts = [plan[i][2] for i in range(0, 12, 3)]
    assert firsts == ["zraft", "etcd", "pysyncobj", "zraft"]
    assert [w for w, _, _, _ in plan[:6]] == ["put"] * 6  # one workload after the other


def test_plan_for_one_system_keeps_the_order_given() -> None:
    plan = plan_cells(["put"], [1, 16, 64], ["zraft"])
    assert plan == [
        ("put", 1, "zraft", "async"),
        ("put", 16, "zraft", "async"),
        ("put", 64, "zraft", "async"),
    ]


def test_a_workload_may_have_concurrencies_of_its_own() -> None:
    plan = plan_cells(["put", "watch"], [1, 64], ["zraft"], per_workload={"watch": DEFAULT_WATCH_CONCURRENCY})
    assert [(w, c) for w, c, *_ in plan] == [("put", 1), ("put", 64)] + [
        ("watch", c) for c in DEFAULT_WATCH_CONCURRENCY
    ]
    assert 100 in DEFAULT_WATCH_CONCURRENCY  # the fan-out cell: 1 writer, 100 watchers


def _answer(latencies: list[float], errors: int = 0, misses: int = 0) -> dict[str, Any]:
    from array import array

    return {
        "ok": True,
        "ops": len(latencies),
        "errors": errors,
        "misses": misses,
        "error_sample": "",
        "latencies": array("d", latencies).tobytes(),
    }


def _row(
    system: str = "zraft", workload: str = "put", concurrency: int = 16, ops: int = 100
) -> dict[str, Any]:
    before = Snapshot(
        0.0,
        {"n1": 1.0, "n2": 2.0},
        {},
        {"n1": {"fsyncs": 10, "entries": 10, "terms": 3}, "n2": {"fsyncs": 10, "entries": 10, "terms": 3}},
    )
    after = Snapshot(
        2.0,
        {"n1": 1.5, "n2": 2.25},
        {},
        {"n1": {"fsyncs": 30, "entries": 110, "terms": 5}, "n2": {"fsyncs": 30, "entries": 110, "terms": 4}},
    )
    answers = [_answer([0.001] * (ops // 2)), _answer([0.002] * (ops - ops // 2), errors=1)]
    return make_row(
        system,
        workload,
        concurrency,
        2.0,
        answers,
        before,
        after,
        {"n1": 50 * 2**20, "n2": None},
        {"n1": 11, "n2": 12},
        "cell",
    )


def test_make_row_combines_workers_and_counters() -> None:
    row = _row(ops=100)
    assert row["ops"] == 100 and row["ops_per_s"] == 50.0
    assert row["errors"] == 1
    assert row["latency_ms"]["p50"] == pytest.approx(1.0)
    assert row["latency_ms"]["max"] == pytest.approx(2.0)
    assert sum(row["histogram"]) == 100
    assert row["nodes"]["n1"] == {"pid": 11, "cpu_s": 0.5, "peak_rss_mb": 50.0}
    assert row["nodes"]["n2"]["peak_rss_mb"] is None
    assert row["node_cpu_s"] == 0.75
    assert row["fsyncs_per_s"] == 20.0  # 40 fsyncs over the 2 s between the snapshots
    assert row["entries_per_fsync"] == 5.0  # 200 entries / 40 fsyncs
    assert row["durability"] == "fsync"
    assert row["leader_changes"] == 2  # the most new terms one node saw during the cell
    json.dumps(row, allow_nan=False)


def test_make_row_without_durability_counters() -> None:
    none = Snapshot(0.0, {}, {}, None)
    row = make_row("pysyncobj", "get", 1, 1.0, [_answer([])], none, none, {}, {}, "cell")
    assert row["ops"] == 0 and row["fsyncs_per_s"] is None and row["entries_per_fsync"] is None
    assert row["durability"] == "none"
    assert row["leader_changes"] is None
    assert row["latency_ms"]["p50"] is None
    json.dumps(row, allow_nan=False)


# --- report ---------------------------------------------------------------------------------------------


def _rows() -> list[dict[str, Any]]:
    return [
        _row("etcd", "put", 16, ops=200),
        _row("zraft", "put", 16, ops=100),
        _row("zraft", "get", 1, ops=40),
        _row("zraft", "put", 1, ops=10),
        _row("etcd", "get", 1, ops=0),
    ]


def test_ratios_are_zraft_over_the_other_system() -> None:
    rows = _rows()
    add_ratios(rows)
    by = {(r["system"], r["workload"], r["concurrency"]): r for r in rows}
    assert by["zraft", "put", 16]["ratios"] == {"etcd": 0.5}
    assert by["zraft", "get", 1]["ratios"] == {"etcd": None}  # etcd did nothing: no ratio
    assert by["zraft", "put", 1]["ratios"] == {}
    assert "ratios" not in by["etcd", "put", 16]


def test_rows_sort_by_workload_concurrency_then_system() -> None:
    rows = _rows()
    sort_rows(rows, ["put", "get"], ["zraft", "etcd"])
    assert [(r["workload"], r["concurrency"], r["system"]) for r in rows] == [
        ("put", 1, "zraft"),
        ("put", 16, "zraft"),
        ("put", 16, "etcd"),
        ("get", 1, "zraft"),
        ("get", 1, "etcd"),
    ]


def test_table_has_a_line_per_row_and_the_ratio_column() -> None:
    rows = _rows()
    sort_rows(rows, ["put", "get"], ["zraft", "etcd"])
    add_ratios(rows)
    text = format_table(rows, ["etcd"])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["workload", "conc", "system"]
    assert "zraft/etcd" in lines[0]
    body = [ln for ln in lines[2:] if ln.strip()]
    assert len(body) == len(rows)
    zraft_put_16 = next(ln for ln in body if ln.split()[:3] == ["put", "16", "zraft"])
    assert zraft_put_16.endswith("0.50x")
    assert "0.50/0.25" in zraft_put_16  # CPU seconds of every node
    assert "leader chg" in lines[0]
    columns = lines[0].split("  ")
    column = [c.strip() for c in columns if c.strip()].index("leader chg")
    assert [c.strip() for c in zraft_put_16.split("  ") if c.strip()][column] == "2"  # the cell's elections
    assert "" in lines  # a blank line between workloads


def test_results_json_round_trips(tmp_path: Path) -> None:
    rows = _rows()
    add_ratios(rows)
    doc = {"meta": {"tool": "cluster-bench"}, "systems": {}, "notes": [], "rows": rows}
    json_path, table_path = write_results(tmp_path / "out", doc, "the table")
    loaded = json.loads(json_path.read_text())
    assert loaded["rows"] == json.loads(json.dumps(rows))
    assert table_path.read_text() == "the table\n"


# --- options --------------------------------------------------------------------------------------------


def test_defaults() -> None:
    o = parse_options([], now=datetime(2026, 1, 2, 3, 4, 5))
    assert o.concurrency == DEFAULT_CONCURRENCY
    assert o.workloads == tuple(WORKLOADS)
    assert o.duration == DEFAULT_DURATION
    assert o.compare == ()
    assert o.systems == ("zraft",)
    assert o.endpoints is None and o.nodes == 3 and o.clients >= 1
    assert o.out == Path("bench-results") / "20260102-030405"


def test_quick_shortens_but_explicit_options_win() -> None:
    quick = parse_options(["--quick"])
    assert quick.concurrency == QUICK_CONCURRENCY and quick.duration == QUICK_DURATION and quick.quick
    mine = parse_options(["--quick", "--concurrency", "4,2", "--duration", "3"])
    assert mine.concurrency == (4, 2) and mine.duration == 3.0


def test_secure_adds_a_curve_cluster_beside_the_plaintext_one(capsys: pytest.CaptureFixture[str]) -> None:
    o = parse_options(["--secure", "--compare", "etcd"])
    assert o.secure and o.systems == ("zraft", "zraft-secure", "etcd")
    with pytest.raises(SystemExit) as exit_info:
        parse_options(["--secure", "--endpoints", "tcp://127.0.0.1:7001"])
    assert exit_info.value.code == 2
    assert "--secure" in capsys.readouterr().err


def test_lists_and_comparisons() -> None:
    o = parse_options(
        [
            "--workloads",
            "cas,put,cas",
            "--compare",
            "etcd,pysyncobj",
            "--endpoints",
            "tcp://127.0.0.1:7001,tcp://127.0.0.1:7002",
            "--out",
            "x",
            "--clients",
            "3",
        ]
    )
    assert o.workloads == ("cas", "put")
    assert o.systems == ("zraft", "etcd", "pysyncobj")
    assert o.endpoints == ("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002")
    assert o.out == Path("x") and o.clients == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--concurrency", "0"],
        ["--concurrency", "1,x"],
        ["--workloads", "scan"],
        ["--compare", "zookeeper"],
        ["--duration", "0"],
        ["--duration", "-1"],
        ["--clients", "0"],
        ["--preload", "0"],
        ["--preload", str(KEY_SPACE + 1)],
        ["--endpoints", "http://127.0.0.1:7001"],
        ["--nodes", "0"],
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_options(argv)
    assert info.value.code == 2
    assert "cluster-bench" in capsys.readouterr().err


def test_missing_etcd_prints_how_to_install_it_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_main, "find_etcd", lambda: None)
    assert bench_main.main(["--compare", "etcd"]) == 2
    err = capsys.readouterr().err
    assert "apt-get install -y etcd-server" in err


# --- /proc, /metrics, ports, worker messages --------------------------------------------------------------


def test_stat_cpu_reads_utime_and_stime_past_a_tricky_command_name() -> None:
    fields = ["S"] + ["0"] * 10 + ["150", "50"] + ["0"] * 30  # state, ..., utime (14), stime (15), ...
    line = "4242 (cluster node) (x)) " + " ".join(fields)
    assert parse_stat_cpu(line, clock_ticks=100) == 2.0


def test_status_kb_field() -> None:
    text = "Name:\tpython\nVmHWM:\t   51200 kB\nVmRSS:\t   40000 kB\n"
    assert parse_status_kb(text, "VmHWM") == 51200 * 1024
    assert parse_status_kb(text, "VmSwap") is None


def test_etcd_metrics_and_member_flags() -> None:
    text = (
        "# HELP x\n"
        f"{FSYNC_METRIC} 1234\n"
        f'{FSYNC_METRIC.replace("_count", "_bucket")}{{le="0.001"}} 5\n'
        f"{ENTRIES_METRIC} 5.5e+06\n"
    )
    assert parse_metrics(text, (FSYNC_METRIC, ENTRIES_METRIC)) == {
        FSYNC_METRIC: 1234.0,
        ENTRIES_METRIC: 5.5e6,
    }
    argv = member_argv("/usr/bin/etcd", 2, 20000, Path("/tmp/d"), "tok")
    assert argv[argv.index("--listen-client-urls") + 1] == "http://127.0.0.1:20002"
    assert argv[argv.index("--initial-advertise-peer-urls") + 1] == "http://127.0.0.1:20102"
    assert argv[argv.index("--name") + 1] == "e2"


def test_base_port_skips_blocks_with_a_busy_port() -> None:
    busy = set(range(20000, 31000))
    base = pick_base_port([1, 101], random.Random(1), lambda _host, port: port in busy)
    assert base + 1 not in busy and base + 101 not in busy
    with pytest.raises(RuntimeError):
        pick_base_port([0], random.Random(1), lambda _h, _p: True, attempts=5)


def test_messages_round_trip_and_end_of_stream_is_reported() -> None:
    stream = io.BytesIO(
        encode_message({"cmd": "go", "start": 1.5}) + encode_message({"ok": True, "b": b"\x00"})
    )
    assert read_message(stream) == {"cmd": "go", "start": 1.5}
    assert read_message(stream) == {"ok": True, "b": b"\x00"}
    with pytest.raises(WorkerGone):
        read_message(stream)
