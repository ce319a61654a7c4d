"""Leases: the replicated lease table (`LeaseTable`, part of the state machine) and the leader's in-memory
expiry tracker (`LeaseTracker`, owned by the KV service). etcd v3's lease semantics are the reference.

The table is changed only by applied log entries (grant, revoke, attach a key through put_lease, detach
a key that is overwritten or deleted): it knows each lease's granted TTL and keys, never a deadline, so
apply stays deterministic (DESIGN.md rule 5). Lease ids are given by the table itself, in grant order.

The tracker is what decides expiry, on the leader only, by the leader's monotonic clock: keepalives are
not log entries, they move a deadline in the tracker's memory. A lease past its deadline is revoked
through one log entry that the leader proposes (cluster/kv/service.py). When a node becomes leader it
gives every lease a fresh TTL plus its election timeout before it may expire anything: the previous
leader may have renewed a lease just before it was lost, and only that leader's memory knew it. So a
leader change can make a lease live longer, never shorter.

Checkpoints (as etcd's): so that a long lease whose owner is gone does not live forever across leader
changes that come faster than its TTL, the leader writes the remaining TTL of long leases (TTL above
twice the checkpoint interval) into the log every checkpoint interval; a new leader then starts such a
lease from its checkpointed remaining TTL instead of the whole TTL plus the election timeout. That is
safe because a keepalive of a lease with a checkpoint (applied, or proposed and not yet applied) first
resets the checkpoint through the log (one entry, answered once applied): so the checkpoint, when there
is one, is the deadline of an earlier leader that no answered renewal has moved, measured before the
new leader took over. No grace on top: with leader changes faster than the grace, it would never end.

Log time: the leader stamps what it proposes for leases with a cluster "log time" in milliseconds
(`LogClock`). A new leader continues from the latest stamp it has applied, and the state machine keeps
the largest stamp it has applied, so the log time never goes backwards across leader changes. Expiry is
never judged by the log time (the monotonic clocks of different nodes are not comparable); the stamps
say when a lease was granted, in a time every replica agrees on.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from cluster.kv.ops import Invalid, check_key, check_uint

DEFAULT_MAX_LEASES = 10_000
DEFAULT_MAX_KEYS_PER_LEASE = 10_000
MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000  # ten years: anything longer is a mistake


@dataclass(slots=True)
class Lease:
    ttl_ms: int  # the granted TTL
    granted_at: int  # log time (ms) of the grant
    keys: set[str] = field(default_factory=set)
    remaining_ms: int | None = None  # the last checkpoint's remaining TTL; None: the whole TTL


class LeaseTable:
    """The leases of one replica, changed only by apply. Bounded: max_leases leases, max_keys_per_lease
    keys each (both decided by apply, so every replica must use the same bounds)."""

    __slots__ = (
        "_by_key",
        "_leases",
        "_max_keys",
        "_max_leases",
        "changed",
        "generation",
        "log_time",
        "next_id",
    )

    def __init__(
        self, max_leases: int = DEFAULT_MAX_LEASES, max_keys: int = DEFAULT_MAX_KEYS_PER_LEASE
    ) -> None:
        self._max_leases = max_leases
        self._max_keys = max_keys
        self._leases: dict[int, Lease] = {}
        self._by_key: dict[str, int] = {}
        self.next_id = 1
        self.log_time = 0  # the largest stamp applied (ms)
        # Lease ids granted or removed since the tracker last looked (at most max_leases + removed ones it
        # has not seen: cleared by the service every turn); a restore bumps the generation instead.
        self.changed: set[int] = set()
        self.generation = 0

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def ids(self) -> list[int]:
        return sorted(self._leases)

    def lease_of(self, key: str) -> int | None:
        return self._by_key.get(key)

    def advance_time(self, stamp: int) -> None:
        if stamp > self.log_time:
            self.log_time = stamp

    def grant(self, ttl_ms: int, stamp: int) -> int | str:
        """The new lease's id, or the reason it cannot be granted."""
        if len(self._leases) >= self._max_leases:
            return f"too many leases ({self._max_leases}); revoke some first"
        lease_id = self.next_id
        self.next_id += 1
        self._leases[lease_id] = Lease(ttl_ms, stamp)
        self.changed.add(lease_id)
        return lease_id

    def remove(self, lease_id: int) -> list[str]:
        """Forget the lease; its keys (sorted), which the caller deletes."""
        lease = self._leases.pop(lease_id)
        for key in lease.keys:
            del self._by_key[key]
        self.changed.add(lease_id)
        return sorted(lease.keys)

    def checkpoint(self, remaining: list[list[int]]) -> None:
        """Record each [id, remaining_ms] of leases that still exist (a remaining at or above the TTL is
        no checkpoint at all)."""
        for lease_id, left in remaining:
            lease = self._leases.get(lease_id)
            if lease is not None:
                lease.remaining_ms = left if left < lease.ttl_ms else None

    def can_attach(self, lease_id: int, key: str) -> str | None:
        lease = self._leases.get(lease_id)
        if lease is None:
            return None
        if key not in lease.keys and len(lease.keys) >= self._max_keys:
            return f"lease {lease_id} holds too many keys ({self._max_keys})"
        return None

    def attach(self, key: str, lease_id: int) -> None:
        self.detach(key)
        self._leases[lease_id].keys.add(key)
        self._by_key[key] = lease_id

    def detach(self, key: str) -> None:
        lease_id = self._by_key.pop(key, None)
        if lease_id is not None:
            self._leases[lease_id].keys.discard(key)

    def detach_missing(self, prefix: str, exists: Any) -> None:
        """Detach every attached key under `prefix` for which exists(key) is false (after a del_prefix)."""
        for key in [k for k in self._by_key if k.startswith(prefix) and not exists(k)]:
            self.detach(key)

    # -- snapshots -------------------------------------------------------------------------------------

    def encoded(self) -> list[Any]:
        """[next_id, log_time, [[id, ttl_ms, granted_at, [key, ...], remaining_ms | None], ...]] sorted by
        id and key."""
        leases = [
            [i, le.ttl_ms, le.granted_at, sorted(le.keys), le.remaining_ms]
            for i, le in sorted(self._leases.items())
        ]
        return [self.next_id, self.log_time, leases]

    def replace(self, state: tuple[int, int, dict[int, Lease]]) -> None:
        self.next_id, self.log_time, self._leases = state
        self._by_key = {key: i for i, lease in self._leases.items() for key in lease.keys}
        self.changed = set()
        self.generation += 1


def decode_leases(raw: Any, keys: set[str]) -> tuple[int, int, dict[int, Lease]]:
    """Validate the encoded form of LeaseTable.encoded(); every key must exist. Raises Invalid."""
    if type(raw) is not list or len(raw) != 3 or type(raw[2]) is not list:
        raise Invalid("leases are malformed")
    next_id = check_uint(raw[0], "next lease id")
    log_time = check_uint(raw[1], "log time")
    leases: dict[int, Lease] = {}
    attached: set[str] = set()
    for item in raw[2]:
        if type(item) is not list or len(item) != 5 or type(item[3]) is not list:
            raise Invalid("lease is malformed")
        remaining = None if item[4] is None else check_uint(item[4], "lease remaining ttl")
        lease_id = check_uint(item[0], "lease id")
        if not 0 < lease_id < next_id or lease_id in leases:
            raise Invalid("lease ids must be unique and below the next id")
        ttl = check_uint(item[1], "lease ttl")
        granted = check_uint(item[2], "lease grant time")
        lease_keys: set[str] = set()
        for key in item[3]:
            check_key(key)
            if key in attached or key not in keys:
                raise Invalid("a lease key is attached twice or does not exist")
            attached.add(key)
            lease_keys.add(key)
        leases[lease_id] = Lease(ttl, granted, lease_keys, remaining)
    return next_id, log_time, leases


class LogClock:
    """The leader's log time (ms): its monotonic clock, continued from the latest applied stamp."""

    __slots__ = ("_base_log", "_base_now", "_last", "_term")

    def __init__(self) -> None:
        self._term = -1
        self._base_log = 0
        self._base_now = 0.0
        self._last = 0

    def stamp(self, term: int, now: float, applied_log_time: int) -> int:
        """A stamp for an entry proposed in `term` at monotonic `now`; never below one given before nor
        below the latest applied stamp."""
        if term != self._term:  # a new leadership: continue from what this node has applied
            self._term = term
            self._base_log = max(applied_log_time, self._last)
            self._base_now = now
        stamp = max(self._last, applied_log_time, self._base_log + int((now - self._base_now) * 1000))
        self._last = stamp
        return stamp


class LeaseTracker:
    """The leader's deadlines of the leases (monotonic seconds). No I/O; time is handed in."""

    def __init__(self, election_timeout: float) -> None:
        self._grace = election_timeout
        self._deadlines: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []
        self._revoking: dict[int, float] = {}  # lease id -> when its revoke was proposed
        self._term = -1
        self._generation = -1

    def __len__(self) -> int:
        return len(self._deadlines)

    def deadline(self, lease_id: int) -> float | None:
        return self._deadlines.get(lease_id)

    def remaining(self, lease_id: int, now: float) -> float | None:
        deadline = self._deadlines.get(lease_id)
        return None if deadline is None else max(0.0, deadline - now)

    def expired(self, lease_id: int, now: float) -> bool:
        deadline = self._deadlines.get(lease_id)
        return deadline is not None and deadline <= now

    def sync(self, table: LeaseTable, term: int, now: float) -> None:
        """Follow the table while leading `term`; a new term or a restored table starts afresh, giving
        every lease its full TTL plus the election timeout."""
        if term != self._term or table.generation != self._generation:
            self._term = term
            self._generation = table.generation
            self._deadlines.clear()
            self._heap.clear()
            self._revoking.clear()
            table.changed.clear()
            for lease_id in table.ids():
                lease = table.get(lease_id)
                assert lease is not None
                if lease.remaining_ms is None:
                    self._set(lease_id, now + lease.ttl_ms / 1000 + self._grace)
                else:  # the deadline an earlier leader had, measured before now: no grace needed
                    self._set(lease_id, now + lease.remaining_ms / 1000)
            return
        if table.changed:
            for lease_id in table.changed:
                lease = table.get(lease_id)
                if lease is None:
                    self._deadlines.pop(lease_id, None)
                    self._revoking.pop(lease_id, None)
                elif lease_id not in self._deadlines:
                    # granted in this term, or in an earlier one and applied only now: the grace covers
                    # the time the grant spent in the log
                    self._set(lease_id, now + lease.ttl_ms / 1000 + self._grace)
            table.changed.clear()

    def forget(self) -> None:
        """Not the leader any more: a later leadership starts afresh."""
        self._term = -1
        self._deadlines.clear()
        self._heap.clear()
        self._revoking.clear()

    def keepalive(self, lease_id: int, ttl: float, now: float) -> bool:
        """Renew a tracked, unexpired lease for `ttl` from now; False if it is unknown or expired."""
        deadline = self._deadlines.get(lease_id)
        if deadline is None or deadline <= now:
            return False
        self._set(lease_id, now + ttl)
        return True

    def due(self, now: float, retry_after: float) -> list[int]:
        """Leases past their deadline whose revoke is not in flight (or was proposed more than
        `retry_after` ago and never applied), oldest deadline first; they are marked as in flight."""
        heap, out = self._heap, []
        while heap and heap[0][0] <= now:
            deadline, lease_id = heapq.heappop(heap)
            if self._deadlines.get(lease_id) == deadline:
                out.append(lease_id)
        for lease_id, proposed in list(self._revoking.items()):
            if now - proposed >= retry_after and lease_id in self._deadlines:
                out.append(lease_id)
        out = list(dict.fromkeys(out))
        for lease_id in out:
            self._revoking[lease_id] = now
        return out

    def _set(self, lease_id: int, deadline: float) -> None:
        self._deadlines[lease_id] = deadline
        self._revoking.pop(lease_id, None)
        heapq.heappush(self._heap, (deadline, lease_id))
        if len(self._heap) > 2 * len(self._deadlines) + 64:  # keepalives leave stale heap entries
            self._heap = [(d, i) for i, d in self._deadlines.items()]
            heapq.heapify(self._heap)
