"""ClientActor: redirects, retries that keep their sequence number, backoff, deadlines, pipelining."""

from __future__ import annotations

import random

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.client import ClientActor, ClientOptions, Outcome
from actors.messages import ClientResponse, RequestKind, Status


def make(nodes: tuple[str, ...] = ("n1", "n2", "n3")) -> ClientActor:
    return ClientActor(
        "c1", nodes, session=42, rng=random.Random(3), options=ClientOptions(attempt_timeout=0.5)
    )


def enc(session: int, seq: int, floor: int) -> bytes:
    return msgpack.packb([session, seq, floor, ["put", "k", 1]])


def reply(
    actor: ClientActor, req_id: int, src: str, status: Status, hint: str = "", result: bytes = b"r"
) -> None:
    actor.step(ClientResponse(src, "c1", req_id, status, result, hint), 0.0)


def test_redirect_resends_the_same_write_to_the_named_leader() -> None:
    a = make()
    h = a.write(enc, 0.0, 5.0)
    (first,) = a.take_messages()
    other = next(n for n in ("n1", "n2", "n3") if n != first.dst)
    reply(a, h, first.dst, Status.NOT_LEADER, hint=other)
    (second,) = a.take_messages()
    assert second.dst == other and second.payload == first.payload and second.req_id == first.req_id
    reply(a, h, other, Status.OK)
    (done,) = a.take_completions()
    assert done.outcome is Outcome.OK and a.leader_guess == other


def test_unknown_outcome_retries_with_the_same_sequence_number_after_backoff() -> None:
    """Dissertation 6.3: the retry must be recognisable as the same request, so it applies at most once."""
    a = make()
    h = a.write(enc, 0.0, 5.0)
    (first,) = a.take_messages()
    reply(a, h, first.dst, Status.UNKNOWN)
    assert a.take_messages() == []  # backing off, not hammering
    a.tick(a.next_deadline())
    (again,) = a.take_messages()
    assert msgpack.unpackb(again.payload)[:2] == [42, 1]


def test_a_silent_node_is_abandoned_for_another_after_the_attempt_timeout() -> None:
    a = make()
    a.read(b"q", 0.0, 5.0)
    (first,) = a.take_messages()
    a.tick(0.6)
    (second,) = a.take_messages()
    assert second.dst != first.dst and second.kind == RequestKind.READ


def test_deadline_ends_a_write_with_unknown_outcome_and_advances_the_ack_floor() -> None:
    a = make()
    a.write(enc, 0.0, 1.0)
    a.take_messages()
    for t in (0.5, 1.0):
        a.tick(t)
    (done,) = a.take_completions()
    assert done.outcome is Outcome.TIMEOUT
    a.take_messages()  # the resend to another node at 0.5
    a.write(enc, 1.0, 1.0)
    (nxt,) = a.take_messages()
    assert msgpack.unpackb(nxt.payload)[:3] == [42, 2, 2]


def test_pipelined_writes_carry_the_lowest_open_sequence_as_ack_floor() -> None:
    a = make()
    handles = [a.write(enc, 0.0, 5.0) for _ in range(3)]
    msgs = a.take_messages()
    assert [msgpack.unpackb(m.payload)[1:3] for m in msgs] == [[1, 1], [2, 1], [3, 1]]
    reply(a, handles[0], msgs[0].dst, Status.OK)
    a.write(enc, 0.0, 5.0)
    (fourth,) = a.take_messages()
    assert msgpack.unpackb(fourth.payload)[1:3] == [4, 2]


def test_bad_request_is_a_definite_failure() -> None:
    a = make()
    h = a.write(enc, 0.0, 5.0)
    (m,) = a.take_messages()
    reply(a, h, m.dst, Status.BAD_REQUEST, result=b"nope")
    (done,) = a.take_completions()
    assert done.outcome is Outcome.REJECTED and done.result == b"nope"


def test_answers_to_finished_requests_are_ignored() -> None:
    a = make()
    h = a.read(b"q", 0.0, 5.0)
    (m,) = a.take_messages()
    reply(a, h, m.dst, Status.OK)
    reply(a, h, m.dst, Status.OK)
    assert len(a.take_completions()) == 1


def test_a_silent_node_is_asked_for_its_status_again_never_another_node() -> None:
    """STATUS asks one node about itself; an answer from another node would describe the wrong node."""
    a = make()
    a.status("n2", 0.0, 5.0)
    (first,) = a.take_messages()
    a.tick(0.6)
    (second,) = a.take_messages()
    assert first.dst == second.dst == "n2" and second.kind == RequestKind.STATUS
    assert a.leader_guess == ""


def test_a_stuck_write_holds_back_writes_beyond_the_sequence_window() -> None:
    """Regression (kill -9 fault test): one write stuck on a dead node while thousands of others complete
    pushed its seq out of the state machine's bounded answer cache, and its retry then only learned that
    it was already applied, not its result. The client keeps newest - oldest open seq below the window."""
    a = ClientActor("c1", ("n1",), session=42, rng=random.Random(3), options=ClientOptions(max_seq_window=3))
    stuck = a.write(enc, 0.0, 5.0)
    others = [a.write(enc, 0.0, 5.0) for _ in range(4)]
    sent = a.take_messages()
    assert [msgpack.unpackb(m.payload)[1] for m in sent] == [1, 2, 3]  # seq 4 and 5 must wait
    for m in sent[1:]:
        reply(a, m.req_id, "n1", Status.OK)
    assert a.take_messages() == []  # still held back: seq 1 is open
    reply(a, stuck, "n1", Status.OK)
    released = a.take_messages()
    assert [msgpack.unpackb(m.payload)[1:3] for m in released] == [[4, 4], [5, 4]]
    assert {c.handle for c in a.take_completions()} == {stuck, *others[:2]}


def test_a_held_back_write_times_out_at_its_deadline() -> None:
    a = ClientActor("c1", ("n1",), session=42, rng=random.Random(3), options=ClientOptions(max_seq_window=1))
    a.write(enc, 0.0, 5.0)
    held = a.write(enc, 0.0, 1.0)
    a.take_messages()
    assert a.next_deadline() <= 1.0
    a.tick(1.0)
    # never sent, so certainly never applied
    assert [(c.handle, c.outcome) for c in a.take_completions()] == [(held, Outcome.NOT_APPLIED)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=120), st.integers(1, 8))
def test_every_write_carries_the_oldest_open_seq_as_its_ack_floor(
    steps: list[tuple[bool, int]], window: int
) -> None:
    """Whatever order writes finish in, a write's ack floor is the smallest seq still open when it
    starts, and no write starts window or more seqs past it."""
    a = ClientActor(
        "c1", ("n1",), session=42, rng=random.Random(3), options=ClientOptions(max_seq_window=window)
    )
    open_seqs: dict[int, int] = {}  # seq -> req_id, as the model sees it
    for new_write, pick in steps:
        if new_write or not open_seqs:
            a.write(enc, 0.0, 100.0)
        else:
            seq = sorted(open_seqs)[pick % len(open_seqs)]
            reply(a, open_seqs.pop(seq), "n1", Status.OK)
        for m in a.take_messages():
            _, seq, floor, _ = msgpack.unpackb(m.payload)
            assert floor == min([*open_seqs, seq])
            assert seq - floor < window
            open_seqs[seq] = m.req_id


# --- BUSY: final only when no attempt can have been proposed ---------------------------------------------


def test_busy_ends_a_write_at_once_when_no_attempt_can_have_been_applied() -> None:
    a = make()
    h = a.write(enc, 0.0, 5.0)
    (first,) = a.take_messages()
    other = next(n for n in ("n1", "n2", "n3") if n != first.dst)
    reply(a, h, first.dst, Status.NOT_LEADER, hint=other)  # a definite "not proposed here"
    (second,) = a.take_messages()
    reply(a, h, other, Status.BUSY, result=b"too many writes wait for commit")
    (done,) = a.take_completions()
    assert done.outcome is Outcome.BUSY and done.result == b"too many writes wait for commit"
    assert a.leader_guess == other


def test_busy_after_an_attempt_that_may_commit_keeps_retrying_the_same_seq() -> None:
    a = make()
    h = a.write(enc, 0.0, 5.0)
    (first,) = a.take_messages()
    a.tick(0.6)  # the first attempt stayed silent: it may have been proposed
    (second,) = a.take_messages()
    reply(a, h, second.dst, Status.BUSY)
    assert a.take_completions() == []
    a.tick(3.0)
    (third,) = a.take_messages()
    assert third.payload == first.payload  # the same session and seq: applied at most once
    a.tick(5.0)
    (done,) = a.take_completions()
    assert done.outcome is Outcome.TIMEOUT


def test_busy_after_unknown_is_not_final_either() -> None:
    a = make()
    h = a.write(enc, 0.0, 5.0)
    (first,) = a.take_messages()
    reply(a, h, first.dst, Status.UNKNOWN, hint=first.dst)
    a.tick(2.0)
    (second,) = a.take_messages()
    reply(a, h, second.dst, Status.BUSY)
    assert a.take_completions() == []


def test_a_busy_read_ends_at_once() -> None:
    a = make()
    h = a.read(b"q", 0.0, 5.0)
    (first,) = a.take_messages()
    reply(a, h, first.dst, Status.BUSY)
    (done,) = a.take_completions()
    assert done.outcome is Outcome.BUSY


def test_a_write_only_ever_refused_unproposed_ends_not_applied() -> None:
    a = make()
    h = a.write(enc, 0.0, 2.0)
    now = 0.0
    while now < 2.0:
        for msg in a.take_messages():
            reply_at = ClientResponse(msg.dst, "c1", h, Status.NOT_LEADER, b"", "")
            a.step(reply_at, now)  # no node leads: every attempt is refused before it is proposed
        now = min(2.0, a.next_deadline())
        a.tick(now)
    (done,) = a.take_completions()
    assert done.outcome is Outcome.NOT_APPLIED


def test_a_write_in_flight_at_its_deadline_may_have_been_applied() -> None:
    a = make(("n1",))
    a.write(enc, 0.0, 0.3)  # shorter than the attempt timeout: the only attempt is still out
    a.take_messages()
    a.tick(0.3)
    (done,) = a.take_completions()
    assert done.outcome is Outcome.TIMEOUT
