"""cluster-bench's watch and lease workloads without a cluster: stamped values, the writer and keepalive
operations, the watch cell's samples (timing window, markers, failures, cancellation) against an
in-memory driver, planning (PySyncObj sits them out) and the rows. Nothing about speed is asserted."""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cluster.bench.drivers import _prefix_end
from cluster.bench.runner import Snapshot, make_row, plan_cells
from cluster.bench.watchload import WatchCell
from cluster.bench.workloads import (
    LEASE_TTL,
    VALUE_SIZE,
    WATCH_KEYS,
    WATCH_PREFIX,
    Fail,
    SlotContext,
    StreamDriver,
    make_op,
    read_stamp,
    stamped_value,
)
from tests.unit.test_bench import TimerDriver, _answer


class StreamTimerDriver(TimerDriver):
    """TimerDriver with watches (a completed put is delivered to every watcher under its prefix, on the
    timer thread, before the put's callback) and leases (grant and keepalive complete after the delay)."""

    def __init__(self, fail_watch: bool = False) -> None:
        super().__init__(delay=0.0001)
        self.watchers: list[tuple[str, Callable[[bytes], None]]] = []
        self.cancelled = 0
        self.fail_watch = fail_watch
        self.leases: dict[int, int] = {}  # id -> keepalives
        self.puts: list[str] = []

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
        def complete(failing: bool) -> None:
            self.data[key] = value
            self.puts.append(key)
            for prefix, on_value in list(self.watchers):
                if key.startswith(prefix):
                    on_value(value)
            done()

        self._start(complete)

    def watch(self, prefix: str, on_value: Callable[[bytes], None], fail: Fail) -> Callable[[], None]:
        if self.fail_watch:
            fail(RuntimeError("watch refused"))
            return lambda: None
        entry = (prefix, on_value)
        self.watchers.append(entry)

        def cancel() -> None:
            self.watchers.remove(entry)
            self.cancelled += 1

        return cancel

    def lease_grant(self, ttl: int, done: Callable[[int], None], fail: Fail) -> None:
        assert ttl == LEASE_TTL
        lease_id = len(self.leases) + 1
        self.leases[lease_id] = 0
        self._start(lambda failing: done(lease_id))

    def lease_keepalive(self, lease_id: int, done: Callable[[], None], fail: Fail) -> None:
        self.leases[lease_id] += 1
        self._start(lambda failing: done())


@pytest.fixture
def driver() -> Iterator[StreamTimerDriver]:
    d = StreamTimerDriver()
    yield d
    d.close()


def samples(answer: dict[str, Any]) -> array[float]:
    out: array[float] = array("d")
    out.frombytes(answer["latencies"])
    return out


def test_stamped_values_keep_their_size_and_carry_kind_and_time() -> None:
    base = bytes(range(VALUE_SIZE))
    timed = stamped_value(base, now=12.5)
    marker = stamped_value(base, marker=True, now=3.0)
    assert len(timed) == len(marker) == VALUE_SIZE and timed[9:] == base[9:]
    assert read_stamp(timed) == (False, 12.5) and read_stamp(marker) == (True, 3.0)
    assert read_stamp(b"short") is None and read_stamp(b"\x07" + bytes(20)) is None


def test_the_writer_puts_stamped_values_over_the_watch_keys(driver: StreamTimerDriver) -> None:
    op = make_op("watch", driver, SlotContext(0, 0, 1, 10))
    before = time.monotonic()
    done = threading.Event()
    for _ in range(WATCH_KEYS + 1):
        done.clear()
        op(lambda ok: done.set(), lambda exc: pytest.fail(str(exc)))
        assert done.wait(5.0)
    assert all(k.startswith(WATCH_PREFIX) for k in driver.puts)
    assert len(set(driver.puts)) == WATCH_KEYS  # it cycles over the watch keys
    stamp = read_stamp(driver.data[driver.puts[-1]])
    assert stamp is not None and not stamp[0] and before <= stamp[1] <= time.monotonic()


def test_a_lease_slot_grants_in_setup_and_renews_its_own_lease(driver: StreamTimerDriver) -> None:
    ops = [make_op("lease", driver, SlotContext(0, slot, 1, 10)) for slot in range(2)]
    ready = threading.Semaphore(0)
    for op in ops:
        op.setup(ready.release, lambda exc: pytest.fail(str(exc)))
    for _ in ops:
        assert ready.acquire(timeout=5.0)
    renewed = threading.Semaphore(0)
    ops[1](lambda ok: renewed.release(), lambda exc: pytest.fail(str(exc)))
    ops[1](lambda ok: renewed.release(), lambda exc: pytest.fail(str(exc)))
    assert renewed.acquire(timeout=5.0) and renewed.acquire(timeout=5.0)
    assert sorted(driver.leases.values()) == [0, 2]  # each slot its own lease


def test_stream_workloads_need_a_stream_driver() -> None:
    plain = TimerDriver()
    try:
        assert not isinstance(plain, StreamDriver)
        for workload in ("watch", "lease"):
            with pytest.raises(ValueError, match="lacks"):
                make_op(workload, plain, SlotContext(0, 0, 1, 10))
    finally:
        plain.close()


def test_the_watch_cell_times_events_inside_the_window_and_cancels_its_watches(
    driver: StreamTimerDriver,
) -> None:
    writer_cell = WatchCell(driver, 3, worker=0, seed=1, read_set=10)
    other_cell = WatchCell(driver, 2, worker=1, seed=1, read_set=10)  # no writer: only watchers
    writer_cell.prepare(timeout=5.0)
    other_cell.prepare(timeout=5.0)
    assert len(driver.watchers) == 5
    assert {k for k in driver.puts} <= {f"{WATCH_PREFIX}m0", f"{WATCH_PREFIX}m1"}  # markers only so far
    start = time.time() + 0.05
    answers: list[dict[str, Any]] = []
    other = threading.Thread(target=lambda: answers.append(other_cell.run(start, 0.05, 0.3)))
    other.start()
    mine = writer_cell.run(start, 0.05, 0.3)
    other.join(10.0)
    theirs = answers[0]
    assert mine["writes"] > 0 and theirs["writes"] == 0
    for answer in (mine, theirs):
        assert answer["errors"] == 0 and answer["ops"] > 0 and len(samples(answer)) == answer["ops"]
        assert all(0 < s < 1.0 for s in samples(answer))  # arrival after the put started
    assert driver.watchers == [] and driver.cancelled == 5


def test_a_watcher_keeps_timed_events_of_the_window_once_and_takes_markers_as_liveness(
    driver: StreamTimerDriver,
) -> None:
    cell = WatchCell(driver, 1, worker=1, seed=1, read_set=10)
    cell.measure, cell.end = 100.0, 200.0
    [watcher] = cell.watchers
    base = bytes(VALUE_SIZE)
    watcher.on_value(stamped_value(base, marker=True, now=150.0))
    assert watcher.marked.is_set() and len(cell.latencies) == 0  # a marker is no sample
    watcher.on_value(stamped_value(base, now=99.0))  # its put started in the warm-up
    watcher.on_value(b"not stamped")
    start = time.monotonic() - 0.25
    cell.measure, cell.end = start, time.monotonic() + 60
    watcher.on_value(stamped_value(base, now=start + 0.05))
    watcher.on_value(stamped_value(base, now=start + 0.10))
    assert len(cell.latencies) == 2 and all(0.1 <= s < 60 for s in cell.latencies)
    cell.end = start  # arrived after the end: left out
    watcher.on_value(stamped_value(base, now=start + 0.1))
    assert len(cell.latencies) == 2
    watcher.fail(RuntimeError("stream broke"))
    assert cell.errors == 1 and "stream broke" in cell.error_sample
    cell.closing = True
    watcher.fail(RuntimeError("cancelled by us"))  # the cell's own cancel is no error
    assert cell.errors == 1


def test_a_failing_watch_fails_prepare() -> None:
    failing = StreamTimerDriver(fail_watch=True)
    try:
        with pytest.raises(RuntimeError, match="watch refused"):
            WatchCell(failing, 2, worker=0, seed=1, read_set=10).prepare(timeout=5.0)
    finally:
        failing.close()


def test_watch_and_lease_are_planned_for_zraft_and_etcd_only() -> None:
    plan = plan_cells(["put", "watch", "lease"], [1, 4], ["zraft", "etcd", "pysyncobj"])
    assert {(w, s) for w, _, s, _ in plan if s == "pysyncobj"} == {("put", "pysyncobj")}
    watch_cells = [(c, s) for w, c, s, _ in plan if w == "watch"]
    assert sorted(watch_cells) == [(1, "etcd"), (1, "zraft"), (4, "etcd"), (4, "zraft")]
    assert plan_cells(["lease"], [1], ["pysyncobj"]) == []


def test_a_watch_row_reports_the_writers_rate() -> None:
    before = Snapshot(0.0, {}, {}, None)
    after = Snapshot(2.0, {}, {}, None)
    answers = [_answer([0.001, 0.002]) | {"writes": 10}, _answer([0.003]) | {"writes": 0}]
    row = make_row("zraft", "watch", 2, 2.0, answers, before, after, {}, {}, "cell")
    assert row["ops"] == 3 and row["writes_per_s"] == 5.0
    plain = make_row("zraft", "put", 2, 2.0, [_answer([0.001])], before, after, {}, {}, "cell")
    assert "writes_per_s" not in plain


def test_etcd_prefix_end_covers_exactly_the_prefix() -> None:
    assert _prefix_end(b"wbench/") == b"wbench0"
    assert _prefix_end(b"a\xff") == b"b"
    assert _prefix_end(b"\xff\xff") == b"\0"
