"""Tests for the linearizability checker in tests/sim/linearizability.py: it must accept every history a
linearizable KV store can produce and reject the classic anomalies (stale read, lost cas, re-applied write,
phantom read, impossible delete)."""

from __future__ import annotations

import itertools
import random
import sys
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sim.linearizability import CheckResult, Operation, canonical, check_history, check_key

KEY = "k"


def put(client: str, value: object, invoke: float, complete: float | None, key: str = KEY) -> Operation:
    return Operation(client, key, "put", (value,), invoke, complete, None)


def get(client: str, result: object, invoke: float, complete: float | None, key: str = KEY) -> Operation:
    return Operation(client, key, "get", (), invoke, complete, result)


def delete(client: str, existed: bool, invoke: float, complete: float | None, key: str = KEY) -> Operation:
    return Operation(client, key, "delete", (), invoke, complete, existed)


def cas(
    client: str,
    expected: object,
    new: object,
    swapped: bool,
    invoke: float,
    complete: float | None,
    key: str = KEY,
) -> Operation:
    return Operation(client, key, "cas", (expected, new), invoke, complete, swapped)


def assert_accepted(history: list[Operation]) -> None:
    result = check_history(history)
    assert result.ok, result.explanation
    assert result.bad_key is None


def assert_rejected(history: list[Operation], key: str = KEY) -> CheckResult:
    result = check_history(history)
    assert not result.ok
    assert result.bad_key == key
    assert repr(key) in result.explanation
    assert "not linearizable" in result.explanation
    return result


# ---------------------------------------------------------------------------------------------- accepts


def test_empty_history_is_linearizable() -> None:
    result = check_history([])
    assert result.ok
    assert result.bad_key is None
    assert check_key([])


def test_sequential_history_is_accepted() -> None:
    history = [
        get("a", None, 0, 1),
        put("a", 1, 2, 3),
        get("b", 1, 4, 5),
        cas("b", 1, 2, True, 6, 7),
        cas("a", 1, 3, False, 8, 9),
        get("a", 2, 10, 11),
        delete("b", True, 12, 13),
        delete("a", False, 14, 15),
        get("b", None, 16, 17),
        cas("a", None, "x", True, 18, 19),
        get("b", "x", 20, 21),
    ]
    assert_accepted(history)
    assert check_key(history)


@pytest.mark.parametrize("seen", [1, 2])
def test_get_concurrent_with_put_may_see_old_or_new_value(seen: int) -> None:
    history = [put("a", 1, 0, 1), put("a", 2, 2, 6), get("b", seen, 3, 4)]
    assert_accepted(history)


def test_get_concurrent_with_put_may_not_see_a_third_value() -> None:
    assert_rejected([put("a", 1, 0, 1), put("a", 2, 2, 6), get("b", 3, 3, 4)])


def test_reads_may_be_reordered_only_within_overlap() -> None:
    # Two overlapping gets during a put may see new-then-old only if they overlap each other.
    overlapping = [put("a", 1, 0, 1), put("a", 2, 2, 10), get("b", 2, 3, 6), get("c", 1, 4, 7)]
    assert_accepted(overlapping)
    # Once a later get starts after an earlier one returned the new value, it may not see the old one.
    ordered = [put("a", 1, 0, 1), put("a", 2, 2, 10), get("b", 2, 3, 4), get("c", 1, 5, 6)]
    assert_rejected(ordered)


def test_cas_chain_is_accepted() -> None:
    history = [
        cas("a", None, 0, True, 0, 1),
        cas("a", 0, 1, True, 2, 3),
        cas("b", 0, 9, False, 4, 5),
        cas("b", 1, 2, True, 6, 7),
        cas("c", 2, 3, True, 8, 9),
        get("a", 3, 10, 11),
    ]
    assert_accepted(history)


def test_concurrent_cas_with_same_expected_one_wins() -> None:
    history = [
        put("p", 0, 0, 1),
        cas("a", 0, 1, True, 2, 5),
        cas("b", 0, 2, False, 3, 6),
        get("c", 1, 7, 8),
    ]
    assert_accepted(history)


def test_concurrent_cas_chain_orders_itself() -> None:
    # Three concurrent increments by cas, all succeed; only one order (0->1->2->3) explains them.
    history = [
        put("p", 0, 0, 1),
        cas("c", 2, 3, True, 2, 9),
        cas("b", 1, 2, True, 2, 9),
        cas("a", 0, 1, True, 2, 9),
        get("p", 3, 10, 11),
    ]
    assert_accepted(history)


def test_unknown_outcome_put_that_becomes_visible_later() -> None:
    history = [
        put("a", 1, 0, 1),
        put("b", 2, 2, None),  # timed out
        get("c", 1, 3, 4),
        get("c", 1, 5, 6),
        get("c", 2, 100, 101),  # it took effect long after its client gave up
        get("c", 2, 102, 103),
    ]
    assert_accepted(history)


def test_unknown_outcome_put_that_never_takes_effect() -> None:
    history = [put("a", 1, 0, 1), put("b", 2, 2, None), get("c", 1, 3, 4), get("c", 1, 50, 51)]
    assert_accepted(history)


def test_unknown_outcome_ops_of_every_kind_are_optional() -> None:
    history = [
        put("a", 1, 0, 1),
        delete("b", False, 2, None),  # result of an unknown op is ignored
        cas("b", 1, 5, False, 3, None),
        get("b", "ignored", 4, None),
        get("c", 1, 5, 6),
        get("c", 5, 7, 8),  # the unknown cas took effect between the two reads
        get("c", None, 9, 10),  # and then the unknown delete did
    ]
    assert_accepted(history)


def test_unknown_outcome_put_cannot_take_effect_twice() -> None:
    history = [
        put("a", 1, 0, 1),
        put("b", 2, 2, None),
        get("c", 2, 3, 4),
        put("a", 3, 5, 6),
        get("c", 2, 7, 8),  # 2 reappears after being overwritten: would need the write applied again
    ]
    assert_rejected(history)


def test_unknown_outcome_put_cannot_take_effect_before_invocation() -> None:
    assert_rejected([get("c", 7, 0, 1), put("b", 7, 2, None)])


def test_multiple_keys_are_checked_independently() -> None:
    history = [
        put("a", 1, 0, 1, key="x"),
        put("a", 1, 0, 1, key="y"),
        put("b", 2, 2, 3, key="x"),
        get("c", 2, 4, 5, key="x"),
        get("c", 1, 4, 5, key="y"),
        delete("a", True, 6, 7, key="y"),
        get("b", None, 8, 9, key="y"),
        get("b", 2, 8, 9, key="x"),
    ]
    result = check_history(history)
    assert result.ok, result.explanation
    assert result.keys_checked == 2
    assert result.ops_checked == len(history)


def test_bad_key_is_identified_among_good_keys() -> None:
    history = [
        put("a", 1, 0, 1, key="good"),
        get("b", 1, 2, 3, key="good"),
        put("a", 1, 0, 1, key="bad"),
        get("b", 2, 2, 3, key="bad"),
        put("a", 5, 0, 1, key="other"),
    ]
    result = assert_rejected(history, key="bad")
    assert "get() -> 2" in result.explanation


def test_touching_intervals_count_as_concurrent() -> None:
    # The get is invoked at the instant the put completes: either order is allowed.
    assert_accepted([put("a", 1, 0, 1), get("b", None, 1, 2)])
    assert_rejected([put("a", 1, 0, 1), get("b", None, 1.5, 2)])


def test_structured_values_compare_by_equality() -> None:
    doc = {"name": "n1", "tags": ["x", "y"], "meta": {"port": 5000, "raw": b"\x00"}}
    equal_copy = {"meta": {"raw": b"\x00", "port": 5000}, "tags": ["x", "y"], "name": "n1"}
    assert_accepted(
        [
            put("a", doc, 0, 1),
            get("b", equal_copy, 2, 3),
            cas("b", equal_copy, [1], True, 4, 5),
            get("a", [1], 6, 7),
        ]
    )
    assert_rejected([put("a", doc, 0, 1), get("b", {**doc, "tags": ["y", "x"]}, 2, 3)])


def test_canonical_form_matches_equality() -> None:
    assert canonical([1, {"a": [2]}]) == canonical([1, {"a": [2]}])
    assert canonical({"a": 1, "b": 2}) == canonical({"b": 2, "a": 1})
    assert canonical([1, 2]) != canonical([2, 1])
    assert canonical([]) != canonical({})
    assert canonical("a") != canonical(b"a")
    hash(canonical({"k": [{"n": [1, 2]}]}))


def test_check_key_rejects_mixed_keys_and_bad_operations() -> None:
    with pytest.raises(ValueError):
        check_key([put("a", 1, 0, 1, key="x"), put("a", 1, 0, 1, key="y")])
    with pytest.raises(ValueError):
        check_history([Operation("a", KEY, "increment", (), 0, 1, None)])
    with pytest.raises(ValueError):
        check_history([Operation("a", KEY, "put", (), 0, 1, None)])
    with pytest.raises(ValueError):
        check_history([put("a", 1, 5, 4)])


# ---------------------------------------------------------------------------------------------- rejects


def test_stale_read_is_rejected() -> None:
    history = [put("a", 1, 0, 1), put("a", 2, 2, 3), get("b", 1, 4, 5)]
    result = assert_rejected(history)
    assert not check_key(history)
    # The explanation shows how far the search got and the op that could not be placed.
    assert "put(2)" in result.explanation
    assert "b: get() -> 1 [4, 5]" in result.explanation
    assert "Value after that prefix: 2" in result.explanation


def test_lost_compare_and_swap_is_rejected() -> None:
    history = [
        put("p", 0, 0, 1),
        cas("a", 0, 1, True, 2, 5),
        cas("b", 0, 2, True, 3, 6),
    ]
    result = assert_rejected(history)
    assert "cas(0, 1) -> True" in result.explanation or "cas(0, 2) -> True" in result.explanation


def test_double_applied_write_is_rejected() -> None:
    # Client a writes 1 once. It is read, overwritten by b's 2 (read back), and then read as 1 again:
    # impossible unless a's single write was applied a second time. No concurrent write of 1 exists.
    history = [
        put("a", 1, 0, 1),
        get("c", 1, 2, 3),
        put("b", 2, 4, 5),
        get("c", 2, 6, 7),
        get("c", 1, 8, 9),
    ]
    assert_rejected(history)


def test_double_applied_increment_is_rejected() -> None:
    # An increment implemented as cas(n, n+1) retried after success would move 1 -> 2 -> 3 with one call.
    history = [
        put("a", 0, 0, 1),
        cas("a", 0, 1, True, 2, 3),
        cas("a", 1, 2, True, 4, 5),  # the only increment from 1
        get("b", 3, 6, 7),  # a second application would be needed to reach 3
    ]
    assert_rejected(history)


def test_read_of_never_written_value_is_rejected() -> None:
    assert_rejected([get("a", "ghost", 0, 1)])
    assert_rejected([put("a", 1, 0, 1), put("b", 2, 0.5, 3), get("c", 99, 1, 2)])


def test_delete_returning_true_on_absent_key_is_rejected() -> None:
    assert_rejected([delete("a", True, 0, 1)])
    assert_rejected([put("a", 1, 0, 1), delete("a", True, 2, 3), delete("b", True, 4, 5)])
    # ...but two concurrent deletes of a present key may not both report it existed either.
    assert_rejected([put("a", 1, 0, 1), delete("a", True, 2, 5), delete("b", True, 3, 6)])
    assert_accepted([put("a", 1, 0, 1), delete("a", True, 2, 5), delete("b", False, 3, 6)])


def test_failed_cas_that_should_have_succeeded_is_rejected() -> None:
    assert_rejected([cas("a", None, 1, False, 0, 1)])
    assert_rejected([put("a", 4, 0, 1), cas("b", 4, 5, False, 2, 3)])


def test_unknown_put_then_reverted_value_is_rejected() -> None:
    history = [put("a", 1, 0, 1), put("b", 2, 2, None), get("c", 2, 3, 4), get("c", 1, 5, 6)]
    assert_rejected(history)


# ------------------------------------------------------------------------------ generated histories


def generate_history(
    rng: random.Random,
    n_ops: int,
    n_clients: int,
    keys: list[str],
    unknown_rate: float = 0.0,
    overlap: float = 1.0,
) -> list[Operation]:
    """Execute random operations against a linearizable dict and record what clients would observe.

    Each client issues one operation at a time. Every completed operation takes effect at a random instant
    inside its interval; an unknown-outcome operation takes effect at a random instant after its invocation
    (possibly after its client moved on) or never. Results come from applying effects in instant order.
    ``overlap`` scales how long operations last relative to the gaps between them.
    """
    # (effect instant, tie-break, op with a placeholder result)
    planned: list[tuple[float, int, Operation]] = []
    never: list[Operation] = []
    clock = [rng.uniform(0, 1) for _ in range(n_clients)]
    values_written = 0
    for index in range(n_ops):
        client = rng.randrange(n_clients)
        invoke = clock[client] + rng.uniform(0.0, 1.0)
        duration = rng.uniform(0.05, 1.0) * overlap
        kind = rng.choice(["put", "put", "get", "get", "get", "delete", "cas", "cas"])
        key = rng.choice(keys)
        if kind == "put":
            args: tuple[object, ...] = (f"v{values_written}",)
            values_written += 1
        elif kind == "cas":
            # Expect a recently written value (or absence) so that some swaps succeed.
            recent = rng.randrange(max(0, values_written - 3), values_written + 1)
            expected = None if rng.random() < 0.2 else f"v{recent}"
            args = (expected, f"v{values_written}")
            values_written += 1
        else:
            args = ()
        unknown = rng.random() < unknown_rate
        complete: float | None = None if unknown else invoke + duration
        op = Operation(f"c{client}", key, kind, args, invoke, complete, None)
        clock[client] = invoke + duration
        if unknown:
            if rng.random() < 0.5:
                never.append(op)
            else:
                planned.append((invoke + rng.uniform(0, 10 * duration + 1), index, op))
        else:
            planned.append((rng.uniform(invoke, invoke + duration), index, op))
    planned.sort(key=lambda item: (item[0], item[1]))
    store: dict[str, object] = {}
    history: list[Operation] = list(never)
    for _, _, op in planned:
        current = store.get(op.key)
        result: object = None
        if op.kind == "put":
            store[op.key] = op.args[0]
        elif op.kind == "get":
            result = current
        elif op.kind == "delete":
            result = op.key in store
            store.pop(op.key, None)
        else:
            swapped = current == op.args[0]
            result = swapped
            if swapped:
                store[op.key] = op.args[1]
        history.append(replace(op, result=result))
    rng.shuffle(history)  # the checker must not rely on input order
    return history


def corrupt_one_get(rng: random.Random, history: list[Operation]) -> list[Operation] | None:
    candidates = [i for i, op in enumerate(history) if op.kind == "get" and op.complete is not None]
    if not candidates:
        return None
    victim = rng.choice(candidates)
    corrupted = list(history)
    corrupted[victim] = replace(history[victim], result="never-written")
    return corrupted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    n_ops=st.integers(min_value=1, max_value=60),
    n_clients=st.integers(min_value=1, max_value=6),
    n_keys=st.integers(min_value=1, max_value=3),
    unknown_rate=st.sampled_from([0.0, 0.0, 0.1, 0.25]),
    overlap=st.sampled_from([0.3, 1.0, 3.0]),
)
def test_executed_histories_are_accepted_and_corrupted_ones_rejected(
    seed: int, n_ops: int, n_clients: int, n_keys: int, unknown_rate: float, overlap: float
) -> None:
    rng = random.Random(seed)
    keys = [f"key{i}" for i in range(n_keys)]
    history = generate_history(rng, n_ops, n_clients, keys, unknown_rate, overlap)
    result = check_history(history)
    assert result.ok, result.explanation
    corrupted = corrupt_one_get(rng, history)
    if corrupted is not None:
        bad = check_history(corrupted)
        assert not bad.ok
        assert bad.bad_key in keys
        # the search may get stuck at another op of that key, so the explanation need not name the
        # corrupted read; it must name the key
        assert repr(bad.bad_key) in bad.explanation


# ------------------------------------------------------- cross-check against brute force on tiny histories


def brute_force_linearizable(ops: list[Operation]) -> bool:
    """Try every subset of unknown-outcome ops and every real-time-respecting order: the definition itself."""
    known = [op for op in ops if op.complete is not None]
    unknown = [op for op in ops if op.complete is None]

    def precedes(first: Operation, second: Operation) -> bool:
        return first.complete is not None and first.complete < second.invoke

    def valid_sequence(order: tuple[Operation, ...]) -> bool:
        state: object = None
        for op in order:
            observed_ok = True
            if op.kind == "put":
                state = op.args[0]
            elif op.kind == "get":
                observed_ok = op.result == state
            elif op.kind == "delete":
                observed_ok = op.result == (state is not None)
                state = None
            else:
                swapped = state == op.args[0]
                observed_ok = op.result == swapped
                if swapped:
                    state = op.args[1]
            if op.complete is not None and not observed_ok:
                return False
        return True

    for size in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, size):
            included = known + list(chosen)
            for order in itertools.permutations(included):
                respects_time = all(
                    not precedes(order[j], order[i])
                    for i in range(len(order))
                    for j in range(i + 1, len(order))
                )
                if respects_time and valid_sequence(order):
                    return True
    return False


_values = st.sampled_from([None, 1, 2])


@st.composite
def tiny_histories(draw: st.DrawFn) -> list[Operation]:
    ops: list[Operation] = []
    for index in range(draw(st.integers(min_value=0, max_value=5))):
        invoke = draw(st.integers(min_value=0, max_value=6))
        duration = draw(st.integers(min_value=0, max_value=4))
        complete = None if draw(st.integers(min_value=0, max_value=4)) == 0 else invoke + duration
        kind = draw(st.sampled_from(["put", "get", "delete", "cas"]))
        client = f"c{index}"
        if kind == "put":
            ops.append(put(client, draw(st.sampled_from([1, 2])), invoke, complete))
        elif kind == "get":
            ops.append(get(client, draw(_values), invoke, complete))
        elif kind == "delete":
            ops.append(delete(client, draw(st.booleans()), invoke, complete))
        else:
            ops.append(
                cas(
                    client,
                    draw(_values),
                    draw(st.sampled_from([1, 2])),
                    draw(st.booleans()),
                    invoke,
                    complete,
                )
            )
    return ops


@settings(max_examples=600, deadline=None)
@given(history=tiny_histories())
def test_checker_agrees_with_brute_force_on_tiny_histories(history: list[Operation]) -> None:
    assert check_key(history) == brute_force_linearizable(history)


# ----------------------------------------------------------------------------------- scale / performance


def test_two_thousand_op_history_checks() -> None:
    rng = random.Random(20240601)
    history = generate_history(rng, 2000, 5, [KEY], unknown_rate=0.0, overlap=0.3)
    assert len(history) == 2000
    result = check_history(history)
    assert result.ok, result.explanation
    assert result.ops_checked == 2000
    corrupted = corrupt_one_get(rng, history)
    assert corrupted is not None
    assert not check_history(corrupted).ok


def test_long_sequential_history_does_not_hit_recursion_limit() -> None:
    n_ops = max(5000, 3 * sys.getrecursionlimit())
    history: list[Operation] = []
    for i in range(n_ops):
        if i % 2 == 0:
            history.append(put("a", i, 2 * i, 2 * i + 1))
        else:
            history.append(get("b", i - 1, 2 * i, 2 * i + 1))
    assert check_key(history)
    history.append(get("b", -1, 2 * n_ops, 2 * n_ops + 1))
    assert not check_key(history)


# ------------------------------------------------------------------------- clear (a multi-key delete)


def clear(client: str, invoke: float, complete: float | None, key: str = KEY) -> Operation:
    return Operation(client, key, "clear", (), invoke, complete, None)


def test_a_clear_empties_the_key_whether_or_not_it_held_a_value() -> None:
    assert_accepted([put("a", 1, 0, 1), clear("b", 2, 3), get("c", None, 4, 5)])
    assert_accepted([clear("b", 0, 1), get("c", None, 2, 3)])


def test_a_read_after_a_completed_clear_cannot_see_the_old_value() -> None:
    assert_rejected([put("a", 1, 0, 1), clear("b", 2, 3), get("c", 1, 4, 5)])


def test_an_unknown_clear_may_take_effect_later_or_never() -> None:
    assert_accepted([put("a", 1, 0, 1), clear("b", 2, None), get("c", 1, 4, 5), get("c", None, 6, 7)])
    assert_accepted([put("a", 1, 0, 1), clear("b", 2, None), get("c", 1, 4, 5)])
    # ... but not before it was invoked
    assert_rejected([put("a", 1, 0, 1), get("c", None, 2, 3), clear("b", 4, None)])
