"""cluster-local: run a whole zraft cluster on this machine, in the foreground, until Ctrl-C.

Node i (n1, n2, ...) gets client URL tcp://127.0.0.1:<base+i>, peer URL tcp://127.0.0.1:<base+100+i>, an
HTTP status server (status page, JSON API, /health, /metrics) on http://127.0.0.1:<base+1000+i> and the
data directory DIR/n<i>. Starting again with the same DIR restarts the same cluster with its data.
The node logs stream to stdout prefixed by node name. Ctrl-C or SIGTERM stops every node (SIGTERM, a
bounded wait, then SIGKILL) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from cluster.cli.local_keys import LocalKeys, ensure_keys
from cluster.cli.local_nodes import NodeProcess, node_command, port_in_use, stop_all
from cluster.client.api import Client
from cluster.client.curve import SECRET_KEY_ENV, SERVER_KEY_ENV
from cluster.client.endpoints import (
    DEFAULT_BASE_PORT,
    DEFAULT_NODES,
    ENDPOINTS_ENV,
    LOCAL_HOST,
    PEER_PORT_OFFSET,
    client_url,
    local_endpoints,
    node_name,
    peer_url,
)
from cluster.errors import ZraftError

DEFAULT_DATA_DIR = Path("data") / "local"
LAYOUT_FILE = "cluster-local.json"
EXIT_OK = 0
EXIT_FAILED = 1
_NODE_ELECTION_TIMEOUT_MS = 1000  # cluster-node's default, used to size the waits when not given
HTTP_PORT_OFFSET = 1000  # node i's HTTP status server listens on base + 1000 + i (8001.. by default)


def http_url(base_port: int, i: int) -> str:
    return f"http://{LOCAL_HOST}:{base_port + HTTP_PORT_OFFSET + i}"


_print_lock = threading.Lock()


def emit(line: str) -> None:
    """Print one whole line; node log threads and the main thread share stdout."""
    with _print_lock:
        print(line, flush=True)


class StartError(Exception):
    """The cluster cannot be started as asked; the message says why and what to do."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cluster-local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Then, in another terminal:  cluster-ctl put hello world && cluster-ctl status",
    )
    parser.add_argument(
        "--nodes", type=int, default=DEFAULT_NODES, metavar="N", help="how many nodes (default 3)"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        metavar="P",
        help=f"client ports are P+1..P+N, peer ports P+{PEER_PORT_OFFSET}+1.. (default {DEFAULT_BASE_PORT})",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"where node data lives, one sub-directory per node (default ./{DEFAULT_DATA_DIR})",
    )
    parser.add_argument("--election-timeout-ms", type=int, metavar="N", help="passed to every node")
    parser.add_argument("--heartbeat-ms", type=int, metavar="N", help="passed to every node")
    parser.add_argument(
        "--log-level", metavar="LEVEL", help="passed to every node (e.g. DEBUG, INFO, WARNING)"
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="CURVE on every port: make keys under DIR/keys once (nodes, peer list, an admitted client key) "
        "and print how cluster-ctl uses them",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="give up when no leader is elected within S seconds (default 30)",
    )
    return parser


def args_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, if anything (a usage error)."""
    if not 1 <= args.nodes <= 99:
        return "--nodes must be between 1 and 99"
    if not 1024 <= args.base_port <= 65535 - HTTP_PORT_OFFSET - args.nodes:
        return f"--base-port must be between 1024 and {65535 - HTTP_PORT_OFFSET - args.nodes}"
    if args.start_timeout <= 0:
        return "--start-timeout must be positive"
    return None


def check_ports(nodes: int, base_port: int) -> None:
    for i in range(1, nodes + 1):
        ports = (
            ("client", base_port + i),
            ("peer", base_port + PEER_PORT_OFFSET + i),
            ("HTTP", base_port + HTTP_PORT_OFFSET + i),
        )
        for kind, port in ports:
            if port_in_use(LOCAL_HOST, port):
                raise StartError(
                    f"port {port} ({kind} port of {node_name(i)}) is busy: is another cluster running? "
                    "stop it, or pick another --base-port"
                )


def check_layout(data_dir: Path, nodes: int, base_port: int) -> None:
    """Remember how DIR's cluster was laid out; refuse to restart it with another layout."""
    layout = {"nodes": nodes, "base_port": base_port}
    path = data_dir / LAYOUT_FILE
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StartError(f"cannot read {path}: {exc}") from None
        if stored != layout:
            raise StartError(
                f"{data_dir} holds a cluster of {stored.get('nodes')} nodes on base port "
                f"{stored.get('base_port')}: pass --nodes {stored.get('nodes')} --base-port "
                f"{stored.get('base_port')}, or another --data-dir"
            )
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(layout) + "\n")


def node_argv(args: argparse.Namespace, i: int, data_dir: Path, keys: LocalKeys | None = None) -> list[str]:
    initial = ",".join(f"{node_name(j)}={peer_url(args.base_port, j)}" for j in range(1, args.nodes + 1))
    argv = [
        *node_command(),
        "--name", node_name(i),
        "--data-dir", str(data_dir / node_name(i)),
        "--peer-url", peer_url(args.base_port, i),
        "--client-url", client_url(args.base_port, i),
        "--initial-cluster", initial,
        "--http-url", http_url(args.base_port, i),
    ]  # fmt: skip
    for flag, value in (
        ("--election-timeout-ms", args.election_timeout_ms),
        ("--heartbeat-ms", args.heartbeat_ms),
        ("--log-level", args.log_level),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if keys is not None:
        argv += keys.node_flags(i)
    return argv


def wait_for_leader(
    endpoints: list[str],
    nodes: list[NodeProcess],
    stop: threading.Event,
    timeout: float,
    keys: LocalKeys | None = None,
) -> str | None:
    """The leader's name once one is elected; None if asked to stop. Raises StartError."""
    deadline = time.monotonic() + timeout
    client: Client | None = None
    try:
        while not stop.is_set():
            for node in nodes:
                code = node.exit_code()
                if code is not None:
                    raise StartError(
                        f"{node.name} exited with status {code} during start-up (see its log above)"
                    )
            if time.monotonic() >= deadline:
                raise StartError(f"no leader was elected within {timeout:g}s (see the node logs above)")
            try:
                client = client or Client(
                    endpoints,
                    timeout=1.0,
                    curve_secret_key=str(keys.client_secret) if keys else None,
                    server_public_key=keys.server_spec if keys else None,
                )
                leader = str(client.status(timeout=1.0)["leader"])
            except ZraftError:
                leader = ""
            if leader:
                return leader
            stop.wait(0.2)
        return None
    finally:
        if client is not None:
            client.close()


def try_lines(endpoints: list[str], keys: LocalKeys | None = None) -> list[str]:
    """What to type in another terminal to talk to this cluster, as this user can run cluster-ctl."""
    ctl = "cluster-ctl"
    if not shutil.which(ctl):
        script = Path(__file__).resolve().parents[2] / "bin" / "cluster-ctl"
        try:
            ctl = str(script.relative_to(Path.cwd()))
        except ValueError:
            ctl = str(script)
    lines = [] if endpoints == local_endpoints() else [f"export {ENDPOINTS_ENV}={','.join(endpoints)}"]
    if keys is not None:
        lines += [
            f"export {SECRET_KEY_ENV}={keys.client_secret}",
            f"export {SERVER_KEY_ENV}={keys.server_spec}",
        ]
    return [*lines, f"{ctl} put hello world && {ctl} get hello && {ctl} status"]


def _install_stop_handlers(stop: threading.Event) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    try:
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    except ValueError:  # not the main thread (embedded use): the caller stops us through `stop`
        pass


def run(args: argparse.Namespace, stop: threading.Event) -> int:
    data_dir = args.data_dir.resolve()
    endpoints = local_endpoints(args.nodes, args.base_port)
    check_ports(args.nodes, args.base_port)
    check_layout(data_dir, args.nodes, args.base_port)
    election_ms = args.election_timeout_ms or _NODE_ELECTION_TIMEOUT_MS
    keys = ensure_keys(data_dir, args.nodes, endpoints) if args.secure else None
    emit(f"cluster-local: starting {args.nodes} node(s), data in {data_dir}; their logs follow, by name")
    nodes: list[NodeProcess] = []
    try:
        for i in range(1, args.nodes + 1):
            node = NodeProcess(node_name(i), node_argv(args, i, data_dir, keys), emit)
            nodes.append(node)
            emit(
                f"cluster-local: started {node.name} (pid {node.pid}), client URL {endpoints[i - 1]}, "
                f"status page {http_url(args.base_port, i)}/"
            )
        leader = wait_for_leader(endpoints, nodes, stop, args.start_timeout, keys)
        if leader is None:
            return EXIT_OK
        emit("")
        emit(f"cluster-local: ready, leader {leader}")
        emit(f"  endpoints: {','.join(endpoints)}")
        emit(f"  data dir:  {data_dir}")
        pages = ", ".join(f"{http_url(args.base_port, i)}/" for i in range(1, args.nodes + 1))
        emit(f"  status page (any node): {pages}")
        if keys is not None:
            emit(
                f"  security:  CURVE on every port, keys in {keys.folder}"
                f" (the client's: {keys.client_secret})"
            )
        for n, line in enumerate(try_lines(endpoints, keys)):
            emit(f"  {'try:' if n == 0 else '':<11}{line}")
        emit("  Ctrl-C stops the cluster")
        emit("")
        return _watch(nodes, stop)
    finally:
        if nodes:
            emit("cluster-local: stopping the nodes")
            killed = stop_all(nodes, grace=5.0 + 4 * election_ms / 1000)
            if killed:
                emit(f"cluster-local: killed {', '.join(killed)} (did not stop in time)")
            emit("cluster-local: stopped")


def _watch(nodes: list[NodeProcess], stop: threading.Event) -> int:
    """Run until asked to stop; report nodes that exit on their own. EXIT_FAILED once none is left."""
    reported: set[str] = set()
    while not stop.wait(0.5):
        for node in nodes:
            code = node.exit_code()
            if code is not None and node.name not in reported:
                reported.add(node.name)
                emit(f"cluster-local: {node.name} exited with status {code}; the others keep running")
        if len(reported) == len(nodes):
            emit("cluster-local: every node has exited")
            return EXIT_FAILED
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = args_problem(args)
    if problem:
        parser.error(problem)
    stop = threading.Event()
    _install_stop_handlers(stop)
    try:
        return run(args, stop)
    except (StartError, FileNotFoundError) as exc:
        print(f"cluster-local: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
