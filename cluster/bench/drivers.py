"""Inside a worker process: the client drivers the load generator calls, one per system, each through
that client's own asynchronous API (see workloads.Driver for the contract).

    zraft  cluster.Client's put_async/get_async/cas_async futures; callbacks run on the Client's I/O thread.
           Watches and leases: a cluster.AsyncClient on an asyncio loop of its own thread (`async for` over
           AsyncClient.watch, awaited lease_grant/lease_keepalive), made when first needed
    etcd   etcd's gRPC v3 KV service through the stubs generated in the etcd-sdk-python package (module
           pyetcd.etcdrpc) on a grpc.aio channel, driven by an asyncio loop on its own thread; callbacks
           run on that thread. Watches: one Watch stream per watcher (a create request, then its
           responses); leases: LeaseGrant, and one LeaseKeepAlive stream per lease (write a request, read
           its response), on the same channel

For etcd, gRPC Python offers three ways to keep many calls in flight: blocking calls from many threads,
stub.Method.future() with done-callbacks, and grpc.aio. Measured on this bench's 2-core machine (one
process, 64 Range calls in flight), grpc.aio needed the least client CPU per call (about 60-65 us against
75-85 us for .future(), whose callbacks all funnel through one channel-polling thread) and gave the most
calls per second, so it is etcd's fastest asynchronous path and the one used here.

PySyncObj has no client protocol; its driver lives with its node (cluster/bench/pysyncobj_node.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from cluster.bench.workloads import Fail

ETCD_CLIENT = "etcd-sdk-python's generated gRPC v3 stubs (module pyetcd.etcdrpc) on a grpc.aio channel"
ETCD_CLIENT_INSTALL = "pip install 'etcd-sdk-python>=0.0.7' 'protobuf>=5.27.2'"

T = TypeVar("T")
_ETCD_PUT = 0  # mvccpb.Event.EventType.PUT


def _relay(fut: Future[T], done: Callable[[T], None], fail: Fail) -> None:
    """When `fut` completes, pass its result to done or its exception to fail."""

    def settle(f: Future[T]) -> None:
        try:
            result = f.result()
        except Exception as exc:
            fail(exc)
            return
        done(result)

    fut.add_done_callback(settle)


class LoopThread:
    """An asyncio loop on a thread of its own, for drivers whose client is asyncio-based."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references to tasks
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self.ident = self._thread.ident

    def on_loop(self, fn: Callable[[], None], fail: Fail) -> None:
        """Call fn on the loop's thread: at once when already there, else at its next turn."""
        if threading.get_ident() == self.ident:
            fn()
            return
        try:
            self.loop.call_soon_threadsafe(fn)
        except RuntimeError as exc:  # the loop is closed
            fail(exc)

    def spawn(
        self, make: Callable[[], Awaitable[T]], done: Callable[[T], None], fail: Fail
    ) -> Callable[[], None]:
        """Run the coroutine `make()` as a task (from any thread); done(result) or fail(exc) when it ends,
        nothing when it was cancelled. Returns a function that cancels it (from any thread)."""
        holder: list[asyncio.Task[None]] = []

        async def body() -> None:
            try:
                result = await make()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                fail(exc)
                return
            done(result)

        def start() -> None:
            task = self.loop.create_task(body())
            holder.append(task)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def cancel() -> None:
            def now() -> None:
                for task in holder:
                    task.cancel()

            self.on_loop(now, lambda exc: None)

        self.on_loop(start, fail)
        return cancel

    def run(self, coro: Awaitable[T], timeout: float) -> T:
        """Run a coroutine on the loop from another thread and wait for its result."""
        if threading.get_ident() == self.ident:
            raise RuntimeError("LoopThread.run would wait for its own thread")

        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.close()


class ZraftDriver:
    def __init__(
        self,
        endpoints: list[str],
        timeout: float,
        curve_secret_key: str | None = None,
        server_public_key: str | None = None,
    ) -> None:
        from cluster.client.api import Client

        self._endpoints = endpoints
        self._timeout = timeout
        self._secret_key = curve_secret_key
        self._server_keys = server_public_key
        self._client = Client(
            endpoints, timeout=timeout, curve_secret_key=curve_secret_key, server_public_key=server_public_key
        )
        self._aio: tuple[LoopThread, Any] | None = None  # (its loop, a connected AsyncClient)
        self._aio_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The blocking Client (cluster-bench --client threads calls it from many threads)."""
        return self._client

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
        try:
            fut = self._client.put_async(key, value)
        except Exception as exc:  # InvalidRequest is raised at call time
            fail(exc)
            return
        _relay(fut, lambda _revision: done(), fail)

    def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None:
        try:
            fut = self._client.get_async(key, serializable)
        except Exception as exc:
            fail(exc)
            return
        _relay(fut, lambda value: done(None if value is None else bytes(value)), fail)

    def cas(self, key: str, expected: bytes, new: bytes, done: Callable[[bool], None], fail: Fail) -> None:
        try:
            fut = self._client.cas_async(key, expected, new)
        except Exception as exc:
            fail(exc)
            return
        _relay(fut, done, fail)

    # --- watches and leases, through an AsyncClient on a loop thread ----------------------------------

    def _async_client(self) -> tuple[LoopThread, Any]:
        with self._aio_lock:
            if self._aio is None:
                from cluster.client.aio import AsyncClient

                loop = LoopThread("zraft-aio")
                client = AsyncClient(
                    self._endpoints,
                    timeout=self._timeout,
                    curve_secret_key=self._secret_key,
                    server_public_key=self._server_keys,
                )
                try:
                    loop.run(client.connect(), self._timeout + 1.0)
                except BaseException:
                    loop.close()
                    raise
                self._aio = (loop, client)
            return self._aio

    def watch(self, prefix: str, on_value: Callable[[bytes], None], fail: Fail) -> Callable[[], None]:
        loop, client = self._async_client()

        async def follow() -> None:
            async with client.watch(prefix) as w:
                async for event in w:
                    if event["type"] == "PUT":
                        on_value(bytes(event["value"]))

        return loop.spawn(follow, lambda _none: fail(RuntimeError("the watch ended")), fail)

    def lease_grant(self, ttl: int, done: Callable[[int], None], fail: Fail) -> None:
        try:
            loop, client = self._async_client()
        except Exception as exc:
            fail(exc)
            return

        async def grant() -> int:
            lease = await client.lease_grant(ttl)
            return int(lease.id)

        loop.spawn(grant, done, fail)

    def lease_keepalive(self, lease_id: int, done: Callable[[], None], fail: Fail) -> None:
        loop, client = self._async_client()  # made by lease_grant, in the slot's setup

        async def renew() -> float:
            return float(await client.lease_keepalive(lease_id))

        loop.spawn(renew, lambda _ttl: done(), fail)

    def close(self) -> None:
        self._client.close()
        if self._aio is not None:
            loop, client = self._aio
            with contextlib.suppress(Exception):
                loop.run(client.close(), 5.0)
            loop.close()


class EtcdDriver:
    """etcd v3 over gRPC, asynchronously: the KV stub's Put/Range/Txn on a grpc.aio channel. Linearizable
    get is etcd's default Range; serializable sets serializable=True. Compare-and-swap is a Txn:
    value(key) == expected -> put(key, new). The requests are the ones pyetcd's blocking put, get and
    replace build.

    A call made on the loop's thread (the usual case: the load generator issues the next request from the
    previous one's callback) starts its RPC at once; one from another thread is handed over to the loop.
    """

    def __init__(self, endpoint: str, timeout: float) -> None:
        from pyetcd import etcdrpc

        self._rpc: Any = etcdrpc
        self._timeout = timeout
        self._loop = LoopThread("etcd-aio")
        self._channel: Any = None
        self._kv: Any = None
        self._watch: Any = None
        self._lease: Any = None
        self._keepalives: dict[int, Any] = {}  # lease id -> its LeaseKeepAlive stream
        self._loop.run(self._connect(endpoint), timeout)

    async def _connect(self, endpoint: str) -> None:
        import grpc

        self._channel = grpc.aio.insecure_channel(endpoint)  # an aio channel belongs to the running loop
        self._kv = self._rpc.KVStub(self._channel)
        self._watch = self._rpc.WatchStub(self._channel)
        self._lease = self._rpc.LeaseStub(self._channel)

    def _call(self, method: str, request: Any, done: Callable[[Any], None], fail: Fail) -> None:
        """Start the unary call on the loop (at once when already on its thread) and relay its answer."""
        self._loop.spawn(lambda: getattr(self._kv, method)(request, timeout=self._timeout), done, fail)

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
        request = self._rpc.PutRequest(key=key.encode(), value=value)
        self._call("Put", request, lambda _response: done(), fail)

    def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None:
        request = self._rpc.RangeRequest(key=key.encode(), serializable=serializable)
        self._call("Range", request, lambda r: done(bytes(r.kvs[0].value) if r.kvs else None), fail)

    def cas(self, key: str, expected: bytes, new: bytes, done: Callable[[bool], None], fail: Fail) -> None:
        self._call("Txn", cas_request(self._rpc, key, expected, new), lambda r: done(bool(r.succeeded)), fail)

    def watch(self, prefix: str, on_value: Callable[[bytes], None], fail: Fail) -> Callable[[], None]:
        rpc = self._rpc
        raw = prefix.encode()
        create = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=raw, range_end=_prefix_end(raw)))

        async def follow() -> None:
            stream = self._watch.Watch()
            try:
                await stream.write(create)
                async for response in stream:
                    if response.canceled:
                        raise RuntimeError(f"watch cancelled by etcd: {response.cancel_reason}")
                    for event in response.events:
                        if event.type == _ETCD_PUT:
                            on_value(bytes(event.kv.value))
            finally:
                stream.cancel()

        return self._loop.spawn(follow, lambda _none: fail(RuntimeError("the watch ended")), fail)

    def lease_grant(self, ttl: int, done: Callable[[int], None], fail: Fail) -> None:
        async def grant() -> int:
            response = await self._lease.LeaseGrant(
                self._rpc.LeaseGrantRequest(TTL=ttl), timeout=self._timeout
            )
            return int(response.ID)

        self._loop.spawn(grant, done, fail)

    def lease_keepalive(self, lease_id: int, done: Callable[[], None], fail: Fail) -> None:
        async def renew() -> None:
            stream = self._keepalives.get(lease_id)
            if stream is None:
                stream = self._keepalives[lease_id] = self._lease.LeaseKeepAlive()
            try:
                await stream.write(self._rpc.LeaseKeepAliveRequest(ID=lease_id))
                response = await asyncio.wait_for(stream.read(), self._timeout)
            except BaseException:
                self._keepalives.pop(lease_id, None)  # a broken stream: the next renewal opens another
                stream.cancel()
                raise
            if response.TTL <= 0:
                raise RuntimeError(f"lease {lease_id} not found")

        self._loop.spawn(renew, lambda _none: done(), fail)

    def close(self) -> None:
        async def shut() -> None:
            for stream in self._keepalives.values():
                stream.cancel()
            if self._channel is not None:
                await self._channel.close()

        with contextlib.suppress(Exception):
            self._loop.run(shut(), 5.0)
        self._loop.close()


def cas_request(rpc: Any, key: str, expected: bytes, new: bytes) -> Any:
    """etcd's compare-and-swap: a Txn putting `new` if the key's value is `expected` (rpc: pyetcd.etcdrpc)."""
    raw = key.encode()
    compare = rpc.Compare(key=raw, result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, value=expected)
    swap = rpc.RequestOp(request_put=rpc.PutRequest(key=raw, value=new))
    return rpc.TxnRequest(compare=[compare], success=[swap], failure=[])


def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for every key starting with `prefix` (the prefix with its last byte + 1)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key
