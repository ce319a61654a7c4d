"""GET /metrics: a node's published snapshot in the Prometheus text format, written by prometheus-client.

The numbers are whatever the loop published last (cluster/node/bridge.py): each scrape builds metric
families from that snapshot in a fresh registry, so no metric object is shared with the loop thread.
Counters (`*_total`) only grow while the process lives; gauges are the state at publication. Registry sizes
come from the registry records the HTTP thread read through loop calls for this scrape.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

ROLES: Final = ("follower", "pre-candidate", "candidate", "leader")
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# runtime counters that are not drops (cluster/node/runtime.py runtime_counters)
_NOT_DROPS: Final = frozenset(
    {"peer_frames", "client_frames", "advertise_answers", "advertise_sent", "turns", "peer_send", "replies"}
)
_HISTOGRAMS: Final = (
    ("fsync_seconds", "zraft_disk_fsync_duration_seconds", "Duration of each fsync of a file or directory"),
    ("append_seconds", "zraft_wal_append_duration_seconds", "One Ready's WAL write and fsync"),
    ("apply_seconds", "zraft_apply_duration_seconds", "One Ready's apply pass over newly committed entries"),
    ("entries_per_fsync", "zraft_wal_entries_per_fsync", "Log entries made durable by one WAL fsync"),
    (
        "snapshot_seconds",
        "zraft_snapshot_duration_seconds",
        "An own snapshot from handing it to the writer to durable and recorded",
    ),
)


class _SnapshotCollector(Collector):
    def __init__(
        self,
        snapshot: Mapping[str, Any],
        registry: Mapping[str, Mapping[str, int]] | None,
        registry_truncated: bool,
        age: float,
    ) -> None:
        self._snap = snapshot
        self._registry = registry
        self._truncated = registry_truncated
        self._age = age

    def collect(self) -> Iterator[Metric]:
        snap = self._snap
        node = snap["node"]
        stats: Mapping[str, int] = node.get("stats", {})
        storage: Mapping[str, Any] = node.get("storage", {})
        runtime: Mapping[str, Any] = node.get("runtime", {})
        clients: Mapping[str, Any] = node.get("clients", {})
        inst: Mapping[str, Any] = snap["instruments"]

        info = GaugeMetricFamily(
            "zraft_node_info",
            "This node's name and URLs (value 1)",
            labels=["node", "cluster_id", "client_url", "peer_url", "http_url"],
        )
        info.add_metric(
            [
                node["id"],
                node.get("cluster_id", ""),
                node.get("client_url", ""),
                node.get("peer_url", ""),
                snap.get("http_url", ""),
            ],
            1,
        )
        yield info
        role = GaugeMetricFamily("zraft_role", "1 for this node's current Raft role", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1 if node["role"] == name else 0)
        yield role
        yield GaugeMetricFamily(
            "zraft_is_leader", "1 while this node leads", value=int(node["role"] == "leader")
        )
        yield GaugeMetricFamily(
            "zraft_has_leader", "1 while this node knows a leader", value=int(bool(node.get("leader")))
        )
        yield GaugeMetricFamily("zraft_term", "Current Raft term", value=node["term"])
        yield CounterMetricFamily(
            "zraft_leader_changes",
            "Times this node saw the leader change (or vanish)",
            value=inst["leader_changes"],
        )
        yield CounterMetricFamily(
            "zraft_elections", "Elections this node started", value=stats.get("elections", 0)
        )
        yield CounterMetricFamily(
            "zraft_proposals",
            "Entries this node appended as leader (proposals taken)",
            value=stats.get("proposals", 0),
        )
        yield CounterMetricFamily(
            "zraft_proposals_committed",
            "Own proposals committed and applied",
            value=inst["proposals_committed"],
        )
        refused: Mapping[str, int] = clients.get("refused", {})
        failed = CounterMetricFamily(
            "zraft_proposals_failed",
            "Writes that did not commit: refused as busy before proposing, or whose leader lost its term "
            "before they committed (outcome unknown to the client)",
            labels=["reason"],
        )
        failed.add_metric(["busy"], refused.get("busy_proposals", 0))
        failed.add_metric(["outcome_unknown"], inst["answers"].get("UNKNOWN", 0))
        yield failed
        refusals = CounterMetricFamily(
            "zraft_requests_refused",
            "Client requests refused before anything was proposed or read, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(refused.items()):
            refusals.add_metric([reason], n)
        yield refusals
        for name, key, text in (
            ("zraft_commit_index", "commit", "Highest log index known committed"),
            ("zraft_applied_index", "applied", "Highest log index applied to the state machine"),
            ("zraft_last_index", "last_index", "Last index in this node's log"),
            ("zraft_snapshot_index", "snapshot_index", "Index of the latest snapshot"),
            ("zraft_uncommitted_entries", "uncommitted", "Entries in the log above the commit index"),
            ("zraft_uncommitted_bytes", "uncommitted_bytes", "Bytes of proposals waiting for commit"),
            ("zraft_pending_reads", "pending_reads", "Linearizable reads waiting for a ReadIndex round"),
        ):
            yield GaugeMetricFamily(name, text, value=node.get(key, 0))
        for key, name, text in _HISTOGRAMS:
            h = inst["histograms"][key]
            buckets = [(_bound(b), c) for b, c in h["buckets"]]
            yield HistogramMetricFamily(name, text, buckets=buckets, sum_value=h["sum"])
        for name, key, text in (
            ("zraft_wal_fsyncs", "fsyncs", "fsyncs the storage asked for (files and directories)"),
            ("zraft_wal_entries", "entries", "Log entries written to the WAL"),
            ("zraft_wal_bytes", "bytes", "Bytes written to the WAL"),
            ("zraft_snapshots", "snapshots", "Snapshots made durable"),
        ):
            yield CounterMetricFamily(name, text, value=storage.get(key, 0))
        yield GaugeMetricFamily(
            "zraft_wal_entries_per_fsync_mean",
            "Entries per WAL fsync since start",
            value=storage.get("entries_per_fsync", 0.0),
        )
        peer_send: Mapping[str, int] = runtime.get("peer_send", {})
        yield CounterMetricFamily(
            "zraft_peer_messages_sent", "Peer messages handed to ZeroMQ", value=peer_send.get("sent", 0)
        )
        dropped = CounterMetricFamily(
            "zraft_peer_messages_dropped", "Peer messages not sent, by reason", labels=["reason"]
        )
        for key, n in sorted(peer_send.items()):
            if key.startswith("dropped_"):
                dropped.add_metric([key[len("dropped_") :]], n)
        yield dropped
        replies: Mapping[str, int] = runtime.get("replies", {})
        reply_drops = CounterMetricFamily(
            "zraft_client_replies_dropped", "Answers to clients not sent, by reason", labels=["reason"]
        )
        for key, n in sorted(replies.items()):
            if key.startswith("dropped_"):
                reply_drops.add_metric([key[len("dropped_") :]], n)
        yield reply_drops
        frames = CounterMetricFamily(
            "zraft_frames_dropped",
            "Malformed or unexpected frames dropped (peers) or answered BAD_REQUEST (clients), by reason",
            labels=["reason"],
        )
        for key, n in sorted(runtime.items()):
            if key not in _NOT_DROPS and isinstance(n, int) and not isinstance(n, bool):
                frames.add_metric([key], n)
        yield frames
        invalid = CounterMetricFamily(
            "zraft_peer_messages_invalid",
            "Peer messages that decoded but made no sense against this node's state, by message kind",
            labels=["kind"],
        )
        for kind, n in sorted(node.get("dropped_invalid", {}).items()):
            invalid.add_metric([kind], n)
        yield invalid
        requests = CounterMetricFamily(
            "zraft_client_requests", "Client requests received, by kind", labels=["kind"]
        )
        for kind, n in sorted(inst["requests"].items()):
            requests.add_metric([kind], n)
        yield requests
        answers = CounterMetricFamily(
            "zraft_client_responses", "Answers and watch frames sent to clients, by status", labels=["status"]
        )
        for status, n in sorted(inst["answers"].items()):
            answers.add_metric([status], n)
        yield answers
        watches: Mapping[str, Any] = clients.get("watches", {})
        yield GaugeMetricFamily(
            "zraft_watches_open", "Watch streams this node serves", value=watches.get("open", 0)
        )
        ended = CounterMetricFamily(
            "zraft_watches_ended", "Watch streams ended, by reason", labels=["reason"]
        )
        for reason, n in sorted(watches.get("ended", {}).items()):
            ended.add_metric([reason], n)
        yield ended
        kv: Mapping[str, int] = snap.get("kv", {})
        yield GaugeMetricFamily("zraft_leases", "Leases in the state machine", value=kv.get("leases", 0))
        yield GaugeMetricFamily(
            "zraft_leases_tracked",
            "Leases whose expiry this leader tracks",
            value=clients.get("leases_tracked", 0),
        )
        yield CounterMetricFamily(
            "zraft_leases_expired",
            "Leases this node expired as leader",
            value=clients.get("leases_expired", 0),
        )
        yield GaugeMetricFamily("zraft_kv_keys", "Keys in the state machine", value=kv.get("keys", 0))
        yield GaugeMetricFamily(
            "zraft_kv_revision", "The state machine's revision", value=kv.get("revision", 0)
        )
        yield GaugeMetricFamily(
            "zraft_sessions", "Client sessions in the state machine", value=kv.get("sessions", 0)
        )
        if node["role"] == "leader":
            lag = GaugeMetricFamily(
                "zraft_follower_lag_entries",
                "Leader's last index minus a follower's match index",
                labels=["peer"],
            )
            for peer, progress in sorted(node.get("progress", {}).items()):
                lag.add_metric([peer], max(0, node["last_index"] - int(progress.get("match", 0))))
            yield lag
        if self._registry is not None:
            sizes = GaugeMetricFamily(
                "zraft_registry_records", "Registry records by kind and STATUS", labels=["kind", "status"]
            )
            for kind, counts in sorted(self._registry.items()):
                for status, n in sorted(counts.items()):
                    sizes.add_metric([kind, status], n)
            yield sizes
            yield GaugeMetricFamily(
                "zraft_registry_truncated",
                "1 when the registry counts stopped at the page bound",
                value=int(self._truncated),
            )
        yield GaugeMetricFamily(
            "zraft_uptime_seconds", "Seconds since the node started", value=node.get("uptime", 0)
        )
        yield GaugeMetricFamily(
            "zraft_status_age_seconds", "Age of the published status these numbers come from", value=self._age
        )


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def render(
    snapshot: Mapping[str, Any],
    registry: Mapping[str, Mapping[str, int]] | None,
    registry_truncated: bool,
    age: float,
) -> bytes:
    """The Prometheus exposition of one snapshot."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_SnapshotCollector(snapshot, registry, registry_truncated, age))
    return generate_latest(reg)
