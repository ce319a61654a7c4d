"""A tiny synchronous driver for unit tests of NodeActor: manual time, instant in-memory persistence.

Messages are queued, never sent implicitly: a test delivers, drops or inspects them itself, so each test
states exactly the message exchange the paper's claim is about. Each node has its KV service above it
(cluster/kv/service.py), as in the runtime: client requests go to the service, and its answers are queued
with the node's messages, connections being the clients' names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from actors.config import RaftConfig
from actors.contracts import Ready, Recovered
from actors.membership import Configuration
from actors.messages import ClientRequest, ClientResponse, Entry, HardState, Message, Snapshot
from actors.node import NodeActor, Role
from cluster.kv.machine import KVStateMachine
from cluster.kv.service import KVService, Origin

CONFIG = RaftConfig(election_timeout=1.0, heartbeat_interval=0.1, snapshot_threshold=0)


@dataclass
class Disk:
    """What a node persisted; rebuilt into Recovered on restart."""

    hard_state: HardState = field(default_factory=lambda: HardState(0, None, 0))
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    readies: list[Ready] = field(default_factory=list)

    def persist(self, rd: Ready) -> None:
        self.readies.append(rd)
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
        if rd.truncate_from is not None:
            self.entries = [e for e in self.entries if e.index < rd.truncate_from]
        for e in rd.entries:
            self.entries = [x for x in self.entries if x.index < e.index]
            self.entries.append(e)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def recovered(self) -> Recovered:
        base = self.snapshot.meta.index if self.snapshot else 0
        return Recovered(self.hard_state, self.snapshot, [e for e in self.entries if e.index > base])


class Cluster:
    def __init__(
        self,
        n: int = 3,
        config: RaftConfig = CONFIG,
        seed: int = 1,
        lease_checkpoint_interval: float = 300.0,
        session_ttl: float = 300.0,
    ) -> None:
        self.lease_checkpoint_interval = lease_checkpoint_interval
        self.session_ttl = session_ttl
        self.ids = tuple(f"n{i + 1}" for i in range(n))
        self.initial_ids = self.ids  # the --initial-cluster of every node started with the cluster
        self.config = config
        self.now = 0.0
        self.rng = random.Random(seed)
        self.disks = {nid: Disk() for nid in self.ids}
        self.sms = {nid: KVStateMachine() for nid in self.ids}
        self.nodes = {
            nid: NodeActor(nid, self.ids, config, self.sms[nid], random.Random(self.rng.random()), None, 0.0)
            for nid in self.ids
        }
        self.services = {
            nid: KVService[str](
                self.nodes[nid],
                self.sms[nid],
                election_timeout=config.election_timeout,
                lease_checkpoint_interval=lease_checkpoint_interval,
                session_ttl=session_ttl,
            )
            for nid in self.ids
        }
        self.queue: list[Message] = []
        self.to_clients: list[Message] = []  # delivered messages addressed to no node
        self.sent: list[Message] = []  # every message any node ever emitted, for inspection
        self.answered: list[tuple[str, ClientResponse]] = []  # every service answer, with its connection
        self.blocked: set[str] = set()
        self.bootstrap: dict[str, Configuration] = {}  # members added later: what they joined with

    def add_node(self, nid: str, bootstrap: Configuration) -> None:
        """Start a new node (fresh disk) that knows `bootstrap`, as `cluster-node --join` does."""
        self.ids = (*self.ids, nid)
        self.bootstrap[nid] = bootstrap
        self.disks[nid] = Disk()
        self.restart(nid)

    def flush(self, nid: str) -> list[Message]:
        """Persist and collect everything node `nid` has ready; messages go to the queue and are returned."""
        node = self.nodes[nid]
        service = self.services[nid]
        out: list[Message] = self._answers(service)
        while node.has_ready():
            rd = node.ready(self.now)
            out.extend(rd.early_messages)
            service.set_time(self.now)
            service.on_ready(rd)
            out.extend(self._answers(service))
            self.disks[nid].persist(rd)
            out.extend(rd.messages)
            node.advance(rd, self.now)
        self.queue.extend(out)
        self.sent.extend(out)
        return out

    def request(self, req: ClientRequest) -> None:
        """A client request arriving at node `req.dst` from the client named `req.src`."""
        self.services[req.dst].request(req, req.src, Origin.CLIENT)

    def _answers(self, service: KVService[str]) -> list[Message]:
        out: list[Message] = []
        for conn, answers in service.take_answers().items():
            self.answered.extend((conn, m) for m in answers)
            out.extend(answers)
        return out

    def flush_all(self) -> None:
        for nid in self.ids:
            self.flush(nid)

    def deliver_all(self, max_rounds: int = 1000) -> None:
        """Deliver queued messages (and what they cause) until quiet; blocked nodes lose theirs."""
        for _ in range(max_rounds):
            self.flush_all()
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for msg in batch:
                if msg.dst in self.blocked or msg.src in self.blocked:
                    continue
                if msg.dst not in self.nodes:
                    self.to_clients.append(msg)
                elif isinstance(msg, ClientRequest):
                    self.request(msg)
                else:
                    self.nodes[msg.dst].step(msg, self.now)
        raise AssertionError("messages never quieted down")

    def advance_time(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for nid in self.ids:
                if nid not in self.blocked:
                    self.nodes[nid].tick(self.now)
                    self.services[nid].tick(self.now)  # as the runtime's turn: lease expiry
            self.deliver_all()

    def leaders(self) -> list[str]:
        return [nid for nid, n in self.nodes.items() if n.role is Role.LEADER and nid not in self.blocked]

    def elect(self, nid: str | None = None) -> str:
        """Let time run until someone leads; with nid, time that node out first."""
        if nid is not None:
            self.now = max(self.now, self.nodes[nid].next_deadline())
            self.nodes[nid].tick(self.now)  # only its election timer fires
            self.deliver_all()
        for _ in range(200):
            if self.leaders():
                return self.leaders()[0]
            self.advance_time(0.1)
        raise AssertionError("no leader elected")

    def restart(self, nid: str) -> None:
        self.sms[nid] = KVStateMachine()
        self.nodes[nid] = NodeActor(
            nid,
            self.bootstrap.get(nid) or self.initial_ids,
            self.config,
            self.sms[nid],
            random.Random(self.rng.random()),
            self.disks[nid].recovered(),
            self.now,
            joined=nid in self.bootstrap,
        )
        self.services[nid] = KVService(
            self.nodes[nid],
            self.sms[nid],
            election_timeout=self.config.election_timeout,
            lease_checkpoint_interval=self.lease_checkpoint_interval,
            session_ttl=self.session_ttl,
        )
