"""Integration-test helpers: real node processes started through bin/cluster-node, and a raw ZeroMQ client.

    with start_cluster(3) as cluster:
        leader = wait_for_leader(cluster)
        response = send_request(leader.client_url, write_request("k", "v"))

Everything waits with a deadline (no bare sleeps beyond short poll intervals). Every process runs in its
own process group, and the context manager kills whatever is still running on the way out; when the body
raised, it prints each node's log so the failure shows what the nodes saw.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import zmq

from actors.messages import ClientRequest, ClientResponse, RequestKind, Status
from cluster.kv.machine import decode_result, encode_command, encode_query
from transport.codec import decode, encode

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = REPO_ROOT / "bin" / "cluster-node"
TEST_ELECTION_TIMEOUT_MS = 300
TEST_HEARTBEAT_MS = 50
POLL_INTERVAL = 0.02

T = TypeVar("T")
_req_ids = itertools.count(1)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (all held at once while choosing)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = POLL_INTERVAL,
    error: Callable[[str], BaseException] = AssertionError,
) -> T:
    """Poll `predicate` until it returns something truthy. After `timeout` seconds, raise `error` made from
    a message naming `what` (AssertionError unless the caller has its own failure type or more to say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --- processes --------------------------------------------------------------------------------------


@dataclass
class NodeHandle:
    name: str
    peer_url: str
    client_url: str
    data_dir: Path
    log_path: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(NODE_BIN), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(REPO_ROOT),
                start_new_session=True,  # its own process group, so cleanup can kill it all
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the node's whole process group (if still running) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Cluster:
    nodes: list[NodeHandle]
    base_dir: Path

    def node(self, name: str) -> NodeHandle:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def alive(self) -> list[NodeHandle]:
        return [n for n in self.nodes if n.alive()]


def node_args(
    name: str,
    data_dir: Path,
    peer_url: str,
    client_url: str,
    initial_cluster: str,
    election_timeout_ms: int = TEST_ELECTION_TIMEOUT_MS,
    heartbeat_ms: int = TEST_HEARTBEAT_MS,
    extra: Sequence[str] = (),
) -> list[str]:
    return [
        "--name", name,
        "--data-dir", str(data_dir),
        "--peer-url", peer_url,
        "--client-url", client_url,
        "--initial-cluster", initial_cluster,
        "--election-timeout-ms", str(election_timeout_ms),
        "--heartbeat-ms", str(heartbeat_ms),
        *extra,
    ]  # fmt: skip


@contextmanager
def start_cluster(
    n: int = 3,
    *,
    base_dir: Path | None = None,
    election_timeout_ms: int = TEST_ELECTION_TIMEOUT_MS,
    heartbeat_ms: int = TEST_HEARTBEAT_MS,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    node_args_of: Callable[[str], Sequence[str]] | None = None,
    start: Sequence[str] | None = None,
) -> Iterator[Cluster]:
    """Start `n` nodes n1..nN on free loopback ports, each with its own data dir under `base_dir`;
    `node_args_of(name)` adds arguments for one node (e.g. its own --http-url or key file); `start` names
    the nodes to start (default: all), the others are only laid out (their handles can start them later).
    """
    owned = base_dir is None
    base = Path(tempfile.mkdtemp(prefix="zraft-it-")) if base_dir is None else base_dir
    ports = free_ports(2 * n)
    names = [f"n{i + 1}" for i in range(n)]
    peer_urls = {name: f"tcp://127.0.0.1:{ports[i]}" for i, name in enumerate(names)}
    initial = ",".join(f"{name}={url}" for name, url in peer_urls.items())
    nodes = []
    for i, name in enumerate(names):
        client_url = f"tcp://127.0.0.1:{ports[n + i]}"
        data_dir = base / name
        args = node_args(
            name,
            data_dir,
            peer_urls[name],
            client_url,
            initial,
            election_timeout_ms,
            heartbeat_ms,
            [*extra_args, *(node_args_of(name) if node_args_of else ())],
        )
        nodes.append(
            NodeHandle(
                name, peer_urls[name], client_url, data_dir, base / f"{name}.log", args, dict(env or {})
            )
        )
    cluster = Cluster(nodes, base)
    failed = False
    try:
        for node in nodes:
            if start is None or node.name in start:
                node.start()
        yield cluster
    except BaseException:
        failed = True
        raise
    finally:
        for node in nodes:
            node.kill()
        if failed:
            for node in nodes:
                print(f"----- log of {node.name} (exit {node.proc.returncode if node.proc else None}) -----")
                print(node.log_text()[-20_000:])
        if owned:
            shutil.rmtree(base, ignore_errors=True)


# --- a raw ZeroMQ client ----------------------------------------------------------------------------


def client_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def request(kind: RequestKind, payload: bytes = b"", src: str | None = None, dst: str = "") -> ClientRequest:
    return ClientRequest(
        src=src or client_id(), dst=dst, req_id=next(_req_ids), kind=int(kind), payload=payload
    )


def write_request(key: str, value: Any) -> ClientRequest:
    return request(RequestKind.WRITE, encode_command(0, 0, 0, ["put", key, value]))


def read_request(key: str, kind: RequestKind = RequestKind.READ) -> ClientRequest:
    return request(kind, encode_query(["get", key]))


def status_request() -> ClientRequest:
    return request(RequestKind.STATUS)


def _socket(url: str, identity: bytes | None = None) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(url)
    return sock


def receive_response(sock: zmq.Socket[bytes], req_id: int | None, timeout: float) -> ClientResponse:
    """The next ClientResponse on `sock` (with `req_id`, when given) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not sock.poll(int(remaining * 1000) + 1):
            raise TimeoutError(f"no response within {timeout}s")
        msg = decode(sock.recv())
        if isinstance(msg, ClientResponse) and (req_id is None or msg.req_id == req_id):
            return msg


def send_request(url: str, req: ClientRequest, timeout: float = 2.0) -> ClientResponse:
    """Send one request on a fresh DEALER and wait for its response; TimeoutError when none comes."""
    sock = _socket(url)
    try:
        sock.send(encode(req))
        return receive_response(sock, req.req_id, timeout)
    finally:
        sock.close(linger=0)


def try_request(url: str, req: ClientRequest, timeout: float = 2.0) -> ClientResponse | None:
    """send_request, or None when no answer came in time (a node still starting, on a loaded machine)."""
    try:
        return send_request(url, req, timeout)
    except TimeoutError:
        return None


def send_raw(url: str, frames: Sequence[Sequence[bytes]], identity: bytes | None = None) -> zmq.Socket[bytes]:
    """Send each multipart message in `frames` on one fresh DEALER; returns the socket (caller closes).

    The socket lingers for a few seconds, so `close()` right away still delivers what was sent.
    """
    sock = _socket(url, identity)
    sock.setsockopt(zmq.LINGER, 5000)
    for parts in frames:
        sock.send_multipart(list(parts))
    return sock


def get_status(url: str, timeout: float = 1.0) -> dict[str, Any]:
    response = send_request(url, status_request(), timeout)
    assert response.status == Status.OK, response
    status: dict[str, Any] = msgpack.unpackb(response.result, raw=False)
    return status


def try_status(url: str, timeout: float = 0.5) -> dict[str, Any] | None:
    try:
        return get_status(url, timeout)
    except TimeoutError:
        return None


def result_of(response: ClientResponse) -> dict[str, Any]:
    return decode_result(response.result)


def find_leader(cluster: Cluster, exclude: Sequence[str] = ()) -> NodeHandle | None:
    """The node that reports itself leader in the highest term, among live nodes not in `exclude`."""
    best: tuple[int, NodeHandle] | None = None
    for node in cluster.alive():
        if node.name in exclude:
            continue
        status = try_status(node.client_url)
        if status is not None and status["role"] == "leader" and (best is None or status["term"] > best[0]):
            best = (status["term"], node)
    return best[1] if best else None


def followers(cluster: Cluster, leader: NodeHandle) -> list[NodeHandle]:
    return [n for n in cluster.nodes if n.name != leader.name]


def wait_for_leader(cluster: Cluster, timeout: float = 10.0, exclude: Sequence[str] = ()) -> NodeHandle:
    leader = wait_until(lambda: find_leader(cluster, exclude), timeout, "a leader")
    assert leader is not None
    return leader


def write_through_leader(cluster: Cluster, key: str, value: Any, timeout: float = 10.0) -> ClientResponse:
    """Write via whichever node leads, retrying NOT_LEADER/UNAVAILABLE/timeouts until OK or `timeout`."""

    def attempt() -> ClientResponse | None:
        leader = find_leader(cluster)
        if leader is None:
            return None
        try:
            response = send_request(leader.client_url, write_request(key, value), timeout=1.0)
        except TimeoutError:
            return None
        return response if response.status == Status.OK else None

    response = wait_until(attempt, timeout, f"a successful write of {key!r}")
    assert response is not None
    return response
