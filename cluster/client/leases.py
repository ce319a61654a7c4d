"""Client-side leases: what a grant returns (`Lease`), what lease_info and lease_list answer
(`LeaseInfo`), and the background keepalive behind `Client.lease(ttl)` (`KeptLease`, a daemon thread) and
`AsyncClient.lease(ttl)` (`AsyncKeptLease`, a task of the client's event loop).

A lease lives on the leader's clock: the client only renews it. Both keepers follow one `Renewals`
schedule: renew every TTL/3, so a renewal may fail twice before the lease is at risk; after a renewal
that got no answer, try again after TTL/9; stop by themselves when the cluster says the lease is gone
(LeaseNotFound/LeaseExpired: `lost` is set) or the client was closed; revoke the lease when the block
ends. When the process ends, the renewals stop and the cluster expires the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from cluster.errors import ClientClosed, LeaseNotFound, ZraftError


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease: its id and the TTL (seconds) the cluster granted."""

    id: int
    ttl: float


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as the leader sees it: the granted TTL, the seconds left by the leader's clock, and (from
    lease_info only) its keys. Just after a grant or a leader change the seconds left may exceed the
    granted TTL by up to an election timeout: the grace a lease gets then (cluster/kv/leases.py)."""

    id: int
    granted_ttl: float
    ttl: float
    keys: tuple[str, ...] = ()


def lease_info_from(result: dict[str, Any]) -> LeaseInfo:
    keys = tuple(str(k) for k in result.get("keys") or ())
    return LeaseInfo(int(result["id"]), float(result["granted_ttl"]), float(result["ttl"]), keys)


class Renewals:
    """The renewal schedule and outcome both keepers share (no clock, no thread: they do the waiting)."""

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.lost: ZraftError | None = None  # set when the cluster said the lease is gone
        self.renewals = 0
        self.stopped = False  # no more renewals: closed, lost, or the client closed

    @property
    def id(self) -> int:
        return self._granted().id

    @property
    def ttl(self) -> float:
        return self._granted().ttl

    @property
    def alive(self) -> bool:
        """Still being renewed (and never reported gone by the cluster)."""
        return self.lease is not None and self.lost is None and not self.stopped

    def first_wait(self) -> float:
        return self.ttl / 3

    def after(self, error: ZraftError | None) -> float | None:
        """The wait before the next renewal, given how the last one ended; None: stop renewing."""
        if error is None:
            self.renewals += 1
            return self.ttl / 3
        if isinstance(error, LeaseNotFound):
            self.lost = error
            return None
        if isinstance(error, ClientClosed):
            return None
        return self.ttl / 9  # no answer in time: try again soon, well within the TTL

    def should_revoke(self, revoke: bool) -> bool:
        return revoke and self.lease is not None and self.lost is None

    def _granted(self) -> Lease:
        if self.lease is None:
            raise RuntimeError("the lease is not granted yet: use `async with client.lease(ttl)`")
        return self.lease


class KeptLease(Renewals):
    """A lease kept alive by a daemon thread until close() (or the end of the `with` block) revokes it."""

    def __init__(
        self,
        lease: Lease,
        keepalive: Callable[[int, float], float],
        revoke: Callable[[int], object],
    ) -> None:
        super().__init__()
        self.lease = lease
        self._keepalive = keepalive
        self._revoke = revoke
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"zraft-lease-{lease.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval: float | None = self.first_wait()
        while interval is not None and not self._stop.wait(interval):
            error: ZraftError | None = None
            try:
                self._keepalive(self.id, interval)
            except ZraftError as exc:
                error = exc
            interval = self.after(error)
        self.stopped = True

    def close(self, revoke: bool = True) -> None:
        """Stop renewing; revoke the lease (deleting its keys) unless revoke=False or it is gone. A closed
        client cannot revoke: the lease then expires by itself."""
        self._stop.set()
        self.stopped = True
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if self.should_revoke(revoke):
            with contextlib.suppress(LeaseNotFound, ClientClosed):  # expired meanwhile: nothing to revoke
                self._revoke(self.id)

    def __enter__(self) -> KeptLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncKeptLease(Renewals):
    """A lease granted when the `async with` block starts (or when awaited), kept alive by a task of the
    client's event loop, revoked when the block ends (or by `await close()`).

        async with client.lease(10) as lease:
            await client.put("servers/a", {...}, lease=lease.id)
    """

    def __init__(
        self,
        grant: Callable[[], Awaitable[Lease]],
        keepalive: Callable[[int, float], Awaitable[float]],
        revoke: Callable[[int], Awaitable[object]],
        on_close: Callable[[AsyncKeptLease], None] = lambda kept: None,
    ) -> None:
        super().__init__()
        self._grant = grant
        self._keepalive = keepalive
        self._revoke = revoke
        self._on_close = on_close
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> AsyncKeptLease:
        """Grant the lease and start renewing it (once; later calls return at once)."""
        if self.lease is None:
            self.lease = await self._grant()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"zraft-lease-{self.lease.id}"
            )
        return self

    def __await__(self) -> Generator[Any, None, AsyncKeptLease]:
        return self.start().__await__()

    async def _run(self) -> None:
        interval: float | None = self.first_wait()
        try:
            while interval is not None:
                await asyncio.sleep(interval)
                error: ZraftError | None = None
                try:
                    await self._keepalive(self.id, interval)
                except ZraftError as exc:
                    error = exc
                interval = self.after(error)
        finally:
            self.stopped = True

    def stop(self) -> None:
        """Stop renewing, without revoking (the client is closing: the lease will expire)."""
        self.stopped = True
        if self._task is not None:
            self._task.cancel()

    async def close(self, revoke: bool = True) -> None:
        """Stop renewing; revoke the lease (deleting its keys) unless revoke=False or it is gone."""
        self.stop()
        self._on_close(self)
        if self._task is not None:  # gather: our own cancellation still reaches us, the task's does not
            await asyncio.gather(self._task, return_exceptions=True)
        if self.should_revoke(revoke):
            with contextlib.suppress(LeaseNotFound, ClientClosed):
                await self._revoke(self.id)

    async def __aenter__(self) -> AsyncKeptLease:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
