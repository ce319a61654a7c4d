"""ClientActor: the client side of zraft as a state machine (no sockets, no clock).

It owns request ids, the client's session id and per-session write sequence numbers (Raft dissertation
6.3: a retried write carries the same sequence number, so the state machine applies it at most once),
the current guess of the leader, and per-request retry timers with jittered exponential backoff inside
each request's deadline. Many requests may be in flight at once.

Sessions (with `ClientOptions.sessions`; the formats are the state machine's, handed in as SessionHooks so
that this module knows no command): the first write registers a session through the log and waits for
its id, as do the writes behind it. A session the client left idle for half its TTL (by the client's
clock) is dropped before the next write and a fresh one registered: an idle session may expire at no
cost, since none of its writes is in flight, so no keepalive entries are written for idle clients.
A write refused because its session is unknown (expired or evicted) was not applied by that attempt and
never will be by any later one; if no earlier attempt of it can have been applied either (every earlier
one was answered with a refusal that proves it never reached the log), it is sent again under a fresh
session, transparently. Otherwise it ends with Outcome.SESSION_EXPIRED: an earlier attempt may have been
applied (once), and the caller must find out. Without hooks the fixed `session` is used as it is.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from actors.messages import ClientRequest, ClientResponse, NodeId, RequestKind, Status


class Outcome(Enum):
    OK = "ok"  # result holds the state machine's answer
    REJECTED = "rejected"  # definite failure: never applied (result holds the reason)
    BUSY = "busy"  # the leader refused it as overloaded, and no attempt of it can have been applied
    TIMEOUT = "timeout"  # deadline passed; a write may or may not have been applied
    NOT_APPLIED = "not_applied"  # a write's deadline passed, but every attempt was refused unproposed
    # a write's session ended (expired or evicted) while it was retried: an earlier attempt may have been
    # applied, once; no attempt of it will be from now on
    SESSION_EXPIRED = "session_expired"


@dataclass(frozen=True, slots=True)
class Completion:
    handle: int
    outcome: Outcome
    result: bytes


WriteEncoder = Callable[[int, int, int], bytes]  # (session, seq, ack_floor) -> command bytes


@dataclass(frozen=True, slots=True)
class SessionHooks:
    """The state machine's formats for sessions (cluster/client/commands.py makes them)."""

    open_command: bytes  # the write that registers a session
    opened: Callable[[bytes], tuple[int, float] | None]  # its result -> (session id, TTL s), None if failed
    refused: Callable[[bytes], bool]  # whether a write's result says its session is unknown


@dataclass(slots=True)
class _Pending:
    handle: int
    kind: RequestKind
    payload: bytes
    deadline: float
    seq: int  # 0 for reads
    encode: WriteEncoder | None = None  # a session write's encoder, to resend it under a new session
    session: int = 0  # the session of a write's payload
    target: NodeId = ""
    retry_at: float = 0.0
    attempts: int = 0
    sent: bool = False
    maybe_applied: bool = False  # a write attempt went unanswered or got UNKNOWN: it may still commit


@dataclass(slots=True)
class ClientOptions:
    attempt_timeout: float = 1.0  # resend to another node when a node stays silent this long
    backoff_base: float = 0.02
    # A request waits at most this long between attempts while no leader is known: after a leader dies a
    # new one is elected in a fraction of a second (actors/node.py peer_disconnected), and a longer wait
    # would only add to the client's failover. At a few retries a second per request, a cluster without a
    # leader answers them at no real cost.
    backoff_max: float = 0.25
    max_redirects_without_backoff: int = 3
    # After a node left an attempt unanswered, how long hints naming it are not followed (see _silent): a
    # follower that has not yet noticed its leader die still names it for a moment.
    silence_memory: float = 1.0
    # Writes wait (unsent, without a sequence number) while the newest seq would be this far past the
    # oldest open one: the state machine caches a bounded number of answers per session, so a long-stuck
    # write must not be overtaken by more writes than that cache holds. The client facade sets it from
    # the state machine's own limit (cluster/client/calls.py SEQ_WINDOW).
    max_seq_window: int = 1000
    sessions: SessionHooks | None = None  # register sessions through the log (see the module docstring)
    session_open_timeout: float = 5.0  # one registration attempt's bound; another follows while writes wait


@dataclass(slots=True)
class ClientActor:
    client_id: NodeId
    nodes: tuple[NodeId, ...]
    session: int
    rng: random.Random
    options: ClientOptions = field(default_factory=ClientOptions)
    _leader: NodeId = ""
    _next_handle: int = 1
    _next_seq: int = 1
    _pending: dict[int, _Pending] = field(default_factory=dict)
    _open_seqs: set[int] = field(default_factory=set)
    # The same seqs in the order they were started, which is increasing order, so the oldest open one is
    # at the front once finished ones are dropped from it (min() of the set cost O(window) per write).
    _open_order: deque[int] = field(default_factory=deque)
    _outbox: list[ClientRequest] = field(default_factory=list)
    _done: list[Completion] = field(default_factory=list)
    _node_cursor: int = 0
    # Nodes that let an attempt go unanswered (when) and have not answered anything since: probably down.
    # For `silence_memory` seconds a hint naming one is not followed and rotation passes it by while
    # another node is left; after that it is tried again like any other (it may be back, and nothing
    # else would ever send it a request to answer).
    _silent: dict[NodeId, float] = field(default_factory=dict)
    _deferred: deque[tuple[int, WriteEncoder, float]] = field(
        default_factory=deque
    )  # handle, encode, deadline
    _opening: int = 0  # the handle of the session registration in flight
    _session_ttl: float = 0.0
    _active_at: float = 0.0  # when the session was registered or last answered a write (this clock)
    sessions_opened: int = 0
    sessions_lost: int = 0  # sessions found unknown by the cluster (expired or evicted)
    writes_resent: int = 0  # writes refused for their session, never applied, sent again under a new one

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a client needs at least one node")
        self._node_cursor = self.rng.randrange(len(self.nodes))
        if self.options.sessions is not None:
            self.session = 0  # registered on the first write

    # --- submitting -------------------------------------------------------------------------------

    def write(self, encode: WriteEncoder, now: float, timeout: float) -> int:
        """Submit a write; `encode` builds the command from (session, seq, ack_floor)."""
        handle = self._next_handle
        self._next_handle += 1
        if self._deferred or self._window_full() or not self._session_ready(now):
            self._deferred.append((handle, encode, now + timeout))
            self._release_deferred(now)  # starts a registration if one is needed
        else:
            self._start_write(handle, encode, now + timeout, now)
        return handle

    def _session_ready(self, now: float) -> bool:
        """Whether writes may start with the current session (dropping an idle one, see the docstring)."""
        if self.options.sessions is None:
            return True
        if self.session and now - self._active_at > self._session_ttl / 2 and not self._session_in_use():
            self.session = 0
        return self.session != 0

    def _session_in_use(self) -> bool:
        return any(p.session == self.session for p in self._pending.values())

    def _open_session(self, now: float) -> None:
        hooks = self.options.sessions
        assert hooks is not None
        handle = self._next_handle
        self._next_handle += 1
        deadline = now + self.options.session_open_timeout
        self._opening = handle
        pending = _Pending(handle, RequestKind.WRITE, hooks.open_command, deadline, 0)
        self._pending[handle] = pending
        self._send(pending, self._leader or self._rotate(now), now)

    def _opened(self, pending: _Pending, outcome: Outcome, result: bytes, now: float) -> None:
        """A registration ended: take its session, or fail the writes waiting for one if it was refused."""
        hooks = self.options.sessions
        assert hooks is not None
        self._opening = 0
        session = hooks.opened(result) if outcome is Outcome.OK else None
        if session is not None:
            self.session, self._session_ttl = session
            self._active_at = now
            self.sessions_opened += 1
        elif outcome in (Outcome.OK, Outcome.REJECTED, Outcome.BUSY):
            # refused (or refused as busy): the writes behind it would be too, and none was sent
            failed = Outcome.BUSY if outcome is Outcome.BUSY else Outcome.REJECTED
            while self._deferred:
                handle, _, _ = self._deferred.popleft()
                self._done.append(Completion(handle, failed, result))

    def _window_full(self) -> bool:
        return bool(self._open_seqs) and self._next_seq - self._oldest_open() >= self.options.max_seq_window

    def _oldest_open(self) -> int:
        """The smallest open seq (there must be one)."""
        order = self._open_order
        while order[0] not in self._open_seqs:
            order.popleft()
        return order[0]

    def _start_write(self, handle: int, encode: WriteEncoder, deadline: float, now: float) -> None:
        seq = self._next_seq
        self._next_seq += 1
        self._open_seqs.add(seq)
        self._open_order.append(seq)
        payload = encode(self.session, seq, self._oldest_open())
        pending = _Pending(handle, RequestKind.WRITE, payload, deadline, seq, encode, self.session)
        self._pending[handle] = pending
        self._send(pending, self._leader or self._rotate(now), now)

    def _release_deferred(self, now: float) -> None:
        while self._deferred:
            handle, encode, deadline = self._deferred[0]
            if now >= deadline:  # never sent: certainly not applied, but the caller's time is up
                self._deferred.popleft()
                self._done.append(Completion(handle, Outcome.NOT_APPLIED, b""))
            elif self._window_full():
                return
            elif not self._session_ready(now):
                if not self._opening:
                    self._open_session(now)
                return
            else:
                self._deferred.popleft()
                self._start_write(handle, encode, deadline, now)

    def read(self, query: bytes, now: float, timeout: float, serializable: bool = False) -> int:
        kind = RequestKind.SERIAL_READ if serializable else RequestKind.READ
        return self._submit(kind, query, now, timeout, 0)

    def member(self, payload: bytes, now: float, timeout: float) -> int:
        """A membership change (its payload encoded by the caller): retried like a read until the leader
        answers; the node answers a retry of a change already in force with OK."""
        return self._submit(RequestKind.MEMBER, payload, now, timeout, 0)

    def status(self, node: NodeId, now: float, timeout: float) -> int:
        handle = self._submit(RequestKind.STATUS, b"", now, timeout, 0, send=False)
        self._send(self._pending[handle], node, now)
        return handle

    def _submit(
        self, kind: RequestKind, payload: bytes, now: float, timeout: float, seq: int, send: bool = True
    ) -> int:
        handle = self._next_handle
        self._next_handle += 1
        pending = _Pending(handle, kind, payload, now + timeout, seq)
        self._pending[handle] = pending
        if send:
            self._send(pending, self._leader or self._rotate(now), now)
        return handle

    # --- inputs -----------------------------------------------------------------------------------

    def step(self, msg: ClientResponse, now: float) -> None:
        self._silent.pop(msg.src, None)
        pending = self._pending.get(msg.req_id)
        if pending is None:
            return  # a late answer to something already finished
        status = msg.status
        hooks = self.options.sessions
        if status == Status.OK and pending.session and hooks is not None and hooks.refused(msg.result):
            self._leader = msg.src
            self._session_refused(pending, msg.result, now)
        elif status == Status.OK:
            if pending.kind in (RequestKind.WRITE, RequestKind.READ, RequestKind.MEMBER):
                self._leader = msg.src
            if pending.session and pending.session == self.session:
                self._active_at = now
            self._finish(pending, Outcome.OK, msg.result, now)
        elif status == Status.BAD_REQUEST or pending.kind == RequestKind.STATUS:
            self._finish(pending, Outcome.REJECTED, msg.result, now)
        elif status == Status.BUSY and msg.src == pending.target and not pending.maybe_applied:
            self._leader = msg.src  # only a leader is ever busy
            self._finish(pending, Outcome.BUSY, msg.result, now)
        elif status == Status.NOT_LEADER and msg.src == pending.target:
            hint = msg.leader_hint
            if hint not in self.nodes or hint == msg.src or self._is_silent(hint, now):
                hint = ""
            self._leader = hint
            if hint and pending.attempts <= self.options.max_redirects_without_backoff:
                self._send(pending, hint, now)
            else:
                self._backoff(pending, now)
        elif msg.src == pending.target:  # UNAVAILABLE, UNKNOWN, or BUSY after an attempt that may commit
            if status == Status.UNKNOWN:
                self._leader = msg.leader_hint if msg.leader_hint in self.nodes else ""
                pending.maybe_applied = True
            self._backoff(pending, now)
        self._release_deferred(now)

    def tick(self, now: float) -> None:
        for pending in list(self._pending.values()):
            if now >= pending.deadline:
                # A write none of whose attempts can have been proposed (each was refused before it was,
                # and none is in flight) is known not applied; any other that times out may have been.
                unproposed = pending.kind == RequestKind.WRITE and not (pending.maybe_applied or pending.sent)
                self._finish(pending, Outcome.NOT_APPLIED if unproposed else Outcome.TIMEOUT, b"", now)
            elif pending.kind == RequestKind.STATUS and now >= pending.retry_at:
                self._send(pending, pending.target, now)  # a status is a question to one node: ask it again
            elif not pending.sent and now >= pending.retry_at:
                self._send(pending, self._leader or self._rotate(now), now)
            elif pending.sent and now >= pending.retry_at:
                pending.maybe_applied = pending.kind == RequestKind.WRITE
                self._silent[pending.target] = now
                if pending.target == self._leader:
                    self._leader = ""  # silent leader: try the others
                self._send(pending, self._rotate(now, avoid=pending.target), now)
        self._release_deferred(now)

    def next_deadline(self) -> float:
        soonest = min((min(p.deadline, p.retry_at) for p in self._pending.values()), default=float("inf"))
        if self._deferred:
            soonest = min(soonest, min(deadline for _, _, deadline in self._deferred))
        return soonest

    # --- outputs ----------------------------------------------------------------------------------

    def take_messages(self) -> list[ClientRequest]:
        out, self._outbox = self._outbox, []
        return out

    def take_completions(self) -> list[Completion]:
        out, self._done = self._done, []
        return out

    @property
    def in_flight(self) -> int:
        return len(self._pending) + len(self._deferred)

    @property
    def leader_guess(self) -> NodeId:
        return self._leader

    # --- internals --------------------------------------------------------------------------------

    def _send(self, pending: _Pending, node: NodeId, now: float) -> None:
        pending.target = node
        pending.attempts += 1
        pending.sent = True
        pending.retry_at = min(pending.deadline, now + self.options.attempt_timeout)
        self._outbox.append(
            ClientRequest(self.client_id, node, pending.handle, pending.kind, pending.payload)
        )

    def _backoff(self, pending: _Pending, now: float) -> None:
        exp = min(self.options.backoff_max, self.options.backoff_base * (2 ** min(pending.attempts, 16)))
        pending.sent = False
        pending.retry_at = min(pending.deadline, now + exp * (0.5 + self.rng.random() / 2))

    def _is_silent(self, node: NodeId, now: float) -> bool:
        since = self._silent.get(node)
        return since is not None and now - since < self.options.silence_memory

    def _rotate(self, now: float, avoid: NodeId = "") -> NodeId:
        """The next node in turn, other than `avoid` and the silent ones while any other is left."""
        nodes = self.nodes
        for skip_silent in (True, False):
            for _ in range(len(nodes)):
                self._node_cursor = (self._node_cursor + 1) % len(nodes)
                node = nodes[self._node_cursor]
                if node != avoid and not (skip_silent and self._is_silent(node, now)):
                    return node
        return nodes[self._node_cursor]  # a single node, and it is `avoid`

    def _session_refused(self, pending: _Pending, result: bytes, now: float) -> None:
        """A write's session is unknown to the cluster: this attempt was not applied, nor will any be."""
        if pending.session == self.session:
            self.session = 0  # the next write registers a fresh one
            self.sessions_lost += 1
        if pending.maybe_applied:  # an earlier attempt may have been applied: only the caller can tell
            self._finish(pending, Outcome.SESSION_EXPIRED, result, now)
            return
        # Never applied: send it again, first in line, under the next session.
        self.writes_resent += 1
        del self._pending[pending.handle]
        self._open_seqs.discard(pending.seq)
        assert pending.encode is not None
        self._deferred.appendleft((pending.handle, pending.encode, pending.deadline))

    def _finish(self, pending: _Pending, outcome: Outcome, result: bytes, now: float) -> None:
        del self._pending[pending.handle]
        if pending.seq:
            self._open_seqs.discard(pending.seq)
        if pending.handle == self._opening:
            self._opened(pending, outcome, result, now)
            return
        self._done.append(Completion(pending.handle, outcome, result))
