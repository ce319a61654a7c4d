"""The HTTP status server against a real 3-node cluster: every endpoint, metrics parsed with
prometheus-client's own parser, slow and hostile HTTP clients while writes commit, one node down, quorum
lost, and the status page in headless Chromium.

One cluster serves the whole module (a module-scoped fixture); a test that kills nodes restarts them before
it ends, so the others never depend on the order they run in.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster import Client
from tests.integration.util import Cluster, NodeHandle, free_ports, start_cluster, wait_until

pytestmark = pytest.mark.integration

WAIT = 20.0
SNAPSHOT_ENTRIES = 40  # so that the metrics test sees snapshots taken
SNAPSHOTS = ("zraft_snapshot_duration_seconds_count", ())
OFFLINE_SERVERS = ("zraft_registry_records", (("kind", "server"), ("status", "OFFLINE")))


class HttpCluster:
    def __init__(self, cluster: Cluster, http: dict[str, str]) -> None:
        self.cluster = cluster
        self.http = http  # node name -> http://127.0.0.1:PORT
        self.endpoints = [n.client_url for n in cluster.nodes]

    def node(self, name: str) -> NodeHandle:
        return self.cluster.node(name)

    def leader(self) -> str:
        """The leader's name, as the cluster status of any live node reports it once all agree."""

        def agreed() -> str | None:
            for node in self.cluster.alive():
                code, doc = get_json(self.http[node.name] + "/api/v1/cluster/status")
                if code == 200 and doc["body"]["leader"] and doc["body"]["quorum"]["ok"]:
                    return str(doc["body"]["leader"])
            return None

        return wait_until(agreed, WAIT, "a leader with a quorum")

    def restart(self, name: str) -> None:
        node = self.node(name)
        node.start()
        wait_until(lambda: get(self.http[name] + "/ready")[0] == 200, WAIT, f"{name} ready again")


@pytest.fixture(scope="module")
def http_cluster() -> Iterator[HttpCluster]:
    ports = dict(zip(("n1", "n2", "n3"), free_ports(3), strict=True))
    http = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    with start_cluster(
        3,
        extra_args=["--snapshot-entries", str(SNAPSHOT_ENTRIES)],
        node_args_of=lambda name: ["--http-url", http[name]],
    ) as cluster:
        hc = HttpCluster(cluster, http)
        for name in http:
            wait_until(lambda name=name: get(http[name] + "/ready")[0] == 200, WAIT, f"{name} ready")
        yield hc


def get(url: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def get_json(url: str, method: str = "GET") -> tuple[int, Any]:
    code, body = get(url, method)
    return code, (json.loads(body) if body else None)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus-client: (name, sorted labels) -> value."""
    code, body = get(url + "/metrics")
    assert code == 200, body
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _probe_reason(url: str) -> str | None:
    """The reason of a 503 from /health or /ready; None while it answers 200 (or not at all)."""
    code, body = get(url)
    return str(json.loads(body)["reason"]) if code == 503 else None


def server_record(name: str, status: str = "ONLINE", **extra: Any) -> dict[str, Any]:
    now = time.time()
    record = {
        "NODE_NAME": name,
        "SERVER_HOST": "10.0.0.5",
        "SERVER_PORT": 8080,
        "SERVER_START_TIME": now - 3600,
        "CPU_CAPACITY": 800,
        "CPU_USED": 200,
        "MEMORY_CAPACITY": 16 * 1024**3,
        "MEMORY_USED": 4 * 1024**3,
        "LATEST_HEARTBEAT": now,
        "STATUS": status,
    }
    record.update(extra)
    return record


def process_record(name: str, server: str | None, status: str = "ONLINE") -> dict[str, Any]:
    """A process record; with `server`, it names its server as the original did (NODE_NAME); without, only
    the server's INTP_PROCESS_LIST links the two, as the service layer does."""
    now = time.time()
    return {
        **({"NODE_NAME": server} if server else {}),
        "INTP_PROCESS_NAME": name,
        "INTP_TSERVER_HOST": "10.0.0.5",
        "INTP_TSERVER_PORT": 9000,
        "INTP_START_TIME": now - 60,
        "INTP_GROUP_ID": "spark",
        "CPU_CAPACITY": 100,
        "CPU_USED": 50,
        "MEMORY_CAPACITY": 2 * 1024**3,
        "MEMORY_USED": 1024**3,
        "LATEST_HEARTBEAT": now,
        "STATUS": status,
    }


# --- the JSON API ------------------------------------------------------------------------------------


def test_address_lists_every_member_with_its_urls(http_cluster: HttpCluster) -> None:
    for name in http_cluster.http:

        def complete(name: str = name) -> list[dict[str, str]] | None:
            code, doc = get_json(http_cluster.http[name] + "/api/v1/cluster/address")
            body = doc["body"] if code == 200 else []
            return body if all(a["http_url"] for a in body) else None

        body = wait_until(complete, WAIT, f"{name}'s address list with every HTTP URL")
        assert [a["name"] for a in body] == ["n1", "n2", "n3"]
        for entry in body:
            node = http_cluster.node(entry["name"])
            assert entry["client_url"] == node.client_url
            assert entry["peer_url"] == node.peer_url
            assert entry["http_url"] == http_cluster.http[entry["name"]]


def test_cluster_status_shows_each_member_as_it_sees_itself(http_cluster: HttpCluster) -> None:
    leader = http_cluster.leader()
    for name, url in http_cluster.http.items():

        def all_reachable(url: str = url) -> dict[str, Any] | None:
            code, doc = get_json(url + "/api/v1/cluster/status")
            assert code == 200 and doc["status"] == "OK"
            body: dict[str, Any] = doc["body"]
            return body if body["quorum"]["reachable"] == 3 else None

        body = wait_until(all_reachable, WAIT, f"every member reachable from {name}")
        assert body["self"] == name and body["leader"] == leader
        assert body["quorum"] == {"ok": True, "size": 2, "reachable": 3, "reason": ""}
        members = {m["name"]: m for m in body["members"]}
        assert sorted(members) == ["n1", "n2", "n3"]
        for m in members.values():
            assert m["reachable"] is True
            assert m["role"] == ("leader" if m["name"] == leader else "follower")
            assert m["is_leader"] is (m["name"] == leader)
            assert m["term"] == body["term"] and m["applied"] <= m["commit"]
            assert m["storage"]["fsyncs"] > 0
        for follower in (n for n in members if n != leader):  # the leader's replication progress
            assert members[follower]["progress"]["mode"] in ("probe", "replicate", "snapshot")
            assert members[follower]["replication_lag"] >= 0
        code, doc = get_json(url + "/api/v1/node/status")
        assert code == 200 and doc["body"]["node"]["id"] == name


def test_registry_views_show_servers_and_processes(http_cluster: HttpCluster) -> None:
    with Client(http_cluster.endpoints, timeout=5.0) as client:
        client.put(
            "SERVER_META/srv-a", server_record("srv-a", INTP_PROCESS_LIST=["proc-2"], INTP_PROCESS_COUNT=1)
        )
        client.put("SERVER_META/srv-b", server_record("srv-b", "OFFLINE", LATEST_HEARTBEAT=time.time() - 120))
        client.put("INTP_PROCESS_META/proc-1", process_record("proc-1", "srv-a"))
        client.put("INTP_PROCESS_META/proc-2", process_record("proc-2", None, "OFFLINE"))
    for name, url in http_cluster.http.items():  # every node, followers from their applied state

        def listed(url: str = url) -> list[dict[str, Any]] | None:
            code, doc = get_json(url + "/api/v1/cluster/nodes")
            body = doc["body"] if code == 200 else []
            procs = {s["NODE_NAME"]: len(s["processes"]) for s in body}
            return body if procs.get("srv-a") == 2 and "srv-b" in procs else None

        servers = {s["NODE_NAME"]: s for s in wait_until(listed, WAIT, f"the servers on {name}")}
        a, b = servers["srv-a"], servers["srv-b"]
        assert a["properties"]["CPU_USED / CPU_CAPACITY"] == "2.00 / 8.00 = 25.00%"
        assert a["properties"]["MEMORY_USED / MEMORY_CAPACITY"] == "4.00GB / 16.00GB = 25.00%"
        assert a["properties"]["STATUS"] == "ONLINE" and b["properties"]["STATUS"] == "OFFLINE"
        assert a["properties"]["INTP_PROCESS_LIST"] == ["proc-1", "proc-2"]
        assert a["properties"]["INTP_PROCESS_COUNT"] == 2
        assert [p["status"] for p in a["processes"]] == ["ONLINE", "OFFLINE"]
        assert a["cpu_percent"] == 25.0 and a["memory_percent"] == 25.0
        assert b["heartbeat_age"] >= 119 and b["processes"] == []
        assert a["properties"]["SERVER_START_TIME"].count(":") == 2  # a date-time, as the original shows
        code, doc = get_json(url + "/api/v1/cluster/node/srv-a/proc-1")
        assert code == 200 and doc["body"]["record"]["INTP_GROUP_ID"] == "spark"
        assert doc["body"]["properties"]["CPU_USED / CPU_CAPACITY"] == "0.50 / 1.00 = 50.00%"
        code, doc = get_json(url + "/api/v1/cluster/node/srv-a/proc-2")  # listed by its server
        assert code == 200 and doc["body"]["status"] == "OFFLINE"
        code, doc = get_json(url + "/api/v1/cluster/node/srv-b/proc-1")  # it does not run there
        assert code == 404 and "proc-1" in doc["message"]
        code, doc = get_json(url + "/api/v1/cluster/node/srv-a/nope")
        assert code == 404 and doc["status"] == "NOT_FOUND"


def test_errors_are_json_and_nothing_writes(http_cluster: HttpCluster) -> None:
    url = http_cluster.http["n1"]
    with Client(http_cluster.endpoints, timeout=5.0) as client:
        before = client.range("").revision
        code, doc = get_json(url + "/no/such/path")
        assert code == 404 and doc["status"] == "NOT_FOUND" and "/no/such/path" in doc["message"]
        code, doc = get_json(url + "/api/v1/cluster/nodes", method="POST")
        assert code == 405 and "read-only" in doc["message"]
        code, doc = get_json(url + "/api/v1/cluster/node/only-one-part")
        assert code == 404 and doc["message"]
        code, body = get(url + "/health", method="HEAD")
        assert code == 200 and body == b""
        for path in (
            "/",
            "/health",
            "/ready",
            "/metrics",
            "/api/v1/cluster/status",
            "/api/v1/cluster/nodes",
            "/api/v1/cluster/address",
            "/api/v1/node/status",
            "/api/v1/cluster/node/a/b",
        ):
            assert get(url + path)[0] in (200, 404)
        after = client.range("").revision
        assert after == before  # no endpoint wrote anything


def test_metrics_parse_and_counters_move_with_work(http_cluster: HttpCluster) -> None:
    leader = http_cluster.leader()
    url = http_cluster.http[leader]
    before = scrape(url)
    assert before[("zraft_role", (("role", "leader"),))] == 1
    assert before[("zraft_is_leader", ())] == 1
    term = before[("zraft_term", ())]
    assert term >= 1
    with Client(http_cluster.endpoints, timeout=5.0) as client:
        for i in range(SNAPSHOT_ENTRIES):  # at least one snapshot on the way
            client.put(f"metrics/{i}", i)
        client.get("metrics/0")
        client.put("SERVER_META/srv-m", server_record("srv-m", "OFFLINE"))

    def moved() -> dict[Any, float] | None:
        after = scrape(url)
        grew = (
            after[("zraft_proposals_committed_total", ())]
            >= before[("zraft_proposals_committed_total", ())] + SNAPSHOT_ENTRIES + 1
            and after[("zraft_commit_index", ())] >= before[("zraft_commit_index", ())] + SNAPSHOT_ENTRIES + 1
            and after[("zraft_client_requests_total", (("kind", "WRITE"),))]
            >= before.get(("zraft_client_requests_total", (("kind", "WRITE"),)), 0) + SNAPSHOT_ENTRIES + 1
            and after.get(OFFLINE_SERVERS, 0) >= 1  # registry sizes may be a second old
            and after[SNAPSHOTS] > before[SNAPSHOTS]  # written in the background
        )
        return after if grew else None

    after = wait_until(moved, WAIT, "the leader's counters to count the writes and a snapshot")
    for name in (
        "zraft_disk_fsync_duration_seconds_count",
        "zraft_wal_append_duration_seconds_count",
        "zraft_wal_entries_per_fsync_count",
        "zraft_wal_fsyncs_total",
        "zraft_wal_entries_total",
        "zraft_snapshots_total",
    ):
        assert after[(name, ())] > before[(name, ())], name
    assert after[("zraft_client_responses_total", (("status", "OK"),))] > before.get(
        ("zraft_client_responses_total", (("status", "OK"),)), 0
    )
    assert after[("zraft_client_requests_total", (("kind", "READ"),))] >= 1
    assert (
        after[("zraft_apply_duration_seconds_count", ())] > before[("zraft_apply_duration_seconds_count", ())]
    )
    assert after[("zraft_registry_truncated", ())] == 0
    assert after[("zraft_peer_messages_sent_total", ())] > before[("zraft_peer_messages_sent_total", ())]
    assert after[("zraft_kv_keys", ())] >= 21
    follower = next(n for n in http_cluster.http if n != leader)
    assert after[("zraft_follower_lag_entries", (("peer", follower),))] >= 0
    assert scrape(http_cluster.http[follower])[("zraft_role", (("role", "follower"),))] == 1


# --- slow and hostile HTTP clients ---------------------------------------------------------------------


def test_slow_and_silent_http_clients_do_not_stall_raft(http_cluster: HttpCluster) -> None:
    leader = http_cluster.leader()
    host, port = http_cluster.http[leader].removeprefix("http://").split(":")
    hostile: list[socket.socket] = []
    try:
        for _ in range(20):  # connect and send nothing
            hostile.append(socket.create_connection((host, int(port)), timeout=5))
        trickle = socket.create_connection((host, int(port)), timeout=5)  # half a request line, then silence
        trickle.sendall(b"GET /metr")
        hostile.append(trickle)
        reader = socket.create_connection((host, int(port)), timeout=5)  # asks a lot, never reads
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
        hostile.append(reader)
        committed = 0
        with Client(http_cluster.endpoints, timeout=5.0) as client:
            for i in range(100):
                client.put(f"hostile/{i}", i)
                committed += 1
            assert client.get("hostile/99") == 99
        assert committed == 100
        code, body = get(http_cluster.http[leader] + "/health")  # others are still served
        assert code == 200, body
    finally:
        for sock in hostile:
            sock.close()


# --- failures ------------------------------------------------------------------------------------------


def test_a_node_down_then_quorum_lost(http_cluster: HttpCluster) -> None:
    leader = http_cluster.leader()
    followers = [n for n in http_cluster.http if n != leader]
    down, survivor_follower = followers
    http_cluster.node(down).kill()
    try:

        def shows_down() -> dict[str, Any] | None:
            code, doc = get_json(http_cluster.http[leader] + "/api/v1/cluster/status")
            body = doc["body"] if code == 200 else None
            members = {m["name"]: m for m in body["members"]} if body else {}
            return body if members and not members[down]["reachable"] else None

        body = wait_until(shows_down, WAIT, f"{down} shown unreachable")
        card = next(m for m in body["members"] if m["name"] == down)
        assert card["error"].startswith("unreachable")
        assert body["quorum"]["ok"] is True and body["quorum"]["reachable"] == 2
        assert get(http_cluster.http[leader] + "/health")[0] == 200  # two of three is a quorum
        assert get(http_cluster.http[survivor_follower] + "/health")[0] == 200

        http_cluster.node(survivor_follower).kill()  # now the leader is alone

        def unhealthy() -> dict[str, Any] | None:
            code, body = get(http_cluster.http[leader] + "/health")
            return json.loads(body) if code == 503 else None

        doc = wait_until(unhealthy, WAIT, "/health 503 on the lone node")
        assert doc["health"] == "false" and doc["reason"], doc
        # the leader steps down once it has not heard a quorum for an election timeout (CheckQuorum)
        reason = wait_until(
            lambda: _probe_reason(http_cluster.http[leader] + "/ready"), WAIT, "/ready 503 on the lone node"
        )
        assert "no leader" in reason
        code, status = get_json(http_cluster.http[leader] + "/api/v1/cluster/status")
        assert code == 200 and status["body"]["quorum"]["ok"] is False
        assert "no leader" in status["body"]["quorum"]["reason"]
        assert "no leader" in json.loads(get(http_cluster.http[leader] + "/health")[1])["reason"]
        assert scrape(http_cluster.http[leader])[("zraft_has_leader", ())] == 0  # snapshots still flow
    finally:
        for name in followers:
            if not http_cluster.node(name).alive():
                http_cluster.restart(name)
        http_cluster.leader()


# --- the page in a real browser -------------------------------------------------------------------------


def _browser_problem() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for binary in ("chromium", "chromedriver"):
        if shutil.which(binary) is None:
            return f"no {binary} on PATH (apt-get install -y chromium chromium-driver)"
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    problem = _browser_problem()
    if problem:
        pytest.skip(f"headless Chromium unavailable: {problem}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--window-size=1280,860",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# What the page shows, read in one script run: the page redraws every second, so elements found one call
# earlier may be gone by the next.
_READ_PAGE = """
const text = (sel) => { const e = document.querySelector(sel); return e ? e.innerText : null; };
const banner = document.getElementById("quorum-banner");
return {
  cards: Array.from(document.querySelectorAll("#members .card")).map(c => ({
    name: c.dataset.name, role: c.dataset.role, reachable: c.dataset.reachable, leader: c.dataset.leader,
    text: c.innerText})),
  rows: Array.from(document.querySelectorAll("#servers tbody tr")).map(r => ({
    node: r.dataset.node, cls: r.className, text: r.innerText})),
  leader: text("#leader-name"), updated: text("#last-update"), events: text("#events"),
  banner: getComputedStyle(banner).display !== "none" ? banner.innerText : "",
};
"""


def test_status_page_in_headless_chromium(http_cluster: HttpCluster, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    leader = http_cluster.leader()
    with Client(http_cluster.endpoints, timeout=5.0) as client:
        client.put("SERVER_META/web-1", server_record("web-1"))
        client.put("SERVER_META/web-2", server_record("web-2", "OFFLINE", LATEST_HEARTBEAT=time.time() - 90))
        client.put("INTP_PROCESS_META/web-1-spark", process_record("web-1-spark", "web-1"))
    browser.get(http_cluster.http[leader] + "/")
    wait = WebDriverWait(browser, WAIT)

    def page() -> dict[str, Any]:
        shown: dict[str, Any] = browser.execute_script(_READ_PAGE)
        return shown

    def settled() -> dict[str, Any] | None:
        shown = page()
        up = len(shown["cards"]) == 3 and all(c["reachable"] == "true" for c in shown["cards"])
        listed = {r["node"] for r in shown["rows"]} >= {"web-1", "web-2"}
        return shown if up and listed else None

    shown = wait.until(lambda _: settled())
    cards = {c["name"]: c for c in shown["cards"]}
    assert sorted(cards) == ["n1", "n2", "n3"]
    assert [n for n, c in cards.items() if c["leader"] == "true"] == [leader]
    assert cards[leader]["role"] == "leader" and "LEADER" in cards[leader]["text"].upper()
    rows = {r["node"]: r for r in shown["rows"]}
    assert "ONLINE" in rows["web-1"]["text"] and "web-1-spark" in rows["web-1"]["text"]
    assert "OFFLINE" in rows["web-2"]["cls"].split()
    assert shown["leader"] == leader and shown["banner"] == ""

    down, other = (n for n in http_cluster.http if n != leader)
    http_cluster.node(down).kill()
    try:

        def shows_down() -> dict[str, Any] | None:
            shown = page()
            card = next((c for c in shown["cards"] if c["name"] == down), None)
            seen = (
                card is not None
                and card["reachable"] == "false"
                and f"{down} is unreachable" in shown["events"]
            )
            return shown if seen else None

        shown = wait.until(lambda _: shows_down())
        card = next(c for c in shown["cards"] if c["name"] == down)
        assert "unreachable" in card["text"].lower()
        assert shown["updated"] != "never" and shown["banner"] == ""  # two of three still make a quorum
        target = Path(os.environ.get("ZRAFT_PAGE_SCREENSHOT") or tmp_path / "status-page.png")
        assert browser.save_screenshot(str(target))
        assert target.stat().st_size > 10_000

        http_cluster.node(other).kill()  # the page's node is alone now: the quorum is lost
        shown = wait.until(lambda _: (shown := page())["banner"] and shown)
        assert shown["banner"].startswith("Quorum lost: ")  # first the lone leader, then no leader
        shown = wait.until(lambda _: (shown := page())["leader"] == "none" and shown)
        assert shown["banner"].startswith("Quorum lost: no leader: 1 of 3 members reachable")
    finally:
        for name in (down, other):
            if not http_cluster.node(name).alive():
                http_cluster.restart(name)
        http_cluster.leader()
