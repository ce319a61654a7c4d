"""cluster-node: assemble one node process from its configuration and run it until SIGTERM/SIGINT.

Assembly order: configuration (cluster/node/config.py), logging, the data-directory lock, the sockets (so a
port in use fails fast, before the disk is touched), storage recovery, the state machine and NodeActor,
then the runtime loop (cluster/node/runtime.py). Exit status: 0 after a clean stop, 2 for configuration
problems (including a port in use or a data directory locked by another process), 1 when the data
directory cannot be used (corruption, another node's data) or on an unexpected error.
"""

from __future__ import annotations

import random
import signal
import sys
from collections.abc import Callable, Sequence

import zmq
from loguru import logger

from actors.contracts import Recovered
from actors.node import NodeActor
from cluster.kv.machine import KVStateMachine
from cluster.node.bridge import LoopBridge
from cluster.node.config import ConfigError, NodeConfig, http_host_port, load_config
from cluster.node.http.server import HttpBindError, StatusHttpServer
from cluster.node.instruments import TimedFS
from cluster.node.join import initial_configuration, joined_configuration
from cluster.node.lockfile import DataDirLocked, data_dir_lock
from cluster.node.logsetup import configure_logging
from cluster.node.runtime import CLIENT_SOCKET_LIMIT, PEER_SOCKET_LIMIT, NodeRuntime
from cluster.node.security import OPEN_ACCESS_WARNING, OPEN_WARNING, NodeSecurity
from cluster.storage import DiskStorage, StorageError
from transport.endpoints import BindError, ClientPort, PeerMesh
from transport.loop import EventLoop, catch_signals

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
PROG = "cluster-node"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.log_level, config.log_json)
    try:
        return serve(config)
    except (BindError, DataDirLocked, HttpBindError, ConfigError) as exc:
        logger.error("{}: {}", config.name, exc)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageError as exc:
        logger.error("{}: cannot use data directory {}: {}", config.name, config.data_dir, exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:  # SIGINT before the runtime's handlers were installed (e.g. during recovery)
        logger.warning("{}: interrupted during start-up", config.name)
        return EXIT_INTERRUPTED
    except Exception:
        logger.exception("{}: stopped by an unexpected error", config.name)
        return EXIT_FAILURE


def serve(
    config: NodeConfig,
    *,
    stop_signals: bool = True,
    on_start: Callable[[NodeRuntime], None] | None = None,
) -> int:
    """Run the node until a requested stop completes; raises on start-up problems.

    `stop_signals`: SIGTERM/SIGINT request the stop (main thread only). An embedded node
    (cluster/node/embedded.py) runs on another thread without them: `on_start(runtime)` hands it the
    runtime once the node is about to serve, and it requests the stop through `runtime.stop`."""
    security = NodeSecurity.load(config)  # ConfigError before anything is opened
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with data_dir_lock(config.data_dir):
            security.start(ctx)  # the ZAP handler, before any CURVE socket binds
            try:
                _serve_locked(ctx, config, stop_signals, on_start, security)
            finally:
                security.stop()
    finally:
        ctx.term()
    return EXIT_OK


def _serve_locked(
    ctx: zmq.Context[zmq.Socket[bytes]],
    config: NodeConfig,
    stop_signals: bool,
    on_start: Callable[[NodeRuntime], None] | None,
    security: NodeSecurity,
) -> None:
    bootstrap = joined_configuration(config) if config.join else initial_configuration(config)
    peers = {m.name: m.peer_url for m in bootstrap.members if m.name != config.name and m.peer_url}
    if security.secure:
        security.follow(bootstrap)  # keys the joined cluster's member records carry
        # No plaintext DEALER to a member whose CURVE key we lack: the runtime's first _sync_members()
        # logs it (once), after it has also seen the configuration recovered from the log.
        peers = {name: url for name, url in peers.items() if name in security.member_keys}
    mesh = PeerMesh.open(
        ctx,
        config.name,
        config.peer_url,
        peers,
        PEER_SOCKET_LIMIT,
        curve=security.pair,
        peer_keys=security.member_keys,
    )
    try:
        clients = ClientPort.open(ctx, config.client_url, CLIENT_SOCKET_LIMIT, curve=security.pair)
    except BaseException:
        mesh.close()
        raise
    fs = TimedFS()  # times every fsync for /metrics
    storage = DiskStorage(
        fs,
        config.data_dir,
        cluster_id=config.cluster_id,
        node_name=config.name,
        segment_bytes=config.wal_segment_bytes,
        background=True,  # spare WAL segments and the node's own snapshots are written by threads
    )
    loop = EventLoop()
    http: StatusHttpServer | None = None
    runtime: NodeRuntime | None = None
    try:
        http = _bind_http(
            config, loop, security.secure
        )  # before the disk is touched: a port in use fails fast
        recovered = storage.recover()
        sm = KVStateMachine(history_events=config.history_events, history_bytes=config.history_bytes)
        node = NodeActor(
            config.name,
            bootstrap,
            config.raft_config(),
            sm,
            random.Random(),
            recovered,
            loop.clock(),
            joined=bool(config.join),
        )
        runtime = NodeRuntime(config, node, sm, storage, mesh, clients, loop, security)
        runtime.instruments.fsync_seconds = fs.fsync_seconds
        _log_start(config, recovered, node, security)
        users = len(runtime.service.permissions.table().users)
        if security.secure and not users:
            logger.warning("{}: {}", config.name, OPEN_ACCESS_WARNING)
        elif users and not security.secure:
            logger.warning(
                "{}: {} users are configured, but without CURVE no client proves its key: their rights are "
                "not enforced",
                config.name,
                users,
            )
        if config.join:
            logger.info(
                "{}: joining through {}: members {}", config.name, ",".join(config.join), bootstrap.names
            )
        if http is not None:
            runtime.bridge = http.bridge
            http.start()
        restore_signals = (
            catch_signals(loop, (signal.SIGTERM, signal.SIGINT), runtime.stop.request)
            if stop_signals
            else _nothing
        )
        if on_start is not None:
            on_start(runtime)
        try:
            runtime.run()
        finally:
            restore_signals()
        runtime.flush()
        stats = storage.stats
        logger.info(
            "{}: stopped cleanly (term {}, commit {}, applied {}; {} fsyncs, {:.1f} entries per fsync)",
            config.name,
            node.term,
            node.commit_index,
            node.applied_index,
            stats.fsyncs,
            stats.entries_per_fsync(),
        )
    finally:
        if runtime is not None:
            runtime.close_monitors()
        if http is not None:
            http.stop()
        loop.close()
        mesh.close()  # LINGER 0: nothing queued holds up ctx.term()
        clients.close()
        storage.close()


def _nothing() -> None:
    return None


def _bind_http(config: NodeConfig, loop: EventLoop, secure: bool) -> StatusHttpServer | None:
    """The HTTP status server (cluster/node/http/), bound but not yet serving, when --http-url asks for one.
    Its thread starts once the runtime that publishes to its bridge exists. A node with CURVE keys does
    not serve the registry's values over HTTP (cluster/node/http/app.py)."""
    if not config.http_url:
        return None
    host, port = http_host_port(config.http_url)
    bridge = LoopBridge(loop.wakeup, loop.clock)
    return StatusHttpServer(config.name, host, port, bridge, values_served=not secure)


def _log_start(config: NodeConfig, recovered: Recovered, node: NodeActor, security: NodeSecurity) -> None:
    hs = recovered.hard_state
    snap = recovered.snapshot
    logger.info(
        "{}: starting in cluster {} with members {}; peer URL {}, client URL {}, data dir {}",
        config.name,
        config.cluster_id,
        ", ".join(f"{n}={u}" for n, u in sorted(config.initial_cluster.items())),
        config.peer_url,
        config.client_url,
        config.data_dir,
    )
    logger.info(
        "{}: recovered term {}, vote {}, commit {}, snapshot index {}, {} log entries (last index {}); "
        "election timeout {} ms, heartbeat {} ms, snapshot every {} entries",
        config.name,
        hs.term,
        hs.vote or "-",
        hs.commit,
        snap.meta.index if snap else 0,
        len(recovered.entries),
        node.log.last_index(),
        config.election_timeout_ms,
        config.heartbeat_ms,
        config.snapshot_entries,
    )
    if not security.secure:
        logger.warning("{}: {}", config.name, OPEN_WARNING)
        return
    logger.info(
        "{}: CURVE on both ports; public key {}; {} member keys, {} client keys admitted from {}",
        config.name,
        security.describe()["public_key"],
        len(security.member_keys),
        len(security.client_keys),
        security.clients_dir,
    )
    for problem in security.startup_problems:
        logger.warning("{}: {}", config.name, problem)


if __name__ == "__main__":
    sys.exit(main())
