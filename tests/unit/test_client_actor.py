"""ClientActor: redirects, retries that keep their sequence number, backoff, deadlines, pipelining."""

from __future__ import annotations

import random

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.client import ClientActor, ClientOptions, Outcome, SessionHooks
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


# --- registered sessions (ClientOptions.sessions) --------------------------------------------------

OPEN = b"open"
EXPIRED = b"expired"


def _opened(result: bytes) -> tuple[int, float] | None:
    return (int(result.split(b":")[1]), 10.0) if result.startswith(b"session:") else None


def with_sessions() -> ClientActor:
    hooks = SessionHooks(OPEN, _opened, lambda result: result == EXPIRED)
    options = ClientOptions(attempt_timeout=0.5, sessions=hooks)
    return ClientActor("c1", ("n1", "n2", "n3"), session=0, rng=random.Random(3), options=options)


def register(a: ClientActor, session: int, now: float = 0.0) -> None:
    """Answer the registration the actor sent."""
    (req,) = a.take_messages()
    assert req.payload == OPEN and req.kind == RequestKind.WRITE
    a.step(ClientResponse(req.dst, "c1", req.req_id, Status.OK, b"session:%d" % session, ""), now)


def test_the_first_write_registers_a_session_and_waits_for_it() -> None:
    a = with_sessions()
    h = a.write(enc, 0.0, 5.0)
    register(a, 17)
    (write,) = a.take_messages()
    assert write.req_id == h and msgpack.unpackb(write.payload)[:2] == [17, 1]
    assert a.take_completions() == []  # the registration is the actor's own: nobody is told
    a.write(enc, 0.1, 5.0)  # the next one goes at once, with the same session
    (nxt,) = a.take_messages()
    assert msgpack.unpackb(nxt.payload)[:2] == [17, 2]


def test_a_write_refused_for_its_session_on_its_only_attempt_is_sent_again_under_a_new_one() -> None:
    """Definite: the refused attempt was not applied, and no other attempt was ever proposed."""
    a = with_sessions()
    h = a.write(enc, 0.0, 5.0)
    register(a, 17)
    (first,) = a.take_messages()
    a.step(ClientResponse(first.dst, "c1", h, Status.OK, EXPIRED, ""), 0.1)
    assert a.take_completions() == [] and a.session == 0
    register(a, 23, now=0.2)
    (again,) = a.take_messages()
    assert again.req_id == h and msgpack.unpackb(again.payload)[0] == 23
    a.step(ClientResponse(again.dst, "c1", h, Status.OK, b"r", ""), 0.3)
    (done,) = a.take_completions()
    assert done.outcome is Outcome.OK and a.sessions_lost == 1 and a.sessions_opened == 2


def test_a_write_refused_for_its_session_after_an_unanswered_attempt_has_an_unknown_outcome() -> None:
    """The unanswered attempt may have been applied before the session ended: never resent silently."""
    a = with_sessions()
    h = a.write(enc, 0.0, 5.0)
    register(a, 17)
    a.take_messages()
    a.tick(0.6)  # the first attempt stayed silent: resent elsewhere, it may still commit
    (retry,) = a.take_messages()
    a.step(ClientResponse(retry.dst, "c1", h, Status.OK, EXPIRED, ""), 0.7)
    (done,) = a.take_completions()
    assert done.outcome is Outcome.SESSION_EXPIRED and done.result == EXPIRED
    assert a.take_messages() == []  # not resent
    a.write(enc, 0.8, 5.0)  # a later write registers a fresh session first
    register(a, 31, now=0.9)
    (nxt,) = a.take_messages()
    assert msgpack.unpackb(nxt.payload)[0] == 31


def test_a_write_refused_after_an_unknown_answer_has_an_unknown_outcome_too() -> None:
    a = with_sessions()
    h = a.write(enc, 0.0, 5.0)
    register(a, 17)
    (first,) = a.take_messages()
    reply(a, h, first.dst, Status.UNKNOWN)  # its leader was lost after proposing it
    a.tick(a.next_deadline())
    (retry,) = a.take_messages()
    a.step(ClientResponse(retry.dst, "c1", h, Status.OK, EXPIRED, ""), 2.0)
    (done,) = a.take_completions()
    assert done.outcome is Outcome.SESSION_EXPIRED


def test_a_session_idle_for_half_its_ttl_is_replaced_before_the_next_write() -> None:
    a = with_sessions()
    a.write(enc, 0.0, 5.0)
    register(a, 17)
    (w,) = a.take_messages()
    a.step(ClientResponse(w.dst, "c1", w.req_id, Status.OK, b"r", ""), 1.0)
    a.write(enc, 5.9, 5.0)  # 4.9 s idle of a 10 s TTL: kept
    (kept,) = a.take_messages()
    assert msgpack.unpackb(kept.payload)[0] == 17
    a.step(ClientResponse(kept.dst, "c1", kept.req_id, Status.OK, b"r", ""), 6.0)
    a.write(enc, 11.1, 5.0)  # 5.1 s idle: it may expire while this write is retried; take a new one
    register(a, 40, now=11.2)
    (fresh,) = a.take_messages()
    assert msgpack.unpackb(fresh.payload)[0] == 40


def test_a_refused_registration_fails_the_writes_waiting_for_it_definitely() -> None:
    a = with_sessions()
    a.write(enc, 0.0, 5.0)
    a.write(enc, 0.0, 5.0)
    (req,) = a.take_messages()
    a.step(
        ClientResponse(req.dst, "c1", req.req_id, Status.BAD_REQUEST, b"unknown op 'session_open'", ""), 0.1
    )
    done = a.take_completions()
    assert [d.outcome for d in done] == [Outcome.REJECTED, Outcome.REJECTED]
    assert done[0].result == b"unknown op 'session_open'"


def test_writes_waiting_for_a_registration_that_never_comes_end_not_applied() -> None:
    a = with_sessions()
    a.write(enc, 0.0, 2.0)
    t = 0.0
    while t < 2.0:
        t = min(2.0, a.next_deadline())
        a.tick(t)
        a.take_messages()  # every attempt goes unanswered
    (done,) = a.take_completions()
    assert done.outcome is Outcome.NOT_APPLIED  # never sent: certainly not applied


def test_a_hint_naming_a_node_that_went_silent_is_not_followed_for_a_while() -> None:
    """After a leader dies, a follower that has not noticed yet still names it: going back to it would
    cost another attempt timeout. The client backs off and asks the nodes still answering instead, until
    the silent node answers something or its silence is `silence_memory` old."""
    a = make()
    memory = a.options.silence_memory
    h = a.read(b"q", 0.0, 30.0)
    (first,) = a.take_messages()
    dead = first.dst
    a.tick(0.6)  # no answer: silent since 0.6
    (second,) = a.take_messages()
    a.step(ClientResponse(second.dst, "c1", h, Status.NOT_LEADER, b"", dead), 0.61)
    assert a.take_messages() == [] and a.leader_guess == ""
    now, gaps = 0.61, []
    while True:  # backing off, never longer than backoff_max, never to the silent node while remembered
        due = a.next_deadline()
        gaps.append(due - now)
        now = due
        a.tick(now)
        (retry,) = a.take_messages()
        if now - 0.6 >= memory:
            break
        assert retry.dst != dead
        a.step(ClientResponse(retry.dst, "c1", h, Status.NOT_LEADER, b"", dead), now)
    assert max(gaps) <= a.options.backoff_max
    a.step(ClientResponse(retry.dst, "c1", h, Status.NOT_LEADER, b"", dead), now)  # silence forgotten
    assert a.leader_guess == dead
    b = make()
    h = b.read(b"q", 0.0, 30.0)
    dead = b.take_messages()[0].dst
    b.tick(0.6)
    (second,) = b.take_messages()
    b.step(ClientResponse(dead, "c1", 999, Status.OK, b"", ""), 0.7)  # it answers something: not silent
    b.step(ClientResponse(second.dst, "c1", h, Status.NOT_LEADER, b"", dead), 0.7)
    assert b.leader_guess == dead
