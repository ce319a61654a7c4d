"""NodeRuntime: drives one NodeActor with real sockets, a real disk and the monotonic clock.

This is the only place where Raft meets I/O. Each event-loop turn (DESIGN.md rule 6):

1. the loop's readers drain every readable socket (at most DRAIN_LIMIT frames and about
   config.intake_bytes bytes each, so one turn's intake is bounded); every frame is decoded and admitted
   (cluster/node/inbound.py), then a peer message is stepped into the node and a client request handed to
   the KV service (cluster/kv/service.py) with the connection it came on, or the frame is dropped and
   counted (peers) or answered with BAD_REQUEST (clients);
2. the node's timers fire if due; the advertiser may send its put to the leader; a pending shutdown
   advances (leadership transfer);
3. while the node has a Ready: persist it with one write and one fsync (only when it holds something to
   persist; a snapshot the node took itself is written by storage's background thread and recorded in
   a later turn), compact the WAL once a snapshot is durable, then send its messages (peer messages
   through our DEALER to the destination; the service's answers, built from the Ready, back along the
   connection their request came in on, all of one connection's answers in one batch frame, before the
   fsync), then advance. Of the messages that may leave before the fsync, AppendEntries carrying entries
   go first (the followers' fsyncs overlap ours), then the answers (a client waits on them), then the
   rest (commit notices, heartbeats: nothing waits on them as closely);
4. the peer messages the node dropped as invalid (they decoded but made no sense against its state) are
   logged, at most one line per peer per INVALID_PEER_LOG_INTERVAL; the node's status counts them all;
5. with an HTTP status server (cluster/node/http/), the bridge's loop calls (read-only requests of other
   threads) go to the KV service like clients' requests, and a status snapshot is published
   (cluster/node/bridge.py: the only way other threads see this node's state, DESIGN.md rule 8).

Answers are routed by the connection a request came in on (its ROUTER envelope), never by the `src` the
sender declares: a client naming itself after another never sees the other's answers, and a client that
stops reading only fills its own connection's queue (a full queue drops that connection's answers).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Final

from loguru import logger

from actors.membership import Configuration
from actors.messages import AppendEntries, ClientRequest, ClientResponse, Message, Status
from actors.node import NodeActor, Role
from cluster.kv.machine import MAX_COMMAND_BYTES, KVStateMachine
from cluster.kv.service import KVService, Origin
from cluster.kv.watches import WatchOptions
from cluster.node.advertise import MEMBER_PREFIX, Advertiser, client_urls, read_members
from cluster.node.bridge import LoopBridge, LoopCall
from cluster.node.config import NodeConfig
from cluster.node.inbound import (
    Rejected,
    admit_client_frame,
    admit_dealer_frame,
    admit_peer_frame,
    salvage_ids,
)
from cluster.node.instruments import Instruments
from cluster.node.security import NodeSecurity
from cluster.node.shutdown import GracefulStop
from cluster.node.status import build_status
from cluster.storage import DiskStorage
from transport.batches import batches
from transport.codec import MAX_FRAME_BYTES, encode, encode_batch
from transport.disconnects import DisconnectMonitor
from transport.endpoints import (
    ClientPort,
    MissingPeerKey,
    PeerMesh,
    Route,
    SendStats,
    recv_batch,
    recv_batch_users,
    reply,
    split_envelope,
)
from transport.loop import EventLoop
from transport.ratelimit import LogRateLimiter
from transport.zap import HandshakeMonitor

DRAIN_LIMIT: Final = 1000  # frames taken from one socket per turn, so no socket starves the others
MAX_READIES_PER_TURN: Final = 64
PEER_MAX_FRAME: Final = MAX_FRAME_BYTES  # what decode accepts from a peer
CLIENT_MAX_FRAME: Final = MAX_COMMAND_BYTES + 64 * 1024  # a request never needs more
PEER_SOCKET_LIMIT: Final = 2 * PEER_MAX_FRAME  # beyond this ZeroMQ drops the connection itself
CLIENT_SOCKET_LIMIT: Final = 4 * CLIENT_MAX_FRAME
MAX_ANSWER_BATCH_BYTES: Final = 1 << 20  # results in one batch frame of client answers
BAD_FRAME_LOG_INTERVAL: Final = 5.0  # seconds between two reports of the same kind of bad frame
INVALID_PEER_LOG_INTERVAL: Final = 5.0  # seconds between two reports of invalid messages from one peer
REFUSAL_LOG_INTERVAL: Final = 5.0  # seconds between two reports of refused handshakes of one kind and port
MAX_REASON_BYTES: Final = 200


class NodeRuntime:
    def __init__(
        self,
        config: NodeConfig,
        node: NodeActor,
        sm: KVStateMachine,
        storage: DiskStorage,
        mesh: PeerMesh,
        clients: ClientPort,
        loop: EventLoop,
        security: NodeSecurity | None = None,
    ) -> None:
        self.config = config
        self.security = security or NodeSecurity()
        self.name = config.name
        self.node = node
        self.sm = sm
        self.storage = storage
        self.mesh = mesh
        self.clients = clients
        self.loop = loop
        self.started = loop.clock()
        self.counters: Counter[str] = Counter()
        self.reply_stats = SendStats()
        progress = config.watch_progress_ms / 1000.0
        watch_options = WatchOptions(
            max_watches=config.max_watches, progress_interval=progress, idle_timeout=max(30.0, 10 * progress)
        )
        election_timeout = config.election_timeout_ms / 1000.0
        self.service: KVService[Route | LoopCall] = KVService(
            node,
            sm,
            self._status,
            watch_options,
            election_timeout=election_timeout,
            min_lease_ttl=config.lease_min_ttl_ms / 1000.0 or None,
            lease_checkpoint_interval=config.lease_checkpoint_ms / 1000.0,
            session_ttl=config.session_ttl_ms / 1000.0,
            is_member_key=lambda key: self.security.member_of(key) is not None,
            enforce_permissions=self.security.secure,  # without CURVE no client proves who it is
        )
        self._intake_bytes = config.intake_bytes
        self.stop = GracefulStop(self.name, election_timeout)
        retry = min(2.0, max(0.5, 2 * election_timeout))  # advertise retry: a couple of seconds at most
        self.advertiser = Advertiser(self.name, config.client_url, config.peer_url, retry, config.http_url)
        self._peers = node.accepted_senders()  # identities admitted on the peer port
        # None, so the first _sync_members() below follows the configuration recovered from the log or a
        # snapshot, which may list members (or URLs) that the bootstrap one the mesh was opened with lacks.
        self._config_seen: Configuration | None = None
        self._removed_logged = False
        self._keyless_logged: set[str] = set()  # members skipped for want of a CURVE key (logged once)
        self._bad_frames = LogRateLimiter(BAD_FRAME_LOG_INTERVAL)
        self._invalid_peers = LogRateLimiter(INVALID_PEER_LOG_INTERVAL)
        self._seen: tuple[Role, int, str | None] = (node.role, node.term, node.leader)
        self._members_read: tuple[int, dict[str, dict[str, Any]]] | None = None  # see _member_records
        # --- status for other threads (HTTP status server, metrics): see cluster/node/bridge.py
        self.instruments = Instruments()
        self.bridge: LoopBridge | None = None  # set by whoever starts an HTTP status server
        self._refusals = LogRateLimiter(REFUSAL_LOG_INTERVAL)
        self.monitors: list[HandshakeMonitor] = []
        if self.security.secure:
            loop.add_reader(mesh.router, self._on_secure_peer_router)
            loop.add_reader(clients.router, self._on_secure_client_router)
            for port, sock in (("peer", mesh.router), ("client", clients.router)):
                monitor = HandshakeMonitor(sock)
                self.monitors.append(monitor)
                loop.add_reader(monitor.socket, self._refusal_reader(port, monitor))
        else:
            loop.add_reader(mesh.router, self._on_peer_router)
            loop.add_reader(clients.router, self._on_client_router)
        self.disconnects: dict[str, DisconnectMonitor] = {}
        for peer, dealer in mesh.dealers.items():
            self._watch_dealer(peer, dealer)
        self._sync_members()  # a configuration recovered from the log or a snapshot

    # --- the loop -------------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until a requested stop completes (see cluster/node/shutdown.py)."""
        self.loop.run(self.turn)

    def turn(self, now: float) -> float | None:
        """The work after the readers ran: timers, advertising, shutdown, Readies. Returns the deadline."""
        node = self.node
        if now >= node.next_deadline():
            node.tick(now)
        self.service.tick(now)  # lease expiry, by this node's monotonic clock while it leads
        reloaded = self.security.reload(now)
        if reloaded is not None:
            logger.info("{}: {}", self.name, reloaded)
        request = self.advertiser.poll(now, node.leader, self.sm)
        if request is not None:
            self._send_advertise(request, now)
        done = self.stop.step(node, now)
        if self.storage.poll_snapshot() is not None:  # written in the background (cluster/storage)
            self._snapshot_durable()
        self.pump(now)
        watches_busy = self.service.pump_watches(now)
        bridge = self.bridge
        if bridge is not None:
            self._serve_bridge(bridge, now)
        self._send_answers()
        self._report_invalid(now)
        self._log_role_change()
        self._sync_members()
        if done:
            return None
        if node.has_ready() or watches_busy or (bridge is not None and bridge.has_calls()):
            return now
        return min(
            node.next_deadline(),
            self.advertiser.next_due(),
            self.stop.next_deadline(),
            self.service.next_watch_due(),
        )

    def pump(self, now: float) -> None:
        """Persist, send and advance every Ready the node has (persist before you speak)."""
        node = self.node
        service = self.service
        for _ in range(MAX_READIES_PER_TURN):
            if not node.has_ready():
                break
            for msg in node.take_replication(now):  # new entries leave before the apply work in ready()
                self._send(msg)
            applied_before = node.applied_index
            started = self.loop.clock()
            rd = node.ready(now)
            if node.applied_index != applied_before:
                self.instruments.apply_seconds.observe(self.loop.clock() - started)
            self.instruments.proposals_committed += len(rd.applied)
            after_answers: list[Message] = []
            for msg in rd.early_messages:
                if isinstance(msg, AppendEntries) and msg.entries:
                    self._send(msg)  # new entries: the followers' fsyncs run in parallel with ours
                else:
                    after_answers.append(msg)  # commit notices, heartbeats: the answers are waited on
            service.set_time(now)  # a keepalive confirmed in this Ready renews from now
            service.on_ready(rd)
            self._send_answers()  # they report committed or applied state: no need to wait for the fsync
            for msg in after_answers:
                self._send(msg)
            if rd.needs_persist():
                storage = self.storage
                durable_before = storage.snapshot_index
                started = self.loop.clock()
                storage.persist(rd.hard_state, rd.truncate_from, rd.entries, rd.snapshot, rd.snapshot_is_own)
                if rd.snapshot_is_own and rd.snapshot is not None:
                    self.instruments.snapshot_started = started
                if storage.snapshot_index != durable_before:
                    self._snapshot_durable()
                now = self.loop.clock()  # the fsync took time
                if rd.entries:
                    self.instruments.append_seconds.observe(now - started)
                    self.instruments.entries_per_fsync.observe(len(rd.entries))
            for msg in rd.messages:
                self._send(msg)
            node.advance(rd, now)
            if rd.is_empty():
                break  # only background work (a snapshot slice): let the loop poll its sockets first
        self._send_answers()  # refusals and local reads that needed no Ready

    def _snapshot_durable(self) -> None:
        """A snapshot file is durable and recorded in the WAL: compact, and say so."""
        self.storage.compact(self.node.log.base_index)
        started = self.instruments.snapshot_started
        if started is not None:
            self.instruments.snapshot_started = None
            self.instruments.snapshot_seconds.observe(self.loop.clock() - started)
        self.instruments.event(f"snapshot at index {self.storage.snapshot_index} is durable")
        logger.info(
            "{}: snapshot at index {} is durable; log kept from index {}",
            self.name,
            self.storage.snapshot_index,
            self.node.log.base_index + 1,
        )

    def flush(self) -> None:
        """Persist (and send) whatever the node still holds, so nothing is pending in storage."""
        self.pump(self.loop.clock())

    # --- sending --------------------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        """Send a peer message now through our DEALER to its destination."""
        if isinstance(msg, ClientRequest | ClientResponse):
            self.counters["unexpected_outgoing"] += 1  # the Raft core never speaks to clients
        else:
            self.mesh.send(msg.dst, encode(msg))

    def _send_answers(self) -> None:
        """Send the service's answers: each connection's in as few frames as the batch limits allow."""
        if not self.service.has_answers():
            return
        answers = self.instruments.answers
        for route, msgs in self.service.take_answers().items():
            if isinstance(route, LoopCall):
                route.resolve(msgs)
                continue
            for msg in msgs:
                answers[msg.status] += 1
            for run in _runs_by_dst(msgs):  # a batch frame has one dst; one connection may use many names
                for batch in batches(run, MAX_ANSWER_BATCH_BYTES, lambda m: len(m.result)):
                    reply(route, encode_batch(batch), self.reply_stats)

    def _send_advertise(self, request: ClientRequest, now: float) -> None:
        logger.debug("{}: advertising {} through leader {}", self.name, self.advertiser.record, request.dst)
        if request.dst == self.name:
            self.service.request(request, None, Origin.MEMBER)  # our own write: nobody to answer
        else:
            self.mesh.send(request.dst, encode(request))

    # --- receiving ------------------------------------------------------------------------------------

    def _on_peer_router(self) -> None:
        router = self.mesh.router
        self._take_peer_frames(
            [(frames, None) for frames in recv_batch(router, DRAIN_LIMIT, self._intake_bytes)]
        )

    def _on_secure_peer_router(self) -> None:
        """As _on_peer_router, but each frame's sender is the member its CURVE key proved."""
        received = recv_batch_users(self.mesh.router, DRAIN_LIMIT, self._intake_bytes)
        member_of = self.security.member_of
        self._take_peer_frames([(frames, member_of(user) or "") for frames, user in received])

    def _take_peer_frames(self, received: list[tuple[list[bytes], str | None]]) -> None:
        now = self.loop.clock()
        router = self.mesh.router
        for frames, proven in received:
            self.counters["peer_frames"] += 1
            if len(frames) != 2:
                self._drop(
                    Rejected("malformed_peer", f"expected [identity, frame], got {len(frames)} frames"), now
                )
                continue
            identity, payload = frames
            try:
                msg = admit_peer_frame(identity, payload, self._peers, PEER_MAX_FRAME, proven)
            except Rejected as rejected:
                self._drop(rejected, now)
                continue
            if isinstance(msg, ClientRequest):  # a member's advertise write (admission checked who sent it)
                self.service.request(msg, Route(router, (identity,)), Origin.MEMBER)
            else:
                self.node.step(msg, now)

    def _on_client_router(self) -> None:
        received = recv_batch(self.clients.router, DRAIN_LIMIT, self._intake_bytes)
        self._take_client_frames([(frames, "") for frames in received])

    def _on_secure_client_router(self) -> None:
        """As _on_client_router, for admitted keys only: a key removed from the allow-list while its
        connection stays open is refused from the next frame on."""
        received = recv_batch_users(self.clients.router, DRAIN_LIMIT, self._intake_bytes)
        admitted = self.security.client_admitted
        now = self.loop.clock()
        kept: list[tuple[list[bytes], str]] = []
        for frames, user in received:
            if admitted(user):
                kept.append((frames, user))
            else:
                self.counters["client_frames"] += 1
                self._drop(Rejected("revoked_client", "a frame from a client key no longer admitted"), now)
        self._take_client_frames(kept)

    def _take_client_frames(self, received: list[tuple[list[bytes], str]]) -> None:
        now = self.loop.clock()
        router = self.clients.router
        for frames, user in received:
            self.counters["client_frames"] += 1
            split = split_envelope(frames)
            if split is None:
                self._drop(Rejected("malformed_client", f"bad envelope of {len(frames)} frames"), now)
                continue
            envelope, payload = split
            route = Route(router, envelope)
            try:
                requests = admit_client_frame(payload, CLIENT_MAX_FRAME)
            except Rejected as rejected:
                self._drop(rejected, now)
                self._answer_bad_request(route, payload, rejected.reason)
                continue
            service = self.service
            kinds = self.instruments.requests
            for request in requests:
                kinds[request.kind] += 1
                service.request(request, route, Origin.CLIENT, user)

    def _refusal_reader(self, port: str, monitor: HandshakeMonitor) -> Any:
        def on_readable() -> None:
            now = self.loop.clock()
            for refusal in monitor.take():
                key = f"refused_{port}_{refusal.kind}"
                self.counters[key] += 1
                suppressed = self._refusals.allow(key, now)
                if suppressed is None:
                    continue
                more = f" ({suppressed} more since the last report)" if suppressed else ""
                logger.warning(
                    "{}: refused a connection on the {} port: {}{}", self.name, port, refusal.detail, more
                )

        return on_readable

    def _dealer_reader(self, peer: str, dealer: Any) -> Any:
        def on_readable() -> None:
            self._take_dealer_frames(peer, recv_batch(dealer, DRAIN_LIMIT, self._intake_bytes))

        return on_readable

    def _disconnect_reader(self, peer: str, monitor: DisconnectMonitor) -> Any:
        """Our DEALER's connection to `peer` closed: its process probably died; the node may campaign
        soon instead of waiting out an election timeout (actors/node.py peer_disconnected)."""

        def on_readable() -> None:
            closed = monitor.take()
            if closed:
                self.counters["peer_disconnects"] += closed
                logger.debug("{}: the connection to {} closed", self.name, peer)
                self.node.peer_disconnected(peer, self.loop.clock())

        return on_readable

    def _take_dealer_frames(self, peer: str, received: list[list[bytes]]) -> None:
        """What came back on our DEALER to `peer`: only answers to our advertise writes belong there."""
        now = self.loop.clock()
        for frames in received:
            try:
                if len(frames) != 1:
                    raise Rejected("unexpected_peer", f"{len(frames)} frames on our DEALER to {peer}")
                answers = admit_dealer_frame(peer, frames[0], self.name, PEER_MAX_FRAME)
            except Rejected as rejected:
                self._drop(rejected, now)
                continue
            for answer in answers:
                self.counters["advertise_answers"] += 1
                status = Status(answer.status).name
                logger.debug("{}: advertise answer from {}: {}", self.name, peer, status)

    def _member_records(self) -> dict[str, dict[str, Any]]:
        """The members' advertised records (read_members), read again only when a key under their prefix
        changed: a range per status snapshot cost the loop several per cent under writes. Shared between
        snapshots, so nobody may change it."""
        changes = self.sm.prefix_changes(MEMBER_PREFIX)
        if self._members_read is None or self._members_read[0] != changes:
            self._members_read = (changes, read_members(self.sm))
        return self._members_read[1]

    def _status(self, members: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """The STATUS answer's facts (the service adds its own); `members`: the members' records, when the
        caller has them."""
        return build_status(
            self.node.status(),
            cluster_id=self.config.cluster_id,
            client_url=self.config.client_url,
            peer_url=self.config.peer_url,
            data_dir=self.config.data_dir,
            client_urls=client_urls(self.sm, self._member_records() if members is None else members),
            storage=self.storage.stats,
            runtime=self.runtime_counters(),
            uptime=self.loop.clock() - self.started,
        )

    def _answer_bad_request(self, route: Route, payload: bytes, reason: str) -> None:
        src, req_id = salvage_ids(payload, CLIENT_MAX_FRAME)
        text = reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]
        response = ClientResponse(self.name, src, req_id, Status.BAD_REQUEST, text, "")
        reply(route, encode(response), self.reply_stats)

    def _drop(self, rejected: Rejected, now: float) -> None:
        self.counters[rejected.counter] += 1
        suppressed = self._bad_frames.allow(rejected.counter, now)
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            logger.warning(
                "{}: dropped a bad frame ({}): {}{}", self.name, rejected.counter, rejected.reason, more
            )

    def _report_invalid(self, now: float) -> None:
        """Log the peer messages the node dropped as invalid: at most one line per peer per interval."""
        for invalid in self.node.take_invalid():
            suppressed = self._invalid_peers.allow(invalid.peer, now)
            if suppressed is None:
                continue
            more = f" ({suppressed} more from it since the last report)" if suppressed else ""
            logger.warning(
                "{}: dropped an invalid {} from {}: {}{}",
                self.name,
                invalid.kind,
                invalid.peer[:64],
                invalid.reason[:MAX_REASON_BYTES],
                more,
            )

    # --- other threads' view (cluster/node/bridge.py) --------------------------------------------------

    def _serve_bridge(self, bridge: LoopBridge, now: float) -> None:
        """Hand the waiting loop calls to the service (read-only requests), then publish if it is time."""
        service = self.service
        for call in bridge.take_calls():
            service.request(call.request, call, Origin.CLIENT)
        if bridge.publish_due(now):
            bridge.publish(self.status_snapshot(now), now)

    def status_snapshot(self, now: float) -> dict[str, Any]:
        """Everything the HTTP status server shows of this node, as fresh objects nobody changes later."""
        sm = self.sm
        members = self._member_records()
        status = self._status(members)
        status["clients"] = self.service.describe()
        return {
            "node": status,
            "http_url": self.config.http_url,
            "election_timeout": self.config.election_timeout_ms / 1000.0,
            "member_records": members,
            "kv": {
                "keys": len(sm),
                "revision": sm.revision,
                "leases": len(sm.leases),
                "sessions": sm.session_count,
            },
            "instruments": self.instruments.export(),
            "published": {"monotonic": now, "wall": time.time(), "turns": self.loop.turns},
        }

    # --- facts ----------------------------------------------------------------------------------------

    def runtime_counters(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out["peer_send"] = self.mesh.stats.as_dict()
        out["replies"] = self.reply_stats.as_dict()
        out["turns"] = self.loop.turns
        out["advertise_sent"] = self.advertiser.sent
        out["security"] = self.security.describe()
        return out

    def close_monitors(self) -> None:
        for monitor in self.monitors:
            monitor.close()
        self.monitors.clear()
        for disconnects in self.disconnects.values():
            disconnects.close()
        self.disconnects.clear()

    def _watch_dealer(self, peer: str, dealer: Any) -> None:
        """Read `peer`'s DEALER, and its monitor for closed connections."""
        self.loop.add_reader(dealer, self._dealer_reader(peer, dealer))
        monitor = DisconnectMonitor(dealer)
        self.disconnects[peer] = monitor
        self.loop.add_reader(monitor.socket, self._disconnect_reader(peer, monitor))

    def _unwatch_dealer(self, peer: str, dealer: Any) -> None:
        """Stop reading `peer`'s DEALER and close its monitor, before the DEALER itself is closed."""
        self.loop.remove_reader(dealer)
        monitor = self.disconnects.pop(peer, None)
        if monitor is not None:
            self.loop.remove_reader(monitor.socket)
            monitor.close()

    def _sync_members(self) -> None:
        """Follow the configuration in force (actors/membership.py): a DEALER to every member at its
        current peer URL (and to a removed one while the leader still tells it so), admission of the
        names NodeActor hears, and a log line for each change."""
        node = self.node
        config = node.configuration
        accepted = node.accepted_senders()
        if config is self._config_seen and accepted == self._peers:
            return
        if config is not self._config_seen:
            self._config_seen = config
            logger.info(
                "{}: configuration at index {}: voters {}, learners {}",
                self.name,
                node.configuration_index,
                ", ".join(config.voters),
                ", ".join(config.learners) or "-",
            )
            for news in self.security.follow(config):  # CURVE keys the member records carry
                logger.info("{}: CURVE key of member {} from the configuration", self.name, news)
        self._peers = accepted
        secure = self.security.secure
        wanted: dict[str, str] = {}
        for name in accepted:
            member = config.get(name)
            url = (member.peer_url if member else "") or self.mesh.urls.get(name, "")
            url = url or self.config.initial_cluster.get(name, "")
            if url:
                wanted[name] = url
        for name, url in list(self.mesh.urls.items()):
            key = self.security.member_keys.get(name, b"") if secure else b""
            if wanted.get(name) != url or self.mesh.keys.get(name, b"") != key:
                dealer = self.mesh.dealers.get(name)
                if dealer is not None:
                    self._unwatch_dealer(name, dealer)
                self.mesh.disconnect(name)
                logger.info("{}: peer {} at {} dropped", self.name, name, url)
        for name, url in sorted(wanted.items()):
            if name not in self.mesh.dealers:
                try:
                    dealer = self.mesh.connect(name, url, self.security.member_keys.get(name))
                except MissingPeerKey:
                    if name not in self._keyless_logged:
                        self._keyless_logged.add(name)
                        logger.error(
                            "{}: member {} at {} has no CURVE public key, neither in its member record "
                            "nor in the peer key file (--curve-peers): not connecting to it (never in "
                            "plaintext); cluster-ctl member update {} --peer-url {} --curve-public-key KEY",
                            self.name,
                            name,
                            url,
                            name,
                            url,
                        )
                    continue
                self._watch_dealer(name, dealer)
                logger.info("{}: peer {} at {}", self.name, name, url)
        if node.removed and not self._removed_logged:
            self._removed_logged = True
            logger.warning(
                "{}: removed from the cluster by the configuration at index {} (members {}): it no longer "
                "campaigns or votes toward anything; stop this node",
                self.name,
                node.configuration_index,
                ", ".join(config.names),
            )

    def _log_role_change(self) -> None:
        node = self.node
        seen = (node.role, node.term, node.leader)
        if seen == self._seen:
            return
        old_role, _, old_leader = self._seen
        self._seen = seen
        role, term, leader = seen
        if leader != old_leader:
            self.instruments.leader_changes += 1
            self.instruments.event(
                f"leader is now {leader} (term {term})" if leader else f"no leader (term {term})",
                "info" if leader else "warning",
            )
        if role is not old_role:
            self.instruments.event(f"{self.name} is {role.value} (term {term})")
        if role is Role.LEADER:
            logger.info("{}: became leader (term {})", self.name, term)
        elif role is Role.CANDIDATE:
            logger.info("{}: campaigning (term {})", self.name, term)
        elif role is Role.PRE_CANDIDATE:
            logger.debug("{}: pre-vote for term {}", self.name, term + 1)
        elif leader is not None:
            logger.info("{}: following {} (term {})", self.name, leader, term)
        elif old_role is Role.LEADER:
            logger.info("{}: stepped down as leader (term {})", self.name, term)
        else:
            logger.debug("{}: follower without a known leader (term {})", self.name, term)


def _runs_by_dst(msgs: list[ClientResponse]) -> list[list[ClientResponse]]:
    """`msgs` cut into consecutive runs addressed to the same dst, in order."""
    runs: list[list[ClientResponse]] = []
    dst: str | None = None
    for msg in msgs:
        if msg.dst != dst:
            runs.append([])
            dst = msg.dst
        runs[-1].append(msg)
    return runs
