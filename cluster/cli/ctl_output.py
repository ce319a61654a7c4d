"""How cluster-ctl prints results: machine-readable JSON, aligned tables, or simple lines.

Values are any msgpack value; JSON cannot hold bytes, so bytes are shown as {"base64": "..."}.
In simple and table output a str value prints as is and anything else prints as JSON.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from cluster.client.calls import members_view  # the same view as cluster-ctl member list

FORMATS = ("simple", "json", "table")
KV_COLUMNS = ("key", "value", "version", "create_revision", "mod_revision")
STATUS_COLUMNS = ("name", "client_url", "role", "term", "commit", "applied", "leader")
MEMBER_COLUMNS = ("name", "role", "peer_url", "client_url", "reachable", "lag")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(obj)).decode("ascii")}
    raise TypeError(f"cannot show a {type(obj).__name__} as JSON")


def to_json(obj: Any) -> str:
    return json.dumps(obj, default=_jsonable, ensure_ascii=False, sort_keys=False)


def show_value(value: Any) -> str:
    return value if isinstance(value, str) else to_json(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns under an upper-case header, separated by two spaces."""
    header = [c.upper().replace("_", "-") for c in columns]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def kvs_text(kvs: Sequence[dict[str, Any]], fmt: str) -> str:
    """Key-value records (as Client.get_kv returns them) in the chosen format."""
    if fmt == "json":
        return to_json({"kvs": list(kvs), "count": len(kvs)})
    if fmt == "table":
        rows = [[show_value(kv[c]) if c == "value" else str(kv[c]) for c in KV_COLUMNS] for kv in kvs]
        return table(KV_COLUMNS, rows)
    return "\n".join(kv_simple(kv) for kv in kvs)


def kv_simple(kv: dict[str, Any]) -> str:
    """One record in the simple format: its key on a line, its value on the next."""
    return f"{kv['key']}\n{show_value(kv['value'])}"


def status_text(status: dict[str, Any], fmt: str) -> str:
    """Client.status()'s answer: JSON as is, otherwise a summary line and one row per node."""
    if fmt == "json":
        return to_json(status)
    leader = status.get("leader") or ""
    rows = []
    for member in status["members"]:
        cells = [str(member.get(c, "")) for c in STATUS_COLUMNS[:-1]]
        rows.append([*cells, "*" if leader and member["name"] == leader else ""])
    summary = f"leader: {leader or '(none)'}   term: {status.get('term', 0)}"
    return summary + "\n" + table(STATUS_COLUMNS, rows) + _configuration_line(status)


def _configuration_line(status: dict[str, Any]) -> str:
    """Voters and learners of the configuration in force, each with its lag (entries behind the leader's
    log, as the leader sees it; "?" when no leader answered)."""
    members = members_view(status)
    if not members:
        return ""

    def shown(m: dict[str, Any]) -> str:
        if m["role"] == "leader":
            return f"{m['name']} (leader)"
        return f"{m['name']} (lag {m['lag'] if m['lag'] is not None else '?'})"

    voters = [shown(m) for m in members if not m.get("learner")]
    learners = [shown(m) for m in members if m.get("learner")]
    return f"\nvoters: {', '.join(voters)}\nlearners: {', '.join(learners) or '-'}"


def members_text(members: Sequence[dict[str, Any]], fmt: str) -> str:
    """cluster-ctl member list (or the members after a change): JSON, or one row per member."""
    if fmt == "json":
        return to_json({"members": list(members)})
    rows = [["" if m.get(c) is None else str(m.get(c, "")) for c in MEMBER_COLUMNS] for m in members]
    return table(MEMBER_COLUMNS, rows)
