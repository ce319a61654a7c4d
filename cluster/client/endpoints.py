"""Where a local cluster listens by default, shared by cluster-local (which starts it) and cluster-ctl.

Node i (1-based) of a local cluster with base port B gets the client URL tcp://127.0.0.1:<B+i> and the
peer URL tcp://127.0.0.1:<B+100+i>. With the defaults that is tcp://127.0.0.1:7001..7003 for clients.
"""

from __future__ import annotations

import os

DEFAULT_NODES = 3
DEFAULT_BASE_PORT = 7000
PEER_PORT_OFFSET = 100
LOCAL_HOST = "127.0.0.1"
ENDPOINTS_ENV = "ZRAFT_ENDPOINTS"


def node_name(i: int) -> str:
    return f"n{i}"


def client_url(base_port: int, i: int) -> str:
    return f"tcp://{LOCAL_HOST}:{base_port + i}"


def peer_url(base_port: int, i: int) -> str:
    return f"tcp://{LOCAL_HOST}:{base_port + PEER_PORT_OFFSET + i}"


def local_endpoints(nodes: int = DEFAULT_NODES, base_port: int = DEFAULT_BASE_PORT) -> list[str]:
    """The client URLs of a local cluster started by cluster-local with these settings."""
    return [client_url(base_port, i) for i in range(1, nodes + 1)]


def parse_endpoints(text: str) -> list[str]:
    """Split a comma-separated endpoint list and check each looks like a ZeroMQ URL; raises ValueError."""
    urls = [part.strip() for part in text.split(",") if part.strip()]
    if not urls:
        raise ValueError("no endpoints given")
    for url in urls:
        check_endpoint(url)
    return urls


def check_endpoint(url: str) -> str:
    """Raise ValueError unless `url` looks like tcp://host:port, ipc://path or inproc://name."""
    scheme, sep, rest = url.partition("://")
    if not sep or not rest or scheme not in ("tcp", "ipc", "inproc"):
        raise ValueError(f"bad endpoint {url!r}: expected tcp://host:port")
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad endpoint {url!r}: expected tcp://host:port")
    return url


def default_endpoints() -> list[str]:
    """$ZRAFT_ENDPOINTS when set, else the endpoints of a default cluster-local cluster."""
    env = os.environ.get(ENDPOINTS_ENV, "").strip()
    return parse_endpoints(env) if env else local_endpoints()
