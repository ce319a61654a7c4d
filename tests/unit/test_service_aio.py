"""The asyncio service's adapter (cluster/service/aio.py): ThreadStore runs each Store call in the client's
loop from another thread and hands back its result or exception; ThreadWatch and AsyncRegistryChanges carry
an AsyncWatch's events, end and close across; listeners run in the loop. No processes: a fake AsyncClient
over the in-memory FakeStore, whose calls record the thread they ran on."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from cluster.client.watch import AsyncWatch
from cluster.errors import ClientClosed, LeaseNotFound, NoAnswer
from cluster.service.aio import AsyncClusterService, AsyncRegistryChanges, ThreadStore
from cluster.service.events import Event
from tests.unit.service_fakes import FakeStore, ManualClock


class FakeAsyncClient:
    """The AsyncClient calls ThreadStore makes, as coroutines over a FakeStore; records the threads."""

    def __init__(self) -> None:
        self.store = FakeStore(ManualClock())
        self.timeout = 1.0
        self.threads: set[int] = set()
        self.watches: list[AsyncWatch] = []
        self.closed_watches: list[AsyncWatch] = []

    def _sync(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.threads.add(threading.get_ident())
            return getattr(self.store, name)(*args, **kwargs)

        return call

    def __getattr__(self, name: str) -> Any:
        if name in {"get", "get_kv", "put", "cas", "cas_delete", "cas_revision",
                    "cas_delete_revision", "range", "lease_grant", "lease_keepalive",
                    "lease_revoke"}:  # fmt: skip
            return self._sync(name)
        raise AttributeError(name)

    def watch(
        self, key: str, prefix: bool = True, start_revision: int | None = None, *, window: int = 1000
    ) -> AsyncWatch:
        asyncio.get_running_loop()  # as AsyncClient: only in its loop
        watch = AsyncWatch.checked(key, prefix, start_revision, window)
        watch.on_close = lambda: self.closed_watches.append(watch)
        self.watches.append(watch)
        return watch


def event(kind: str, key: str, value: Any, revision: int) -> dict[str, Any]:
    return {"type": kind, "key": key, "value": value, "revision": revision}


def test_thread_store_runs_each_call_in_the_loop_and_returns_its_result_or_error() -> None:
    async def main() -> None:
        client = FakeAsyncClient()
        store = ThreadStore(client, asyncio.get_running_loop())  # type: ignore[arg-type]

        def from_a_thread() -> tuple[Any, ...]:
            rev = store.put("a", {"x": 1})
            swapped = store.cas("a", {"x": 1}, {"x": 2})
            lease = store.lease_grant(5.0)
            with pytest.raises(LeaseNotFound):
                store.lease_keepalive(lease.id + 100)
            page = store.range("a")
            return (
                rev,
                swapped,
                store.get("a"),
                [kv["key"] for kv in page.kvs],
                store.cas_delete("a", {"x": 9}),
            )

        rev, swapped, value, keys, deleted = await asyncio.to_thread(from_a_thread)
        assert rev >= 1 and swapped is True and value == {"x": 2} and keys == ["a"] and deleted is False
        assert client.threads == {threading.get_ident()}  # every call ran in this loop's thread

        with pytest.raises(RuntimeError, match="not from that loop"):
            store.get("a")  # waiting here would block the loop the call needs

    asyncio.run(main())


def test_thread_store_gives_no_answer_when_the_loop_does_not_run_the_call_and_closed_when_it_is_closed() -> (
    None
):
    loop = asyncio.new_event_loop()  # never run
    try:
        client = FakeAsyncClient()
        store = ThreadStore(client, loop, margin=0.05)  # type: ignore[arg-type]
        with pytest.raises(NoAnswer, match="event loop did not run the call"):
            store.get("a", timeout=0.05)
        loop.run_until_complete(asyncio.sleep(0))  # the abandoned call is dropped, not left unawaited
    finally:
        loop.close()
    with pytest.raises(ClientClosed):  # a closed loop: the service's threads stop as for a closed client
        store.get("a")


def test_thread_watch_carries_events_the_end_and_close_to_the_thread() -> None:
    async def main() -> None:
        client = FakeAsyncClient()
        store = ThreadStore(client, asyncio.get_running_loop())  # type: ignore[arg-type]
        watch = await asyncio.to_thread(store.watch, "CLUSTER_SERVICE/", start_revision=3)
        [inner] = client.watches
        assert inner.key == "CLUSTER_SERVICE/" and inner.start == 3

        inner.deliver(
            [event("PUT", "CLUSTER_SERVICE/x", 1, 3), event("DELETE", "CLUSTER_SERVICE/x", None, 4)], 4
        )
        got = await asyncio.to_thread(lambda: [watch.next(5.0), watch.next(5.0), watch.next(0.01)])
        assert [e["revision"] if e else None for e in got] == [3, 4, None]

        inner.end(ClientClosed())
        with pytest.raises(ClientClosed):
            await asyncio.to_thread(watch.next, 5.0)
        with pytest.raises(ClientClosed):  # and every later call
            await asyncio.to_thread(watch.next, 5.0)

        second = await asyncio.to_thread(store.watch, "SERVER_META/")
        await asyncio.to_thread(second.close)
        await asyncio.to_thread(lambda: pytest.raises(StopIteration, second.next, 5.0))
        assert client.closed_watches == [client.watches[1]]

    asyncio.run(main())


def test_registry_changes_merge_both_record_watches_in_the_loop() -> None:
    async def main() -> None:
        client = FakeAsyncClient()
        changes = AsyncRegistryChanges(client)  # type: ignore[arg-type]
        servers, processes = client.watches
        assert (servers.key, processes.key) == ("SERVER_META/", "INTP_PROCESS_META/")
        servers.deliver([event("PUT", "SERVER_META/web-1", {"STATUS": "ONLINE"}, 5)], 5)
        processes.deliver([event("DELETE", "INTP_PROCESS_META/p-1", None, 6)], 6)
        got = [await changes.next(5.0), await changes.next(5.0)]
        assert sorted((c["kind"], c["id"], c["type"], c["revision"]) for c in got if c) == [
            ("INTP_PROCESS_META", "p-1", "DELETE", 6),
            ("SERVER_META", "web-1", "PUT", 5),
        ]
        assert await changes.next(0.01) is None
        async with changes:
            pass
        assert client.closed_watches == [servers, processes]
        with pytest.raises(StopAsyncIteration):
            await changes.next(5.0)

    asyncio.run(main())


def test_an_event_between_two_async_services_runs_sync_and_async_listeners_in_the_loop() -> None:
    async def main() -> None:
        client = FakeAsyncClient()  # one in-memory store shared by both services; real event sockets
        receiver = AsyncClusterService(client, monitor=False)  # type: ignore[arg-type]
        sender = AsyncClusterService(client, monitor=False)  # type: ignore[arg-type]
        seen: list[tuple[str, Any, int]] = []

        def plain(e: Event) -> None:
            seen.append(("plain", e.payload, threading.get_ident()))

        async def coroutine(e: Event) -> None:
            await asyncio.sleep(0)
            seen.append(("async", e.payload, threading.get_ident()))
            raise ValueError("bad note")

        try:
            receiver.subscribe("NOTE", plain)
            receiver.subscribe("NOTE", coroutine)
            await receiver.wait_registered()  # the bare LISTENER registration, written through the loop
            result = await sender.broadcast("NOTE", {"n": 1}, timeout=10.0)
            assert result.acked == [f"LISTENER/listener-{receiver.sync.token}"], result
            assert "ValueError: bad note" in str(result.errors)
            assert seen == [
                ("plain", {"n": 1}, threading.get_ident()),
                ("async", {"n": 1}, threading.get_ident()),
            ]
        finally:
            await sender.close(timeout=1.0)
            await receiver.close(timeout=1.0)
        assert client.store.get(f"CLUSTER_SERVICE/alive/LISTENER/listener-{receiver.sync.token}") is None

    asyncio.run(main())
