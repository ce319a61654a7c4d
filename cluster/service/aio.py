"""AsyncClusterService: the cluster service for asyncio applications, over an AsyncClient.

    async with AsyncClient(endpoints) as c, AsyncClusterService(c) as svc:
        await svc.register_server("web-1", "10.0.0.5", 8080)
        svc.subscribe("NOTE", on_note)                  # a plain function or a coroutine function
        result = await svc.broadcast("NOTE", {"id": 7})
        async for change in svc.changes(): ...

It is not a second service: it runs the one ClusterService (cluster/service/service.py), whose heartbeat,
write-queue and liveness threads call a Store (cluster/service/store.py). `ThreadStore` is that Store over
an AsyncClient: each call is a coroutine handed to the client's event loop with run_coroutine_threadsafe,
and the calling thread waits for it. So the liveness rules, the write queue and the event sockets stay the
same code, tested once. The public calls, which may wait for the cluster, run the blocking service's calls
in a worker thread (asyncio.to_thread), so the application's loop never blocks and is free to run the
client's coroutines that those calls wait for. Listeners run in the loop; `changes()` merges the two record
watches of the AsyncClient in the loop itself (no thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import queue
from collections.abc import Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from cluster.client.aio import AsyncClient
from cluster.client.leases import Lease
from cluster.client.ranges import RangePage
from cluster.client.watch import AsyncWatch
from cluster.errors import ClientClosed, NoAnswer, ZraftError
from cluster.service.events import Event, EventResult
from cluster.service.records import RECORD_KINDS
from cluster.service.service import (
    DEFAULT_GRACE,
    DEFAULT_INTERVAL,
    DEFAULT_STAGGER,
    DEFAULT_TIMEOUT,
    ClusterService,
    change_of,
)

T = TypeVar("T")
LOOP_MARGIN = 5.0  # beyond a call's own timeout (the client ends it then), the loop is taken as stuck


class ThreadStore:
    """The Store (cluster/service/store.py) over an AsyncClient, for threads other than its loop's: each
    call runs as a coroutine in the client's loop and the calling thread waits for its result (or its
    exception, unchanged). Calling it from the loop's own thread would deadlock, so that raises; once the
    loop is closed every call raises ClientClosed, which stops the service's threads."""

    def __init__(
        self, client: AsyncClient, loop: asyncio.AbstractEventLoop, *, margin: float = LOOP_MARGIN
    ) -> None:
        self.client = client
        self.loop = loop
        self.timeout = client.timeout
        self.margin = margin
        self.curve_keypair = getattr(client, "curve_keypair", None)  # for the service's event sockets

    def _run(self, operation: str, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None) -> T:
        if _running_loop() is self.loop:
            raise RuntimeError(f"{operation}: ThreadStore waits for the client's loop; not from that loop")
        limit = (self.timeout if timeout is None else timeout) + self.margin
        coro = make()
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the loop is closed (the application ended without closing the service)
            coro.close()
            raise ClientClosed() from None
        try:
            return fut.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise NoAnswer(operation, limit, "the client's event loop did not run the call") from None

    def get(self, key: str, serializable: bool = False, *, timeout: float | None = None) -> Any:
        return self._run("get", lambda: self.client.get(key, serializable, timeout=timeout), timeout)

    def get_kv(
        self, key: str, serializable: bool = False, *, timeout: float | None = None
    ) -> dict[str, Any] | None:
        return self._run("get", lambda: self.client.get_kv(key, serializable, timeout=timeout), timeout)

    def put(self, key: str, value: Any, *, lease: int | None = None, timeout: float | None = None) -> int:
        return self._run("put", lambda: self.client.put(key, value, lease=lease, timeout=timeout), timeout)

    def cas(self, key: str, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        return self._run("cas", lambda: self.client.cas(key, expected, new, timeout=timeout), timeout)

    def cas_delete(self, key: str, expected: Any, *, timeout: float | None = None) -> bool:
        return self._run(
            "cas_delete", lambda: self.client.cas_delete(key, expected, timeout=timeout), timeout
        )

    def cas_revision(self, key: str, mod_revision: int, new: Any, *, timeout: float | None = None) -> bool:
        return self._run(
            "cas", lambda: self.client.cas_revision(key, mod_revision, new, timeout=timeout), timeout
        )

    def cas_delete_revision(self, key: str, mod_revision: int, *, timeout: float | None = None) -> bool:
        return self._run(
            "cas_delete", lambda: self.client.cas_delete_revision(key, mod_revision, timeout=timeout), timeout
        )

    def range(
        self,
        prefix: str,
        limit: int = 0,
        serializable: bool = False,
        *,
        after: str = "",
        timeout: float | None = None,
    ) -> RangePage:
        return self._run(
            "range",
            lambda: self.client.range(prefix, limit, serializable, after=after, timeout=timeout),
            timeout,
        )

    def lease_grant(self, ttl: float, *, timeout: float | None = None) -> Lease:
        return self._run("lease_grant", lambda: self.client.lease_grant(ttl, timeout=timeout), timeout)

    def lease_keepalive_many(
        self, lease_ids: Sequence[int], *, timeout: float | None = None
    ) -> dict[int, float | ZraftError]:
        return self._run(
            "lease_keepalive", lambda: self.client.lease_keepalive_many(lease_ids, timeout=timeout), timeout
        )

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> float:
        return self._run(
            "lease_keepalive", lambda: self.client.lease_keepalive(lease_id, timeout=timeout), timeout
        )

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> int:
        return self._run("lease_revoke", lambda: self.client.lease_revoke(lease_id, timeout=timeout), timeout)

    def watch(
        self, key: str, prefix: bool = True, start_revision: int | None = None, *, window: int = 1000
    ) -> ThreadWatch:
        """An AsyncWatch opened in the loop, read from this thread through a ThreadWatch."""

        async def open_watch() -> ThreadWatch:
            return ThreadWatch(self.client.watch(key, prefix, start_revision, window=window), self.loop)

        return self._run("watch", open_watch, None)


class ThreadWatch:
    """A blocking view of an AsyncWatch for one consumer thread, as the blocking Client's Watch: `next(t)`,
    iteration, close(), `with`. A task in the loop moves the events into a thread-safe queue as they come,
    so the AsyncWatch's flow control sees them consumed at once; the service's consumers keep up with
    registry changes, and close() ends the task."""

    def __init__(self, watch: AsyncWatch, loop: asyncio.AbstractEventLoop) -> None:
        self._watch = watch
        self._loop = loop
        self._queue: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        self._task = loop.create_task(self._pump())  # constructed in the loop (ThreadStore.watch)

    async def _pump(self) -> None:
        try:
            async for event in self._watch:
                self._queue.put(event)
        except asyncio.CancelledError:  # the loop is shutting down: the watch ends
            self._queue.put(StopIteration())
            raise
        except Exception as exc:  # noqa: BLE001 - the consumer raises it (ClientClosed, Compacted, ...)
            self._queue.put(exc)
        else:
            self._queue.put(StopIteration())

    def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next event; None if none came within `timeout` (None: wait for ever); StopIteration once
        closed, or the watch's error."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self._queue.put(item)  # every later call ends the same way
            raise item
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        event = self.next(None)
        assert event is not None
        return event

    def close(self) -> None:
        """Cancel the watch (idempotent); the iteration stops."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: so is the watch
            self._loop.call_soon_threadsafe(self._watch.close)

    def __enter__(self) -> ThreadWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRegistryChanges:
    """`async for change in svc.changes()`: registry changes (as RegistryChanges gives them) from the two
    record watches of the AsyncClient, in the loop. Each record's changes come in revision order. aclose()
    (or `async with`) ends it; a watch's error (ClientClosed, Compacted, ...) is raised by the loop."""

    def __init__(self, client: AsyncClient) -> None:
        self._watches = [client.watch(f"{kind}/") for kind in RECORD_KINDS]
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._tasks = [asyncio.get_running_loop().create_task(self._pump(w)) for w in self._watches]

    async def _pump(self, watch: AsyncWatch) -> None:
        try:
            async for event in watch:
                change = change_of(event)
                if change is not None:
                    await self._queue.put(change)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            await self._queue.put(exc)
        else:
            await self._queue.put(StopAsyncIteration())

    def __aiter__(self) -> AsyncRegistryChanges:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)  # every later call ends the same way
            raise item
        return item

    async def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next change; None if none came within `timeout`."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        for w in self._watches:
            w.close()

    async def __aenter__(self) -> AsyncRegistryChanges:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


AsyncListener = Callable[[Event], Any]  # a plain function, or one returning an awaitable


class AsyncClusterService:
    """ClusterService for asyncio (see the module docstring): the same arguments, with an AsyncClient,
    and the same calls as coroutines. Make it in the client's loop; use `async with` or `await close()`.
    The service does not close the client."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        interval: float = DEFAULT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        grace: float = DEFAULT_GRACE,
        monitor: bool = True,
        event_host: str | None = None,
        stagger: float = DEFAULT_STAGGER,
        record_every: float | None = None,
    ) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.store = ThreadStore(client, self.loop)
        self.sync = ClusterService(
            self.store,
            interval=interval,
            timeout=timeout,
            grace=grace,
            monitor=monitor,
            event_host=event_host,
            stagger=stagger,
            record_every=record_every,
        )

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    # --- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClusterService:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, timeout: float | None = None) -> None:
        """As ClusterService.close: commit what is queued, delete this service's records, revoke their
        leases. Call it before closing the client."""
        await self._call(self.sync.close, timeout)

    # --- registry -----------------------------------------------------------------------------------

    async def register_server(
        self, name: str, host: str, port: int, meta: dict[str, Any] | None = None, *, wait: bool = True
    ) -> asyncio.Future[Any]:
        """As ClusterService.register_server; returns an asyncio future of the commit (done if wait)."""
        fut = await self._call(self.sync.register_server, name, host, port, meta, wait=wait)
        return asyncio.wrap_future(fut)

    async def register_process(
        self,
        group_id: str,
        name: str,
        host: str,
        port: int,
        meta: dict[str, Any] | None = None,
        *,
        wait: bool = True,
    ) -> asyncio.Future[Any]:
        """As ClusterService.register_process; returns an asyncio future of the commit (done if wait)."""
        fut = await self._call(self.sync.register_process, group_id, name, host, port, meta, wait=wait)
        return asyncio.wrap_future(fut)

    async def update(
        self, kind: str, ident: str, fields: dict[str, Any], *, wait: bool = True
    ) -> asyncio.Future[Any]:
        """As ClusterService.update; returns an asyncio future of the commit (done if wait)."""
        fut = await self._call(self.sync.update, kind, ident, fields, wait=wait)
        return asyncio.wrap_future(fut)

    async def get(self, kind: str, ident: str) -> dict[str, Any] | None:
        return await self._call(self.sync.get, kind, ident)

    async def servers(self) -> list[dict[str, Any]]:
        return await self._call(self.sync.servers)

    async def processes(self) -> list[dict[str, Any]]:
        return await self._call(self.sync.processes)

    async def idle_server(self) -> dict[str, Any] | None:
        return await self._call(self.sync.idle_server)

    async def live(self) -> list[tuple[str, dict[str, Any]]]:
        return await self._call(self.sync.live)

    async def wait_registered(self) -> None:
        await self._call(self.sync.wait_registered)

    def taken_over(self) -> list[str]:
        return self.sync.taken_over()

    def changes(self) -> AsyncRegistryChanges:
        """Registry changes from now on: `async for change in svc.changes()` (see AsyncRegistryChanges)."""
        return AsyncRegistryChanges(self.client)

    # --- events -------------------------------------------------------------------------------------

    def subscribe(self, topic: str, callback: AsyncListener) -> Callable[[], None]:
        """Run callback(Event) in this loop for each event on `topic`; a coroutine function is awaited.
        The ack goes back once it returned, with what it raised; returns an unsubscribe function."""
        return self.sync.subscribe(topic, functools.partial(_in_loop, self.loop, callback))

    async def broadcast(self, topic: str, payload: Any, timeout: float = 2.0) -> EventResult:
        return await self._call(self.sync.broadcast, topic, payload, timeout)

    async def unicast(self, target: str, topic: str, payload: Any, timeout: float = 2.0) -> EventResult:
        return await self._call(self.sync.unicast, target, topic, payload, timeout)

    async def health(self, timeout: float = 1.0) -> dict[str, Any]:
        return await self._call(self.sync.health, timeout)


def _in_loop(loop: asyncio.AbstractEventLoop, callback: AsyncListener, event: Event) -> Any:
    """Run a listener in the application's loop from the event socket's dispatch thread, and wait."""

    async def run() -> Any:
        result = callback(event)
        return await result if inspect.isawaitable(result) else result

    return asyncio.run_coroutine_threadsafe(run(), loop).result()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
