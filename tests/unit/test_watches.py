"""Watches without sockets: the history ring (cluster/kv/history.py), the node's registry and its flow
control (cluster/kv/watches.py), and the client's WatchFollower (cluster/client/watching.py) resuming
across replicas without gaps or duplicates."""

from __future__ import annotations

from itertools import count
from typing import Any

import msgpack
import pytest

from actors.messages import ClientRequest, ClientResponse, RequestKind, Status
from cluster.client.watching import FollowerOptions, WatchFollower
from cluster.errors import Compacted, InvalidRequest, WatchCancelled
from cluster.kv.history import History
from cluster.kv.machine import KVStateMachine, encode_command
from cluster.kv.watches import WatchOptions, WatchRegistry, encode_watch, parse_watch


class Replica:
    """A state machine with a watch registry, as one node holds them; frames go to `sent`."""

    def __init__(self, name: str = "n1", options: WatchOptions | None = None, **sm: int) -> None:
        self.sm = KVStateMachine(**sm)
        self.sent: list[tuple[str, ClientResponse]] = []
        self.index = 0
        self.registry: WatchRegistry[str] = WatchRegistry(
            name, lambda: self.sm.history, lambda: self.sm.revision, self._send, options
        )

    def _send(self, conn: str, response: ClientResponse) -> None:
        self.sent.append((conn, response))

    def apply(self, *op: Any) -> None:
        self.index += 1
        self.sm.apply(self.index, encode_command(0, 0, 0, list(op)))

    def watch(
        self,
        key: str,
        prefix: bool = True,
        start: int = 0,
        window: int = 100,
        req_id: int = 1,
        prev_kv: bool = False,
    ) -> None:
        payload = encode_watch(key, prefix, start, window, prev_kv)
        req = ClientRequest("c", "n1", req_id, RequestKind.WATCH, payload)
        self.registry.open(req, "conn", parse_watch(payload))

    def take(self) -> list[ClientResponse]:
        out = [r for _, r in self.sent]
        self.sent.clear()
        return out


def frames(responses: list[ClientResponse]) -> list[list[Any]]:
    assert all(r.status == Status.STREAM for r in responses), responses
    return [msgpack.unpackb(r.result) for r in responses]


def events_of(responses: list[ClientResponse]) -> list[tuple[str, str, int]]:
    return [(e["type"], e["key"], e["revision"]) for f in frames(responses) for e in f[2]]


# --- the history ring -------------------------------------------------------------------------------


def test_history_records_every_change_and_one_revision_per_del_prefix() -> None:
    r = Replica()
    r.apply("put", "a/1", 1)
    r.apply("put", "a/2", 2)
    r.apply("put", "a/1", 3)
    r.apply("del_prefix", "a/")
    r.apply("del", "nothing")  # no change, no event
    h = r.sm.history
    got = [msgpack.unpackb(h.at(s).data) for s in range(h.first_seq, h.next_seq)]
    assert [(e["type"], e["key"], e["revision"], e["version"], e["create_revision"]) for e in got] == [
        ("PUT", "a/1", 1, 1, 1),
        ("PUT", "a/2", 2, 1, 2),
        ("PUT", "a/1", 3, 2, 1),
        ("DELETE", "a/1", 4, 0, 0),  # del_prefix: one revision, one event per key, in key order
        ("DELETE", "a/2", 4, 0, 0),
    ]
    assert h.compact_revision == 0


def test_history_drops_whole_revisions_and_reports_the_compact_revision() -> None:
    h = History(max_events=3, max_bytes=1 << 20)
    h.record(1, "a", ("x", 1, 1, 1))
    h.record(2, "a", None)
    h.record(2, "b", None)
    h.record(3, "c", ("y", 3, 3, 1))
    assert h.compact_revision == 1 and len(h) == 3
    h.record(4, "d", ("z", 4, 4, 1))  # drops one event of revision 2, so all of revision 2 goes
    assert h.compact_revision == 2
    assert [h.at(s).revision for s in range(h.first_seq, h.next_seq)] == [3, 4]
    h2 = History(max_events=100, max_bytes=60)
    for rev in range(1, 10):
        h2.record(rev, "k", ("v" * 10, 1, rev, rev))
    assert h2.size <= 60 and h2.compact_revision > 0


def test_restore_from_a_snapshot_starts_the_window_at_its_revision() -> None:
    r = Replica()
    for i in range(5):
        r.apply("put", f"k{i}", i)
    data = r.sm.snapshot()
    other = Replica()
    other.sm.restore(data)
    assert other.sm.history.compact_revision == 5 and len(other.sm.history) == 0
    other.watch("k", start=3)
    [end] = other.take()
    assert end.status == Status.WATCH_COMPACTED
    assert msgpack.unpackb(end.result)["compact_revision"] == 5


# --- the registry -----------------------------------------------------------------------------------


def test_watch_from_a_revision_replays_then_goes_live_in_order() -> None:
    r = Replica()
    r.apply("put", "a/1", 1)
    r.apply("put", "b/1", 1)
    r.apply("put", "a/2", 2)
    r.watch("a/", start=2)
    r.registry.pump(0.0)
    assert events_of(r.take()) == [("PUT", "a/2", 3)]
    r.apply("del_prefix", "a/")
    r.registry.pump(0.1)
    out = r.take()
    assert events_of(out) == [("DELETE", "a/1", 4), ("DELETE", "a/2", 4)]
    assert frames(out)[-1][1] == 4  # complete through revision 4


def test_a_key_watch_sees_only_that_key() -> None:
    r = Replica()
    r.watch("a", prefix=False)
    r.apply("put", "a", 1)
    r.apply("put", "ab", 1)
    r.registry.pump(0.0)
    assert events_of(r.take()) == [("PUT", "a", 1)]


def test_progress_notifications_carry_the_revision_when_nothing_matches() -> None:
    r = Replica(options=WatchOptions(progress_interval=1.0))
    r.watch("a/")
    assert frames(r.take()) == [[0, 0, []]]  # opened: complete through revision 0
    r.registry.pump(0.0)
    assert r.take() == []
    r.apply("put", "b", 1)
    r.registry.pump(0.5)
    assert r.take() == []  # not yet due
    r.registry.pump(1.0)
    assert frames(r.take()) == [[1, 1, []]]


def test_credit_limits_unacknowledged_events_and_a_slow_watcher_is_ended_not_buffered() -> None:
    r = Replica(history_events=10)
    r.watch("k", window=3)
    for i in range(5):
        r.apply("put", f"k{i}", i)
    r.registry.pump(0.0)
    got = events_of(r.take())
    assert [e[1] for e in got] == ["k0", "k1", "k2"]
    r.registry.pump(0.1)
    assert r.take() == []  # no credit left
    r.registry.ack("conn", 1, 2)  # consumed 2 of the 3 so far
    r.registry.ack("conn", 1, 1)  # an older ack, arriving late, takes nothing back
    r.registry.pump(0.2)
    assert [e[1] for e in events_of(r.take())] == ["k3", "k4"]
    for i in range(20):  # the watcher does not acknowledge: it falls out of the 10-event window
        r.apply("put", f"k{i}", i)
        r.registry.pump(0.3)
    out = r.take()
    assert out[-1].status == Status.WATCH_COMPACTED
    assert "fell behind" in msgpack.unpackb(out[-1].result)["reason"]
    assert len(r.registry) == 0


def test_many_streams_of_one_prefix_each_get_their_own_events_frames_and_credit() -> None:
    """Streams at the same place share one encoding of their events (the fan-out case); the ones whose
    credit, filter, start or prev_kv differ still get exactly their own."""
    r = Replica()
    for stream in range(1, 6):
        r.watch("k", req_id=stream)  # five alike
    r.watch("k", window=1, req_id=6)
    r.watch("k1", prefix=False, req_id=7)
    r.watch("k", req_id=8, prev_kv=True)
    r.take()
    for i in range(3):
        r.apply("put", f"k{i}", i)
    r.apply("put", "k1", 9)
    r.watch("k", start=3, req_id=9)  # from revision 3: the same place in the history, a later start
    r.watch("k", req_id=10)  # from now (revision 5 on)
    r.registry.pump(0.0)
    by_stream: dict[int, list[Any]] = {}
    for response in r.take():
        by_stream.setdefault(response.req_id, []).append(msgpack.unpackb(response.result))
    keys = {s: [e["key"] for f in fs for e in f[2]] for s, fs in by_stream.items()}
    assert all(keys[s] == ["k0", "k1", "k2", "k1"] for s in range(1, 6))
    assert keys[6] == ["k0"] and keys[7] == ["k1", "k1"] and keys[8] == ["k0", "k1", "k2", "k1"]
    assert keys[9] == ["k2", "k1"] and keys[10] == []
    r.apply("put", "k3", 3)  # revision 5: every stream now shares its place and start
    r.registry.ack("conn", 6, 1)
    r.registry.pump(0.05)
    later = {resp.req_id: msgpack.unpackb(resp.result)[2] for resp in r.take()}
    assert all([e["key"] for e in later[s]] == ["k3"] for s in (1, 2, 3, 4, 5, 8, 9, 10)) and 7 not in later
    assert [e["key"] for e in later[6]] == ["k1"]  # its credit still limits it to the next one
    assert all(f[0] == 1 and f[1] == 4 for s in range(1, 6) for f in by_stream[s])  # frame 1, through 4
    assert by_stream[6][0][1] == 1  # held back by its credit: complete through revision 1 only
    assert [e["prev"] for e in by_stream[8][0][2]] == [None, None, None, 1] and "prev" not in by_stream[1][0][
        2
    ][0]
    r.registry.pump(0.1)
    assert r.take() == []  # nothing new, nothing due
    r.registry.ack("conn", 6, 2)
    r.registry.pump(0.2)
    assert [[e["key"] for e in f[2]] for f in frames(r.take())] == [["k2"]]


def test_watch_older_than_the_window_is_compacted() -> None:
    r = Replica(history_events=2)
    for i in range(5):
        r.apply("put", "k", i)
    r.watch("k", start=2)
    [end] = r.take()
    assert end.status == Status.WATCH_COMPACTED and msgpack.unpackb(end.result)["compact_revision"] == 3
    r.watch("k", start=4)
    assert frames(r.take()) == [[0, 3, []]]


def test_registry_bound_cancel_and_idle_streams() -> None:
    r = Replica(options=WatchOptions(max_watches=2, progress_interval=1.0, idle_timeout=5.0))
    r.watch("a", req_id=1)
    r.watch("a", req_id=2)
    r.take()
    r.watch("a", req_id=3)
    [refused] = r.take()
    assert refused.status == Status.WATCH_CANCELLED and b"too many watches" in refused.result
    r.registry.cancel("conn", 1)
    [cancelled] = r.take()
    assert cancelled.status == Status.WATCH_CANCELLED and cancelled.req_id == 1
    assert len(r.registry) == 1
    r.registry.pump(0.0)
    r.registry.pump(6.0)  # stream 2 never acknowledged nor kept alive: dropped
    assert len(r.registry) == 0


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",
        msgpack.packb({"key": "", "prefix": False, "start": 0, "window": 1}),
        msgpack.packb({"key": "a", "prefix": 1, "start": 0, "window": 1}),
        msgpack.packb({"key": "a", "prefix": True, "start": -1, "window": 1}),
        msgpack.packb({"key": "a", "prefix": True, "start": 0, "window": 0}),
        msgpack.packb({"key": "a" * 2000, "prefix": True, "start": 0, "window": 1}),
        msgpack.packb(["a", True, 0, 1]),
    ],
)
def test_bad_watch_requests_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_watch(payload)


# --- the client's follower --------------------------------------------------------------------------


class Pair:
    """Two replicas applying the same changes (n2 may lag), and a follower watching through them."""

    def __init__(self, window: int = 100, prev_kv: bool = False) -> None:
        self.replicas = {"n1": Replica("n1"), "n2": Replica("n2")}
        ids = count(1)
        options = FollowerOptions(window=window, prev_kv=prev_kv)
        self.follower = WatchFollower("c", ("n1", "n2"), "k", True, 0, lambda: next(ids), options)
        self.delivered: list[tuple[str, str, int]] = []
        self.prevs: list[Any] = []
        self.now = 0.0

    def deliver(self, node: str, lose: bool = False) -> None:
        replica = self.replicas[node]
        replica.registry.pump(self.now)
        for response in replica.take():
            if lose:
                continue
            for e in self.follower.on_response(response, self.now):
                self.delivered.append((e["type"], e["key"], e["revision"]))
                if "prev" in e:
                    self.prevs.append(e["prev"])
        self.follower.consumed(self.follower.queued)
        self.follower.tick(self.now)
        self.route()

    def route(self) -> None:
        for req in self.follower.take_messages():
            replica = self.replicas[req.dst]
            if req.kind == RequestKind.WATCH:
                replica.registry.open(req, "conn", parse_watch(req.payload))
            elif req.kind == RequestKind.WATCH_ACK:
                stream, n = msgpack.unpackb(req.payload)  # a total: n consumed so far
                replica.registry.ack("conn", stream, n)
            else:
                replica.registry.cancel("conn", msgpack.unpackb(req.payload))


def test_follower_resumes_on_another_node_without_gaps_or_duplicates() -> None:
    p = Pair()
    n1, n2 = p.replicas["n1"], p.replicas["n2"]
    p.follower.begin(0.0)
    p.route()
    for i in range(3):
        n1.apply("put", f"k{i}", i)
    p.deliver("n1")
    for i in range(3):
        n2.apply("put", f"k{i}", i)  # n2 catches up on the same log
    n1.apply("put", "k9", 9)  # n1 applies revision 4, its frame is lost with the node
    p.deliver("n1", lose=True)
    p.now = 10.0
    p.follower.tick(p.now)  # silent too long: resume on n2 from revision 4
    p.route()
    assert p.follower.target == "n2"
    p.deliver("n2")
    n2.apply("put", "k9", 9)
    n2.apply("del_prefix", "k")
    p.deliver("n2")
    assert p.delivered == [
        ("PUT", "k0", 1),
        ("PUT", "k1", 2),
        ("PUT", "k2", 3),
        ("PUT", "k9", 4),
        ("DELETE", "k0", 5),
        ("DELETE", "k1", 5),
        ("DELETE", "k2", 5),
        ("DELETE", "k9", 5),
    ]


def test_follower_resumes_when_a_frame_is_missing() -> None:
    p = Pair()
    n1 = p.replicas["n1"]
    p.follower.begin(0.0)
    p.route()
    p.deliver("n1")
    n1.apply("put", "k1", 1)
    p.deliver("n1", lose=True)  # lost frame
    n1.apply("put", "k2", 2)
    p.deliver("n1")  # frame 2 arrives: gap seen, resume on n2 from revision 1
    assert p.follower.target == "n2" and p.delivered == []
    n2 = p.replicas["n2"]
    n2.apply("put", "k1", 1)
    n2.apply("put", "k2", 2)
    p.deliver("n2")
    assert p.delivered == [("PUT", "k1", 1), ("PUT", "k2", 2)]


def test_follower_ends_with_the_node_s_reason() -> None:
    p = Pair()
    p.replicas["n1"].sm.restore(KVStateMachine().snapshot())
    p.follower = WatchFollower("c", ("n1",), "k", True, 0, lambda: 7)
    p.follower.begin(0.0)
    p.route()
    p.deliver("n1")
    p.replicas["n1"].sm.history.reset(9)
    p.deliver("n1")
    assert isinstance(p.follower.ended, Compacted) and p.follower.ended.compact_revision == 9
    bad = ClientResponse("n1", "c", 7, Status.BAD_REQUEST, b"no", "")
    f = WatchFollower("c", ("n1",), "k", True, 0, lambda: 7)
    f.begin(0.0)
    f.take_messages()
    f.on_response(bad, 0.0)
    assert isinstance(f.ended, InvalidRequest)
    g = WatchFollower("c", ("n1",), "k", True, 0, lambda: 7)
    g.begin(0.0)
    g.close()
    assert isinstance(g.ended, WatchCancelled)
    assert [m.kind for m in g.take_messages()] == [RequestKind.WATCH, RequestKind.WATCH_CANCEL]


# --- the caller's Watch ----------------------------------------------------------------------------


def test_watch_iterator_reports_consumption_ends_with_the_error_and_stops_when_closed() -> None:
    from cluster.client.watch import Watch

    w = Watch("k", True, window=4)
    consumed: list[int] = []
    closed: list[bool] = []
    w.on_consumed = consumed.append
    w.on_close = lambda: closed.append(True)
    assert w.next(0.0) is None
    w.deliver([{"key": "k1"}, {"key": "k2"}], 7)
    assert w.revision == 7
    assert next(w) == {"key": "k1"}  # window 4: consumption reported per event (window // 4)
    assert next(w) == {"key": "k2"}
    assert consumed == [1, 1]
    w.end(Compacted(3, "gone"))
    with pytest.raises(Compacted):
        next(w)
    v = Watch("k", True, window=100)
    v.on_close = lambda: closed.append(True)
    v.deliver([{"key": "a"}], 1)
    v.close()
    v.close()
    assert closed == [True]
    with pytest.raises(StopIteration):
        next(v)
    v.end(WatchCancelled("closed by the client"))  # the node's answer to our cancel is no error
    assert list(v) == []


def test_a_revision_split_over_frames_resumes_from_that_revision_without_repeating_its_keys() -> None:
    p = Pair(window=2)
    n1, n2 = p.replicas["n1"], p.replicas["n2"]
    for r in (n1, n2):
        for i in range(4):
            r.apply("put", f"k{i}", i)
    p.follower = WatchFollower(
        "c", ("n1", "n2"), "k", True, 5, iter(range(1, 99)).__next__, FollowerOptions(window=2)
    )
    p.follower.begin(0.0)
    p.route()
    p.deliver("n1")
    for r in (n1, n2):
        r.apply("del_prefix", "k")  # revision 5: four DELETE events, more than the window of 2
    n1.registry.pump(0.0)
    for response in n1.take():  # only the first two reach the client; then n1 is gone
        for e in p.follower.on_response(response, 0.0):
            p.delivered.append((e["type"], e["key"], e["revision"]))
    assert p.delivered == [("DELETE", "k0", 5), ("DELETE", "k1", 5)]
    assert p.follower.through == 4  # revision 5 is not complete yet
    p.now = 10.0
    p.follower.tick(p.now)  # silent: resume on n2 from revision 5, skipping k0 and k1
    p.route()
    for _ in range(4):
        p.deliver("n2")
    assert p.delivered == [("DELETE", f"k{i}", 5) for i in range(4)]
    assert p.follower.through == 5


# --- prev_kv: the previous value on request ----------------------------------------------------------


def test_events_carry_the_previous_value_only_when_the_watch_asks_for_it() -> None:
    r = Replica()
    r.apply("put", "a/x", 1)
    r.apply("put", "a/x", {"n": 2})  # an overwrite
    r.apply("put", "a/y", None)  # a stored None
    r.apply("del", "a/x")
    r.apply("put", "a/x", 3)  # created again
    r.apply("del_prefix", "a/")  # one revision, a DELETE per key, each with its own previous value
    r.watch("a/", start=1, prev_kv=True, req_id=1)
    r.watch("a/", start=1, req_id=2)
    r.registry.pump(0.0)
    by_stream: dict[int, list[dict[str, Any]]] = {}
    for response in r.take():
        by_stream.setdefault(response.req_id, []).extend(msgpack.unpackb(response.result)[2])
    with_prev, plain = by_stream[1], by_stream[2]
    assert [(e["type"], e["key"], e["revision"], e["prev"]) for e in with_prev] == [
        ("PUT", "a/x", 1, None),
        ("PUT", "a/x", 2, 1),
        ("PUT", "a/y", 3, None),
        ("DELETE", "a/x", 4, {"n": 2}),
        ("PUT", "a/x", 5, None),
        ("DELETE", "a/x", 6, 3),
        ("DELETE", "a/y", 6, None),
    ]
    assert [{k: v for k, v in e.items() if k != "prev"} for e in with_prev] == plain
    assert all("prev" not in e for e in plain)


def test_the_previous_values_count_toward_the_history_bytes() -> None:
    h = History()
    h.record(1, "k", ("x" * 100, 1, 1, 1))
    alone = h.size
    h.record(2, "k", ("y", 1, 2, 2), ("x" * 100, 1, 1, 1))
    assert h.size - alone >= 100 + len(h.at(1).data)


def test_prev_kv_must_be_a_bool_and_is_left_out_when_false() -> None:
    assert "prev_kv" not in msgpack.unpackb(encode_watch("k", True, 0, 10))  # older nodes serve it
    assert parse_watch(encode_watch("k", True, 0, 10, prev_kv=True)).prev_kv is True
    bad = msgpack.packb({"key": "k", "prefix": True, "start": 0, "window": 1, "prev_kv": 1})
    with pytest.raises(ValueError, match="prev_kv"):
        parse_watch(bad)


def test_a_prev_kv_follower_asks_for_previous_values_again_when_it_resumes_elsewhere() -> None:
    p = Pair(prev_kv=True)
    n1, n2 = p.replicas["n1"], p.replicas["n2"]
    p.follower.begin(0.0)
    p.route()
    for replica in (n1, n2):
        replica.apply("put", "k", 1)
        replica.apply("put", "k", 2)
    p.deliver("n1")
    p.now = 10.0
    p.follower.tick(p.now)  # n1 went silent: resume on n2
    p.route()
    for replica in (n1, n2):
        replica.apply("del", "k")
    p.deliver("n2")
    assert p.follower.target == "n2"
    assert p.delivered == [("PUT", "k", 1), ("PUT", "k", 2), ("DELETE", "k", 3)]
    assert p.prevs == [None, 1, 2]
def test_follower_ends_compacted_when_the_other_nodes_never_answer() -> None:
    """A node list may hold members since removed (they never answer): once every node that answers said
    Compacted and the rest stayed silent past the open timeout, the watch ends rather than asking forever."""
    f = WatchFollower("c", ("n1", "n2", "n3"), "k", True, 5, iter(range(1, 100)).__next__)
    f.begin(0.0)
    assert [m.dst for m in f.take_messages()] == ["n1"]
    compacted = msgpack.packb({"compact_revision": 9, "reason": "gone"})
    f.on_response(ClientResponse("n1", "c", 1, Status.WATCH_COMPACTED, compacted, ""), 0.1)
    assert f.ended is None and f.target == "n2"
    f.tick(5.0)  # n2 silent past the open timeout: try n3
    assert f.ended is None and f.target == "n3"
    f.tick(10.0)  # n3 silent too: every node either said Compacted or never answered
    assert isinstance(f.ended, Compacted) and f.ended.compact_revision == 9
