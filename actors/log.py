"""The in-memory Raft log of one node: entries after a compaction point, with term lookups for matching.

Owned and written only by NodeActor (DESIGN.md rule 2); the election and replication actors read it
through the LogView protocol. Entries at or below `base_index` were compacted into a snapshot; `base_term`
is the term of the entry at `base_index` (0 for the empty log).
"""

from __future__ import annotations

from typing import Protocol

from actors.messages import Entry


class LogView(Protocol):
    """The read-only face of the log that other actors may use."""

    @property
    def base_index(self) -> int: ...

    def last_index(self) -> int: ...

    def last_term(self) -> int: ...

    def term_at(self, index: int) -> int | None: ...

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]: ...

    def last_index_of_term(self, term: int) -> int: ...

    def is_up_to_date(self, last_index: int, last_term: int) -> bool: ...


class RaftLog:
    """Entries `base_index + 1 ..` in a list; index arithmetic instead of searching."""

    __slots__ = ("_base_index", "_base_term", "_entries")

    def __init__(self, base_index: int = 0, base_term: int = 0, entries: list[Entry] | None = None) -> None:
        self._base_index = base_index
        self._base_term = base_term
        self._entries: list[Entry] = []
        for entry in entries or []:
            self.append(entry)

    @property
    def base_index(self) -> int:
        return self._base_index

    @property
    def base_term(self) -> int:
        return self._base_term

    def last_index(self) -> int:
        return self._base_index + len(self._entries)

    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._base_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at index; None when it is compacted away or beyond the end."""
        if index == self._base_index:
            return self._base_term
        offset = index - self._base_index - 1
        if offset < 0 or offset >= len(self._entries):
            return None
        return self._entries[offset].term

    def entry(self, index: int) -> Entry:
        offset = index - self._base_index - 1
        if offset < 0 or offset >= len(self._entries):
            raise IndexError(f"log has no entry {index} (base {self._base_index}, last {self.last_index()})")
        return self._entries[offset]

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries lo..hi-1 (lo > base_index), cut after the first entry that reaches max_bytes."""
        assert lo > self._base_index, (lo, self._base_index)
        start = lo - self._base_index - 1
        stop = min(hi, self.last_index() + 1) - self._base_index - 1
        out: list[Entry] = []
        size = 0
        for entry in self._entries[start:stop]:
            out.append(entry)
            size += len(entry.data) + 16
            if size >= max_bytes:
                break
        return out

    def last_index_of_term(self, term: int) -> int:
        """The last index holding an entry of `term`, or 0 when the retained log has none."""
        for entry in reversed(self._entries):
            if entry.term == term:
                return entry.index
            if entry.term < term:
                break
        if self._base_term == term:
            return self._base_index
        return 0

    def first_index_of_term_at(self, index: int) -> int:
        """The first retained index whose term equals the term at `index` (for conflict hints)."""
        term = self.term_at(index)
        first = index
        while first - 1 > self._base_index and self.term_at(first - 1) == term:
            first -= 1
        return first

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a log ending at (last_index, last_term) at least as up to date as this one (paper 5.4.1)?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def append(self, entry: Entry) -> None:
        expected = self.last_index() + 1
        if entry.index != expected:
            raise ValueError(f"append of index {entry.index}, expected {expected}")
        self._entries.append(entry)

    def truncate_from(self, index: int) -> None:
        """Drop entries with index >= `index` (a real conflict only; the caller checks commit)."""
        assert index > self._base_index, (index, self._base_index)
        del self._entries[index - self._base_index - 1 :]

    def compact_to(self, index: int) -> None:
        """Drop entries <= index; they are covered by a snapshot."""
        if index <= self._base_index:
            return
        term = self.term_at(index)
        if term is None:
            raise ValueError(f"cannot compact to {index}: beyond the log's end {self.last_index()}")
        del self._entries[: index - self._base_index]
        self._base_index = index
        self._base_term = term

    def reset(self, base_index: int, base_term: int) -> None:
        """Discard everything: the log restarts after an installed snapshot."""
        self._entries = []
        self._base_index = base_index
        self._base_term = base_term

    def entries_from(self, index: int) -> list[Entry]:
        return self._entries[max(0, index - self._base_index - 1) :]
