"""Liveness: when a record is marked OFFLINE, when it is deleted, and who writes either.

The leader's clock decides, through two leases per registrant (cluster/service/records.py has the keys):

1. A registrant's alive key lives on its lease (TTL = the heartbeat timeout, renewed every interval). A
   registrant silent past the timeout loses the lease by the leader's monotonic clock; the leader's revoke
   deletes the alive key (a DELETE revision every watcher sees). No wall clocks are compared anywhere.
2. Every ClusterService with monitor=True watches the alive keys. On such a DELETE it runs `alive_gone`:
   read the record; if it is ONLINE and the alive key is (still) absent, grant a lease of TTL = the grace
   period, put the grace key on it, and compare-and-swap the record (by the mod revision read) to the
   same value with STATUS=OFFLINE. Only STATUS changes: host, port and every other field stay as the
   registrant wrote them.
3. When the grace lease ends (the leader's clock again), its key's DELETE makes monitors run `grace_over`:
   if the record is still OFFLINE and neither an alive key nor a newer grace key exists, delete the record
   with a compare-and-delete on the mod revision read.

Why racing monitors (and a registrant coming back) stay correct:
- Every write is conditional on the mod revision of the record read (a compare-and-swap by revision: any
  write in between, even one of an equal value, fails it), so of several monitors at most one OFFLINE
  write succeeds; the others fail and re-read an OFFLINE record and stop. Racing monitors may each put the
  grace key; a put moves the key to the newer lease, so one grace period runs (from the later put) and the
  older grace lease ends owning nothing.
- A registrant always writes its alive key before its record. If a monitor read the record at r, saw the
  alive key absent at a, and swapped at s (r < a < s): a registrant that came back either wrote its record
  before s, so the swap fails (the revision moved), or wrote it after s, so its ONLINE write wins; it cannot
  have written the record before r with the key absent at a, unless its lease ended again (then OFFLINE is
  right). A heartbeat before the deletion therefore brings the record back ONLINE, and the stale grace key's
  end later finds an ONLINE record and does nothing.
- A restart under the same id puts a new alive key (moving it to its new lease) and a whole new record; the
  old lease's end deletes nothing, and the old incarnation, if still running, sees another owner on its
  alive key and stops as TakenOver.

Every ClusterService watching is one more monitor; so that one death does not cost a write from each, a
monitor acts after `stagger x rank`, its rank among live monitors in an order hashed from the record's key
(different for each record), and re-reads before writing: normally only rank 0 writes. `check` applies the
same rules to each record when a monitor starts or its watch had to be restarted (a record ONLINE without
alive key, or OFFLINE without alive or grace key, whose DELETE event it may have missed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from cluster.service.records import (
    OFFLINE,
    ONLINE,
    RECORD_KINDS,
    STATUS,
    alive_key,
    grace_key,
    record_key,
)
from cluster.service.store import Store

ATTEMPTS = 5
MIN_INTERVAL = 0.05


def check_timing(interval: float, timeout: float, grace: float) -> tuple[float, float, float]:
    """The heartbeat interval, timeout and grace period to use: the timeout is forced to at least three
    intervals (with a warning), since a lease renewed every interval must survive two lost renewals."""
    if not interval >= MIN_INTERVAL or not timeout > 0 or not grace > 0:
        raise ValueError("interval (>= 0.05 s), timeout and grace must be positive numbers of seconds")
    if timeout < 3 * interval:
        logger.warning(
            "heartbeat timeout {:g}s is less than 3 x the interval {:g}s: using {:g}s",
            timeout,
            interval,
            3 * interval,
        )
        timeout = 3 * interval
    return interval, timeout, grace


def monitor_rank(own: str, monitors: list[str], key: str) -> int:
    """Our position among the live monitors' tokens, in an order hashed with `key` (a per-record order)."""

    def order(token: str) -> bytes:
        return hashlib.sha256(f"{key}\0{token}".encode()).digest()

    ranked = sorted(set(monitors) | {own}, key=order)
    return ranked.index(own)


class LivenessMonitor:
    """Applies the rules above through a Store. Each method is one decision, re-read from the store, and
    says what it did (for logs and tests). NoAnswer from the store propagates: the caller retries."""

    def __init__(
        self, store: Store, grace: float, token: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.grace = grace
        self.token = token
        self.clock = clock
        self.marked = 0
        self.deleted = 0

    def alive_gone(self, kind: str, ident: str) -> str:
        """The alive key of (kind, ident) was deleted: mark the record OFFLINE if it is still ONLINE and
        the registrant has not come back."""

        def mark(key: str, current: dict[str, Any], mod_revision: int) -> bool:
            lease = self.store.lease_grant(self.grace)
            self.store.put(grace_key(kind, ident), {"since": self.clock(), "by": self.token}, lease=lease.id)
            if not self.store.cas_revision(key, mod_revision, {**current, STATUS: OFFLINE}):
                return False
            self.marked += 1
            logger.info(
                "{} marked OFFLINE (lease ended); deleted in {:g}s unless it returns", key, self.grace
            )
            return True

        return self._decide(kind, ident, ONLINE, (), mark, "marked offline")

    def grace_over(self, kind: str, ident: str) -> str:
        """The grace key of (kind, ident) was deleted: delete the record if it is still OFFLINE and nobody
        is alive under its id and no newer grace period runs."""

        def delete(key: str, _current: dict[str, Any], mod_revision: int) -> bool:
            if not self.store.cas_delete_revision(key, mod_revision):
                return False
            self.deleted += 1
            logger.info("{} deleted: OFFLINE for its whole grace period", key)
            return True

        grace = ((grace_key(kind, ident), "grace period running"),)
        return self._decide(kind, ident, OFFLINE, grace, delete, "deleted")

    def _decide(
        self,
        kind: str,
        ident: str,
        status: str,
        blockers: tuple[tuple[str, str], ...],
        write: Callable[[str, dict[str, Any], int], bool],
        done: str,
    ) -> str:
        """The loop both rules share: read the record (with its mod revision); stop unless its STATUS is
        `status`, the alive key is absent and no key of `blockers` exists (each with its reason); then
        `write`, conditional on that mod revision. A failed write means the record changed since the
        read: read again, at most ATTEMPTS times."""
        if kind not in RECORD_KINDS:
            return "not a record kind"
        key = record_key(kind, ident)
        for _ in range(ATTEMPTS):
            kv = self.store.get_kv(key)
            if kv is None or not isinstance(kv.get("value"), dict):
                return "no record"
            current: dict[str, Any] = kv["value"]
            if current.get(STATUS) != status:
                return f"not {status.lower()}"
            if self.store.get(alive_key(kind, ident)) is not None:
                return "alive again"
            for blocker, reason in blockers:
                if self.store.get(blocker) is not None:
                    return reason
            if write(key, current, kv["mod_revision"]):
                return done
        return "record kept changing"

    def check(self, kind: str, ident: str) -> str:
        """Apply whichever rule fits the record's status now (for a sweep, after a restarted watch)."""
        record = self.store.get(record_key(kind, ident))
        if not isinstance(record, dict):
            return "no record"
        if record.get(STATUS) == ONLINE:
            return self.alive_gone(kind, ident)
        return self.grace_over(kind, ident)
