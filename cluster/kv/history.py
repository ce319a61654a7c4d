"""The watch history of one replica: the latest changes of the keyspace, in a bounded ring.

Apply records every change here (DESIGN.md rule 5: deterministically, from the entry and the prior state
alone) through one hook in the keyspace: a put gives one PUT event, a delete one DELETE event, and a
del_prefix one DELETE event per key it removed, all with the same revision (keyspace.py: a whole
del_prefix is one revision), in key order. Each event is encoded once, when recorded:

    {"type": "PUT" | "DELETE", "key": str, "value": value (None for DELETE),
     "revision": mod revision (the deleting revision for DELETE),
     "create_revision": int (0 for DELETE), "version": int (0 for DELETE)}

Each event also keeps the key's previous value, encoded once (`prev`: msgpack of the value, or of None
when the key was absent), which watches that ask for it (etcd's prev_kv) get as a "prev" field; it counts
toward `max_bytes` like the event. Events carry a sequence number (0, 1, 2, ... in apply order) so a watch
keeps its place as a cursor into the ring instead of a buffer of its own. The ring keeps at most
`max_events` events and `max_bytes` encoded bytes; it drops whole revisions from the old end, and
`compact_revision` is the newest revision it no longer holds completely: a watch may start at any
revision above it. The history is not part of a snapshot: a replica restored from one starts its window
at the snapshot's revision.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from cluster.kv.ops import pack

DEFAULT_HISTORY_EVENTS: Final = 100_000
DEFAULT_HISTORY_BYTES: Final = 64 * 1024 * 1024
_NONE: Final = pack(None)


class Event(NamedTuple):
    seq: int
    revision: int
    key: str
    data: bytes  # the encoded event: a msgpack map of 6 entries
    prev: bytes  # the encoded previous value (None: the key was absent)

    def with_prev(self) -> bytes:
        """The event's map with a seventh entry, "prev": the same bytes a map of 7 would encode to."""
        return b"\x87" + self.data[1:] + _PREV_KEY + self.prev


_PREV_KEY: Final = pack("prev")


class History:
    """A bounded ring of the latest change events; see the module docstring."""

    __slots__ = ("_bytes", "_compact_revision", "_events", "_head", "_next_seq", "max_bytes", "max_events")

    def __init__(
        self, max_events: int = DEFAULT_HISTORY_EVENTS, max_bytes: int = DEFAULT_HISTORY_BYTES
    ) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be >= 1")
        self.max_events = max_events
        self.max_bytes = max_bytes
        # A list read from _head on (dropped events are skipped, and cut off now and then), so that a
        # watch's cursor finds its event in O(1): a deque's middle costs O(n).
        self._events: list[Event] = []
        self._head = 0
        self._bytes = 0
        self._next_seq = 0
        self._compact_revision = 0

    @property
    def compact_revision(self) -> int:
        """The newest revision whose events are not all held: a watch must start above it."""
        return self._compact_revision

    @property
    def first_seq(self) -> int:
        """The sequence number of the oldest event held (== next_seq when empty)."""
        return self._next_seq - len(self)

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def size(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._events) - self._head

    def reset(self, revision: int) -> None:
        """Forget everything: the state now is that of `revision` (a snapshot was restored)."""
        self._events = []
        self._head = 0
        self._bytes = 0
        self._compact_revision = revision
        self._next_seq += 1  # a gap: every watch cursor now points before the window, so none skips it

    def record(
        self,
        revision: int,
        key: str,
        record: tuple[object, int, int, int] | None,
        prev: tuple[object, int, int, int] | None = None,
    ) -> None:
        """One change at `revision`: `record` is the key's new record, None for a deletion; `prev` its
        record before, None when it was absent."""
        if record is None:
            data = pack(
                {
                    "type": "DELETE",
                    "key": key,
                    "value": None,
                    "revision": revision,
                    "create_revision": 0,
                    "version": 0,
                }
            )
        else:
            data = pack(
                {
                    "type": "PUT",
                    "key": key,
                    "value": record[0],
                    "revision": revision,
                    "create_revision": record[1],
                    "version": record[3],
                }
            )
        before = _NONE if prev is None else pack(prev[0])
        self._events.append(Event(self._next_seq, revision, key, data, before))
        self._next_seq += 1
        self._bytes += len(data) + len(before)
        self._trim(revision)

    def _trim(self, current: int) -> None:
        events = self._events
        while len(self) > self.max_events or self._bytes > self.max_bytes:
            dropped = events[self._head]
            self._drop_head()
            self._compact_revision = max(self._compact_revision, dropped.revision)
        # Whole revisions only: the rest of a revision that lost an event goes too (except the one being
        # recorded, whose events are still coming; the next record drops them).
        while len(self) and events[self._head].revision <= self._compact_revision:
            if events[self._head].revision == current:
                break
            self._drop_head()
        if self._head > 1024 and self._head * 2 > len(events):
            del events[: self._head]
            self._head = 0

    def _drop_head(self) -> None:
        dropped = self._events[self._head]
        self._bytes -= len(dropped.data) + len(dropped.prev)
        self._head += 1

    def seq_for(self, start_revision: int) -> int:
        """The sequence number of the first held event at or after `start_revision` (next_seq if none).
        The caller has checked that start_revision > compact_revision."""
        events = self._events
        lo, hi = self._head, len(events)
        while lo < hi:
            mid = (lo + hi) // 2
            if events[mid].revision < start_revision:
                lo = mid + 1
            else:
                hi = mid
        return events[lo].seq if lo < len(events) else self._next_seq

    def at(self, seq: int) -> Event:
        """The event with sequence number `seq` (first_seq <= seq < next_seq)."""
        return self._events[self._head + seq - self.first_seq]
