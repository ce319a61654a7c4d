"""One registration kept alive: its lease, its alive key and its record (a server, a process, or a bare
event listener), and the writes a heartbeat makes.

    establish()        grant a lease (TTL = the heartbeat timeout), put the alive key on it, write the record.
                       The first time, the record is written whole (a restart under the same id takes the
                       record over: new host, port, start time, meta); after a lost lease, ONLINE and the
                       usage are merged into what is there (keeping the platform's updates).
    keepalive()        renew the lease (a query the leader answers after confirming its leadership; no log
                       entry). False when the cluster says the lease has ended: establish() again.
    heartbeat(usage)   merge usage, LATEST_HEARTBEAT and STATUS=ONLINE into the record with a compare-and-
                       swap against the value last written (one log entry; a read only when someone else
                       wrote in between). When the record is gone (deleted after its grace period) it is
                       written again; when our alive key is gone the registration is established again;
                       when another incarnation owns the alive key, this one was taken over: TakenOver.
    deregister()       delete the record (only if nobody took it over), then revoke the lease.

The alive key is always written before the record, and a monitor marks a record OFFLINE only after seeing
its alive key absent and with a compare-and-swap on the value it read: cluster/service/liveness.py argues
why that never marks a live registrant for good.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from cluster.errors import LeaseNotFound, Rejected, ZraftError
from cluster.service.records import (
    CPU_CAPACITY,
    CPU_USED,
    LATEST_HEARTBEAT,
    LISTENER,
    MEMORY_CAPACITY,
    MEMORY_USED,
    ONLINE,
    STATUS,
    alive_key,
    merged,
    record_key,
)
from cluster.service.store import Store

CAS_ATTEMPTS = 20
USAGE_STEP = 0.02  # a heartbeat writes usage that moved by 2% of its capacity (CPU or memory) or more


class TakenOver(Rejected):
    """Another process registered under this id: this registration stopped (it no longer heartbeats)."""

    def __init__(self, name: str, owner: str) -> None:
        super().__init__("heartbeat", f"{name} was taken over by another incarnation ({owner})")


class RecordNotFound(Rejected):
    """The record to update does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__("update", f"no record {key}")


def usage_moved(written: dict[str, Any], usage: dict[str, Any]) -> bool:
    """Whether `usage` differs from the usage on record by USAGE_STEP of a capacity or more (a changed
    capacity, or a field not on record, counts as moved)."""
    for used, capacity in ((CPU_USED, CPU_CAPACITY), (MEMORY_USED, MEMORY_CAPACITY)):
        if used not in usage:
            continue
        old, new, cap = written.get(used), usage[used], usage.get(capacity)
        if (
            written.get(capacity) != cap
            or not isinstance(old, int | float)
            or not isinstance(cap, int | float)
        ):
            return True
        if abs(new - old) >= USAGE_STEP * cap:
            return True
    return False


def merge_record(store: Store, key: str, fields: dict[str, Any], known: Any = None) -> dict[str, Any]:
    """Merge `fields` into the record at `key` with compare-and-swap (first against `known`, the value last
    seen, to save a read); returns the value written. RecordNotFound when there is no record."""
    current = known
    for _ in range(CAS_ATTEMPTS):
        if current is None:
            current = store.get(key)
            if current is None:
                raise RecordNotFound(key)
        new = merged(current, fields)
        if store.cas(key, current, new):
            return new
        current = None
    raise Rejected("update", f"{key} kept changing: {CAS_ATTEMPTS} compare-and-swaps failed")


class Registration:
    """One registrant's lease, alive key and record. Its methods do blocking store calls: the service runs
    them on its heartbeat thread (keepalive) and its write queue (the writes)."""

    def __init__(
        self,
        store: Store,
        kind: str,
        ident: str,
        record: dict[str, Any] | None,
        *,
        ttl: float,
        token: str,
        events_url: str | None,
        events_key: str | None = None,
        monitor: bool,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.kind = kind
        self.ident = ident
        self.record = record  # the fields stated at registration (None for a LISTENER)
        self.ttl = ttl
        self.token = token
        self.events_url = events_url
        self.events_key = events_key  # the event socket's CURVE public key (None: plaintext)
        self.monitor = monitor
        self.clock = clock
        self.lease_id: int | None = None
        self.written: dict[str, Any] | None = None  # the record value we last wrote
        self.established = False
        self.taken_over: str | None = None
        self.lease_lost = 0  # how many times the lease had ended and the registration was re-established

    @property
    def name(self) -> str:
        return record_key(self.kind, self.ident)

    def alive_value(self, lease_id: int) -> dict[str, Any]:
        return {
            "owner": self.token,
            "lease": lease_id,
            "events": self.events_url,
            **({"events_key": self.events_key} if self.events_key else {}),
            "monitor": self.monitor,
            "pid": os.getpid(),
        }

    def establish(self, usage: dict[str, Any]) -> None:
        """Grant a lease, put the alive key on it, then write the record (see the module docstring)."""
        lease = self.store.lease_grant(self.ttl)
        self.store.put(alive_key(self.kind, self.ident), self.alive_value(lease.id), lease=lease.id)
        self.lease_id = lease.id
        if self.record is not None:
            beat = {**usage, LATEST_HEARTBEAT: self.clock(), STATUS: ONLINE}
            if not self.established:
                value = {**self.record, **beat}
                self.store.put(self.name, value)
                self.written = value
            else:
                self._merge_or_recreate(beat, None)
        self.established = True

    def keepalive(self) -> bool:
        """Renew the lease; False when it has ended (LeaseNotFound). NoAnswer propagates."""
        if self.lease_id is None:
            return False
        try:
            self.store.lease_keepalive(self.lease_id)
        except LeaseNotFound:
            return False
        return True

    def renew(self) -> bool:
        """keepalive(), and when the lease has ended, forget it so the next heartbeat establishes the
        registration again. NoAnswer propagates (the lease outlives a cluster without a leader)."""
        if self.keepalive():
            return True
        self.lease_id = None
        return False

    def renewed(self, outcome: float | ZraftError | None) -> bool:
        """Take the outcome of this lease's keepalive from a batch (None: there was no lease to renew):
        True if renewed; False when the lease has ended (it is forgotten, so the next heartbeat establishes
        the registration again). Any other error of the keepalive is raised (NoAnswer: unknown)."""
        if outcome is None or isinstance(outcome, LeaseNotFound):
            self.lease_id = None
            return False
        if isinstance(outcome, ZraftError):
            raise outcome
        return True

    def write_due(self, usage: dict[str, Any], every: float) -> bool:
        """Whether this heartbeat should write the record: always when the registration must be (re-)
        established or has no value of ours on record; else when a usage field moved by USAGE_STEP of its
        capacity or more, or `every` seconds passed since LATEST_HEARTBEAT was last written. Otherwise the
        lease renewal alone keeps the registrant alive: no log entry."""
        if self.record is None:
            return not self.established or self.lease_id is None
        written = self.written
        if not self.established or self.lease_id is None or written is None or self.taken_over is not None:
            return True
        if written.get(STATUS) != ONLINE:
            return True
        last = written.get(LATEST_HEARTBEAT)
        if not isinstance(last, int | float) or self.clock() - last >= every:
            return True
        return usage_moved(written, usage)

    def heartbeat(self, usage: dict[str, Any]) -> None:
        """Write this heartbeat's usage and ONLINE into the record (see the module docstring)."""
        if self.taken_over is not None:
            raise TakenOver(self.name, self.taken_over)
        if not self.established or self.lease_id is None:
            self.establish(usage)
            return
        if self.record is None:
            return
        beat = {**usage, LATEST_HEARTBEAT: self.clock(), STATUS: ONLINE}
        if self.written is not None and self.store.cas(self.name, self.written, merged(self.written, beat)):
            self.written = merged(self.written, beat)
            return
        # Someone else wrote the record: make sure it is still ours and we are still alive.
        alive = self.store.get(alive_key(self.kind, self.ident))
        if alive is None:
            self.lease_lost += 1
            self.establish(usage)
            return
        if alive.get("owner") != self.token:
            self.taken_over = str(alive.get("owner"))
            raise TakenOver(self.name, self.taken_over)
        self._merge_or_recreate(beat, None)

    def _merge_or_recreate(self, beat: dict[str, Any], known: Any) -> None:
        assert self.record is not None
        try:
            self.written = merge_record(self.store, self.name, beat, known)
        except RecordNotFound:  # deleted after its grace period while we were away: write it again
            value = {**self.record, **beat}
            self.store.put(self.name, value)
            self.written = value

    def deregister(self) -> None:
        """Delete the record (unless another incarnation took it over), then revoke the lease."""
        if self.taken_over is None and self.record is not None:
            alive = self.store.get(alive_key(self.kind, self.ident))
            if alive is None or alive.get("owner") == self.token:
                current = self.store.get(self.name)
                if current is not None:
                    self.store.cas_delete(self.name, current)
        if self.lease_id is not None:
            with contextlib.suppress(LeaseNotFound):
                self.store.lease_revoke(self.lease_id)
            self.lease_id = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lease": self.lease_id,
            "established": self.established,
            "taken_over": self.taken_over,
            "lease_lost": self.lease_lost,
        }


def listener_registration(
    store: Store, ident: str, *, ttl: float, token: str, events_url: str, clock: Callable[[], float]
) -> Registration:
    """An alive key with an event address and no record (`cluster-ctl event listen`)."""
    return Registration(
        store, LISTENER, ident, None, ttl=ttl, token=token, events_url=events_url, monitor=False, clock=clock
    )
