"""Range reads in pages: one page (RangePage), and an iterator over every key of a prefix (RangeIterator).

A range query answers one page at a time (cluster/kv/ops.py): at most `limit` keys (0 = the cluster's
default page, DEFAULT_RANGE_LIMIT; more than MAX_RANGE_LIMIT is refused with InvalidRequest) and at most
MAX_RANGE_BYTES of entries, with `more` telling whether further keys match. The next page starts after
the last key of this one.

Consistency across pages. The cluster keeps no history of older revisions, so each page is read at its
own revision (page.revision), the latest one when it is served (with serializable=True, whatever the
answering node had applied). Paging through a prefix therefore gives:

* every key at most once, in key order;
* every key that existed under the prefix from the first page's read to the last page's, exactly once,
  with its value as of the revision of the page that holds it;
* a key created or deleted during the iteration, or not.

When every page was read at the same revision (RangeIterator.consistent), nothing changed in between and
the listing is exactly the prefix's content at that revision; otherwise a caller that needs one snapshot
can iterate again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cluster.errors import Rejected


@dataclass(frozen=True, slots=True)
class RangePage:
    """One page of a range read: entries sorted by key, whether more keys match, and the revision the
    page was read at. Each entry is a dict like Client.get_kv's."""

    kvs: list[dict[str, Any]]
    more: bool
    revision: int

    @property
    def next_after(self) -> str:
        """The `after` of the next page: this page's last key ("" when the page is empty)."""
        return str(self.kvs[-1]["key"]) if self.kvs else ""


def page_from_result(result: dict[str, Any]) -> RangePage:
    """The page a range query's result holds; Rejected when it is not one."""
    kvs, more, revision = result.get("kvs"), result.get("more"), result.get("rev")
    if not isinstance(kvs, list) or not isinstance(more, bool) or not isinstance(revision, int):
        raise Rejected("range", "unreadable answer from the cluster: not a range page")
    if more and not kvs:  # the cluster never says so; following it would ask for the same page forever
        raise Rejected("range", "unreadable answer from the cluster: more keys, but none in the page")
    return RangePage(kvs, more, revision)


class _PageCursor:
    """The bookkeeping of reading a prefix page by page, shared by the blocking and the async iterator."""

    def __init__(self) -> None:
        self._entries: list[dict[str, Any]] = []
        self._position = 0
        self._after = ""
        self._finished = False
        self.pages = 0
        self.first_revision = 0  # the revision of the first page read (0 before that)
        self.last_revision = 0  # the revision of the latest page read

    @property
    def consistent(self) -> bool:
        """Whether every page so far was read at one revision (so nothing changed in between)."""
        return self.first_revision == self.last_revision

    def _needs_page(self) -> bool:
        return self._position >= len(self._entries) and not self._finished

    def _take(self) -> dict[str, Any] | None:
        """The next entry of the current page, or None at the end of the prefix."""
        if self._position >= len(self._entries):
            return None
        entry = self._entries[self._position]
        self._position += 1
        return entry

    def _accept(self, page: RangePage) -> None:
        self.pages += 1
        if self.pages == 1:
            self.first_revision = page.revision
        self.last_revision = page.revision
        self._entries = page.kvs
        self._position = 0
        self._after = page.next_after
        self._finished = not page.more


class RangeIterator(_PageCursor, Iterator[dict[str, Any]]):
    """Every entry under a prefix, in key order, fetching one page at a time as it is consumed.

    Errors of a page request (Unavailable, Rejected, ...) are raised from next(); the iterator may be
    resumed after one, from the page that failed.
    """

    def __init__(self, fetch: Callable[[str], RangePage]) -> None:
        super().__init__()
        self._fetch = fetch  # after -> the page of keys after it

    def __iter__(self) -> RangeIterator:
        return self

    def __next__(self) -> dict[str, Any]:
        while self._needs_page():
            self._accept(self._fetch(self._after))
        entry = self._take()
        if entry is None:
            raise StopIteration
        return entry


class AsyncRangeIterator(_PageCursor, AsyncIterator[dict[str, Any]]):
    """RangeIterator for AsyncClient: `async for kv in c.range_all(prefix)`; the same pages and errors."""

    def __init__(self, fetch: Callable[[str], Awaitable[RangePage]]) -> None:
        super().__init__()
        self._fetch = fetch

    def __aiter__(self) -> AsyncRangeIterator:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while self._needs_page():
            self._accept(await self._fetch(self._after))
        entry = self._take()
        if entry is None:
            raise StopAsyncIteration
        return entry
