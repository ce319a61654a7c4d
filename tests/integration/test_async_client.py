"""cluster.AsyncClient against real node processes started through bin/: every call, many concurrent awaits,
cancellation, close with calls pending, a leader killed with -9 mid-load, watches (replay, live, progress,
a kill -9 of the serving node) and kept leases.

Each test runs its coroutine with asyncio.run. Ports are free loopback ports, waits are bounded, and the
nodes are stopped by start_cluster on the way out. Timings are never asserted, only that a failing call
ends within its timeout plus a margin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest

from cluster import (
    AsyncClient,
    Client,
    ClientClosed,
    InvalidRequest,
    LeaseNotFound,
    OutcomeUnknown,
    Unavailable,
    ZraftError,
)
from cluster.client.driver import DealerLinks
from cluster.client.watch import AsyncWatch
from cluster.kv.machine import MAX_RANGE_LIMIT
from tests.integration.test_client import MARGIN, sigkill, started
from tests.integration.test_watch import EVENT_WAIT, serving_node
from tests.integration.util import TEST_ELECTION_TIMEOUT_MS, Cluster, free_ports, start_cluster, wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
WAIT = 60.0  # bound on any one test's coroutine
LEASE_TTL = 6 * TEST_ELECTION_TIMEOUT_MS / 1000  # twice the shortest TTL a node grants


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, WAIT)

    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with start_cluster(3) as c:
        started(c)
        yield c


def urls(cluster: Cluster) -> list[str]:
    return [n.client_url for n in cluster.nodes]


def test_every_call_answers_what_the_blocking_client_answers(cluster: Cluster) -> None:
    async def body() -> None:
        async with AsyncClient(urls(cluster), timeout=5.0) as c:
            assert set(c.nodes) == {"n1", "n2", "n3"}
            rev = await c.put("ac/a", {"x": [1, 2.5, None, b"\x00"]})
            assert await c.get("ac/a") == {"x": [1, 2.5, None, b"\x00"]}
            assert await c.get("ac/a", serializable=True, timeout=2.0) in (
                None,
                {"x": [1, 2.5, None, b"\x00"]},
            )
            kv = await c.get_kv("ac/a")
            assert kv is not None and kv["mod_revision"] == rev and kv["version"] == 1
            assert await c.get("ac/missing") is None and await c.get_kv("ac/missing") is None
            assert await c.cas("ac/a", "wrong", 1) is False
            assert await c.cas("ac/a", {"x": [1, 2.5, None, b"\x00"]}, 2) is True
            assert await c.cas("ac/new", None, 0) is True
            for i in range(5):
                await c.put(f"ac/r/{i}", i)
            page = await c.range("ac/r/", limit=2)
            assert [e["key"] for e in page.kvs] == ["ac/r/0", "ac/r/1"] and page.more
            rest = await c.range("ac/r/", limit=10, after=page.next_after)
            assert [e["value"] for e in rest.kvs] == [2, 3, 4] and not rest.more
            listing = c.range_all("ac/r/", page_size=2)
            assert [e["value"] async for e in listing] == [0, 1, 2, 3, 4] and listing.pages == 3
            assert await c.delete("ac/new") is True and await c.delete("ac/new") is False
            assert await c.delete_prefix("ac/r/") == 5
            status = await c.status()
            assert status["leader"] in c.nodes and all(m["reachable"] for m in status["members"])
            # The same errors as the blocking client, from the same checks.
            with pytest.raises(InvalidRequest):
                await c.put("__zraft/x", 1)
            with pytest.raises(InvalidRequest):
                await c.range("ac/", limit=MAX_RANGE_LIMIT + 1)
            with pytest.raises(InvalidRequest):
                c.range_all("ac/", page_size=MAX_RANGE_LIMIT + 1)
            with pytest.raises(ValueError):
                await c.get("ac/a", timeout=0)
            return_value = await c.get_kv("ac/a")
        with Client(urls(cluster), timeout=5.0) as blocking:
            assert blocking.get_kv("ac/a") == return_value
            assert blocking.get("ac/r/0") is None

    run(body())


def test_lease_calls_answer_what_the_blocking_client_answers(cluster: Cluster) -> None:
    async def body() -> None:
        async with AsyncClient(urls(cluster), timeout=5.0) as c:
            lease = await c.lease_grant(5)
            assert lease.ttl == 5.0
            await c.put("acl/a", 1, lease=lease.id)
            with pytest.raises(InvalidRequest):
                await c.put("acl/b", 1, lease=0)
            info = await c.lease_info(lease.id)
            assert info.keys == ("acl/a",) and info.granted_ttl == 5.0
            assert lease.id in [i.id for i in await c.lease_list()]
            assert 0 < await c.lease_keepalive(lease.id) <= 5.0
            with Client(urls(cluster), timeout=5.0) as blocking:
                assert blocking.lease_info(lease.id).keys == ("acl/a",)
            assert await c.lease_revoke(lease.id) == 1
            assert await c.get("acl/a") is None
            with pytest.raises(LeaseNotFound):
                await c.lease_keepalive(lease.id)
            with pytest.raises(LeaseNotFound):
                await c.put("acl/a", 1, lease=lease.id)

    run(body())


def test_500_concurrent_puts_leave_in_few_frames_and_each_answer_is_its_own(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames: list[str] = []
    real_send = DealerLinks.send

    def counting_send(self: DealerLinks, url: str, frame: bytes) -> None:
        frames.append(url)
        real_send(self, url, frame)

    async def body() -> None:
        async with AsyncClient(urls(cluster), timeout=10.0) as c:
            await c.put("many/warm", 0)  # the leader is known from here on
            monkeypatch.setattr(DealerLinks, "send", counting_send)
            revisions = await asyncio.gather(*(c.put(f"many/{i:03d}", i * 7) for i in range(500)))
            monkeypatch.setattr(DealerLinks, "send", real_send)
            assert len(set(revisions)) == 500
            assert revisions == sorted(revisions)  # one session, pipelined in order to one leader
            # One batch per node per turn: far fewer frames than calls (the batch byte bound and a
            # retry now and then may add a few).
            assert len(frames) <= 10, frames
            kvs = await asyncio.gather(*(c.get_kv(f"many/{i:03d}") for i in range(500)))
            for i, (kv, rev) in enumerate(zip(kvs, revisions, strict=True)):
                assert kv is not None and kv["value"] == i * 7 and kv["mod_revision"] == rev

    run(body())


def test_a_cancelled_call_leaves_the_client_consistent_and_usable(cluster: Cluster) -> None:
    async def body() -> None:
        async with AsyncClient(urls(cluster), timeout=5.0) as c:
            await c.put("cancel/warm", 0)
            tasks = [asyncio.create_task(c.put(f"cancel/{i:03d}", i)) for i in range(100)]
            reads = [asyncio.create_task(c.get("cancel/warm")) for _ in range(20)]
            await asyncio.sleep(0)  # every task has submitted its call
            for task in tasks[::2] + reads[::2]:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, *reads, return_exceptions=True)
            for i, outcome in enumerate(outcomes[:100]):
                if i % 2 == 0:
                    assert isinstance(outcome, asyncio.CancelledError | int)  # it may have finished first
                else:
                    assert isinstance(outcome, int), outcome
            # The actor sees every request through, cancelled or not: nothing stays in flight.
            actor = c._core.actor if c._core is not None else None
            assert actor is not None
            deadline = time.monotonic() + 10.0
            while actor.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert actor.in_flight == 0
            # A cancelled write was applied or not (its outcome is unknown), but never twice or torn.
            for i in range(0, 100, 2):
                kv = await c.get_kv(f"cancel/{i:03d}")
                assert kv is None or (kv["value"] == i and kv["version"] == 1)
            assert await c.put("cancel/after", 1) > 0
            assert await c.get("cancel/after") == 1

    run(body())


def test_close_ends_pending_calls_with_client_closed(cluster: Cluster) -> None:
    async def body() -> None:
        c = AsyncClient(urls(cluster), timeout=5.0)
        await c.connect()
        pending = [asyncio.create_task(c.put(f"closing/{i}", i)) for i in range(50)]
        pending.append(asyncio.create_task(c.get("closing/0")))
        await asyncio.sleep(0)  # submitted, not yet answered
        await c.close()
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(o, ClientClosed) for o in outcomes), outcomes[:3]
        with pytest.raises(ClientClosed):
            await c.put("closing/late", 1)
        with pytest.raises(ClientClosed):
            await c.status()
        await c.close()  # a second close does nothing

    run(body())


def test_connecting_to_nothing_raises_unavailable() -> None:
    (port,) = free_ports(1)

    async def body() -> None:
        t0 = time.monotonic()
        with pytest.raises(Unavailable):
            async with AsyncClient([f"tcp://127.0.0.1:{port}"], timeout=0.5):
                pass
        assert time.monotonic() - t0 < 0.5 + MARGIN

    run(body())


def test_leader_kill_mid_load_classifies_outcomes_and_loses_no_acknowledged_write() -> None:
    workers = 16
    acked: dict[str, int] = {}
    unknown: set[str] = set()
    refused: set[str] = set()  # Unavailable: every attempt was refused before being proposed

    async def writer(c: AsyncClient, worker: int, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            key = f"load/{worker:02d}/{n:05d}"
            n += 1
            try:
                acked[key] = await c.put(key, n, timeout=3.0)
            except OutcomeUnknown:
                unknown.add(key)
            except Unavailable:
                refused.add(key)

    async def body(cluster: Cluster) -> None:
        leader = started(cluster)
        async with AsyncClient(urls(cluster), timeout=5.0) as c:
            stop = asyncio.Event()
            tasks = [asyncio.create_task(writer(c, w, stop)) for w in range(workers)]
            while len(acked) < 300:
                await asyncio.sleep(0.01)
            sigkill(leader)
            before = len(acked)
            while len(acked) < before + 300:  # the survivors elect a leader and the load goes on
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*tasks)  # any other exception fails the test here
            counts = f"{len(acked)} ok, {len(unknown)} unknown, {len(refused)} refused"
            print(f"\nleader kill -9 under load: {counts}")
            for key in acked:  # every acknowledged write survived the kill
                kv = await c.get_kv(key)
                assert kv is not None and kv["mod_revision"] == acked[key], key
            for key in refused:
                assert await c.get(key) is None, f"{key} was refused but applied"

            sigkill(cluster.alive()[0])  # 1 of 3 left: no majority
            t0 = time.monotonic()
            outcomes = await asyncio.gather(
                c.put("load/x", 1, timeout=1.5), c.get("load/x", timeout=1.5), return_exceptions=True
            )
            assert time.monotonic() - t0 < 1.5 + MARGIN
            assert isinstance(outcomes[0], OutcomeUnknown) and isinstance(outcomes[1], Unavailable), outcomes
            status = await c.status(timeout=1.0)
            assert sum(not m["reachable"] for m in status["members"]) == 2

    with start_cluster(3) as cluster:
        run(body(cluster))


def test_calls_from_another_event_loop_are_refused(cluster: Cluster) -> None:
    client: dict[str, AsyncClient] = {}

    async def connect() -> None:
        client["c"] = AsyncClient(urls(cluster), timeout=5.0)
        await client["c"].connect()

    async def use_elsewhere() -> Any:
        return await client["c"].get("x")

    async def close() -> None:
        await client["c"].close()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(connect())
        with pytest.raises(RuntimeError, match="event loop"):
            asyncio.run(use_elsewhere())
        loop.run_until_complete(close())
    finally:
        loop.close()


def test_a_failure_inside_the_driver_ends_every_pending_call(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        async with AsyncClient(urls(cluster), timeout=5.0) as c:
            await c.put("driver-failure/warm", 0)
            assert c._core is not None

            def broken(*args: Any) -> None:
                raise RuntimeError("boom")

            monkeypatch.setattr(c._core, "turn", broken)
            outcomes = await asyncio.gather(
                c.put("driver-failure/k", 1), c.get("driver-failure/k"), return_exceptions=True
            )
            assert all(type(o) is ZraftError and "boom" in str(o) for o in outcomes), outcomes
            with pytest.raises(ClientClosed):
                await c.get("driver-failure/k")

    run(body())


def test_a_failure_inside_the_blocking_clients_io_thread_ends_its_async_calls(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The turn fails after the thread took the submissions from its inbox: they must still be ended.
    with Client(urls(cluster), timeout=5.0) as c:
        c.put("io-failure/warm", 0)

        core = c._loop._core
        turn = core.turn

        def broken(submissions: Any, *rest: Any) -> None:
            if submissions:  # idle turns (timers) go on; the turn that took our call fails
                raise RuntimeError("boom")
            turn(submissions, *rest)

        monkeypatch.setattr(core, "turn", broken)
        fut = c.put_async("io-failure/k", 1)
        error = fut.exception(timeout=2.0)  # raises TimeoutError if the call was left hanging
        assert type(error) is ZraftError and "boom" in str(error), error


# --- watches and kept leases -----------------------------------------------------------------------


async def take_events(w: AsyncWatch, n: int) -> list[dict[str, Any]]:
    events = []
    for _ in range(n):
        event = await w.next(EVENT_WAIT)
        assert event is not None, f"no event within {EVENT_WAIT}s after {len(events)} of {n}"
        events.append(event)
    return events


def test_an_async_watch_replays_goes_live_reports_progress_and_ends_with_the_client(cluster: Cluster) -> None:
    async def body() -> None:
        async with AsyncClient(urls(cluster), timeout=5.0) as c:
            first = await c.put("aw/0", 0)
            second = await c.put("aw/1", {"v": 1})
            await c.put("elsewhere", 1)
            async with c.watch("aw/", start_revision=first) as w:
                assert [(e["key"], e["revision"]) for e in await take_events(w, 2)] == [
                    ("aw/0", first),
                    ("aw/1", second),
                ]
                deleted = await c.delete_prefix("aw/")
                assert deleted == 2
                events = await take_events(w, 2)
                assert [(e["type"], e["key"]) for e in events] == [("DELETE", "aw/0"), ("DELETE", "aw/1")]
                assert events[0]["revision"] == events[1]["revision"] > second  # one revision
                later = await c.put("elsewhere", 2)  # not under the prefix: only progress shows it
                while w.revision < later:  # progress notifications come every second (bounded by WAIT)
                    assert await w.next(0.2) is None
            with pytest.raises(StopAsyncIteration):
                await w.next(0.0)  # closed by the block
            key_only = c.watch("aw/1", prefix=False)
            await c.put("aw/10", 1)
            rev = await c.put("aw/1", 2)
            assert [(e["key"], e["revision"]) for e in await take_events(key_only, 1)] == [("aw/1", rev)]
            with pytest.raises(InvalidRequest):
                c.watch("", prefix=False)
        with pytest.raises(ClientClosed):
            await key_only.next(EVENT_WAIT)  # the client's close ended it

    run(body())


def test_an_async_kept_lease_outlives_its_ttl_and_is_revoked_when_the_block_ends(cluster: Cluster) -> None:
    async def body() -> None:
        async with AsyncClient(urls(cluster), timeout=5.0) as c:
            async with c.lease(LEASE_TTL) as lease:
                await c.put("akl/k", 1, lease=lease.id)
                await asyncio.sleep(LEASE_TTL * 1.5)  # longer than the TTL: only the task's renewals keep it
                assert await c.get("akl/k") == 1 and lease.alive and lease.renewals >= 2
            assert await c.get("akl/k") is None and not lease.alive
            with pytest.raises(LeaseNotFound):
                await c.lease_info(lease.id)
            # Closing the client stops the renewals; the lease then expires by the leader's clock.
            other = AsyncClient(urls(cluster), timeout=5.0)
            await other.connect()
            orphan = await other.lease(LEASE_TTL)
            await other.put("akl/orphan", 1, lease=orphan.id)
            await other.close()
            assert not orphan.alive
            with Client(urls(cluster), timeout=5.0) as blocking:
                await asyncio.to_thread(
                    wait_until,
                    lambda: blocking.get("akl/orphan") is None,
                    LEASE_TTL + 10.0,
                    "the orphaned lease's key to be deleted",
                )
            with pytest.raises(LeaseNotFound):
                await c.lease_info(orphan.id)

    run(body())


def test_an_async_watch_survives_kill_9_of_its_node_with_every_revision_once() -> None:
    async def body(cluster: Cluster) -> None:
        async with (
            AsyncClient(urls(cluster), timeout=10.0) as writer,
            AsyncClient(urls(cluster), timeout=10.0) as c,
        ):
            first = await writer.put("other", 0)
            async with c.watch("akw/", start_revision=first) as w:
                revisions = [await writer.put(f"akw/{i}", i) for i in range(20)]
                before = await take_events(w, 20)
                victim = await asyncio.to_thread(serving_node, cluster)
                cluster.node(victim).kill()
                revisions += [await writer.put(f"akw/{i}", i) for i in range(20, 40)]
                after = await take_events(w, 20)
                assert await w.next(0.5) is None  # nothing more: no duplicates
        events = before + after
        assert [e["revision"] for e in events] == revisions
        assert [(e["key"], e["value"]) for e in events] == [(f"akw/{i}", i) for i in range(40)]

    with start_cluster(3) as cluster:
        started(cluster)
        run(body(cluster))
