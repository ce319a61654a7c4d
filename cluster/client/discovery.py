"""Discovery: which node names exist and at which client URL each one answers (no sockets, no clock).

The client starts from a list of URLs and does not know the node names behind them. It sends each URL a
STATUS request addressed to "" (a probe). An answer names the node that gave it ("id"), the members of the
cluster, and the client URLs the nodes advertise through the replicated KV ("client_urls"). The URL a node
answered on wins over the URL it advertises. A probe round goes to every URL known so far; rounds repeat,
with backoff, while some member's URL is still unknown, and a new round can be asked for at any time
(for example when a leader hint names a node this client has never heard of).
"""

from __future__ import annotations

from typing import Any

import msgpack

from actors.messages import ClientRequest, ClientResponse, NodeId, RequestKind, Status
from cluster.client.endpoints import check_endpoint

PROBE_ID_BASE = 1 << 62  # probe request ids live above every ClientActor handle
MIN_ROUND_INTERVAL = 0.2
MAX_ROUND_INTERVAL = 5.0
_FORGET_PROBE_AFTER = 30.0


def parse_status(data: bytes) -> dict[str, Any] | None:
    """A node's STATUS answer as a map with a str "id", or None when it is not one."""
    try:
        status = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        return None
    if not isinstance(status, dict) or not isinstance(status.get("id"), str) or not status["id"]:
        return None
    return status


class Discovery:
    def __init__(self, client_id: NodeId, endpoints: list[str], now: float) -> None:
        self._client_id = client_id
        self._endpoints = list(dict.fromkeys(endpoints))
        self._names: dict[NodeId, str] = {}  # node name -> client URL
        self._answered_on: set[NodeId] = set()  # names whose URL comes from an answer, not an advert
        self._members: set[NodeId] = set()
        self._probes: dict[int, tuple[str, float]] = {}  # req_id -> (URL, sent at)
        self._next_id = PROBE_ID_BASE
        self._due = now
        self._interval = MIN_ROUND_INTERVAL
        self._last_round = float("-inf")

    # --- what is known ----------------------------------------------------------------------------

    @property
    def names(self) -> dict[NodeId, str]:
        return dict(self._names)

    @property
    def members(self) -> set[NodeId]:
        return set(self._members)

    @property
    def answered(self) -> bool:
        return bool(self._answered_on)

    @property
    def complete(self) -> bool:
        """Some node answered and every member named so far has a known URL."""
        return self.answered and self._members <= self._names.keys()

    def urls(self) -> list[str]:
        """Every URL worth a socket: the given endpoints, then the URLs learned, without repeats."""
        return list(dict.fromkeys([*self._endpoints, *self._names.values()]))

    @staticmethod
    def is_probe(req_id: int) -> bool:
        return req_id >= PROBE_ID_BASE

    # --- timing -----------------------------------------------------------------------------------

    def next_due(self) -> float:
        return self._due

    def request_round(self, now: float) -> None:
        """Ask for a probe round soon (rate limited), e.g. after hearing of an unknown node."""
        self._interval = MIN_ROUND_INTERVAL
        self._due = min(self._due, max(now, self._last_round + MIN_ROUND_INTERVAL))

    def due_probes(self, now: float) -> list[tuple[str, ClientRequest]]:
        """The probes to send now, as (URL, request); empty unless a round is due."""
        if now < self._due:
            return []
        self._last_round = now
        self._probes = {rid: p for rid, p in self._probes.items() if now - p[1] < _FORGET_PROBE_AFTER}
        out = []
        for url in self.urls():
            req_id = self._next_id
            self._next_id += 1
            self._probes[req_id] = (url, now)
            out.append((url, ClientRequest(self._client_id, "", req_id, RequestKind.STATUS, b"")))
        self._schedule_next(now)
        return out

    def _schedule_next(self, now: float) -> None:
        if self.complete:
            self._due = float("inf")
        else:
            self._due = now + self._interval
            self._interval = min(self._interval * 2, MAX_ROUND_INTERVAL)

    # --- answers ----------------------------------------------------------------------------------

    def on_answer(self, msg: ClientResponse, now: float) -> bool:
        """Take a probe's answer into account; True when the name -> URL map changed."""
        probe = self._probes.pop(msg.req_id, None)
        if probe is None or msg.status != Status.OK:
            return False
        status = parse_status(msg.result)
        if status is None:
            return False
        before = dict(self._names)
        name = status["id"]
        self._names[name] = probe[0]
        self._answered_on.add(name)
        members = status.get("members")
        if isinstance(members, list | tuple):
            self._members = {m for m in members if isinstance(m, str) and m}
        adverts = status.get("client_urls")
        if isinstance(adverts, dict):
            for other, url in adverts.items():
                if isinstance(other, str) and other and other not in self._answered_on and _usable(url):
                    self._names[other] = url
        if self.complete:
            self._due = float("inf")
        return self._names != before


def _usable(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        check_endpoint(url)
    except ValueError:
        return False
    return True
