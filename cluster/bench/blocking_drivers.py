"""Inside a worker process, for `cluster-bench --client threads`: drivers that make each operation a
blocking call in the calling thread (threadload.ThreadedCell runs one thread per load slot).

They offer the workloads.Driver interface, but every call blocks until the answer and calls done or fail
before it returns (which that interface allows), so the same workload operations run unchanged.

    zraft  cluster.Client's blocking put/get/cas, one Client shared by all the threads of the process (the
           Client is thread-safe and meant to be shared: one per application process)
    etcd   etcd's gRPC v3 KV service through the stubs generated in the etcd-sdk-python package (module
           pyetcd.etcdrpc) on one ordinary (synchronous) gRPC channel shared by the threads: stub.Put(...),
           stub.Range(...), stub.Txn(...) called from each thread, as a threaded application calls etcd

PySyncObj has no client protocol (its driver lives in its node process), so it has no blocking driver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.bench.drivers import ZraftDriver, cas_request
from cluster.bench.workloads import Driver, Fail

ETCD_BLOCKING_CLIENT = (
    "etcd-sdk-python's generated gRPC v3 stubs (module pyetcd.etcdrpc): blocking calls from threads "
    "on one grpc channel"
)


class ZraftBlockingDriver:
    """The blocking Client calls of a ZraftDriver's Client (the same connection, shared by the threads)."""

    def __init__(self, driver: ZraftDriver) -> None:
        self._client = driver.client

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
        try:
            self._client.put(key, value)
        except Exception as exc:
            fail(exc)
            return
        done()

    def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None:
        try:
            value = self._client.get(key, serializable)
        except Exception as exc:
            fail(exc)
            return
        done(None if value is None else bytes(value))

    def cas(self, key: str, expected: bytes, new: bytes, done: Callable[[bool], None], fail: Fail) -> None:
        try:
            swapped = self._client.cas(key, expected, new)
        except Exception as exc:
            fail(exc)
            return
        done(swapped)

    def close(self) -> None:
        """The Client belongs to the asynchronous driver, which closes it."""


class EtcdBlockingDriver:
    """etcd v3 over gRPC with blocking unary calls from the calling thread."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        import grpc
        from pyetcd import etcdrpc

        self._rpc: Any = etcdrpc
        self._timeout = timeout
        self._channel: Any = grpc.insecure_channel(endpoint)
        self._kv: Any = etcdrpc.KVStub(self._channel)

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
        try:
            self._kv.Put(self._rpc.PutRequest(key=key.encode(), value=value), timeout=self._timeout)
        except Exception as exc:
            fail(exc)
            return
        done()

    def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None:
        try:
            request = self._rpc.RangeRequest(key=key.encode(), serializable=serializable)
            response = self._kv.Range(request, timeout=self._timeout)
        except Exception as exc:
            fail(exc)
            return
        done(bytes(response.kvs[0].value) if response.kvs else None)

    def cas(self, key: str, expected: bytes, new: bytes, done: Callable[[bool], None], fail: Fail) -> None:
        try:
            response = self._kv.Txn(cas_request(self._rpc, key, expected, new), timeout=self._timeout)
        except Exception as exc:
            fail(exc)
            return
        done(bool(response.succeeded))

    def close(self) -> None:
        self._channel.close()


def build_blocking_driver(init: dict[str, Any], driver: Driver) -> Driver:
    """The blocking driver for the system the worker's `init` names (`driver`: its asynchronous one)."""
    if isinstance(driver, ZraftDriver):
        return ZraftBlockingDriver(driver)
    if init.get("driver") == "etcd":
        return EtcdBlockingDriver(str(init["endpoint"]), float(init.get("timeout", 10.0)))
    raise ValueError(f"no blocking client for {init.get('driver')!r}")
