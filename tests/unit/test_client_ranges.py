"""The client's range pages and the iterator that follows them (cluster/client/ranges.py), without a
cluster: pages come from a stand-in for Client.range."""

from __future__ import annotations

from typing import Any

import pytest

from cluster import Rejected, Unavailable
from cluster.client.ranges import RangeIterator, RangePage, page_from_result


def entry(key: str) -> dict[str, Any]:
    return {"key": key, "value": key.upper(), "create_revision": 1, "mod_revision": 1, "version": 1}


class Pages:
    """Serves pages of two keys from a sorted key list, at the given revisions, and records each `after`."""

    def __init__(self, keys: list[str], revisions: list[int], fail_at: int = -1) -> None:
        self.keys = keys
        self.revisions = revisions
        self.asked: list[str] = []
        self.fail_at = fail_at

    def __call__(self, after: str) -> RangePage:
        self.asked.append(after)
        if len(self.asked) - 1 == self.fail_at:
            self.fail_at = -1
            raise Unavailable("range", 1.0)
        rest = [k for k in self.keys if k > after]
        return RangePage([entry(k) for k in rest[:2]], len(rest) > 2, self.revisions[len(self.asked) - 1])


def test_the_iterator_follows_pages_after_the_last_key() -> None:
    pages = Pages(["a", "b", "c", "d", "e"], [7, 7, 7])
    it = RangeIterator(pages)
    assert pages.asked == []  # nothing is read before the first next()
    assert [kv["key"] for kv in it] == ["a", "b", "c", "d", "e"]
    assert pages.asked == ["", "b", "d"] and it.pages == 3
    assert (it.first_revision, it.last_revision, it.consistent) == (7, 7, True)
    assert list(it) == [] and pages.asked == ["", "b", "d"]  # finished: no further request


def test_pages_at_different_revisions_are_reported_inconsistent() -> None:
    it = RangeIterator(Pages(["a", "b", "c"], [7, 9]))
    assert len(list(it)) == 3
    assert (it.first_revision, it.last_revision, it.consistent) == (7, 9, False)


def test_a_failed_page_is_raised_and_the_iterator_resumes_from_it() -> None:
    pages = Pages(["a", "b", "c", "d", "e"], [1, 1, 1, 1], fail_at=1)
    it = RangeIterator(pages)
    got = [next(it)["key"], next(it)["key"]]
    with pytest.raises(Unavailable):
        next(it)
    got += [kv["key"] for kv in it]
    assert got == ["a", "b", "c", "d", "e"] and pages.asked == ["", "b", "b", "d"]


def test_an_empty_prefix_is_one_empty_page() -> None:
    pages = Pages([], [3])
    assert list(RangeIterator(pages)) == [] and pages.asked == [""]


def test_next_after_is_the_last_key_of_the_page() -> None:
    assert RangePage([entry("x/1"), entry("x/2")], True, 4).next_after == "x/2"
    assert RangePage([], False, 4).next_after == ""


@pytest.mark.parametrize(
    "result",
    [
        {"ok": True, "rev": 1, "kvs": [], "more": True},  # would ask for the same page forever
        {"ok": True, "rev": 1, "kvs": None, "more": False},
        {"ok": True, "rev": "1", "kvs": [], "more": False},
        {"ok": True, "rev": 1, "kvs": []},
    ],
)
def test_a_malformed_page_is_refused(result: dict[str, Any]) -> None:
    with pytest.raises(Rejected, match="unreadable answer"):
        page_from_result(result)


def test_a_page_from_a_result() -> None:
    page = page_from_result({"ok": True, "rev": 5, "kvs": [entry("k")], "more": True})
    assert page == RangePage([entry("k")], True, 5)
