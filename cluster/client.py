"""Client: the embeddable, thread-safe zraft client.

    with Client(["tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"]) as c:
        rev = c.put("config/a", {"x": 1})
        c.get("config/a")                       # {"x": 1}
        c.cas("config/a", {"x": 1}, {"x": 2})   # True

Every call blocks its caller until the answer arrives or the timeout passes, and many threads may call
at once: requests are pipelined through one background thread (cluster/client_io.py). Writes carry this
client's session id and a sequence number, so a retried write is applied at most once. Reads are
linearizable (ReadIndex) unless serializable=True asks for a possibly stale local read.

Errors (cluster/errors.py): InvalidRequest before sending anything, Rejected when the cluster refused,
OutcomeUnknown when a write got no answer in time, Unavailable when a read or status got none.
"""

from __future__ import annotations

import secrets
import time
import weakref
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

from actors.client import ClientOptions, Completion, Outcome, WriteEncoder
from actors.messages import NodeId, RequestKind
from cluster.client_io import ClientLoop, Submission
from cluster.commands import check_result, describe_bad_request, encode_query, write_encoder
from cluster.defaults import parse_endpoints
from cluster.discovery import parse_status
from cluster.errors import OutcomeUnknown, Rejected, Unavailable
from cluster.kv import DEFAULT_MAX_RESPONSES_PER_SESSION

_GRACE = 1.0  # extra wait on a future beyond the request's own deadline, in case the I/O thread stalls
_STATUS_TIMEOUT = 2.0  # default per-call bound for status(): a dead node must not stall it for long
_SESSION_LIMIT = 2**63 - 1
# The state machine caches this many answers per session; keep open writes within it, with a margin, so a
# stuck write's answer is never dropped while it may still be retried.
SEQ_WINDOW = DEFAULT_MAX_RESPONSES_PER_SESSION - 24


class Client:
    """A connection to a zraft cluster; see the module docstring. Use it as a context manager."""

    def __init__(
        self, endpoints: list[str] | str, timeout: float = 5.0, *, attempt_timeout: float = 0.5
    ) -> None:
        """Connect and learn the node names from the given client URLs (a list or "url,url,...").

        Raises ValueError for a malformed endpoint and Unavailable when no endpoint answers in time.
        `attempt_timeout` is how long one node may stay silent before a request is tried elsewhere.
        """
        urls = parse_endpoints(endpoints if isinstance(endpoints, str) else ",".join(endpoints))
        if timeout <= 0 or attempt_timeout <= 0:
            raise ValueError("timeout and attempt_timeout must be positive")
        self.timeout = timeout
        self.client_id: NodeId = f"cli-{secrets.token_hex(8)}"
        self._session = 1 + secrets.randbelow(_SESSION_LIMIT)  # 0 would mean "no session"
        options = ClientOptions(
            attempt_timeout=min(attempt_timeout, timeout),
            max_seq_window=SEQ_WINDOW,
        )
        self._loop = ClientLoop(self.client_id, self._session, urls, options)
        # A forgotten Client still stops its thread when collected, or at interpreter exit.
        self._finalizer = weakref.finalize(self, self._loop.close)
        self._loop.start()
        if not self._loop.wait_ready(timeout) or not self._loop.known_nodes():
            self.close()
            raise Unavailable("connect", timeout, f"no node answered at {', '.join(urls)}")

    # --- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background thread. Calls still waiting raise ClientClosed (a write among them may or
        may not have been applied)."""
        self._finalizer()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def nodes(self) -> dict[NodeId, str]:
        """The nodes discovered so far: name -> client URL."""
        return dict(self._loop.known_nodes())

    # --- writes -----------------------------------------------------------------------------------

    def put(self, key: str, value: Any, *, timeout: float | None = None) -> int:
        """Set key to value; returns the new revision."""
        return int(self._write("put", ["put", key, value], timeout)["rev"])

    def cas(self, key: str, expected: Any, new: Any, *, timeout: float | None = None) -> bool:
        """Set key to `new` only if its value is `expected` (None: only if absent); True if swapped."""
        return bool(self._write("cas", ["cas", key, expected, new], timeout)["swapped"])

    def delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Delete key; True if it existed."""
        return bool(self._write("delete", ["del", key], timeout)["deleted"])

    def delete_prefix(self, prefix: str, *, timeout: float | None = None) -> int:
        """Delete every key starting with prefix ("" = every key); returns how many were deleted."""
        return int(self._write("delete_prefix", ["del_prefix", prefix], timeout)["deleted"])

    # --- reads ------------------------------------------------------------------------------------

    def get(self, key: str, serializable: bool = False, *, timeout: float | None = None) -> Any:
        """The value of key, or None when absent. Linearizable unless serializable=True."""
        kv = self.get_kv(key, serializable, timeout=timeout)
        return None if kv is None else kv["value"]

    def get_kv(
        self, key: str, serializable: bool = False, *, timeout: float | None = None
    ) -> dict[str, Any] | None:
        """{"key", "value", "create_revision", "mod_revision", "version"} of key, or None when absent."""
        kv = self._read("get", ["get", key], serializable, timeout)["kv"]
        return None if kv is None else dict(kv)

    def range(
        self, prefix: str, limit: int = 0, serializable: bool = False, *, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Key-value dicts (as get_kv) of keys starting with prefix, sorted by key; limit 0 = all."""
        return list(self._read("range", ["range", prefix, limit], serializable, timeout)["kvs"])

    # --- status -----------------------------------------------------------------------------------

    def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Every node's own view: {"leader", "term", "members": [{"name", "client_url", "reachable",
        "role", "term", "commit", "applied", ...}, ...]}. A node that does not answer is listed with
        reachable False and role "unreachable". Raises Unavailable when no node answers."""
        limit = timeout if timeout is not None else min(self.timeout, _STATUS_TIMEOUT)
        known = self._loop.known_nodes()
        deadline = time.monotonic() + limit
        asked = {name: self._submit(RequestKind.STATUS, b"", deadline, name) for name in known}
        answers: dict[NodeId, dict[str, Any]] = {}
        for name, fut in asked.items():
            done = self._wait(fut, deadline)
            status = parse_status(done.result) if done.outcome is Outcome.OK else None
            if status is not None:
                answers[name] = status
        if not answers:
            raise Unavailable("status", limit, "no node answered")
        return _summarize(known, self._loop.members(), answers)

    # --- internals --------------------------------------------------------------------------------

    def _write(self, operation: str, op: list[Any], timeout: float | None) -> dict[str, Any]:
        encoder = write_encoder(operation, self._session, op)
        limit = self._limit(timeout)
        done = self._call(RequestKind.WRITE, encoder, limit)
        if done.outcome is Outcome.TIMEOUT:
            raise OutcomeUnknown(operation, limit)
        return self._result(operation, done)

    def _read(
        self, operation: str, op: list[Any], serializable: bool, timeout: float | None
    ) -> dict[str, Any]:
        query = encode_query(operation, op)
        limit = self._limit(timeout)
        kind = RequestKind.SERIAL_READ if serializable else RequestKind.READ
        done = self._call(kind, query, limit)
        if done.outcome is Outcome.TIMEOUT:
            raise Unavailable(operation, limit, "no leader reachable" if not serializable else "")
        return self._result(operation, done)

    @staticmethod
    def _result(operation: str, done: Completion) -> dict[str, Any]:
        if done.outcome is Outcome.REJECTED:
            raise Rejected(operation, describe_bad_request(done.result))
        return check_result(operation, done.result)

    def _limit(self, timeout: float | None) -> float:
        limit = self.timeout if timeout is None else timeout
        if limit <= 0:
            raise ValueError("timeout must be positive")
        return limit

    def _call(self, kind: RequestKind, body: bytes | WriteEncoder, limit: float) -> Completion:
        deadline = time.monotonic() + limit
        return self._wait(self._submit(kind, body, deadline), deadline)

    def _submit(
        self, kind: RequestKind, body: bytes | WriteEncoder, deadline: float, node: NodeId = ""
    ) -> Future[Completion]:
        fut: Future[Completion] = Future()
        self._loop.submit(Submission(kind, body, deadline, fut, node))
        return fut

    @staticmethod
    def _wait(fut: Future[Completion], deadline: float) -> Completion:
        try:
            return fut.result(timeout=max(0.0, deadline - time.monotonic()) + _GRACE)
        except FutureTimeout:  # the I/O thread missed the deadline; report it like the actor would
            return Completion(0, Outcome.TIMEOUT, b"")


def _summarize(
    known: dict[NodeId, str], members: frozenset[NodeId], answers: dict[NodeId, dict[str, Any]]
) -> dict[str, Any]:
    """Merge per-node status answers into one cluster view."""
    adverts: dict[NodeId, str] = {}
    names = set(known) | set(members)
    for answer in answers.values():
        names.update(m for m in answer.get("members") or () if isinstance(m, str))
        urls = answer.get("client_urls")
        if isinstance(urls, dict):
            adverts.update({k: v for k, v in urls.items() if isinstance(k, str) and isinstance(v, str)})
    rows: list[dict[str, Any]] = []
    for name in sorted(names):
        url = known.get(name) or adverts.get(name, "")
        status = answers.get(name)
        if status is None:
            rows.append({"name": name, "client_url": url, "reachable": False, "role": "unreachable"})
            continue
        extra = {k: v for k, v in status.items() if k not in ("id", "members", "client_urls")}
        rows.append({"name": name, "client_url": url, "reachable": True, **extra})
    term = max((int(s.get("term") or 0) for s in answers.values()), default=0)
    leaders = [r["name"] for r in rows if r.get("role") == "leader" and r.get("term") == term]
    leader = (
        leaders[0]
        if leaders
        else next(
            (str(s.get("leader")) for s in answers.values() if s.get("term") == term and s.get("leader")), ""
        )
    )
    return {"leader": leader, "term": term, "members": rows}
