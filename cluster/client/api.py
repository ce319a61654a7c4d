"""Client: the embeddable, thread-safe zraft client.

    with Client(["tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"]) as c:
        rev = c.put("config/a", {"x": 1})
        c.get("config/a")                       # {"x": 1}
        c.cas("config/a", {"x": 1}, {"x": 2})   # True

Every call blocks its caller until the answer arrives or the timeout passes, and many threads may call
at once: requests are pipelined through one background thread (cluster/client/io_thread.py), and a call
made while no other is in flight runs on its caller's thread, sparing it two thread hand-offs. Writes
carry this client's session id and a sequence number, so a retried write is applied at most once. Reads
are linearizable (ReadIndex) unless serializable=True asks for a possibly stale local read.

Errors (cluster/errors.py): InvalidRequest when the client or the node found the request invalid (nothing
was proposed), Busy when the leader refused it as overloaded, Rejected when the cluster refused it
otherwise, OutcomeUnknown when a write got no answer in time and may have been applied (its subclass
AlreadyApplied when a retried write had been applied but its result was gone), Unavailable when a read or
status got no answer, or when every attempt of a write was refused before being proposed (no leader).

Range reads come in pages (cluster/client/ranges.py): range() answers one page of a prefix and
range_all() iterates over every key of it, a page at a time:

    page = c.range("jobs/", limit=100)              # page.kvs, page.more, page.revision
    more = c.range("jobs/", limit=100, after=page.next_after)
    for kv in c.range_all("jobs/"): ...

Watches (cluster/client/watch.py): every change under a prefix (or of one key), in revision order, from
a revision or from now, resumed on another node if the serving one fails, without gaps or duplicates:

    with c.watch("jobs/", start_revision=page.revision + 1) as w:
        for event in w: ...                     # {"type", "key", "value", "revision", ...}

Asynchronous calls: put_async, cas_async, delete_async, delete_prefix_async, get_async, get_kv_async and
range_async take the same arguments as their blocking twins and return a concurrent.futures.Future at
once, so one thread can keep many requests in flight without a thread per request:

    futures = [c.put_async(f"jobs/{i}", i) for i in range(100)]
    revisions = [f.result() for f in futures]
    c.get_async("jobs/7").add_done_callback(lambda f: print(f.result()))

A future's result is what the blocking call returns and its exception is what the blocking call raises
(OutcomeUnknown, Unavailable, Rejected, ClientClosed on a closed client, ...), with one difference: bad
arguments raise InvalidRequest (or ValueError for a bad timeout) from the *_async call itself, before
anything is sent. Every future completes: the I/O thread ends each request at its deadline, and close()
fails the pending ones with ClientClosed. The futures cannot be cancelled (the request is already on its
way): cancel() returns False.

Callbacks added with add_done_callback run on the client's I/O thread (or at once in the caller's
thread when the future is already done). Keep them quick and never block in them on this client
(future.result() of another pending request, or a blocking call, would stall every request of the
client). Starting another *_async call from a callback is fine: it only appends to a locked inbox and
wakes the thread.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, TypeVar

from actors.client import Completion, Outcome, WriteEncoder
from actors.membership import ConfigChange
from actors.messages import NodeId, RequestKind
from cluster.client.calls import (
    STATUS_TIMEOUT,
    Request,
    as_deleted,
    as_existed,
    as_kv,
    as_lease,
    as_lease_info,
    as_lease_list,
    as_members,
    as_revision,
    as_swapped,
    as_ttl,
    as_value,
    interpret,
    lease_grant_op,
    member_request,
    members_view,
    put_op,
    range_op,
    summarize,
)
from cluster.client.commands import encode_query, write_encoder
from cluster.client.curve import ServerKeys
from cluster.client.discovery import parse_status
from cluster.client.driver import Submission
from cluster.client.io_thread import ClientLoop, Waiter
from cluster.client.leases import KeptLease, Lease, LeaseInfo
from cluster.client.ranges import RangeIterator, RangePage, page_from_result
from cluster.client.settings import client_settings
from cluster.client.watch import Watch
from cluster.errors import HandshakeRefused, Unavailable, ZraftError
from transport.curve import KeyPair

_GRACE = 1.0  # extra wait on a future beyond the request's own deadline, in case the I/O thread stalls

T = TypeVar("T")


class Client:
    """A connection to a zraft cluster; see the module docstring. Use it as a context manager."""

    def __init__(
        self,
        endpoints: list[str] | str,
        timeout: float = 5.0,
        *,
        attempt_timeout: float = 0.5,
        curve_secret_key: str | bytes | None = None,
        server_public_key: ServerKeys | None = None,
    ) -> None:
        """Connect and learn the node names from the given client URLs (a list or "url,url,...").

        Raises ValueError for a malformed endpoint and Unavailable when no endpoint answers in time.
        `attempt_timeout` is how long one node may stay silent before a request is tried elsewhere.
        With `curve_secret_key` (this client's Z85 secret key or .key_secret file) and `server_public_key`
        (the nodes' public keys: see cluster/client/curve.py) every connection is CURVE-encrypted and
        authenticated; when the nodes refuse the handshake (a key they do not admit, a wrong server key,
        CURVE on one side only) the error is HandshakeRefused (an Unavailable) naming each node and why.
        """
        settings = client_settings(endpoints, timeout, attempt_timeout, curve_secret_key, server_public_key)
        urls = settings.urls
        self.timeout = settings.timeout
        self.client_id: NodeId = settings.client_id
        self._session = 0  # registered through the log by the first write (ClientOptions.sessions)
        self._curve = settings.curve
        self._loop = ClientLoop(self.client_id, self._session, urls, settings.options, settings.curve)
        # A forgotten Client still stops its thread when collected, or at interpreter exit.
        self._finalizer = weakref.finalize(self, self._loop.close)
        self._loop.start()
        if not self._loop.wait_ready(timeout) or not self._loop.known_nodes():
            self.close()
            refusals = self._loop.refusals()
            if refusals:
                raise HandshakeRefused("connect", timeout, refusals)
            raise Unavailable("connect", timeout, f"no node answered at {', '.join(urls)}")

    # --- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background thread. Calls still waiting raise ClientClosed (a write among them may or
        may not have been applied)."""
        self._finalizer()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def curve_keypair(self) -> KeyPair | None:
        """This client's CURVE keypair (None without CURVE); a ClusterService uses it for its events."""
        return self._curve.pair if self._curve is not None else None

    @property
    def nodes(self) -> dict[NodeId, str]:
        """The nodes discovered so far: name -> client URL."""
        return dict(self._loop.known_nodes())

    # --- writes -----------------------------------------------------------------------------------

    def put(self, key: str, value: Any, *, lease: int | None = None, timeout: float | None = None) -> int:
        """Set key to value; returns the new revision. With `lease`, the key is deleted when the lease
        ends (LeaseNotFound/LeaseExpired, writing nothing, if it has ended); without, a put detaches it."""
        return as_revision(self._call(self._write("put", put_op(key, value, lease), timeout)))

    def cas(self, key: str, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        """Set key to `new` only if its value is `expected` (None: only if absent); True if swapped."""
        return as_swapped(self._call(self._write("cas", ["cas", key, expected, new], timeout)))

    def delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Delete key; True if it existed."""
        return as_existed(self._call(self._write("delete", ["del", key], timeout)))

    def cas_delete(self, key: str, expected: Any, *, timeout: float | None = None) -> bool:
        """Delete key only if its value is `expected` (None: only if absent); True if it matched."""
        return as_swapped(self._call(self._write("cas_delete", ["cas_del", key, expected], timeout)))

    def cas_revision(self, key: str, mod_revision: int, new: Any, *, timeout: float | None = None) -> bool:
        """Set key to `new` only if its mod revision (get_kv's "mod_revision") is `mod_revision` (0: only
        if absent); True if swapped. Unlike cas(), a value written again in between does not match."""
        op = ["cas_rev", key, mod_revision, new]
        return as_swapped(self._call(self._write("cas_revision", op, timeout)))

    def cas_delete_revision(self, key: str, mod_revision: int, *, timeout: float | None = None) -> bool:
        """Delete key only if its mod revision is `mod_revision`; True if it matched."""
        op = ["cas_del_rev", key, mod_revision]
        return as_swapped(self._call(self._write("cas_delete_revision", op, timeout)))

    def delete_prefix(self, prefix: str, *, timeout: float | None = None) -> int:
        """Delete every key starting with prefix ("" = every key); returns how many were deleted."""
        return as_deleted(self._call(self._write("delete_prefix", ["del_prefix", prefix], timeout)))

    def put_async(
        self, key: str, value: Any, *, lease: int | None = None, timeout: float | None = None
    ) -> Future[int]:
        """put() without waiting: a future of the new revision (see the module docstring)."""
        return self._call_async(self._write("put", put_op(key, value, lease), timeout), as_revision)

    def cas_async(self, key: str, expected: Any, new: Any, *, timeout: float | None = None) -> Future[bool]:
        """cas() without waiting: a future of whether it swapped."""
        return self._call_async(self._write("cas", ["cas", key, expected, new], timeout), as_swapped)

    def delete_async(self, key: str, *, timeout: float | None = None) -> Future[bool]:
        """delete() without waiting: a future of whether the key existed."""
        return self._call_async(self._write("delete", ["del", key], timeout), as_existed)

    def delete_prefix_async(self, prefix: str, *, timeout: float | None = None) -> Future[int]:
        """delete_prefix() without waiting: a future of how many keys were deleted."""
        return self._call_async(self._write("delete_prefix", ["del_prefix", prefix], timeout), as_deleted)

    # --- reads ------------------------------------------------------------------------------------

    def get(self, key: str, serializable: bool = False, *, timeout: float | None = None) -> Any:
        """The value of key, or None when absent. Linearizable unless serializable=True."""
        return as_value(self._call(self._read("get", ["get", key], serializable, timeout)))

    def get_kv(
        self, key: str, serializable: bool = False, *, timeout: float | None = None
    ) -> dict[str, Any] | None:
        """{"key", "value", "create_revision", "mod_revision", "version"} of key, or None when absent."""
        return as_kv(self._call(self._read("get", ["get", key], serializable, timeout)))

    def range(
        self,
        prefix: str,
        limit: int = 0,
        serializable: bool = False,
        *,
        after: str = "",
        timeout: float | None = None,
    ) -> RangePage:
        """One page of the keys starting with prefix and sorting after `after` ("" = from the first):
        entries (dicts as get_kv gives) sorted by key, `more`, and the revision it was read at. At most
        `limit` keys (0 = the cluster's default page of DEFAULT_RANGE_LIMIT; above MAX_RANGE_LIMIT is
        refused) and at most MAX_RANGE_BYTES of entries, so a page may be shorter than `limit` while
        `more` is True. range_all() follows the pages; cluster/client/ranges.py says what paging
        through a changing prefix gives."""
        request = self._read("range", range_op(prefix, limit, after), serializable, timeout)
        return page_from_result(self._call(request))

    def range_all(
        self, prefix: str, *, page_size: int = 0, serializable: bool = False, timeout: float | None = None
    ) -> RangeIterator:
        """Every entry under prefix, in key order, read a page of `page_size` keys (0 = the default
        page) at a time as the iterator is consumed; `timeout` bounds each page. A bad prefix or page
        size raises InvalidRequest here; a page's failure is raised by next(). The iterator's
        `consistent` tells whether all pages were read at one revision (see cluster/client/ranges.py)."""
        self._read("range", range_op(prefix, page_size, ""), serializable, timeout)  # validate now

        def fetch(after: str) -> RangePage:
            return self.range(prefix, page_size, serializable, after=after, timeout=timeout)

        return RangeIterator(fetch)

    def get_async(self, key: str, serializable: bool = False, *, timeout: float | None = None) -> Future[Any]:
        """get() without waiting: a future of the value (None when absent)."""
        return self._call_async(self._read("get", ["get", key], serializable, timeout), as_value)

    def get_kv_async(
        self, key: str, serializable: bool = False, *, timeout: float | None = None
    ) -> Future[dict[str, Any] | None]:
        """get_kv() without waiting."""
        return self._call_async(self._read("get", ["get", key], serializable, timeout), as_kv)

    def range_async(
        self,
        prefix: str,
        limit: int = 0,
        serializable: bool = False,
        *,
        after: str = "",
        timeout: float | None = None,
    ) -> Future[RangePage]:
        """range() without waiting: a future of the page."""
        request = self._read("range", range_op(prefix, limit, after), serializable, timeout)
        return self._call_async(request, page_from_result)

    # --- watches ----------------------------------------------------------------------------------

    def watch(
        self,
        key: str,
        prefix: bool = True,
        start_revision: int | None = None,
        *,
        window: int = 1000,
        prev_kv: bool = False,
    ) -> Watch:
        """Watch every change under `key` (or of the key itself with prefix=False), from `start_revision`
        (None: from now), as an iterator of events; close it, or use it in a `with` block. `window` is
        how many events a node may send ahead of the consumer; with `prev_kv` every event also carries
        "prev", the key's value before the change (None: it was absent). See cluster/client/watch.py."""
        watch = Watch.checked(key, prefix, start_revision, window, prev_kv)
        loop = self._loop
        watch.on_consumed = lambda n: loop.watch_control("consumed", watch, n)
        watch.on_close = lambda: loop.watch_control("close", watch)
        loop.watch_control("open", watch)
        return watch

    # --- status -----------------------------------------------------------------------------------

    def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Every node's own view: {"leader", "term", "members": [{"name", "client_url", "reachable",
        "role", "term", "commit", "applied", ...}, ...]}. A node that does not answer is listed with
        reachable False and role "unreachable". Raises Unavailable when no node answers."""
        limit = timeout if timeout is not None else min(self.timeout, STATUS_TIMEOUT)
        known = self._loop.known_nodes()
        deadline = time.monotonic() + limit
        asked = {name: self._submit(RequestKind.STATUS, b"", deadline, name) for name in known}
        answers: dict[NodeId, dict[str, Any]] = {}
        for name, waiter in asked.items():
            done = self._wait(waiter, deadline)
            status = parse_status(done.result) if done.outcome is Outcome.OK else None
            if status is not None:
                answers[name] = status
        if not answers:
            raise Unavailable("status", limit, "no node answered")
        return summarize(known, self._loop.members(), answers)

    # --- membership (actors/membership.py; README "changing the cluster") --------------------------

    def member_list(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """The members in force, as the leader sees them: name, peer_url, client_url, learner, role
        (leader, voter, learner), reachable, match and lag (entries behind the leader's log)."""
        return members_view(self.status(timeout=timeout))

    def member_add(
        self,
        name: str,
        peer_url: str,
        client_url: str = "",
        *,
        curve_public_key: str = "",
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """Add a member as a learner (it receives the log, never votes); start its node with --join
        after this. Returns the member records once the change is committed. On a CURVE cluster,
        `curve_public_key` (Z85 text) is the key the members connect to it and admit it with."""
        return self._member(
            "member_add", ConfigChange("add", name, peer_url, client_url, curve_public_key), timeout
        )

    def member_promote(self, name: str, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Make a learner a voter; InvalidRequest while it is further behind than the leader allows."""
        return self._member("member_promote", ConfigChange("promote", name), timeout)

    def member_remove(self, name: str, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Remove a member (the leader first hands leadership over when it is the one removed)."""
        return self._member("member_remove", ConfigChange("remove", name), timeout)

    def member_update(
        self,
        name: str,
        peer_url: str,
        client_url: str = "",
        *,
        curve_public_key: str = "",
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """Change a member's peer URL (and client URL and CURVE key, when given) without removing it."""
        change = ConfigChange("update", name, peer_url, client_url, curve_public_key)
        return self._member("member_update", change, timeout)

    def _member(self, operation: str, change: ConfigChange, timeout: float | None) -> list[dict[str, Any]]:
        return as_members(self._call(member_request(operation, change, self._limit(timeout))))

    # --- leases (cluster/client/leases.py; the cluster side is cluster/kv/leases.py) -----------------

    def lease_grant(self, ttl: float, *, timeout: float | None = None) -> Lease:
        """Grant a lease of `ttl` seconds (at least the cluster's minimum, three election timeouts by
        default: InvalidRequest below it). Renew it with lease_keepalive, or use lease(ttl)."""
        return as_lease(self._call(self._write("lease_grant", lease_grant_op(ttl), timeout)))

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> float:
        """Renew the lease for its whole TTL; returns the seconds it now has left by the leader's clock.
        Raises LeaseNotFound (or LeaseExpired) when it has ended."""
        request = self._read("lease_keepalive", ["lease_keepalive", lease_id], False, timeout)
        return as_ttl(self._call(request))

    def lease_keepalive_async(self, lease_id: int, *, timeout: float | None = None) -> Future[float]:
        """lease_keepalive() without waiting: a future of the seconds left. Keepalives sent together go
        in one frame, and the leader confirms every read of one turn with one ReadIndex round, so many
        leases renewed at once cost one round, not one each."""
        request = self._read("lease_keepalive", ["lease_keepalive", lease_id], False, timeout)
        return self._call_async(request, as_ttl)

    def lease_keepalive_many(
        self, lease_ids: Sequence[int], *, timeout: float | None = None
    ) -> dict[int, float | ZraftError]:
        """Renew many leases at once (sent together: one ReadIndex round for the batch on the leader);
        for each lease id, the seconds it now has left, or the error its lease_keepalive would raise."""
        futures = {
            lease_id: self.lease_keepalive_async(lease_id, timeout=timeout) for lease_id in set(lease_ids)
        }
        wait = self._limit(timeout) + _GRACE
        out: dict[int, float | ZraftError] = {}
        for lease_id, fut in futures.items():
            try:
                out[lease_id] = fut.result(timeout=wait)
            except ZraftError as exc:
                out[lease_id] = exc
            except FutureTimeout:
                out[lease_id] = Unavailable("lease_keepalive", wait, "no answer (the I/O thread stalled)")
        return out

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> int:
        """End the lease now, deleting its keys (each a revision of its own); returns how many."""
        return as_deleted(self._call(self._write("lease_revoke", ["lease_revoke", lease_id, 0], timeout)))

    def lease_info(self, lease_id: int, *, timeout: float | None = None) -> LeaseInfo:
        """The lease's granted TTL, seconds left and keys; LeaseNotFound when it has ended."""
        return as_lease_info(self._call(self._read("lease_info", ["lease_info", lease_id], False, timeout)))

    def lease_list(self, *, timeout: float | None = None) -> list[LeaseInfo]:
        """Every lease (without keys), by id."""
        return as_lease_list(self._call(self._read("lease_list", ["lease_list"], False, timeout)))

    def lease(self, ttl: float, *, timeout: float | None = None) -> KeptLease:
        """Grant a lease and keep it alive from a background thread (every ttl/3) until the `with` block
        ends (it is then revoked) or the process ends (it then expires):

            with c.lease(10) as lease:
                c.put("servers/a", {...}, lease=lease.id)
        """
        granted = self.lease_grant(ttl, timeout=timeout)

        def keepalive(lease_id: int, limit: float) -> float:
            return self.lease_keepalive(lease_id, timeout=min(limit, self.timeout))

        return KeptLease(granted, keepalive, lambda lease_id: self.lease_revoke(lease_id, timeout=timeout))

    # --- internals --------------------------------------------------------------------------------

    def _write(self, operation: str, op: list[Any], timeout: float | None) -> Request:
        encoder = write_encoder(operation, self._session, op)
        return Request(operation, RequestKind.WRITE, encoder, self._limit(timeout))

    def _read(self, operation: str, op: list[Any], serializable: bool, timeout: float | None) -> Request:
        query = encode_query(operation, op)
        kind = RequestKind.SERIAL_READ if serializable else RequestKind.READ
        return Request(operation, kind, query, self._limit(timeout))

    def _limit(self, timeout: float | None) -> float:
        limit = self.timeout if timeout is None else timeout
        if limit <= 0:
            raise ValueError("timeout must be positive")
        return limit

    def _call(self, request: Request) -> dict[str, Any]:
        deadline = time.monotonic() + request.limit
        waiter = Waiter()
        # On this thread when the client is otherwise idle (io_thread.py: the direct path), else queued
        self._loop.call(Submission(request.kind, request.body, deadline, waiter), waiter)
        return interpret(request, self._wait(waiter, deadline))

    def _call_async(self, request: Request, project: Callable[[dict[str, Any]], T]) -> Future[T]:
        outer: Future[T] = Future()
        outer.set_running_or_notify_cancel()  # the request is about to be sent: not cancellable

        def settle(outcome: Completion | BaseException) -> None:  # on the I/O thread: must never raise
            if outer.done():  # a failing I/O thread ends every call it may hold, some maybe twice
                return
            try:
                if isinstance(outcome, BaseException):  # ClientClosed from the loop
                    raise outcome
                answer = project(interpret(request, outcome))
            except BaseException as exc:  # noqa: BLE001 - every failure belongs to the caller's future
                outer.set_exception(exc)
            else:
                outer.set_result(answer)

        deadline = time.monotonic() + request.limit
        try:
            self._loop.submit(Submission(request.kind, request.body, deadline, settle))
        except Exception as exc:  # ClientClosed: delivered like any other outcome
            outer.set_exception(exc)
        return outer

    def _submit(
        self, kind: RequestKind, body: bytes | WriteEncoder, deadline: float, node: NodeId = ""
    ) -> Waiter:
        waiter = Waiter()
        self._loop.submit(Submission(kind, body, deadline, waiter, node))
        return waiter

    @staticmethod
    def _wait(waiter: Waiter, deadline: float) -> Completion:
        outcome = waiter.wait(deadline - time.monotonic() + _GRACE)
        if outcome is None:  # the I/O thread missed the deadline; report it like the actor would
            return Completion(0, Outcome.TIMEOUT, b"")
        if isinstance(outcome, BaseException):  # ClientClosed, or the I/O thread's failure
            raise outcome
        return outcome
