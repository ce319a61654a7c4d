"""What the cluster service needs of a zraft client: `Store`, the subset of `cluster.Client` it calls.

`Client` satisfies it as it is, and so does cluster/service/aio.py's ThreadStore over an AsyncClient;
the unit tests give an in-memory store with a clock they control. Keeping the
service to this surface is what lets its liveness rules be tested without processes or sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from cluster.client.leases import Lease
from cluster.client.ranges import RangePage
from cluster.errors import ZraftError


class StoreWatch(Protocol):
    """What the service uses of a watch: the blocking Client's Watch, or cluster/service/aio.py's
    ThreadWatch over an AsyncWatch."""

    def next(self, timeout: float | None) -> dict[str, Any] | None: ...

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def __next__(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> StoreWatch: ...

    def __exit__(self, *exc: Any) -> None: ...


class Store(Protocol):
    timeout: float

    def get(self, key: str, serializable: bool = False, *, timeout: float | None = None) -> Any: ...

    def get_kv(
        self, key: str, serializable: bool = False, *, timeout: float | None = None
    ) -> dict[str, Any] | None: ...

    def put(self, key: str, value: Any, *, lease: int | None = None, timeout: float | None = None) -> int: ...

    def cas(self, key: str, expected: Any, new: Any, *, timeout: float | None = None) -> bool: ...

    def cas_delete(self, key: str, expected: Any, *, timeout: float | None = None) -> bool: ...

    def cas_revision(
        self, key: str, mod_revision: int, new: Any, *, timeout: float | None = None
    ) -> bool: ...

    def cas_delete_revision(self, key: str, mod_revision: int, *, timeout: float | None = None) -> bool: ...

    def range(
        self,
        prefix: str,
        limit: int = 0,
        serializable: bool = False,
        *,
        after: str = "",
        timeout: float | None = None,
    ) -> RangePage: ...

    def watch(
        self, key: str, prefix: bool = True, start_revision: int | None = None, *, window: int = 1000
    ) -> StoreWatch: ...

    def lease_grant(self, ttl: float, *, timeout: float | None = None) -> Lease: ...

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> float: ...

    def lease_keepalive_many(
        self, lease_ids: Sequence[int], *, timeout: float | None = None
    ) -> dict[int, float | ZraftError]: ...

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> int: ...
