"""The results: throughput ratios, the printed table, and the JSON document written to --out.

Ratios are zraft's ops/s divided by the other system's, for the same workload, concurrency and client mode
(async or threads); they are attached to zraft's rows ("ratios": {"etcd": 0.42}) and printed in one column
per compared system. A zraft row of the threads mode also gets "of_async": its ops/s divided by zraft's
async row's for the same workload and concurrency (how much of the asynchronous throughput the blocking
client keeps under threads).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BASELINE = "zraft"
JSON_NAME = "results.json"
TABLE_NAME = "table.txt"
PNG_NAME = "bench.png"


def client_of(row: dict[str, Any]) -> str:
    """The row's client mode (rows from before the threads mode have none: async)."""
    return str(row.get("client", "async"))


def _rate_ratio(row: dict[str, Any], other: dict[str, Any]) -> float | None:
    return round(row["ops_per_s"] / other["ops_per_s"], 3) if other["ops_per_s"] else None


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Attach zraft/other throughput ratios to every zraft row that has a matching row of another system
    (same client mode), and to zraft's threads rows their share of zraft's async throughput."""
    index = {(r["system"], r["workload"], r["concurrency"], client_of(r)): r for r in rows}
    for row in rows:
        if row["system"] != BASELINE:
            continue
        mine = (row["workload"], row["concurrency"], client_of(row))
        ratios = {}
        for (system, workload, concurrency, client), other in index.items():
            if system == BASELINE or (workload, concurrency, client) != mine:
                continue
            ratios[system] = _rate_ratio(row, other)
        row["ratios"] = ratios
        twin = index.get((BASELINE, row["workload"], row["concurrency"], "async"))
        if client_of(row) == "threads" and twin is not None:
            row["of_async"] = _rate_ratio(row, twin)


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100 or digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    """Milliseconds with about three significant digits (0.0042, 0.42, 4.20, 42.0, 420)."""
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value:.4f}"
    if value < 0.1:
        return f"{value:.3f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    if not value:
        return ""
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def sort_rows(
    rows: list[dict[str, Any]],
    workloads: Sequence[str],
    systems: Sequence[str],
    clients: Sequence[str] = ("async",),
) -> None:
    """Table order: workload as asked, then concurrency, then client mode as asked, then zraft before the
    systems compared with it."""
    rows.sort(
        key=lambda r: (
            workloads.index(r["workload"]),
            r["concurrency"],
            clients.index(client_of(r)) if client_of(r) in clients else len(clients),
            systems.index(r["system"]),
        )
    )


def _per_node(nodes: dict[str, dict[str, Any]], key: str, digits: int) -> str:
    values = [n.get(key) for n in nodes.values()]
    if not values or all(v is None for v in values):
        return "-"
    return "/".join("?" if v is None else f"{v:.{digits}f}" for v in values)


def _fsync_cell(row: dict[str, Any]) -> str:
    if row.get("fsyncs_per_s") is not None:
        return _num(row["fsyncs_per_s"], 0)
    return "no fsync" if row.get("durability") == "none" else "-"


def table_rows(rows: Sequence[dict[str, Any]], compared: Sequence[str]) -> list[list[str]]:
    header = [
        "workload",
        "conc",
        "system",
        "client",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "node CPU s",
        "peak RSS MB",
        "fsync/s",
        "ent/fsync",
        "leader chg",
    ]
    header += [f"{BASELINE}/{name}" for name in compared]
    threads = any(client_of(r) == "threads" for r in rows)
    if threads:
        header.append("threads/async")
    out = [header]
    for r in rows:
        lat = r["latency_ms"]
        line = [
            r["workload"],
            str(r["concurrency"]),
            r["system"],
            client_of(r),
            _num(r["ops_per_s"], 0),
            _ms(lat.get("p50")),
            _ms(lat.get("p99")),
            _ms(lat.get("p999")),
            _ms(lat.get("max")),
            str(r["errors"]),
            _per_node(r["nodes"], "cpu_s", 2),
            _per_node(r["nodes"], "peak_rss_mb", 0),
            _fsync_cell(r),
            _num(r.get("entries_per_fsync"), 2),
            "-" if r.get("leader_changes") is None else str(r["leader_changes"]),
        ]
        ratios = r.get("ratios") or {}
        line += [_ratio(ratios.get(name)) for name in compared]
        if threads:
            line.append(_ratio(r.get("of_async")))
        out.append(line)
    return out


def format_table(rows: Sequence[dict[str, Any]], compared: Sequence[str]) -> str:
    """A fixed-width text table; numbers right-aligned, a blank line between workloads."""
    cells = table_rows(rows, compared)
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    left = {0, 2, 3}

    def render(line: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )

    text = [render(cells[0]), "  ".join("-" * w for w in widths)]
    previous = None
    for row, line in zip(rows, cells[1:], strict=True):
        if previous is not None and row["workload"] != previous:
            text.append("")
        previous = row["workload"]
        text.append(render(line).rstrip())
    return "\n".join(text)


def legend(compared: Sequence[str], clients: Sequence[str] = ("async",)) -> str:
    lines = [
        "ops/s: operations completed in the measured window / its length; latencies per operation.",
        "conc: requests in flight in total, split over the load processes. client async: each process drives "
        "its client's asynchronous API in a closed loop (a completion issues the next request; no thread per "
        "request). client threads: each process runs one thread per request in flight, each calling the "
        "blocking API (zraft: Client.put/get/cas; etcd: blocking gRPC stub calls) one call after the other.",
        "node CPU s / peak RSS MB: every node process of the system (n1/n2/n3), over the measured window.",
        "fsync/s: fsyncs of all nodes together per second; ent/fsync: log entries written per fsync.",
        "leader chg: leader changes during the measured window (new Raft terms for zraft, etcd's "
        "leader_changes_seen), the most any node saw; 0 means no election under that load.",
        "watch: conc = watchers of one writer's prefix (1 put in flight); ops/s = events delivered per s "
        "over all watchers; latency = event arrival - start of its put. lease: conc = leases, each renewed "
        "by one keepalive after the other; latency per keepalive.",
    ]
    if compared:
        lines.append(
            f"{BASELINE}/X: zraft's ops/s divided by X's for the same workload, concurrency and client mode."
        )
    if "threads" in clients:
        lines.append("threads/async: zraft's threads-mode ops/s divided by its async ops/s in the same cell.")
    return "\n".join(lines)


def document(
    meta: dict[str, Any], systems: dict[str, dict[str, str]], rows: list[dict[str, Any]], notes: list[str]
) -> dict[str, Any]:
    return {"meta": meta, "systems": systems, "notes": notes, "rows": rows}


def write_results(out_dir: Path, doc: dict[str, Any], table: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / JSON_NAME
    json_path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    table_path = out_dir / TABLE_NAME
    table_path.write_text(table + "\n")
    return json_path, table_path
