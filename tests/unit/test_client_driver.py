"""The client drivers' shared parts without sockets or a clock: ClientCore with fake links and manual time,
the async page iterator, and the promise that AsyncClient's calls match Client's."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import msgpack
import pytest

from actors.client import ClientOptions, Completion, Outcome
from actors.messages import ClientRequest, ClientResponse, RequestKind, Status
from cluster import AsyncClient, Client, ClientClosed
from cluster.client.driver import ClientCore, Submission
from cluster.client.ranges import AsyncRangeIterator, RangePage
from transport import codec

URLS = {"n1": "tcp://a:1", "n2": "tcp://b:2", "n3": "tcp://c:3"}


class FakeLinks:
    def __init__(self) -> None:
        self.opened: list[str] = []
        self.sent: list[tuple[str, list[ClientRequest]]] = []

    def open(self, url: str) -> bool:
        if url not in self.opened:
            self.opened.append(url)
        return True

    def send(self, url: str, frame: bytes) -> None:
        msgs = codec.decode_frame(frame)
        assert all(isinstance(m, ClientRequest) for m in msgs)
        self.sent.append((url, [m for m in msgs if isinstance(m, ClientRequest)]))

    def take(self) -> list[tuple[str, list[ClientRequest]]]:
        out, self.sent = self.sent, []
        return out


def frame(*responses: ClientResponse) -> bytes:
    return codec.encode_batch(list(responses))


def ready_core(links: FakeLinks) -> tuple[ClientCore, list[bool]]:
    """A core that probed tcp://a:1 and heard n1 answer with every member's URL."""
    readiness: list[bool] = []
    core = ClientCore("c", 7, ["tcp://a:1"], ClientOptions(), links, 0.0, lambda: readiness.append(True))
    core.turn([], 0.0)
    [(url, [probe])] = links.take()
    assert url == "tcp://a:1" and probe.kind == RequestKind.STATUS and probe.dst == ""
    status = {"id": "n1", "members": list(URLS), "client_urls": URLS}
    core.receive(frame(ClientResponse("n1", "c", probe.req_id, Status.OK, msgpack.packb(status), "")), 0.0)
    return core, readiness


def submission(results: list[Completion | BaseException], deadline: float = 5.0) -> Submission:
    return Submission(RequestKind.READ, b"q", deadline, results.append)


def test_an_answer_to_a_probe_makes_the_core_ready_and_opens_a_socket_per_url() -> None:
    links = FakeLinks()
    core, readiness = ready_core(links)
    assert core.ready and readiness == [True]
    assert core.known == URLS and core.members == frozenset(URLS)
    assert links.opened == ["tcp://a:1", "tcp://b:2", "tcp://c:3"]


def test_calls_before_any_node_answered_end_at_once_as_timeouts() -> None:
    links = FakeLinks()
    core = ClientCore("c", 7, ["tcp://a:1"], ClientOptions(), links, 0.0)
    results: list[Completion | BaseException] = []
    core.turn([submission(results)], 0.0)
    assert results == [Completion(0, Outcome.TIMEOUT, b"")]


def test_the_calls_of_one_turn_leave_as_one_frame_per_node_and_answers_reach_their_callers() -> None:
    links = FakeLinks()
    core, _ = ready_core(links)
    results: list[list[Completion | BaseException]] = [[] for _ in range(300)]
    core.turn([submission(r) for r in results], 0.1)
    sent = links.take()  # no leader known yet: the reads are spread over the nodes, one frame per node
    urls = [url for url, _ in sent]
    assert len(urls) == len(set(urls)) and set(urls) <= set(URLS.values())
    requests = [r for url, batch in sent for r in batch if URLS[r.dst] == url]
    assert len(requests) == 300 and len({r.req_id for r in requests}) == 300
    answers = [ClientResponse(r.dst, "c", r.req_id, Status.OK, b"\x01", "") for r in requests]
    for node in URLS:  # each node answers its share in one frame
        mine = [a for a in answers if a.src == node]
        if mine:
            core.receive(frame(*mine), 0.2)
    assert all(not r for r in results)  # answers are reported by the turn, after every frame is in
    core.turn([], 0.2)
    by_handle = {req.req_id: req for req in requests}
    assert sorted(by_handle) == list(range(1, 301))  # handles in submission order
    assert all(r == [Completion(i, Outcome.OK, b"\x01")] for i, r in enumerate(results, start=1))


def test_a_request_unanswered_by_its_deadline_times_out_on_a_later_turn() -> None:
    links = FakeLinks()
    core, _ = ready_core(links)
    results: list[Completion | BaseException] = []
    core.turn([submission(results, deadline=0.5)], 0.0)
    assert core.next_due() <= 0.5
    core.turn([], 0.4)
    assert not results
    core.turn([], 0.5)
    assert [r.outcome for r in results if isinstance(r, Completion)] == [Outcome.TIMEOUT]


def test_a_frame_that_does_not_decode_or_is_not_for_this_client_is_dropped() -> None:
    links = FakeLinks()
    core, _ = ready_core(links)
    results: list[Completion | BaseException] = []
    core.turn([submission(results)], 0.0)
    [(_, [request])] = links.take()
    core.receive(b"\xc1garbage", 0.0)
    core.receive(frame(ClientResponse(request.dst, "someone-else", request.req_id, Status.OK, b"", "")), 0.0)
    core.turn([], 0.0)
    assert not results


def test_fail_all_ends_every_pending_call_with_the_error() -> None:
    links = FakeLinks()
    core, _ = ready_core(links)
    results: list[Completion | BaseException] = []
    core.turn([submission(results), submission(results)], 0.0)
    error = ClientClosed()
    core.fail_all(error)
    assert results == [error, error]
    core.turn([], 10.0)  # the actor's own timeouts find no callback left
    assert results == [error, error]


def test_async_range_iterator_follows_pages_and_tells_consistency() -> None:
    pages = {
        "": RangePage([{"key": "p/a"}, {"key": "p/b"}], True, 5),
        "p/b": RangePage([{"key": "p/c"}], False, 6),
    }
    asked: list[str] = []

    async def fetch(after: str) -> RangePage:
        asked.append(after)
        return pages[after]

    async def collect() -> tuple[list[Any], AsyncRangeIterator]:
        iterator = AsyncRangeIterator(fetch)
        return [kv["key"] async for kv in iterator], iterator

    keys, iterator = asyncio.run(collect())
    assert keys == ["p/a", "p/b", "p/c"] and asked == ["", "p/b"]
    assert iterator.pages == 2 and not iterator.consistent


def _calls(cls: type) -> dict[str, inspect.Signature]:
    """The public calls of a client class, without the futures API (*_async) and lifecycle dunders."""
    names = [n for n in dir(cls) if not n.startswith("_") and not n.endswith("_async")]
    members = {n: inspect.getattr_static(cls, n) for n in names}
    return {n: inspect.signature(m) for n, m in members.items() if inspect.isfunction(m)}


def test_async_client_has_every_call_of_client_with_the_same_parameters() -> None:
    blocking, awaited = _calls(Client), _calls(AsyncClient)
    assert "put" in blocking and "range_all" in blocking
    for name, signature in blocking.items():
        assert name in awaited, f"AsyncClient lacks {name}"
        assert list(awaited[name].parameters.values()) == list(signature.parameters.values()), name
    assert set(awaited) - set(blocking) == {"connect"}
    assert isinstance(inspect.getattr_static(AsyncClient, "nodes"), property)
    assert inspect.signature(AsyncClient.__init__) == inspect.signature(Client.__init__)
    for name in awaited.keys() - {"range_all", "watch", "lease"}:  # an async iterator, an async with
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


def test_async_client_refuses_bad_arguments_before_connecting() -> None:
    with pytest.raises(ValueError):
        AsyncClient("not-a-url")
    with pytest.raises(ValueError):
        AsyncClient(["tcp://127.0.0.1:1"], timeout=0)
