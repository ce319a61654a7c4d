"""LogIndex: what the storage remembers about the durable log without holding its entries.

It tracks the snapshot's index and term, the exact last index and the log's terms as runs of
(first index, term) (terms change rarely, so this stays tiny). That is enough to name new segments with
the log's exact next index and to decide, when a snapshot is persisted, whether it matches the log
(keep the entries after it) or conflicts with it (discard them; paper section 7).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from actors.messages import Entry


class LogIndex:
    def __init__(self) -> None:
        self.snapshot_index = 0
        self.snapshot_term = 0
        self.last = 0
        self._starts: list[int] = []  # first index of each run of equal terms, ascending
        self._terms: list[int] = []

    def load(self, snapshot_index: int, snapshot_term: int, entries: Sequence[Entry]) -> None:
        self.snapshot_index, self.snapshot_term = snapshot_index, snapshot_term
        self.last = snapshot_index
        self._starts, self._terms = [], []
        self.append(entries)

    def copy(self) -> LogIndex:
        twin = LogIndex()
        twin.snapshot_index, twin.snapshot_term, twin.last = (
            self.snapshot_index,
            self.snapshot_term,
            self.last,
        )
        twin._starts, twin._terms = list(self._starts), list(self._terms)
        return twin

    def term_at(self, index: int) -> int | None:
        if index == self.snapshot_index:
            return self.snapshot_term
        if not self.snapshot_index < index <= self.last:
            return None
        return self._terms[bisect_right(self._starts, index) - 1]

    def append(self, entries: Sequence[Entry]) -> None:
        """Entries continue the log at entries[0].index (anything from there on is replaced)."""
        if not entries:
            return
        self.truncate(entries[0].index)
        starts, terms = self._starts, self._terms
        current = terms[-1] if terms else None
        for e in entries:
            if e.term != current:
                starts.append(e.index)
                terms.append(e.term)
                current = e.term
        self.last = entries[-1].index

    def truncate(self, from_index: int) -> None:
        """Drop entries >= from_index."""
        if from_index > self.last:
            return
        self.last = max(from_index - 1, self.snapshot_index)
        cut = bisect_right(self._starts, self.last)
        del self._starts[cut:]
        del self._terms[cut:]

    def apply_snapshot(self, index: int, term: int) -> bool:
        """Let a snapshot cover the log up to index. Returns True when entries after index were
        discarded because the log conflicts with the snapshot."""
        matches = self.term_at(index) == term
        discarded = not matches and self.last > index
        if matches and index <= self.last:
            cut = bisect_right(self._starts, index)
            # The run holding index + 1 (if any) now starts there.
            keep_starts, keep_terms = self._starts[cut:], self._terms[cut:]
            if index < self.last and (not keep_starts or keep_starts[0] != index + 1):
                keep_starts.insert(0, index + 1)
                keep_terms.insert(0, self._terms[cut - 1])
            self._starts, self._terms = keep_starts, keep_terms
        else:
            self._starts, self._terms = [], []
            self.last = index
        self.snapshot_index, self.snapshot_term = index, term
        self.last = max(self.last, index)
        return discarded
