"""AsyncClient: the zraft client for asyncio, driven in the caller's event loop (no thread).

    async with AsyncClient(["tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"], timeout=5.0) as c:
        rev = await c.put("config/a", {"x": 1})
        await c.get("config/a")                          # {"x": 1}
        async for kv in c.range_all("config/"): ...

The calls are the blocking Client's (cluster/client/api.py), awaited: the same arguments, results and
exceptions, checked by a test that compares the two signatures. Requests go through the same ClientCore
and ClientActor (cluster/client/driver.py) as the Client's I/O thread, here over DEALER sockets read by the
event loop itself: calls append to an inbox and schedule one turn of the driver with call_soon, so the
calls made in one event-loop pass (asyncio.gather of many puts) leave as one batch frame per node. Each
socket's ZeroMQ file descriptor is a reader of the loop (no task, no future per frame): when it fires, the
frames waiting on that socket are taken and a turn runs at once, so an answer reaches its caller one loop
pass after it arrived. That descriptor only signals edges, and a send can consume one: after every turn,
a socket that still holds input is read again. A timer handle runs the turn when the actor or discovery
next needs it.

Cancelling a task that awaits a call only stops the wait: the request goes on inside the actor until it
is answered or its deadline passes (so a write keeps its seq and its retries stay the same write), and its
answer is dropped. Its outcome is unknown to the caller, as for OutcomeUnknown. close() ends every pending
call with ClientClosed. An AsyncClient belongs to the event loop it connected in.

Watches and kept leases run in the same loop. `watch(prefix, ...)` returns an AsyncWatch
(cluster/client/watch.py) at once, for `async for` (or `async with`): opening it hands an "open" control
to the next turn, where ClientCore starts a WatchFollower (cluster/client/watching.py) exactly as for
the blocking Client, so resuming on another node, Compacted, progress and flow control are the same
code; the turns deliver its events into the AsyncWatch, whose consumer reports what it took back as
"consumed" controls, and close() sends a "close" control. `lease(ttl)` returns an AsyncKeptLease
(cluster/client/leases.py): `async with` grants the lease with an awaited call and renews it from a task
of this loop on the blocking keeper's schedule, and the block's end cancels that task and revokes the
lease. close() ends open watches with ClientClosed and stops the renewal tasks (the leases then expire).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import zmq
from loguru import logger

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
from cluster.client.driver import ClientCore, DealerLinks, Submission, WatchControl
from cluster.client.leases import AsyncKeptLease, Lease, LeaseInfo
from cluster.client.ranges import AsyncRangeIterator, RangePage, page_from_result
from cluster.client.settings import client_settings
from cluster.client.watch import AsyncWatch
from cluster.errors import ClientClosed, HandshakeRefused, Unavailable, ZraftError
from transport.curve import KeyPair

_RECV_BATCH = 4096  # frames one socket hands over before letting the loop run others

T = TypeVar("T")


class AsyncClient:
    """A connection to a zraft cluster for asyncio; see the module docstring. Use `async with`."""

    def __init__(
        self,
        endpoints: list[str] | str,
        timeout: float = 5.0,
        *,
        attempt_timeout: float = 0.5,
        curve_secret_key: str | bytes | None = None,
        server_public_key: ServerKeys | None = None,
    ) -> None:
        """Check the arguments; nothing is connected before `async with` (or `await connect()`).

        Raises ValueError for a malformed endpoint, a non-positive timeout or unusable CURVE keys, like
        Client (whose docstring says what the CURVE arguments take).
        """
        settings = client_settings(endpoints, timeout, attempt_timeout, curve_secret_key, server_public_key)
        self._curve = settings.curve
        self._urls = settings.urls
        self.timeout = settings.timeout
        self.client_id: NodeId = settings.client_id
        self._session = 0  # registered through the log by the first write (ClientOptions.sessions)
        self._options = settings.options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._links: DealerLinks | None = None
        self._core: ClientCore | None = None
        self._ready = asyncio.Event()
        self._inbox: list[Submission] = []
        self._received: list[bytes] = []
        self._watch_controls: list[WatchControl] = []  # watches to open, consumption to report, to close
        self._kept: set[AsyncKeptLease] = set()  # leases renewed by tasks of this client
        self._turn_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._readers: dict[int, zmq.Socket[Any]] = {}  # each DEALER by its file descriptor
        self._closed = False  # no more calls (closing, or the driver failed)
        self._released = False  # close() ran: sockets and context released

    @property
    def curve_keypair(self) -> KeyPair | None:
        """This client's CURVE keypair (None without CURVE); a service uses it for its events."""
        return self._curve.pair if self._curve is not None else None

    # --- lifecycle --------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the sockets and learn the node names; Unavailable when no endpoint answers in time."""
        if self._closed:
            raise ClientClosed()
        if self._core is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._ctx = zmq.Context()
        self._links = DealerLinks(self._ctx, self._watch, self._curve)
        self._core = ClientCore(
            self.client_id,
            self._session,
            self._urls,
            self._options,
            self._links,
            time.monotonic(),
            self._ready.set,
        )
        self._schedule_turn()
        try:
            await asyncio.wait_for(self._ready.wait(), self.timeout)
        except TimeoutError:
            links = self._links
            await self.close()
            refusals = links.handshakes.refusals()
            if refusals:
                raise HandshakeRefused("connect", self.timeout, refusals) from None
            detail = f"no node answered at {', '.join(self._urls)}"
            raise Unavailable("connect", self.timeout, detail) from None

    async def close(self) -> None:
        """Close the sockets. Calls still waiting raise ClientClosed (a write among them may or may not
        have been applied). Safe to call more than once."""
        if self._released:
            return
        self._released = True
        self._fail(ClientClosed())
        if self._loop is not None:
            for fd in self._readers:
                self._loop.remove_reader(fd)
        self._readers.clear()
        if self._links is not None:
            self._links.close()
        if self._ctx is not None:
            self._ctx.term()

    def _fail(self, error: BaseException) -> None:
        """Take no more calls, stop the turns, and end every pending call with `error`."""
        self._closed = True
        for handle in (self._turn_handle, self._timer):
            if handle is not None:
                handle.cancel()
        inbox, self._inbox = self._inbox, []
        for sub in inbox:
            sub.on_done(error)
        controls, self._watch_controls = self._watch_controls, []
        for _, watch, _ in controls:
            watch.end(error)
        if self._core is not None:
            self._core.fail_all(error)
        for kept in list(self._kept):
            kept.stop()

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def nodes(self) -> dict[NodeId, str]:
        """The nodes discovered so far: name -> client URL."""
        return {} if self._core is None else dict(self._core.known)

    # --- writes -----------------------------------------------------------------------------------

    async def put(
        self, key: str, value: Any, *, lease: int | None = None, timeout: float | None = None
    ) -> int:
        """Set key to value; returns the new revision. With `lease`, attached to it, as Client.put."""
        return as_revision(await self._call(self._write("put", put_op(key, value, lease), timeout)))

    async def cas(self, key: str, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        """Set key to `new` only if its value is `expected` (None: only if absent); True if swapped."""
        return as_swapped(await self._call(self._write("cas", ["cas", key, expected, new], timeout)))

    async def delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Delete key; True if it existed."""
        return as_existed(await self._call(self._write("delete", ["del", key], timeout)))

    async def cas_delete(self, key: str, expected: Any, *, timeout: float | None = None) -> bool:
        """Delete key only if its value is `expected` (None: only if absent); True if it matched."""
        return as_swapped(await self._call(self._write("cas_delete", ["cas_del", key, expected], timeout)))

    async def cas_revision(
        self, key: str, mod_revision: int, new: Any, *, timeout: float | None = None
    ) -> bool:
        """Set key to `new` only if its mod revision is `mod_revision` (0: only if absent), as Client."""
        op = ["cas_rev", key, mod_revision, new]
        return as_swapped(await self._call(self._write("cas_revision", op, timeout)))

    async def cas_delete_revision(self, key: str, mod_revision: int, *, timeout: float | None = None) -> bool:
        """Delete key only if its mod revision is `mod_revision`; True if it matched."""
        op = ["cas_del_rev", key, mod_revision]
        return as_swapped(await self._call(self._write("cas_delete_revision", op, timeout)))

    async def delete_prefix(self, prefix: str, *, timeout: float | None = None) -> int:
        """Delete every key starting with prefix ("" = every key); returns how many were deleted."""
        return as_deleted(await self._call(self._write("delete_prefix", ["del_prefix", prefix], timeout)))

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, key: str, serializable: bool = False, *, timeout: float | None = None) -> Any:
        """The value of key, or None when absent. Linearizable unless serializable=True."""
        return as_value(await self._call(self._read("get", ["get", key], serializable, timeout)))

    async def get_kv(
        self, key: str, serializable: bool = False, *, timeout: float | None = None
    ) -> dict[str, Any] | None:
        """{"key", "value", "create_revision", "mod_revision", "version"} of key, or None when absent."""
        return as_kv(await self._call(self._read("get", ["get", key], serializable, timeout)))

    async def range(
        self,
        prefix: str,
        limit: int = 0,
        serializable: bool = False,
        *,
        after: str = "",
        timeout: float | None = None,
    ) -> RangePage:
        """One page of the keys starting with prefix and sorting after `after`, as Client.range."""
        request = self._read("range", range_op(prefix, limit, after), serializable, timeout)
        return page_from_result(await self._call(request))

    def range_all(
        self, prefix: str, *, page_size: int = 0, serializable: bool = False, timeout: float | None = None
    ) -> AsyncRangeIterator:
        """Every entry under prefix, in key order, a page at a time: `async for kv in c.range_all(p)`.
        A bad prefix or page size raises InvalidRequest here; a page's failure is raised by the loop."""
        self._read("range", range_op(prefix, page_size, ""), serializable, timeout)  # validate now

        async def fetch(after: str) -> RangePage:
            return await self.range(prefix, page_size, serializable, after=after, timeout=timeout)

        return AsyncRangeIterator(fetch)

    # --- status -----------------------------------------------------------------------------------

    async def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Every node's own view, as Client.status; Unavailable when no node answers."""
        limit = timeout if timeout is not None else min(self.timeout, STATUS_TIMEOUT)
        known = self._require_core().known
        deadline = time.monotonic() + limit
        names = list(known)
        done = await asyncio.gather(*(self._submit(RequestKind.STATUS, b"", deadline, n) for n in names))
        answers: dict[NodeId, dict[str, Any]] = {}
        for name, completion in zip(names, done, strict=True):
            status = parse_status(completion.result) if completion.outcome is Outcome.OK else None
            if status is not None:
                answers[name] = status
        if not answers:
            raise Unavailable("status", limit, "no node answered")
        return summarize(known, self._require_core().members, answers)

    # --- watches --------------------------------------------------------------------------------------

    def watch(
        self,
        key: str,
        prefix: bool = True,
        start_revision: int | None = None,
        *,
        window: int = 1000,
        prev_kv: bool = False,
    ) -> AsyncWatch:
        """Watch every change under `key` (or of the key itself with prefix=False), from `start_revision`
        (None: from now), with the previous values if `prev_kv`, as Client.watch: `async for event in
        c.watch(...)`, or `async with` it to close it at the block's end. See cluster/client/watch.py."""
        watch = AsyncWatch.checked(key, prefix, start_revision, window, prev_kv)
        self._require_core()
        watch.on_consumed = lambda n: self._watch_control("consumed", watch, n)
        watch.on_close = lambda: self._watch_control("close", watch)
        self._watch_control("open", watch)
        return watch

    def _watch_control(self, what: str, watch: AsyncWatch, n: int = 0) -> None:
        if self._closed:  # the close already ended the watch
            return
        self._watch_controls.append((what, watch, n))
        self._schedule_turn()

    # --- membership (actors/membership.py; README "changing the cluster") --------------------------

    async def member_list(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """The members in force, as the leader sees them: name, peer_url, client_url, learner, role
        (leader, voter, learner), reachable, match and lag (entries behind the leader's log)."""
        return members_view(await self.status(timeout=timeout))

    async def member_add(
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
        return await self._member(
            "member_add", ConfigChange("add", name, peer_url, client_url, curve_public_key), timeout
        )

    async def member_promote(self, name: str, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Make a learner a voter; InvalidRequest while it is further behind than the leader allows."""
        return await self._member("member_promote", ConfigChange("promote", name), timeout)

    async def member_remove(self, name: str, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Remove a member (the leader first hands leadership over when it is the one removed)."""
        return await self._member("member_remove", ConfigChange("remove", name), timeout)

    async def member_update(
        self,
        name: str,
        peer_url: str,
        client_url: str = "",
        *,
        curve_public_key: str = "",
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """Change a member's peer URL (and client URL and CURVE key, when given) without removing it."""
        return await self._member(
            "member_update", ConfigChange("update", name, peer_url, client_url, curve_public_key), timeout
        )

    async def _member(
        self, operation: str, change: ConfigChange, timeout: float | None
    ) -> list[dict[str, Any]]:
        return as_members(await self._call(member_request(operation, change, self._limit(timeout))))

    # --- leases (as Client's) ------------------------------------------------------------------------

    async def lease_grant(self, ttl: float, *, timeout: float | None = None) -> Lease:
        """Grant a lease of `ttl` seconds, as Client.lease_grant."""
        return as_lease(await self._call(self._write("lease_grant", lease_grant_op(ttl), timeout)))

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> float:
        """Renew the lease for its whole TTL; the seconds it now has left, as Client.lease_keepalive."""
        request = self._read("lease_keepalive", ["lease_keepalive", lease_id], False, timeout)
        return as_ttl(await self._call(request))

    async def lease_keepalive_many(
        self, lease_ids: Sequence[int], *, timeout: float | None = None
    ) -> dict[int, float | ZraftError]:
        """Renew many leases at once, as Client.lease_keepalive_many: per id, the seconds left or the
        error."""
        ids = list(dict.fromkeys(lease_ids))
        results = await asyncio.gather(
            *(self.lease_keepalive(lease_id, timeout=timeout) for lease_id in ids), return_exceptions=True
        )
        out: dict[int, float | ZraftError] = {}
        for lease_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, ZraftError):
                raise result
            out[lease_id] = result
        return out

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> int:
        """End the lease now, deleting its keys; returns how many, as Client.lease_revoke."""
        request = self._write("lease_revoke", ["lease_revoke", lease_id, 0], timeout)
        return as_deleted(await self._call(request))

    async def lease_info(self, lease_id: int, *, timeout: float | None = None) -> LeaseInfo:
        """The lease's granted TTL, seconds left and keys, as Client.lease_info."""
        request = self._read("lease_info", ["lease_info", lease_id], False, timeout)
        return as_lease_info(await self._call(request))

    async def lease_list(self, *, timeout: float | None = None) -> list[LeaseInfo]:
        """Every lease (without keys), by id, as Client.lease_list."""
        return as_lease_list(await self._call(self._read("lease_list", ["lease_list"], False, timeout)))

    def lease(self, ttl: float, *, timeout: float | None = None) -> AsyncKeptLease:
        """A lease kept alive by a task of this event loop (every ttl/3) from the start of an `async with`
        block until its end, which revokes it (deleting its keys), as Client.lease:

            async with c.lease(10) as lease:
                await c.put("servers/a", {...}, lease=lease.id)

        `await c.lease(ttl)` grants and starts renewing it without a block; `await lease.close()` ends it.
        """
        self._require_core()

        async def grant() -> Lease:
            return await self.lease_grant(ttl, timeout=timeout)

        async def keepalive(lease_id: int, limit: float) -> float:
            return await self.lease_keepalive(lease_id, timeout=min(limit, self.timeout))

        async def revoke(lease_id: int) -> int:
            return await self.lease_revoke(lease_id, timeout=timeout)

        kept = AsyncKeptLease(grant, keepalive, revoke, on_close=self._kept.discard)
        self._kept.add(kept)
        return kept

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

    async def _call(self, request: Request) -> dict[str, Any]:
        deadline = time.monotonic() + request.limit
        return interpret(request, await self._submit(request.kind, request.body, deadline))

    def _submit(
        self, kind: RequestKind, body: bytes | WriteEncoder, deadline: float, node: NodeId = ""
    ) -> asyncio.Future[Completion]:
        """Queue a request for the next turn; the future ends with its Completion (or ClientClosed).
        The actor, not a wait here, ends it at its deadline."""
        self._require_core()
        fut: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._inbox.append(Submission(kind, body, deadline, _completer(fut), node))
        self._schedule_turn()
        return fut

    def _require_core(self) -> ClientCore:
        if self._closed:
            raise ClientClosed()
        if self._core is None:
            raise RuntimeError("AsyncClient is not connected: use `async with AsyncClient(...)`")
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("an AsyncClient must be used from the event loop it connected in")
        return self._core

    def _schedule_turn(self) -> None:
        if self._turn_handle is None and not self._closed:
            assert self._loop is not None
            self._turn_handle = self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        """One driver turn; a failure of our own ends every call, as the blocking client's I/O thread does."""
        self._turn_handle = None
        try:
            self._run_turn()
        except Exception as exc:  # report to every waiting caller instead of leaving them hanging
            logger.exception("zraft AsyncClient driver failed")
            self._fail(ZraftError(f"client driver failed: {exc}"))

    def _run_turn(self) -> None:
        """The frames that arrived, the calls made since the last turn, the timers."""
        core, loop = self._core, self._loop
        assert core is not None and loop is not None
        now = time.monotonic()
        frames, self._received = self._received, []
        for frame in frames:
            core.receive(frame, now)
        # The inbox is emptied only once the turn took it, so a failing turn still ends its calls (a call
        # ended twice keeps its first outcome).
        core.turn(self._inbox, now, self._watch_controls)
        self._inbox = []
        self._watch_controls = []
        assert self._links is not None
        self._links.take_handshakes()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = core.next_due()
        if due != float("inf") and not self._closed:
            self._timer = loop.call_later(max(0.0, due - time.monotonic()), self._on_timer)
        self._recheck_input()

    def _on_timer(self) -> None:
        self._timer = None
        self._schedule_turn()

    def _watch(self, sock: zmq.Socket[Any]) -> None:
        assert self._loop is not None
        fd = int(sock.getsockopt(zmq.FD))
        self._readers[fd] = sock
        self._loop.add_reader(fd, self._on_readable, sock)
        self._loop.call_soon(self._on_readable, sock)  # input queued before now raised no edge

    def _on_readable(self, sock: zmq.Socket[Any]) -> None:
        """Take the frames waiting on `sock` (a batch at most) and run a turn with them now."""
        if self._released:
            return
        taken = 0
        try:
            while taken < _RECV_BATCH:
                self._received.append(sock.recv(zmq.NOBLOCK))
                taken += 1
        except zmq.Again:
            pass
        if taken:
            self._turn_now()
        if taken == _RECV_BATCH and not self._released:
            self._loop_soon(self._on_readable, sock)  # more is queued: after the other sockets' turn

    def _recheck_input(self) -> None:
        """A send may take a socket's edge with input still queued: read such a socket in the next pass."""
        for sock in self._readers.values():
            if int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                self._loop_soon(self._on_readable, sock)

    def _loop_soon(self, callback: Callable[[zmq.Socket[Any]], None], sock: zmq.Socket[Any]) -> None:
        assert self._loop is not None
        self._loop.call_soon(callback, sock)

    def _turn_now(self) -> None:
        """Run the turn now instead of at the next pass of the loop."""
        handle, self._turn_handle = self._turn_handle, None
        if handle is not None:
            handle.cancel()
        if not self._closed:
            self._turn()


def _completer(fut: asyncio.Future[Completion]) -> Callable[[Completion | BaseException], None]:
    def on_done(outcome: Completion | BaseException) -> None:
        if fut.done():  # its caller was cancelled: the answer has no one to go to
            return
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)

    return on_done
