"""Unit tests for cluster/kv/: etcd's revision model, ops, sessions, snapshots, bad input.

References: etcd's data model (revision, create_revision, mod_revision, version) and the Raft dissertation,
section 6.3 (client sessions for exactly-once writes), DESIGN.md rules 5 and 7.
"""

from __future__ import annotations

from itertools import count
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.client.calls import SEQ_WINDOW
from cluster.kv.keyspace import kv_dict
from cluster.kv.machine import (
    ALREADY_APPLIED,
    ALREADY_APPLIED_CODE,
    DEFAULT_MAX_RESPONSES_PER_SESSION,
    DEFAULT_MAX_SESSION_BYTES,
    DEFAULT_RANGE_LIMIT,
    MAX_KEY_BYTES,
    MAX_RANGE_BYTES,
    MAX_RANGE_LIMIT,
    MAX_VALUE_BYTES,
    MAX_VALUE_DEPTH,
    ApplyOrderError,
    KVStateMachine,
    decode_result,
    encode_command,
    encode_query,
)
from cluster.kv.ops import SESSION_EXPIRED_CODE
from cluster.kv.sessions import RESPONSE_OVERHEAD_BYTES, SESSION_OVERHEAD_BYTES
from transport.codec import MAX_FRAME_BYTES

# The answer to a retried write that was applied, once, but whose cached result is gone.
ALREADY = {"ok": False, "error": ALREADY_APPLIED, "code": ALREADY_APPLIED_CODE}


class Driver:
    """A state machine plus a log index counter, so tests read like a client talking to a replica."""

    def __init__(self, sm: KVStateMachine | None = None, start: int = 0, sessions: int = 0) -> None:
        """`sessions`: register that many client sessions first (at indexes 1, 2, ...: ids 1, 2, ...)."""
        self.sm = sm if sm is not None else KVStateMachine()
        self.index = count(start + 1)
        for _ in range(sessions):
            self.open_session()

    def open_session(self, stamp: int = 0, ttl_ms: int = 0) -> int:
        """Register a client session (as the leader proposes it); its id."""
        result = self.write(["session_open", ttl_ms, stamp])
        assert result["ok"], result
        session: int = result["session"]
        return session

    def raw(self, command: bytes) -> bytes:
        return self.sm.apply(next(self.index), command)

    def write(self, op: list[Any], session: int = 0, seq: int = 0, ack: int = 0) -> dict[str, Any]:
        return decode_result(self.raw(encode_command(session, seq, ack, op)))

    def read(self, op: list[Any]) -> dict[str, Any]:
        return decode_result(self.sm.query(encode_query(op)))

    def get(self, key: str) -> dict[str, Any] | None:
        kv: dict[str, Any] | None = self.read(["get", key])["kv"]
        return kv

    def range(self, prefix: str, limit: int = 0, after: str = "") -> dict[str, Any]:
        return self.read(["range", prefix, limit, after])


def raw_command(obj: Any) -> bytes:
    """Encode without the client-side validation of encode_command, to hand the state machine bad input."""
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


@pytest.fixture
def kv() -> Driver:
    return Driver()


# ---------------------------------------------------------------------------------------------------------
# etcd's revision model


def test_put_get_revision_and_version_bookkeeping(kv: Driver) -> None:
    assert kv.read(["get", "a"]) == {"ok": True, "rev": 0, "kv": None}
    assert kv.write(["put", "a", 1]) == {"ok": True, "rev": 1, "created": True}
    assert kv.write(["put", "b", "x"]) == {"ok": True, "rev": 2, "created": True}
    assert kv.write(["put", "a", [1, {"k": b"\x00"}]]) == {"ok": True, "rev": 3, "created": False}
    assert kv.read(["get", "a"]) == {
        "ok": True,
        "rev": 3,
        "kv": {
            "key": "a",
            "value": [1, {"k": b"\x00"}],
            "create_revision": 1,
            "mod_revision": 3,
            "version": 2,
        },
    }
    assert kv.get("b") == {"key": "b", "value": "x", "create_revision": 2, "mod_revision": 2, "version": 1}
    # Putting the same value again is still a change (etcd bumps the revision and the version).
    assert kv.write(["put", "b", "x"])["rev"] == 4
    assert kv.get("b") == {"key": "b", "value": "x", "create_revision": 2, "mod_revision": 4, "version": 2}
    assert kv.sm.revision == 4


def test_every_msgpack_value_type_round_trips(kv: Driver) -> None:
    values: list[Any] = [None, True, False, 0, -(2**63), 2**64 - 1, 1.5, float("inf"), "", "héllo", b"\xff"]
    values += [[], {}, [None, [1, [2.0]]], {"a": {"b": [b"c"]}, b"raw": 1}]
    for i, value in enumerate(values):
        assert kv.write(["put", f"k{i}", value])["ok"]
        kv_ = kv.get(f"k{i}")
        assert kv_ is not None and kv_["value"] == value and type(kv_["value"]) is type(value)


def test_delete_and_recreate_starts_a_new_generation(kv: Driver) -> None:
    kv.write(["put", "a", 1])
    kv.write(["put", "a", 2])
    assert kv.write(["del", "a"]) == {"ok": True, "rev": 3, "deleted": 1}
    assert kv.get("a") is None
    # Deleting an absent key changes nothing, so the revision stays.
    assert kv.write(["del", "a"]) == {"ok": True, "rev": 3, "deleted": 0}
    assert kv.write(["put", "a", 3]) == {"ok": True, "rev": 4, "created": True}
    assert kv.get("a") == {"key": "a", "value": 3, "create_revision": 4, "mod_revision": 4, "version": 1}


def test_key_may_hold_none(kv: Driver) -> None:
    kv.write(["put", "n", None])
    assert kv.get("n") == {"key": "n", "value": None, "create_revision": 1, "mod_revision": 1, "version": 1}
    assert kv.write(["put", "n", 1])["created"] is False  # a key holding None exists


# ---------------------------------------------------------------------------------------------------------
# range and del_prefix


def test_range_prefix_sorted_with_limit_and_more(kv: Driver) -> None:
    for key in ["b/2", "a", "b/10", "b/1", "c", "b", "b/\u00e9", "bb"]:
        kv.write(["put", key, key.upper()])
    everything = kv.range("")
    assert [x["key"] for x in everything["kvs"]] == ["a", "b", "b/1", "b/10", "b/2", "b/\u00e9", "bb", "c"]
    assert everything["more"] is False and everything["rev"] == 8
    b = kv.range("b/")
    assert [x["key"] for x in b["kvs"]] == ["b/1", "b/10", "b/2", "b/\u00e9"]
    assert b["kvs"][0] == {
        "key": "b/1",
        "value": "B/1",
        "create_revision": 4,
        "mod_revision": 4,
        "version": 1,
    }
    assert b["more"] is False
    limited = kv.range("b/", 2)
    assert [x["key"] for x in limited["kvs"]] == ["b/1", "b/10"] and limited["more"] is True
    exact = kv.range("b/", 4)
    assert len(exact["kvs"]) == 4 and exact["more"] is False
    assert kv.range("zzz") == {"ok": True, "rev": 8, "kvs": [], "more": False}
    # Keys sort by code point, which is UTF-8 byte order (etcd's order).
    utf8 = [x["key"].encode() for x in everything["kvs"]]
    assert utf8 == sorted(utf8)


def test_range_sees_creates_and_deletes_after_a_previous_range(kv: Driver) -> None:
    kv.write(["put", "p/b", 1])
    assert [x["key"] for x in kv.range("p/")["kvs"]] == ["p/b"]
    kv.write(["put", "p/a", 2])
    kv.write(["put", "p/b", 3])
    assert [(x["key"], x["value"]) for x in kv.range("p/")["kvs"]] == [("p/a", 2), ("p/b", 3)]
    kv.write(["del", "p/a"])
    assert [x["key"] for x in kv.range("p/")["kvs"]] == ["p/b"]


def _keys_of(page: dict[str, Any]) -> list[str]:
    return [x["key"] for x in page["kvs"]]


def test_range_pages_continue_after_the_last_key(kv: Driver) -> None:
    for key in ["p/a", "p/b", "p/c", "p/d", "p/e", "q"]:
        kv.write(["put", key, 0])
    first = kv.range("p/", 2)
    assert _keys_of(first) == ["p/a", "p/b"] and first["more"] is True and first["rev"] == 6
    second = kv.range("p/", 2, after="p/b")
    assert _keys_of(second) == ["p/c", "p/d"] and second["more"] is True
    last = kv.range("p/", 2, after="p/d")
    assert _keys_of(last) == ["p/e"] and last["more"] is False
    # `after` need not be a key that exists, nor lie under the prefix.
    assert _keys_of(kv.range("p/", 0, after="p/bb")) == ["p/c", "p/d", "p/e"]
    assert _keys_of(kv.range("p/", 0, after="a")) == ["p/a", "p/b", "p/c", "p/d", "p/e"]
    assert kv.range("p/", 0, after="p/e") == {"ok": True, "rev": 6, "kvs": [], "more": False}
    assert kv.range("p/", 0, after="z") == {"ok": True, "rev": 6, "kvs": [], "more": False}


def test_range_answer_is_exactly_the_msgpack_of_its_map(kv: Driver) -> None:
    """The page is encoded kv by kv and joined; it must be the very bytes msgpack gives the whole map."""
    for i in range(20):
        kv.write(["put", f"k{i:02d}", {"i": i, "blob": b"\x00" * i}])
    for limit, after in [(0, ""), (5, ""), (5, "k07"), (1, "k19")]:
        answer = kv.sm.query(encode_query(["range", "k", limit, after]))
        assert answer == msgpack.packb(decode_result(answer), use_bin_type=True)


def test_range_default_page_and_the_largest_limit(kv: Driver) -> None:
    for i in range(DEFAULT_RANGE_LIMIT + 5):
        kv.write(["put", f"k{i:05d}", i])
    page = kv.range("k")
    assert len(page["kvs"]) == DEFAULT_RANGE_LIMIT and page["more"] is True
    assert len(kv.range("k", MAX_RANGE_LIMIT)["kvs"]) == DEFAULT_RANGE_LIMIT + 5
    too_many = decode_result(kv.sm.query(raw_command(["range", "k", MAX_RANGE_LIMIT + 1, ""])))
    assert too_many["ok"] is False and "limit too large" in too_many["error"]
    with pytest.raises(ValueError, match="limit too large"):
        encode_query(["range", "k", MAX_RANGE_LIMIT + 1, ""])


def test_range_pages_are_bounded_in_bytes() -> None:
    kv = Driver()
    big = "v" * (MAX_VALUE_BYTES - 5)  # the largest value: 5 bytes of str header
    keys = [f"big/{i}" for i in range(7)]
    for key in keys:
        kv.write(["put", key, big])
    seen: list[str] = []
    sizes: list[int] = []
    after = ""
    while True:
        answer = kv.sm.query(encode_query(["range", "big/", MAX_RANGE_LIMIT, after]))
        assert len(answer) <= MAX_RANGE_BYTES + 64
        page = decode_result(answer)
        assert page["kvs"]  # a page always holds at least one entry
        seen += _keys_of(page)
        sizes.append(len(page["kvs"]))
        if not page["more"]:
            break
        after = page["kvs"][-1]["key"]
    assert seen == keys
    assert sizes == [3, 3, 1]  # four values of about 1 MiB would pass 4 MiB


def test_the_page_bound_fits_the_largest_entry_and_stays_well_under_the_frame_limit() -> None:
    """A page always holds at least one entry, and a whole page (plus its ClientResponse envelope) is
    under a third of what a client or peer accepts in one frame."""
    largest_value = "v" * (MAX_VALUE_BYTES - 5)  # 5 bytes of str header: exactly MAX_VALUE_BYTES encoded
    biggest = kv_dict("k" * MAX_KEY_BYTES, (largest_value, 2**64 - 1, 2**64 - 1, 2**64 - 1))
    assert len(msgpack.packb(biggest, use_bin_type=True)) <= MAX_RANGE_BYTES
    assert MAX_RANGE_BYTES + 64 * 1024 <= MAX_FRAME_BYTES // 3


_PAGING_KEYS = st.sampled_from([f"d/{i:02d}" for i in range(30)])


@settings(max_examples=200, deadline=None)
@given(
    st.sets(_PAGING_KEYS, max_size=30),
    st.lists(
        st.tuples(
            st.integers(1, 7), st.lists(st.tuples(st.sampled_from(["put", "del"]), _PAGING_KEYS), max_size=4)
        ),
        max_size=20,
    ),
)
def test_paging_while_keys_change(initial: set[str], steps: list[tuple[int, list[tuple[str, str]]]]) -> None:
    """Pages read at different revisions: every key comes at most once and in order, each existed when
    its page was read, and every key present throughout comes exactly once."""
    kv = Driver()
    for key in sorted(initial):
        kv.write(["put", key, 0])
    present = set(initial)
    throughout = set(initial)
    returned: list[str] = []
    after = ""
    more = True
    for limit, changes in [*steps, *[(7, [])] * 30]:
        if not more:
            break
        page = kv.range("d/", limit, after)
        assert page["rev"] == kv.sm.revision
        assert set(_keys_of(page)) <= present
        returned += _keys_of(page)
        more = page["more"]
        if more:
            after = page["kvs"][-1]["key"]
        for name, key in changes:
            kv.write([name, key, 1] if name == "put" else [name, key])
            if name == "del":
                present.discard(key)
                throughout.discard(key)  # even if created again later: it was absent for a while
            else:
                present.add(key)
    assert more is False
    assert returned == sorted(set(returned))
    assert throughout <= set(returned)


def test_del_prefix_is_one_revision(kv: Driver) -> None:
    for key in ["x/1", "x/2", "x/3", "xy", "y"]:
        kv.write(["put", key, 0])
    assert kv.write(["del_prefix", "x/"]) == {"ok": True, "rev": 6, "deleted": 3}
    assert [x["key"] for x in kv.range("")["kvs"]] == ["xy", "y"]
    assert kv.write(["del_prefix", "x/"]) == {"ok": True, "rev": 6, "deleted": 0}
    kv.write(["put", "x/1", 1])
    assert kv.get("x/1") == {"key": "x/1", "value": 1, "create_revision": 7, "mod_revision": 7, "version": 1}
    assert kv.write(["del_prefix", ""]) == {"ok": True, "rev": 8, "deleted": 3}
    assert kv.range("")["kvs"] == [] and len(kv.sm) == 0
    assert kv.write(["del_prefix", ""]) == {"ok": True, "rev": 8, "deleted": 0}


# ---------------------------------------------------------------------------------------------------------
# compare-and-swap


def test_cas_create_if_absent(kv: Driver) -> None:
    assert kv.write(["cas", "lock", None, "me"]) == {"ok": True, "rev": 1, "swapped": True}
    assert kv.write(["cas", "lock", None, "you"]) == {"ok": True, "rev": 1, "swapped": False}
    assert kv.get("lock") == {
        "key": "lock",
        "value": "me",
        "create_revision": 1,
        "mod_revision": 1,
        "version": 1,
    }


def test_cas_swap_and_mismatch(kv: Driver) -> None:
    kv.write(["put", "k", {"n": 1, "tags": ["a"]}])
    # Map order does not matter; types do.
    assert kv.write(["cas", "k", {"tags": ["a"], "n": 1}, 2]) == {"ok": True, "rev": 2, "swapped": True}
    assert kv.get("k") == {"key": "k", "value": 2, "create_revision": 1, "mod_revision": 2, "version": 2}
    for wrong in [2.0, True, "2", [2], 3]:
        assert kv.write(["cas", "k", wrong, 9]) == {"ok": True, "rev": 2, "swapped": False}
    assert kv.write(["cas", "absent", 1, 2]) == {"ok": True, "rev": 2, "swapped": False}
    assert kv.get("absent") is None


def test_cas_none_expected_does_not_match_a_stored_none(kv: Driver) -> None:
    kv.write(["put", "k", None])
    assert kv.write(["cas", "k", None, 1])["swapped"] is False
    assert kv.write(["cas", "k", 1.0, 1])["swapped"] is False


def test_cas_float_compares_bit_for_bit(kv: Driver) -> None:
    kv.write(["put", "f", float("nan")])
    assert kv.write(["cas", "f", float("nan"), 1.0])["swapped"] is True
    kv.write(["put", "z", 0.0])
    assert kv.write(["cas", "z", -0.0, 1.0])["swapped"] is False


def test_cas_del(kv: Driver) -> None:
    kv.write(["put", "k", "v"])
    assert kv.write(["cas_del", "k", "other"]) == {"ok": True, "rev": 1, "swapped": False, "deleted": 0}
    assert kv.write(["cas_del", "k", "v"]) == {"ok": True, "rev": 2, "swapped": True, "deleted": 1}
    assert kv.get("k") is None
    # Expected None (absent) on an absent key holds, and there is nothing to delete.
    assert kv.write(["cas_del", "k", None]) == {"ok": True, "rev": 2, "swapped": True, "deleted": 0}


def test_cas_by_mod_revision_sees_a_rewrite_of_an_equal_value(kv: Driver) -> None:
    assert kv.write(["cas_rev", "k", 0, "a"]) == {"ok": True, "rev": 1, "swapped": True}  # 0: absent
    assert kv.write(["cas_rev", "k", 0, "b"])["swapped"] is False
    kv.write(["put", "k", "b"])
    kv.write(["put", "k", "a"])  # A -> B -> A: equal by value, not by revision
    assert kv.write(["cas", "k", "a", "a"])["swapped"] is True  # rev 4: a value compare cannot tell
    assert kv.write(["cas_rev", "k", 1, "x"]) == {"ok": True, "rev": 4, "swapped": False}
    assert kv.write(["cas_rev", "k", 4, "x"]) == {"ok": True, "rev": 5, "swapped": True}
    assert kv.get("k") == {"key": "k", "value": "x", "create_revision": 1, "mod_revision": 5, "version": 5}
    assert kv.write(["cas_rev", "absent", 5, 1])["swapped"] is False and kv.get("absent") is None


def test_cas_delete_by_mod_revision(kv: Driver) -> None:
    kv.write(["put", "k", "v"])
    assert kv.write(["cas_del_rev", "k", 2]) == {"ok": True, "rev": 1, "swapped": False, "deleted": 0}
    assert kv.write(["cas_del_rev", "k", 1]) == {"ok": True, "rev": 2, "swapped": True, "deleted": 1}
    assert kv.write(["cas_del_rev", "k", 0]) == {"ok": True, "rev": 2, "swapped": True, "deleted": 0}


@pytest.mark.parametrize(
    "op",
    [["cas_rev", "k", -1, 1], ["cas_rev", "k", "1", 1], ["cas_del_rev", "k", 1.0], ["cas_rev", "", 0, 1]],
)
def test_cas_by_revision_refuses_a_bad_revision_or_key(kv: Driver, op: list[Any]) -> None:
    result = decode_result(kv.raw(msgpack.packb([0, 0, 0, op])))
    assert result["ok"] is False and kv.get("k") is None


# ---------------------------------------------------------------------------------------------------------
# Exactly-once sessions (Raft dissertation 6.3)


def test_duplicate_session_seq_returns_cached_result_and_applies_once() -> None:
    kv = Driver(sessions=7)
    command = encode_command(7, 1, 0, ["put", "k", "v"])
    first = kv.raw(command)
    kv.write(["put", "other", 1])  # something in between, at another log index
    again = kv.raw(command)
    assert again == first
    assert decode_result(first) == {"ok": True, "rev": 1, "created": True}
    assert kv.sm.revision == 2
    assert kv.get("k") == {"key": "k", "value": "v", "create_revision": 1, "mod_revision": 1, "version": 1}


def test_duplicate_returns_cached_result_even_if_state_moved_on() -> None:
    kv = Driver(sessions=7)
    command = encode_command(7, 1, 0, ["cas", "k", None, "first"])
    first = kv.raw(command)
    kv.write(["del", "k"])
    assert kv.raw(command) == first  # re-applying would have swapped again: it must not
    assert kv.get("k") is None


def test_session_zero_is_never_deduplicated(kv: Driver) -> None:
    command = encode_command(0, 1, 0, ["put", "k", "v"])
    kv.raw(command)
    kv.raw(command)
    assert kv.sm.revision == 2 and kv.sm.session_count == 0


def test_ack_floor_prunes_cached_responses_and_rejects_below_floor() -> None:
    kv = Driver(sessions=7)
    c1 = encode_command(5, 1, 0, ["put", "a", 1])
    c2 = encode_command(5, 2, 0, ["put", "b", 2])
    kv.raw(c1)
    r2 = kv.raw(c2)
    # seq 3 acknowledges everything below 2: seq 1 is dropped and from now on refused, seq 2 is kept.
    kv.write(["put", "c", 3], session=5, seq=3, ack=2)
    rev = kv.sm.revision
    assert decode_result(kv.raw(c1)) == ALREADY
    assert kv.raw(c2) == r2
    assert kv.sm.revision == rev
    snap = kv.sm.snapshot()
    sessions = msgpack.unpackb(snap, raw=False)[6]
    assert [[s[0], s[1], [p[0] for p in s[4]]] for s in sessions if s[0] == 5] == [[5, 2, [2, 3]]]


def test_rejected_below_floor_changes_nothing() -> None:
    kv = Driver(sessions=7)
    kv.write(["put", "a", 1], session=5, seq=4, ack=4)
    digest = kv.sm.digest()
    assert kv.write(["put", "a", 2], session=5, seq=3, ack=0) == ALREADY
    assert kv.sm.digest() == digest


def test_ack_floor_above_seq_is_invalid(kv: Driver) -> None:
    result = decode_result(kv.raw(raw_command([5, 1, 2, ["put", "a", 1]])))
    assert result["ok"] is False and kv.sm.revision == 0 and kv.sm.session_count == 0
    with pytest.raises(ValueError):
        encode_command(5, 1, 2, ["put", "a", 1])


def test_session_eviction_removes_the_least_recently_active() -> None:
    kv = Driver(KVStateMachine(max_sessions=3), sessions=3)  # sessions 1, 2, 3
    kv.write(["put", "a", 1], session=1, seq=1)
    kv.write(["put", "a", 2], session=2, seq=1)
    kv.write(["put", "a", 3], session=3, seq=1)
    kv.write(["put", "a", 4], session=1, seq=2)  # session 1 is now the most recent
    assert kv.sm.session_ids() == [2, 3, 1]
    s4 = kv.open_session()  # evicts session 2
    assert kv.sm.session_ids() == [3, 1, s4]
    # A duplicate also counts as activity: session 3 moves to the end, so 1 is evicted next.
    kv.raw(encode_command(3, 1, 0, ["put", "a", 3]))
    assert kv.sm.session_ids() == [1, s4, 3]
    s5 = kv.open_session()
    assert kv.sm.session_ids() == [s4, 3, s5]
    # A request answered as already applied is not activity.
    kv.write(["put", "a", 7], session=s4, seq=9, ack=9)
    kv.write(["put", "a", 8], session=s4, seq=1)
    assert kv.sm.session_ids() == [3, s5, s4]
    # An evicted session is unknown: its retry is refused, never applied again.
    rev = kv.sm.revision
    refused = kv.write(["put", "a", 2], session=2, seq=1)
    assert refused["ok"] is False and refused["code"] == SESSION_EXPIRED_CODE and kv.sm.revision == rev


def test_responses_per_session_are_bounded() -> None:
    kv = Driver(KVStateMachine(max_responses_per_session=3), sessions=1)
    first = kv.raw(encode_command(1, 1, 0, ["put", "k", 1]))
    for seq in range(2, 6):
        kv.write(["put", "k", seq], session=1, seq=seq)
    # seqs 1 and 2 were dropped to keep 3 responses; their retries are refused, not re-applied.
    assert decode_result(kv.raw(encode_command(1, 1, 0, ["put", "k", 1]))) == ALREADY
    assert decode_result(first)["ok"] is True
    assert kv.sm.revision == 5
    assert decode_result(kv.raw(encode_command(1, 3, 0, ["put", "k", 3])))["rev"] == 3


def test_the_clients_sequence_window_keeps_a_stuck_writes_answer() -> None:
    """The contract between the client's SEQ_WINDOW and the per-session cache: a write applied but not
    answered (its answer lost), overtaken by a window's worth of newer writes whose ack floor it holds
    down, still gets its own answer on retry. One write more than the cache holds would lose it."""
    for later, keeps in [(SEQ_WINDOW - 1, True), (DEFAULT_MAX_RESPONSES_PER_SESSION, False)]:
        kv = Driver(sessions=9)
        stuck = encode_command(9, 1, 1, ["cas", "lock", None, "me"])
        answer = kv.raw(stuck)
        for seq in range(2, 2 + later):
            kv.write(["put", f"k{seq}", seq], session=9, seq=seq, ack=1)
        retried = kv.raw(stuck)
        assert (retried == answer) is keeps
        assert decode_result(retried) == ({"ok": True, "rev": 1, "swapped": True} if keeps else ALREADY)


def test_a_full_session_is_a_small_part_of_the_byte_bound() -> None:
    """Byte eviction only starts once hundreds of sessions hold a full window of the largest results."""
    largest = len(
        msgpack.packb({"ok": True, "rev": 2**64 - 1, "swapped": True, "deleted": 1}, use_bin_type=True)
    )
    full_session = SESSION_OVERHEAD_BYTES + DEFAULT_MAX_RESPONSES_PER_SESSION * (
        largest + RESPONSE_OVERHEAD_BYTES
    )
    assert DEFAULT_MAX_SESSION_BYTES // full_session >= 100


def test_write_results_never_carry_a_value() -> None:
    """What a session caches is a write's result: it must stay small however large the values are."""
    kv = Driver(sessions=1)
    big = "x" * (MAX_VALUE_BYTES - 16)
    results = [
        kv.raw(encode_command(1, 1, 0, ["put", "k", big])),
        kv.raw(encode_command(1, 2, 0, ["put", "k", big])),
        kv.raw(encode_command(1, 3, 0, ["cas", "k", "other", big])),
        kv.raw(encode_command(1, 4, 0, ["cas", "k", big, big])),
        kv.raw(encode_command(1, 5, 0, ["cas_del", "k", "other"])),
        kv.raw(encode_command(1, 6, 0, ["cas_del", "k", big])),
        kv.raw(encode_command(1, 7, 0, ["del_prefix", ""])),
    ]
    assert all(decode_result(r)["ok"] for r in results)
    assert max(len(r) for r in results) < 64
    assert kv.sm.session_bytes == SESSION_OVERHEAD_BYTES + sum(
        len(r) + RESPONSE_OVERHEAD_BYTES for r in results
    )


def _session_bytes_of(snapshot: bytes) -> int:
    """The session table's size recomputed from a snapshot, as sessions.py documents it."""
    sessions = msgpack.unpackb(snapshot, raw=False)[6]
    return sum(
        SESSION_OVERHEAD_BYTES + sum(len(r) + RESPONSE_OVERHEAD_BYTES for _, r in s[4]) for s in sessions
    )


def test_sessions_are_bounded_in_bytes_evicting_the_least_recent_first() -> None:
    def fill(kv: Driver) -> None:
        for sid in (1, 2, 3):
            kv.write(["put", "a", sid], session=sid, seq=1)
            kv.write(["put", "a", sid], session=sid, seq=2)

    unbounded = Driver(sessions=3)
    fill(unbounded)
    bound = unbounded.sm.session_bytes  # exactly three sessions of two responses each
    kv = Driver(KVStateMachine(max_session_bytes=bound), sessions=3)
    fill(kv)
    assert kv.sm.session_ids() == [1, 2, 3] and kv.sm.session_bytes == bound
    kv.write(["put", "a", 1], session=1, seq=3)  # session 1 grows and becomes the most recent
    assert kv.sm.session_ids() == [3, 1]  # over the bound: session 2, touched longest ago, went
    assert kv.sm.session_bytes <= bound
    s4 = kv.open_session()
    kv.write(["put", "a", 4], session=s4, seq=1)
    assert kv.sm.session_ids() == [3, 1, s4] and kv.sm.session_bytes <= bound
    assert kv.sm.session_bytes == _session_bytes_of(kv.sm.snapshot())


def test_the_session_being_written_is_never_evicted_for_bytes() -> None:
    kv = Driver(KVStateMachine(max_session_bytes=1))
    s1 = kv.open_session()
    kv.write(["put", "a", 1], session=s1, seq=1)
    s2 = kv.open_session()
    kv.write(["put", "a", 2], session=s2, seq=1)
    assert kv.sm.session_ids() == [s2]
    command = encode_command(s2, 2, 0, ["put", "a", 3])
    first = kv.raw(command)
    assert kv.raw(command) == first and kv.sm.revision == 3  # still deduplicated


_SESSION_OPS = st.lists(
    st.tuples(
        st.integers(1, 6), st.integers(1, 40), st.integers(0, 40), st.sampled_from(["put", "del", "cas"])
    ),
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(_SESSION_OPS, st.integers(200, 3000))
def test_session_bytes_are_exact_and_survive_restore(
    ops: list[tuple[int, int, int, str]], bound: int
) -> None:
    """The running total equals the size recomputed from the content, stays within the bound (but for
    the one session being written), and a replica restored from a snapshot continues identically."""
    live = Driver(KVStateMachine(max_responses_per_session=8, max_session_bytes=bound), sessions=6)
    restored: Driver | None = None
    for i, (sid, seq, ack, name) in enumerate(ops):
        op = {"put": ["put", "k", i], "del": ["del", "k"], "cas": ["cas", "k", None, i]}[name]
        command = raw_command([sid, seq, min(ack, seq), op])
        replicas = [live] if restored is None else [live, restored]
        answers = {r.raw(command) for r in replicas}
        assert len(answers) == 1
        assert live.sm.session_bytes == _session_bytes_of(live.sm.snapshot())
        assert live.sm.session_bytes <= bound or live.sm.session_count == 1
        if i == len(ops) // 2:
            restored = Driver(
                KVStateMachine(max_responses_per_session=8, max_session_bytes=bound),
                start=live.sm.applied_index,
            )
            restored.sm.restore(live.sm.snapshot())
        if restored is not None:
            assert restored.sm.session_bytes == live.sm.session_bytes
            assert restored.sm.digest() == live.sm.digest()


def test_restore_trims_sessions_to_the_byte_bound() -> None:
    kv = Driver(sessions=5)
    for sid in range(1, 6):
        kv.write(["put", "k", sid], session=sid, seq=1)
    per_session = kv.sm.session_bytes // 5
    small = KVStateMachine(max_session_bytes=2 * per_session)
    small.restore(kv.sm.snapshot())
    assert small.session_ids() == [4, 5] and small.session_bytes == 2 * per_session


# ---------------------------------------------------------------------------------------------------------
# Apply order


def test_apply_with_non_increasing_index_raises(kv: Driver) -> None:
    command = encode_command(0, 0, 0, ["put", "k", 1])
    kv.sm.apply(5, command)
    with pytest.raises(ApplyOrderError):
        kv.sm.apply(5, command)
    with pytest.raises(AssertionError):
        kv.sm.apply(4, command)
    assert kv.sm.applied_index == 5 and kv.sm.applied_count == 1 and kv.sm.revision == 1
    kv.sm.apply(9, command)  # gaps are allowed (entries that are not commands never reach apply)
    assert kv.sm.applied_index == 9 and kv.sm.applied_count == 2


def test_rejected_commands_still_advance_the_applied_index(kv: Driver) -> None:
    kv.sm.apply(3, b"\xc1")
    assert kv.sm.applied_index == 3 and kv.sm.applied_count == 1 and kv.sm.revision == 0


# ---------------------------------------------------------------------------------------------------------
# Bad input: an error result, never an exception, never a change


BAD_COMMANDS: list[Any] = [
    [0, 0, 0, ["nope", "k"]],
    [0, 0, 0, ["put", "k"]],
    [0, 0, 0, ["put", "k", 1, 2]],
    [0, 0, 0, ["put", "", 1]],
    [0, 0, 0, ["put", b"k", 1]],
    [0, 0, 0, ["put", 1, 1]],
    [0, 0, 0, ["put", "k" * (MAX_KEY_BYTES + 1), 1]],
    [0, 0, 0, ["put", "\u00e9" * (MAX_KEY_BYTES // 2 + 1), 1]],  # short in characters, too long in bytes
    [0, 0, 0, ["put", "k", b"x" * MAX_VALUE_BYTES]],
    [0, 0, 0, ["cas", "k", None, "x" * (MAX_VALUE_BYTES + 1)]],
    [0, 0, 0, ["del_prefix", None]],
    [0, 0, 0, []],
    [0, 0, 0, "put"],
    [0, 0, 0, [1, "k"]],
    [-1, 0, 0, ["put", "k", 1]],
    [True, 0, 0, ["put", "k", 1]],
    [1, 1.0, 0, ["put", "k", 1]],
    [1, 1, None, ["put", "k", 1]],
    [0, 0, ["put", "k", 1]],
    [0, 0, 0, ["put", "k", 1], "extra"],
    {"session": 0},
    None,
    "put",
    [0, 0, 0, ["put", "k", msgpack.ExtType(5, b"x")]],
    [0, 0, 0, ["put", "k", {"a": msgpack.ExtType(5, b"x")}]],
]


@pytest.mark.parametrize("obj", BAD_COMMANDS, ids=range(len(BAD_COMMANDS)))
def test_invalid_commands_are_rejected_without_change(obj: Any) -> None:
    kv = Driver()
    kv.write(["put", "seed", 1], session=3, seq=1)
    digest = kv.sm.digest()
    result = decode_result(kv.raw(raw_command(obj)))
    assert result["ok"] is False and isinstance(result["error"], str) and result["error"]
    assert kv.sm.digest() == digest


def test_invalid_commands_raise_in_encode_command() -> None:
    with pytest.raises(ValueError, match="unknown op"):
        encode_command(0, 0, 0, ["nope"])
    with pytest.raises(ValueError, match="too large"):
        encode_command(0, 0, 0, ["put", "k", b"x" * MAX_VALUE_BYTES])
    with pytest.raises(ValueError):
        encode_query(["get", ""])


def test_value_exactly_at_the_size_limit_is_accepted(kv: Driver) -> None:
    overhead = len(msgpack.packb(b"x" * 70_000, use_bin_type=True)) - 70_000  # bin 32 header: 5 bytes
    value = b"x" * (MAX_VALUE_BYTES - overhead)
    assert kv.write(["put", "big", value])["ok"] is True
    # one byte more is refused, and the stored value stays
    result = decode_result(kv.raw(raw_command([0, 0, 0, ["cas", "big", value, value + b"x"]])))
    assert result["ok"] is False and "too large" in result["error"]
    stored = kv.get("big")
    assert stored is not None and stored["value"] == value and kv.sm.revision == 1


def test_non_bytes_and_garbage_commands(kv: Driver) -> None:
    for command in [b"", b"\xc1", b"\x94\x00\x00\x00", raw_command([0, 0, 0, ["del", "k"]]) + b"\x00"]:
        assert decode_result(kv.raw(command))["ok"] is False
    assert decode_result(kv.sm.apply(next(kv.index), "not bytes"))["ok"] is False  # type: ignore[arg-type]
    assert kv.sm.revision == 0


def test_too_deep_value_is_rejected(kv: Driver) -> None:
    value: Any = 1
    for _ in range(MAX_VALUE_DEPTH):
        value = [value]
    assert kv.write(["put", "ok", value])["ok"] is True
    deeper: Any = [value]
    assert decode_result(kv.raw(raw_command([0, 0, 0, ["put", "deep", deeper]])))["ok"] is False
    # Deeper than msgpack's own unpacker allows: still only an error result.
    data = b"\x94\x00\x00\x00\x93\xa3put\xa1k" + b"\x91" * 5000 + b"\x01"
    assert decode_result(kv.raw(data))["ok"] is False
    assert kv.get("deep") is None


def test_map_with_non_string_keys_is_rejected(kv: Driver) -> None:
    assert decode_result(kv.raw(raw_command([0, 0, 0, ["put", "k", {1: "x"}]])))["ok"] is False
    assert kv.get("k") is None


BAD_QUERIES: list[Any] = [
    ["get"],
    ["get", ""],
    ["get", 1],
    ["range", "p"],
    ["range", "p", 0],
    ["range", "p", -1, ""],
    ["range", "p", True, ""],
    ["range", None, 0, ""],
    ["range", "p", 0, None],
    ["range", "p", 0, 7],
    ["range", "p", 0, "a" * (MAX_KEY_BYTES + 1)],
    ["range", "p", MAX_RANGE_LIMIT + 1, ""],
    ["put", "k", 1],
    ["watch", "k"],
    [],
    "get",
    None,
]


@pytest.mark.parametrize("obj", BAD_QUERIES, ids=range(len(BAD_QUERIES)))
def test_invalid_queries_are_rejected(obj: Any) -> None:
    kv = Driver()
    result = decode_result(kv.sm.query(raw_command(obj)))
    assert result["ok"] is False and result["error"]


def test_oversized_query_is_rejected(kv: Driver) -> None:
    assert decode_result(kv.sm.query(b"\xc4" * 10_000))["ok"] is False


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_fuzz_random_bytes_never_raise(data: bytes) -> None:
    kv = Driver()
    kv.write(["put", "a", 1], session=9, seq=1)
    digest = kv.sm.digest()
    result = decode_result(kv.raw(data))
    if not result["ok"]:
        assert kv.sm.digest() == digest
    decode_result(kv.sm.query(data))


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
op_names = st.sampled_from(["put", "del", "del_prefix", "cas", "cas_del", "get", "range", "x"])


@settings(max_examples=300, deadline=None)
@given(
    header=st.lists(msgpack_values, max_size=5),
    name=op_names,
    args=st.lists(msgpack_values | st.sampled_from(["a", "b/c", ""]), max_size=4),
)
def test_fuzz_structured_commands_never_raise(header: list[Any], name: str, args: list[Any]) -> None:
    kv = Driver()
    kv.write(["put", "a", 1], session=9, seq=1)
    digest = kv.sm.digest()
    for command in [raw_command([*header[:3], [name, *args]]), raw_command([0, 0, 0, [name, *args]])]:
        result = decode_result(kv.raw(command))
        if not result["ok"]:
            assert kv.sm.digest() == digest
        else:
            digest = kv.sm.digest()
    decode_result(kv.sm.query(raw_command([name, *args])))


# ---------------------------------------------------------------------------------------------------------
# Snapshot and restore


def populated() -> Driver:
    kv = Driver()
    for i in range(50):
        kv.write(["put", f"k/{i:03d}", {"i": i, "f": i / 3, "b": bytes([i])}], session=1 + i % 4, seq=i)
    kv.write(["del", "k/007"])
    kv.write(["del_prefix", "k/04"])
    kv.write(["cas", "lock", None, "owner"], session=2, seq=100, ack=40)
    return kv


QUERIES: list[list[Any]] = [
    ["get", "k/001"],
    ["get", "k/007"],
    ["get", "lock"],
    ["range", "", 0, ""],
    ["range", "k/", 5, ""],
    ["range", "k/04", 0, ""],
    ["range", "k/", 3, "k/002"],
]


def test_snapshot_restore_round_trip() -> None:
    kv = populated()
    snap = kv.sm.snapshot()
    other = KVStateMachine()
    other.restore(snap)
    assert other.digest() == kv.sm.digest()
    assert other.snapshot() == snap
    assert other.applied_index == kv.sm.applied_index and other.applied_count == kv.sm.applied_count
    assert other.revision == kv.sm.revision and len(other) == len(kv.sm)
    assert other.session_ids() == kv.sm.session_ids()
    for q in QUERIES:
        assert other.query(encode_query(q)) == kv.sm.query(encode_query(q))


def test_duplicate_after_restore_is_still_deduplicated() -> None:
    kv = Driver(sessions=1)
    command = encode_command(1, 7, 0, ["put", "k", "v"])
    first = kv.raw(command)
    restored = Driver(KVStateMachine(), start=kv.sm.applied_index)
    restored.sm.restore(kv.sm.snapshot())
    # Both replicas go on applying the same log: a retry, a newer write acknowledging seq 7, the retry again.
    for replica in (kv, restored):
        assert replica.raw(command) == first
        assert replica.sm.revision == 1
        replica.write(["put", "k2", 2], session=1, seq=8, ack=8)
        assert decode_result(replica.raw(command)) == ALREADY
    assert restored.sm.digest() == kv.sm.digest()
    assert restored.sm.snapshot() == kv.sm.snapshot()


def test_restore_replaces_everything() -> None:
    target = populated()
    source = Driver()
    source.write(["put", "only", 1])
    target.sm.restore(source.sm.snapshot())
    assert target.sm.digest() == source.sm.digest()
    assert [x["key"] for x in target.range("")["kvs"]] == ["only"]
    assert target.sm.session_count == 0 and target.sm.applied_index == 1
    with pytest.raises(ApplyOrderError):
        target.sm.apply(1, encode_command(0, 0, 0, ["put", "x", 1]))


def test_replicas_applying_the_same_log_agree_and_order_independence_of_keys() -> None:
    a, b = Driver(), Driver()
    for kv in (a, b):
        for key in ["z", "a", "m"]:
            kv.write(["put", key, key])
    assert a.sm.digest() == b.sm.digest()
    # A restored replica and a live one agree even though their dicts were filled in different orders.
    c = KVStateMachine()
    c.restore(a.sm.snapshot())
    assert c.digest() == a.sm.digest()
    c.apply(4, encode_command(0, 0, 0, ["put", "b", 1]))
    a.raw(encode_command(0, 0, 0, ["put", "b", 1]))
    assert c.digest() == a.sm.digest() and c.snapshot() == a.sm.snapshot()


def test_digest_ignores_apply_position_but_snapshot_keeps_it() -> None:
    kv = Driver()
    kv.write(["put", "a", 1])
    digest, snap = kv.sm.digest(), kv.sm.snapshot()
    kv.raw(b"garbage")
    assert kv.sm.digest() == digest and kv.sm.snapshot() != snap


BAD_SNAPSHOTS: list[bytes] = [
    b"",
    b"\xc1",
    raw_command(None),
    raw_command([]),
    raw_command([2, 0, 0, 0, [], [], []]),  # unknown format version
    raw_command([1, 0, 0, 0, [], []]),
    raw_command([1, 0, 0, 0, ["a"], [], []]),
    raw_command([1, 0, 0, 1, ["b", "a"], [[1, 1, 1, 1], [1, 1, 1, 1]], []]),  # not sorted
    raw_command([1, 0, 0, 1, ["a", "a"], [[1, 1, 1, 1], [1, 1, 1, 1]], []]),  # duplicate
    raw_command([1, 0, 0, 1, ["a"], [[1, 2, 1, 1]], []]),  # create > mod
    raw_command([1, 0, 0, 1, ["a"], [[1, 1, 2, 1]], []]),  # mod > revision
    raw_command([1, 0, 0, 1, ["a"], [[1, 1, 1, 0]], []]),  # version 0
    raw_command([1, 0, 0, 1, [""], [[1, 1, 1, 1]], []]),
    raw_command([1, 0, 0, 0, [], [], [[0, 0, 1, []]]]),  # session 0
    raw_command([1, 0, 0, 0, [], [], [[1, 0, 1, []], [1, 0, 2, []]]]),  # duplicate session
    raw_command([1, 0, 0, 0, [], [], [[1, 5, 1, [[4, b"x"]]]]]),  # response below floor
    raw_command([1, 0, 0, 0, [], [], [[1, 0, 1, [[4, "x"]]]]]),  # response not bytes
    raw_command([1, -1, 0, 0, [], [], []]),
]


@pytest.mark.parametrize("data", BAD_SNAPSHOTS, ids=range(len(BAD_SNAPSHOTS)))
def test_invalid_snapshot_is_refused_and_changes_nothing(data: bytes) -> None:
    kv = populated()
    digest, snap = kv.sm.digest(), kv.sm.snapshot()
    with pytest.raises(ValueError, match="invalid snapshot"):
        kv.sm.restore(data)
    assert kv.sm.digest() == digest and kv.sm.snapshot() == snap


def test_prepare_restore_changes_nothing_until_the_swap() -> None:
    source = populated()
    snap = source.sm.snapshot()
    target = Driver()
    target.write(["put", "only", 1], session=3, seq=1)
    digest, before = target.sm.digest(), target.sm.snapshot()
    with pytest.raises(ValueError, match="beyond its log index"):
        target.sm.prepare_restore(snap, source.sm.applied_index - 1)
    swap = target.sm.prepare_restore(snap, source.sm.applied_index)
    assert target.sm.digest() == digest and target.sm.snapshot() == before
    swap()
    assert target.sm.snapshot() == snap and target.sm.session_bytes == source.sm.session_bytes


def test_restore_trims_sessions_to_the_configured_bound() -> None:
    kv = Driver(sessions=5)
    for sid in range(1, 6):
        kv.write(["put", "k", sid], session=sid, seq=1)
    small = KVStateMachine(max_sessions=2)
    small.restore(kv.sm.snapshot())
    assert small.session_ids() == [4, 5]


def test_result_decoding_rejects_non_results() -> None:
    for data in [b"\xc1", raw_command([1]), raw_command({"ok": 1})]:
        with pytest.raises(ValueError):
            decode_result(data)


# --- snapshots encoded in slices ----------------------------------------------------------------------


def _finish(job: Any) -> tuple[bytes, int]:
    steps = 0
    while True:
        steps += 1
        data = job.step()
        if data is not None:
            return data, steps


@pytest.mark.parametrize("keys", [0, 1, 15, 16, 300])
@pytest.mark.parametrize("step", [1, 7, 4096])
def test_a_snapshot_job_gives_the_snapshot_of_its_moment_whatever_happens_after(keys: int, step: int) -> None:
    d = Driver(KVStateMachine(snapshot_step_keys=step), sessions=5)
    for i in range(keys):
        d.write(["put", f"k{(i * 37) % 1000:04d}", {"n": i}], session=5, seq=i + 1, ack=i)
    want = d.sm.snapshot()
    job = d.sm.snapshot_job()
    d.write(["put", "k0000", "changed"])  # an overwrite, a new key, deletes: none may show in the job
    d.write(["put", "new", 1])
    d.write(["del", "k0037"])
    d.write(["del_prefix", "k01"])
    data, steps = _finish(job)
    assert data == want
    assert steps == max(1, -(-keys // step) + -(-keys // step))  # the keys, then the records, a slice each
    restored = KVStateMachine()
    restored.restore(data)
    assert restored.snapshot() == want
    assert restored.digest() != d.sm.digest()  # the writes after the job's moment are not in it


@pytest.mark.parametrize(
    "change", [["del_prefix", "k1"], ["del", "k10"], ["put", "k20", 0], ["put", "k5", 0]]
)
def test_a_snapshot_job_is_untouched_by_a_change_to_the_sorted_keys_it_holds(change: list[Any]) -> None:
    d = Driver(KVStateMachine(snapshot_step_keys=4))
    for i in range(30):
        d.write(["put", f"k{i}", i])
    d.range("k")  # the sorted key list is cached: the job takes that very list
    want = d.sm.snapshot()
    job = d.sm.snapshot_job()
    job.step()  # part of the keys encoded already
    d.write(change)
    assert _finish(job)[0] == want


_KEYS = st.sampled_from([f"{p}{i}" for p in ("a/", "b/", "ab") for i in range(12)])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _KEYS),
        st.tuples(st.just("del"), _KEYS),
        st.tuples(st.just("del_prefix"), st.sampled_from(["a/", "b/", "ab", "a", "zz"])),
        st.tuples(st.just("range"), st.sampled_from(["", "a/", "b/", "a"])),
        st.tuples(st.just("restore"), st.just("")),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_range_always_lists_exactly_the_keys_present_in_order(ops: list[tuple[str, str]]) -> None:
    """The sorted key list is patched with created and deleted keys between sorts; whatever the order
    of creates, deletes, prefix deletes, ranges and restores, a range lists exactly the keys present."""
    d = Driver()
    present: set[str] = set()
    for name, arg in ops:
        if name == "put":
            d.write(["put", arg, 1])
            present.add(arg)
        elif name == "del":
            d.write(["del", arg])
            present.discard(arg)
        elif name == "del_prefix":
            d.write(["del_prefix", arg])
            present = {k for k in present if not k.startswith(arg)}
        elif name == "restore":
            copy = KVStateMachine()
            copy.restore(d.sm.snapshot())
            d = Driver(copy, start=copy.applied_index)
        else:
            listed = [kv["key"] for kv in d.range(arg)["kvs"]]
            assert listed == sorted(k for k in present if k.startswith(arg))
    assert [kv["key"] for kv in d.range("")["kvs"]] == sorted(present)


@pytest.mark.parametrize(("created", "deleted"), [(10, 10), (150, 0), (0, 150), (150, 150), (900, 250)])
def test_range_after_many_creates_and_deletes_since_the_last_sort(created: int, deleted: int) -> None:
    """More changes between two ranges than the one-by-one patching takes (more deletes than
    MAX_PENDING_KEY_CHANGES, creates appended to the sorted run, more changes than the list holds):
    the range still lists exactly the keys present, in order."""
    d = Driver()
    present = {f"k{i * 7 % 400:04d}" for i in range(400)}
    for key in sorted(present):
        d.write(["put", key, 1])
    d.range("k", limit=1)  # sorts now: the changes below are merged in or patched into this list
    for i in range(deleted):
        key = f"k{i * 13 % 400:04d}"
        d.write(["del", key])
        present.discard(key)
    for i in range(created):
        key = f"k{(i * 11) % 2000:04d}x"
        d.write(["put", key, 1])
        present.add(key)
    want = sorted(present)
    listed: list[str] = []
    after = ""
    while True:
        page = d.range("k", limit=37, after=after)  # pages: `after` in the middle of the merge
        listed += [kv["key"] for kv in page["kvs"]]
        if not page["more"]:
            break
        after = listed[-1]
    assert listed == want


@pytest.mark.parametrize(
    "bound", ["max_sessions", "max_responses_per_session", "snapshot_step_keys", "max_session_bytes"]
)
def test_bounds_must_be_positive(bound: str) -> None:
    with pytest.raises(ValueError, match=bound):
        KVStateMachine(**{bound: 0})


def test_prefix_changes_counts_every_change_under_the_prefix_and_nothing_else() -> None:
    d = Driver()
    sm = d.sm
    d.write(["put", "m/a", 1])
    seen = sm.prefix_changes("m/")
    d.write(["put", "other", 1])
    d.write(["del", "m/zz"])  # absent: nothing changed
    d.write(["del_prefix", "x"])
    assert sm.prefix_changes("m/") == seen
    steps = [
        ["put", "m/b", 2],  # a new key
        ["put", "m/a", 3],  # an overwrite
        ["del", "m/a"],
        ["del_prefix", "m"],  # a wider prefix that covers it
    ]
    for op in steps:
        d.write(op)
        now = sm.prefix_changes("m/")
        assert now != seen, op
        seen = now
    sm.restore(KVStateMachine().snapshot())  # a restored snapshot may change anything
    assert sm.prefix_changes("m/") != seen
