"""Lease owners in the whole-cluster simulation, and the checks that hold leases to their promises.

Each owner grants a lease, attaches a key to it and keeps it alive (a keepalive every TTL/3) through the
simulated clients' path (ClientActor), under every fault the nemesis has; some owners stop renewing
during the fault phase, every owner stops at healing. `LeaseMonitor` checks, at the moment an entry is
first applied anywhere:

- safety: a lease is never revoked before invoke + TTL of its grant or of any keepalive that was
  answered OK (the leader renewed it at a time after the invocation, by its own clock);
- liveness: once healed, every lease whose owner stopped is revoked, and its key deleted, within
  TTL + a bound of the later of its owner's stop and the healing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.client import ClientActor, ClientOptions, Completion, Outcome
from actors.messages import ClientResponse
from cluster.client.commands import SESSION_HOOKS
from cluster.kv.machine import decode_result, encode_command, encode_query
from cluster.kv.ops import LEASE_EXPIRED_CODE, LEASE_NOT_FOUND_CODE, Invalid, parse_command

if TYPE_CHECKING:
    from tests.sim.harness import SimCluster


class LeaseViolation(AssertionError):
    pass


@dataclass(slots=True)
class LeaseMonitor:
    """What is known of each owned lease: until when it must live, and when it was revoked."""

    protected_until: dict[int, float] = field(default_factory=dict)
    revoked_at: dict[int, float] = field(default_factory=dict)
    renewals: int = 0
    expiries: int = 0

    def protect(self, lease_id: int, until: float) -> None:
        revoked = self.revoked_at.get(lease_id)
        if revoked is not None and revoked < until:
            raise LeaseViolation(f"lease {lease_id} was revoked at {revoked:.3f}, before {until:.3f}")
        self.protected_until[lease_id] = max(until, self.protected_until.get(lease_id, 0.0))

    def on_first_apply(self, command: bytes, now: float) -> None:
        try:
            op = parse_command(command)[3]
        except Invalid:
            return
        if op[0] != "lease_revoke" or op[1] in self.revoked_at:
            return
        lease_id = op[1]
        self.revoked_at[lease_id] = now
        self.expiries += 1
        until = self.protected_until.get(lease_id, 0.0)
        if now < until:
            raise LeaseViolation(
                f"lease {lease_id} revoked at {now:.3f}, but it was kept alive until {until:.3f}"
            )


class SimLeaseOwner:
    """Grants a lease, attaches its key, renews it every TTL/3 until it stops."""

    def __init__(self, cluster: SimCluster, index: int, monitor: LeaseMonitor) -> None:
        self.cluster = cluster
        self.monitor = monitor
        self.id = f"leaseowner{index}"
        self.key = f"lease{index}/k"
        rng = random.Random(cluster.rng.getrandbits(64))
        self.rng = rng
        self.ttl = 3 * cluster.options.raft.election_timeout  # the minimum the leader grants
        self.actor = ClientActor(
            client_id=self.id,
            nodes=cluster.all_names,
            session=0,
            rng=rng,
            options=ClientOptions(
                attempt_timeout=0.5, backoff_base=0.02, backoff_max=0.5, sessions=SESSION_HOOKS
            ),
        )
        opts = cluster.options
        # half the owners stop renewing during the fault phase; the others at healing
        self.stop_at = rng.uniform(opts.fault_time / 3, opts.fault_time) if index % 2 else float("inf")
        self.stopped_at: float | None = None
        self.lease_id: int | None = None
        self.leases: list[int] = []  # every lease this owner was granted
        self.open: dict[int, tuple[str, float]] = {}  # handle -> (what, invoked at)
        self.tick_token = 0

    @property
    def idle(self) -> bool:
        return not self.open

    def start(self) -> None:
        self.cluster.scheduler.after(self.rng.uniform(0, self.cluster.options.fault_time / 4), self._grant)

    def stop(self) -> None:
        if self.stopped_at is None:
            self.stopped_at = self.cluster.scheduler.now

    def _stopping(self) -> bool:
        if self.cluster.scheduler.now >= self.stop_at or self.cluster.healing:
            self.stop()
        return self.stopped_at is not None

    def _grant(self) -> None:
        if self._stopping():
            return
        now = self.cluster.scheduler.now
        timeout = self.cluster.options.client_timeout
        handle = self.actor.write(
            lambda s, q, f: encode_command(s, q, f, ["lease_grant", int(self.ttl * 1000), 0]), now, timeout
        )
        self.open[handle] = ("grant", now)
        self.pump()

    def _put(self) -> None:
        assert self.lease_id is not None
        now = self.cluster.scheduler.now
        lease_id, key = self.lease_id, self.key
        handle = self.actor.write(
            lambda s, q, f: encode_command(s, q, f, ["put_lease", key, lease_id, lease_id]),
            now,
            self.cluster.options.client_timeout,
        )
        self.open[handle] = ("put", now)
        self.pump()

    def _keepalive(self) -> None:
        if self.lease_id is None or self._stopping():
            return
        now = self.cluster.scheduler.now
        handle = self.actor.read(encode_query(["lease_keepalive", self.lease_id]), now, self.ttl / 3)
        self.open[handle] = ("keepalive", now)
        self.pump()

    def on_response(self, msg: ClientResponse) -> None:
        self.actor.step(msg, self.cluster.scheduler.now)
        self.pump()

    def _on_tick(self, token: int) -> None:
        if token == self.tick_token:
            self.actor.tick(self.cluster.scheduler.now)
            self.pump()

    def pump(self) -> None:
        sched = self.cluster.scheduler
        for done in self.actor.take_completions():
            self._record(done)
        for msg in self.actor.take_messages():
            self.cluster.network.send(msg, duplicable=False)
        deadline = self.actor.next_deadline()
        if deadline != float("inf"):
            self.tick_token += 1
            token = self.tick_token
            sched.at(deadline, lambda: self._on_tick(token))

    def _record(self, done: Completion) -> None:
        what, invoked = self.open.pop(done.handle)
        sched = self.cluster.scheduler
        result: dict[str, Any] = {}
        if done.outcome is Outcome.OK:
            result = decode_result(done.result)
        elif done.outcome is Outcome.REJECTED:
            raise LeaseViolation(f"{self.id}: {what} rejected: {done.result!r}")
        gone = result.get("code") in (LEASE_NOT_FOUND_CODE, LEASE_EXPIRED_CODE)
        if what == "grant":
            if result.get("ok"):
                self.lease_id = int(result["id"])
                self.leases.append(self.lease_id)
                self.monitor.protect(self.lease_id, invoked + self.ttl)
                self._put()
            else:  # no answer (it may have been granted: an orphan that expires by itself), or busy
                sched.after(0.1, self._grant)
        elif what == "put":
            if result.get("ok"):
                sched.after(self.ttl / 3, self._keepalive)
            elif gone:
                self.lease_id = None
                sched.after(0.1, self._grant)
            elif not self._stopping():
                self._put()
        elif what == "keepalive":
            if result.get("ok"):
                assert self.lease_id is not None
                self.monitor.renewals += 1
                self.monitor.protect(self.lease_id, invoked + self.ttl)
                sched.after(self.ttl / 3, self._keepalive)
            elif gone:  # expired while the faults kept us from renewing it: the monitor judged that
                self.lease_id = None
                sched.after(0.1, self._grant)
            else:
                sched.after(0.05, self._keepalive)
