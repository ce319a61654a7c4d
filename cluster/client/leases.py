"""Client-side leases: what a grant returns (`Lease`), what lease_info and lease_list answer
(`LeaseInfo`), and the background keepalive behind `Client.lease(ttl)` (`KeptLease`).

A lease lives on the leader's clock: the client only renews it. `KeptLease` renews every TTL/3 from a
daemon thread, so a renewal may fail twice before the lease is at risk; it stops by itself when the
cluster says the lease is gone (LeaseNotFound/LeaseExpired: `lost` is set), and revokes the lease when
the `with` block ends. When the process ends, the renewals stop and the cluster expires the lease.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from cluster.errors import LeaseNotFound, ZraftError


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


class KeptLease:
    """A lease kept alive by a daemon thread until close() (or the end of the `with` block) revokes it."""

    def __init__(
        self,
        lease: Lease,
        keepalive: Callable[[int, float], float],
        revoke: Callable[[int], object],
    ) -> None:
        self.lease = lease
        self.id = lease.id
        self.ttl = lease.ttl
        self.lost: ZraftError | None = None  # set when the cluster said the lease is gone
        self.renewals = 0
        self._keepalive = keepalive
        self._revoke = revoke
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"zraft-lease-{lease.id}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self.lost is None and not self._stop.is_set()

    def _run(self) -> None:
        interval = self.ttl / 3
        while not self._stop.wait(interval):
            try:
                self._keepalive(self.id, interval)
                self.renewals += 1
                interval = self.ttl / 3
            except LeaseNotFound as exc:
                self.lost = exc
                return
            except ZraftError:  # no answer in time: try again soon, well within the TTL
                interval = self.ttl / 9

    def close(self, revoke: bool = True) -> None:
        """Stop renewing; revoke the lease (deleting its keys) unless revoke=False or it is gone."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if revoke and self.lost is None:
            with contextlib.suppress(LeaseNotFound):  # expired meanwhile: nothing left to revoke
                self._revoke(self.id)

    def __enter__(self) -> KeptLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
