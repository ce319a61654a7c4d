"""Client sessions in the state machine (cluster/kv/sessions.py): registration through the log, expiry by
the leader-stamped log time judged in apply, refusal of unknown sessions, the bounds, and snapshots."""

from __future__ import annotations

from itertools import count
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.kv.machine import KVStateMachine, decode_result, encode_command
from cluster.kv.ops import SESSION_EXPIRED_CODE, parse_stamped, stamp_command
from cluster.kv.sessions import DEFAULT_SESSION_TTL_MS, SessionTable


class Replica:
    """A state machine fed commands at consecutive log indexes, stamped as the leader would."""

    def __init__(self, sm: KVStateMachine | None = None, start: int = 0) -> None:
        self.sm = sm if sm is not None else KVStateMachine()
        self.index = count(start + 1)

    def apply(self, command: bytes) -> dict[str, Any]:
        return decode_result(self.sm.apply(next(self.index), command))

    def open(self, at: int, ttl_ms: int = 1000) -> int:
        result = self.apply(encode_command(0, 0, 0, ["session_open", ttl_ms, at]))
        assert result["ok"] and result["ttl_ms"] == ttl_ms
        session: int = result["session"]
        return session

    def write(self, session: int, seq: int, at: int | None, op: list[Any] | None = None) -> dict[str, Any]:
        command = encode_command(session, seq, seq, op or ["put", "k", seq])
        return self.apply(command if at is None else stamp_command(command, at))


def refused(result: dict[str, Any]) -> bool:
    return result["ok"] is False and result["code"] == SESSION_EXPIRED_CODE


def test_a_session_is_registered_through_the_log_and_its_id_is_the_entrys_index() -> None:
    r = Replica(start=41)
    assert r.open(at=5) == 42
    assert r.sm.session_ids() == [42] and r.sm.revision == 0  # a registration is no revision
    assert r.write(42, 1, at=6)["ok"] is True
    # a registration without a TTL (an entry no leader filled in) gets the default
    assert r.apply(encode_command(0, 0, 0, ["session_open", 0, 7]))["ttl_ms"] == DEFAULT_SESSION_TTL_MS


def test_a_write_of_a_session_never_registered_is_refused_and_changes_nothing() -> None:
    r = Replica()
    digest = r.sm.digest()
    result = r.write(99, 1, at=None)
    assert refused(result) and "99" in result["error"]
    assert r.sm.digest() == digest and r.sm.revision == 0 and r.sm.session_count == 0
    assert refused(r.write(99, 1, at=10))
    assert r.sm.revision == 0 and r.sm.log_time == 10  # only the log time moved: apply saw the stamp


def test_a_session_expires_once_the_log_time_passes_its_last_activity_plus_its_ttl() -> None:
    r = Replica()
    s = r.open(at=1000, ttl_ms=500)
    assert r.write(s, 1, at=1400)["ok"]  # activity at 1400: alive until 1900
    assert r.write(s, 2, at=1900)["ok"]  # exactly at the TTL: still alive, and now until 2400
    other = r.open(at=2401)  # another client's entry moves the log time past 2400
    assert r.sm.session_ids() == [other] and r.sm.sessions_expired == 1
    rev = r.sm.revision
    assert refused(r.write(s, 3, at=2402))  # never applied, whatever it is
    assert r.sm.revision == rev


def test_a_stale_stamp_never_moves_the_log_time_back() -> None:
    r = Replica()
    s = r.open(at=1000, ttl_ms=500)
    r.write(s, 1, at=1200)
    r.write(s, 2, at=900)  # an entry of an earlier leader committed late
    assert r.sm.log_time == 1200 and r.sm.session(s) is not None
    assert r.sm.session(s).last_active == 1200  # type: ignore[union-attr]


def test_unstamped_writes_do_not_move_the_log_time_and_lease_entries_do() -> None:
    r = Replica()
    s = r.open(at=1000, ttl_ms=500)
    r.write(s, 1, at=None)
    assert r.sm.log_time == 1000
    r.apply(encode_command(0, 0, 0, ["lease_grant", 3000, 1600]))  # the leader's lease stamp
    assert r.sm.log_time == 1600 and r.sm.session_count == 0  # session s expired at that entry
    assert refused(r.write(s, 2, at=None))


def test_a_retry_answered_from_the_cache_keeps_the_session_alive() -> None:
    r = Replica()
    s = r.open(at=0, ttl_ms=100)
    command = encode_command(s, 1, 1, ["cas", "lock", None, "me"])
    first = r.apply(stamp_command(command, 50))
    assert r.apply(stamp_command(command, 140)) == first  # cached: activity at 140
    assert r.open(at=200) and r.sm.session(s) is not None  # 200 <= 140 + 100
    assert r.open(at=241) and r.sm.session(s) is None


def test_a_refused_write_is_not_activity() -> None:
    r = Replica()
    s = r.open(at=0, ttl_ms=100)
    r.write(s, 5, at=10)
    assert r.write(s, 3, at=90)["code"] == "already_applied"  # below the floor: refused
    assert r.sm.session(s).last_active == 10  # type: ignore[union-attr]


def test_sessions_with_different_ttls_each_expire_by_their_own() -> None:
    r = Replica()
    long = r.open(at=0, ttl_ms=10_000)
    short = r.open(at=0, ttl_ms=100)
    r.open(at=500)  # the sweep stops at the long one, first in line ...
    assert r.sm.session(short) is not None
    assert refused(r.write(short, 1, at=501))  # ... but the short one is refused all the same
    assert r.sm.session(short) is None and r.sm.session(long) is not None


def test_registration_beyond_max_sessions_evicts_the_least_recently_active_which_is_then_refused() -> None:
    r = Replica(KVStateMachine(max_sessions=2))
    a = r.open(at=0)
    b = r.open(at=1)
    r.write(a, 1, at=2)  # a is now the most recent
    c = r.open(at=3)
    assert r.sm.session_ids() == [a, c]
    assert refused(r.write(b, 1, at=4))


def test_the_sweep_is_a_function_of_the_entries_alone() -> None:
    """Two replicas fed the same entries at the same indexes expire the same sessions at the same entry."""
    one, two = Replica(), Replica()
    for r in (one, two):
        sessions = [r.open(at=t, ttl_ms=50 + 10 * t) for t in range(5)]
        for seq, t in enumerate((20, 70, 130, 400), start=1):
            r.write(sessions[seq % 5], seq, at=t)
    assert one.sm.session_ids() == two.sm.session_ids() and one.sm.digest() == two.sm.digest()


# --- snapshots ---------------------------------------------------------------------------------------


def test_a_restored_replica_expires_the_same_sessions_at_the_same_entries() -> None:
    live = Replica()
    a = live.open(at=0, ttl_ms=100)
    b = live.open(at=50, ttl_ms=1000)
    live.write(a, 1, at=60)
    restored = Replica(KVStateMachine(), start=live.sm.applied_index)
    restored.sm.restore(live.sm.snapshot())
    assert restored.sm.digest() == live.sm.digest() and restored.sm.log_time == 60
    for r in (live, restored):
        assert refused(r.write(a, 2, at=161))
        assert r.write(b, 1, at=161)["ok"]
    assert restored.sm.digest() == live.sm.digest()


def test_a_replica_restored_amid_sessions_of_different_ttls_sweeps_as_the_live_one() -> None:
    """The sweep keeps no state of its own: the content alone decides it, so replicas never diverge."""
    live = Replica()
    long = live.open(at=0, ttl_ms=10_000)
    short = live.open(at=0, ttl_ms=100)
    live.write(long, 1, at=150)  # long moves behind short, which has expired by now: swept at this entry
    other = live.open(at=160, ttl_ms=50)
    live.write(long, 2, at=200)  # the front is now `other`, expired too
    restored = Replica(KVStateMachine(), start=live.sm.applied_index)
    restored.sm.restore(live.sm.snapshot())
    for r in (live, restored):
        r.write(long, 3, at=200)  # the same log time again
        r.open(at=260, ttl_ms=10)
        r.write(long, 4, at=275)
    assert restored.sm.session_ids() == live.sm.session_ids()
    assert restored.sm.digest() == live.sm.digest()
    assert live.sm.session(short) is None and live.sm.session(other) is None


def _legacy_snapshot(format_: int, sessions: list[Any], log_time: int = 0) -> bytes:
    """A snapshot as builds before registered sessions wrote it: sessions [id, floor, last_index, resp]."""
    body: list[Any] = [format_, 9, 9, 1, ["k"], [["v", 1, 1, 1]], sessions]
    if format_ == 2:
        body.append([1, log_time, []])
    return msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize("format_", [1, 2])
def test_snapshots_from_before_registered_sessions_still_restore_with_their_sessions(format_: int) -> None:
    answer = msgpack.packb({"ok": True, "rev": 1, "created": True})
    data = _legacy_snapshot(format_, [[77, 1, 8, [[1, answer]]], [55, 0, 3, []]], log_time=5000)
    r = Replica(KVStateMachine(), start=9)
    r.sm.restore(data)
    assert r.sm.session_ids() == [55, 77]  # by last_index, as the old table evicted
    s = r.sm.session(77)
    assert (
        s is not None
        and s.ttl_ms == DEFAULT_SESSION_TTL_MS
        and s.last_active == (5000 if format_ == 2 else 0)
    )
    retry = encode_command(77, 1, 1, ["put", "k", "v"])
    assert r.apply(retry) == msgpack.unpackb(answer)  # still answered once, from the cache
    assert r.sm.revision == 1


def test_a_snapshot_of_an_unknown_format_fails_loudly_with_its_number() -> None:
    data = msgpack.packb([9, 0, 0, 0, [], [], [], [1, 0, []]])
    with pytest.raises(ValueError, match="unsupported snapshot format 9"):
        KVStateMachine().restore(data)


def test_a_snapshot_whose_sessions_are_out_of_activity_order_is_refused() -> None:
    live = Replica()
    live.open(at=10)
    live.open(at=20)
    obj = msgpack.unpackb(live.sm.snapshot(), raw=False)
    obj[6].reverse()
    with pytest.raises(ValueError, match="order of their last activity"):
        KVStateMachine().restore(msgpack.packb(obj, use_bin_type=True))


# --- the command's stamp ----------------------------------------------------------------------------


def test_the_leader_stamp_is_appended_and_replaces_any_stamp_a_client_sent() -> None:
    command = encode_command(3, 4, 2, ["put", "k", {"a": [1, 2]}])
    stamped = stamp_command(command, 12345)
    assert parse_stamped(stamped) == (3, 4, 2, ["put", "k", {"a": [1, 2]}], 12345)
    assert parse_stamped(stamp_command(stamped, 7))[4] == 7
    assert parse_stamped(command)[4] is None


def test_session_open_is_only_valid_without_a_session() -> None:
    r = Replica()
    result = r.apply(msgpack.packb([5, 1, 1, ["session_open", 1000, 1]]))
    assert result["ok"] is False and r.sm.session_count == 0


# --- the table alone, with arbitrary operations --------------------------------------------------


_STEPS = st.lists(
    st.tuples(st.sampled_from(["open", "write", "retry", "sweep"]), st.integers(0, 5), st.integers(0, 40)),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(_STEPS)
def test_the_table_never_answers_a_write_of_a_session_it_does_not_hold_and_stays_ordered(
    steps: list[tuple[str, int, int]],
) -> None:
    table = SessionTable(max_sessions=3, max_responses=4, max_bytes=10_000)
    now, next_id, ids = 0, 1, []
    for what, pick, advance in steps:
        now += advance
        if what == "open":
            table.open(next_id, 60, now)
            ids.append(next_id)
            next_id += 1
        elif what == "sweep":
            table.sweep(now)
        elif ids:
            sid = ids[pick % len(ids)]
            known = sid in table and not table.get(sid).expired(now)  # type: ignore[union-attr]
            answer = table.answer(sid, pick + 1, now)
            if not known:
                assert answer is not None and SESSION_EXPIRED_CODE.encode() in answer and sid not in table
            elif answer is None:
                table.remember(sid, pick + 1, 0, now, b"result")
        actives = [table.get(i).last_active for i in table.ids()]  # type: ignore[union-attr]
        assert actives == sorted(actives) and len(table) <= 3
