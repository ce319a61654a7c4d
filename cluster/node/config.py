"""Node configuration: NodeConfig, the sources it is read from, and the checks it must pass.

Sources, lowest to highest precedence: built-in defaults, a TOML file (--config FILE or ZRAFT_CONFIG),
environment variables (ZRAFT_*), command-line flags. Every problem becomes a ConfigError whose message is
one readable line naming the setting and where it came from; cluster-node prints it and exits with 2.

TOML keys are the NodeConfig field names (name, data_dir, peer_url, client_url, initial_cluster,
cluster_id, election_timeout_ms, heartbeat_ms, snapshot_entries, max_uncommitted_entries, intake_bytes,
log_level, log_json, ...). initial_cluster is a
table (n1 = "tcp://...") or the same "n1=URL,n2=URL" string the flag takes.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.config import RaftConfig

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_URL_PATTERN = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})")
_HTTP_URL_PATTERN = re.compile(r"http://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})/?")


class ConfigError(Exception):
    """The node cannot start with this configuration. The message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    data_dir: str
    peer_url: str
    client_url: str
    initial_cluster: dict[str, str] = field(hash=False)  # every member's name -> peer URL, this node too
    cluster_id: str = "zraft"
    election_timeout_ms: int = 1000
    heartbeat_ms: int = 100
    snapshot_entries: int = 100_000  # applied entries between automatic snapshots (etcd's default); 0 = never
    snapshot_bytes: int = 64 * 1024 * 1024  # ...or after this many bytes of applied commands
    wal_segment_bytes: int = 64 * 1024 * 1024  # a WAL segment rolls over past this size
    max_uncommitted_entries: int = 10_000  # a leader answers writes BUSY while this many wait for commit
    max_uncommitted_bytes: int = 64 * 1024 * 1024  # ...or this many bytes of them
    intake_bytes: int = 8 * 1024 * 1024  # bytes taken from one socket per loop turn (at least one frame)
    history_events: int = 100_000  # watch history kept per node (cluster/kv/history.py)
    history_bytes: int = 64 * 1024 * 1024
    max_watches: int = 10_000  # open watch streams per node (cluster/kv/watches.py)
    watch_progress_ms: int = 1000  # progress notifications of an idle watch
    lease_min_ttl_ms: int = 0  # shortest lease TTL a leader grants; 0 = three election timeouts
    lease_checkpoint_ms: int = (
        300_000  # leases above twice this write their remaining TTL to the log this often
    )
    session_ttl_ms: int = 300_000  # a client session idle this long by the log time expires
    log_level: str = "INFO"
    log_json: bool = False
    http_url: str = ""  # the HTTP status server's http://HOST:PORT (cluster/node/http/); "" = none
    curve_secret_key: str = ""  # this node's secret key file; "" = no CURVE (an open cluster)
    curve_peers: str = ""  # member name -> public key file (cluster/node/security.py)
    curve_clients: str = ""  # directory of the public keys of admitted clients, reloaded while running
    initial_cluster_state: str = "new"  # "existing": joining a running cluster (cluster/node/join.py)
    join: tuple[str, ...] = ()  # client URLs of running members (URL or URL=KEY), asked for the members

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(sorted(self.initial_cluster))

    @property
    def join_urls(self) -> tuple[str, ...]:
        """The client URLs of --join, without the CURVE keys some carry (URL=KEY)."""
        return tuple(item.split("=", 1)[0] for item in self.join)

    @property
    def peers(self) -> dict[str, str]:
        """The other members' peer URLs."""
        return {n: url for n, url in self.initial_cluster.items() if n != self.name}

    def raft_config(self) -> RaftConfig:
        return RaftConfig(
            election_timeout=self.election_timeout_ms / 1000.0,
            heartbeat_interval=self.heartbeat_ms / 1000.0,
            snapshot_threshold=self.snapshot_entries,
            snapshot_threshold_bytes=self.snapshot_bytes,
            max_uncommitted_entries=self.max_uncommitted_entries,
            max_uncommitted_bytes=self.max_uncommitted_bytes,
        )


# --- where each setting comes from ---------------------------------------------------------------------

# NodeConfig field -> (command-line flag, environment variable)
SETTINGS: dict[str, tuple[str, str]] = {
    "name": ("--name", "ZRAFT_NAME"),
    "data_dir": ("--data-dir", "ZRAFT_DATA_DIR"),
    "peer_url": ("--peer-url", "ZRAFT_PEER_URL"),
    "client_url": ("--client-url", "ZRAFT_CLIENT_URL"),
    "initial_cluster": ("--initial-cluster", "ZRAFT_INITIAL_CLUSTER"),
    "cluster_id": ("--cluster-id", "ZRAFT_CLUSTER_ID"),
    "election_timeout_ms": ("--election-timeout-ms", "ZRAFT_ELECTION_TIMEOUT_MS"),
    "heartbeat_ms": ("--heartbeat-ms", "ZRAFT_HEARTBEAT_MS"),
    "snapshot_entries": ("--snapshot-entries", "ZRAFT_SNAPSHOT_ENTRIES"),
    "snapshot_bytes": ("--snapshot-bytes", "ZRAFT_SNAPSHOT_BYTES"),
    "wal_segment_bytes": ("--wal-segment-bytes", "ZRAFT_WAL_SEGMENT_BYTES"),
    "max_uncommitted_entries": ("--max-uncommitted-entries", "ZRAFT_MAX_UNCOMMITTED_ENTRIES"),
    "max_uncommitted_bytes": ("--max-uncommitted-bytes", "ZRAFT_MAX_UNCOMMITTED_BYTES"),
    "intake_bytes": ("--intake-bytes", "ZRAFT_INTAKE_BYTES"),
    "history_events": ("--history-events", "ZRAFT_HISTORY_EVENTS"),
    "history_bytes": ("--history-bytes", "ZRAFT_HISTORY_BYTES"),
    "max_watches": ("--max-watches", "ZRAFT_MAX_WATCHES"),
    "watch_progress_ms": ("--watch-progress-ms", "ZRAFT_WATCH_PROGRESS_MS"),
    "lease_min_ttl_ms": ("--lease-min-ttl-ms", "ZRAFT_LEASE_MIN_TTL_MS"),
    "lease_checkpoint_ms": ("--lease-checkpoint-ms", "ZRAFT_LEASE_CHECKPOINT_MS"),
    "session_ttl_ms": ("--session-ttl-ms", "ZRAFT_SESSION_TTL_MS"),
    "log_level": ("--log-level", "ZRAFT_LOG_LEVEL"),
    "log_json": ("--log-json", "ZRAFT_LOG_JSON"),
    "http_url": ("--http-url", "ZRAFT_HTTP_URL"),
    "curve_secret_key": ("--curve-secret-key", "ZRAFT_CURVE_SECRET_KEY"),
    "curve_peers": ("--curve-peers", "ZRAFT_CURVE_PEERS"),
    "curve_clients": ("--curve-clients", "ZRAFT_CURVE_CLIENTS"),
    "initial_cluster_state": ("--initial-cluster-state", "ZRAFT_INITIAL_CLUSTER_STATE"),
    "join": ("--join", "ZRAFT_JOIN"),
}
CONFIG_ENV = "ZRAFT_CONFIG"
_INT_SETTINGS = (
    "election_timeout_ms",
    "heartbeat_ms",
    "snapshot_entries",
    "snapshot_bytes",
    "wal_segment_bytes",
    "max_uncommitted_entries",
    "max_uncommitted_bytes",
    "intake_bytes",
    "history_events",
    "history_bytes",
    "max_watches",
    "watch_progress_ms",
    "lease_min_ttl_ms",
    "lease_checkpoint_ms",
    "session_ttl_ms",
)
_DEFAULTS: dict[str, Any] = {
    "cluster_id": "zraft",
    "election_timeout_ms": 1000,
    "heartbeat_ms": 100,
    "snapshot_entries": 100_000,
    "snapshot_bytes": 64 * 1024 * 1024,
    "wal_segment_bytes": 64 * 1024 * 1024,
    "max_uncommitted_entries": 10_000,
    "max_uncommitted_bytes": 64 * 1024 * 1024,
    "intake_bytes": 8 * 1024 * 1024,
    "history_events": 100000,
    "history_bytes": 67108864,
    "max_watches": 10000,
    "watch_progress_ms": 1000,
    "lease_min_ttl_ms": 0,
    "lease_checkpoint_ms": 300_000,
    "session_ttl_ms": 300_000,
    "log_level": "INFO",
    "log_json": False,
    "http_url": "",
    "initial_cluster_state": "new",
    "join": "",
}


@dataclass(frozen=True, slots=True)
class _Value:
    value: Any
    source: str  # how the operator would name where it came from, e.g. "--heartbeat-ms"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cluster-node",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run one zraft node: a member of a Raft-replicated key-value metadata service.\n\n"
            "Every setting can also come from a TOML file (--config FILE, keys spelled like data_dir)\n"
            "or a ZRAFT_* environment variable. Flags win over the environment, which wins over the file."
        ),
        epilog=(
            "example (one of three nodes):\n"
            "  cluster-node --name n1 --data-dir /var/lib/zraft/n1 \\\n"
            "    --peer-url tcp://127.0.0.1:7101 --client-url tcp://127.0.0.1:7001 \\\n"
            "    --initial-cluster n1=tcp://127.0.0.1:7101,n2=tcp://127.0.0.1:7102,n3=tcp://127.0.0.1:7103\n\n"
            "exit status: 0 after a clean stop (SIGTERM/SIGINT; a leader hands leadership over first),\n"
            "2 for a configuration error or a port in use, 1 when the data directory cannot be used."
        ),
    )
    add = parser.add_argument
    add(
        "--name",
        metavar="NAME",
        help="this node's stable, unique name (ZRAFT_NAME); must be in --initial-cluster",
    )
    add(
        "--data-dir",
        metavar="DIR",
        help="directory for the WAL and snapshots, created if missing (ZRAFT_DATA_DIR)",
    )
    add(
        "--peer-url",
        metavar="URL",
        help="tcp://HOST:PORT to bind for other nodes (ZRAFT_PEER_URL); "
        "defaults to this node's entry in --initial-cluster and must match it",
    )
    add("--client-url", metavar="URL", help="tcp://HOST:PORT to bind for clients (ZRAFT_CLIENT_URL)")
    add(
        "--initial-cluster",
        metavar="N=URL,...",
        help="every member's name and peer URL, e.g. n1=tcp://10.0.0.1:7101,n2=... (ZRAFT_INITIAL_CLUSTER)",
    )
    add(
        "--cluster-id",
        metavar="ID",
        help="cluster name stamped into the data directory (ZRAFT_CLUSTER_ID; default zraft)",
    )
    add(
        "--config",
        metavar="FILE",
        help="TOML file with any of these settings, keys spelled like data_dir (ZRAFT_CONFIG)",
    )
    add(
        "--election-timeout-ms",
        metavar="N",
        help="base election timeout in milliseconds; timers draw from [N, 2N) "
        "(ZRAFT_ELECTION_TIMEOUT_MS; default 1000)",
    )
    add(
        "--heartbeat-ms",
        metavar="N",
        help="leader heartbeat interval in milliseconds, below half the election timeout "
        "(ZRAFT_HEARTBEAT_MS; default 100)",
    )
    add(
        "--lease-min-ttl-ms",
        metavar="N",
        help="shortest lease TTL the leader grants, at least two election timeouts; 0 = three "
        "(ZRAFT_LEASE_MIN_TTL_MS; default 0)",
    )
    add(
        "--lease-checkpoint-ms",
        metavar="N",
        help="leases longer than 2N write their remaining TTL to the log every N milliseconds, so that "
        "leader changes cannot keep them alive (ZRAFT_LEASE_CHECKPOINT_MS; default 300000)",
    )
    add(
        "--session-ttl-ms",
        metavar="N",
        help="a client session without writes for N ms of the leader's log time expires; its retries "
        "are then refused instead of applied twice (ZRAFT_SESSION_TTL_MS; default 300000, at most a day)",
    )
    add(
        "--snapshot-entries",
        metavar="N",
        help="take a snapshot every N applied entries, 0 = never (ZRAFT_SNAPSHOT_ENTRIES; default 100000)",
    )
    add(
        "--snapshot-bytes",
        metavar="N",
        help="also take a snapshot once N bytes of commands were applied since the last one, 0 = never "
        "(ZRAFT_SNAPSHOT_BYTES; default 67108864)",
    )
    add(
        "--wal-segment-bytes",
        metavar="N",
        help="roll the write-ahead log to a new segment past N bytes; segments a snapshot covers are "
        "deleted (ZRAFT_WAL_SEGMENT_BYTES; default 67108864)",
    )
    add(
        "--max-uncommitted-entries",
        metavar="N",
        help="a leader answers new writes BUSY (retry later) while N entries wait for commit, so a leader "
        "without a majority does not queue them without end (ZRAFT_MAX_UNCOMMITTED_ENTRIES; default 10000)",
    )
    add(
        "--max-uncommitted-bytes",
        metavar="N",
        help="...or while N bytes of entries wait for commit (ZRAFT_MAX_UNCOMMITTED_BYTES; default 67108864)",
    )
    add(
        "--intake-bytes",
        metavar="N",
        help="bytes the node takes in from one socket per loop turn, at least one frame; the rest waits "
        "in ZeroMQ (ZRAFT_INTAKE_BYTES; default 8388608)",
    )
    add(
        "--history-events",
        metavar="N",
        help="changes each node keeps for watches to start from or catch up with; a watch older than the "
        "window gets Compacted, and so does a watcher that falls that far behind "
        "(ZRAFT_HISTORY_EVENTS; default 100000)",
    )
    add(
        "--history-bytes",
        metavar="N",
        help="...and at most N encoded bytes of them (ZRAFT_HISTORY_BYTES; default 67108864)",
    )
    add(
        "--max-watches",
        metavar="N",
        help="open watch streams this node serves at once (ZRAFT_MAX_WATCHES; default 10000)",
    )
    add(
        "--watch-progress-ms",
        metavar="N",
        help="a watch without events gets the current revision this often "
        "(ZRAFT_WATCH_PROGRESS_MS; default 1000)",
    )
    add(
        "--log-level",
        metavar="LEVEL",
        help=f"one of {', '.join(LOG_LEVELS)} (ZRAFT_LOG_LEVEL; default INFO)",
    )
    add(
        "--http-url",
        metavar="URL",
        help="http://HOST:PORT to serve the status API, /health, /ready, /metrics and the status page "
        "on (ZRAFT_HTTP_URL; default: none). Read-only and unauthenticated: bind it to a trusted network",
    )
    add(
        "--initial-cluster-state",
        metavar="STATE",
        help="new (the default: a member of --initial-cluster) or existing: join a running cluster that "
        "already lists this node (cluster-ctl member add) (ZRAFT_INITIAL_CLUSTER_STATE)",
    )
    add(
        "--join",
        metavar="URL,...",
        help="with --initial-cluster-state existing: client URLs of running members, asked for the member "
        "list at start; --initial-cluster is then not needed. With CURVE each is URL=KEY (or URL=FILE.key): "
        "the public key of the node behind it (ZRAFT_JOIN)",
    )
    add(
        "--log-json",
        action="store_true",
        default=None,
        help="log one JSON object per line (ZRAFT_LOG_JSON=1)",
    )
    add(
        "--curve-secret-key",
        metavar="FILE",
        help="this node's CURVE secret key file (from cluster-ctl keygen); turns on encryption and "
        "authentication on both ports (ZRAFT_CURVE_SECRET_KEY)",
    )
    add(
        "--curve-peers",
        metavar="FILE",
        help="every member's CURVE public key, one 'NAME KEY' (or 'NAME = FILE.key') per line "
        "(ZRAFT_CURVE_PEERS; required with --curve-secret-key)",
    )
    add(
        "--curve-clients",
        metavar="DIR",
        help="directory of the *.key public key files of the clients to admit; re-read while running, so "
        "adding or removing a file takes effect without a restart (ZRAFT_CURVE_CLIENTS; required with "
        "--curve-secret-key)",
    )
    return parser


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Parse flags (argparse exits 2 on unknown flags), merge every source, check the result."""
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    merged: dict[str, _Value] = {k: _Value(v, "default") for k, v in _DEFAULTS.items()}

    config_file = args.config if args.config is not None else env.get(CONFIG_ENV) or None
    if config_file is not None:
        merged.update(_read_file(config_file))
    for key, (_, var) in SETTINGS.items():
        if env.get(var):
            merged[key] = _Value(env[var], var)
    for key, (flag, _) in SETTINGS.items():
        value = getattr(args, key)
        if value is not None:
            merged[key] = _Value(value, flag)
    config = _validate(merged)
    check_data_dir(config.data_dir)
    return config


def _read_file(path: str) -> dict[str, _Value]:
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    out: dict[str, _Value] = {}
    for key, value in table.items():
        if key not in SETTINGS:
            raise ConfigError(f"config file {path}: unknown key {key!r} (known keys: {', '.join(SETTINGS)})")
        out[key] = _Value(value, f"{key} in {path}")
    return out


# --- checks ---------------------------------------------------------------------------------------------


def _validate(merged: dict[str, _Value]) -> NodeConfig:
    name = _require_str(merged, "name", "the node name")
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"node name {name!r} ({merged['name'].source}) must be 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    state = str(merged["initial_cluster_state"].value)
    if state not in ("new", "existing"):
        raise ConfigError(
            f"initial cluster state {state!r} ({merged['initial_cluster_state'].source}) is not new or "
            "existing"
        )
    join = tuple(u.strip() for u in str(merged["join"].value).split(",") if u.strip())
    for item in join:
        check_url(item.split("=", 1)[0], merged["join"].source)
    if join and state != "existing":
        raise ConfigError(f"--join ({merged['join'].source}) needs --initial-cluster-state existing")
    cluster_spec = merged.get("initial_cluster")
    if join and (cluster_spec is None or cluster_spec.value in ("", {})):
        # The members come from the cluster at start (cluster/node/join.py): for now only this node.
        peer_url = _require_str(merged, "peer_url", "the peer URL (needed with --join)")
        check_url(peer_url, merged["peer_url"].source)
        cluster_spec = _Value({name: peer_url}, merged["peer_url"].source)
    if cluster_spec is None or cluster_spec.value in ("", {}):
        raise ConfigError(
            "missing the initial cluster: pass --initial-cluster n1=URL,n2=URL,... "
            "or set ZRAFT_INITIAL_CLUSTER"
        )
    initial = parse_initial_cluster(cluster_spec.value, cluster_spec.source)
    if name not in initial:
        raise ConfigError(
            f"node name {name!r} is not in the initial cluster ({cluster_spec.source}: members "
            f"{', '.join(sorted(initial))})"
        )
    if "peer_url" in merged:
        peer_url = _require_str(merged, "peer_url", "the peer URL")
        check_url(peer_url, merged["peer_url"].source)
        if peer_url != initial[name]:
            raise ConfigError(
                f"peer URL {peer_url} ({merged['peer_url'].source}) does not match {initial[name]}, "
                f"the URL given for {name} in the initial cluster ({cluster_spec.source})"
            )
    else:
        peer_url = initial[name]
    client_url = _require_str(merged, "client_url", "the client URL")
    check_url(client_url, merged["client_url"].source)
    if _host_port(client_url) in {_host_port(u) for u in initial.values()}:
        raise ConfigError(f"client URL {client_url} ({merged['client_url'].source}) is also a peer URL")
    data_dir = _require_str(merged, "data_dir", "the data directory")
    cluster_id = _require_str(merged, "cluster_id", "the cluster id")
    election = _positive_int(merged, "election_timeout_ms", minimum=1)
    heartbeat = _positive_int(merged, "heartbeat_ms", minimum=1)
    snapshot_entries = _positive_int(merged, "snapshot_entries", minimum=0)
    snapshot_bytes = _positive_int(merged, "snapshot_bytes", minimum=0)
    wal_segment_bytes = _positive_int(merged, "wal_segment_bytes", minimum=4096)
    max_uncommitted_entries = _positive_int(merged, "max_uncommitted_entries", minimum=1)
    max_uncommitted_bytes = _positive_int(merged, "max_uncommitted_bytes", minimum=1)
    intake_bytes = _positive_int(merged, "intake_bytes", minimum=1)
    history_events = _positive_int(merged, "history_events", minimum=1)
    history_bytes = _positive_int(merged, "history_bytes", minimum=1)
    max_watches = _positive_int(merged, "max_watches", minimum=1)
    watch_progress_ms = _positive_int(merged, "watch_progress_ms", minimum=1)
    lease_min_ttl = _positive_int(merged, "lease_min_ttl_ms", minimum=0)
    lease_checkpoint = _positive_int(merged, "lease_checkpoint_ms", minimum=1)
    session_ttl = _positive_int(merged, "session_ttl_ms", minimum=1)
    if session_ttl > 24 * 3600 * 1000:
        raise ConfigError(f"session ttl {session_ttl} ms ({merged['session_ttl_ms'].source}) is above a day")
    if 0 < lease_min_ttl < 2 * election:
        raise ConfigError(
            f"lease min ttl {lease_min_ttl} ms ({merged['lease_min_ttl_ms'].source}) must be 0 (three "
            f"election timeouts) or at least two election timeouts ({2 * election} ms): a shorter lease "
            "could expire during an ordinary election"
        )
    if 2 * heartbeat >= election:
        raise ConfigError(
            f"heartbeat interval {heartbeat} ms ({merged['heartbeat_ms'].source}) must be below half the "
            f"election timeout {election} ms ({merged['election_timeout_ms'].source})"
        )
    level = str(merged["log_level"].value).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"log level {merged['log_level'].value!r} ({merged['log_level'].source}) is not one of "
            f"{', '.join(LOG_LEVELS)}"
        )
    http_url = _http_url(merged, {_host_port(client_url), *(_host_port(u) for u in initial.values())})
    curve = _curve_paths(merged)
    return NodeConfig(
        name=name,
        data_dir=os.path.abspath(data_dir),
        peer_url=peer_url,
        client_url=client_url,
        initial_cluster=initial,
        cluster_id=cluster_id,
        election_timeout_ms=election,
        heartbeat_ms=heartbeat,
        snapshot_entries=snapshot_entries,
        snapshot_bytes=snapshot_bytes,
        wal_segment_bytes=wal_segment_bytes,
        max_uncommitted_entries=max_uncommitted_entries,
        max_uncommitted_bytes=max_uncommitted_bytes,
        intake_bytes=intake_bytes,
        history_events=history_events,
        history_bytes=history_bytes,
        max_watches=max_watches,
        watch_progress_ms=watch_progress_ms,
        lease_min_ttl_ms=lease_min_ttl,
        lease_checkpoint_ms=lease_checkpoint,
        session_ttl_ms=session_ttl,
        log_level=level,
        log_json=_bool(merged["log_json"]),
        http_url=http_url,
        curve_secret_key=curve[0],
        curve_peers=curve[1],
        curve_clients=curve[2],
        initial_cluster_state=state,
        join=join,
    )


def _curve_paths(merged: dict[str, _Value]) -> tuple[str, str, str]:
    """The three CURVE settings: all given, or none (the key files themselves are read at start)."""
    keys = ("curve_secret_key", "curve_peers", "curve_clients")
    given = [k for k in keys if merged.get(k) is not None and merged[k].value not in ("", None)]
    if not given:
        return "", "", ""
    for key in keys:
        if key not in given:
            flag, var = SETTINGS[key]
            present = ", ".join(merged[k].source for k in given)
            raise ConfigError(f"{present} needs {flag} (or {var}) too: CURVE takes all three settings")
    paths = tuple(os.path.abspath(_require_str(merged, k, k.replace("_", " "))) for k in keys)
    return paths[0], paths[1], paths[2]


def _require_str(merged: dict[str, _Value], key: str, what: str) -> str:
    flag, var = SETTINGS[key]
    item = merged.get(key)
    if item is None or item.value == "":
        raise ConfigError(f"missing {what}: pass {flag} or set {var} (or {key} in the config file)")
    if not isinstance(item.value, str):
        raise ConfigError(f"{what} ({item.source}) must be a string, got {type(item.value).__name__}")
    return item.value.strip()


def _positive_int(merged: dict[str, _Value], key: str, minimum: int) -> int:
    item = merged[key]
    value = item.value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if type(value) is not int or value < minimum:
        raise ConfigError(
            f"{key.replace('_', ' ')} ({item.source}) must be an integer >= {minimum}, got {item.value!r}"
        )
    return value


def _bool(item: _Value) -> bool:
    value = item.value
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{item.source} must be true or false, got {value!r}")


def check_url(url: str, source: str) -> None:
    """tcp://HOST:PORT with a port in 1..65535 (HOST an IP, an interface or host name, or [IPv6])."""
    match = _URL_PATTERN.fullmatch(url)
    if match is None:
        raise ConfigError(f"bad URL {url!r} ({source}): expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:7101")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ConfigError(f"bad URL {url!r} ({source}): port {port} is not in 1..65535")


def _http_url(merged: dict[str, _Value], taken: set[tuple[str, int]]) -> str:
    """The HTTP status server's URL without a trailing slash, or "" for none."""
    item = merged["http_url"]
    if item.value in ("", None):
        return ""
    if not isinstance(item.value, str):
        raise ConfigError(f"HTTP URL ({item.source}) must be a string, got {type(item.value).__name__}")
    url = item.value.strip().rstrip("/")
    match = _HTTP_URL_PATTERN.fullmatch(url)
    if match is None:
        raise ConfigError(
            f"bad URL {url!r} ({item.source}): expected http://HOST:PORT, e.g. http://127.0.0.1:8001"
        )
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ConfigError(f"bad URL {url!r} ({item.source}): port {port} is not in 1..65535")
    if (match["host"], port) in taken:
        raise ConfigError(f"HTTP URL {url} ({item.source}) is also a client or peer URL")
    return url


def http_host_port(url: str) -> tuple[str, int]:
    """HOST (without IPv6 brackets) and PORT of a checked http:// URL."""
    match = _HTTP_URL_PATTERN.fullmatch(url)
    assert match is not None
    return match["host"].strip("[]"), int(match["port"])


def _host_port(url: str) -> tuple[str, int]:
    match = _URL_PATTERN.fullmatch(url)
    assert match is not None
    return match["host"], int(match["port"])


def parse_initial_cluster(spec: object, source: str) -> dict[str, str]:
    """ "n1=URL,n2=URL" (or a TOML table name -> URL) into a dict, checking names, URLs and duplicates."""
    pairs: list[tuple[str, str]] = []
    if isinstance(spec, dict):
        for member, url in spec.items():
            if not isinstance(url, str):
                raise ConfigError(f"initial cluster ({source}): URL of {member!r} must be a string")
            pairs.append((str(member), url.strip()))
    elif isinstance(spec, str):
        for item in spec.split(","):
            item = item.strip()
            if not item:
                raise ConfigError(
                    f"initial cluster ({source}) has an empty entry: expected n1=URL,n2=URL,..."
                )
            member, sep, url = item.partition("=")
            if not sep:
                raise ConfigError(f"initial cluster ({source}): entry {item!r} is not NAME=URL")
            pairs.append((member.strip(), url.strip()))
    else:
        raise ConfigError(f"initial cluster ({source}) must be a string n1=URL,... or a table")
    out: dict[str, str] = {}
    addresses: dict[tuple[str, int], str] = {}
    for member, url in pairs:
        if not NAME_PATTERN.fullmatch(member):
            raise ConfigError(f"initial cluster ({source}): bad node name {member!r}")
        if member in out:
            raise ConfigError(f"initial cluster ({source}): duplicate node name {member!r}")
        check_url(url, f"initial cluster entry for {member}")
        address = _host_port(url)
        if address in addresses:
            raise ConfigError(
                f"initial cluster ({source}): {member} and {addresses[address]} have the same URL {url}"
            )
        addresses[address] = member
        out[member] = url
    return out


def check_data_dir(path: str) -> None:
    """Create the data directory when missing and make sure this process can create files in it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"data directory {path} exists but is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ConfigError(f"data directory {path} is not writable: {exc.strerror or exc}") from None
