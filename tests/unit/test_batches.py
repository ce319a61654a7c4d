"""Unit tests for transport/batches.py: runs that respect the item and byte limits, in order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from transport.batches import batches
from transport.codec import MAX_BATCH_ITEMS


def test_nothing_and_one_item() -> None:
    assert list(batches([], 10, len)) == []
    assert list(batches([b"x" * 50], 10, len)) == [[b"x" * 50]]  # too big alone: still sent, alone


def test_byte_limit_cuts_runs() -> None:
    items = [b"a" * 4, b"b" * 4, b"c" * 4, b"d" * 20, b"e"]
    assert list(batches(items, 8, len)) == [[b"a" * 4, b"b" * 4], [b"c" * 4], [b"d" * 20], [b"e"]]


def test_item_limit_cuts_runs() -> None:
    items = [b""] * (2 * MAX_BATCH_ITEMS + 1)
    assert [len(run) for run in batches(items, 1 << 30, len)] == [MAX_BATCH_ITEMS, MAX_BATCH_ITEMS, 1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=60), st.integers(min_value=1, max_value=64))
def test_runs_cover_every_item_in_order_within_the_limit(sizes: list[int], limit: int) -> None:
    items = [bytes(n) for n in sizes]
    runs = [list(run) for run in batches(items, limit, len)]
    assert [item for run in runs for item in run] == items
    for run in runs:
        assert run
        assert len(run) == 1 or sum(map(len, run)) <= limit
