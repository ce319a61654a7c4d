"""Discovery (cluster/client/discovery.py): node names and client URLs from STATUS probes, no sockets."""

from __future__ import annotations

from typing import Any

import msgpack

from actors.messages import ClientResponse, RequestKind, Status
from cluster.client.discovery import MIN_ROUND_INTERVAL, Discovery


def answer(d: Discovery, req_id: int, status: dict[str, Any], now: float = 0.0) -> bool:
    msg = ClientResponse(str(status.get("id", "")), "c", req_id, Status.OK, msgpack.packb(status), "")
    return d.on_answer(msg, now)


def test_one_answer_names_the_node_and_teaches_the_advertised_urls_of_the_others() -> None:
    d = Discovery("c", ["tcp://a:1", "tcp://b:2"], now=0.0)
    probes = d.due_probes(0.0)
    assert [url for url, _ in probes] == ["tcp://a:1", "tcp://b:2"]
    assert all(p.kind == RequestKind.STATUS and p.dst == "" and d.is_probe(p.req_id) for _, p in probes)
    status = {
        "id": "n1",
        "members": ["n1", "n2", "n3"],
        "client_urls": {"n1": "tcp://elsewhere:1", "n3": "tcp://c:3", "n2": "not a url"},
    }
    assert answer(d, probes[0][1].req_id, status)
    # The URL n1 answered on wins over its advert; a malformed advert is ignored.
    assert d.names == {"n1": "tcp://a:1", "n3": "tcp://c:3"}
    assert d.urls() == ["tcp://a:1", "tcp://b:2", "tcp://c:3"]
    assert not d.complete  # n2's URL is still unknown, so rounds keep coming
    assert d.next_due() < float("inf")
    assert answer(d, probes[1][1].req_id, {"id": "n2", "members": ["n1", "n2", "n3"]})
    assert d.complete and d.names["n2"] == "tcp://b:2" and d.next_due() == float("inf")


def test_rounds_back_off_until_complete_and_can_be_asked_for_again() -> None:
    d = Discovery("c", ["tcp://a:1"], now=0.0)
    times = []
    now = 0.0
    for _ in range(5):
        now = d.next_due()
        assert d.due_probes(now)
        times.append(now)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[0] == MIN_ROUND_INTERVAL
    assert d.due_probes(now) == []  # not due again yet
    d.request_round(now + 0.01)
    assert d.next_due() == now + MIN_ROUND_INTERVAL  # rate limited


def test_answers_that_are_not_probes_or_not_status_maps_change_nothing() -> None:
    d = Discovery("c", ["tcp://a:1"], now=0.0)
    (probe,) = d.due_probes(0.0)
    assert not answer(d, 12345, {"id": "n1"})  # not an outstanding probe
    bad = ClientResponse("n1", "c", probe[1].req_id, Status.OK, b"\x93\x01\x02\x03", "")
    assert not d.on_answer(bad, 0.0)
    assert d.names == {} and not d.answered
