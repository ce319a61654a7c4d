"""The client's streams without sockets: AsyncWatch driven through ClientCore (the code the blocking
client's watches run), the renewal schedule both lease keepers share, and the two keepers (a thread and
an asyncio task) against fake lease calls."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgpack
import pytest

from actors.messages import ClientResponse, RequestKind, Status
from cluster.client.driver import WatchControl
from cluster.client.leases import AsyncKeptLease, KeptLease, Lease, Renewals
from cluster.client.watch import AsyncWatch, Watch
from cluster.errors import (
    ClientClosed,
    Compacted,
    InvalidRequest,
    LeaseExpired,
    LeaseNotFound,
    OutcomeUnknown,
    WatchCancelled,
)
from tests.unit.test_client_driver import FakeLinks, frame, ready_core

BOUND = 10.0  # bounded waits of the keeper tests (they only wait for renewals every few ms)


def event(key: str, revision: int, value: Any = 1) -> dict[str, Any]:
    return {"type": "PUT", "key": key, "value": value, "revision": revision, "create_revision": revision,
            "version": 1}  # fmt: skip


def stream_frame(src: str, req_id: int, number: int, through: int, events: list[dict[str, Any]]) -> bytes:
    body = msgpack.packb([number, through, events])
    return frame(ClientResponse(src, "c", req_id, Status.STREAM, body, ""))


# --- AsyncWatch through ClientCore --------------------------------------------------------------------


def test_an_async_watch_gets_its_events_in_order_reports_credit_and_closes_through_the_core() -> None:
    async def body() -> None:
        links = FakeLinks()
        core, _ = ready_core(links)
        watch = AsyncWatch.checked("w/", True, 5, window=4)
        controls: list[WatchControl] = []
        watch.on_consumed = lambda n: controls.append(("consumed", watch, n))
        watch.on_close = lambda: controls.append(("close", watch, 0))
        core.turn([], 0.0, [("open", watch, 0)])
        [(_, [opening])] = links.take()
        assert opening.kind == RequestKind.WATCH
        assert await watch.next(0.0) is None  # nothing yet, and no waiting with a zero timeout

        waiter = asyncio.create_task(watch.next(None))
        await asyncio.sleep(0)  # the consumer waits
        core.receive(stream_frame(opening.dst, opening.req_id, 0, 6, [event("w/a", 5), event("w/b", 6)]), 0.1)
        assert (await asyncio.wait_for(waiter, BOUND))["key"] == "w/a"
        assert watch.revision == 6
        assert (await watch.next(None))["revision"] == 6
        # An old frame number is a copy; the next one brings revision 7 once.
        core.receive(stream_frame(opening.dst, opening.req_id, 0, 6, [event("w/b", 6)]), 0.2)
        core.receive(stream_frame(opening.dst, opening.req_id, 1, 7, [event("w/c", 7)]), 0.2)
        assert [e["revision"] async for e in _take(watch, 1)] == [7]
        assert await watch.next(0.0) is None  # waiting now: the consumption so far was reported
        assert sum(n for what, _, n in controls if what == "consumed") == 3
        core.turn([], 0.3, controls)  # the credit goes back to the node as an acknowledgement
        controls.clear()
        assert [r.kind for _, batch in links.take() for r in batch] == [RequestKind.WATCH_ACK]

        async with watch:
            pass
        assert controls == [("close", watch, 0)]
        core.turn([], 0.4, controls)
        assert [r.kind for _, batch in links.take() for r in batch] == [RequestKind.WATCH_CANCEL]
        with pytest.raises(StopAsyncIteration):
            await watch.__anext__()
        watch.end(WatchCancelled("closed by the client"))  # the node's answer to our cancel: no error
        assert [e async for e in watch] == []

    asyncio.run(body())


async def _take(watch: AsyncWatch, n: int) -> Any:
    for _ in range(n):
        yield await watch.next(BOUND)


def test_an_async_watch_ends_with_the_error_that_ended_it_after_its_events() -> None:
    async def body() -> None:
        watch = AsyncWatch("k", False, 100)
        watch.deliver([event("k", 3)], 3)
        watch.end(Compacted(9, "fell behind"))
        got: list[int] = []
        with pytest.raises(Compacted) as info:
            async for e in watch:
                got.append(e["revision"])
        assert got == [3] and info.value.compact_revision == 9

        waiting = AsyncWatch("k", False, 100)
        task = asyncio.create_task(waiting.__anext__())
        await asyncio.sleep(0)
        waiting.end(ClientClosed())  # what AsyncClient.close() does to open watches
        with pytest.raises(ClientClosed):
            await asyncio.wait_for(task, BOUND)

        cancelled = AsyncWatch("k", False, 100)
        task = asyncio.create_task(cancelled.next(None))
        await asyncio.sleep(0)
        task.cancel()
        cancelled.deliver([event("k", 4)], 4)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await cancelled.next(0.0)) == event("k", 4)  # a cancelled wait lost nothing

    asyncio.run(body())


@pytest.mark.parametrize(
    ("key", "prefix", "start", "window"),
    [(1, True, None, 10), ("", False, None, 10), ("k", True, 0, 10), ("k", True, None, 0)],
)
def test_both_watch_kinds_refuse_the_same_bad_arguments(
    key: Any, prefix: bool, start: Any, window: int
) -> None:
    for cls in (Watch, AsyncWatch):
        with pytest.raises(InvalidRequest):
            cls.checked(key, prefix, start, window)


# --- the renewal schedule -------------------------------------------------------------------------------


def test_renewals_every_third_of_the_ttl_sooner_after_a_timeout_and_stop_when_gone_or_closed() -> None:
    r = Renewals()
    assert not r.alive
    with pytest.raises(RuntimeError):
        _ = r.id
    r.lease = Lease(7, 9.0)
    assert r.alive and r.id == 7 and r.first_wait() == 3.0
    assert r.after(None) == 3.0 and r.renewals == 1
    assert r.after(OutcomeUnknown("lease_keepalive", 3.0)) == 1.0 and r.renewals == 1
    assert r.after(ClientClosed()) is None and r.lost is None
    assert r.should_revoke(True) and not r.should_revoke(False)
    gone = LeaseExpired("lease_keepalive", "expired")
    assert r.after(gone) is None and r.lost is gone
    assert not r.alive and not r.should_revoke(True)  # nothing left to revoke


# --- the keepers ------------------------------------------------------------------------------------------


class FakeLeases:
    """Lease calls that record what they were asked; keepalives fail as scripted."""

    def __init__(self, failures: list[BaseException | None] | None = None) -> None:
        self.keepalives = 0
        self.revoked: list[int] = []
        self.failures = list(failures or [])
        self.renewed = threading.Event()
        self.lock = threading.Lock()

    def keepalive(self, lease_id: int, limit: float) -> float:
        assert limit > 0
        with self.lock:
            self.keepalives += 1
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        if self.keepalives >= 3:
            self.renewed.set()
        return 1.0

    def revoke(self, lease_id: int) -> int:
        self.revoked.append(lease_id)
        return 1


def test_the_thread_keeper_renews_then_revokes_on_exit() -> None:
    fake = FakeLeases([OutcomeUnknown("lease_keepalive", 0.01)])
    with KeptLease(Lease(3, 0.03), fake.keepalive, fake.revoke) as kept:
        assert fake.renewed.wait(BOUND)  # a failed renewal did not stop it
        assert kept.alive and kept.renewals >= 2
    assert fake.revoked == [3] and not kept.alive


def test_the_thread_keeper_stops_when_the_lease_is_gone_and_does_not_revoke_it() -> None:
    fake = FakeLeases([LeaseNotFound("lease_keepalive", "not found")])
    kept = KeptLease(Lease(4, 0.03), fake.keepalive, fake.revoke)
    kept._thread.join(BOUND)
    assert isinstance(kept.lost, LeaseNotFound) and not kept.alive
    kept.close()
    assert fake.revoked == []


def test_the_task_keeper_grants_on_entry_renews_and_revokes_when_the_block_ends() -> None:
    async def body() -> None:
        fake = FakeLeases([OutcomeUnknown("lease_keepalive", 0.01)])
        granted: list[int] = []
        closed: list[AsyncKeptLease] = []

        async def grant() -> Lease:
            granted.append(1)
            return Lease(5, 0.03)

        async def keepalive(lease_id: int, limit: float) -> float:
            return fake.keepalive(lease_id, limit)

        async def revoke(lease_id: int) -> int:
            return fake.revoke(lease_id)

        kept = AsyncKeptLease(grant, keepalive, revoke, on_close=closed.append)
        with pytest.raises(RuntimeError):
            _ = kept.id  # not granted before the block
        async with kept as lease:
            assert lease is kept and kept.id == 5 and granted == [1]
            await asyncio.wait_for(asyncio.to_thread(fake.renewed.wait), BOUND)
            assert kept.alive and kept.renewals >= 2
        assert fake.revoked == [5] and not kept.alive and closed == [kept]
        assert kept._task is not None and kept._task.done()

        # awaited without a block; the lease is gone: renewals stop and nothing is revoked
        lost = FakeLeases([LeaseNotFound("lease_keepalive", "not found")])

        async def lost_keepalive(lease_id: int, limit: float) -> float:
            return lost.keepalive(lease_id, limit)

        async def lost_revoke(lease_id: int) -> int:
            return lost.revoke(lease_id)

        other = await AsyncKeptLease(grant, lost_keepalive, lost_revoke)
        assert other._task is not None
        await asyncio.wait_for(other._task, BOUND)
        assert isinstance(other.lost, LeaseNotFound) and not other.alive
        await other.close()
        assert lost.revoked == []

    asyncio.run(body())


def test_stop_ends_the_renewal_task_without_revoking() -> None:
    async def body() -> None:
        revoked: list[int] = []

        async def grant() -> Lease:
            return Lease(6, 30.0)

        async def keepalive(lease_id: int, limit: float) -> float:
            return 30.0

        async def revoke(lease_id: int) -> int:
            revoked.append(lease_id)
            return 0

        kept = await AsyncKeptLease(grant, keepalive, revoke)
        kept.stop()  # what AsyncClient.close() does
        assert kept._task is not None
        await asyncio.gather(kept._task, return_exceptions=True)
        assert kept._task.cancelled() and not kept.alive and revoked == []

    asyncio.run(body())
