"""The HTTP status server's parts without sockets: the loop bridge, the views, the metrics exposition, the
instruments, and the --http-url setting."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.messages import ClientResponse, RequestKind, Status
from cluster.node.bridge import MAX_PENDING_CALLS, LoopBridge, LoopBusy, LoopTimeout
from cluster.node.config import ConfigError, load_config
from cluster.node.http import metrics, views
from cluster.node.instruments import Histogram, Instruments


def snapshot(
    name: str,
    role: str,
    term: int = 3,
    leader: str = "n1",
    commit: int = 10,
    applied: int = 10,
    published: float | None = None,
    progress: dict[str, Any] | None = None,
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": name, "role": role, "term": term, "leader": leader, "commit": commit, "applied": applied,
        "last_index": commit, "snapshot_index": 0, "members": ["n1", "n2", "n3"], "stats": {"elections": 1},
        "dropped_invalid": {"AppendEntries": 2}, "uncommitted": 0, "uncommitted_bytes": 0, "pending_reads": 0,
        "cluster_id": "zraft", "client_url": f"tcp://h:{name}", "peer_url": "tcp://p", "uptime": 5.0,
        "storage": {"fsyncs": 4, "entries": 8, "bytes": 100, "snapshots": 0, "entries_per_fsync": 2.0},
        "runtime": {"peer_frames": 9, "bad_peer_frame": 1, "peer_send": {"sent": 7, "dropped_full": 1},
                    "replies": {"sent": 3, "dropped_unroutable": 2}, "turns": 99},
        "clients": {"refused": {"busy_proposals": 4}, "watches": {"open": 1, "ended": {"limit": 1}},
                    "leases_tracked": 0, "leases_expired": 0},
    }  # fmt: skip
    if progress is not None:
        node["progress"] = progress
    return {
        "node": node,
        "http_url": f"http://h/{name}",
        "election_timeout": 1.0,
        "member_records": {"n2": {"client_url": "tcp://c2", "peer_url": "tcp://p2", "http_url": "http://h2"}},
        "kv": {"keys": 5, "revision": 6, "leases": 1, "sessions": 2},
        "instruments": Instruments().export(),
        "published": {"monotonic": time.monotonic() if published is None else published, "wall": time.time()},
    }


# --- the bridge ---------------------------------------------------------------------------------------


def test_loop_calls_are_read_only_bounded_and_answered_by_the_loop() -> None:
    woken = threading.Event()
    bridge = LoopBridge(woken.set)
    with pytest.raises(ValueError):
        bridge.call(RequestKind.WRITE, b"", 1.0)

    def loop_turn() -> None:
        woken.wait(5)
        for call in bridge.take_calls():
            other = ClientResponse("n1", "x", call.request.req_id + 1000, Status.OK, b"no", "")
            mine = ClientResponse("n1", "x", call.request.req_id, Status.OK, b"yes", "")
            call.resolve([other, mine])

    turn = threading.Thread(target=loop_turn)
    turn.start()
    answer = bridge.call(RequestKind.SERIAL_READ, b"q", 5.0)
    turn.join()
    assert answer.result == b"yes" and not bridge.has_calls()
    with pytest.raises(LoopTimeout):  # nobody turns the loop
        bridge.call(RequestKind.READ, b"q", 0.01)
    for _ in range(MAX_PENDING_CALLS - 1):  # calls that timed out still wait for the loop, up to the bound
        with pytest.raises(LoopTimeout):
            bridge.call(RequestKind.STATUS, b"", 0.0001)
    with pytest.raises(LoopBusy):
        bridge.call(RequestKind.STATUS, b"", 1.0)
    assert bridge.refused_busy == 1


def test_publishing_is_throttled_unless_a_fresh_snapshot_is_wanted() -> None:
    bridge = LoopBridge(lambda: None, clock=lambda: 0.0)
    assert bridge.latest() is None and bridge.publish_due(0.0)
    bridge.publish({"a": 1}, 10.0)
    assert bridge.latest() == {"a": 1}
    assert not bridge.publish_due(10.05) and bridge.publish_due(10.2)
    bridge.want_fresh()
    assert bridge.publish_due(10.01)


# --- views --------------------------------------------------------------------------------------------


def test_cluster_status_marks_the_leader_lag_and_unreachable_members() -> None:
    progress = {"n2": {"match": 7, "next": 8, "mode": "replicate", "inflight": 1}, "n3": {"match": 2}}
    snaps = {
        "n1": snapshot("n1", "leader", progress=progress),
        "n2": snapshot("n2", "follower", applied=6, commit=10),
        "n3": None,
    }
    body = views.cluster_status("n2", snaps, {"n3": "unreachable: refused"}, ["n3", "n2", "n1"])
    cards = {c["name"]: c for c in body["members"]}
    assert body["leader"] == "n1" and body["term"] == 3
    assert cards["n1"]["is_leader"] and not cards["n2"]["is_leader"]
    assert cards["n2"]["lag"] == 4 and cards["n2"]["replication_lag"] == 3
    assert cards["n3"] == {
        "name": "n3", "reachable": False, "self": False, "error": "unreachable: refused",
        "progress": {"match": 2}, "replication_lag": 8, "is_leader": False,
    }  # fmt: skip
    assert body["quorum"] == {"ok": True, "size": 2, "reachable": 2, "reason": ""}


def test_cluster_status_without_a_leader_reports_quorum_lost() -> None:
    snaps = {"n1": snapshot("n1", "pre-candidate", leader="n2"), "n2": None, "n3": None}
    body = views.cluster_status("n1", snaps, {}, ["n1", "n2", "n3"])
    assert body["leader"] == "" and body["quorum"]["ok"] is False
    assert body["quorum"]["reason"] == "no leader: 1 of 3 members reachable, a quorum needs 2"
    assert body["members"][1]["error"] == "no HTTP URL advertised"


def test_health_and_readiness_decisions() -> None:
    now = time.monotonic()
    assert views.health(None, None, 3.0, now) == (False, "starting: no status published yet")
    assert views.health(snapshot("n1", "leader"), "", 3.0, now) == (True, "")
    ok, reason = views.health(snapshot("n1", "leader"), "timed out", 3.0, now)
    assert not ok and reason == "leader could not confirm a quorum: timed out"
    assert views.health(snapshot("n2", "follower"), None, 3.0, now) == (True, "")
    ok, reason = views.health(snapshot("n2", "candidate", leader=""), None, 3.0, now)
    assert not ok and reason == "no leader (candidate, term 3)"
    ok, reason = views.health(snapshot("n2", "follower", published=now - 10), None, 3.0, now)
    assert not ok and "has not published its status for 10" in reason
    assert views.readiness(snapshot("n2", "follower"), 3.0, now) == (True, "")
    ok, reason = views.readiness(snapshot("n2", "follower", commit=10, applied=4), 3.0, now)
    assert not ok and reason == "applying: 4 of 10 committed entries"
    assert not views.readiness(snapshot("n2", "follower", leader=""), 3.0, now)[0]


def test_servers_view_formats_like_the_original_and_links_processes_both_ways() -> None:
    now = 1_800_000_000.0
    servers = [
        ("SERVER_META/s1", {"NODE_NAME": "s1", "CPU_CAPACITY": 400, "CPU_USED": 100, "STATUS": "ONLINE",
                            "MEMORY_CAPACITY": 8 * 1024**3, "MEMORY_USED": 2 * 1024**3,
                            "LATEST_HEARTBEAT": now - 5, "INTP_PROCESS_LIST": ["p-listed", "p-gone"]}),
        ("SERVER_META/s2", "not a record"),
    ]  # fmt: skip
    processes = [
        ("INTP_PROCESS_META/p-listed", {"INTP_PROCESS_NAME": "p-listed", "STATUS": "OFFLINE"}),
        (
            "INTP_PROCESS_META/p-named",
            {"INTP_PROCESS_NAME": "p-named", "NODE_NAME": "s1", "STATUS": "ONLINE"},
        ),
        ("INTP_PROCESS_META/p-other", {"NODE_NAME": "s9"}),
    ]
    (s1,) = views.servers_view(servers, processes, now)
    assert s1["NODE_NAME"] == "s1"
    assert s1["properties"]["CPU_USED / CPU_CAPACITY"] == "1.00 / 4.00 = 25.00%"
    assert s1["properties"]["MEMORY_USED / MEMORY_CAPACITY"] == "2.00GB / 8.00GB = 25.00%"
    assert s1["properties"]["INTP_PROCESS_LIST"] == ["p-gone", "p-listed", "p-named"]
    assert [p["INTP_PROCESS_NAME"] for p in s1["processes"]] == [
        "p-listed",
        "p-named",
    ]  # p-gone has no record
    assert s1["heartbeat_age"] == 5.0 and s1["cpu_percent"] == 25.0
    assert views.process_view("s1", "p-listed", processes[0][1], servers[0][1], now) is not None
    assert views.process_view("s1", "p-other", processes[2][1], servers[0][1], now) is None
    assert views.process_view("s1", "x", None, servers[0][1], now) is None
    assert views.registry_counts([{"STATUS": "ONLINE"}, {"STATUS": "ONLINE"}, {}, 7]) == {"ONLINE": 2, "": 2}


def test_address_view_prefers_this_nodes_own_config() -> None:
    rows = views.address_view(snapshot("n1", "leader"))
    assert rows == [
        {"name": "n1", "client_url": "tcp://h:n1", "peer_url": "tcp://p", "http_url": "http://h/n1"},
        {"name": "n2", "client_url": "tcp://c2", "peer_url": "tcp://p2", "http_url": "http://h2"},
        {"name": "n3", "client_url": "", "peer_url": "", "http_url": ""},
    ]


# --- metrics and instruments ----------------------------------------------------------------------------


def test_metrics_exposition_parses_with_prometheus_clients_parser() -> None:
    snap = snapshot("n1", "leader", progress={"n2": {"match": 6}})
    text = metrics.render(snap, {"server": {"ONLINE": 2, "OFFLINE": 1}}, True, 0.25).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("zraft_role", (("role", "leader"),))] == 1
    assert samples[("zraft_role", (("role", "follower"),))] == 0
    assert samples[("zraft_term", ())] == 3
    assert samples[("zraft_peer_messages_dropped_total", (("reason", "full"),))] == 1
    assert samples[("zraft_client_replies_dropped_total", (("reason", "unroutable"),))] == 2
    assert samples[("zraft_frames_dropped_total", (("reason", "bad_peer_frame"),))] == 1
    assert ("zraft_frames_dropped_total", (("reason", "peer_frames"),)) not in samples
    assert samples[("zraft_peer_messages_invalid_total", (("kind", "AppendEntries"),))] == 2
    assert samples[("zraft_proposals_failed_total", (("reason", "busy"),))] == 4
    assert samples[("zraft_requests_refused_total", (("reason", "busy_proposals"),))] == 4
    assert samples[("zraft_follower_lag_entries", (("peer", "n2"),))] == 4
    assert samples[("zraft_registry_records", (("kind", "server"), ("status", "OFFLINE")))] == 1
    assert samples[("zraft_registry_truncated", ())] == 1
    assert samples[("zraft_disk_fsync_duration_seconds_count", ())] == 0
    assert samples[("zraft_watches_open", ())] == 1 and samples[("zraft_leases", ())] == 1


def test_histogram_export_is_cumulative_and_instruments_name_kinds_and_statuses() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        h.observe(value)
    assert h.export() == {"buckets": [(0.1, 2), (1.0, 3), (float("inf"), 4)], "sum": 7.65, "count": 4}
    inst = Instruments()
    inst.requests[int(RequestKind.WRITE)] += 2
    inst.answers[int(Status.BUSY)] += 1
    inst.answers[99] += 1
    inst.event("n1 is leader")
    out = inst.export()
    assert out["requests"] == {"WRITE": 2} and out["answers"] == {"BUSY": 1, "unknown_99": 1}
    assert out["events"][0]["text"] == "n1 is leader"


# --- configuration ----------------------------------------------------------------------------------------

BASE = ["--name", "n1", "--client-url", "tcp://127.0.0.1:7001",
        "--initial-cluster", "n1=tcp://127.0.0.1:7101,n2=tcp://127.0.0.1:7102"]  # fmt: skip


def test_http_url_is_optional_checked_and_normalised(tmp_path: Any) -> None:
    args = [*BASE, "--data-dir", str(tmp_path)]
    assert load_config(args, {}).http_url == ""
    assert (
        load_config([*args, "--http-url", "http://127.0.0.1:8001/"], {}).http_url == "http://127.0.0.1:8001"
    )
    assert load_config(args, {"ZRAFT_HTTP_URL": "http://[::1]:8001"}).http_url == "http://[::1]:8001"
    for bad in (
        "tcp://127.0.0.1:8001",
        "http://127.0.0.1",
        "https://h:1",
        "http://h:99999",
        "http://127.0.0.1:7001",
    ):
        with pytest.raises(ConfigError):
            load_config([*args, "--http-url", bad], {})


# --- the WSGI application, with a loop that never turns ----------------------------------------------------


def wsgi_get(app: Any, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    body = b"".join(app({"REQUEST_METHOD": method, "PATH_INFO": path}, start_response))
    return seen["status"], seen["headers"], body


def test_the_app_answers_from_the_snapshot_and_503s_when_the_loop_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cluster.node.http import app as app_module
    from cluster.node.http.app import StatusApp

    monkeypatch.setattr(app_module, "CALL_TIMEOUT", 0.05)
    bridge = LoopBridge(lambda: None)
    app = StatusApp("n2", bridge)
    code, _, body = wsgi_get(app, "/api/v1/cluster/address")
    assert code == 503 and b"has not published its status yet" in body
    assert wsgi_get(app, "/health")[0] == 503
    bridge.publish(snapshot("n2", "follower"), time.monotonic())
    code, headers, body = wsgi_get(app, "/api/v1/cluster/address")
    assert code == 200 and headers["Content-Type"] == "application/json" and b'"name": "n3"' in body
    assert wsgi_get(app, "/health")[0] == 200 and wsgi_get(app, "/ready")[0] == 200
    code, _, body = wsgi_get(app, "/api/v1/cluster/nodes")  # needs the loop, which never turns
    assert code == 503 and b"did not answer within 0.05s" in body
    code, headers, body = wsgi_get(app, "/metrics")  # the node's own metrics do not wait for it
    assert code == 200 and headers["Content-Type"].startswith("text/plain") and b"zraft_term 3.0" in body
    assert b"zraft_registry_records" not in body
    code, headers, body = wsgi_get(app, "/metrics", method="DELETE")
    assert code == 405 and headers["Allow"] == "GET, HEAD" and b"read-only" in body
    code, headers, body = wsgi_get(app, "/", method="HEAD")
    assert code == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    code, _, body = wsgi_get(app, "/")
    assert b'id="members"' in body and b"http://" not in body and b"https://" not in body  # all inline
