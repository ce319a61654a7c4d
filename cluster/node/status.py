"""The STATUS answer of a running node: the NodeActor's own view plus what only the runtime knows.

The runtime answers STATUS requests itself with `build_status`: node.status() (role, term, leader, commit,
applied, log and snapshot indexes, members, Raft counters, leader progress) extended with the node's URLs,
the client URLs the cluster advertises (the "__zraft/members/" keys), storage and transport counters,
and uptime. Keys added here never replace the actor's own keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.storage import StorageStats


def storage_summary(stats: StorageStats) -> dict[str, Any]:
    return {
        "fsyncs": stats.fsyncs,
        "batches": stats.batches,
        "entries": stats.entries,
        "entries_per_fsync": round(stats.entries_per_fsync(), 3),
        "snapshots": stats.snapshots,
        "bytes": stats.bytes,
        "segments_rolled": stats.segments_rolled,
        "segments_from_spare": stats.segments_from_spare,
    }


def build_status(
    node_status: Mapping[str, Any],
    *,
    cluster_id: str,
    client_url: str,
    peer_url: str,
    data_dir: str,
    client_urls: Mapping[str, str],
    storage: StorageStats,
    runtime: Mapping[str, Any],
    uptime: float,
) -> dict[str, Any]:
    out = dict(node_status)
    out.update(
        {
            "cluster_id": cluster_id,
            "client_url": client_url,
            "peer_url": peer_url,
            "data_dir": data_dir,
            "client_urls": dict(client_urls),
            "storage": storage_summary(storage),
            "runtime": dict(runtime),
            "uptime": round(uptime, 3),
        }
    )
    return out
