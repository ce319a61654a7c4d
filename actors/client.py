"""ClientActor: the client side of zraft as a state machine (no sockets, no clock).

It owns request ids, the client's session id and per-session write sequence numbers (Raft dissertation
6.3: a retried write carries the same sequence number, so the state machine applies it at most once),
the current guess of the leader, and per-request retry timers with jittered exponential backoff inside
each request's deadline. Many requests may be in flight at once.
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


@dataclass(frozen=True, slots=True)
class Completion:
    handle: int
    outcome: Outcome
    result: bytes


@dataclass(slots=True)
class _Pending:
    handle: int
    kind: RequestKind
    payload: bytes
    deadline: float
    seq: int  # 0 for reads
    target: NodeId = ""
    retry_at: float = 0.0
    attempts: int = 0
    sent: bool = False
    maybe_applied: bool = False  # a write attempt went unanswered or got UNKNOWN: it may still commit


@dataclass(slots=True)
class ClientOptions:
    attempt_timeout: float = 1.0  # resend to another node when a node stays silent this long
    backoff_base: float = 0.02
    backoff_max: float = 1.0
    max_redirects_without_backoff: int = 3
    # Writes wait (unsent, without a sequence number) while the newest seq would be this far past the
    # oldest open one: the state machine caches a bounded number of answers per session, so a long-stuck
    # write must not be overtaken by more writes than that cache holds. The client facade sets it from
    # the state machine's own limit (cluster/client/calls.py SEQ_WINDOW).
    max_seq_window: int = 1000


WriteEncoder = Callable[[int, int, int], bytes]  # (session, seq, ack_floor) -> command bytes


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
    _deferred: deque[tuple[int, WriteEncoder, float]] = field(
        default_factory=deque
    )  # handle, encode, deadline

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a client needs at least one node")
        self._node_cursor = self.rng.randrange(len(self.nodes))

    # --- submitting -------------------------------------------------------------------------------

    def write(self, encode: WriteEncoder, now: float, timeout: float) -> int:
        """Submit a write; `encode` builds the command from (session, seq, ack_floor)."""
        handle = self._next_handle
        self._next_handle += 1
        if self._deferred or self._window_full():
            self._deferred.append((handle, encode, now + timeout))
        else:
            self._start_write(handle, encode, now + timeout, now)
        return handle

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
        pending = _Pending(handle, RequestKind.WRITE, payload, deadline, seq)
        self._pending[handle] = pending
        self._send(pending, self._leader or self._rotate(), now)

    def _release_deferred(self, now: float) -> None:
        while self._deferred and (now >= self._deferred[0][2] or not self._window_full()):
            handle, encode, deadline = self._deferred.popleft()
            if now >= deadline:  # never sent: certainly not applied, but the caller's time is up
                self._done.append(Completion(handle, Outcome.NOT_APPLIED, b""))
            else:
                self._start_write(handle, encode, deadline, now)

    def read(self, query: bytes, now: float, timeout: float, serializable: bool = False) -> int:
        kind = RequestKind.SERIAL_READ if serializable else RequestKind.READ
        return self._submit(kind, query, now, timeout, 0)

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
            self._send(pending, self._leader or self._rotate(), now)
        return handle

    # --- inputs -----------------------------------------------------------------------------------

    def step(self, msg: ClientResponse, now: float) -> None:
        pending = self._pending.get(msg.req_id)
        if pending is None:
            return  # a late answer to something already finished
        status = msg.status
        if status == Status.OK:
            if pending.kind in (RequestKind.WRITE, RequestKind.READ):
                self._leader = msg.src
            self._finish(pending, Outcome.OK, msg.result)
        elif status == Status.BAD_REQUEST or pending.kind == RequestKind.STATUS:
            self._finish(pending, Outcome.REJECTED, msg.result)
        elif status == Status.BUSY and msg.src == pending.target and not pending.maybe_applied:
            self._leader = msg.src  # only a leader is ever busy
            self._finish(pending, Outcome.BUSY, msg.result)
        elif status == Status.NOT_LEADER and msg.src == pending.target:
            hint = msg.leader_hint if msg.leader_hint in self.nodes and msg.leader_hint != msg.src else ""
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
                self._finish(pending, Outcome.NOT_APPLIED if unproposed else Outcome.TIMEOUT, b"")
            elif pending.kind == RequestKind.STATUS and now >= pending.retry_at:
                self._send(pending, pending.target, now)  # a status is a question to one node: ask it again
            elif not pending.sent and now >= pending.retry_at:
                self._send(pending, self._leader or self._rotate(), now)
            elif pending.sent and now >= pending.retry_at:
                pending.maybe_applied = pending.kind == RequestKind.WRITE
                if pending.target == self._leader:
                    self._leader = ""  # silent leader: try the others
                self._send(pending, self._rotate(avoid=pending.target), now)
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

    def _rotate(self, avoid: NodeId = "") -> NodeId:
        self._node_cursor = (self._node_cursor + 1) % len(self.nodes)
        node = self.nodes[self._node_cursor]
        if node == avoid and len(self.nodes) > 1:
            return self._rotate()
        return node

    def _finish(self, pending: _Pending, outcome: Outcome, result: bytes) -> None:
        del self._pending[pending.handle]
        if pending.seq:
            self._open_seqs.discard(pending.seq)
        self._done.append(Completion(pending.handle, outcome, result))
