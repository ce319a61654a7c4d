"""An in-memory stand-in for the cluster, for the cluster service's unit tests: the KV calls the service
makes (cluster/service/store.py's Store), with leases that expire by a clock the test moves.

It follows the real KV's rules where the service depends on them: a compare-and-swap compares whole values,
a put with a lease moves the key to that lease and a plain put detaches it, a lease's end deletes its keys
(each a revision), a keepalive of an ended lease raises LeaseNotFound, and every change is recorded as a
watch event would show it. `down = True` makes every call raise Unavailable (a cluster without quorum);
`before` runs a hook before a named call, to interleave another actor's steps into a decision.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from cluster.client.leases import Lease
from cluster.client.ranges import RangePage
from cluster.errors import LeaseNotFound, Unavailable, ZraftError


class ManualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class FakeStore:
    timeout = 1.0

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.revision = 0
        self.data: dict[str, dict[str, Any]] = {}  # key -> {"value", "mod_revision", "lease"}
        self.leases: dict[int, dict[str, Any]] = {}  # id -> {"ttl", "deadline"}
        self.next_lease = 1
        self.events: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.down = False
        self.before: dict[str, Callable[[], None]] = {}

    # --- plumbing -----------------------------------------------------------------------------------

    def _enter(self, name: str) -> None:
        hook = self.before.pop(name, None)
        if hook is not None:
            hook()
        if self.down:
            raise Unavailable(name, self.timeout, "no quorum (test)")
        self.calls.append(name)

    def _change(self, kind: str, key: str, value: Any) -> None:
        self.revision += 1
        self.events.append(
            {"type": kind, "key": key, "value": copy.deepcopy(value), "revision": self.revision}
        )

    def advance(self, seconds: float) -> None:
        """Move the clock; leases past their deadline end, deleting their keys (the leader's revoke)."""
        self.clock.now += seconds
        for lease_id in sorted(self.leases):
            if self.leases[lease_id]["deadline"] <= self.clock.now:
                self._end_lease(lease_id)

    def _end_lease(self, lease_id: int) -> int:
        del self.leases[lease_id]
        keys = sorted(k for k, rec in self.data.items() if rec["lease"] == lease_id)
        for key in keys:
            del self.data[key]
            self._change("DELETE", key, None)
        return len(keys)

    # --- the Store calls ----------------------------------------------------------------------------

    def get(self, key: str, serializable: bool = False, *, timeout: float | None = None) -> Any:
        self._enter("get")
        rec = self.data.get(key)
        return None if rec is None else copy.deepcopy(rec["value"])

    def get_kv(self, key: str, serializable: bool = False, *, timeout: float | None = None) -> Any:
        self._enter("get_kv")
        rec = self.data.get(key)
        if rec is None:
            return None
        return {"key": key, "value": copy.deepcopy(rec["value"]), "mod_revision": rec["mod_revision"]}

    def put(self, key: str, value: Any, *, lease: int | None = None, timeout: float | None = None) -> int:
        self._enter("put")
        if lease is not None and lease not in self.leases:
            raise LeaseNotFound("put", f"lease {lease} not found")
        self._change("PUT", key, value)
        self.data[key] = {"value": copy.deepcopy(value), "mod_revision": self.revision, "lease": lease}
        return self.revision

    def cas(self, key: str, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        self._enter("cas")
        rec = self.data.get(key)
        if (rec["value"] if rec else None) != expected:
            return False
        self._change("PUT", key, new)
        self.data[key] = {"value": copy.deepcopy(new), "mod_revision": self.revision, "lease": None}
        return True

    def cas_delete(self, key: str, expected: Any, *, timeout: float | None = None) -> bool:
        self._enter("cas_delete")
        rec = self.data.get(key)
        if (rec["value"] if rec else None) != expected:
            return False
        if rec is not None:
            del self.data[key]
            self._change("DELETE", key, None)
        return True

    def cas_revision(self, key: str, mod_revision: int, new: Any, *, timeout: float | None = None) -> bool:
        self._enter("cas_revision")
        rec = self.data.get(key)
        if (rec["mod_revision"] if rec else 0) != mod_revision:
            return False
        self._change("PUT", key, new)
        self.data[key] = {"value": copy.deepcopy(new), "mod_revision": self.revision, "lease": None}
        return True

    def cas_delete_revision(self, key: str, mod_revision: int, *, timeout: float | None = None) -> bool:
        self._enter("cas_delete_revision")
        rec = self.data.get(key)
        if (rec["mod_revision"] if rec else 0) != mod_revision:
            return False
        if rec is not None:
            del self.data[key]
            self._change("DELETE", key, None)
        return True

    def range(
        self,
        prefix: str,
        limit: int = 0,
        serializable: bool = False,
        *,
        after: str = "",
        timeout: float | None = None,
    ) -> RangePage:
        self._enter("range")
        keys = sorted(k for k in self.data if k.startswith(prefix) and k > after)
        kvs = [{"key": k, "value": copy.deepcopy(self.data[k]["value"])} for k in keys]
        return RangePage(kvs, False, self.revision)

    def watch(
        self, key: str, prefix: bool = True, start_revision: int | None = None, *, window: int = 1000
    ) -> Any:
        raise NotImplementedError("the unit tests drive the monitor from FakeStore.events")

    def lease_grant(self, ttl: float, *, timeout: float | None = None) -> Lease:
        self._enter("lease_grant")
        lease_id = self.next_lease
        self.next_lease += 1
        self.leases[lease_id] = {"ttl": ttl, "deadline": self.clock.now + ttl}
        self.revision += 1
        return Lease(lease_id, ttl)

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> float:
        self._enter("lease_keepalive")
        lease = self.leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound("lease_keepalive", f"lease {lease_id} not found")
        lease["deadline"] = self.clock.now + lease["ttl"]
        return float(lease["ttl"])

    def lease_keepalive_many(
        self, lease_ids: Sequence[int], *, timeout: float | None = None
    ) -> dict[int, float | ZraftError]:
        self._enter("lease_keepalive_many")
        out: dict[int, float | ZraftError] = {}
        for lease_id in lease_ids:
            try:
                out[lease_id] = self.lease_keepalive(lease_id)
            except ZraftError as exc:
                out[lease_id] = exc
        return out

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> int:
        self._enter("lease_revoke")
        if lease_id not in self.leases:
            raise LeaseNotFound("lease_revoke", f"lease {lease_id} not found")
        return self._end_lease(lease_id)
