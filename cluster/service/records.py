"""The registry's layout in the KV store: every key and value the cluster service reads or writes.

Records (what platforms and tooling read; the field names are the Apache Submarine/Zeppelin ones):

    SERVER_META/<NODE_NAME>                 a server's record
    INTP_PROCESS_META/<INTP_PROCESS_NAME>   a process's record (the process id; its group is INTP_GROUP_ID)

Each value is a msgpack map (a dict) with these keys:

    both kinds      CPU_CAPACITY, CPU_USED        percent of one core: 4 cores = 400; the average of
                                                   the last 100 heartbeat samples
                    MEMORY_CAPACITY, MEMORY_USED  bytes, averaged the same way
                    LATEST_HEARTBEAT              float seconds since the epoch, by the registrant's clock
                                                   (informative only: liveness never compares it)
                    STATUS                        "ONLINE" or "OFFLINE"
    server          NODE_NAME, SERVER_HOST, SERVER_PORT, SERVER_START_TIME (float epoch seconds),
                    INTP_PROCESS_COUNT (int), INTP_PROCESS_LIST (list of process ids, set by the
                    platform through ClusterService.update; the count follows the list)
    process         INTP_PROCESS_NAME, INTP_GROUP_ID, INTP_TSERVER_HOST, INTP_TSERVER_PORT,
                    INTP_START_TIME (float epoch seconds)

plus any `meta` fields the registrant gave. A server uses the machine's CPU and memory; a process its own
(CPU of the process, resident memory) against the machine's capacity. All times are float seconds since
the Unix epoch.

Liveness and bookkeeping keys, under one prefix so that a single watch follows them all:

    CLUSTER_SERVICE/alive/<KIND>/<ID>   attached to the registrant's lease (TTL = the heartbeat timeout),
                                        so it exists exactly while the leader considers the registrant
                                        alive. KIND is SERVER_META, INTP_PROCESS_META or LISTENER (an event
                                        listener with no record, e.g. `cluster-ctl event listen`). Value:
                                        {"owner": incarnation token, "lease": lease id,
                                         "events": "tcp://host:port" of its event socket or None,
                                         "events_key": its CURVE public key (only when its Client has
                                         CURVE keys: then its event socket speaks only CURVE),
                                         "monitor": bool (it marks others OFFLINE), "pid": int}
    CLUSTER_SERVICE/grace/<KIND>/<ID>   attached to a lease of TTL = the grace period, written when the
                                        record is marked OFFLINE; its deletion (the leader's expiry of that
                                        lease) is when the OFFLINE record is deleted. Value:
                                        {"since": float epoch seconds, "by": token of the marker}

cluster/service/liveness.py says who writes what, and when.
"""

from __future__ import annotations

from typing import Any

SERVER = "SERVER_META"
PROCESS = "INTP_PROCESS_META"
LISTENER = "LISTENER"  # an alive key with an event address but no record
RECORD_KINDS = (SERVER, PROCESS)

ONLINE = "ONLINE"
OFFLINE = "OFFLINE"

# Field names (the original's).
NODE_NAME = "NODE_NAME"
SERVER_HOST = "SERVER_HOST"
SERVER_PORT = "SERVER_PORT"
SERVER_START_TIME = "SERVER_START_TIME"
INTP_PROCESS_NAME = "INTP_PROCESS_NAME"
INTP_GROUP_ID = "INTP_GROUP_ID"
INTP_TSERVER_HOST = "INTP_TSERVER_HOST"
INTP_TSERVER_PORT = "INTP_TSERVER_PORT"
INTP_START_TIME = "INTP_START_TIME"
CPU_CAPACITY = "CPU_CAPACITY"
CPU_USED = "CPU_USED"
MEMORY_CAPACITY = "MEMORY_CAPACITY"
MEMORY_USED = "MEMORY_USED"
LATEST_HEARTBEAT = "LATEST_HEARTBEAT"
STATUS = "STATUS"
INTP_PROCESS_COUNT = "INTP_PROCESS_COUNT"
INTP_PROCESS_LIST = "INTP_PROCESS_LIST"

# What each heartbeat writes; ClusterService.update may not write these (nor STATUS).
HEARTBEAT_FIELDS = (CPU_CAPACITY, CPU_USED, MEMORY_CAPACITY, MEMORY_USED, LATEST_HEARTBEAT, STATUS)
IDENTITY_FIELDS = {SERVER: NODE_NAME, PROCESS: INTP_PROCESS_NAME}

LIVENESS_PREFIX = "CLUSTER_SERVICE/"
ALIVE_PREFIX = LIVENESS_PREFIX + "alive/"
GRACE_PREFIX = LIVENESS_PREFIX + "grace/"

_KIND_NAMES = {
    "server": SERVER,
    "servers": SERVER,
    SERVER: SERVER,
    "process": PROCESS,
    "processes": PROCESS,
    PROCESS: PROCESS,
}


def kind_of(text: str) -> str:
    """The record kind for "server"/"process" (or the prefixes themselves); ValueError otherwise."""
    try:
        return _KIND_NAMES[text]
    except (KeyError, TypeError):
        raise ValueError(f"unknown record kind {text!r}: expected 'server' or 'process'") from None


def check_id(ident: str) -> str:
    """A registrant id: a non-empty str without '/' (it is the last part of a key)."""
    if type(ident) is not str or not ident or "/" in ident or len(ident.encode()) > 512:
        raise ValueError(f"bad registrant id {ident!r}: a non-empty name without '/'")
    return ident


def record_key(kind: str, ident: str) -> str:
    return f"{kind}/{ident}"


def alive_key(kind: str, ident: str) -> str:
    return f"{ALIVE_PREFIX}{kind}/{ident}"


def grace_key(kind: str, ident: str) -> str:
    return f"{GRACE_PREFIX}{kind}/{ident}"


def split_key(key: str, prefix: str = "") -> tuple[str, str] | None:
    """(kind, id) of a record key (prefix "") or of an alive/grace key (its prefix); None if not one."""
    if not key.startswith(prefix):
        return None
    kind, sep, ident = key[len(prefix) :].partition("/")
    if not sep or not ident or "/" in ident:
        return None
    return kind, ident


def target_name(kind: str, ident: str) -> str:
    """How events name a registrant: KIND/ID (the record's key)."""
    return f"{kind}/{ident}"


def server_record(
    name: str, host: str, port: int, start_time: float, meta: dict[str, Any] | None
) -> dict[str, Any]:
    record = dict(meta or {})
    record.update(
        {
            NODE_NAME: name,
            SERVER_HOST: host,
            SERVER_PORT: port,
            SERVER_START_TIME: start_time,
            STATUS: ONLINE,
        }
    )
    record.setdefault(INTP_PROCESS_LIST, [])
    record[INTP_PROCESS_COUNT] = len(record[INTP_PROCESS_LIST])
    return record


def process_record(
    group_id: str, name: str, host: str, port: int, start_time: float, meta: dict[str, Any] | None
) -> dict[str, Any]:
    record = dict(meta or {})
    record.update(
        {
            INTP_PROCESS_NAME: name,
            INTP_GROUP_ID: group_id,
            INTP_TSERVER_HOST: host,
            INTP_TSERVER_PORT: port,
            INTP_START_TIME: start_time,
            STATUS: ONLINE,
        }
    )
    return record


def merged(record: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """`record` with `fields` merged in; a new INTP_PROCESS_LIST also sets INTP_PROCESS_COUNT."""
    out = {**record, **fields}
    if INTP_PROCESS_LIST in fields:
        out[INTP_PROCESS_COUNT] = len(fields[INTP_PROCESS_LIST])
    return out


def check_update(kind: str, fields: dict[str, Any]) -> None:
    """Refuse an update that would write liveness or identity fields (ValueError)."""
    if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
        raise ValueError("fields must be a dict with str keys")
    owned = set(HEARTBEAT_FIELDS) | {IDENTITY_FIELDS[kind], INTP_PROCESS_COUNT}
    bad = sorted(owned & set(fields))
    if bad:
        raise ValueError(f"update may not set {', '.join(bad)}: heartbeats and registration own them")
    if INTP_PROCESS_LIST in fields and not isinstance(fields[INTP_PROCESS_LIST], list):
        raise ValueError("INTP_PROCESS_LIST must be a list of process ids")


def free_memory(record: dict[str, Any]) -> float:
    try:
        return float(record.get(MEMORY_CAPACITY) or 0) - float(record.get(MEMORY_USED) or 0)
    except (TypeError, ValueError):
        return 0.0
