"""Advertising client URLs through the cluster itself: the "__zraft/members/<name>" keys.

Clients learn every node's client URL from the replicated KV: each node makes sure the key
"__zraft/members/<its name>" holds {"client_url": ..., "peer_url": ...} (and "http_url" when the node
serves its HTTP status server, cluster/node/http/). This module owns those keys, the
check of a node's local copy of the state machine, and the retry schedule of the write that fixes it.
The Advertiser does no I/O: it returns the ClientRequest to send (to the leader, as client
"<name>/advertise", with session 0: an idempotent put) and the runtime sends it.
"""

from __future__ import annotations

import math
from typing import Any, Final

from actors.contracts import StateMachine
from actors.messages import ClientRequest, RequestKind
from cluster.kv.machine import MAX_RANGE_LIMIT, decode_result, encode_command, encode_query
from cluster.node.inbound import advertiser_id

MEMBER_PREFIX: Final = "__zraft/members/"
SETTLED_FACTOR: Final = 5  # once published, re-check this many retry intervals later


def member_key(name: str) -> str:
    return MEMBER_PREFIX + name


def member_record(client_url: str, peer_url: str, http_url: str = "") -> dict[str, Any]:
    record = {"client_url": client_url, "peer_url": peer_url}
    if http_url:
        record["http_url"] = http_url
    return record


def read_members(sm: StateMachine) -> dict[str, dict[str, Any]]:
    """name -> advertised record, from the local state machine (possibly stale on a follower)."""
    out: dict[str, dict[str, Any]] = {}
    after = ""
    while True:  # page by page, though a cluster's members fit in one
        result = decode_result(sm.query(encode_query(["range", MEMBER_PREFIX, MAX_RANGE_LIMIT, after])))
        kvs = result.get("kvs", []) if result["ok"] else []
        for kv in kvs:
            value = kv.get("value")
            if isinstance(value, dict):
                out[kv["key"][len(MEMBER_PREFIX) :]] = value
        if not kvs or not result.get("more"):
            return out
        after = kvs[-1]["key"]


def client_urls(sm: StateMachine, members: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """name -> advertised client URL, from `members` (what read_members gave) or the state machine."""
    records = read_members(sm) if members is None else members
    return {
        name: record["client_url"]
        for name, record in records.items()
        if isinstance(record.get("client_url"), str)
    }


class Advertiser:
    def __init__(
        self, name: str, client_url: str, peer_url: str, retry_interval: float, http_url: str = ""
    ) -> None:
        self.name = name
        self.key = member_key(name)
        self.record = member_record(client_url, peer_url, http_url)
        self.retry_interval = retry_interval
        self.sent = 0
        self._payload = encode_command(0, 0, 0, ["put", self.key, self.record])
        self._query = encode_query(["get", self.key])
        self._leader: str | None = None
        self._due = 0.0
        self._published = False

    @property
    def published(self) -> bool:
        """Whether the last check found our record in the local state machine."""
        return self._published

    def next_due(self) -> float:
        return self._due if self._leader is not None else math.inf

    def poll(self, now: float, leader: str | None, sm: StateMachine) -> ClientRequest | None:
        """The write to send to `leader` now, if our record is missing or stale locally and it is time."""
        if leader != self._leader:
            self._leader = leader
            self._due = now  # a new leader: check (and maybe write) at once
        if leader is None or now < self._due:
            return None
        self._published = self._stored(sm) == self.record
        if self._published:
            self._due = now + SETTLED_FACTOR * self.retry_interval
            return None
        self._due = now + self.retry_interval
        self.sent += 1
        return ClientRequest(
            src=advertiser_id(self.name),
            dst=leader,
            req_id=self.sent,
            kind=RequestKind.WRITE,
            payload=self._payload,
        )

    def _stored(self, sm: StateMachine) -> Any:
        result = decode_result(sm.query(self._query))
        kv = result.get("kv") if result["ok"] else None
        return kv.get("value") if isinstance(kv, dict) else None
