"""Inside a worker process: the client drivers the load generator calls, one per system.

    zraft  cluster.Client (ZeroMQ + msgpack); threads share the one Client, which pipelines their requests
    etcd   the `pyetcd` module of the etcd-sdk-python package (gRPC); threads share one channel (HTTP/2)

PySyncObj has no client protocol; its driver lives with its node (cluster/bench/pysyncobj_node.py).
"""

from __future__ import annotations

from typing import Any

ETCD_CLIENT = "etcd-sdk-python (module pyetcd, gRPC v3 API)"
ETCD_CLIENT_INSTALL = "pip install 'etcd-sdk-python>=0.0.7' 'protobuf>=5.27.2'"


class ZraftDriver:
    def __init__(self, endpoints: list[str], timeout: float) -> None:
        from cluster.client import Client

        self._client = Client(endpoints, timeout=timeout)

    def put(self, key: str, value: bytes) -> None:
        self._client.put(key, value)

    def get(self, key: str, serializable: bool) -> bytes | None:
        value: Any = self._client.get(key, serializable)
        return value if value is None else bytes(value)

    def cas(self, key: str, expected: bytes, new: bytes) -> bool:
        return self._client.cas(key, expected, new)

    def close(self) -> None:
        self._client.close()


class EtcdDriver:
    """etcd v3 over gRPC. Linearizable get is etcd's default Range; serializable sets serializable=True.
    Compare-and-swap is a Txn: value(key) == expected -> put(key, new)."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        import pyetcd

        host, _, port = endpoint.rpartition(":")
        self._client = pyetcd.client(host=host, port=int(port), timeout=timeout)

    def put(self, key: str, value: bytes) -> None:
        self._client.put(key, value)

    def get(self, key: str, serializable: bool) -> bytes | None:
        value, _meta = self._client.get(key, serializable=serializable)
        return None if value is None else bytes(value)

    def cas(self, key: str, expected: bytes, new: bytes) -> bool:
        return bool(self._client.replace(key, expected, new))

    def close(self) -> None:
        self._client.close()
