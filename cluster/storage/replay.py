"""Rebuilding the log from WAL segments: parse records fast, apply them in order, find torn tails.

`LogReplayer` is fed each segment's bytes in order. It keeps the log as `base` (the index before the
first held entry) plus a list of entries, the last HARD_STATE, and checks that the result joins the
snapshot it starts from. Zeros after the last record of the last segment are its unused preallocated space
(wal.py), not damage. A torn write in the last segment is reported back so the caller can cut it there;
anything else raises CorruptionError naming the file and the byte offset.

What counts as a torn write (the first bad record of the last segment, at offset `off`):

* a cut record: its header or payload runs past the end of the file, and no valid record follows;
* a zero-filled hole: a 512-byte sector that the bad record touches reads as zeros there. A power loss
  leaves the sectors of an unsynced write that never reached the disk as they were, and under a WAL
  record that is zeros (preallocated space, or space the file grew into). It is torn only when nothing
  proves those bytes were synced: the writer writes nothing after a SYNC record until its fsync has
  returned (wal.py), so a SYNC record after the hole followed by any non-zero byte proves the hole was
  durable: damage. So does any valid record after a hole that no SYNC record precedes in its segment:
  each segment's head is synced with a SYNC record before anything else is written, so that is either a
  damaged head or a WAL from before sync markers, whose holes nothing can judge.

A bad record over non-zero bytes (bit rot, a bad checksum with no zeroed sector) is never torn.
"""

from __future__ import annotations

import re
import zlib

import msgpack

from actors.messages import Entry, HardState
from cluster.storage.errors import CorruptionError
from cluster.storage.records import (
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    TYPE_CRC,
    RecordFormatError,
    RecordType,
    check_record,
    decode_entry,
    decode_hard_state,
    decode_snapshot_mark,
    decode_sync,
    decode_truncate,
    entry_maker,
    find_valid_record,
    valid_records,
)

_ENTRY = int(RecordType.ENTRY)
_HARD_STATE = int(RecordType.HARD_STATE)
_TRUNCATE = int(RecordType.TRUNCATE)
_MARK = int(RecordType.SNAPSHOT_MARK)
_SYNC = int(RecordType.SYNC)
_NON_ZERO = re.compile(rb"[^\x00]")
SECTOR = 512  # the unit a disk writes atomically (the smallest in use): a torn write loses whole sectors
_make_entry = entry_maker()


class LogReplayer:
    """Replays records on top of what is known before the first replayed segment.

    Entries with index <= base are not held: they are covered by a snapshot, or live in segments that
    compaction deleted (only ever entries a durable snapshot covers). `begin(first_index)` sets base from
    the first replayed segment's name: the log held exactly the entries below it when it was started.
    """

    def __init__(self, snapshot_index: int = 0, snapshot_term: int = 0) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.hard_state: HardState | None = None
        self.base = 0  # index just before entries[0]
        self.entries: list[Entry] = []
        self.records = 0
        self.bytes = 0
        self.marks: set[tuple[int, int]] = set()  # (index, term) of every SNAPSHOT_MARK seen
        self.where = ""  # file and offset of the record being applied, for error messages
        self.end = 0  # where the records of the segment fed last end (the writer continues there)
        self.cut_reason = ""  # why the segment fed last is to be cut, when feed() says so

    def begin(self, first_index: int) -> None:
        self.base = first_index - 1
        self.entries.clear()

    # --- parsing ---

    def feed(self, buf: bytes, path: str, is_last: bool) -> int | None:
        """Apply every record of one segment. Returns the offset to cut the file at when its tail is
        torn (only for the last segment), else None."""
        n = len(buf)
        unpack_header = HEADER.unpack_from
        crc32 = zlib.crc32
        unpackb = msgpack.unpackb
        type_crc = TYPE_CRC
        entries = self.entries
        append = entries.append
        make_entry = _make_entry
        nxt = self.base + len(entries) + 1
        off = 0
        records = 0
        synced = False  # a SYNC record was seen in this segment
        try:
            while off < n:
                if off + HEADER_SIZE > n:
                    break
                length, crc, rtype = unpack_header(buf, off)
                start = off + HEADER_SIZE
                end = start + length
                seed = type_crc.get(rtype)
                if end > n or seed is None:
                    break
                payload = buf[start:end]  # small copies: cheaper for crc32/unpackb than memoryviews
                if crc32(payload, seed) != crc:
                    break
                obj = unpackb(payload)
                if rtype == _ENTRY:
                    term, index, kind, data = obj
                    if index == nxt and type(data) is bytes:
                        append(make_entry(term, index, kind, data))
                        nxt += 1
                    else:
                        self.where = f"{path} at offset {off}"
                        self._entry(decode_entry(obj))
                        nxt = self.base + len(entries) + 1
                elif rtype == _HARD_STATE:
                    self.hard_state = decode_hard_state(obj)
                elif rtype == _SYNC:
                    if decode_sync(obj) != off:
                        raise RecordFormatError(f"a SYNC record that says it is at offset {obj[0]}")
                    synced = True
                else:
                    self.where = f"{path} at offset {off}"
                    if rtype == _TRUNCATE:
                        self._truncate(decode_truncate(obj))
                    else:
                        self._mark(*decode_snapshot_mark(obj))
                    nxt = self.base + len(entries) + 1
                records += 1
                off = end
        except (ValueError, TypeError, RecordFormatError) as exc:
            raise CorruptionError(f"{path}: undecodable record at offset {off}: {exc}") from exc
        finally:
            self.records += records
            self.bytes += off
            self.end = off
        if off == n:
            return None
        if is_last and buf.count(0, off) == n - off:
            return None  # preallocated space that was never written
        return self._bad_record(buf, path, off, is_last, synced)

    def _bad_record(self, buf: bytes, path: str, off: int, is_last: bool, synced: bool) -> int:
        """Where to cut the last segment when the bad record at off is a torn write (see the module
        docstring); CorruptionError naming file and offset otherwise."""
        problem = check_record(buf, off)
        reason = problem if isinstance(problem, str) else "bad record"
        if not is_last:
            raise CorruptionError(f"{path}: {reason} at offset {off} (not the last segment)")
        hole = _zero_filled(buf, off)
        if not hole and not _runs_past_end(buf, off):
            raise CorruptionError(f"{path}: {reason} at offset {off} over non-zero bytes: the log is damaged")
        after = find_valid_record(buf, off + 1)
        if after is None:
            self.cut_reason = "zero-filled hole at the tail" if hole else "record cut by the end of the file"
            return off
        if not hole:
            raise CorruptionError(
                f"{path}: {reason} at offset {off}, but a valid record follows at offset {after}: "
                "the log is damaged, not torn"
            )
        if not synced:
            raise CorruptionError(
                f"{path}: zero-filled hole at offset {off} with a valid record after it at offset {after}, "
                "and no SYNC record before it in the segment: either the segment's synced head is damaged or "
                "the WAL was written by a zraft without sync markers, where a hole cannot be told from "
                "damage; the log is not torn at its tail"
            )
        proof = _synced_after(buf, after)
        if proof is not None:
            sync_at, data_at = proof
            raise CorruptionError(
                f"{path}: zero-filled hole at offset {off}, but the batch ending with the SYNC record at "
                f"offset {sync_at} was synced (data follows it at offset {data_at}), and that fsync covered "
                "the hole: the log is damaged, not torn"
            )
        self.cut_reason = "zero-filled hole, and nothing after it was synced"
        return off

    # --- applying ---

    def _corrupt(self, what: str) -> CorruptionError:
        return CorruptionError(f"{self.where}: {what}")

    def _last(self) -> int:
        return self.base + len(self.entries)

    def _entry(self, e: Entry) -> None:
        last = self._last()
        if e.index == last + 1:
            self.entries.append(e)
        elif e.index <= self.base:
            # Overwrites from inside the part we do not hold (normally a TRUNCATE comes first).
            self.entries.clear()
            self.base = e.index - 1
            self.entries.append(e)
        elif e.index <= last:
            del self.entries[e.index - self.base - 1 :]  # overwrite a suffix (normally after a TRUNCATE)
            self.entries.append(e)
        else:
            raise self._corrupt(f"entry {e.index} does not follow entry {last}: entries are missing")

    def _truncate(self, from_index: int) -> None:
        if from_index <= self.base:
            self.entries.clear()
            self.base = from_index - 1
        elif from_index <= self._last():
            del self.entries[from_index - self.base - 1 :]

    def _term_at(self, index: int) -> int | None:
        if self.base < index <= self._last():
            return self.entries[index - self.base - 1].term
        return None

    def _drop_through(self, index: int) -> None:
        """Entries <= index are covered by a snapshot."""
        if index <= self.base:
            return
        if index >= self._last():
            self.entries.clear()
        else:
            del self.entries[: index - self.base]
        self.base = index

    def _mark(self, index: int, term: int) -> None:
        """A snapshot covers entries <= index. When it conflicts with the log the writer follows the mark
        with a TRUNCATE; the term check here covers a write torn between the two."""
        self.marks.add((index, term))
        if index > self.snapshot_index:
            # This snapshot file is missing or was damaged; the log itself must still cover it.
            if self._term_at(index) != term:
                raise self._corrupt(
                    f"the WAL records a snapshot at index {index} (term {term}) that is missing or damaged, "
                    "and the log does not cover it"
                )
            return
        held = self._term_at(index)
        if held is not None and held != term:
            self.entries.clear()  # the snapshot replaces a conflicting log (paper section 7)
            self.base = index
        self._drop_through(index)

    # --- the result ---

    def finish(self) -> tuple[HardState | None, list[Entry]]:
        """The last hard state and the entries after the snapshot; CorruptionError when they do not join."""
        s, t = self.snapshot_index, self.snapshot_term
        if self.base > s:
            if s:
                raise CorruptionError(
                    f"the WAL starts after index {self.base} but the newest valid snapshot ends at {s}: "
                    f"entries {s + 1}..{self.base} are missing"
                )
            raise CorruptionError(
                f"no valid snapshot and the WAL starts after index {self.base}: "
                f"entries 1..{self.base} are missing"
            )
        if s and (s, t) not in self.marks and self.base < s <= self._last() and self._term_at(s) != t:
            # The snapshot file is durable but its mark never made it to the WAL, and the log conflicts
            # with it: the snapshot wins (paper section 7).
            self.entries.clear()
            self.base = s
        self._drop_through(s)
        return self.hard_state, self.entries


def _record_extent(buf: bytes, off: int) -> int:
    """The end of the bad record at off: its payload's end when its header is plausible, else the
    header's end (capped at the end of the buffer)."""
    n = len(buf)
    if off + HEADER_SIZE <= n:
        length, _, rtype = HEADER.unpack_from(buf, off)
        if rtype in TYPE_CRC and length <= MAX_PAYLOAD:
            return min(off + HEADER_SIZE + int(length), n)
    return min(off + HEADER_SIZE, n)


def _zero_filled(buf: bytes, off: int) -> bool:
    """True when some sector the bad record at off touches is all zeros within the record: what a sector
    of its write that never reached the disk leaves."""
    end = _record_extent(buf, off)
    start = off
    while start < end:
        stop = min((start // SECTOR + 1) * SECTOR, end)
        if buf.count(0, start, stop) == stop - start:
            return True
        start = stop
    return False


def _runs_past_end(buf: bytes, off: int) -> bool:
    """True when the record at off is cut by the end of the file (its header, or the payload it announces)."""
    n = len(buf)
    if off + HEADER_SIZE > n:
        return True
    length, _, rtype = HEADER.unpack_from(buf, off)
    return rtype in TYPE_CRC and length <= MAX_PAYLOAD and off + HEADER_SIZE + length > n


def _synced_after(buf: bytes, start: int) -> tuple[int, int] | None:
    """(offset of a SYNC record at or after start, offset of a non-zero byte after it), if there are such:
    the proof that the batch it ends was synced."""
    last_nonzero = len(buf.rstrip(b"\0")) - 1
    for off, rtype, end in valid_records(buf, start):
        if end > last_nonzero:
            return None
        if rtype == _SYNC:
            try:
                at = decode_sync(msgpack.unpackb(buf[off + HEADER_SIZE : end]))
            except (ValueError, TypeError, RecordFormatError):
                continue
            if at == off:
                data = _NON_ZERO.search(buf, end)
                assert data is not None  # end <= last_nonzero
                return off, data.start()
    return None
