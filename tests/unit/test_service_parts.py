"""The cluster service's parts without a cluster: the ordered write queue (cluster/service/writes.py), the
event sockets between two services in one process (event_socket.py, events.py), records (records.py) and
ClusterService over the in-memory store (tests/unit/service_fakes.py)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import msgpack
import pytest
import zmq

from cluster.errors import InvalidRequest, Unavailable
from cluster.service import ClusterService, Event
from cluster.service.event_socket import EventEndpoint
from cluster.service.events import Deduper, decode, encode_event
from cluster.service.records import (
    INTP_PROCESS_COUNT,
    INTP_PROCESS_LIST,
    MEMORY_CAPACITY,
    MEMORY_USED,
    NODE_NAME,
    OFFLINE,
    SERVER_PORT,
    STATUS,
    check_update,
    server_record,
)
from cluster.service.writes import QueueFull, ServiceClosed, WriteQueue
from tests.integration.util import wait_until
from tests.unit.service_fakes import FakeStore, ManualClock
from transport.curve import KeyPair, key_text

# --- the write queue -------------------------------------------------------------------------------------


def test_the_queue_retries_the_head_in_order_until_the_cluster_answers() -> None:
    queue = WriteQueue(backoff_start=0.001, backoff_max=0.01)
    done: list[str] = []
    failures = {"a": 3}

    def action(name: str) -> Any:
        def run() -> str:
            if failures.get(name, 0) > 0:
                failures[name] -= 1
                raise Unavailable(name, 1.0, "no quorum")
            done.append(name)
            return name

        return run

    futures = [queue.submit(name, action(name)) for name in "abc"]
    assert queue.pending() == 3
    queue.start()
    assert [f.result(timeout=10) for f in futures] == ["a", "b", "c"]
    assert done == ["a", "b", "c"]  # b and c waited behind a: order kept
    assert queue.pending() == 0 and queue.failed() == [] and queue.completed == 3
    queue.close()


def test_a_definite_failure_fails_its_future_and_is_kept_for_health() -> None:
    queue = WriteQueue()

    def refused() -> None:
        raise InvalidRequest("update", "bad value")

    fut = queue.submit("update X", refused)
    later = queue.submit("update Y", lambda: "y")
    assert queue.run_head() is True and queue.run_head() is True
    with pytest.raises(InvalidRequest):
        fut.result(0)
    assert later.result(0) == "y"
    [(_, what, error)] = queue.failed()
    assert what == "update X" and "bad value" in error


def test_heartbeats_coalesce_while_waiting_and_the_queue_is_bounded() -> None:
    queue = WriteQueue(max_pending=3)
    first = queue.submit("heartbeat a", lambda: 1, coalesce="hb a")
    second = queue.submit("heartbeat a", lambda: 2, coalesce="hb a")
    queue.submit("update a", lambda: 3)
    queue.submit("heartbeat b", lambda: 4, coalesce="hb b")
    assert queue.pending() == 3
    with pytest.raises(QueueFull):
        queue.submit("update c", lambda: 5)
    assert queue.run_head()
    assert first.result(0) == second.result(0) == 2  # the newer heartbeat stands for both


def test_close_fails_what_is_still_pending() -> None:
    queue = WriteQueue()
    fut = queue.submit("register a", lambda: 1)
    queue.close()
    with pytest.raises(ServiceClosed):
        fut.result(0)
    with pytest.raises(ServiceClosed):
        queue.submit("late", lambda: 1)


# --- records -----------------------------------------------------------------------------------------------


def test_updates_may_not_touch_heartbeat_identity_or_status_fields() -> None:
    for field in (STATUS, "CPU_USED", "LATEST_HEARTBEAT", NODE_NAME, INTP_PROCESS_COUNT):
        with pytest.raises(ValueError, match=field):
            check_update("SERVER_META", {field: 1})
    check_update("SERVER_META", {INTP_PROCESS_LIST: ["p1"], "ZONE": "b"})
    with pytest.raises(ValueError):
        check_update("SERVER_META", {INTP_PROCESS_LIST: "p1"})


# --- events between two endpoints ------------------------------------------------------------------------


@pytest.fixture
def endpoints() -> Any:
    sender, receiver = (
        EventEndpoint("sender-token", "127.0.0.1"),
        EventEndpoint("receiver-token", "127.0.0.1"),
    )
    sender.start()
    receiver.start()
    yield sender, receiver
    sender.close()
    receiver.close()


def test_events_arrive_once_in_send_order_and_are_acknowledged(endpoints: Any) -> None:
    sender, receiver = endpoints
    got: list[Event] = []
    receiver.subscribe("NOTE", got.append)
    target = [("SERVER_META/r", receiver.url)]
    results = [sender.send(target, "NOTE", i, 5.0, "SERVER_META/s") for i in range(50)]
    assert all(r.ok and r.acked == ["SERVER_META/r"] for r in results)
    assert [e.payload for e in got] == list(range(50))
    assert {e.sender for e in got} == {"SERVER_META/s"} and len({e.id for e in got}) == 50


def test_a_raising_listener_is_reported_and_the_receiver_goes_on(endpoints: Any) -> None:
    sender, receiver = endpoints
    got: list[Any] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    receiver.subscribe("NOTE", broken)
    receiver.subscribe("NOTE", lambda e: got.append(e.payload))
    result = sender.send([("r", receiver.url)], "NOTE", 1, 5.0, "s")
    assert result.acked == ["r"] and not result.ok
    assert result.errors == {"r": ("RuntimeError: listener bug",)}
    assert sender.send([("r", receiver.url)], "NOTE", 2, 5.0, "s").acked == ["r"]
    assert got == [1, 2] and receiver.listener_errors == 2


def test_a_repeated_or_malformed_message_never_runs_a_listener_twice(endpoints: Any) -> None:
    sender, receiver = endpoints
    got: list[Any] = []
    receiver.subscribe("NOTE", lambda e: got.append(e.payload))
    assert sender.send([("r", receiver.url)], "NOTE", "first", 5.0, "s").ok
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(receiver.url)
    try:
        raw.send(encode_event("sender-token", 1, "s", "NOTE", "replayed"))  # an id already run
        raw.send(b"\x00garbage")
        raw.send(msgpack.packb(["zev1", "ev", "x", -1, "s", "NOTE", 1]))
        raw.send(encode_event("other-token", 1, "s", "NOTE", "new"))
        assert raw.poll(5000)  # only the new event is answered
        assert decode(raw.recv())[1] == "ack"
    finally:
        raw.close()
    assert got == ["first", "new"] and receiver.bad_messages == 2


def test_a_target_that_does_not_answer_is_not_acknowledged_within_the_timeout(endpoints: Any) -> None:
    sender, receiver = endpoints
    silent = zmq.Context.instance().socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        targets = [("r", receiver.url), ("dead", f"tcp://127.0.0.1:{port}"), ("nowhere", None)]
        result = sender.send(targets, "NOTE", 1, 0.5, "s")
    finally:
        silent.close()
    assert result.acked == ["r"]
    assert set(result.not_acked) == {"dead", "nowhere"} and "no ack within" in result.not_acked["dead"]


def test_the_deduper_drops_repeats_and_out_of_order_ids_and_stays_bounded() -> None:
    dedupe = Deduper(limit=2)
    assert dedupe.accept("a", 1) and dedupe.accept("a", 3)
    assert not dedupe.accept("a", 2) and not dedupe.accept("a", 3)
    assert dedupe.accept("b", 1) and dedupe.accept("c", 1)  # "a" is forgotten: the bound holds
    assert dedupe.accept("a", 1) and dedupe.dropped == 2


# --- ClusterService over the in-memory store ----------------------------------------------------------------


@pytest.fixture
def store() -> FakeStore:
    return FakeStore(ManualClock())


def test_idle_server_is_the_online_one_with_most_free_memory_ties_by_name(store: FakeStore) -> None:
    def server(name: str, capacity: int, used: int, status: str = "ONLINE") -> None:
        record = server_record(name, "h", 1, 0.0, None)
        record.update({MEMORY_CAPACITY: capacity, MEMORY_USED: used, STATUS: status})
        store.put(f"SERVER_META/{name}", record)

    server("c", 100, 10)  # 90 free
    server("b", 200, 110)  # 90 free: ties with c, b sorts first
    server("a", 100, 50)
    server("z", 1000, 0, OFFLINE)
    svc = ClusterService(store, monitor=False)  # type: ignore[arg-type]
    try:
        idle = svc.idle_server()
        assert idle is not None and idle[NODE_NAME] == "b"
    finally:
        svc.close()


def test_quorum_loss_shows_in_health_and_queued_writes_complete_after_it(store: FakeStore) -> None:
    svc = ClusterService(store, interval=0.05, timeout=10.0, monitor=False)  # type: ignore[arg-type]
    try:
        svc.register_server("a", "127.0.0.1", 80)
        store.down = True
        health = svc.health()
        assert health["quorum"] is False and "no quorum" in health["quorum_error"]
        fut: Future[Any] = svc.update("server", "a", {INTP_PROCESS_LIST: ["p1", "p2"]}, wait=False)
        wait_until(lambda: svc.health()["retrying"], 10, "the update to wait for the cluster")
        assert svc.health()["pending_writes"] >= 1 and not fut.done()
        store.down = False
        record = fut.result(timeout=10)
        assert record[INTP_PROCESS_COUNT] == 2 and record[SERVER_PORT] == 80
        wait_until(lambda: svc.health()["pending_writes"] == 0, 10, "the queue to drain")
        health = svc.health()
        assert health["quorum"] is True and health["failed_writes"] == []
        assert store.get("SERVER_META/a")[INTP_PROCESS_LIST] == ["p1", "p2"]
    finally:
        svc.close()
    assert store.get("SERVER_META/a") is None  # close() deregisters


def test_a_bare_subscriber_is_reachable_and_a_registration_replaces_its_listener(store: FakeStore) -> None:
    svc = ClusterService(store, monitor=False)  # type: ignore[arg-type]
    other = ClusterService(store, monitor=False)  # type: ignore[arg-type]
    got = threading.Event()
    try:
        svc.subscribe("NOTE", lambda e: got.set())
        svc.wait_registered()
        assert [name for name, _ in other.live()][0].startswith("LISTENER/")
        assert other.broadcast("NOTE", 1).ok and got.is_set()
        svc.register_server("a", "127.0.0.1", 80)
        svc.wait_registered()
        assert [name for name, _ in other.live()] == ["SERVER_META/a"]
        assert other.unicast("a", "NOTE", 2).acked == ["SERVER_META/a"]
        assert other.unicast("b", "NOTE", 2).not_acked == {"b": "not live"}
    finally:
        svc.close()
        other.close()


class _Keyed:
    """The same store seen through a client with (or without) a CURVE keypair."""

    def __init__(self, store: FakeStore, pair: KeyPair | None) -> None:
        self._store = store
        self.curve_keypair = pair

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_services_with_client_keys_send_events_over_curve_and_never_in_plaintext(store: FakeStore) -> None:
    pair = KeyPair(*zmq.curve_keypair())
    secure = ClusterService(_Keyed(store, pair), monitor=False)  # type: ignore[arg-type]
    other = ClusterService(_Keyed(store, pair), monitor=False)  # type: ignore[arg-type]
    plain = ClusterService(_Keyed(store, None), monitor=False)  # type: ignore[arg-type]
    got: list[Any] = []
    try:
        secure.subscribe("NOTE", lambda e: got.append(e.payload))
        secure.register_server("a", "127.0.0.1", 80)
        secure.wait_registered()
        alive = dict(other.live())["SERVER_META/a"]
        assert alive["events_key"] == key_text(pair.public)  # advertised beside the address
        assert other.unicast("a", "NOTE", 1).acked == ["SERVER_META/a"]
        assert plain.unicast("a", "NOTE", 2, timeout=0.5).not_acked  # plaintext cannot reach it
        plain.register_server("b", "127.0.0.1", 81)
        plain.wait_registered()
        assert other.unicast("b", "NOTE", 3).not_acked == {
            "SERVER_META/b": "no CURVE key for its event address"
        }
        assert got == [1]
    finally:
        for svc in (secure, other, plain):
            svc.close()


def test_a_second_service_registering_the_same_id_takes_it_over_and_the_first_stops(
    store: FakeStore,
) -> None:
    first = ClusterService(store, interval=0.05, timeout=10.0, monitor=False)  # type: ignore[arg-type]
    second = ClusterService(store, interval=0.05, timeout=10.0, monitor=False)  # type: ignore[arg-type]
    try:
        first.register_server("a", "127.0.0.1", 80)
        second.register_server("a", "127.0.0.1", 81)
        wait_until(lambda: first.taken_over() == ["SERVER_META/a"], 10, "the first to see the takeover")
        assert second.taken_over() == [] and store.get("SERVER_META/a")[SERVER_PORT] == 81
        # The heartbeat that learned of the takeover is reported as failed by the writes thread just after.
        wait_until(lambda: bool(first.health()["failed_writes"]), 10, "the failed heartbeat to be reported")
        assert "taken over" in first.health()["failed_writes"][0][2]
        first.close()  # does not delete the record it lost
        assert store.get("SERVER_META/a")[SERVER_PORT] == 81
    finally:
        first.close()
        second.close()


def test_the_service_layer_only_looks_down_to_the_client() -> None:
    """DESIGN.md: cluster/service -> cluster/client; never the node, the KV, storage or actors directly."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "cluster" / "service"
    allowed = ("cluster.client", "cluster.errors", "cluster.service")
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for module in modules:
                if module.split(".")[0] in ("cluster", "actors", "transport"):
                    assert module.startswith(allowed), f"{path.name} imports {module}"
