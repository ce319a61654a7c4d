"""KVService: the client protocol of one node, between clients' requests and the Raft core (NodeActor).

It owns what NodeActor must not know: the request kinds (WRITE, READ, SERIAL_READ, STATUS); the checks a
write passes before anything is proposed (a command the state machine would refuse, a client write to the
reserved "__zraft/" keys: DESIGN.md rule 7, nothing invalid reaches the log); the proposals and reads that
wait for the Raft core, and their answers; and the counts of what it refused, by reason. No I/O: the
runtime (cluster/node/runtime.py) and the simulator (tests/sim/harness.py) hand it each request with the
connection it came in on and the port it came in on, and send its answers back on that connection. A
request's declared `src` is only echoed in the answer, never used to route one (rule 7).

Per Ready (DESIGN.md rule 6): `on_ready(rd)` turns the results of our own applied proposals, the reads that
became safe and the leadership we lost into answers, which depend on nothing the Ready persists, so the
runtime sends them with the Ready's early messages, before its fsync.

Watches (cluster/kv/watches.py owns their protocol and registry): WATCH, WATCH_CANCEL and WATCH_ACK go to
the registry, which pushes its stream frames through the same answers; `pump_watches(now)` runs every
loop turn. A node serves them from its applied state, whatever its role.

Reserved keys: every key under RESERVED_PREFIX belongs to the nodes (the advertised client URLs). A write
from the client port that could change one is refused with BAD_REQUEST: put, del, cas and cas_del of such
a key, and a del_prefix whose prefix covers any of them ("", "_", "__z", ... "__zraft/" and anything
under it), rather than silently deleting only the other keys. Writes from the peer port (a member's own
advertise write, which the admission code lets in only from that member's connection) may touch them.
Reads of the reserved keys are open to everyone: clients discover the nodes through them.

Leases (cluster/kv/leases.py): grant and revoke are writes that the leader stamps with its log time
(`LogClock`) before proposing them, and a grant below the minimum TTL is refused before anything is
proposed. The leader's `LeaseTracker` judges expiry by the clock the runtime hands to `tick(now)`, and
proposes one lease_revoke entry for each lease past its deadline. Keepalives, lease_info and lease_list
are READ queries answered here, never by the state machine: a keepalive renews the lease in the tracker
only once a ReadIndex round has confirmed that this node is still the leader (a deposed leader that
renewed a lease and answered would tell the client its lease lives while the real leader expires it).
A new leader's tracker gives every lease a fresh TTL plus the election timeout, and the old leader
answered a keepalive only while it still was the leader, so a lease renewed at time t by the old leader
lives at least until t + TTL: a leader change never expires a live lease early.

Sessions (cluster/kv/sessions.py): the leader stamps the writes of client sessions with the same log time
(`LogClock`) as the lease entries, as a fifth element of the command, and fills in a `session_open`
entry's TTL (`session_ttl`, this node's setting) and stamp; the state machine judges expiry from those
stamps alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Generic, TypeVar

import msgpack

from actors.contracts import Ready, Refusal, StateMachine
from actors.membership import already_done
from actors.messages import ClientRequest, ClientResponse, NodeId, RequestKind, Status
from actors.node import ChangeRefused, NodeActor, Role
from cluster.kv.leases import MAX_TTL_MS, LeaseTable, LeaseTracker, LogClock
from cluster.kv.machine import KVStateMachine, Parsed
from cluster.kv.members import member_result, parse_member_request
from cluster.kv.ops import (
    LEASE_EXPIRED_CODE,
    LEASE_NOT_FOUND_CODE,
    LEASE_QUERIES,
    Invalid,
    encode_command,
    error,
    pack,
    parse_command,
    parse_query,
    parse_stamped,
    stamp_command,
)
from cluster.kv.permissions import PERMISSION_DENIED_CODE, Permissions, is_user_write
from cluster.kv.sessions import DEFAULT_SESSION_TTL_MS, MAX_SESSION_TTL_MS
from cluster.kv.watches import WatchOptions, WatchRegistry, parse_stream_id, parse_watch

RESERVED_PREFIX: Final = "__zraft/"
CHECKPOINT_BATCH: Final = 1000  # leases per checkpoint entry (etcd's batch), well inside MAX_COMMAND_BYTES
MAX_REASON_BYTES: Final = 200

C = TypeVar("C", bound=Hashable)


class Origin(Enum):
    """Which port a request came in on: it decides what the request may do, whatever it claims to be."""

    CLIENT = "client"  # the client port: anyone
    MEMBER = "member"  # the peer port (a member's advertise write) or the node itself


@dataclass(slots=True)
class _Waiting(Generic[C]):
    """Who gets the answer to a proposal or a read, and what it needs."""

    conn: C | None  # None: nobody to answer (the node's own request)
    src: NodeId
    req_id: int
    term: int  # a proposal's term; 0 for a read
    query: bytes  # a read's query; b"" for a proposal
    member: str = ""  # a membership change: the member it removes ("" for others), answered with the list


_BUSY_TEXTS: Final = {
    "proposals": b"too many writes wait for commit; retry later",
    "reads": b"too many reads wait for confirmation; retry later",
}


def touches_reserved(op: list[Any]) -> bool:
    """Whether a validated write op could change a key under RESERVED_PREFIX."""
    if op[0] in ("lease_grant", "lease_revoke", "lease_checkpoint", "session_open"):
        return False
    if op[0] == "del_prefix":
        prefix: str = op[1]
        return RESERVED_PREFIX.startswith(prefix) or prefix.startswith(RESERVED_PREFIX)
    key: str = op[1]
    return key.startswith(RESERVED_PREFIX)


class KVService(Generic[C]):
    """The client protocol of one node; see the module docstring. `C` is whatever names a connection."""

    def __init__(
        self,
        node: NodeActor,
        sm: StateMachine,
        status: Callable[[], dict[str, Any]] | None = None,
        watch_options: WatchOptions | None = None,
        election_timeout: float = 1.0,
        min_lease_ttl: float | None = None,
        lease_checkpoint_interval: float = 300.0,
        session_ttl: float = DEFAULT_SESSION_TTL_MS / 1000,
        is_member_key: Callable[[str], bool] | None = None,
        enforce_permissions: bool = True,
    ) -> None:
        """`election_timeout` is the Raft base election timeout (s): the grace a new leader adds to every
        lease. `min_lease_ttl` (s) defaults to three election timeouts: a shorter lease could expire
        during an ordinary election. Leases longer than twice `lease_checkpoint_interval` (s) have their
        remaining TTL written to the log that often (cluster/kv/leases.py). `session_ttl` (s) is the idle
        time after which a client session this node registers as leader expires (cluster/kv/sessions.py)."""
        if not 0 < session_ttl * 1000 <= MAX_SESSION_TTL_MS:
            raise ValueError(f"session_ttl must be positive and at most {MAX_SESSION_TTL_MS // 1000} s")
        self._session_ttl_ms = max(1, round(session_ttl * 1000))
        self._node = node
        self._sm = sm
        self.permissions = Permissions(sm, is_member_key or (lambda _key: False), enforce_permissions)
        self._leases: LeaseTable | None = getattr(sm, "leases", None)  # None: a state machine without
        self._tracker = LeaseTracker(election_timeout)
        self._clock = LogClock()
        self._election_timeout = election_timeout
        self.min_lease_ttl = 3 * election_timeout if min_lease_ttl is None else min_lease_ttl
        self._now = 0.0
        self.leases_expired = 0
        self._checkpoint_interval = lease_checkpoint_interval
        self._next_checkpoint = float("inf")
        self._checkpoint_term = -1
        # leases in our periodic checkpoints not yet applied, and the last such entry's index: a keepalive
        # of one of them resets its checkpoint through the log, after that entry
        self._checkpointing: set[int] = set()
        self._checkpoint_index = 0
        self._status = status or node.status
        self._proposals: dict[int, _Waiting[C]] = {}  # log index -> who proposed it
        self._reads: dict[int, _Waiting[C]] = {}  # read token -> who asked
        self._next_token = 1
        self._answers: dict[C, list[ClientResponse]] = {}
        self.refused: Counter[str] = Counter()  # by reason
        self.unanswerable = 0  # answers for the node's own requests, dropped by design
        self.watches: WatchRegistry[C] | None = None
        self._kv = sm if isinstance(sm, KVStateMachine) else None
        if isinstance(sm, KVStateMachine):
            kv = sm
            self.watches = WatchRegistry(
                node.id, lambda: kv.history, lambda: kv.revision, self._push, watch_options
            )

    # --- input ----------------------------------------------------------------------------------------

    def request(self, req: ClientRequest, conn: C | None, origin: Origin, principal: str = "") -> None:
        """Handle one request that came in on `conn` (None: the node's own, answered to nobody).
        `principal` is the CURVE public key the client's connection proved ("" without CURVE): what the
        permissions (cluster/kv/permissions.py) are checked against for requests from the client port."""
        kind = req.kind
        if origin is Origin.CLIENT and kind in (RequestKind.READ, RequestKind.SERIAL_READ):
            denied = self.permissions.query_denied(principal, req.payload)
            if denied is not None:
                self._deny(req, conn, denied)
                return
        if kind == RequestKind.WRITE:
            self._write(req, conn, origin, principal)
        elif kind == RequestKind.READ:
            if b"lease_" in req.payload[:16] and not self._lease_query_ok(req, conn):
                return  # answered already (refused, or a keepalive that waits for its checkpoint reset)
            token = self._next_token
            self._next_token += 1
            refusal = self._node.read_index(token)
            if refusal is None:
                self._reads[token] = _Waiting(conn, req.src, req.req_id, 0, req.payload)
            else:
                self._refuse(req, conn, refusal, "reads")
        elif kind == RequestKind.SERIAL_READ:
            self._answer(conn, req.src, req.req_id, Status.OK, self._sm.query(req.payload))
        elif kind == RequestKind.STATUS:
            self._answer(conn, req.src, req.req_id, Status.OK, self._encoded_status())
        elif kind in (RequestKind.WATCH, RequestKind.WATCH_CANCEL, RequestKind.WATCH_ACK):
            self._watch_request(req, conn, principal if origin is Origin.CLIENT else None)
        elif kind == RequestKind.MEMBER:
            denied = self.permissions.member_change_denied(principal) if origin is Origin.CLIENT else None
            if denied is not None:
                self._deny(req, conn, denied)
                return
            self._member_change(req, conn)
        else:
            self._bad_request(req, conn, "unknown_kind", "unknown request kind")

    def on_ready(self, rd: Ready) -> None:
        """Answer what the Ready reports: applied proposals, reads now safe or failed, leadership lost."""
        proposals = self._proposals
        if self._checkpointing and self._node.applied_index >= self._checkpoint_index:
            self._checkpointing.clear()
        for applied in rd.applied:
            waiting = proposals.pop(applied.index, None)
            if waiting is None:
                continue
            if waiting.term == applied.term and waiting.query and self._needs_reset(waiting.query):
                text = b"lease checkpoint under way; retry"  # checkpointed again meanwhile
                self._answer(waiting.conn, waiting.src, waiting.req_id, Status.UNAVAILABLE, text)
            elif waiting.term == applied.term and waiting.query:  # a keepalive behind its checkpoint reset
                self._answer(
                    waiting.conn, waiting.src, waiting.req_id, Status.OK, self._lease_query(waiting.query)
                )
            elif waiting.term == applied.term and waiting.member:
                result = member_result(self._node.configuration, applied.index)
                self._answer(waiting.conn, waiting.src, waiting.req_id, Status.OK, result)
                self._forget_member(waiting.member)
            elif waiting.term == applied.term:
                self._answer(waiting.conn, waiting.src, waiting.req_id, Status.OK, applied.result)
            else:  # cannot happen while the core reports only its own term's entries; never guess
                self._answer(waiting.conn, waiting.src, waiting.req_id, Status.UNKNOWN, b"")
        reads = self._reads
        for token in rd.reads:
            waiting = reads.pop(token, None)
            if waiting is not None:
                if b"lease_" in waiting.query[:16] and self._needs_reset(waiting.query):
                    # checkpointed since it came in: a renewal now could be cut short by the checkpoint
                    # under the next leader; the retry resets the checkpoint first (_lease_query_ok)
                    text = b"lease checkpoint under way; retry"
                    self._answer(waiting.conn, waiting.src, waiting.req_id, Status.UNAVAILABLE, text)
                    continue
                if b"lease_" in waiting.query[:16]:
                    result = self._lease_query(waiting.query)
                else:
                    result = self._sm.query(waiting.query)
                self._answer(waiting.conn, waiting.src, waiting.req_id, Status.OK, result)
        for token in rd.failed_reads:
            waiting = reads.pop(token, None)
            if waiting is not None:
                self._answer(waiting.conn, waiting.src, waiting.req_id, Status.NOT_LEADER, b"")
        lost = rd.lost_leadership
        if lost is not None and proposals:
            for index in [i for i, w in proposals.items() if w.term <= lost]:
                waiting = proposals.pop(index)
                self._answer(waiting.conn, waiting.src, waiting.req_id, Status.UNKNOWN, b"")

    def pump_watches(self, now: float) -> bool:
        """Push what the watch streams may send; True if some stream has more to send at once."""
        return self.watches.pump(now) if self.watches is not None else False

    def next_watch_due(self) -> float:
        return self.watches.next_due() if self.watches is not None else float("inf")

    def set_time(self, now: float) -> None:
        """The runtime's monotonic clock, before each on_ready: a keepalive confirmed there renews the
        lease from this moment, which is after the request arrived (so after its client sent it)."""
        self._now = now

    def tick(self, now: float) -> None:
        """Once per turn, with the runtime's monotonic clock: the leader expires leases past their
        deadline, each through one proposed lease_revoke entry."""
        self._now = now
        table, node = self._leases, self._node
        if table is None:
            return
        if node.role is not Role.LEADER:
            self._tracker.forget()
            table.changed.clear()  # a future leadership starts from the whole table
            self._checkpointing.clear()
            self._checkpoint_term = -1
            return
        self._tracker.sync(table, node.term, now)
        self._clock.stamp(node.term, now, table.log_time)  # the log time runs from the start of the term
        for lease_id in self._tracker.due(now, 2 * self._election_timeout):
            stamp = self._clock.stamp(node.term, now, table.log_time)
            index = node.propose(encode_command(0, 0, 0, ["lease_revoke", lease_id, stamp]))
            if not isinstance(index, Refusal):
                self.leases_expired += 1
        if self._checkpoint_term != node.term:
            self._checkpoint_term = node.term
            self._next_checkpoint = now + self._checkpoint_interval
        elif now >= self._next_checkpoint:
            self._next_checkpoint = now + self._checkpoint_interval
            self._propose_checkpoints(table, now)

    def _propose_checkpoints(self, table: LeaseTable, now: float) -> None:
        """The remaining TTL of every long lease, through the log, a bounded batch per entry."""
        node, tracker = self._node, self._tracker
        long_ms = 2 * self._checkpoint_interval * 1000
        items: list[list[int]] = []
        for lease_id in table.ids():
            lease = table.get(lease_id)
            left = tracker.remaining(lease_id, now)
            if lease is not None and lease.ttl_ms > long_ms and left is not None and left > 0:
                items.append([lease_id, int(left * 1000)])
        for start in range(0, len(items), CHECKPOINT_BATCH):
            batch = items[start : start + CHECKPOINT_BATCH]
            stamp = self._clock.stamp(node.term, now, table.log_time)
            index = node.propose(encode_command(0, 0, 0, ["lease_checkpoint", batch, stamp]))
            if isinstance(index, Refusal):
                return  # the next interval tries again
            self._checkpointing.update(i for i, _ in batch)
            self._checkpoint_index = index

    # --- output ---------------------------------------------------------------------------------------

    def take_answers(self) -> dict[C, list[ClientResponse]]:
        """The answers since the last call, by connection, each connection's in order."""
        answers, self._answers = self._answers, {}
        return answers

    def has_answers(self) -> bool:
        return bool(self._answers)

    def describe(self) -> dict[str, Any]:
        """For STATUS: what waits, and what was refused by reason."""
        return {
            "pending_proposals": len(self._proposals),
            "pending_reads": len(self._reads),
            "leases_tracked": len(self._tracker),
            "leases_expired": self.leases_expired,
            # client sessions this replica holds, and how many it forgot as expired since it started
            "sessions": getattr(self._sm, "session_count", 0),
            "sessions_expired": getattr(self._sm, "sessions_expired", 0),
            "refused": dict(self.refused),
            "watches": self.watches.describe() if self.watches is not None else {},
        }

    # --- internals ------------------------------------------------------------------------------------

    def _write(self, req: ClientRequest, conn: C | None, origin: Origin, principal: str = "") -> None:
        try:
            session, seq, ack_floor, op, stamp = parse_stamped(req.payload)
        except Invalid as exc:
            self._bad_request(req, conn, "invalid_command", str(exc))
            return
        if origin is Origin.CLIENT and op[0] == "lease_checkpoint":
            self._bad_request(
                req, conn, "lease_checkpoint", "lease checkpoints are written by the leader only"
            )
            return
        if origin is Origin.CLIENT:
            if touches_reserved(op) and not is_user_write(op):
                self._bad_request(req, conn, "reserved_key", f"keys under {RESERVED_PREFIX!r} are reserved")
                return
            denied = self.permissions.write_denied(principal, op)
            if denied is not None:
                self._deny(req, conn, denied)
                return
        payload = req.payload
        parsed: Parsed | None = None  # what apply would parse from payload, when we know it
        if op[0] in ("lease_grant", "lease_revoke", "put_lease"):
            stamped = self._lease_write(req, conn, payload, op)
            if stamped is None:
                return
            payload = stamped
        node = self._node
        if node.role is Role.LEADER:  # (anywhere else the proposal is refused below)
            if op[0] == "session_open":
                payload = encode_command(0, 0, 0, ["session_open", self._session_ttl_ms, self._stamp()])
            elif session != 0:
                stamp = self._stamp()
                payload = stamp_command(payload, stamp)
                if op[0] != "lease_grant" and op[0] != "lease_revoke":  # (their op was stamped too)
                    parsed = (session, seq, ack_floor, op, stamp)
            elif payload is req.payload:
                parsed = (session, seq, ack_floor, op, stamp)
        index = node.propose(payload)
        if isinstance(index, Refusal):
            self._refuse(req, conn, index, "proposals")
            return
        if parsed is not None and self._kv is not None:
            self._kv.parsed(index, payload, parsed)  # apply takes it instead of parsing the command again
        self._proposals[index] = _Waiting(conn, req.src, req.req_id, node.term, b"")

    def _stamp(self) -> int:
        """The leader's log time for an entry it proposes now (cluster/kv/leases.py LogClock)."""
        table = self._leases
        return self._clock.stamp(self._node.term, self._now, table.log_time if table is not None else 0)

    def _member_change(self, req: ClientRequest, conn: C | None) -> None:
        """Propose a membership change (actors/membership.py); answered once its configuration commits.
        Idempotent: a change already in force is answered OK at once (a retry whose first try took)."""
        try:
            change = parse_member_request(req.payload)
        except ValueError as exc:
            self._bad_request(req, conn, "invalid_member_request", str(exc))
            return
        node = self._node
        committed = node.configuration_index <= node.commit_index
        if node.role is Role.LEADER and committed and already_done(node.configuration, change):
            result = member_result(node.configuration, node.configuration_index)
            self._answer(conn, req.src, req.req_id, Status.OK, result)
            return
        outcome = node.propose_change(change, self._now)
        if isinstance(outcome, ChangeRefused):
            self._bad_request(req, conn, "member_change_refused", outcome.reason)
        elif outcome is Refusal.BUSY:  # transient: another change, or no commit of this term yet
            self.refused["member_change_busy"] += 1
            text = b"a membership change is under way (or a new leader has not committed yet); retry"
            self._answer(conn, req.src, req.req_id, Status.UNAVAILABLE, text)
        elif isinstance(outcome, Refusal):
            self._refuse(req, conn, outcome, "proposals")
        else:
            removes = change.name if change.op == "remove" else ""
            self._proposals[outcome] = _Waiting(
                conn, req.src, req.req_id, node.term, b"", member=removes or "-"
            )

    def _forget_member(self, member: str) -> None:
        """A removal committed: delete the member's advertised URLs, so clients stop trying it (best
        effort: the node's own write, answered to nobody; a lost one leaves a stale URL behind)."""
        if member != "-" and not self._node.configuration.get(member):
            self._node.propose(encode_command(0, 0, 0, ["del", f"{RESERVED_PREFIX}members/{member}"]))

    def _watch_request(self, req: ClientRequest, conn: C | None, principal: str | None = None) -> None:
        watches = self.watches
        if conn is None or watches is None:
            self._bad_request(req, conn, "no_watches", "this node serves no watches")
            return
        if req.kind == RequestKind.WATCH:
            try:
                spec = parse_watch(req.payload)
            except ValueError as exc:
                self._bad_request(req, conn, "invalid_watch", str(exc))
                return
            denied = None if principal is None else self.permissions.watch_denied(principal, spec.key)
            if denied is not None:
                # BAD_REQUEST ends the watch (no other node is tried); the result is the same structured
                # error as a refused read or write, so the client raises PermissionDenied for it too.
                self.refused["permission_denied"] += 1
                refusal = error(denied, PERMISSION_DENIED_CODE)
                self._answer(conn, req.src, req.req_id, Status.BAD_REQUEST, refusal)
                return
            watches.open(req, conn, spec)
            return
        parsed = parse_stream_id(req.payload, with_count=req.kind == RequestKind.WATCH_ACK)
        if parsed is None:
            self._bad_request(req, conn, "invalid_watch", "malformed watch cancel or ack")
        elif req.kind == RequestKind.WATCH_CANCEL:
            watches.cancel(conn, parsed[0])
        else:
            watches.ack(conn, parsed[0], parsed[1])

    def _deny(self, req: ClientRequest, conn: C | None, reason: str) -> None:
        """Refuse a request its principal has no right to: nothing is proposed or read."""
        self.refused["permission_denied"] += 1
        self._answer(conn, req.src, req.req_id, Status.OK, error(reason, PERMISSION_DENIED_CODE))

    def _push(self, conn: C, response: ClientResponse) -> None:
        held = self._answers.get(conn)
        if held is None:
            self._answers[conn] = [response]
        else:
            held.append(response)

    def _lease_write(self, req: ClientRequest, conn: C | None, payload: bytes, op: list[Any]) -> bytes | None:
        """The command to propose for a lease write (grant and revoke stamped with the log time), or None
        when it was answered already."""
        name = op[0]
        if name == "lease_grant":
            ttl_ms = op[1]
            if ttl_ms < self.min_lease_ttl * 1000 or ttl_ms > MAX_TTL_MS:
                text = f"lease ttl must be between {self.min_lease_ttl:g}s and {MAX_TTL_MS // 1000}s"
                self._bad_request(req, conn, "lease_ttl", text)
                return None
        elif name == "put_lease":
            if self._tracker.expired(op[3], self._now):
                self.refused["lease_expired"] += 1
                text = f"lease {op[3]} expired (its revoke is under way)"
                self._answer(conn, req.src, req.req_id, Status.OK, error(text, LEASE_EXPIRED_CODE))
                return None
            return payload
        if self._node.role is not Role.LEADER:
            # Refused as a proposal below. Only the leader stamps: a stamp taken here would move this
            # node's LogClock (its term and base) although it proposes nothing.
            return payload
        table = self._leases
        log_time = table.log_time if table is not None else 0
        session, seq, ack_floor, _ = parse_command(payload)
        stamp = self._clock.stamp(self._node.term, self._now, log_time)
        return encode_command(session, seq, ack_floor, [name, op[1], stamp])

    def _lease_query_ok(self, req: ClientRequest, conn: C | None) -> bool:
        """Whether a READ that may be a lease query is one this node can take (or is no lease query)."""
        try:
            op = parse_query(req.payload)
        except (Invalid, ValueError):  # Invalid is no ValueError: a bad query once crashed the node here
            return True  # the state machine's query answers the error
        table = self._leases
        if op[0] in LEASE_QUERIES and table is None:
            self._bad_request(req, conn, "lease_unsupported", "this node keeps no leases")
            return False
        if op[0] != "lease_keepalive" or table is None or self._node.role is not Role.LEADER:
            return True
        lease = table.get(op[1])
        if lease is None or not self._needs_reset(req.payload) or self._tracker.expired(op[1], self._now):
            return True  # answered as expired after the ReadIndex round
        # A checkpoint would cut this renewal short under the next leader: reset it first, and answer
        # once the reset is applied (its commit in our term also confirms our leadership).
        node = self._node
        stamp = self._clock.stamp(node.term, self._now, table.log_time)
        index = node.propose(encode_command(0, 0, 0, ["lease_checkpoint", [[op[1], lease.ttl_ms]], stamp]))
        if isinstance(index, Refusal):
            self._refuse(req, conn, index, "proposals")
        else:
            self._proposals[index] = _Waiting(conn, req.src, req.req_id, node.term, req.payload)
        return False

    def _needs_reset(self, query: bytes) -> bool:
        """Whether a keepalive query's lease has a checkpoint (applied or in flight) to reset first."""
        table = self._leases
        try:
            op = parse_query(query)
        except ValueError:
            return False
        if op[0] != "lease_keepalive" or table is None:
            return False
        lease = table.get(op[1])
        return lease is not None and (lease.remaining_ms is not None or op[1] in self._checkpointing)

    def _lease_query(self, query: bytes) -> bytes:
        """The leader's answer to a confirmed lease query (keepalive, info, list)."""
        table = self._leases
        try:
            op = parse_query(query)
        except ValueError as exc:
            return error(str(exc))
        if op[0] not in LEASE_QUERIES or table is None:
            return self._sm.query(query)
        now, tracker = self._now, self._tracker
        tracker.sync(table, self._node.term, now)
        if op[0] == "lease_list":
            listed = [self._lease_entry(i, table, now) for i in table.ids()]
            return pack({"ok": True, "leases": listed})
        lease_id = op[1]
        lease = table.get(lease_id)
        if lease is None:
            text = f"lease {lease_id} not found (never granted, revoked, or expired)"
            return error(text, LEASE_NOT_FOUND_CODE)
        if tracker.expired(lease_id, now):
            return error(f"lease {lease_id} expired (its revoke is under way)", LEASE_EXPIRED_CODE)
        if op[0] == "lease_keepalive":
            tracker.keepalive(lease_id, lease.ttl_ms / 1000, now)
        entry = self._lease_entry(lease_id, table, now)
        if op[0] == "lease_info":
            entry["keys"] = sorted(lease.keys)
        return pack({"ok": True, **entry})

    def _lease_entry(self, lease_id: int, table: LeaseTable, now: float) -> dict[str, Any]:
        lease = table.get(lease_id)
        assert lease is not None
        remaining = self._tracker.remaining(lease_id, now)
        return {
            "id": lease_id,
            "granted_ttl": lease.ttl_ms / 1000,
            "ttl": lease.ttl_ms / 1000 if remaining is None else remaining,
            "granted_at": lease.granted_at,
        }

    def _refuse(self, req: ClientRequest, conn: C | None, refusal: Refusal, what: str) -> None:
        """Answer a request the Raft core did not take; `what` it was: "proposals" or "reads"."""
        if refusal is Refusal.NOT_LEADER:
            status, text, reason = Status.NOT_LEADER, b"", refusal.value
        elif refusal is Refusal.TRANSFERRING:
            status, text, reason = Status.UNAVAILABLE, b"leadership transfer in progress", refusal.value
        else:
            status, text, reason = Status.BUSY, _BUSY_TEXTS[what], f"busy_{what}"
        self.refused[reason] += 1
        self._answer(conn, req.src, req.req_id, status, text)

    def _bad_request(self, req: ClientRequest, conn: C | None, reason: str, text: str) -> None:
        self.refused[reason] += 1
        data = text.encode("utf-8", "replace")[:MAX_REASON_BYTES]
        self._answer(conn, req.src, req.req_id, Status.BAD_REQUEST, data)

    def _answer(self, conn: C | None, dst: NodeId, req_id: int, status: Status, result: bytes) -> None:
        if conn is None:
            self.unanswerable += 1
            return
        hint = (self._node.leader or "") if status is not Status.OK else ""
        response = ClientResponse(self._node.id, dst, req_id, status, result, hint)
        held = self._answers.get(conn)
        if held is None:
            self._answers[conn] = [response]
        else:
            held.append(response)

    def _encoded_status(self) -> bytes:
        status = self._status()
        status["clients"] = self.describe()
        data: bytes = msgpack.packb(status, use_bin_type=True)
        return data
