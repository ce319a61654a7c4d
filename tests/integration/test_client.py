"""cluster.Client, cluster-ctl and cluster-local against real node processes started through bin/.

Ports are free loopback ports, waits are bounded, and every process is stopped in a finally block (the
start_cluster context manager, or the cluster-local helper below). Timings (latency, failover) are printed
for the record, never asserted: only that a failing request ends within its timeout plus a margin.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from actors.messages import ClientResponse, RequestKind, Status
from cluster import (
    AlreadyApplied,
    Client,
    ClientClosed,
    InvalidRequest,
    NoAnswer,
    OutcomeUnknown,
    Rejected,
    Unavailable,
)
from cluster.cli.local import HTTP_PORT_OFFSET
from cluster.cli.local_nodes import port_in_use
from cluster.client.commands import check_result
from cluster.client.endpoints import PEER_PORT_OFFSET
from cluster.kv.machine import MAX_RANGE_LIMIT, decode_result, encode_command
from tests.integration.util import (
    REPO_ROOT,
    Cluster,
    NodeHandle,
    find_leader,
    free_ports,
    get_status,
    request,
    send_request,
    start_cluster,
    wait_for_leader,
    wait_until,
)

pytestmark = pytest.mark.integration

CTL = REPO_ROOT / "bin" / "cluster-ctl"
LOCAL = REPO_ROOT / "bin" / "cluster-local"
MARGIN = 2.0  # how much later than its timeout a failing call may return (thread wake-ups, slow CI)


def urls_advertised(cluster: Cluster) -> bool:
    """Every live node reports every member's client URL (what a client learns from one node)."""
    names = {n.name for n in cluster.nodes}
    return all(set(get_status(n.client_url).get("client_urls", {})) >= names for n in cluster.alive())


def started(cluster: Cluster) -> NodeHandle:
    leader = wait_for_leader(cluster)
    wait_until(lambda: urls_advertised(cluster), 10.0, "every node to advertise its client URL")
    return leader


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with start_cluster(3) as c:
        started(c)
        yield c


@pytest.fixture(scope="module")
def client(cluster: Cluster) -> Iterator[Client]:
    with Client([n.client_url for n in cluster.nodes], timeout=5.0) as c:
        yield c


# --- semantics ----------------------------------------------------------------------------------------


def test_put_get_revisions_and_versions(client: Client) -> None:
    rev1 = client.put("sem/a", {"x": [1, 2.5, None, True, b"\x00raw"]})
    assert client.get("sem/a") == {"x": [1, 2.5, None, True, b"\x00raw"]}
    kv1 = client.get_kv("sem/a")
    assert kv1 == {
        "key": "sem/a",
        "value": {"x": [1, 2.5, None, True, b"\x00raw"]},
        "create_revision": rev1,
        "mod_revision": rev1,
        "version": 1,
    }
    rev2 = client.put("sem/a", "second")
    assert rev2 > rev1
    kv2 = client.get_kv("sem/a")
    assert kv2 is not None and (kv2["create_revision"], kv2["mod_revision"], kv2["version"]) == (
        rev1,
        rev2,
        2,
    )
    assert client.get("sem/missing") is None and client.get_kv("sem/missing") is None
    # A serializable read may be stale, but it catches up.
    wait_until(lambda: client.get("sem/a", serializable=True) == "second", 5.0, "a serializable read")
    with pytest.raises(InvalidRequest, match="key must not be empty"):
        client.put("", 1)
    with pytest.raises(InvalidRequest, match="value too large"):
        client.put("sem/big", "x" * (1024 * 1024 + 1))


def test_range_is_sorted_limited_and_prefix_exact(client: Client) -> None:
    for key in ("rng/b", "rng/a", "rng/c", "rngx", "rn"):
        client.put(key, key.upper())
    page = client.range("rng/")
    kvs = page.kvs
    assert [kv["key"] for kv in kvs] == ["rng/a", "rng/b", "rng/c"] and page.more is False
    assert [kv["value"] for kv in kvs] == ["RNG/A", "RNG/B", "RNG/C"]
    assert all({"create_revision", "mod_revision", "version"} <= kv.keys() for kv in kvs)
    assert page.revision >= max(kv["mod_revision"] for kv in kvs)
    first = client.range("rng/", limit=2)
    assert [kv["key"] for kv in first.kvs] == ["rng/a", "rng/b"] and first.more is True
    rest = client.range("rng/", limit=2, after=first.next_after)
    assert [kv["key"] for kv in rest.kvs] == ["rng/c"] and rest.more is False
    assert [kv["key"] for kv in client.range_all("rng/", page_size=1)] == ["rng/a", "rng/b", "rng/c"]
    assert client.range("nothing-here/").kvs == [] and list(client.range_all("nothing-here/")) == []
    with pytest.raises(InvalidRequest, match="limit too large"):
        client.range("rng/", limit=MAX_RANGE_LIMIT + 1)
    with pytest.raises(InvalidRequest, match="limit too large"):
        client.range_all("rng/", page_size=MAX_RANGE_LIMIT + 1)


def test_cas_delete_and_delete_prefix(client: Client) -> None:
    assert client.cas("cas/k", None, 1) is True  # None: only if absent
    assert client.cas("cas/k", None, 2) is False
    assert client.cas("cas/k", 1.0, 2) is False  # 1.0 is not 1
    assert client.cas("cas/k", 1, 2) is True
    assert client.get("cas/k") == 2
    assert client.delete("cas/k") is True
    assert client.delete("cas/k") is False
    for i in range(5):
        client.put(f"dp/{i}", i)
    client.put("dpx", "stays")
    assert client.delete_prefix("dp/") == 5
    assert client.range("dp/").kvs == [] and client.get("dpx") == "stays"
    assert client.delete_prefix("dp/") == 0


def test_cas_by_mod_revision_through_a_cluster(client: Client) -> None:
    assert client.cas_revision("rev/k", 0, "a") is True  # 0: only if absent
    first = client.get_kv("rev/k")
    assert first is not None
    client.put("rev/k", "a")  # the same value again: a new mod revision
    assert client.cas_revision("rev/k", first["mod_revision"], "b") is False
    current = client.get_kv("rev/k")
    assert current is not None and client.cas_revision("rev/k", current["mod_revision"], "b") is True
    assert client.cas_delete_revision("rev/k", current["mod_revision"]) is False
    swapped = client.get_kv("rev/k")
    assert swapped is not None and swapped["value"] == "b"
    assert client.cas_delete_revision("rev/k", swapped["mod_revision"]) is True
    assert client.get("rev/k") is None


def _through_leader(cluster: Cluster, command: bytes) -> ClientResponse:
    """Send one write command to the leader, the same command again after a NOT_LEADER or silence (a
    resend of the same session and seq, as the client does: the cluster applies it at most once)."""

    def attempt() -> ClientResponse | None:
        leader = find_leader(cluster)
        if leader is None:
            return None
        try:
            response = send_request(leader.client_url, request(RequestKind.WRITE, command), timeout=1.0)
        except TimeoutError:
            return None
        return response if response.status == Status.OK else None

    response = wait_until(attempt, 10.0, "an answer from the leader")
    assert response is not None
    return response


def test_a_retry_of_an_applied_write_whose_answer_is_gone_raises_already_applied(
    cluster: Cluster, client: Client
) -> None:
    """A session's write is applied; a later write of the session tells the cluster the first one's
    answer is no longer needed (its ack floor), so the cluster drops it; then a retry of the first write
    arrives. The real nodes answer "already applied" (not applied again), which the client reports as
    AlreadyApplied: an unknown outcome that is known to have happened, never a Rejected."""
    register = encode_command(0, 0, 0, ["session_open", 0, 0])
    session = check_result("open", _through_leader(cluster, register).result)["session"]
    first = encode_command(session, 1, 1, ["put", "aa/k", "first"])
    assert check_result("put", _through_leader(cluster, first).result)["created"] is True
    later = encode_command(session, 2, 2, ["put", "aa/k", "second"])
    revision = check_result("put", _through_leader(cluster, later).result)["rev"]
    retry = _through_leader(cluster, first)
    with pytest.raises(AlreadyApplied) as caught:
        check_result("put", retry.result)
    assert not isinstance(caught.value, Rejected) and isinstance(caught.value, OutcomeUnknown)
    kv = client.get_kv("aa/k")
    assert kv is not None and kv["value"] == "second" and kv["mod_revision"] == revision


def test_a_write_of_a_session_the_cluster_never_registered_is_refused_unapplied(
    cluster: Cluster, client: Client
) -> None:
    """Sessions are registered through the log: a write of an unknown session (never registered,
    expired, or evicted) is refused by the real nodes, never applied."""
    unknown = encode_command(random.randrange(1, 2**62), 1, 1, ["put", "ns/k", "never"])
    answer = decode_result(_through_leader(cluster, unknown).result)
    assert answer["ok"] is False and answer["code"] == "session_expired"
    assert client.get("ns/k") is None
    assert client.put("ns/k", "fine") > 0  # the Client itself registered its session first


def test_many_threads_pipeline_through_one_client(client: Client) -> None:
    threads, per_thread = 16, 40
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                client.put(f"mt/{t:02d}/{i:03d}", [t, i])
                if i % 10 == 0:
                    assert client.get(f"mt/{t:02d}/{i:03d}") == [t, i]
        except BaseException as exc:  # reported below
            errors.append(exc)

    started_at = time.monotonic()
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    elapsed = time.monotonic() - started_at
    assert not errors, errors[:3]
    assert len(list(client.range_all("mt/"))) == threads * per_thread
    print(f"\n{threads} threads x {per_thread} puts (+ gets): {elapsed:.2f}s")


def test_single_request_latency(client: Client) -> None:
    samples = []
    for i in range(200):
        t0 = time.perf_counter()
        client.put(f"lat/{i}", i)
        samples.append(time.perf_counter() - t0)
    reads = []
    for i in range(200):
        t0 = time.perf_counter()
        client.get(f"lat/{i}")
        reads.append(time.perf_counter() - t0)
    print(
        f"\nput latency: median {statistics.median(samples) * 1000:.2f} ms, "
        f"max {max(samples) * 1000:.2f} ms; linearizable get median {statistics.median(reads) * 1000:.2f} ms"
    )


def test_a_client_that_knows_only_a_follower_finds_the_leader(cluster: Cluster) -> None:
    leader = wait_for_leader(cluster)
    follower = next(n for n in cluster.nodes if n is not leader)
    with Client(follower.client_url, timeout=5.0) as c:
        assert set(c.nodes) == {n.name for n in cluster.nodes}  # learned from the follower's status
        assert c.nodes[leader.name] == leader.client_url
        rev = c.put("redirect/k", "v")
        assert c.get_kv("redirect/k") == {
            "key": "redirect/k",
            "value": "v",
            "create_revision": rev,
            "mod_revision": rev,
            "version": 1,
        }
    with pytest.raises(ClientClosed):
        c.get("redirect/k")


def test_status_lists_every_member(client: Client, cluster: Cluster) -> None:
    status = client.status()
    leader = wait_for_leader(cluster)
    assert status["leader"] == leader.name and status["term"] >= 1
    rows = {m["name"]: m for m in status["members"]}
    assert set(rows) == {n.name for n in cluster.nodes}
    for node in cluster.nodes:
        row = rows[node.name]
        assert row["reachable"] and row["client_url"] == node.client_url
        assert row["role"] in ("leader", "follower") and row["applied"] <= row["commit"]


# --- asynchronous calls ---------------------------------------------------------------------------------

ASYNC_WAIT = 10.0  # bound on every future.result() below; a healthy cluster answers in milliseconds


def test_async_calls_return_what_the_blocking_calls_return(client: Client) -> None:
    rev = client.put_async("async/a", {"n": 1}).result(ASYNC_WAIT)
    assert isinstance(rev, int) and rev > 0
    assert client.get_async("async/a").result(ASYNC_WAIT) == {"n": 1}
    assert client.get_kv_async("async/a").result(ASYNC_WAIT) == client.get_kv("async/a")
    assert client.get_async("async/missing").result(ASYNC_WAIT) is None
    wait_until(
        lambda: client.get_async("async/a", serializable=True).result(ASYNC_WAIT) == {"n": 1},
        5.0,
        "an asynchronous serializable read",
    )
    client.put_async("async/b", 2).result(ASYNC_WAIT)
    assert [kv["key"] for kv in client.range_async("async/").result(ASYNC_WAIT).kvs] == ["async/a", "async/b"]
    assert client.delete_async("async/a").result(ASYNC_WAIT) is True
    assert client.delete_async("async/a").result(ASYNC_WAIT) is False
    assert client.delete_prefix_async("async/").result(ASYNC_WAIT) == 1
    with pytest.raises(InvalidRequest, match="key must not be empty"):  # bad arguments: raised at once
        client.put_async("", 1)


def test_cas_async_reports_a_mismatch_as_false(client: Client) -> None:
    client.put("async-cas/k", 1)
    assert client.cas_async("async-cas/k", 2, 3).result(ASYNC_WAIT) is False
    assert client.cas_async("async-cas/k", 1, 3).result(ASYNC_WAIT) is True
    assert client.get("async-cas/k") == 3


def test_many_async_puts_in_flight_from_one_thread(client: Client) -> None:
    futures = [client.put_async(f"async-many/{i:03d}", i) for i in range(200)]
    revisions = [f.result(ASYNC_WAIT) for f in futures]
    assert len(set(revisions)) == 200
    assert revisions == sorted(revisions)  # one session, pipelined in order to one leader
    assert len(client.range("async-many/").kvs) == 200


def test_a_callback_may_start_the_next_async_call(client: Client) -> None:
    """A chain of puts, each started from the previous one's callback (on the client's I/O thread)."""
    chain_length = 50
    finished: queue.Queue[int | BaseException] = queue.Queue()

    def step(i: int) -> None:
        def on_done(fut: Future[int]) -> None:
            try:
                fut.result()
                if i + 1 < chain_length:
                    step(i + 1)
                else:
                    finished.put(i)
            except BaseException as exc:  # reported to the test thread
                finished.put(exc)

        client.put_async(f"async-chain/{i:02d}", i).add_done_callback(on_done)

    step(0)
    assert finished.get(timeout=ASYNC_WAIT) == chain_length - 1
    assert [kv["value"] for kv in client.range_all("async-chain/")] == list(range(chain_length))


def test_async_calls_on_a_closed_client_fail_with_client_closed(cluster: Cluster) -> None:
    c = Client([n.client_url for n in cluster.nodes], timeout=5.0)
    in_flight = [c.put_async(f"async-closed/{i}", i) for i in range(50)]
    c.close()
    for fut in in_flight:  # each one either made it or was failed by close(): none is left hanging
        with contextlib.suppress(ClientClosed):
            fut.result(ASYNC_WAIT)
    for late in (c.put_async("async-closed/late", 1), c.get_async("async-closed/late")):
        with pytest.raises(ClientClosed):
            late.result(ASYNC_WAIT)
    with pytest.raises(ClientClosed):  # the blocking call raises the same
        c.get("async-closed/late")


# --- cluster-ctl ----------------------------------------------------------------------------------------


def ctl(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CTL), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def test_cluster_ctl_put_get_cas_del_status(cluster: Cluster) -> None:
    ep = ["--endpoints", ",".join(n.client_url for n in cluster.nodes)]
    put = ctl(*ep, "-w", "json", "put", "ctl/k", '{"a": [1, 2]}')
    assert put.returncode == 0, put.stderr
    rev = json.loads(put.stdout)["revision"]
    got = ctl(*ep, "-w", "json", "get", "ctl/k")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {
        "key": "ctl/k",
        "value": {"a": [1, 2]},
        "create_revision": rev,
        "mod_revision": rev,
        "version": 1,
    }
    assert ctl(*ep, "put", "ctl/s", "plain text").returncode == 0
    assert ctl(*ep, "get", "ctl/s").stdout == "plain text\n"
    missing = ctl(*ep, "get", "ctl/missing")
    assert missing.returncode == 1 and "key not found" in missing.stderr and missing.stdout == ""
    listed = ctl(*ep, "-w", "json", "get", "ctl/", "--prefix")
    assert [kv["key"] for kv in json.loads(listed.stdout)["kvs"]] == ["ctl/k", "ctl/s"]
    lost = ctl(*ep, "cas", "ctl/s", "other", "new")
    assert lost.returncode == 1 and "cas failed" in lost.stderr
    assert ctl(*ep, "cas", "ctl/s", "plain text", "new").returncode == 0
    deleted = ctl(*ep, "-w", "json", "del", "ctl/", "--prefix")
    assert deleted.returncode == 0 and json.loads(deleted.stdout) == {"deleted": 2}
    status = ctl(*ep, "-w", "json", "status")
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert view["leader"] == wait_for_leader(cluster).name
    assert sorted(m["name"] for m in view["members"]) == ["n1", "n2", "n3"]
    table = ctl(*ep, "status")
    assert table.returncode == 0 and "CLIENT-URL" in table.stdout and "*" in table.stdout


def test_cluster_ctl_exits_3_when_nothing_answers() -> None:
    (port,) = free_ports(1)
    result = ctl("--endpoints", f"tcp://127.0.0.1:{port}", "--timeout", "0.5", "get", "k")
    assert result.returncode == 3 and result.stderr.count("\n") == 1
    # It gave up after the --timeout it was given (not the default), and says so.
    assert "no answer from the cluster within 0.5s" in result.stderr


# --- failures -------------------------------------------------------------------------------------------


def sigkill(node: NodeHandle) -> None:
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)


def test_leader_kill_then_majority_loss() -> None:
    with start_cluster(3) as cluster:
        leader = started(cluster)
        with Client([n.client_url for n in cluster.nodes], timeout=5.0) as c:
            c.put("fo/k", 1)
            sigkill(leader)
            t0 = time.monotonic()
            c.put("fo/k", 2)  # same Client: finds the new leader within its timeout
            failover = time.monotonic() - t0
            print(f"\nfailover: first write after kill -9 of the leader took {failover:.3f}s")
            assert c.get("fo/k") == 2

            sigkill(cluster.alive()[0])  # now 1 of 3 is left: no majority
            for call, error in (
                (lambda: c.put("fo/k", 3, timeout=1.5), OutcomeUnknown),
                (lambda: c.get("fo/k", timeout=1.5), Unavailable),
            ):
                t0 = time.monotonic()
                with pytest.raises(error):
                    call()
                elapsed = time.monotonic() - t0
                assert elapsed < 1.5 + MARGIN, f"{error.__name__} took {elapsed:.2f}s"
            # The same timeouts through the asynchronous calls, both in flight at once.
            t0 = time.monotonic()
            pending: list[tuple[Future[Any], type[NoAnswer]]] = [
                (c.put_async("fo/k", 4, timeout=1.5), OutcomeUnknown),
                (c.get_async("fo/k", timeout=1.5), Unavailable),
            ]
            for fut, expected in pending:
                with pytest.raises(expected):
                    fut.result(1.5 + MARGIN)
            assert time.monotonic() - t0 < 1.5 + MARGIN
            status = c.status(timeout=1.0)  # the survivor still answers for itself
            assert sum(not m["reachable"] for m in status["members"]) == 2


# --- cluster-local --------------------------------------------------------------------------------------


def free_base_port(nodes: int = 3) -> int:
    """A base port whose client (base+i), peer (base+100+i) and HTTP (base+1000+i) ports are all free right
    now (chosen below the usual ephemeral range, so outgoing connections do not take them meanwhile)."""
    for _ in range(50):
        base = random.randrange(20000, 30000)
        ports = [base + i for i in range(1, nodes + 1)]
        ports += [base + PEER_PORT_OFFSET + i for i in range(1, nodes + 1)]
        ports += [base + HTTP_PORT_OFFSET + i for i in range(1, nodes + 1)]
        if not any(port_in_use("127.0.0.1", p) for p in ports):
            return base
    raise AssertionError("no free port range found")


class LocalRun:
    """bin/cluster-local as a subprocess, its output collected line by line by a reader thread."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(LOCAL), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self._queue.empty():
                    break
                continue
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"cluster-local never printed {text!r}; output:\n" + "\n".join(self.lines))

    def node_pids(self) -> list[int]:
        return [int(line.split("(pid ")[1].split(")")[0]) for line in self.lines if "(pid " in line]

    def cleanup(self) -> None:
        """Whatever happened: stop cluster-local, then make sure none of its nodes survive it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self.node_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_cluster_local_starts_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    base = free_base_port()
    run = LocalRun(
        ["--base-port", str(base), "--data-dir", str(tmp_path / "local")]
        + ["--election-timeout-ms", "300", "--heartbeat-ms", "50"]
    )
    try:
        run.wait_for("cluster-local: ready", 30.0)
        endpoints_line = run.wait_for("endpoints:", 5.0)
        endpoints = endpoints_line.split("endpoints:")[1].strip()
        assert endpoints == ",".join(f"tcp://127.0.0.1:{base + i}" for i in (1, 2, 3))
        pages = run.wait_for("status page (any node):", 5.0).split("):")[1].strip().split(", ")
        assert pages == [f"http://127.0.0.1:{base + HTTP_PORT_OFFSET + i}/" for i in (1, 2, 3)]
        with urllib.request.urlopen(pages[0], timeout=5) as page:
            assert page.status == 200 and b'id="members"' in page.read()
        assert len(run.node_pids()) == 3
        assert ctl("--endpoints", endpoints, "put", "hello", "world").returncode == 0
        got = ctl("--endpoints", endpoints, "-w", "json", "get", "hello")
        assert got.returncode == 0 and json.loads(got.stdout)["value"] == "world"
        busy = subprocess.run(
            [sys.executable, str(LOCAL), "--base-port", str(base), "--data-dir", str(tmp_path / "other")],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert busy.returncode == 1 and "is busy" in busy.stderr, busy.stderr
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(30) == 0
        run.wait_for("cluster-local: stopped", 5.0)
        for pid in run.node_pids():  # every node is gone
            assert not _alive(pid)
    finally:
        run.cleanup()


def test_cluster_local_secure_works_out_of_the_box(tmp_path: Path) -> None:
    """--secure makes the keys and prints the exports that let cluster-ctl in; without them, no access."""
    base = free_base_port()
    run = LocalRun(
        ["--secure", "--base-port", str(base), "--data-dir", str(tmp_path / "local")]
        + ["--election-timeout-ms", "300", "--heartbeat-ms", "50"]
    )
    try:
        run.wait_for("cluster-local: ready", 30.0)
        exports = {}
        for var in ("ZRAFT_CURVE_SECRET_KEY", "ZRAFT_SERVER_PUBLIC_KEY"):
            line = run.wait_for(f"export {var}=", 5.0)
            exports[var] = line.split(f"export {var}=", 1)[1].strip()
        endpoints = ",".join(f"tcp://127.0.0.1:{base + i}" for i in (1, 2, 3))
        env = dict(os.environ, **exports)
        put = subprocess.run(
            [sys.executable, str(CTL), "--endpoints", endpoints, "put", "hello", "secure"],
            capture_output=True, text=True, timeout=20, cwd=REPO_ROOT, env=env,
        )  # fmt: skip
        assert put.returncode == 0, put.stderr
        plain = ctl("--endpoints", endpoints, "--timeout", "1.5", "get", "hello")
        assert plain.returncode == 3  # no answer: the nodes refuse plaintext
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(30) == 0
    finally:
        run.cleanup()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
