"""What a client call sends and what its answer means, shared by Client (api.py) and AsyncClient (aio.py) so
the two cannot differ: the validated Request, the interpretation of the actor's Completion into a result or
the error the caller gets, each call's projection of the state machine's answer, and the merge of per-node
status answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.client import Completion, Outcome, WriteEncoder
from actors.membership import ConfigChange
from actors.messages import NodeId, RequestKind
from cluster.client.commands import check_result, describe_bad_request, session_refusal_text
from cluster.client.leases import Lease, LeaseInfo, lease_info_from
from cluster.errors import Busy, InvalidRequest, OutcomeUnknown, SessionExpired, Unavailable
from cluster.kv.leases import MAX_TTL_MS
from cluster.kv.members import encode_member_request
from cluster.kv.sessions import DEFAULT_MAX_RESPONSES_PER_SESSION

STATUS_TIMEOUT = 2.0  # default per-call bound for status(): a dead node must not stall it for long
# The state machine caches this many answers per session (cluster/kv/sessions.py: its byte bound evicts
# whole sessions, least recently written first, and never trims a live one below this); keep open writes
# within it, with a margin, so a stuck write's answer is never dropped while it may still be retried.
SEQ_WINDOW = DEFAULT_MAX_RESPONSES_PER_SESSION - 24
MAX_LEASE_TTL = MAX_TTL_MS / 1000  # seconds


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request, ready to submit, and what its errors are called."""

    operation: str  # the Client method's name, for error messages
    kind: RequestKind
    body: bytes | WriteEncoder  # a read's encoded query, or a write's command encoder
    limit: float  # its timeout, seconds


def interpret(request: Request, done: Completion) -> dict[str, Any]:
    """The state machine's answer to a request, or the error its caller gets (shared by the blocking and
    the asynchronous calls)."""
    if done.outcome is Outcome.NOT_APPLIED:
        raise Unavailable(request.operation, request.limit, "no leader took the write")
    if done.outcome is Outcome.TIMEOUT:
        if request.kind is RequestKind.WRITE:
            raise OutcomeUnknown(request.operation, request.limit)
        detail = "no leader reachable" if request.kind is RequestKind.READ else ""
        raise Unavailable(request.operation, request.limit, detail)
    if done.outcome is Outcome.REJECTED:
        raise InvalidRequest(request.operation, describe_bad_request(done.result))
    if done.outcome is Outcome.BUSY:
        raise Busy(request.operation, describe_bad_request(done.result))
    if done.outcome is Outcome.SESSION_EXPIRED:
        raise SessionExpired(request.operation, request.limit, session_refusal_text(done.result))
    return check_result(request.operation, done.result, request.limit)


# What each call returns, from the state machine's answer.


def as_revision(result: dict[str, Any]) -> int:
    return int(result["rev"])


def as_swapped(result: dict[str, Any]) -> bool:
    return bool(result["swapped"])


def as_existed(result: dict[str, Any]) -> bool:
    return bool(result["deleted"])


def as_deleted(result: dict[str, Any]) -> int:
    return int(result["deleted"])


def as_kv(result: dict[str, Any]) -> dict[str, Any] | None:
    kv = result["kv"]
    return None if kv is None else dict(kv)


def as_value(result: dict[str, Any]) -> Any:
    kv = result["kv"]
    return None if kv is None else kv["value"]


def range_op(prefix: str, limit: int, after: str) -> list[Any]:
    return ["range", prefix, limit, after]


def put_op(key: str, value: Any, lease: int | None) -> list[Any]:
    """A put's command: with a lease, one that attaches the key to it."""
    if lease is None:
        return ["put", key, value]
    if type(lease) is not int or lease <= 0:
        raise InvalidRequest("put", f"lease must be a lease id (a positive int), got {lease!r}")
    return ["put_lease", key, value, lease]


def lease_grant_op(ttl: float) -> list[Any]:
    """A lease grant's command, for a TTL in seconds (the cluster refuses one below its minimum)."""
    if not isinstance(ttl, int | float) or ttl != ttl or ttl <= 0 or ttl > MAX_LEASE_TTL:
        raise InvalidRequest("lease_grant", f"ttl must be a positive number of seconds, got {ttl!r}")
    return ["lease_grant", round(ttl * 1000), 0]


def as_lease(result: dict[str, Any]) -> Lease:
    return Lease(int(result["id"]), int(result["ttl_ms"]) / 1000)


def as_ttl(result: dict[str, Any]) -> float:
    return float(result["ttl"])


def as_lease_info(result: dict[str, Any]) -> LeaseInfo:
    return lease_info_from(result)


def as_lease_list(result: dict[str, Any]) -> list[LeaseInfo]:
    return [lease_info_from(item) for item in result["leases"]]


def summarize(
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


# Membership (cluster/kv/members.py on the node side).


def member_request(operation: str, change: ConfigChange, limit: float) -> Request:
    return Request(operation, RequestKind.MEMBER, encode_member_request(change), limit)


def as_members(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(m) for m in result.get("members") or ()]


def members_view(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Every member of the configuration in force, from the leader's status (else the newest term's):
    name, peer_url, client_url, learner, role (leader, voter or learner), reachable, and, as the leader
    sees it, match (its last log index known to be replicated there) and lag (entries behind)."""
    every: dict[str, dict[str, Any]] = {r["name"]: r for r in status.get("members") or ()}
    rows = {name: r for name, r in every.items() if r.get("reachable")}
    newest: dict[str, Any] = max(
        rows.values(),
        key=lambda r: (int(r.get("term") or 0), int(r.get("configuration_index") or 0)),
        default={},
    )
    source: dict[str, Any] = rows.get(status.get("leader") or "") or newest
    progress: dict[str, Any] = source.get("progress") or {}
    last = int(source.get("last_index") or 0)
    out: list[dict[str, Any]] = []
    for member in source.get("configuration") or ():
        name = member.get("name", "")
        row = dict(member)
        row["client_url"] = member.get("client_url") or (every.get(name) or {}).get("client_url", "")
        is_leader = name == status.get("leader")
        row["role"] = "leader" if is_leader else ("learner" if member.get("learner") else "voter")
        row["reachable"] = name in rows
        match = last if is_leader else (progress.get(name) or {}).get("match")
        row["match"] = match
        row["lag"] = last - match if match is not None and source.get("role") == "leader" else None
        out.append(row)
    return out
