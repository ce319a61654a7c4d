"""Inside a worker process: the client drivers the load generator calls, one per system, each through
that client's own asynchronous API (see workloads.Driver for the contract).

    zraft  cluster.Client's put_async/get_async/cas_async futures; callbacks run on the Client's I/O thread
    etcd   etcd's gRPC v3 KV service through the stubs generated in the etcd-sdk-python package (module
           pyetcd.etcdrpc) on a grpc.aio channel, driven by an asyncio loop on its own thread; callbacks
           run on that thread

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
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from cluster.bench.workloads import Fail

ETCD_CLIENT = "etcd-sdk-python's generated gRPC v3 stubs (module pyetcd.etcdrpc) on a grpc.aio channel"
ETCD_CLIENT_INSTALL = "pip install 'etcd-sdk-python>=0.0.7' 'protobuf>=5.27.2'"

T = TypeVar("T")


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


class ZraftDriver:
    def __init__(self, endpoints: list[str], timeout: float) -> None:
        from cluster.client.api import Client

        self._client = Client(endpoints, timeout=timeout)

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

    def close(self) -> None:
        self._client.close()


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
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self._thread = threading.Thread(target=self._loop.run_forever, name="etcd-aio", daemon=True)
        self._thread.start()
        self._loop_thread = self._thread.ident
        self._channel: Any = None
        self._kv: Any = None
        asyncio.run_coroutine_threadsafe(self._connect(endpoint), self._loop).result(timeout)

    async def _connect(self, endpoint: str) -> None:
        import grpc

        self._channel = grpc.aio.insecure_channel(endpoint)  # an aio channel belongs to the running loop
        self._kv = self._rpc.KVStub(self._channel)

    def _call(self, method: str, request: Any, done: Callable[[Any], None], fail: Fail) -> None:
        if threading.get_ident() == self._loop_thread:
            self._start(method, request, done, fail)
            return
        try:
            self._loop.call_soon_threadsafe(self._start, method, request, done, fail)
        except RuntimeError as exc:  # the loop is closed
            fail(exc)

    def _start(self, method: str, request: Any, done: Callable[[Any], None], fail: Fail) -> None:
        try:
            call = getattr(self._kv, method)(request, timeout=self._timeout)
        except Exception as exc:
            fail(exc)
            return
        task = self._loop.create_task(self._finish(call, done, fail))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _finish(call: Any, done: Callable[[Any], None], fail: Fail) -> None:
        try:
            response = await call
        except Exception as exc:  # grpc.aio.AioRpcError (deadline exceeded, unavailable, ...)
            fail(exc)
            return
        done(response)

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
        request = self._rpc.PutRequest(key=key.encode(), value=value)
        self._call("Put", request, lambda _response: done(), fail)

    def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None:
        request = self._rpc.RangeRequest(key=key.encode(), serializable=serializable)
        self._call("Range", request, lambda r: done(bytes(r.kvs[0].value) if r.kvs else None), fail)

    def cas(self, key: str, expected: bytes, new: bytes, done: Callable[[bool], None], fail: Fail) -> None:
        rpc = self._rpc
        raw = key.encode()
        compare = rpc.Compare(key=raw, result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, value=expected)
        swap = rpc.RequestOp(request_put=rpc.PutRequest(key=raw, value=new))
        request = rpc.TxnRequest(compare=[compare], success=[swap], failure=[])
        self._call("Txn", request, lambda r: done(bool(r.succeeded)), fail)

    def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._channel.close(), self._loop).result(5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()
