"""The cluster service's liveness rules (cluster/service/liveness.py, registrant.py) under a clock the test
moves: leases end by that clock in an in-memory store (tests/unit/service_fakes.py), and the monitors see
every change in order, as their watch would show it."""

from __future__ import annotations

from typing import Any

import pytest
from loguru import logger

from cluster.service.liveness import LivenessMonitor, check_timing, monitor_rank
from cluster.service.records import (
    ALIVE_PREFIX,
    GRACE_PREFIX,
    OFFLINE,
    ONLINE,
    SERVER,
    SERVER_HOST,
    SERVER_PORT,
    STATUS,
    alive_key,
    grace_key,
    server_record,
    split_key,
)
from cluster.service.registrant import Registration, TakenOver
from tests.unit.service_fakes import FakeStore, ManualClock

TIMEOUT = 9.0
INTERVAL = 3.0
GRACE = 600.0
USAGE = {"CPU_CAPACITY": 400, "CPU_USED": 10.0, "MEMORY_CAPACITY": 100, "MEMORY_USED": 40}
KEY = "SERVER_META/web-1"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> FakeStore:
    return FakeStore(clock)


def registrant(store: FakeStore, token: str = "inc-1", port: int = 8080) -> Registration:
    record = server_record("web-1", "10.0.0.5", port, store.clock(), None)
    return Registration(
        store,
        SERVER,
        "web-1",
        record,
        ttl=TIMEOUT,
        token=token,
        events_url=None,
        monitor=True,
        clock=store.clock,
    )


class Watchers:
    """Monitors fed every change in revision order, as each one's watch on CLUSTER_SERVICE/ would."""

    def __init__(self, store: FakeStore, count: int = 1) -> None:
        self.store = store
        self.monitors = [LivenessMonitor(store, GRACE, f"monitor-{i}", store.clock) for i in range(count)]
        self.seen = 0
        self.outcomes: list[str] = []

    def pump(self) -> list[str]:
        new: list[str] = []
        while self.seen < len(self.store.events):
            event = self.store.events[self.seen]
            self.seen += 1
            if event["type"] != "DELETE":
                continue
            alive, grace = split_key(event["key"], ALIVE_PREFIX), split_key(event["key"], GRACE_PREFIX)
            for monitor in self.monitors:
                if alive is not None:
                    new.append(monitor.alive_gone(*alive))
                elif grace is not None:
                    new.append(monitor.grace_over(*grace))
        self.outcomes += new
        return new


def beat(reg: Registration) -> None:
    """One heartbeat as the service makes it: renew the lease, then write the record."""
    reg.renew()
    reg.heartbeat(USAGE)


def status(store: FakeStore) -> str | None:
    value = store.get(KEY)
    return None if value is None else str(value[STATUS])


def run_for(store: FakeStore, watchers: Watchers, seconds: float, reg: Registration | None = None) -> None:
    """Advance time in heartbeat intervals, heartbeating `reg` (if any) and pumping the watchers."""
    steps = round(seconds / INTERVAL)
    for _ in range(steps):
        store.advance(INTERVAL)
        watchers.pump()
        if reg is not None:
            beat(reg)
            watchers.pump()


def test_a_heartbeating_registrant_stays_online_and_each_heartbeat_is_one_write(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    watchers = Watchers(store)
    writes_before = len(store.events)
    run_for(store, watchers, 10 * INTERVAL, reg)
    assert store.calls.count("get") == 0  # no read: each swap is against the value last written
    record_writes = [e for e in store.events[writes_before:] if e["key"] == KEY]
    assert len(record_writes) == 10  # one compare-and-swap per heartbeat
    assert status(store) == ONLINE and watchers.outcomes == []


def service_beat(store: FakeStore, regs: list[Registration], usage: dict[str, Any], every: float) -> None:
    """One heartbeat round as ClusterService makes it: every lease renewed in one batch, then each record
    written only when due."""
    outcomes = store.lease_keepalive_many([r.lease_id for r in regs if r.lease_id is not None])
    for reg in regs:
        reg.renewed(outcomes.get(reg.lease_id) if reg.lease_id is not None else None)
        if reg.write_due(usage, every):
            reg.heartbeat(usage)


def test_records_are_written_when_usage_moves_or_every_so_often_and_leases_renewed_in_one_batch(
    store: FakeStore,
) -> None:
    every = 100.0
    regs = [registrant(store, port=8080 + i) for i in range(3)]
    for i, reg in enumerate(regs):
        reg.ident = f"web-{i + 1}"
        reg.establish(USAGE)
    watchers = Watchers(store)
    first = len(store.events)
    for _ in range(10):  # 30 s: longer than the lease TTL (9 s), shorter than `every`
        store.advance(INTERVAL)
        service_beat(store, regs, USAGE, every)
        service_beat(store, regs, {**USAGE, "CPU_USED": USAGE["CPU_USED"] + 7.9}, every)  # < 2% of 400
        watchers.pump()
    assert store.events[first:] == []  # no record write, no lease ended: the renewals alone
    assert store.calls.count("lease_keepalive_many") == 20 and watchers.outcomes == []
    assert store.calls.count("lease_keepalive") == 60  # the fake renews one by one inside the batch
    moved = {**USAGE, "CPU_USED": USAGE["CPU_USED"] + 0.02 * USAGE["CPU_CAPACITY"]}
    service_beat(store, regs, moved, every)
    assert sorted(e["key"] for e in store.events[first:]) == [f"SERVER_META/web-{i}" for i in (1, 2, 3)]
    written = len(store.events)
    for _ in range(34):  # 102 s of steady usage: each record is written once more, `every` after the last
        store.advance(INTERVAL)
        service_beat(store, regs, moved, every)
    assert len(store.events) == written + 3 and watchers.pump() == []


def test_a_lease_that_ended_in_a_batch_makes_its_registration_establish_again(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    ended = reg.lease_id
    assert ended is not None
    store.advance(TIMEOUT)  # the lease ended: its alive key is gone
    outcomes = store.lease_keepalive_many([ended])
    assert reg.renewed(outcomes[ended]) is False and reg.lease_id is None
    assert reg.write_due(USAGE, 30.0)
    reg.heartbeat(USAGE)
    assert reg.lease_id is not None and reg.lease_id != ended and status(store) == ONLINE


def test_a_silent_registrant_goes_offline_when_its_lease_ends_and_not_before(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    watchers = Watchers(store)
    run_for(store, watchers, 2 * INTERVAL, reg)  # last heartbeat at t=6
    store.advance(TIMEOUT - 0.01)
    watchers.pump()
    assert status(store) == ONLINE  # silent for just under the timeout
    store.advance(0.01)
    assert watchers.pump() == ["marked offline"]
    record = store.get(KEY)
    assert record[STATUS] == OFFLINE
    assert (record[SERVER_HOST], record[SERVER_PORT]) == ("10.0.0.5", 8080)  # only STATUS changed
    assert store.get(grace_key(SERVER, "web-1")) is not None


def test_an_offline_record_is_deleted_when_the_grace_period_ends(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    watchers = Watchers(store)
    store.advance(TIMEOUT)
    watchers.pump()
    assert status(store) == OFFLINE
    store.advance(GRACE - 0.01)
    watchers.pump()
    assert status(store) == OFFLINE
    store.advance(0.01)
    assert watchers.pump() == ["deleted"]
    assert store.get(KEY) is None and store.range("CLUSTER_SERVICE/").kvs == []


def test_a_heartbeat_before_deletion_brings_the_record_back_online_and_it_is_not_deleted(
    store: FakeStore,
) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    watchers = Watchers(store)
    store.advance(TIMEOUT + 1)  # paused (SIGSTOP, GC, a partition) past the timeout
    watchers.pump()
    assert status(store) == OFFLINE
    store.advance(GRACE / 2)
    beat(reg)  # it wakes up: the lease has ended, so it registers again and merges ONLINE back
    watchers.pump()
    assert status(store) == ONLINE and reg.lease_lost == 0 and reg.lease_id is not None
    assert store.get(alive_key(SERVER, "web-1"))["owner"] == "inc-1"
    run_for(store, watchers, GRACE, reg)  # the old grace period ends meanwhile: nothing is deleted
    assert status(store) == ONLINE
    assert "grace period running" not in watchers.outcomes and watchers.outcomes[-1] == "not offline"


def test_a_registrant_whose_record_was_deleted_writes_it_again(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    watchers = Watchers(store)
    store.advance(TIMEOUT)
    watchers.pump()
    store.advance(GRACE)
    watchers.pump()
    assert store.get(KEY) is None
    beat(reg)
    assert status(store) == ONLINE and store.get(KEY)[SERVER_PORT] == 8080


def test_a_restart_under_the_same_id_takes_the_record_over_cleanly(store: FakeStore) -> None:
    old = registrant(store, token="inc-1", port=8080)
    old.establish(USAGE)
    watchers = Watchers(store)
    run_for(store, watchers, INTERVAL, old)
    new = registrant(store, token="inc-2", port=9090)  # restarted, maybe on another port
    new.establish(USAGE)
    assert store.get(KEY)[SERVER_PORT] == 9090 and status(store) == ONLINE
    with pytest.raises(TakenOver):  # the old incarnation, if still running, stops
        beat(old)
    assert old.taken_over == "inc-2"
    # The old incarnation's lease ends: it owns no key any more, so nothing is deleted or marked.
    run_for(store, watchers, 2 * TIMEOUT, new)
    assert status(store) == ONLINE and store.get(KEY)[SERVER_PORT] == 9090
    assert "marked offline" not in watchers.outcomes


def test_racing_monitors_write_offline_once(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    watchers = Watchers(store, count=4)
    store.advance(TIMEOUT)
    outcomes = watchers.pump()
    assert sorted(outcomes) == ["marked offline", "not online", "not online", "not online"]
    offline_writes = [
        e for e in store.events if e["key"] == KEY and (e["value"] or {}).get(STATUS) == OFFLINE
    ]
    assert len(offline_writes) == 1


def test_two_monitors_interleaved_between_read_and_write_still_write_offline_once(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    first, second = (LivenessMonitor(store, GRACE, f"m{i}", store.clock) for i in range(2))
    store.advance(TIMEOUT)
    # The second monitor runs its whole rule after the first has read the record, before it swaps.
    outcome: list[str] = []
    store.before["lease_grant"] = lambda: outcome.append(second.alive_gone(SERVER, "web-1"))
    assert first.alive_gone(SERVER, "web-1") == "not online"  # its swap failed; it re-read OFFLINE
    assert outcome == ["marked offline"] and status(store) == OFFLINE
    assert first.marked + second.marked == 1


def test_a_registrant_coming_back_between_the_monitors_read_and_write_is_not_marked(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    monitor = LivenessMonitor(store, GRACE, "m", store.clock)
    store.advance(TIMEOUT)  # the lease ended; the monitor reads ONLINE and no alive key ...
    store.before["lease_grant"] = lambda: beat(reg)  # ... then the registrant comes back
    assert monitor.alive_gone(SERVER, "web-1") == "alive again"
    assert status(store) == ONLINE and monitor.marked == 0


def test_a_record_written_again_with_the_same_value_between_read_and_swap_is_not_marked(
    store: FakeStore,
) -> None:
    """The ABA case a compare by value misses: the record goes A -> B -> A between the monitor's read and
    its swap. Its mod revision moved, so the monitor's write fails and it reads again."""
    reg = registrant(store)
    reg.establish(USAGE)
    monitor = LivenessMonitor(store, GRACE, "m", store.clock)
    store.advance(TIMEOUT)
    same = store.get(KEY)

    def aba() -> None:
        store.put(KEY, {**same, STATUS: OFFLINE})
        store.put(KEY, same)
        store.before["get_kv"] = lambda: store.put(KEY, {**same, STATUS: OFFLINE})  # the next read: OFFLINE

    store.before["lease_grant"] = aba
    assert monitor.alive_gone(SERVER, "web-1") == "not online"
    assert monitor.marked == 0
    assert [c for c in store.calls if c.startswith("cas")] == ["cas_revision"]  # that one failed


def test_the_grace_end_deletes_by_revision_and_not_after_an_equal_rewrite(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    monitor = LivenessMonitor(store, GRACE, "m", store.clock)
    store.advance(TIMEOUT)
    assert monitor.alive_gone(SERVER, "web-1") == "marked offline"
    store.advance(GRACE)
    offline = store.get(KEY)
    rewrites = iter([lambda: store.put(KEY, offline)])  # an equal value, written once after the read
    store.before["get"] = lambda: next(rewrites, lambda: None)()
    assert monitor.grace_over(SERVER, "web-1") == "deleted"  # the first delete failed; the second read
    assert store.calls.count("cas_delete_revision") == 2 and store.get(KEY) is None


def test_a_newer_grace_period_or_a_returned_registrant_keeps_the_record(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    monitor = LivenessMonitor(store, GRACE, "m", store.clock)
    store.advance(TIMEOUT)
    assert monitor.alive_gone(SERVER, "web-1") == "marked offline"
    assert monitor.grace_over(SERVER, "web-1") == "grace period running"
    store.advance(GRACE)
    reg.renew()
    store.put(alive_key(SERVER, "web-1"), {"owner": "inc-1"}, lease=store.lease_grant(TIMEOUT).id)
    assert monitor.grace_over(SERVER, "web-1") == "alive again"
    assert status(store) == OFFLINE  # until its next heartbeat


def test_check_applies_the_rule_that_fits_a_record_found_by_a_sweep(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    monitor = LivenessMonitor(store, GRACE, "m", store.clock)
    assert monitor.check(SERVER, "web-1") == "alive again"
    store.advance(TIMEOUT)  # its DELETE event was missed (no monitor watching)
    assert monitor.check(SERVER, "web-1") == "marked offline"
    store.advance(GRACE)
    assert monitor.check(SERVER, "web-1") == "deleted"
    assert monitor.check(SERVER, "web-1") == "no record"


def test_the_timeout_is_forced_to_three_intervals_with_a_warning() -> None:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        assert check_timing(3.0, 5.0, 600.0) == (3.0, 9.0, 600.0)
        assert check_timing(1.0, 10.0, 5.0) == (1.0, 10.0, 5.0)
    finally:
        logger.remove(sink)
    assert len(messages) == 1 and "using 9s" in messages[0]
    with pytest.raises(ValueError):
        check_timing(0.0, 9.0, 600.0)


def test_monitor_ranks_are_a_permutation_that_differs_per_record() -> None:
    tokens = [f"t{i}" for i in range(6)]
    for key in ("a", "b"):
        assert sorted(monitor_rank(t, tokens, key) for t in tokens) == list(range(6))
    firsts = {next(t for t in tokens if monitor_rank(t, tokens, f"k{i}") == 0) for i in range(50)}
    assert len(firsts) > 1  # the work of marking is spread over the monitors


def test_writes_while_the_cluster_is_down_raise_no_answer_and_change_nothing(store: FakeStore) -> None:
    reg = registrant(store)
    reg.establish(USAGE)
    before: dict[str, Any] = dict(store.data)
    store.down = True
    with pytest.raises(Exception, match="no quorum"):
        beat(reg)
    assert store.data == before
