"""StatusApp: the WSGI application of a node's HTTP status server. Read-only: nothing here writes.

Routes (GET or HEAD; anything else 405, unknown paths 404, every error a JSON body with the reason):

    /                                         the live status page (page.html, polling the API below)
    /health                                   200 with a leader and a quorum reachable, else 503 and why
    /ready                                    200 when this node can serve reads of what is committed
    /metrics                                  Prometheus text (cluster/node/http/metrics.py)
    /api/v1/node/status                       this node's own published snapshot
    /api/v1/cluster/address                   every member's name, client, peer and HTTP URL
    /api/v1/cluster/status                    leader, term, every member as it sees itself, quorum health
    /api/v1/cluster/nodes                     the registry: servers with their fields and processes
    /api/v1/cluster/node/{node}/{process}     one process's record

On a node with CURVE keys (`values_served=False`) the two registry routes answer 403: the HTTP port
authenticates nobody, and the registry's values (where every service lives) are what CURVE and the users'
read rights protect on the client port. Everything else (status, health, metrics, addresses, the page)
holds no key's value and no secret (the status shows the node's public key only) and is served as usual.

API answers have the original's JsonResponse shape: {"status": "OK", "message": "", "body": ...}.
What the node's loop owns is read only through the LoopBridge (cluster/node/bridge.py): the published
snapshot, and read-only loop calls (serializable range pages of the registry, one ReadIndex round for
/health on a leader), each bounded in time and the registry in pages. The registry views (and the
registry sizes in /metrics) share one read per REGISTRY_TTL: they may be a second old.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any, Final
from urllib.parse import unquote

from actors.messages import RequestKind, Status
from cluster.kv.machine import decode_result, encode_query
from cluster.node.bridge import LoopBridge, LoopBusy, LoopTimeout
from cluster.node.http import metrics, views
from cluster.node.http.peers import NODE_STATUS_PATH, PeerStatus

PAGE_KEYS: Final = 1000  # registry keys per loop call
MAX_PAGES: Final = 10  # per prefix and request: at most 10,000 servers and 10,000 processes
CALL_TIMEOUT: Final = 2.0
REGISTRY_TTL: Final = 1.0  # seconds a registry read serves every request (see StatusApp._registry)
RENDER_TTL: Final = 0.1  # seconds a rendered /metrics or node status serves requests (StatusApp._cached)
HEALTH_KEY: Final = "__zraft/health"
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Environ = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RegistryRead:
    at: float  # monotonic
    servers: list[tuple[str, Any]]
    processes: list[tuple[str, Any]]
    truncated: bool


REGISTRY_REFUSED: Final = (
    "this node uses CURVE: the registry is not served over unauthenticated HTTP "
    "(read it with a client key: cluster-ctl service servers)"
)


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StatusApp:
    def __init__(
        self, name: str, bridge: LoopBridge, peers: PeerStatus | None = None, values_served: bool = True
    ) -> None:
        self.name = name
        self.values_served = values_served
        self.bridge = bridge
        self.peers = peers or PeerStatus()
        self._registry_lock = threading.Lock()
        self._registry_read: RegistryRead | None = None
        self._nodes_body: tuple[RegistryRead, bytes] | None = None
        self._rendered: dict[str, tuple[tuple[object, ...], float, bytes]] = {}
        self._page = resources.files("cluster.node.http").joinpath("page.html").read_bytes()
        self._routes: dict[str, Callable[[Environ], tuple[HTTPStatus, str, bytes]]] = {
            "/": self._index,
            "/health": self._health,
            "/ready": self._ready,
            "/metrics": self._metrics,
            NODE_STATUS_PATH: self._node_status,
            "/api/v1/cluster/address": self._address,
            "/api/v1/cluster/status": self._cluster_status,
            "/api/v1/cluster/nodes": self._nodes,
        }

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        try:
            if method not in ("GET", "HEAD"):
                raise HttpError(
                    HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed: this API is read-only"
                )
            handler = self._routes.get(path)
            if not self.values_served and (
                path == "/api/v1/cluster/nodes" or path.startswith("/api/v1/cluster/node/")
            ):
                raise HttpError(HTTPStatus.FORBIDDEN, REGISTRY_REFUSED)
            if handler is not None:
                status, content_type, body = handler(environ)
            elif path.startswith("/api/v1/cluster/node/"):
                status, content_type, body = self._process(path)
            else:
                raise HttpError(HTTPStatus.NOT_FOUND, f"no such path: {path[:200]}")
        except HttpError as exc:
            status, content_type, body = (
                exc.status,
                "application/json",
                _envelope(exc.status, exc.message, None),
            )
        except (LoopBusy, LoopTimeout) as exc:
            status = HTTPStatus.SERVICE_UNAVAILABLE
            content_type, body = "application/json", _envelope(status, str(exc), None)
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        if status is HTTPStatus.METHOD_NOT_ALLOWED:
            headers.append(("Allow", "GET, HEAD"))
        start_response(f"{status.value} {status.phrase}", headers)
        return [b""] if method == "HEAD" else [body]

    # --- snapshot-only routes ------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        snapshot = self.bridge.latest()
        if snapshot is None:
            raise HttpError(
                HTTPStatus.SERVICE_UNAVAILABLE, "starting: the node has not published its status yet"
            )
        return snapshot

    def _stale_after(self, snapshot: dict[str, Any] | None) -> float:
        timeout = float(snapshot["election_timeout"]) if snapshot else 1.0
        return max(3.0, 3 * timeout)

    def _index(self, environ: Environ) -> tuple[HTTPStatus, str, bytes]:
        return HTTPStatus.OK, "text/html; charset=utf-8", self._page

    def _node_status(self, environ: Environ) -> tuple[HTTPStatus, str, bytes]:
        snapshot = self._snapshot()

        def render() -> bytes:
            shown = {**snapshot, "instruments": {**snapshot["instruments"], "histograms": {}}}  # see /metrics
            return _envelope(HTTPStatus.OK, "", shown)

        return HTTPStatus.OK, "application/json", self._cached("node_status", (snapshot,), render)

    def _address(self, environ: Environ) -> tuple[HTTPStatus, str, bytes]:
        return _ok(views.address_view(self._snapshot()))

    def _cluster_status(self, environ: Environ) -> tuple[HTTPStatus, str, bytes]:
        snapshot = self._snapshot()
        addresses = views.address_view(snapshot)
        others = {a["name"]: a["http_url"] for a in addresses if a["name"] != self.name}
        fetched = self.peers.fetch_all(others)
        snapshots: dict[str, dict[str, Any] | None] = {n: r[0] for n, r in fetched.items()}
        snapshots[self.name] = snapshot
        errors = {n: r[1] for n, r in fetched.items() if r[0] is None}
        body = views.cluster_status(
            self.name, snapshots, errors, snapshot["node"].get("members", [self.name])
        )
        body["updated"] = time.time()
        return _ok(body)

    def _health(self, environ: Environ) -> tuple[HTTPStatus, str, bytes]:
        snapshot = self.bridge.latest()
        confirmed: str | None = None
        if snapshot is not None and snapshot["node"]["role"] == "leader":
            confirmed = self._confirm_leadership(snapshot)
        ok, reason = views.health(snapshot, confirmed, self._stale_after(snapshot), time.monotonic())
        return _probe(ok, reason)

    def _confirm_leadership(self, snapshot: dict[str, Any]) -> str:
        """ "" when a ReadIndex round through a quorum succeeded now, else why not."""
        timeout = min(CALL_TIMEOUT, 2 * float(snapshot["election_timeout"]))
        try:
            answer = self.bridge.call(RequestKind.READ, encode_query(["get", HEALTH_KEY]), timeout)
        except (LoopBusy, LoopTimeout) as exc:
            return str(exc)
        if answer.status == Status.OK:
            return ""
        return f"the read was answered {Status(answer.status).name}"

    def _ready(self, environ: Environ) -> tuple[HTTPStatus, str, bytes]:
        snapshot = self.bridge.latest()
        ok, reason = views.readiness(snapshot, self._stale_after(snapshot), time.monotonic())
        return _probe(ok, reason)

    def _metrics(self, environ: Environ) -> tuple[HTTPStatus, str, bytes]:
        snapshot = self._snapshot()
        read: RegistryRead | None
        try:
            read = self._registry()
        except (LoopBusy, LoopTimeout, HttpError):
            read = None  # the node's own metrics still matter most

        def render() -> bytes:
            registry = None
            if read is not None:
                registry = {
                    "server": views.registry_counts(v for _, v in read.servers),
                    "process": views.registry_counts(v for _, v in read.processes),
                }
            age = views.snapshot_age(snapshot, time.monotonic())
            return metrics.render(snapshot, registry, read is not None and read.truncated, age)

        return HTTPStatus.OK, metrics.CONTENT_TYPE, self._cached("metrics", (snapshot, read), render)

    def _cached(self, name: str, inputs: tuple[object, ...], render: Callable[[], bytes]) -> bytes:
        """`render()`, or the bytes it gave for the very same inputs less than RENDER_TTL ago: a client
        that scrapes in a tight loop costs the node's process (and its GIL) one render per interval."""
        now = time.monotonic()
        hit = self._rendered.get(name)
        fresh = hit is not None and now - hit[1] < RENDER_TTL
        if hit is not None and fresh and all(a is b for a, b in zip(hit[0], inputs, strict=True)):
            return hit[2]
        body = render()
        self._rendered[name] = (inputs, now, body)
        return body

    # --- the registry (loop calls) -------------------------------------------------------------------

    def _range(self, prefix: str, pages: int = MAX_PAGES) -> tuple[list[tuple[str, Any]], bool]:
        """(key, value) pairs under `prefix` from this node's applied state, a page per loop call, at most
        `pages` pages; True as well when there were more."""
        out: list[tuple[str, Any]] = []
        after = ""
        for _ in range(pages):
            query = encode_query(["range", prefix, PAGE_KEYS, after])
            answer = self.bridge.call(RequestKind.SERIAL_READ, query, CALL_TIMEOUT)
            if answer.status != Status.OK:
                raise HttpError(
                    HTTPStatus.SERVICE_UNAVAILABLE, f"registry read answered {Status(answer.status).name}"
                )
            result = decode_result(answer.result)
            if not result.get("ok"):
                raise HttpError(
                    HTTPStatus.INTERNAL_SERVER_ERROR, f"registry read failed: {result.get('error')}"
                )
            kvs = result.get("kvs", [])
            out.extend((kv["key"], kv["value"]) for kv in kvs)
            if not kvs or not result.get("more"):
                return out, False
            after = kvs[-1]["key"]
        return out, True

    def _get(self, key: str) -> Any:
        """The value of `key` in this node's applied state (None when absent)."""
        answer = self.bridge.call(RequestKind.SERIAL_READ, encode_query(["get", key]), CALL_TIMEOUT)
        result = decode_result(answer.result) if answer.status == Status.OK else {}
        kv = result.get("kv") if result.get("ok") else None
        return kv.get("value") if isinstance(kv, dict) else None

    def _registry(self) -> RegistryRead:
        """The registry as this node applied it, read at most once per REGISTRY_TTL whoever asks: one
        thread reads while the others wait for its result (what a page polls every second, and Prometheus
        every few, need not cost the loop and the GIL once per request)."""
        with self._registry_lock:
            read = self._registry_read
            if read is None or time.monotonic() - read.at >= REGISTRY_TTL:
                servers, more_servers = self._range(views.SERVER_PREFIX)
                processes, more_processes = self._range(views.PROCESS_PREFIX)
                read = RegistryRead(time.monotonic(), servers, processes, more_servers or more_processes)
                self._registry_read = read
            return read

    def _nodes(self, environ: Environ) -> tuple[HTTPStatus, str, bytes]:
        read = self._registry()
        cached = self._nodes_body
        if cached is not None and cached[0] is read:
            return HTTPStatus.OK, "application/json", cached[1]
        body = views.servers_view(read.servers, read.processes, time.time())
        message = ""
        if read.truncated:
            message = f"truncated: at most {MAX_PAGES * PAGE_KEYS} servers and processes are listed"
        encoded = _envelope(HTTPStatus.OK, message, body)
        self._nodes_body = (read, encoded)
        return HTTPStatus.OK, "application/json", encoded

    def _process(self, path: str) -> tuple[HTTPStatus, str, bytes]:
        parts = path[len("/api/v1/cluster/node/") :].split("/")
        if len(parts) != 2 or not all(parts):
            raise HttpError(HTTPStatus.NOT_FOUND, "expected /api/v1/cluster/node/{node}/{process}")
        node, process = (unquote(p) for p in parts)
        record = self._get(views.PROCESS_PREFIX + process)
        server = self._get(views.SERVER_PREFIX + node)
        view = views.process_view(node, process, record, server, time.time())
        if view is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no process {process!r} registered on server {node!r}")
        return _ok(view)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    raise TypeError(f"cannot show a {type(obj).__name__} as JSON")


def _finite(obj: Any) -> Any:
    """JSON has no infinity: a float that is not finite becomes a string."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _envelope(status: HTTPStatus, message: str, body: Any) -> bytes:
    doc = {"status": status.name if status is not HTTPStatus.OK else "OK", "message": message, "body": body}
    try:
        text = json.dumps(doc, default=_jsonable, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(doc), default=_jsonable, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def _ok(body: Any) -> tuple[HTTPStatus, str, bytes]:
    return HTTPStatus.OK, "application/json", _envelope(HTTPStatus.OK, "", body)


def _probe(ok: bool, reason: str) -> tuple[HTTPStatus, str, bytes]:
    """/health and /ready, shaped as etcd's: {"health": "true"|"false", "reason": ...}."""
    status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
    body = json.dumps({"health": "true" if ok else "false", "reason": reason}).encode("utf-8")
    return status, "application/json", body
