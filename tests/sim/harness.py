"""Whole-cluster deterministic simulation of zraft, with Raft's safety properties checked after every event.

One seed fixes everything: the election timeouts, the network's drops, duplicates, delays and partitions,
node crashes (through the real storage code on a simulated disk, SimFS, that loses any subset of the pages
written since the last fsync; crash points inside the storage; the production snapshot writer's steps run
as events, so crashes fall between them too), restarts, and the clients' operations. After every event
the harness checks election safety, log matching, leader completeness, that applied sequences agree, and
that committed entries never change; at the end it heals everything, demands liveness within a bounded
time, checks the clients' histories for linearizability and that all replicas converged. A failure raises
SimFailure carrying the replay command.

Leases (tests/sim/leases.py): lease owners grant, attach and renew leases under the same faults, and
every revoke is checked against the renewals answered so far; after healing, every abandoned lease must
be revoked within a bound. Each node reads its own clock: the simulated time plus an offset drawn at each
start, so the monotonic clocks of different nodes (and of one node across a restart, a reboot) are not
comparable, and a follower's clock jumps forward now and then (the nemesis); the leader's clock is
assumed to run at the right rate, as every lease implementation must.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from loguru import logger

from actors.client import ClientActor, ClientOptions, Completion, Outcome
from actors.config import RaftConfig
from actors.contracts import Ready
from actors.membership import Configuration
from actors.messages import ClientRequest, ClientResponse, Entry, NodeId
from actors.node import NodeActor, Role
from cluster.client.commands import SESSION_HOOKS
from cluster.kv.machine import KVStateMachine, decode_result, encode_command, encode_query
from cluster.kv.ops import parse_command
from cluster.kv.service import KVService, Origin
from cluster.storage import DiskStorage
from cluster.storage.fs import SimFS
from cluster.storage.snapshot_writer import SnapshotJob
from tests.sim.leases import LeaseMonitor, LeaseViolation, SimLeaseOwner
from tests.sim.linearizability import Operation, check_history
from tests.sim.membership import EXTRA_NAMES, ConfigViolation, MembershipOperator, check_configurations
from tests.sim.watchers import SimWatcher, check_watchers, reference_events
from transport.sim import NetworkFaults, Scheduler, SimNetwork


class SimFailure(AssertionError):
    pass


class SimCrash(Exception):
    """Raised from a storage crash point: the simulated machine loses power right there."""


@dataclass(slots=True)
class SimOptions:
    nodes: int = 3
    clients: int = 3
    ops_per_client: int = 25
    concurrency: int = 2  # operations each client keeps in flight
    keys: int = 3
    fault_time: float = 20.0  # simulated seconds with faults on
    drop: float = 0.05
    duplicate: float = 0.03
    max_delay: float = 0.03
    partitions: bool = True
    crashes: bool = True
    crash_points: bool = True  # power loss inside storage writes, including torn tails
    nemesis_interval: tuple[float, float] = (0.5, 3.0)
    disk_delay: tuple[float, float] = (0.0005, 0.004)
    client_timeout: float = 6.0
    watchers: int = 3  # watch clients (tests/sim/watchers.py), checked against the committed changes
    liveness_bound: float = 30.0  # simulated seconds allowed after healing (tens of election timeouts)
    raft: RaftConfig = field(
        default_factory=lambda: RaftConfig(
            election_timeout=1.0,
            heartbeat_interval=0.1,
            snapshot_threshold=40,
            snapshot_keep=10,
            snapshot_chunk_bytes=512,
            max_append_bytes=2048,
            max_inflight=8,
        )
    )
    lease_owners: int = 2
    lease_checkpoint_interval: float = 1.0  # the owners' 3 s leases are checkpointed: both paths run
    # Client sessions expire after this much idle log time: short, so that clients cut off by the nemesis
    # (or stuck behind a partition) see their sessions expire, and idle ones re-register.
    session_ttl: float = 4.0
    max_events: int = 2_000_000
    membership: bool = True  # an operator adds, promotes and removes members (tests/sim/membership.py)
    profile: str = ""  # the named profile these options came from ("" once overridden)

    def replay_flags(self) -> str:
        return (
            f"--profile {self.profile}" if self.profile else f"--nodes {self.nodes} --clients {self.clients}"
        )

    @classmethod
    def for_seed(cls, seed: int) -> SimOptions:
        """The mix CI runs: every third seed is a 5-node cluster under a faster, harsher nemesis."""
        return cls.named("harsh5" if seed % 3 == 0 else "default3")

    @classmethod
    def named(cls, profile: str) -> SimOptions:
        if profile == "default3":
            return cls(
                ops_per_client=40,
                concurrency=3,
                disk_delay=(0.001, 0.03),
                max_delay=0.05,
                nemesis_interval=(0.2, 1.5),
                profile=profile,
            )
        if profile == "harsh5":
            return cls(
                nodes=5,
                clients=4,
                keys=2,
                ops_per_client=60,
                concurrency=3,
                nemesis_interval=(0.1, 0.8),
                disk_delay=(0.001, 0.02),
                fault_time=25.0,
                # so few uncommitted entries that leaders refuse writes as busy now and then: a busy answer
                # must mean "never applied", which the linearizability check holds it to
                raft=replace(cls().raft, max_uncommitted_entries=4),
                profile=profile,
            )
        raise ValueError(f"unknown simulation profile {profile!r} (default3, harsh5)")


SNAPSHOT_STEP_KEYS = 8  # small slices, so a snapshot spans several Readies with events in between
PAGE_SIZE = 512  # SimFS pages: several per 4096-byte WAL segment, so a torn write can leave holes in one
WRITER_STEP_CRASH = 0.01  # power loss between two steps of the snapshot writer (its hooks add more)
# After healing, an abandoned lease is revoked within TTL + this: elections settle (tens of election
# timeouts at worst under the sim's restarts), the new leader's grace (one election timeout), the commit.
LEASE_REVOKE_BOUND = 20.0
SLICE_PAUSE = 0.0005  # simulated seconds between two Readies that only carried background work
CRASH_CLOSES_CONNECTIONS = 0.7  # a crashed process's peers see its connections close (else: its host died)
FALSE_DISCONNECT = 0.2  # per nemesis step: a follower's connection to a live leader is reset
CLOCK_ROUNDING = 1e-9  # far above the float error of the clock offsets (< 1e-12 s), far below any timer


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


class CheckedStateMachine(KVStateMachine):
    """The real KV state machine, reporting every apply to the cluster-wide checker."""

    def __init__(self, node: str, checker: SafetyChecker) -> None:
        super().__init__(snapshot_step_keys=SNAPSHOT_STEP_KEYS)
        self._node = node
        self._checker = checker
        self._last = 0
        self._command = b""

    def apply(self, index: int, command: bytes) -> bytes:
        if index <= self._last:
            raise SimFailure(f"{self._node} applied index {index} after {self._last}")
        self._last = index
        self._checker.on_apply(self._node, index, command)
        self._command = command
        return super().apply(index, command)

    def _execute(self, op: list[Any], index: int) -> bytes:
        """Every op that takes effect, with the session write it belongs to: exactly once, checked."""
        session, seq = parse_command(self._command)[:2]
        if op[0] == "session_open":
            self._checker.on_session_open(index)
        elif session != 0:
            self._checker.on_session_write(self._node, index, session, seq)
        return super()._execute(op, index)

    def prepare_restore(self, data: bytes, index: int) -> Callable[[], None]:
        swap = super().prepare_restore(data, index)

        def swap_and_note() -> None:
            swap()
            self._last = self.applied_index

        return swap_and_note


class SafetyChecker:
    """Cluster-wide records that every node's behaviour is checked against, incrementally."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}  # term -> leader
        self.entries: dict[
            tuple[int, int], tuple[int | None, bytes]
        ] = {}  # (index, term) -> (prev term, data)
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data digest)
        self.commit_term: dict[int, int] = {}  # index -> the term in which it was first seen committed
        self.applied: dict[int, bytes] = {}  # index -> command digest
        self.commands: dict[int, bytes] = {}  # index -> command: the committed log, replayed for watches
        self.mirrors: dict[str, dict[int, int]] = {}  # node -> index -> term, as last checked
        self.commit_seen: dict[str, int] = {}
        self.on_first_apply: Callable[[bytes], None] | None = None  # an entry applied for the first time
        self.session_opens: set[int] = set()  # log indexes of the session registrations applied
        self.executed: dict[tuple[int, int], int] = {}  # (session, seq) of client writes -> index applied

    def on_apply(self, node: str, index: int, command: bytes) -> None:
        d = _digest(command)
        known = self.applied.get(index)
        if known is None:
            self.applied[index] = known = d
            if self.on_first_apply is not None:
                self.on_first_apply(command)
        self.commands.setdefault(index, command)
        if known != d:
            raise SimFailure(f"{node} applied a different command at index {index}")
        committed = self.committed.get(index)
        if committed is not None and committed[1] != d:
            raise SimFailure(f"{node} applied index {index} which differs from the committed entry")

    def on_session_open(self, index: int) -> None:
        self.session_opens.add(index)

    def on_session_write(self, node: str, index: int, session: int, seq: int) -> None:
        """A client write taking effect at `index`: its session was registered in the log before it, and
        no other index applies the same (session, seq): a retry is never applied twice."""
        if session not in self.session_opens:
            raise SimFailure(f"{node} applied a write of session {session}, which was never registered")
        first = self.executed.setdefault((session, seq), index)
        if first != index:
            raise SimFailure(f"{node} applied write {seq} of session {session} twice: at {first} and {index}")

    def forget_node(self, node: str) -> None:
        """A crash: the node's in-memory log is gone; recheck what it recovers."""
        self.mirrors[node] = {}
        self.commit_seen[node] = 0

    def check_node(self, node: NodeActor, joined: bool = False) -> None:
        # Every simulated peer is correct, however the network treats its messages: none may look invalid.
        invalid = node.take_invalid()
        if invalid:
            raise SimFailure(f"{node.id} dropped a correct peer's message as invalid: {invalid[0]}")
        try:
            check_configurations(node, joined)
        except ConfigViolation as exc:
            raise SimFailure(str(exc)) from None
        log = node.log
        mirror = self.mirrors.setdefault(node.id, {})
        # Log matching, by induction: equal (index, term) means equal data and equal previous term.
        last = log.last_index()
        for stale in [i for i in mirror if i > last or i <= log.base_index]:
            del mirror[stale]
        index = last
        while index > log.base_index:
            term = log.term_at(index)
            assert term is not None
            if mirror.get(index) == term:
                break
            entry: Entry = log.entry(index)
            prev_term = log.term_at(index - 1)
            record = (prev_term, entry.data)
            known = self.entries.setdefault((index, term), record)
            if known[1] != entry.data or (
                known[0] is not None and prev_term is not None and known[0] != prev_term
            ):
                raise SimFailure(f"log matching broken on {node.id} at index {index} term {term}")
            mirror[index] = term
            index -= 1
        # Committed entries never change (state machine safety).
        seen = self.commit_seen.get(node.id, 0)
        commit = node.commit_index
        if commit > log.last_index():
            raise SimFailure(f"{node.id} commit {commit} beyond its log end {log.last_index()}")
        for i in range(max(seen, log.base_index) + 1, commit + 1):
            entry = log.entry(i)
            value = (entry.term, _digest(entry.data))
            known_c = self.committed.setdefault(i, value)
            self.commit_term.setdefault(i, node.term)
            if known_c != value:
                raise SimFailure(f"{node.id} committed a different entry at index {i}: {known_c} vs {value}")
        self.commit_seen[node.id] = max(seen, commit)
        # Election safety, and leader completeness (paper 5.4): a leader holds every committed entry.
        if node.role is Role.LEADER and self.leaders.get(node.term) != node.id:
            # checked once, when the node first acts as leader of this term
            holder = self.leaders.setdefault(node.term, node.id)
            if holder != node.id:
                raise SimFailure(f"two leaders in term {node.term}: {holder} and {node.id}")
            earlier = [i for i, t in self.commit_term.items() if t < node.term]
            top = max(earlier, default=0)
            if top > log.last_index():
                raise SimFailure(f"leader {node.id} (term {node.term}) lacks committed index {top}")
            for i in earlier:
                if i > log.base_index and log.term_at(i) != self.committed[i][0]:
                    raise SimFailure(
                        f"leader {node.id} (term {node.term}) has a different entry at committed {i}"
                    )


@dataclass(slots=True)
class SimNode:
    id: str
    fs: SimFS
    storage: DiskStorage | None = None
    sm: CheckedStateMachine | None = None
    actor: NodeActor | None = None
    service: KVService[str] | None = None  # connections are the clients' names: the sim network is trusted
    up: bool = False
    persisting: bool = False
    incarnation: int = 0
    tick_token: int = 0
    was_leader_term: int = -1
    clock_offset: float = 0.0  # this node's clock reads the simulated time plus this
    bootstrap: Configuration | None = None  # a member added later: the configuration it joined with
    retired: bool = False  # removed from the cluster and shut down for good


@dataclass(slots=True)
class _Invocation:
    key: str
    kind: str
    args: tuple[Any, ...]
    invoke: float


class SimClient:
    def __init__(self, cluster: SimCluster, index: int) -> None:
        self.cluster = cluster
        self.id = f"client{index}"
        rng = random.Random(cluster.rng.getrandbits(64))
        self.rng = rng
        self.actor = ClientActor(
            client_id=self.id,
            nodes=cluster.all_names,
            session=rng.getrandbits(62) + 1,
            rng=rng,
            options=ClientOptions(
                attempt_timeout=0.5, backoff_base=0.02, backoff_max=0.5, sessions=SESSION_HOOKS
            ),
        )
        self.budget = cluster.options.ops_per_client
        self.open: dict[int, _Invocation] = {}
        self.history: list[Operation] = []
        self.counter = 0
        self.tick_token = 0
        self.final_reads: dict[int, str] = {}
        self.final_results: dict[str, Any] = {}
        self.sessions_expired = 0  # writes that ended with Outcome.SESSION_EXPIRED
        self.delete_prefixes = 0  # delete_prefix ops answered

    def start(self) -> None:
        for _ in range(self.cluster.options.concurrency):
            self._issue_later()
        self.pump()

    def _issue_later(self) -> None:
        """Spread the client's operations over the fault phase, with random think times."""
        opts = self.cluster.options
        mean_gap = opts.fault_time * opts.concurrency / max(1, opts.ops_per_client)
        self.cluster.scheduler.after(self.rng.uniform(0, mean_gap), self._issue_now)

    def _issue_now(self) -> None:
        self._issue()
        self.pump()

    def _issue(self) -> None:
        if self.budget <= 0 or self.cluster.healing:
            return
        self.budget -= 1
        now = self.cluster.scheduler.now
        key = f"k{self.rng.randrange(self.cluster.options.keys)}"
        roll = self.rng.random()
        timeout = self.cluster.options.client_timeout
        self.counter += 1
        value = f"{self.id}-{self.counter}"
        if roll < 0.35:
            handle = self.actor.write(
                lambda s, q, f: encode_command(s, q, f, ["put", key, value]), now, timeout
            )
            self.open[handle] = _Invocation(key, "put", (value,), now)
        elif roll < 0.65:
            handle = self.actor.read(encode_query(["get", key]), now, timeout)
            self.open[handle] = _Invocation(key, "get", (), now)
        elif roll < 0.72:
            handle = self.actor.write(lambda s, q, f: encode_command(s, q, f, ["del", key]), now, timeout)
            self.open[handle] = _Invocation(key, "delete", (), now)
        elif roll < 0.78:
            prefix = key if self.rng.random() < 0.5 else "k"  # one key, or every key (one revision)
            handle = self.actor.write(
                lambda s, q, f: encode_command(s, q, f, ["del_prefix", prefix]), now, timeout
            )
            self.open[handle] = _Invocation(prefix, "delete_prefix", (), now)
        else:
            expected = self.cluster.last_value_hint.get(key) if self.rng.random() < 0.7 else None
            handle = self.actor.write(
                lambda s, q, f: encode_command(s, q, f, ["cas", key, expected, value]), now, timeout
            )
            self.open[handle] = _Invocation(key, "cas", (expected, value), now)

    def final_read_all(self) -> None:
        now = self.cluster.scheduler.now
        for k in range(self.cluster.options.keys):
            key = f"k{k}"
            handle = self.actor.read(encode_query(["get", key]), now, self.cluster.options.liveness_bound)
            self.open[handle] = _Invocation(key, "get", (), now)
            self.final_reads[handle] = key
        self.pump()

    def on_response(self, msg: ClientResponse) -> None:
        self.actor.step(msg, self.cluster.scheduler.now)
        self.pump()

    def on_tick(self, token: int) -> None:
        if token != self.tick_token:
            return
        self.actor.tick(self.cluster.scheduler.now)
        self.pump()

    def pump(self) -> None:
        sched = self.cluster.scheduler
        for done in self.actor.take_completions():
            self._record(done)
            self._issue_later()
        for msg in self.actor.take_messages():
            # A request reaches a node at most once, as over ZeroMQ's TCP (a retry is a new send): a BUSY
            # answer to it then proves it was never proposed, which a second copy could not.
            self.cluster.network.send(msg, duplicable=False)
        deadline = self.actor.next_deadline()
        if deadline != float("inf"):
            self.tick_token += 1
            token = self.tick_token
            sched.at(deadline, lambda: self.on_tick(token))

    def _record(self, done: Completion) -> None:
        inv = self.open.pop(done.handle)
        now = self.cluster.scheduler.now
        final_key = self.final_reads.pop(done.handle, None)
        if done.outcome is Outcome.REJECTED:
            raise SimFailure(f"{self.id}: {inv.kind} on {inv.key} rejected: {done.result!r}")
        if done.outcome is Outcome.BUSY:
            if final_key is not None:
                raise SimFailure(f"liveness: final read of {final_key} refused as busy after healing")
            return  # refused before anything was proposed: no effect on the history
        if done.outcome is Outcome.NOT_APPLIED:
            return  # every attempt refused unproposed: no effect on the history (the check holds it to that)
        if done.outcome is Outcome.SESSION_EXPIRED:  # applied at most once, by an earlier attempt
            self.sessions_expired += 1
            self._record_unknown(inv)
            return
        if done.outcome is Outcome.TIMEOUT:
            if final_key is not None:
                raise SimFailure(f"liveness: final read of {final_key} timed out after healing")
            if inv.kind != "get":  # a read that never answered has no effect on the history
                self._record_unknown(inv)
            return
        res = decode_result(done.result)
        if not res.get("ok"):
            raise SimFailure(f"{self.id}: {inv.kind} on {inv.key} failed in the state machine: {res}")
        if inv.kind == "delete_prefix":
            self.delete_prefixes += 1
            self._record_delete_prefix(inv, now, res["deleted"])
            return
        if inv.kind == "put":
            result: Any = None
        elif inv.kind == "get":
            kv = res["kv"]
            result = None if kv is None else kv["value"]
            if result is not None:
                self.cluster.last_value_hint[inv.key] = result
            if final_key is not None:
                self.final_results[final_key] = result
        elif inv.kind == "delete":
            result = res["deleted"] > 0
        else:
            result = bool(res["swapped"])
        self.history.append(Operation(self.id, inv.key, inv.kind, inv.args, inv.invoke, now, result))


    def _prefix_keys(self, prefix: str) -> list[str]:
        return [k for k in (f"k{i}" for i in range(self.cluster.options.keys)) if k.startswith(prefix)]

    def _record_unknown(self, inv: _Invocation) -> None:
        if inv.kind == "delete_prefix":
            self._record_delete_prefix(inv, None, None)
        else:
            self.history.append(Operation(self.id, inv.key, inv.kind, inv.args, inv.invoke, None, None))

    def _record_delete_prefix(self, inv: _Invocation, complete: float | None, deleted: int | None) -> None:
        """A delete_prefix, per key for the per-key check: over one key it is a delete whose count says
        whether the key existed; over several, a "clear" of each (only the sum of them is known)."""
        keys = self._prefix_keys(inv.key)
        if deleted is not None and deleted > len(keys):
            raise SimFailure(f"{self.id}: delete_prefix {inv.key!r} deleted {deleted} of {len(keys)} keys")
        for key in keys:
            if len(keys) == 1:
                existed = None if deleted is None else deleted > 0
                self.history.append(Operation(self.id, key, "delete", (), inv.invoke, complete, existed))
            else:
                self.history.append(Operation(self.id, key, "clear", (), inv.invoke, complete, None))


@dataclass(slots=True)
class SimReport:
    seed: int
    events: int
    sim_time: float
    operations: int
    unknown: int
    messages: int
    dropped: int
    crashes: int
    restarts: int
    elections: int
    snapshots_installed: int
    max_term: int
    crash_points: dict[str, int] = field(default_factory=dict)  # storage crash points that fired
    writer_crashes: int = 0  # power losses inside the snapshot writer (between steps or at its points)
    zero_holes_cut: int = 0  # torn writes recovery cut at a zero-filled hole
    torn_records_cut: int = 0  # torn writes recovery cut at a record cut by the end of a file
    lease_renewals: int = 0  # keepalives answered OK
    lease_revokes: int = 0  # lease revokes applied (expiries of owned leases, and orphans')
    clock_jumps: int = 0  # forward jumps of a follower's clock
    disconnects: int = 0  # connection closes the nodes were told of (a crashed peer's, or a false alarm)
    leader_disconnects: int = 0  # ... of which a follower's connection to its leader: it campaigned early
    sessions_opened: int = 0  # client sessions registered (as the clients saw them answered)
    sessions_lost: int = 0  # client sessions the cluster no longer knew (expired or evicted)
    session_expired_writes: int = 0  # writes that ended as SESSION_EXPIRED (outcome unknown)
    writes_resent: int = 0  # writes refused for their session before any attempt could apply: resent
    delete_prefixes: int = 0  # delete_prefix ops answered
    clients_cut_off: int = 0  # times the nemesis cut a client off from every node
    member_changes: int = 0  # membership changes proposed (add, promote, remove, update)
    members_retired: int = 0  # removed members shut down for good
    leader_handovers: int = 0  # removals of the leader that first handed leadership over


class SimSnapshotRunner:
    """Runs the storage's snapshot writer (cluster/storage/snapshot_writer.py) as simulated events: each
    step of the very job production runs on a thread is one event after a simulated disk delay, so
    Readies, messages and crashes fall between the steps."""

    def __init__(self, cluster: SimCluster, node: SimNode) -> None:
        self.cluster = cluster
        self.node = node

    def start(self, job: SnapshotJob) -> None:
        self.cluster._schedule_writer_step(self.node, job)

    def wait(self, job: SnapshotJob) -> None:
        """The storage needs the job done now (another snapshot, or close): run what is left, here."""
        while not job.step():
            pass


class SimCluster:
    def __init__(self, seed: int, options: SimOptions | None = None) -> None:
        self.seed = seed
        self.options = opts = options or SimOptions()
        self.rng = random.Random(seed)
        self.scheduler = Scheduler()
        self.network = SimNetwork(
            self.scheduler,
            random.Random(self.rng.getrandbits(64)),
            self._deliver,
            NetworkFaults(
                drop=opts.drop, duplicate=opts.duplicate, min_delay=0.0005, max_delay=opts.max_delay
            ),
        )
        self.node_ids: list[NodeId] = [f"n{i + 1}" for i in range(opts.nodes)]  # those not retired
        self.initial_ids = tuple(self.node_ids)
        # Every name a node may ever have: what clients know (a client of a real cluster learns new members'
        # client URLs from the cluster; here the names of members yet to come stand for that).
        extra = EXTRA_NAMES if opts.membership else 0
        self.all_names = tuple(f"n{i + 1}" for i in range(opts.nodes + extra))
        self.nodes = {nid: SimNode(nid, SimFS(page_size=PAGE_SIZE)) for nid in self.node_ids}
        self.checker = SafetyChecker()
        self.clients = [SimClient(self, i) for i in range(opts.clients)]
        self.clients_by_id = {c.id: c for c in self.clients}
        self.last_value_hint: dict[str, Any] = {}
        self.healing = False
        self.crashes = 0
        self.restarts = 0
        self.installs = 0
        self.crash_points: dict[str, int] = {}
        self.writer_crashes = 0
        self.zero_holes_cut = 0
        self.torn_records_cut = 0
        self._disk_rng = random.Random(self.rng.getrandbits(64))
        self._nemesis_rng = random.Random(self.rng.getrandbits(64))
        self._node_rngs = {nid: random.Random(self.rng.getrandbits(64)) for nid in self.node_ids}
        self.watchers = [SimWatcher(self, i) for i in range(opts.watchers)]
        self.watchers_by_id = {w.id: w for w in self.watchers}
        self._clock_rng = random.Random(self.rng.getrandbits(64))
        self.lease_monitor = monitor = LeaseMonitor()
        self.checker.on_first_apply = lambda command: monitor.on_first_apply(command, self.scheduler.now)
        self.lease_owners = [SimLeaseOwner(self, i, monitor) for i in range(opts.lease_owners)]
        self.lease_owners_by_id = {o.id: o for o in self.lease_owners}
        self.healed_at = float("inf")
        # Connection closes that nodes are told of (a crashed process's peers see its connections close,
        # unless it went down with its host; and now and then a live leader's connection is reset). Its own
        # generator, seeded apart, so that it shifts none of the other draws of a seed.
        self._conn_rng = random.Random(f"{seed}/connections")
        self.disconnects_seen = 0
        self.leader_disconnects = 0
        self.clock_jumps = 0
        self.clients_cut_off = 0
        self.membership = MembershipOperator(self, random.Random(self.rng.getrandbits(64)))

    # --- running ----------------------------------------------------------------------------------

    def run(self) -> SimReport:
        logger.disable("cluster")  # the storage explains recoveries at length; the report is enough here
        try:
            return self._run()
        except (SimFailure, LeaseViolation) as exc:
            raise SimFailure(f"seed {self.seed}: {exc}\n  replay: {self.replay_command()}") from exc
        finally:
            logger.enable("cluster")

    def replay_command(self) -> str:
        return f"python -m tests.sim.run --seed {self.seed} {self.options.replay_flags()}"

    def _run(self) -> SimReport:
        opts = self.options
        for nid in self.node_ids:
            self._start_node(nid)
        for client in self.clients:
            client.start()
        for watcher in self.watchers:
            start = watcher.rng.randrange(1, 20) if watcher.rng.random() < 0.3 else 0
            watcher.start_at(watcher.rng.uniform(0, opts.fault_time * 0.8), start)
        for owner in self.lease_owners:
            owner.start()
        if opts.partitions or opts.crashes:
            self._schedule_nemesis()
        if opts.membership:
            self.membership.start()
        self.scheduler.at(opts.fault_time, self._heal_everything)
        self._drive(until=lambda: self.healing and self._clients_idle())
        # Liveness: with everything healed, every key must be readable (linearizably) within the bound.
        reader = self.clients[0]
        reader.final_read_all()
        deadline = self.scheduler.now + opts.liveness_bound
        self._drive(until=lambda: not reader.final_reads, stop_at=deadline)
        if reader.final_reads:
            raise SimFailure(
                f"liveness: no answer for final reads within {opts.liveness_bound}s after healing"
            )
        self._check_convergence(deadline)
        self._check_leases_revoked()
        self._check_watchers(deadline)  # after the lease revokes, which add revisions of their own
        history = [op for c in self.clients for op in c.history]
        result = check_history(history)
        if not result.ok:
            raise SimFailure(f"history not linearizable: {result.explanation}")
        return SimReport(
            seed=self.seed,
            events=self.scheduler.events_run,
            sim_time=self.scheduler.now,
            operations=len(history),
            unknown=sum(1 for op in history if op.complete is None),
            messages=self.network.sent,
            dropped=self.network.dropped,
            crashes=self.crashes,
            restarts=self.restarts,
            elections=len(self.checker.leaders),
            snapshots_installed=self.installs,
            max_term=max((n.actor.term for n in self.nodes.values() if n.actor), default=0),
            crash_points=dict(sorted(self.crash_points.items())),
            writer_crashes=self.writer_crashes,
            zero_holes_cut=self.zero_holes_cut,
            torn_records_cut=self.torn_records_cut,
            lease_renewals=self.lease_monitor.renewals,
            lease_revokes=self.lease_monitor.expiries,
            clock_jumps=self.clock_jumps,
            disconnects=self.disconnects_seen,
            leader_disconnects=self.leader_disconnects,
            sessions_opened=sum(c.actor.sessions_opened for c in self.clients),
            sessions_lost=sum(c.actor.sessions_lost for c in self.clients),
            session_expired_writes=sum(c.sessions_expired for c in self.clients),
            writes_resent=sum(c.actor.writes_resent for c in self.clients),
            delete_prefixes=sum(c.delete_prefixes for c in self.clients),
            clients_cut_off=self.clients_cut_off,
            member_changes=sum(self.membership.proposed.values()),
            members_retired=len(self.membership.retired),
            leader_handovers=self.membership.handovers,
        )

    def failure(self, text: str) -> SimFailure:
        return SimFailure(text)

    def _check_watchers(self, deadline: float) -> None:
        leader = self._leader()
        assert leader is not None and leader.sm is not None
        final = leader.sm.revision

        def caught_up() -> bool:
            return all(w.live and w.segments[-1].through >= final for w in self.watchers)

        self._drive(until=caught_up, stop_at=deadline + 2 * self.options.liveness_bound)
        problem = check_watchers(self.watchers, reference_events(self.checker.commands), final)
        if problem:
            raise SimFailure(f"watch: {problem}")

    def _drive(self, until: Any, stop_at: float = float("inf")) -> None:
        while not until():
            if self.scheduler.events_run >= self.options.max_events:
                raise SimFailure(f"no progress after {self.options.max_events} events")
            if self.scheduler.next_time() > stop_at or not self.scheduler.run_next():
                return

    def _clients_idle(self) -> bool:
        return all(not c.open for c in self.clients) and all(o.idle for o in self.lease_owners)

    def _check_leases_revoked(self) -> None:
        """Every lease an owner was granted is revoked (all owners stopped by now), within TTL + a bound of
        the later of its owner's stop and the healing, and its key is gone."""
        monitor = self.lease_monitor
        leases = {lease_id: owner for owner in self.lease_owners for lease_id in owner.leases}
        if not leases:
            return
        ttl = self.lease_owners[0].ttl
        stop_at = self.healed_at + ttl + LEASE_REVOKE_BOUND
        self._drive(until=lambda: all(i in monitor.revoked_at for i in leases), stop_at=stop_at)
        for lease_id, owner in leases.items():
            revoked = monitor.revoked_at.get(lease_id)
            assert owner.stopped_at is not None
            due = max(owner.stopped_at, self.healed_at) + ttl + LEASE_REVOKE_BOUND
            if revoked is None or revoked > due:
                raise SimFailure(f"lease {lease_id} of {owner.id} not revoked by {due:.3f} (at {revoked})")
        self._check_convergence(self.scheduler.now)
        for node in self._members_up():
            for owner in self.lease_owners:
                if node.sm is None or not owner.leases:
                    continue
                if decode_result(node.sm.query(encode_query(["get", owner.key])))["kv"] is not None:
                    raise SimFailure(f"{owner.key} outlived every lease of {owner.id} on {node.id}")

    def _members_up(self) -> list[SimNode]:
        """The running nodes the leader's configuration lists (a node whose addition was lost is not one)."""
        leader = self._leader()
        if leader is None or leader.actor is None:
            return []
        names = set(leader.actor.configuration.names)
        return [n for n in self.nodes.values() if n.up and n.actor and n.id in names]

    def _check_convergence(self, deadline: float) -> None:
        def converged() -> bool:
            actors = [n.actor for n in self._members_up() if n.actor]
            leader = next((a for a in actors if a.role is Role.LEADER), None)
            if leader is None:
                return False
            return all(a.applied_index == leader.commit_index == a.commit_index for a in actors)

        self._drive(until=converged, stop_at=deadline + self.options.liveness_bound)
        if not converged():
            states = {
                n.id: (n.actor.role.value, n.actor.commit_index, n.actor.applied_index)
                for n in self.nodes.values()
                if n.actor
            }
            raise SimFailure(f"replicas did not converge after healing: {states}")
        digests = {n.id: n.sm.digest() for n in self._members_up() if n.sm is not None}
        if len(set(digests.values())) != 1:
            raise SimFailure(f"replicas applied the same index but differ: {digests}")

    # --- nodes ------------------------------------------------------------------------------------

    def _start_node(self, nid: str) -> None:
        node = self.nodes[nid]
        node.clock_offset = self._clock_rng.uniform(-1000.0, 1000.0)  # a (re)boot: a new monotonic base
        now = self._clock(node)
        node.storage = DiskStorage(
            node.fs,
            "/data",
            cluster_id="sim",
            node_name=nid,
            segment_bytes=4096,
            crash_hook=self._crash_hook(node),
            snapshot_runner=SimSnapshotRunner(self, node),
        )
        recovered = node.storage.recover()
        self.zero_holes_cut += node.storage.stats.zero_holes_cut
        self.torn_records_cut += node.storage.stats.torn_records_cut
        node.sm = CheckedStateMachine(nid, self.checker)
        node.actor = NodeActor(
            nid,
            node.bootstrap or self.initial_ids,
            self.options.raft,
            node.sm,
            self._node_rngs[nid],
            recovered,
            now,
            joined=node.bootstrap is not None,
        )
        node.actor.set_known_peers(frozenset(self.nodes))  # the sim's transport authenticates every node
        node.service = KVService(
            node.actor,
            node.sm,
            election_timeout=self.options.raft.election_timeout,
            lease_checkpoint_interval=self.options.lease_checkpoint_interval,
            session_ttl=self.options.session_ttl,
        )
        node.up = True
        node.persisting = False
        self.checker.forget_node(nid)
        self._after_event(node)

    def add_node(self, nid: str, bootstrap: Configuration) -> None:
        """A new member's machine: a fresh disk, started knowing `bootstrap` (as `--join` would learn)."""
        self.nodes[nid] = SimNode(nid, SimFS(page_size=PAGE_SIZE), bootstrap=bootstrap)
        self._node_rngs[nid] = random.Random(self.membership.rng.getrandbits(64))
        self.node_ids.append(nid)
        for other in self.nodes.values():
            if other.actor is not None:
                other.actor.set_known_peers(frozenset(self.nodes))
        self._start_node(nid)

    def retire_node(self, nid: str) -> None:
        """A removed member is shut down for good (its name is never reused)."""
        node = self.nodes[nid]
        self._crash(node)
        node.retired = True
        self.node_ids.remove(nid)

    def _crash_hook(self, node: SimNode) -> Any:
        def hook(point: str) -> None:
            if self.options.crash_points and not self.healing and self._disk_rng.random() < 0.01:
                self.crash_points[point] = self.crash_points.get(point, 0) + 1
                if point.startswith("snap-"):
                    self.writer_crashes += 1
                raise SimCrash(point)

        return hook

    def _schedule_writer_step(self, node: SimNode, job: SnapshotJob) -> None:
        incarnation = node.incarnation
        delay = self._disk_rng.uniform(*self.options.disk_delay)
        self.scheduler.after(delay, lambda: self._writer_step(node, job, incarnation))

    def _writer_step(self, node: SimNode, job: SnapshotJob, incarnation: int) -> None:
        """One step of a node's snapshot writer; once the job is done the pump records it in the WAL, as
        the runtime's next turn does."""
        if node.incarnation != incarnation or node.storage is None or job.finished:
            return  # the node crashed meanwhile, or the storage waited for the job and ran it itself
        crash_here = self.options.crash_points and not self.healing
        if crash_here and self._disk_rng.random() < WRITER_STEP_CRASH:
            self.writer_crashes += 1
            self._crash(node)
            return
        try:
            finished = job.step()
        except SimCrash:
            self._crash(node)
            return
        if finished:
            self._after_event(node)
        else:
            self._schedule_writer_step(node, job)

    def _crash(self, node: SimNode) -> None:
        if not node.up:
            return
        if self._conn_rng.random() < CRASH_CLOSES_CONNECTIONS:
            for peer in self.nodes.values():
                if peer is not node:
                    self._tell_disconnected(peer, node.id)
        node.up = False
        node.persisting = False
        node.incarnation += 1
        node.fs.crash(self._disk_rng)
        node.actor = None
        node.service = None
        node.sm = None
        self.crashes += 1

    def _tell_disconnected(self, node: SimNode, peer: str) -> None:
        """`node` sees its connection to `peer` close, after about a message's delay."""
        incarnation = node.incarnation

        def tell() -> None:
            if node.incarnation == incarnation and node.actor is not None:
                self.disconnects_seen += 1
                before = node.actor.leader
                node.actor.peer_disconnected(peer, self._clock(node))
                self.leader_disconnects += before is not None and node.actor.leader is None
                self._after_event(node)

        self.scheduler.after(self._conn_rng.uniform(0.0005, self.options.max_delay), tell)

    def _reset_leader_connection(self) -> None:
        """A follower's connection to its leader is reset while the leader runs on: a false alarm."""
        node = self.nodes[self._conn_rng.choice(self.node_ids)]
        leader = node.actor.leader if node.actor is not None else None
        if leader is not None and leader != node.id and self.nodes[leader].up:
            self._tell_disconnected(node, leader)

    def _restart(self, node: SimNode) -> None:
        if node.up or node.retired:
            return
        self.restarts += 1
        self._start_node(node.id)

    def _clock(self, node: SimNode) -> float:
        """What node's own monotonic clock reads now."""
        return self.scheduler.now + node.clock_offset

    def _deliver(self, msg: Any) -> None:
        if isinstance(msg, ClientResponse):
            client = self.clients_by_id.get(msg.dst)
            if client is not None:
                client.on_response(msg)
            watcher = self.watchers_by_id.get(msg.dst)
            if watcher is not None:
                watcher.on_response(msg)
            owner = self.lease_owners_by_id.get(msg.dst)
            if owner is not None:
                owner.on_response(msg)
            return
        node = self.nodes.get(msg.dst)
        if node is None or not node.up or node.actor is None or node.service is None:
            return
        if isinstance(msg, ClientRequest):
            node.service.request(msg, msg.src, Origin.CLIENT)
        else:
            node.actor.step(msg, self._clock(node))
        self._after_event(node)

    def _after_event(self, node: SimNode) -> None:
        actor = node.actor
        assert actor is not None
        self.checker.check_node(actor, node.bootstrap is not None)
        self._pump(node)

    def _send_answers(self, node: SimNode) -> None:
        if node.service is not None:
            for answers in node.service.take_answers().values():
                for answer in answers:
                    self.network.send(answer)

    def _pump(self, node: SimNode) -> None:
        actor = node.actor
        if node.service is not None:
            node.service.pump_watches(self.scheduler.now)  # as the runtime's turn
        self._send_answers(node)  # refusals and local reads need no Ready, nor wait for a persist
        if actor is None or node.persisting:
            return
        storage = node.storage
        assert storage is not None
        try:
            if storage.poll_snapshot() is not None:  # the snapshot writer finished: as the runtime's turn
                storage.compact(actor.log.base_index)
        except SimCrash:
            self._crash(node)
            return
        for _ in range(10_000):
            if not actor.has_ready():
                break
            for msg in actor.take_replication(self._clock(node)):  # as the runtime does
                self.network.send(msg)
            rd = actor.ready(self._clock(node))
            self.checker.check_node(actor, node.bootstrap is not None)  # ready() applies and may compact
            for msg in rd.early_messages:
                self.network.send(msg)
            assert node.service is not None
            node.service.set_time(self._clock(node))
            node.service.on_ready(rd)
            self._send_answers(node)  # as the runtime: before the persist
            if rd.needs_persist():
                node.persisting = True
                incarnation = node.incarnation
                delay = self._disk_rng.uniform(*self.options.disk_delay)
                self.scheduler.after(delay, lambda rd=rd, inc=incarnation: self._persisted(node, rd, inc))
                break
            self._finish(node, rd)
            if rd.is_empty():  # background work only (a snapshot slice): as the runtime, let events in
                incarnation = node.incarnation
                self.scheduler.after(SLICE_PAUSE, lambda inc=incarnation: self._resume(node, inc))
                break
        else:
            raise SimFailure(f"{node.id} reports work ready forever without persisting anything")
        self._schedule_tick(node)

    def _resume(self, node: SimNode, incarnation: int) -> None:
        if node.incarnation == incarnation and node.actor is not None:
            self._after_event(node)

    def _persisted(self, node: SimNode, rd: Ready, incarnation: int) -> None:
        if node.incarnation != incarnation or node.storage is None:
            return
        storage = node.storage
        try:
            durable_before = storage.snapshot_index
            storage.persist(rd.hard_state, rd.truncate_from, rd.entries, rd.snapshot, rd.snapshot_is_own)
            if storage.snapshot_index != durable_before and node.actor is not None:  # as the runtime does
                storage.compact(node.actor.log.base_index)
        except SimCrash:
            self._crash(node)
            return
        node.persisting = False
        if rd.snapshot is not None and rd.truncate_from is not None:
            self.installs += 1
        self._finish(node, rd)
        self._after_event(node)

    def _finish(self, node: SimNode, rd: Ready) -> None:
        actor = node.actor
        assert actor is not None
        for msg in rd.messages:
            if isinstance(msg, ClientRequest):
                continue
            self.network.send(msg)
        actor.advance(rd, self._clock(node))
        self.checker.check_node(actor, node.bootstrap is not None)

    def _schedule_tick(self, node: SimNode) -> None:
        actor = node.actor
        if actor is None:
            return
        node.tick_token += 1
        token, incarnation = node.tick_token, node.incarnation
        # back to simulated time; a hair later, so that the node's clock then reads at least its deadline
        # despite the rounding of the offset (else the tick finds nothing due and reschedules forever)
        at = actor.next_deadline() - node.clock_offset + CLOCK_ROUNDING
        self.scheduler.at(at, lambda: self._tick(node, token, incarnation))

    def _tick(self, node: SimNode, token: int, incarnation: int) -> None:
        if token != node.tick_token or incarnation != node.incarnation or node.actor is None:
            return
        node.actor.tick(self._clock(node))
        if node.service is not None:
            node.service.tick(self._clock(node))
        self._after_event(node)

    # --- faults -----------------------------------------------------------------------------------

    def _schedule_nemesis(self) -> None:
        lo, hi = self.options.nemesis_interval
        self.scheduler.after(self._nemesis_rng.uniform(lo, hi), self._nemesis)

    def _nemesis(self) -> None:
        if self.healing:
            return
        rng = self._nemesis_rng
        opts = self.options
        actions: list[Any] = [self.network.heal]
        if opts.partitions:
            actions += [self._random_partition, self._isolate_leader, self._one_way]
        if opts.crashes:
            actions += [self._crash_random, self._crash_leader, self._restart_all, self._restart_all]
        if self.lease_owners:
            actions.append(self._jump_follower_clock)
        if self.clients:
            actions.append(self._cut_off_client)
        rng.choice(actions)()
        if self._conn_rng.random() < FALSE_DISCONNECT:
            self._reset_leader_connection()
        self._schedule_nemesis()

    def _leader(self) -> SimNode | None:
        leaders = [n for n in self.nodes.values() if n.up and n.actor and n.actor.role is Role.LEADER]
        return max(leaders, key=lambda n: n.actor.term) if leaders else None  # type: ignore[union-attr]

    def _random_partition(self) -> None:
        ids = list(self.node_ids)
        self._nemesis_rng.shuffle(ids)
        cut = self._nemesis_rng.randrange(1, len(ids))
        self.network.heal()
        self.network.partition([ids[:cut], ids[cut:]])

    def _isolate_leader(self) -> None:
        leader = self._leader()
        if leader is not None:
            self.network.heal()
            self.network.isolate(leader.id, self.node_ids)

    def _one_way(self) -> None:
        a, b = self._nemesis_rng.sample(self.node_ids, 2)
        self.network.block(a, b)

    def _jump_follower_clock(self) -> None:
        """A follower's clock jumps forward (a suspended VM resumes): its timers fire early, nothing else."""
        leader = self._leader()
        node = self.nodes[self._nemesis_rng.choice(self.node_ids)]
        if node is not leader and node.up and node.actor is not None and node.actor.role is not Role.LEADER:
            node.clock_offset += self._nemesis_rng.uniform(0.5, 30.0)
            self.clock_jumps += 1
            self._schedule_tick(node)

    def _cut_off_client(self) -> None:
        """A client loses every node for a while, often longer than the session TTL: its writes in flight
        retry into the void, and when it is back its session may be gone (refused, never applied twice)."""
        client = self._nemesis_rng.choice(self.clients)
        self.network.isolate(client.id, self.node_ids)
        self.clients_cut_off += 1
        back = self._nemesis_rng.uniform(0.5, 2.5 * self.options.session_ttl)
        self.scheduler.after(back, lambda: self.network.rejoin(client.id, self.node_ids))

    def _crash_random(self) -> None:
        self._crash(self.nodes[self._nemesis_rng.choice(self.node_ids)])
        self._schedule_restart()

    def _crash_leader(self) -> None:
        leader = self._leader()
        if leader is not None:
            self._crash(leader)
            self._schedule_restart()

    def _schedule_restart(self) -> None:
        self.scheduler.after(self._nemesis_rng.uniform(0.2, 4.0), self._restart_all)

    def _restart_all(self) -> None:
        for node in self.nodes.values():
            if not node.up:
                self._restart(node)

    def _heal_everything(self) -> None:
        self.healing = True
        self.healed_at = self.scheduler.now
        for owner in self.lease_owners:
            owner.stop()
        self.network.heal()
        self.network.faults = NetworkFaults(drop=0.0, duplicate=0.0, min_delay=0.0005, max_delay=0.005)
        self._restart_all()


def run_seed(seed: int, options: SimOptions | None = None) -> SimReport:
    return SimCluster(seed, options).run()
