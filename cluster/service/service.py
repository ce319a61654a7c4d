"""ClusterService: the registry, heartbeats, liveness and events that platforms use, on top of a Client.

    with Client(endpoints) as c, ClusterService(c) as svc:
        svc.register_server("web-1", "10.0.0.5", 8080)          # record + lease, heartbeats every 3 s
        svc.subscribe("NOTE", lambda event: print(event.payload))
        svc.servers(), svc.processes(), svc.get("server", "web-1"), svc.idle_server()
        result = svc.broadcast("NOTE", {"id": 7})               # result.acked, result.not_acked, ...
        svc.health()                                            # quorum, pending writes, failures

Threads (all daemons, stopped by close()): the heartbeat thread renews every registration's lease each
interval, all in one batch (one ReadIndex round on the leader), and queues a record write when one is due
(usage moved, or `record_every` seconds passed since the last: Registration.write_due); the write queue
(cluster/service/writes.py) commits registry writes in order, retrying while the cluster has no quorum;
the liveness thread watches CLUSTER_SERVICE/ and applies cluster/service/liveness.py's rules (when
monitor=True); the event socket's threads (cluster/service/event_socket.py) send, receive and dispatch
events. The layout of records and keys is in cluster/service/records.py.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

from loguru import logger

from cluster.errors import ClientClosed, NoAnswer, WatchEnded, ZraftError
from cluster.service.event_socket import EventEndpoint, Listener
from cluster.service.events import Delivery, EventResult, check_topic
from cluster.service.liveness import LivenessMonitor, check_timing, monitor_rank
from cluster.service.records import (
    ALIVE_PREFIX,
    GRACE_PREFIX,
    LISTENER,
    LIVENESS_PREFIX,
    ONLINE,
    PROCESS,
    RECORD_KINDS,
    SERVER,
    STATUS,
    check_id,
    check_update,
    free_memory,
    kind_of,
    merged,
    process_record,
    record_key,
    server_record,
    split_key,
    target_name,
)
from cluster.service.registrant import Registration, merge_record
from cluster.service.resources import ResourceSampler
from cluster.service.store import Store
from cluster.service.writes import WriteQueue

DEFAULT_INTERVAL = 3.0
DEFAULT_TIMEOUT = 9.0
DEFAULT_GRACE = 600.0
DEFAULT_STAGGER = 0.25
# With the default record_every, a record's LATEST_HEARTBEAT is rewritten at least every 10 intervals (30 s at
# the defaults) and whenever usage moved; the lease, renewed every interval, is what liveness rests on.
RECORD_EVERY_INTERVALS = 10
RETRY_TASK_AFTER = 0.5


class NotConfirmed(NoAnswer):
    """A registry write was not committed within the wait; it stays queued and will be retried."""

    def _describe(self) -> str:
        return super()._describe() + "; the write stays queued and is retried (see health())"


def change_of(event: dict[str, Any]) -> dict[str, Any] | None:
    """A registry change from a watch event on a record prefix; None for a key that is not a record's."""
    parts = split_key(event["key"])
    if parts is None:
        return None
    return {
        "type": event["type"],
        "kind": parts[0],
        "id": parts[1],
        "record": event["value"],
        "revision": event["revision"],
    }


class RegistryChanges:
    """An iterator over registry changes (both kinds): {"type": "PUT"|"DELETE", "kind", "id", "record"
    (None for DELETE), "revision"}. Each record's changes come in revision order; changes of different
    records come in arrival order (two watches, one per prefix). close() ends it."""

    def __init__(self, store: Store) -> None:
        self._queue: queue.Queue[dict[str, Any] | BaseException] = queue.Queue(maxsize=10_000)
        self._watches = [store.watch(f"{kind}/") for kind in RECORD_KINDS]
        self._threads = [
            threading.Thread(target=self._pump, args=(w,), name="zraft-service-changes", daemon=True)
            for w in self._watches
        ]
        for t in self._threads:
            t.start()

    def _pump(self, watch: Any) -> None:
        try:
            for event in watch:
                change = change_of(event)
                if change is not None:
                    self._queue.put(change)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._queue.put(exc)
        else:
            self._queue.put(StopIteration())  # closed

    def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next change; None if none came within `timeout`. StopIteration once closed."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self._queue.put(item)  # every later call ends the same way
            raise item
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                item = self.next(None)
            except StopIteration:
                return
            assert item is not None
            yield item

    def close(self) -> None:
        for w in self._watches:
            w.close()

    def __enter__(self) -> RegistryChanges:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClusterService:
    """See the module docstring. `client` is a cluster.Client (anything with its Store calls); the
    service does not close it. Timing: heartbeat every `interval` seconds, OFFLINE after `timeout` of
    silence (at least 3 x interval), deleted `grace` seconds after being marked OFFLINE."""

    def __init__(
        self,
        client: Store,
        *,
        interval: float = DEFAULT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        grace: float = DEFAULT_GRACE,
        monitor: bool = True,
        event_host: str | None = None,
        stagger: float = DEFAULT_STAGGER,
        record_every: float | None = None,
    ) -> None:
        self.client = client
        self.interval, self.timeout, self.grace = check_timing(interval, timeout, grace)
        # A heartbeat writes the record only when usage moved or this long passed since its last write.
        self.record_every = RECORD_EVERY_INTERVALS * self.interval if record_every is None else record_every
        self.monitor = monitor
        self.event_host = event_host
        self.stagger = stagger
        self.token = secrets.token_hex(8)
        self.writes = WriteQueue()
        self.writes.start()
        self.liveness = LivenessMonitor(client, self.grace, self.token)
        self._lock = threading.RLock()
        self._registrations: dict[str, Registration] = {}
        self._samplers: dict[str, ResourceSampler] = {}
        self._endpoint: EventEndpoint | None = None
        self._directory: dict[str, dict[str, Any]] = {}  # alive key -> value (the liveness thread's view)
        self._stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._liveness_thread: threading.Thread | None = None
        self._watch: Any = None
        self._closed = False

    # --- lifecycle ----------------------------------------------------------------------------------

    def __enter__(self) -> ClusterService:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> None:
        """Stop heartbeating, commit what is queued (waiting up to `timeout`, default the client's),
        delete this service's records and revoke their leases. Writes still pending then fail with
        ServiceClosed (and are logged); records that could not be deleted go OFFLINE when their lease
        ends, and are deleted after the grace period."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        limit = self.client.timeout if timeout is None else timeout
        self._stop.set()
        for thread in (self._heartbeat_thread, self._liveness_thread):
            if thread is not None:
                thread.join(timeout=limit + 5)
        self.writes.close(timeout=limit)
        for reg in list(self._registrations.values()):
            try:
                reg.deregister()
            except ZraftError as exc:
                logger.warning("{} not deregistered ({}): its lease will expire", reg.name, exc)
        if self._endpoint is not None:
            self._endpoint.close()

    # --- registration -------------------------------------------------------------------------------

    def register_server(
        self,
        name: str,
        host: str,
        port: int,
        meta: dict[str, Any] | None = None,
        *,
        wait: bool = True,
    ) -> Future[Any]:
        """Register a server record SERVER_META/<name> and keep it alive until close(). With wait=True,
        return once the cluster committed it (NotConfirmed after the client's timeout x 2: the write stays
        queued); the returned future says when it did."""
        check_id(name)
        record = server_record(name, host, int(port), time.time(), meta)
        return self._register(SERVER, name, record, host, wait)

    def register_process(
        self,
        group_id: str,
        name: str,
        host: str,
        port: int,
        meta: dict[str, Any] | None = None,
        *,
        wait: bool = True,
    ) -> Future[Any]:
        """Register a process record INTP_PROCESS_META/<name> (in group `group_id`); as register_server."""
        check_id(name)
        record = process_record(str(group_id), name, host, int(port), time.time(), meta)
        return self._register(PROCESS, name, record, host, wait)

    def _register(
        self, kind: str, ident: str, record: dict[str, Any] | None, host: str, wait: bool
    ) -> Future[Any]:
        key = record_key(kind, ident)
        with self._lock:
            if self._closed:
                raise ClientClosed()
            if key in self._registrations:
                raise ValueError(f"{key} is already registered by this service")
            endpoint = self._ensure_endpoint(host)
            if kind != LISTENER:
                self._drop_bare_listener()
            reg = Registration(
                self.client,
                kind,
                ident,
                record,
                ttl=self.timeout,
                token=self.token,
                events_url=endpoint.url,
                events_key=endpoint.public_key,
                monitor=self.monitor,
                clock=time.time,
            )
            sampler = ResourceSampler(whole_machine=kind == SERVER)
            self._registrations[key] = reg
            self._samplers[key] = sampler
            fut = self.writes.submit(f"register {key}", lambda: reg.establish(sampler.sample()))
            fut.add_done_callback(lambda f: self._registration_done(key, reg, f))
            self._start_threads()
        if wait:
            self._wait(fut, f"register {key}")
        return fut

    def _registration_done(self, key: str, reg: Registration, fut: Future[Any]) -> None:
        """A registration the cluster refused for good is forgotten (its error is the future's)."""
        if fut.exception() is not None:
            with self._lock:
                if self._registrations.get(key) is reg and not reg.established:
                    del self._registrations[key]

    def taken_over(self) -> list[str]:
        """The registrations that another process took over under the same id (they stopped)."""
        return [reg.name for reg in self._registrations.values() if reg.taken_over is not None]

    def _drop_bare_listener(self) -> None:
        """A real registration replaces the bare LISTENER that subscribe() made: same event address."""
        for key, reg in list(self._registrations.items()):
            if reg.kind == LISTENER:
                del self._registrations[key]
                self.writes.submit(f"deregister {key}", reg.deregister)

    def _ensure_endpoint(self, host: str | None) -> EventEndpoint:
        if self._endpoint is None:
            bind = self.event_host or host or "127.0.0.1"
            # the Client's CURVE keypair, if it has one: then events are CURVE too (no plaintext path)
            self._endpoint = EventEndpoint(self.token, bind, getattr(self.client, "curve_keypair", None))
            self._endpoint.start()
        return self._endpoint

    def _wait(self, fut: Future[Any], what: str) -> Any:
        limit = 2 * self.client.timeout
        try:
            return fut.result(timeout=limit)
        except FutureTimeout:
            raise NotConfirmed(what, limit, self.writes.last_error) from None

    # --- records ------------------------------------------------------------------------------------

    def update(self, kind: str, ident: str, fields: dict[str, Any], *, wait: bool = True) -> Future[Any]:
        """Merge `fields` into a record (a compare-and-swap on the value read; other fields, host and port
        included, stay). Heartbeat, STATUS and identity fields are refused (ValueError). Queued like every
        registry write; wait=True waits for the commit (NotConfirmed after the client's timeout x 2)."""
        kind = kind_of(kind)
        check_id(ident)
        check_update(kind, fields)
        key = record_key(kind, ident)
        fields = dict(fields)

        def action() -> dict[str, Any]:
            reg = self._registrations.get(key)
            known = reg.written if reg is not None else None
            value = merge_record(self.client, key, fields, known)
            if reg is not None and reg.record is not None:
                reg.record = merged(reg.record, fields)
                reg.written = value
            return value

        fut = self.writes.submit(f"update {key}", action)
        if wait:
            self._wait(fut, f"update {key}")
        return fut

    def get(self, kind: str, ident: str) -> dict[str, Any] | None:
        """The record, or None."""
        value = self.client.get(record_key(kind_of(kind), check_id(ident)))
        return value if isinstance(value, dict) else None

    def servers(self) -> list[dict[str, Any]]:
        """Every server record, by name."""
        return self._records(SERVER)

    def processes(self) -> list[dict[str, Any]]:
        """Every process record, by id."""
        return self._records(PROCESS)

    def _records(self, kind: str) -> list[dict[str, Any]]:
        return [kv["value"] for kv in self._list(f"{kind}/") if isinstance(kv["value"], dict)]

    def _list(self, prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = ""
        while True:
            page = self.client.range(prefix, after=after)
            out.extend(page.kvs)
            if not page.more:
                return out
            after = page.next_after

    def idle_server(self) -> dict[str, Any] | None:
        """The ONLINE server with the most free memory (capacity - used); ties go to the smallest name."""
        online = [s for s in self.servers() if s.get(STATUS) == ONLINE]
        if not online:
            return None
        return min(online, key=lambda s: (-free_memory(s), str(s.get("NODE_NAME", ""))))

    def changes(self) -> RegistryChanges:
        """An iterator over registry changes from now on (see RegistryChanges); close it when done."""
        return RegistryChanges(self.client)

    def on_change(self, callback: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
        """Call callback(change) on a background thread for every registry change from now on (a raising
        callback is logged, not fatal); returns a function that stops it."""
        changes = self.changes()

        def run() -> None:
            try:
                for change in changes:
                    try:
                        callback(change)
                    except Exception:  # noqa: BLE001 - the caller's bug must not stop the stream
                        logger.exception("registry change callback raised")
            except (ClientClosed, WatchEnded) as exc:
                logger.info("registry change stream ended: {}", exc)

        threading.Thread(target=run, name="zraft-service-on-change", daemon=True).start()
        return changes.close

    # --- events -------------------------------------------------------------------------------------

    def subscribe(self, topic: str, callback: Listener) -> Callable[[], None]:
        """Run callback(Event) for each event on `topic` sent to this service; returns an unsubscribe
        function. With no registration yet, the service registers as a bare LISTENER (an alive key with
        its event address), so that broadcasts reach it."""
        check_topic(topic)
        with self._lock:
            endpoint = self._ensure_endpoint(None)
            unsubscribe = endpoint.subscribe(topic, callback)
            if not self._registrations:
                self._register(LISTENER, f"listener-{self.token}", None, "", wait=False)
        return unsubscribe

    def wait_registered(self) -> None:
        """Wait until every registration so far is committed (NotConfirmed otherwise)."""
        if not self.writes.wait_idle(2 * self.client.timeout):
            raise NotConfirmed("registration", 2 * self.client.timeout, self.writes.last_error)

    def live(self) -> list[tuple[str, dict[str, Any]]]:
        """Every live registrant (its alive key exists): (KIND/ID, alive value), read from the cluster."""
        out = []
        for kv in self._list(ALIVE_PREFIX):
            parts = split_key(kv["key"], ALIVE_PREFIX)
            if parts is not None and isinstance(kv["value"], dict):
                out.append((target_name(*parts), kv["value"]))
        return out

    def broadcast(self, topic: str, payload: Any, timeout: float = 2.0) -> EventResult:
        """Send an event to every live server, process and listener except this service; wait up to
        `timeout` for their acks. The result lists who acknowledged, who did not, and listener errors."""
        targets = [(name, value) for name, value in self.live() if value.get("owner") != self.token]
        return self._send(targets, topic, payload, timeout)

    def unicast(self, target: str, topic: str, payload: Any, timeout: float = 2.0) -> EventResult:
        """Send an event to one live registrant, named "KIND/ID" or just "ID" (ValueError when the id is
        both a server and a process); not live: not acknowledged, reason "not live"."""
        matches = [(n, v) for n, v in self.live() if n == target or n.split("/", 1)[1] == target]
        if len(matches) > 1:
            raise ValueError(f"{target!r} is ambiguous: {', '.join(n for n, _ in matches)}")
        if not matches:
            check_topic(topic)
            return EventResult("", topic, (Delivery(target, False, reason="not live"),))
        return self._send(matches, topic, payload, timeout)

    def _send(
        self, targets: list[tuple[str, dict[str, Any]]], topic: str, payload: Any, timeout: float
    ) -> EventResult:
        """Send to each (name, alive value): its "events" address, and its "events_key" with CURVE."""
        with self._lock:
            endpoint = self._ensure_endpoint(None)
        clean: list[tuple[str, str | None]] = []
        keys: dict[str, str | None] = {}
        for name, alive in targets:
            url = alive.get("events")
            clean.append((name, url if isinstance(url, str) else None))
            key = alive.get("events_key")
            if isinstance(url, str) and isinstance(key, str):
                keys[url] = key
        return endpoint.send(clean, topic, payload, timeout, self.sender_name, keys)

    @property
    def sender_name(self) -> str:
        names = [n for n, reg in self._registrations.items() if reg.kind != LISTENER]
        return names[0] if names else f"client-{self.token}"

    # --- health -------------------------------------------------------------------------------------

    def health(self, timeout: float = 1.0) -> dict[str, Any]:
        """{"quorum": can the cluster commit (a linearizable read, which needs a majority, answered within
        `timeout`), "pending_writes", "retrying" (the head write waits for the cluster), "failed_writes"
        ([time, write, error] of writes that failed for good), "last_error", "registrations", "monitor"}."""
        try:
            self.client.get(LIVENESS_PREFIX + "health", timeout=timeout)
            quorum, error = True, ""
        except NoAnswer as exc:
            quorum, error = False, str(exc)
        return {
            "quorum": quorum,
            "quorum_error": error,
            "pending_writes": self.writes.pending(),
            "retrying": self.writes.retrying,
            "failed_writes": [list(f) for f in self.writes.failed()],
            "last_error": self.writes.last_error,
            "registrations": [reg.describe() for reg in self._registrations.values()],
            "monitor": {"marked_offline": self.liveness.marked, "deleted": self.liveness.deleted},
            "events": {
                "url": self._endpoint.url if self._endpoint else None,
                "bad_messages": self._endpoint.bad_messages if self._endpoint else 0,
                "listener_errors": self._endpoint.listener_errors if self._endpoint else 0,
            },
        }

    # --- background threads -------------------------------------------------------------------------

    def _start_threads(self) -> None:
        if self._heartbeat_thread is None:
            self._heartbeat_thread = threading.Thread(
                target=self._heartbeat_loop, name="zraft-service-heartbeat", daemon=True
            )
            self._heartbeat_thread.start()
        if self.monitor and self._liveness_thread is None:
            self._liveness_thread = threading.Thread(
                target=self._liveness_loop, name="zraft-service-liveness", daemon=True
            )
            self._liveness_thread.start()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.interval):
            beating = [
                (key, reg)
                for key, reg in list(self._registrations.items())
                if reg.taken_over is None and reg.established
            ]
            renewals = self._renew([reg for _, reg in beating])
            if renewals is None:
                continue  # the client is closed: nothing to renew or write (close() stops this thread)
            for key, reg in beating:
                try:
                    self._beat(key, reg, renewals.get(reg.lease_id) if reg.lease_id is not None else None)
                except Exception:  # noqa: BLE001 - one bad beat must not end the heartbeats
                    logger.exception("heartbeat of {} failed", key)

    def _renew(self, regs: list[Registration]) -> dict[int, float | ZraftError] | None:
        """Renew every lease of `regs` in one batch (one request each, sent together: the leader confirms
        them with one ReadIndex round, where one call after the other would pay a round each and, with
        hundreds of registrations, could outlast the TTL). None when the client is closed."""
        leases = [reg.lease_id for reg in regs if reg.lease_id is not None]
        if not leases:
            return {}
        try:
            return self.client.lease_keepalive_many(leases)
        except ClientClosed:
            return None
        except ZraftError as exc:  # NoAnswer and the like: each lease's outcome is this error
            return dict.fromkeys(leases, exc)

    def _beat(self, key: str, reg: Registration, renewal: float | ZraftError | None) -> None:
        """One registration's heartbeat: take its lease's renewal (None: it has no lease), then queue
        the record's write when it is due (Registration.write_due)."""
        try:
            if not reg.renewed(renewal):
                logger.warning("{}: its lease ended; registering again", key)
        except NoAnswer:
            pass  # unknown: the lease outlives a cluster without quorum (a new leader extends it)
        except ClientClosed:
            return
        sampler = self._samplers[key]
        usage = sampler.sample() if reg.record is not None else {}
        if not reg.write_due(usage, self.record_every):
            return  # renewed; the record stays as it is (see Registration.write_due)
        try:
            self.writes.submit(f"heartbeat {key}", lambda: reg.heartbeat(usage), coalesce=f"heartbeat {key}")
        except ZraftError as exc:  # queue full or closed: the next interval tries again
            logger.warning("heartbeat of {} not queued: {}", key, exc)

    # The liveness thread: list and watch CLUSTER_SERVICE/, keep the directory, run the monitor's rules.

    def _liveness_loop(self) -> None:
        tasks: list[tuple[float, int, str, str, str]] = []  # (due, n, rule, kind, id)
        counter = itertools.count()
        backoff = RETRY_TASK_AFTER
        while not self._stop.is_set():
            try:
                revision = self._relist()
                for key in self._sweep_candidates():
                    heapq.heappush(tasks, (time.monotonic(), next(counter), "sweep", *key))
                with self.client.watch(LIVENESS_PREFIX, start_revision=revision + 1) as watch:
                    backoff = RETRY_TASK_AFTER
                    while not self._stop.is_set():
                        wait = 0.5 if not tasks else max(0.0, min(0.5, tasks[0][0] - time.monotonic()))
                        event = watch.next(wait)
                        if event is not None:
                            for task in self._on_liveness_event(event):
                                heapq.heappush(tasks, (task[0], next(counter), *task[1:]))
                        self._run_due(tasks, counter)
            except ClientClosed:
                return
            except ZraftError as exc:  # Compacted, another WatchEnded, NoAnswer, a refused read
                logger.info("liveness watch restarts after: {}", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _relist(self) -> int:
        revision = 0
        directory: dict[str, dict[str, Any]] = {}
        after = ""
        while True:
            page = self.client.range(ALIVE_PREFIX, after=after)
            revision = page.revision if not revision else min(revision, page.revision)
            directory.update({kv["key"]: kv["value"] for kv in page.kvs if isinstance(kv["value"], dict)})
            if not page.more:
                break
            after = page.next_after
        with self._lock:
            self._directory = directory
        return revision

    def _sweep_candidates(self) -> list[tuple[str, str]]:
        """Records that may need a rule applied (ONLINE without alive key, OFFLINE ones): checked again by
        the rule itself before it writes."""
        out = []
        for kind in RECORD_KINDS:
            for kv in self._list(f"{kind}/"):
                parts = split_key(kv["key"])
                if parts is None or not isinstance(kv["value"], dict):
                    continue
                alive = f"{ALIVE_PREFIX}{kv['key']}" in self._directory
                if not alive:
                    out.append(parts)
        return out

    def _on_liveness_event(self, event: dict[str, Any]) -> list[tuple[float, str, str, str]]:
        key = event["key"]
        if key.startswith(ALIVE_PREFIX):
            with self._lock:
                if event["type"] == "PUT" and isinstance(event["value"], dict):
                    self._directory[key] = event["value"]
                    return []
                self._directory.pop(key, None)
            parts = split_key(key, ALIVE_PREFIX)
            if parts is None or parts[0] == LISTENER:
                return []
            return [(time.monotonic() + self._delay(key), "alive_gone", *parts)]
        if key.startswith(GRACE_PREFIX) and event["type"] == "DELETE":
            parts = split_key(key, GRACE_PREFIX)
            if parts is not None:
                return [(time.monotonic() + self._delay(key), "grace_over", *parts)]
        return []

    def _delay(self, key: str) -> float:
        with self._lock:
            monitors = [v.get("owner") for v in self._directory.values() if v.get("monitor")]
        rank = monitor_rank(self.token, [m for m in monitors if isinstance(m, str)], key)
        return self.stagger * min(rank, 8)

    def _run_due(self, tasks: list[tuple[float, int, str, str, str]], counter: Iterator[int]) -> None:
        now = time.monotonic()
        while tasks and tasks[0][0] <= now and not self._stop.is_set():
            _, _, rule, kind, ident = heapq.heappop(tasks)
            try:
                if rule == "alive_gone":
                    outcome = self.liveness.alive_gone(kind, ident)
                elif rule == "grace_over":
                    outcome = self.liveness.grace_over(kind, ident)
                else:
                    outcome = self.liveness.check(kind, ident)
                logger.debug("liveness {} {}/{}: {}", rule, kind, ident, outcome)
            except NoAnswer as exc:
                logger.info("liveness {} {}/{} retried: {}", rule, kind, ident, exc)
                heapq.heappush(tasks, (now + RETRY_TASK_AFTER, next(counter), rule, kind, ident))
            except ClientClosed:
                raise
            except ZraftError as exc:  # refused: another monitor's sweep or the record's next change retries
                logger.warning("liveness {} {}/{} failed: {}", rule, kind, ident, exc)
