"""The blocking Client's direct path (cluster/client/io_thread.py, "Who runs the loop"): a call made while the
client is idle runs on its caller's thread, which also sends and ends the blocking calls made meanwhile;
an asynchronous call or close() moves the loop to the I/O thread without losing any call. Against node
doubles in this process: each a ROUTER on a free loopback port, served by a thread, answering as a
leader, redirecting as a follower, dropping requests (silent) or holding them until released."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from typing import Any

import msgpack
import pytest
import zmq

from actors.messages import ClientRequest, ClientResponse, RequestKind, Status
from cluster import Client, ClientClosed
from cluster.client import io_thread
from cluster.client.commands import SESSION_HOOKS
from cluster.client.io_thread import ClientLoop
from cluster.errors import OutcomeUnknown, Unavailable
from cluster.kv import ops as kv
from tests.integration.util import wait_until
from transport import codec

WAIT = 10.0  # bound of every wait for something the threads do


class NodeDouble:
    """A client port that answers like a node (probes, session registration, puts with increasing
    revisions, reads of an absent key) as `mode` says: "leader" answers, "follower" redirects to
    `leader_hint`, "silent" drops, "hold" keeps requests until release()."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "leader"
        self.leader_hint = ""
        self.peers: dict[str, str] = {}  # every double's name -> URL, for the probe answers
        self.received: list[ClientRequest] = []  # every request but probes, in arrival order
        self._held: list[tuple[bytes, ClientRequest]] = []
        self._revision = 0
        self._lock = threading.Lock()
        self._ctx = zmq.Context()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self.url = f"tcp://127.0.0.1:{self._router.bind_to_random_port('tcp://127.0.0.1')}"
        self._control_in = self._ctx.socket(zmq.PAIR)
        self._control_in.bind(f"inproc://double-{id(self)}")
        self._control = self._ctx.socket(zmq.PAIR)
        self._control.connect(f"inproc://double-{id(self)}")
        self._control_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def writes(self) -> list[ClientRequest]:
        with self._lock:
            return [r for r in self.received if r.kind == RequestKind.WRITE]

    def release(self) -> None:
        """Answer the held requests and stop holding."""
        with self._control_lock:
            self._control.send(b"release")

    def answer_last(self) -> None:
        """Answer the newest held request, and go on holding."""
        with self._control_lock:
            self._control.send(b"last")

    def stop(self) -> None:
        with self._control_lock:
            self._control.send(b"stop")
            self._thread.join(WAIT)
            self._control.close()
        self._ctx.term()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._control_in, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if self._control_in in events:
                    command = self._control_in.recv()
                    if command == b"stop":
                        return
                    with self._lock:
                        if command == b"last":
                            held = [self._held.pop()]
                        else:
                            held, self._held = self._held, []
                            self.mode = "leader"
                    for identity, request in held:
                        self._answer(identity, request)
                if self._router in events:
                    identity, frame = self._router.recv_multipart()
                    for request in codec.decode_frame(frame):
                        assert isinstance(request, ClientRequest)
                        self._take(identity, request)
        finally:
            self._router.close()
            self._control_in.close()

    def _take(self, identity: bytes, request: ClientRequest) -> None:
        probe = request.kind == RequestKind.STATUS
        with self._lock:
            mode = self.mode
            if not probe:
                self.received.append(request)
            if mode == "hold" and not probe:
                self._held.append((identity, request))
                return
        if mode != "silent":
            self._answer(identity, request)

    def _answer(self, identity: bytes, request: ClientRequest) -> None:
        status, result = Status.OK, b""
        if request.kind == RequestKind.STATUS:
            result = msgpack.packb(
                {"id": self.name, "members": sorted(self.peers), "client_urls": self.peers}
            )
        elif self.mode == "follower":
            status = Status.NOT_LEADER
        elif request.payload == SESSION_HOOKS.open_command:
            result = kv.pack({"ok": True, "session": 1, "ttl_ms": 600_000})
        elif request.kind == RequestKind.WRITE:
            with self._lock:
                self._revision += 1
                result = kv.pack({"ok": True, "rev": self._revision})
        else:
            result = kv.pack({"ok": True, "kv": None})
        hint = self.leader_hint if status == Status.NOT_LEADER else self.name
        answer = ClientResponse(self.name, request.src, request.req_id, status, result, hint)
        self._router.send_multipart([identity, codec.encode_batch([answer])])


@contextmanager
def doubles(*names: str) -> Iterator[list[NodeDouble]]:
    with ExitStack() as stack:
        nodes = []
        for name in names:
            node = NodeDouble(name)
            stack.callback(node.stop)
            nodes.append(node)
        for node in nodes:
            node.peers = {n.name: n.url for n in nodes}
        yield nodes


def runner(client: Client) -> int | None:
    """Who drives the client's loop now: a caller's thread ident, 0 for the I/O thread, None for nobody."""
    loop: ClientLoop = client._loop
    with loop._lock:
        return loop._runner


def idle(client: Client) -> bool:
    """Nobody drives the loop and a blocking call would run on its caller's thread (no call found the
    loop busy in the last _BUSY_WINDOW)."""
    loop: ClientLoop = client._loop
    with loop._lock:
        return loop._runner is None and time.monotonic() >= loop._busy_until


def in_thread(call: Any) -> tuple[threading.Thread, Future[Any]]:
    """Run call() in a new thread; its result or exception lands in the future."""
    out: Future[Any] = Future()

    def body() -> None:
        try:
            out.set_result(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test through the future
            out.set_exception(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def hold_a_direct_put(
    node: Any, client: Client, key: str, value: int
) -> tuple[threading.Thread, Future[Any]]:
    """Once the client is idle, make the node hold its answers and start a blocking put in a new thread;
    returns once the node holds that put."""
    wait_until(lambda: idle(client), WAIT, "the I/O thread to park")
    node.mode = "hold"
    thread, put = in_thread(lambda: client.put(key, value))
    wait_until(lambda: node.held() == 1, WAIT, "the put to reach the node")
    return thread, put


def test_a_lone_call_runs_on_its_callers_thread_and_leaves_the_io_thread_parked() -> None:
    with doubles("n1") as [node], Client([node.url], timeout=WAIT) as client:
        assert client.put("a", 1) == 1  # the session registration, then the put
        thread, put = hold_a_direct_put(node, client, "b", 2)
        assert runner(client) == thread.ident  # the caller sent it and waits for the answer itself
        node.release()
        assert put.result(WAIT) == 2
        assert runner(client) is None  # given back with nothing in flight: no hand-over to the I/O thread
        assert client.get("a") is None  # the double stores nothing; a read also goes direct
        assert runner(client) is None


def test_a_second_caller_moves_the_loop_to_the_io_thread_and_every_call_is_answered() -> None:
    with doubles("n1") as [node], Client([node.url], timeout=WAIT) as client:
        client.put("warm", 0)
        first, first_put = hold_a_direct_put(node, client, "a", 1)
        assert runner(client) == first.ident
        _, second_put = in_thread(lambda: client.put("b", 2))
        callback_threads: list[str] = []
        third = client.put_async("c", 3)
        third.add_done_callback(lambda _f: callback_threads.append(threading.current_thread().name))
        wait_until(lambda: node.held() == 3, WAIT, "the I/O thread to send the other two")
        assert runner(client) == 0  # the first caller handed the loop over and waits like any other
        node.release()
        revisions = {first_put.result(WAIT), second_put.result(WAIT), third.result(WAIT)}
        assert revisions == {2, 3, 4}  # each answered once, with its own revision
        wait_until(lambda: callback_threads, WAIT, "the async call's callback")
        assert callback_threads == [f"zraft-{client.client_id}"]  # callbacks never run on a caller's thread
        wait_until(lambda: idle(client), WAIT, "the I/O thread to park again")
        assert client.put("d", 4) == 5
        sessions_and_seqs = [kv.parse_command(w.payload)[:2] for w in node.writes()[1:]]
        assert sorted(sessions_and_seqs) == [(1, seq) for seq in range(1, 6)]  # one session, no seq twice


def test_a_direct_caller_sends_and_ends_other_blocking_calls_until_its_own_ends() -> None:
    with doubles("n1") as [node], Client([node.url], timeout=WAIT) as client:
        client.put("warm", 0)
        first, first_put = hold_a_direct_put(node, client, "a", 1)
        second, second_put = in_thread(lambda: client.get("a"))
        wait_until(lambda: node.held() == 2, WAIT, "the second call to reach the node")
        assert runner(client) == first.ident  # sent by the first caller, still running the loop
        node.answer_last()
        assert second_put.result(WAIT) is None  # ended in the first caller's turn
        assert not first_put.done() and runner(client) == first.ident
        node.release()
        assert first_put.result(WAIT) == 2
        assert runner(client) is None


def test_after_calls_overlapped_the_next_ones_go_through_the_io_thread_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(io_thread, "_BUSY_WINDOW", 60.0)  # "a while" outlasts the test
    with doubles("n1") as [node], Client([node.url], timeout=WAIT) as client:
        client.put("warm", 0)
        wait_until(lambda: runner(client) is None, WAIT, "the I/O thread to park")
        client._loop._busy_until = 0.0  # forget the constructor's own overlap
        node.mode = "hold"
        first, first_put = in_thread(lambda: client.put("a", 1))
        wait_until(lambda: node.held() == 1, WAIT, "the first put to reach the node")
        _, second_put = in_thread(lambda: client.put("b", 2))  # finds the loop busy
        wait_until(lambda: node.held() == 2, WAIT, "the second put to reach the node")
        node.release()
        assert {first_put.result(WAIT), second_put.result(WAIT)} == {2, 3}
        wait_until(lambda: runner(client) is None, WAIT, "the I/O thread to park")
        node.mode = "hold"
        third, third_put = in_thread(lambda: client.put("c", 3))
        wait_until(lambda: node.held() == 1, WAIT, "the third put to reach the node")
        assert runner(client) == 0  # queued to the I/O thread, which batches concurrent callers
        node.release()
        assert third_put.result(WAIT) == 4


def test_a_direct_call_times_out_as_a_queued_one_does_and_the_client_goes_on() -> None:
    with doubles("n1") as [node], Client([node.url], timeout=WAIT, attempt_timeout=0.1) as client:
        client.put("warm", 0)
        wait_until(lambda: idle(client), WAIT, "the I/O thread to park")
        node.mode = "silent"
        with pytest.raises(OutcomeUnknown):  # sent, unanswered: it may have been applied
            client.put("k", 1, timeout=1.0)
        attempts = [w for w in node.writes() if kv.parse_command(w.payload)[3] == ["put", "k", 1]]
        assert len(attempts) >= 2  # retried on the attempt timer while the caller waited
        assert len({w.payload for w in attempts}) == 1  # every attempt with the same session and seq
        with pytest.raises(Unavailable):
            client.get("k", timeout=0.3)
        assert runner(client) is None
        node.mode = "leader"
        assert client.put("k", 1) == 2
        assert runner(client) is None


def test_a_write_whose_leader_goes_silent_is_retried_at_the_next_on_the_callers_thread() -> None:
    with doubles("n1", "n2") as [n1, n2], Client([n1.url, n2.url], timeout=WAIT, attempt_timeout=0.2) as c:
        n2.mode, n2.leader_hint = "follower", "n1"
        assert c.put("a", 1) == 1  # redirected to n1 if it went to n2 first: n1 is the leader now
        wait_until(lambda: idle(c), WAIT, "the I/O thread to park")
        n1.mode, n2.mode = "silent", "leader"
        thread, put = in_thread(lambda: c.put("b", 2))
        assert put.result(WAIT) == 1  # n2's first revision
        thread.join(WAIT)
        at_n1, at_n2 = (
            [w for w in n.writes() if kv.parse_command(w.payload)[3] == ["put", "b", 2]] for n in (n1, n2)
        )
        assert at_n1 and at_n2  # tried at the leader it knew, then at the other
        assert len({w.payload for w in at_n1 + at_n2}) == 1  # the same session and seq: applied at most once
        assert runner(c) is None


def test_close_while_a_direct_caller_waits_ends_its_call_with_client_closed() -> None:
    with doubles("n1") as [node]:
        client = Client([node.url], timeout=WAIT)
        client.put("warm", 0)
        thread, put = hold_a_direct_put(node, client, "a", 1)
        assert runner(client) == thread.ident
        client.close()
        with pytest.raises(ClientClosed):
            put.result(WAIT)
        thread.join(WAIT)
        assert not client._loop._thread.is_alive()
        with pytest.raises(ClientClosed):
            client.put("b", 2)


def test_close_of_an_idle_client_wakes_its_parked_io_thread() -> None:
    with doubles("n1") as [node]:
        client = Client([node.url], timeout=WAIT)
        client.put("warm", 0)
        wait_until(lambda: idle(client), WAIT, "the I/O thread to park")
        client.close()
        assert not client._loop._thread.is_alive()
        with pytest.raises(ClientClosed):
            client.get("warm")
