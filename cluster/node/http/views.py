"""The JSON bodies of the status API, built from published node snapshots and registry records. No I/O.

Everything here is a pure function of its arguments (snapshots as cluster/node/runtime.py publishes them,
registry records as the KV holds them, the current time), so it is tested without sockets.

Registry records (the service layer, cluster/service/): a server's record is the key SERVER_META/<NODE_NAME>,
a process's INTP_PROCESS_META/<INTP_PROCESS_NAME>, each value a dict with the original Submarine field names.
The views follow the original's ClusterRestApi: a list of {"NODE_NAME", "properties"} where properties shows
CPU as "used / capacity = rate%" in cores (the records hold percent of one core: 4 cores = 400, as the
original's), memory in GB the same way, times as local date-times; zraft adds the raw record, numeric
rates, the heartbeat's age and the server's processes. A process belongs to a server when the server's
INTP_PROCESS_LIST names it (the service layer's link) or the process record names the server (NODE_NAME,
the original's link).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Final

SERVER_PREFIX: Final = "SERVER_META/"
PROCESS_PREFIX: Final = "INTP_PROCESS_META/"
# where a process record names the server it runs on: the original's NODE_NAME, or the service layer's field
PROCESS_SERVER_FIELDS: Final = ("NODE_NAME", "SERVER_NODE_NAME")
GIB: Final = 1024**3
PLAIN_FIELDS: Final = (
    "STATUS", "SERVER_HOST", "SERVER_PORT", "INTP_TSERVER_HOST", "INTP_TSERVER_PORT", "INTP_GROUP_ID",
)  # fmt: skip


# --- this node and its peers -----------------------------------------------------------------------------


def snapshot_age(snapshot: Mapping[str, Any], now_monotonic: float) -> float:
    """Seconds since the loop published `snapshot` (same process, same monotonic clock)."""
    return max(0.0, now_monotonic - float(snapshot["published"]["monotonic"]))


def member_summary(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """What a member card shows, from that member's own snapshot."""
    node = snapshot["node"]
    storage = node.get("storage", {})
    return {
        "name": node["id"],
        "role": node["role"],
        "term": node["term"],
        "leader": node.get("leader") or "",
        "commit": node["commit"],
        "applied": node["applied"],
        "last_index": node["last_index"],
        "snapshot_index": node.get("snapshot_index", 0),
        "uncommitted": node.get("uncommitted", 0),
        "uptime": node.get("uptime", 0.0),
        "client_url": node.get("client_url", ""),
        "peer_url": node.get("peer_url", ""),
        "http_url": snapshot.get("http_url", ""),
        "storage": dict(storage),
        "kv": dict(snapshot.get("kv", {})),
        "published": float(snapshot["published"]["wall"]),
    }


def address_view(snapshot: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every member's name, client, peer and HTTP URL: the advertised records, then the configuration."""
    node = snapshot["node"]
    records: Mapping[str, Mapping[str, Any]] = snapshot.get("member_records", {})
    out = []
    for name in node.get("members", []):
        record = records.get(name, {})
        entry = {
            "name": name,
            "client_url": str(record.get("client_url", "")),
            "peer_url": str(record.get("peer_url", "")),
            "http_url": str(record.get("http_url", "")),
        }
        if name == node["id"]:
            entry.update(
                client_url=node.get("client_url", ""),
                peer_url=node.get("peer_url", ""),
                http_url=snapshot.get("http_url", ""),
            )
        out.append(entry)
    return out


def cluster_status(
    self_name: str,
    snapshots: Mapping[str, Mapping[str, Any] | None],
    errors: Mapping[str, str],
    members: Iterable[str],
) -> dict[str, Any]:
    """The cluster as seen from `self_name`: each member's own snapshot (None: unreachable, see `errors`),
    the leader, each member's lag behind it, the leader's replication progress, and quorum health."""
    names = sorted(members)
    majority = len(names) // 2 + 1
    summaries = {n: member_summary(s) for n, s in snapshots.items() if s is not None}
    leaders = [s for s in summaries.values() if s["role"] == "leader"]
    leader = max(leaders, key=lambda s: s["term"]) if leaders else None
    own = summaries.get(self_name)
    leader_name = leader["name"] if leader else (own["leader"] if own and own["role"] == "follower" else "")
    term = max((s["term"] for s in summaries.values()), default=0)
    progress: Mapping[str, Mapping[str, Any]] = {}
    if leader is not None:
        leader_snapshot = snapshots[leader["name"]]
        assert leader_snapshot is not None
        progress = leader_snapshot["node"].get("progress", {})
    cards = []
    for name in names:
        summary = summaries.get(name)
        card: dict[str, Any] = {"name": name, "reachable": summary is not None, "self": name == self_name}
        if summary is None:
            card["error"] = errors.get(name, "no HTTP URL advertised")
        else:
            card.update(summary)
            if leader is not None:
                card["lag"] = max(0, leader["commit"] - summary["applied"])
        if name in progress:
            card["progress"] = dict(progress[name])
            if leader is not None:
                card["replication_lag"] = max(0, leader["last_index"] - int(progress[name].get("match", 0)))
        card["is_leader"] = bool(leader_name) and name == leader_name
        cards.append(card)
    reachable = sum(1 for c in cards if c["reachable"])
    following = sum(
        1
        for s in summaries.values()
        if leader is not None and s["term"] == leader["term"] and (s["leader"] == leader["name"])
    )
    if leader is not None:
        ok = following >= majority
        reason = "" if ok else f"leader {leader['name']} is followed by {following} of {len(names)} members"
    elif own is not None and own["role"] == "follower" and own["leader"]:
        ok = True  # we follow a leader we heard within an election timeout, whose HTTP we cannot reach
        reason = ""
    else:
        ok = False
        reason = f"no leader: {reachable} of {len(names)} members reachable, a quorum needs {majority}"
    events: list[dict[str, Any]] = []
    for name, snapshot in snapshots.items():
        if snapshot is not None:
            events.extend({**e, "node": name} for e in snapshot["instruments"]["events"])
    events.sort(key=lambda e: e["time"], reverse=True)
    return {
        "self": self_name,
        "leader": leader_name,
        "term": term,
        "members": cards,
        "quorum": {"ok": ok, "size": majority, "reachable": reachable, "reason": reason},
        "events": events[:30],
    }


def health(
    snapshot: Mapping[str, Any] | None, leader_confirmed: str | None, stale_after: float, now_monotonic: float
) -> tuple[bool, str]:
    """(healthy, reason) as /health answers: 200 only with a leader and a quorum reachable.

    `leader_confirmed` is, on a leader, the outcome of a ReadIndex round through a quorum ("" when it
    succeeded, else why not); None on other roles. A follower is healthy while it follows a leader: it
    heard that leader within an election timeout (or it would be campaigning), and a leader that lost its
    quorum steps down within one (CheckQuorum)."""
    if snapshot is None:
        return False, "starting: no status published yet"
    age = snapshot_age(snapshot, now_monotonic)
    if age > stale_after:
        return False, f"the node's loop has not published its status for {age:.1f}s"
    node = snapshot["node"]
    role = node["role"]
    if role == "leader":
        if leader_confirmed is None:
            return False, "leader without a ReadIndex check"
        if leader_confirmed:
            return False, f"leader could not confirm a quorum: {leader_confirmed}"
        return True, ""
    if role == "follower" and node.get("leader"):
        return True, ""
    return False, f"no leader ({role}, term {node['term']})"


def readiness(
    snapshot: Mapping[str, Any] | None, stale_after: float, now_monotonic: float
) -> tuple[bool, str]:
    """(ready, reason): the loop turns, a leader is known, and this node applied all it knows committed."""
    if snapshot is None:
        return False, "starting: no status published yet"
    age = snapshot_age(snapshot, now_monotonic)
    if age > stale_after:
        return False, f"the node's loop has not published its status for {age:.1f}s"
    node = snapshot["node"]
    if not node.get("leader"):
        return False, f"no leader known ({node['role']}, term {node['term']})"
    if node["applied"] < node["commit"]:
        return False, f"applying: {node['applied']} of {node['commit']} committed entries"
    return True, ""


# --- the registry ----------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _when(value: Any) -> str:
    """A time as the original showed it (local date-time); epoch seconds or an ISO string accepted."""
    seconds = _number(value)
    if seconds is not None:
        try:
            return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return "Wrong time type!"
    return str(value) if isinstance(value, str) else "Wrong time type!"


def _rate(used: Any, capacity: Any) -> float | None:
    u, c = _number(used), _number(capacity)
    if u is None or c is None or c <= 0:
        return None
    return round(u / c * 100.0, 2)


def record_properties(record: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The original's formatted properties of a server or process record, plus numeric extras."""
    props: dict[str, Any] = {}
    cpu = _rate(record.get("CPU_USED"), record.get("CPU_CAPACITY"))
    if cpu is not None:
        used, cap = float(record["CPU_USED"]) / 100.0, float(record["CPU_CAPACITY"]) / 100.0
        props["CPU_USED / CPU_CAPACITY"] = f"{used:.2f} / {cap:.2f} = {cpu:.2f}%"
    memory = _rate(record.get("MEMORY_USED"), record.get("MEMORY_CAPACITY"))
    if memory is not None:
        used, cap = float(record["MEMORY_USED"]) / GIB, float(record["MEMORY_CAPACITY"]) / GIB
        props["MEMORY_USED / MEMORY_CAPACITY"] = f"{used:.2f}GB / {cap:.2f}GB = {memory:.2f}%"
    for field in ("SERVER_START_TIME", "INTP_START_TIME", "LATEST_HEARTBEAT"):
        if field in record:
            props[field] = _when(record[field])
    for field in PLAIN_FIELDS:
        if field in record:
            props[field] = record[field]
    heartbeat = _number(record.get("LATEST_HEARTBEAT"))
    return {
        "properties": props,
        "cpu_percent": cpu,
        "memory_percent": memory,
        "heartbeat_age": round(max(0.0, now - heartbeat), 3) if heartbeat is not None else None,
        "status": str(record.get("STATUS", "")),
    }


def process_server(record: Mapping[str, Any]) -> str:
    for field in PROCESS_SERVER_FIELDS:
        value = record.get(field)
        if isinstance(value, str) and value:
            return value
    return ""


def servers_view(
    servers: Iterable[tuple[str, Any]], processes: Iterable[tuple[str, Any]], now: float
) -> list[dict[str, Any]]:
    """/api/v1/cluster/nodes: each server with its formatted properties and its processes."""
    by_name: dict[str, dict[str, Any]] = {}
    by_server: dict[str, set[str]] = {}
    for key, record in processes:
        if not isinstance(record, Mapping):
            continue
        name = str(record.get("INTP_PROCESS_NAME") or key[len(PROCESS_PREFIX) :])
        by_name[name] = {"INTP_PROCESS_NAME": name, **record_properties(record, now), "record": dict(record)}
        by_server.setdefault(process_server(record), set()).add(name)
    out = []
    for key, record in servers:
        if not isinstance(record, Mapping):
            continue
        name = str(record.get("NODE_NAME") or key[len(SERVER_PREFIX) :])
        view = record_properties(record, now)
        names = by_server.get(name, set()) | set(listed_processes(record))
        view["properties"]["INTP_PROCESS_LIST"] = sorted(names)
        view["properties"]["INTP_PROCESS_COUNT"] = len(names)
        procs = [by_name[p] for p in sorted(names) if p in by_name]  # a listed process may have no record
        out.append({"NODE_NAME": name, **view, "processes": procs, "record": dict(record)})
    return out


def listed_processes(server_record: Any) -> list[str]:
    """The process ids a server record lists (INTP_PROCESS_LIST), if any."""
    listed = server_record.get("INTP_PROCESS_LIST") if isinstance(server_record, Mapping) else None
    return [str(p) for p in listed] if isinstance(listed, list) else []


def process_view(node: str, process: str, record: Any, server: Any, now: float) -> dict[str, Any] | None:
    """/api/v1/cluster/node/{node}/{process}: the process's record, if it runs on that server (the server's
    record lists it, or the process names the server)."""
    if not isinstance(record, Mapping):
        return None
    if process_server(record) != node and process not in listed_processes(server):
        return None
    view = record_properties(record, now)
    return {"NODE_NAME": node, "INTP_PROCESS_NAME": process, **view, "record": dict(record)}


def registry_counts(records: Iterable[Any]) -> dict[str, int]:
    """How many records have each STATUS ("" when a record has none)."""
    counts: dict[str, int] = {}
    for record in records:
        status = str(record.get("STATUS", "")) if isinstance(record, Mapping) else ""
        counts[status] = counts.get(status, 0) + 1
    return counts
