"""cluster/storage: record format, persist/recover, segments, torn tails, corruption, snapshots,
compaction, identity, crash points, and a randomized crash test on SimFS.

Most tests run on both RealFS (pytest's tmp_path) and SimFS.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import posixpath
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from actors.contracts import Recovered
from actors.messages import Entry, HardState, Snapshot, SnapshotMeta
from cluster.storage import (
    COMPACT_BEFORE_DELETE,
    CRASH_ENV,
    CRASH_EXIT_CODE,
    CRASH_POINTS,
    SNAP_AFTER_RENAME,
    SNAP_AFTER_TEMP_WRITE,
    SNAP_BEFORE_RENAME,
    WAL_AFTER_FSYNC,
    WAL_BEFORE_FSYNC,
    CorruptionError,
    CrashPointReached,
    DiskStorage,
    IdentityMismatch,
    RaiseAt,
    StorageError,
    load_snapshot,
    read_identity,
)
from cluster.storage.fs import AppendFile, Buffer, FileSystem, RealFS, SimCrash, SimFS
from cluster.storage.logindex import LogIndex
from cluster.storage.records import (
    HEADER_SIZE,
    RecordType,
    append_entries,
    check_record,
    decode_hard_state,
    decode_snapshot_mark,
    decode_truncate,
    encode_record,
    hard_state_payload,
    snapshot_mark_payload,
    truncate_payload,
    unpack_payload,
)
from cluster.storage.replay import SECTOR, LogReplayer
from cluster.storage.snapshot_writer import SnapshotJob

ROOT = Path(__file__).resolve().parents[2]
RANDOM_STEPS = 200


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture(params=["real", "sim"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[FileSystem, str]:
    if request.param == "real":
        return RealFS(), str(tmp_path / "n1")
    return SimFS(), "/data/n1"


_PREALLOCATE = {"on": False}


@pytest.fixture(params=["append", "prealloc"], autouse=True)
def segment_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs with appended segments and with preallocated ones (wal.py)."""
    _PREALLOCATE["on"] = request.param == "prealloc"
    yield request.param
    _PREALLOCATE["on"] = False


@pytest.fixture
def warned() -> Iterator[list[str]]:
    seen: list[str] = []
    handler = logger.add(lambda m: seen.append(str(m)), level="WARNING", format="{message}")
    yield seen
    logger.remove(handler)


def open_storage(fs: FileSystem, d: str, **kw: object) -> DiskStorage:
    kw.setdefault("cluster_id", "c1")
    kw.setdefault("node_name", "n1")
    kw.setdefault("preallocate", _PREALLOCATE["on"])
    kw.setdefault("segment_bytes", 1 << 20)  # SimFS holds preallocated space in memory: keep it small
    return DiskStorage(fs, d, **kw)  # type: ignore[arg-type]


def reopen(fs: FileSystem, d: str, **kw: object) -> Recovered:
    s = open_storage(fs, d, **kw)
    r = s.recover()
    s.close()
    return r


def ents(first: int, last: int, term: int = 1, tag: bytes = b"") -> list[Entry]:
    return [Entry(term, i, 0, b"cmd-%d" % i + tag) for i in range(first, last + 1)]


def snap(index: int, term: int, data: bytes | None = None) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ("n1", "n2", "n3")), data or b"state@%d" % index)


def wal_files(fs: FileSystem, d: str) -> list[str]:
    """The WAL segments (not the spare being preallocated for the next one)."""
    return [posixpath.join(d, "wal", n) for n in fs.listdir(posixpath.join(d, "wal")) if n.endswith(".wal")]


def rewrite(fs: FileSystem, path: str, data: bytes) -> None:
    fs.truncate(path, 0)
    f = fs.open_append(path)
    f.write(data)
    f.fsync()
    f.close()


def flip(fs: FileSystem, path: str, offset: int) -> None:
    data = bytearray(fs.read(path))
    data[offset] ^= 0x5A
    rewrite(fs, path, bytes(data))


def records_end(buf: bytes) -> int:
    """Where the valid records end (before any zero tail of preallocated space, or damage)."""
    off = 0
    while off < len(buf):
        res = check_record(buf, off)
        if not isinstance(res, tuple):
            break
        off = res[1]
    return off


def sync_records(buf: bytes) -> list[tuple[int, int]]:
    """(start, end) of every SYNC record among the valid records."""
    out, off = [], 0
    while off < len(buf):
        res = check_record(buf, off)
        if not isinstance(res, tuple):
            break
        if res[0] == RecordType.SYNC:
            out.append((off, res[1]))
        off = res[1]
    return out


def tear(fs: FileSystem, path: str, chop: int) -> int:
    """Lose the last `chop` bytes of the last batch's records (before its SYNC record), as a crash does:
    cut an appended file; in a preallocated one, zero the sectors they touch, back to no further than the
    end of the batch before (a sector rewritten since the last fsync reverts to what was synced). Returns
    where the records ended before."""
    buf = fs.read(path)
    end = records_end(buf)
    syncs = sync_records(buf)
    lost_from = syncs[-1][0] - chop
    if end == len(buf):
        fs.truncate(path, lost_from)
    else:
        lost_from = max(lost_from // SECTOR * SECTOR, syncs[-2][1])
        rewrite(fs, path, buf[:lost_from] + bytes(len(buf) - lost_from))
    return end


def record_offsets(buf: bytes) -> list[int]:
    offsets, off = [], 0
    end = len(buf.rstrip(b"\0"))  # a record never ends in a zero tail of this length: see callers
    end = max(end, records_end(buf))
    while off < end:
        res = check_record(buf, off)
        assert isinstance(res, tuple), res
        offsets.append(off)
        off = res[1]
    return offsets


# --- the record format ------------------------------------------------------------------------------


def test_record_round_trip() -> None:
    hs = HardState(7, "n2", 41)
    hs0 = HardState(1, None, 0)
    for rtype, payload, decode, value in [
        (RecordType.HARD_STATE, hard_state_payload(hs), decode_hard_state, hs),
        (RecordType.HARD_STATE, hard_state_payload(HardState(1, None, 0)), decode_hard_state, hs0),
        (RecordType.TRUNCATE, truncate_payload(12), decode_truncate, 12),
        (RecordType.SNAPSHOT_MARK, snapshot_mark_payload(100, 4), decode_snapshot_mark, (100, 4)),
    ]:
        rec = encode_record(rtype, payload)
        assert len(rec) == HEADER_SIZE + len(payload)
        assert check_record(rec, 0) == (rtype, len(rec))
        assert decode(unpack_payload(rec[HEADER_SIZE:])) == value
        bad = bytearray(rec)
        bad[-1] ^= 1
        assert check_record(bytes(bad), 0) == "checksum mismatch"
        assert "incomplete" in str(check_record(rec[:5], 0))
        assert "short payload" in str(check_record(rec[:-1], 0))

    buf = bytearray()
    entries = [Entry(3, 1, 0, b""), Entry(3, 2, 1, b"\x00" * 1000), Entry(4, 3, 0, bytes(range(256)))]
    assert append_entries(buf, entries) == 3
    buf += encode_record(RecordType.HARD_STATE, hard_state_payload(hs))
    r = LogReplayer()
    assert r.feed(bytes(buf), "seg", is_last=True) is None
    assert r.finish() == (hs, entries)
    assert r.records == 4


def test_log_index_tracks_terms_truncation_and_snapshots() -> None:
    log = LogIndex()
    log.append(ents(1, 5, term=1) + ents(6, 9, term=2))
    assert log.last == 9
    assert [log.term_at(i) for i in (1, 5, 6, 9, 10)] == [1, 1, 2, 2, None]
    log.truncate(7)
    assert log.last == 6 and log.term_at(7) is None
    log.append(ents(5, 6, term=3))  # overwrites from 5
    assert [log.term_at(i) for i in range(1, 7)] == [1, 1, 1, 1, 3, 3]
    twin = log.copy()
    assert twin.apply_snapshot(3, 1) is False  # matches: entries after it stay
    assert (twin.snapshot_index, twin.last) == (3, 6)
    assert [twin.term_at(i) for i in (3, 4, 5)] == [1, 1, 3]
    assert log.snapshot_index == 0  # the copy is independent
    assert log.apply_snapshot(4, 9) is True  # conflicts: entries after it go
    assert (log.snapshot_index, log.last, log.term_at(4), log.term_at(5)) == (4, 4, 9, None)
    assert log.apply_snapshot(20, 9) is False  # beyond the log
    assert log.last == 20


# --- persist and recover ----------------------------------------------------------------------------


def test_new_data_dir_recovers_empty(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    r = reopen(fs, d)
    assert r == Recovered(HardState(0, None, 0), None, [])
    assert fs.exists(posixpath.join(d, "wal")) and fs.exists(posixpath.join(d, "snap"))
    assert read_identity(fs, d) == ("c1", "n1")
    assert reopen(fs, d) == Recovered(HardState(0, None, 0), None, [])


def test_persist_recover_round_trip_with_truncation(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(1, "n1", 0), None, ents(1, 5), None)
    s.persist(HardState(1, "n1", 3), None, ents(6, 8), None)
    s.persist(HardState(2, None, 3), 5, ents(5, 6, term=2, tag=b"x"), None)  # overwrite 5..8 with 5..6
    s.persist(HardState(2, "n3", 4), None, [], None)
    assert s.stats.batches == 4 and s.stats.entries == 10
    assert s.stats.entries_per_fsync() > 0
    s.close()
    r = reopen(fs, d)
    assert r.hard_state == HardState(2, "n3", 4)
    assert r.snapshot is None
    assert r.entries == ents(1, 4) + ents(5, 6, term=2, tag=b"x")

    # A truncation with nothing after it, then more entries, across a restart.
    s = open_storage(fs, d)
    s.recover()
    s.persist(None, 3, [], None)
    s.close()
    assert reopen(fs, d).entries == ents(1, 2)
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(3, None, 2), None, ents(3, 4, term=3), None)
    s.close()
    r = reopen(fs, d)
    assert r.entries == ents(1, 2) + ents(3, 4, term=3) and r.hard_state == HardState(3, None, 2)


def test_one_fsync_per_persist(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(1, None, 0), None, ents(1, 1), None)  # first persist starts a segment
    before = fs.fsync_count
    for i in range(2, 12):
        s.persist(HardState(1, None, i - 1), None, ents(i, i), None)
    assert fs.fsync_count - before == 10
    s.persist(None, None, [], None)  # nothing to persist: no fsync
    assert fs.fsync_count - before == 10


def test_persist_rejects_gaps_and_misuse(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d)
    with pytest.raises(StorageError):
        s.persist(HardState(1, None, 0), None, [], None)  # before recover()
    s.recover()
    with pytest.raises(StorageError):
        s.recover()
    with pytest.raises(StorageError, match="gap"):
        s.persist(None, None, ents(3, 4), None)
    with pytest.raises(StorageError, match="consecutive"):
        s.persist(None, None, [Entry(1, 1, 0, b""), Entry(1, 3, 0, b"")], None)
    with pytest.raises(ValueError):
        s.persist(None, 0, [], None)
    s.persist(None, None, ents(1, 5), None)
    s.persist(None, None, [], snap(3, 1))
    with pytest.raises(StorageError, match="inside the snapshot"):
        s.persist(None, None, ents(3, 4), None)
    with pytest.raises(StorageError, match="older"):
        s.persist(None, None, [], snap(2, 1))


def test_segments_roll_and_recover_across_many(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d, segment_bytes=120)
    s.recover()
    for i in range(1, 201, 4):
        s.persist(HardState(1 + i // 50, None, max(0, i - 1)), None, ents(i, i + 3, term=1 + i // 50), None)
    s.persist(HardState(9, "n2", 150), 150, ents(150, 160, term=9), None)
    s.close()
    files = wal_files(fs, d)
    assert len(files) > 20
    for path in files:  # every segment starts with a HARD_STATE record
        assert check_record(fs.read(path), 0)[0] == RecordType.HARD_STATE  # type: ignore[index]
    r = reopen(fs, d, segment_bytes=120)
    first = [e for i in range(1, 150, 4) for e in ents(i, i + 3, term=1 + i // 50)][:149]
    assert r.entries == first + ents(150, 160, 9)
    assert r.hard_state == HardState(9, "n2", 150)


# --- torn tails and corruption ----------------------------------------------------------------------


def _three_batches(fs: FileSystem, d: str) -> str:
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(1, "n1", 0), None, ents(1, 10), None)
    s.persist(HardState(1, "n1", 5), None, ents(11, 20), None)
    s.persist(HardState(1, "n1", 10), None, ents(21, 30), None)
    s.close()
    (path,) = wal_files(fs, d)
    return path


@pytest.mark.parametrize("chop", [1, 3, 9, 14, 40, 200])
def test_torn_tail_is_cut(env: tuple[FileSystem, str], warned: list[str], chop: int) -> None:
    fs, d = env
    path = _three_batches(fs, d)
    size = tear(fs, path, chop)
    r = reopen(fs, d)
    # Everything before the last batch is intact; the last batch lost a suffix of its records.
    assert r.entries[:20] == ents(1, 20)
    assert r.entries == ents(1, len(r.entries))
    assert r.hard_state == HardState(1, "n1", 5)  # the last HARD_STATE record was torn
    assert any("torn write" in w and path in w for w in warned)
    cut = fs.size(path)
    assert cut <= size - chop and record_offsets(fs.read(path))  # the file ends on a record boundary

    # The node carries on writing after the cut and everything is there on the next start.
    s = open_storage(fs, d)
    s.recover()
    last = r.entries[-1].index
    s.persist(HardState(2, None, last), None, ents(last + 1, last + 5, term=2), None)
    s.close()
    r2 = reopen(fs, d)
    assert r2.entries == r.entries + ents(last + 1, last + 5, term=2)
    assert r2.hard_state == HardState(2, None, last)


def test_a_header_cut_by_the_end_of_the_file_is_torn_but_non_zero_garbage_is_damage(
    env: tuple[FileSystem, str], warned: list[str], segment_mode: str
) -> None:
    fs, d = env
    path = _three_batches(fs, d)
    end = records_end(fs.read(path))
    f = fs.open_write_at(path, end)
    f.write(b"\x07")  # one byte of a header: appended, the file ends there; preallocated, zeros follow
    f.fsync()
    f.close()
    if segment_mode == "append":
        r = reopen(fs, d)
        assert r.entries == ents(1, 30) and r.hard_state == HardState(1, "n1", 10)
        assert fs.size(path) == end and any(f"offset {end}" in w for w in warned)
    else:  # a sector holds one non-zero byte and zeros after: no torn write leaves that
        with pytest.raises(CorruptionError, match=f"offset {end}"):
            reopen(fs, d)

    f = fs.open_write_at(path, end)
    f.write(bytes([0xEE]) * 300)  # non-zero bytes that are no record
    f.fsync()
    f.close()
    with pytest.raises(CorruptionError) as exc:
        reopen(fs, d)
    assert path in str(exc.value) and f"offset {end}" in str(exc.value) and "non-zero" in str(exc.value)


def big(first: int, last: int, term: int = 1) -> list[Entry]:
    """Entries of about 160 bytes each: a batch of ten spans several sectors."""
    return [Entry(term, i, 0, b"v%d-" % i + b"x" * 150) for i in range(first, last + 1)]


def _batches(fs: FileSystem, d: str, count: int, commit_only_after: bool = False) -> str:
    """count synced batches of ten big entries (hard state commit = first index of the batch); then,
    optionally, a commit-only hard state, written without an fsync."""
    s = open_storage(fs, d)
    s.recover()
    for b in range(count):
        s.persist(HardState(1, "n1", 10 * b), None, big(10 * b + 1, 10 * b + 10), None)
    if commit_only_after:
        s.persist(HardState(1, "n1", 10 * count), None, [], None)
    s.close()
    (path,) = wal_files(fs, d)
    return path


def _zero_sector_inside(fs: FileSystem, path: str, start: int, stop: int) -> tuple[int, int]:
    """Zero the first whole sector inside [start, stop), durably (what a lost sector leaves). Returns the
    sector's offset and the offset of the record it falls in."""
    buf = fs.read(path)
    sector = -(-start // SECTOR) * SECTOR
    assert sector + SECTOR <= stop, "the batch is too small to hold a whole sector"
    victim = max(o for o in record_offsets(buf) if o <= sector)
    rewrite(fs, path, buf[:sector] + bytes(SECTOR) + buf[sector + SECTOR :])
    return sector, victim


def test_a_zero_filled_hole_in_the_last_batch_is_cut_to_the_synced_prefix(
    tmp_path: Path, warned: list[str]
) -> None:
    fs, d = RealFS(), str(tmp_path / "n1")
    path = _batches(fs, d, 3)
    syncs = sync_records(fs.read(path))
    # A sector of the last batch never reached the disk; its later records and its SYNC record did.
    sector, victim = _zero_sector_inside(fs, path, syncs[-2][1], syncs[-1][0])
    assert records_end(fs.read(path)) == victim < syncs[-1][0]

    r = reopen(fs, d)
    assert r.entries == big(1, 20) and r.hard_state == HardState(1, "n1", 10)
    assert any("zero-filled hole" in w and path in w and f"offset {victim}" in w for w in warned)
    assert fs.size(path) == victim  # the records after the hole went with it

    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(2, None, 20), None, big(21, 25, term=2), None)
    s.close()
    assert reopen(fs, d).entries == big(1, 20) + big(21, 25, term=2)


@pytest.mark.parametrize("later", ["synced batch", "unsynced commit-only write"])
def test_a_zero_filled_hole_that_a_later_write_proves_synced_is_corruption(
    tmp_path: Path, later: str
) -> None:
    fs, d = RealFS(), str(tmp_path / "n1")
    if later == "synced batch":  # a hole in batch 2 of 3: batch 3 was written after batch 2's fsync
        path = _batches(fs, d, 3)
        syncs = sync_records(fs.read(path))
        start, stop = syncs[-3][1], syncs[-2][0]
    else:  # a hole in the last synced batch, followed by a commit-only write made after its fsync
        path = _batches(fs, d, 2, commit_only_after=True)
        syncs = sync_records(fs.read(path))
        start, stop = syncs[-2][1], syncs[-1][0]
    size = fs.size(path)
    _, victim = _zero_sector_inside(fs, path, start, stop)
    with pytest.raises(CorruptionError) as exc:
        reopen(fs, d)
    message = str(exc.value)
    assert path in message and f"offset {victim}" in message and "was synced (data follows it" in message
    assert fs.size(path) == size  # nothing was cut


def test_a_bad_checksum_over_non_zero_bytes_in_the_last_record_is_corruption(tmp_path: Path) -> None:
    fs, d = RealFS(), str(tmp_path / "n1")
    path = _batches(fs, d, 2)
    syncs = sync_records(fs.read(path))
    victim = max(o for o in record_offsets(fs.read(path)) if o < syncs[-1][0])  # the last HARD_STATE
    flip(fs, path, victim + HEADER_SIZE + 1)
    with pytest.raises(CorruptionError) as exc:
        reopen(fs, d)
    assert path in str(exc.value) and f"offset {victim}" in str(exc.value)


def _old_format_segment(fs: FileSystem, d: str, hole: bool, torn_tail: bool) -> str:
    """A data directory whose WAL was written before SYNC records existed: same records, none of those."""
    s = open_storage(fs, d)
    s.recover()
    s.close()
    buf = bytearray()
    batches = []
    for b in range(3):
        batches.append(len(buf))
        append_entries(buf, big(10 * b + 1, 10 * b + 10))
        buf += encode_record(RecordType.HARD_STATE, hard_state_payload(HardState(1, "n1", 10 * b)))
    if hole:
        sector = -(-(batches[1] + 50) // SECTOR) * SECTOR
        buf[sector : sector + SECTOR] = bytes(SECTOR)
    if torn_tail:
        sector = (len(buf) - 20) // SECTOR * SECTOR
        buf[sector:] = bytes(len(buf) - sector)
    path = posixpath.join(d, "wal", "0000000000000001-0000000000000001.wal")
    fs.open_append(path).close()
    rewrite(fs, path, bytes(buf))
    fs.fsync_dir(posixpath.join(d, "wal"))
    return path


def test_a_wal_without_sync_records_still_recovers_or_fails_clearly(
    env: tuple[FileSystem, str], warned: list[str]
) -> None:
    fs, d = env
    _old_format_segment(fs, d, hole=False, torn_tail=False)
    r = reopen(fs, d)
    assert r.entries == big(1, 30) and r.hard_state == HardState(1, "n1", 20)

    _old_format_segment(fs, d, hole=False, torn_tail=True)  # zeros at the end: a torn tail, as before
    r = reopen(fs, d)
    assert r.entries == big(1, len(r.entries)) and 20 <= len(r.entries) < 30
    assert any("torn write" in w for w in warned)

    path = _old_format_segment(fs, d, hole=True, torn_tail=False)  # a hole with records after it
    with pytest.raises(CorruptionError, match="without sync markers") as exc:
        reopen(fs, d)
    assert path in str(exc.value)


class _RecordingFS(SimFS):
    """SimFS that logs every write and fsync of a WAL segment, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, str, bytes]] = []

    def _wrap(self, f: AppendFile) -> AppendFile:
        ops = self.ops
        path = f.path

        class Recorded:
            def __init__(self) -> None:
                self.path = path

            def write(self, data: Buffer) -> None:
                f.write(data)
                ops.append(("write", path, bytes(data)))

            def fsync(self) -> None:
                f.fsync()
                ops.append(("fsync", path, b""))

            def close(self) -> None:
                f.close()

        return Recorded() if path.endswith(".wal") else f

    def open_append(self, path: str) -> AppendFile:
        return self._wrap(super().open_append(path))

    def open_write_at(self, path: str, offset: int) -> AppendFile:
        return self._wrap(super().open_write_at(path, offset))


def test_nothing_is_written_after_a_sync_record_before_its_fsync_returned() -> None:
    """The premise of telling torn writes from damage (replay.py): after a batch that ends with a SYNC
    record, the next operation on its segment is the fsync; and every segment starts with a synced head."""
    fs = _RecordingFS()
    s = open_storage(fs, "/d", segment_bytes=600)
    s.recover()
    hs = HardState(1, "n1", 0)
    for i in range(1, 40, 4):
        s.persist(hs, None, ents(i, i + 3), None)
        s.persist(HardState(1, "n1", i), None, [], None)  # commit only: no fsync, no SYNC record
        if i == 17:
            s.persist(None, None, [], snap(10, 1))
    s.close()
    writes = [op for op in fs.ops if op[0] == "write"]
    ending_in_sync = [
        i
        for i, op in enumerate(fs.ops)
        if op[0] == "write" and RecordType.SYNC in [t for _, t, _ in _records_of(op[2])[-1:]]
    ]
    assert len(ending_in_sync) > 10 and len(writes) > len(ending_in_sync)  # synced and unsynced batches
    for i in ending_in_sync:
        assert fs.ops[i + 1] == ("fsync", fs.ops[i][1], b"")
    heads: dict[str, bytes] = {}
    for _, path, data in writes:
        heads.setdefault(path, data)
    assert len(heads) > 2
    for data in heads.values():
        assert [t for _, t, _ in _records_of(data)] == [RecordType.HARD_STATE, RecordType.SYNC]


def _records_of(buf: bytes) -> list[tuple[int, int, int]]:
    out, off = [], 0
    while off < len(buf):
        res = check_record(buf, off)
        assert isinstance(res, tuple), res
        out.append((off, res[0], res[1]))
        off = res[1]
    return out


def test_a_zero_tail_is_unused_space_and_writing_resumes_where_the_records_end(
    env: tuple[FileSystem, str], warned: list[str]
) -> None:
    fs, d = env
    path = _three_batches(fs, d)
    end = records_end(fs.read(path))
    size = max(fs.size(path), end + 4096)
    fs.allocate(path, size)  # e.g. a crash left the new size but not the data: zeros
    r = reopen(fs, d)
    assert r.entries == ents(1, 30) and r.hard_state == HardState(1, "n1", 10)
    assert not warned and fs.size(path) == size  # nothing cut, nothing to warn about
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(2, None, 30), None, ents(31, 33, term=2), None)
    s.close()
    assert records_end(fs.read(path)) > end and fs.size(path) == size  # written over the zeros
    assert reopen(fs, d).entries == ents(1, 30) + ents(31, 33, term=2)


def test_corruption_inside_the_last_segment_names_file_and_offset(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    path = _three_batches(fs, d)
    size = fs.size(path)
    offsets = record_offsets(fs.read(path))
    victim = offsets[15]  # an entry of the second batch, with valid records after it
    flip(fs, path, victim + HEADER_SIZE + 2)
    with pytest.raises(CorruptionError) as exc:
        reopen(fs, d)
    assert path in str(exc.value) and f"offset {victim}" in str(exc.value)
    assert fs.size(path) == size  # nothing was cut


def test_corrupted_length_field_is_not_mistaken_for_a_torn_tail(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    path = _three_batches(fs, d)
    victim = record_offsets(fs.read(path))[5]
    flip(fs, path, victim + 3)  # the high byte of the length: looks like a record running off the end
    with pytest.raises(CorruptionError) as exc:
        reopen(fs, d)
    assert path in str(exc.value) and f"offset {victim}" in str(exc.value)


def test_corruption_in_an_earlier_segment(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d, segment_bytes=200)
    s.recover()
    for i in range(1, 60, 3):
        s.persist(HardState(1, None, i), None, ents(i, i + 2), None)
    s.close()
    files = wal_files(fs, d)
    assert len(files) > 3
    victim_file = files[1]
    buf = fs.read(victim_file)
    victim = record_offsets(buf)[-1]  # even the LAST record of a non-last segment is not a torn tail
    flip(fs, victim_file, victim + HEADER_SIZE)
    with pytest.raises(CorruptionError) as exc:
        reopen(fs, d, segment_bytes=200)
    assert victim_file in str(exc.value) and f"offset {victim}" in str(exc.value)

    rewrite(fs, victim_file, buf[:-2])  # a short non-last segment is corruption too
    with pytest.raises(CorruptionError, match="not the last segment"):
        reopen(fs, d, segment_bytes=200)


# --- snapshots --------------------------------------------------------------------------------------


def test_snapshot_round_trip_and_helpers(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(1, None, 0), None, ents(1, 10), None)
    big = random.Random(1).randbytes(3 * 1024 * 1024)
    s.persist(HardState(1, None, 8), None, [], snap(8, 1, big))
    assert s.snapshot_index == 8
    path = s.snapshot_path()
    assert path is not None
    assert load_snapshot(fs, path) == snap(8, 1, big)
    s.close()
    r = reopen(fs, d)
    assert r.snapshot == snap(8, 1, big)
    assert r.entries == ents(9, 10)


def test_installed_snapshot_replaces_a_conflicting_log(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(1, None, 0), None, ents(1, 10), None)
    s.persist(HardState(3, None, 12), None, [], snap(12, 3))  # beyond the log
    s.persist(None, None, ents(13, 14, term=3), None)
    s.close()
    r = reopen(fs, d)
    assert r.snapshot == snap(12, 3) and r.entries == ents(13, 14, term=3)

    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(4, None, 14), None, [], snap(14, 4))  # same index, other term: log discarded
    s.close()
    r = reopen(fs, d)
    assert r.snapshot == snap(14, 4) and r.entries == []


def test_damaged_snapshot_falls_back_to_the_previous_one(
    env: tuple[FileSystem, str], warned: list[str]
) -> None:
    fs, d = env
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(1, None, 0), None, ents(1, 20), None)
    s.persist(None, None, [], snap(5, 1))
    s.persist(None, None, [], snap(15, 1))
    newest = s.snapshot_path()
    assert newest is not None
    s.close()
    flip(fs, newest, fs.size(newest) - 1)
    r = reopen(fs, d)
    assert r.snapshot == snap(5, 1) and r.entries == ents(6, 20)
    assert any("damaged snapshot" in w and newest in w for w in warned)


def test_damaged_snapshot_without_wal_behind_it_is_corruption(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d, segment_bytes=150)
    s.recover()
    for i in range(1, 40, 2):
        s.persist(HardState(1, None, i), None, ents(i, i + 1), None)
    s.persist(None, None, [], snap(30, 1))
    s.compact(30)
    newest = s.snapshot_path()
    assert newest is not None
    s.close()
    flip(fs, newest, 20)
    with pytest.raises(CorruptionError, match="missing"):
        reopen(fs, d, segment_bytes=150)


@pytest.mark.parametrize("point", [SNAP_AFTER_TEMP_WRITE, SNAP_BEFORE_RENAME, SNAP_AFTER_RENAME])
def test_snapshot_write_is_atomic_at_every_crash_point(env: tuple[FileSystem, str], point: str) -> None:
    fs, d = env
    sim = isinstance(fs, SimFS)
    seeds = range(8) if sim else range(1)
    for seed in seeds:
        dd = f"{d}-{seed}"
        s = open_storage(fs, dd)
        s.recover()
        s.persist(None, None, ents(1, 10), None)
        s.persist(HardState(1, None, 6), None, [], snap(4, 1))
        s.close()
        s = open_storage(fs, dd, crash_hook=RaiseAt(point))
        s.recover()
        with pytest.raises(CrashPointReached):
            s.persist(HardState(1, None, 9), None, ents(11, 12), snap(9, 1, b"N" * 5000))
        if isinstance(fs, SimFS):
            fs.crash(random.Random(seed))
        r = reopen(fs, dd)
        assert r.snapshot in (snap(4, 1), snap(9, 1, b"N" * 5000))
        assert r.hard_state == HardState(1, None, 6)
        assert r.entries == [e for e in ents(1, 10) if e.index > r.snapshot.meta.index]  # type: ignore[union-attr]
        assert not any(n.endswith(".tmp") for n in fs.listdir(posixpath.join(dd, "snap")))


def test_snapshot_without_its_wal_mark_is_recorded_at_recovery(env: tuple[FileSystem, str]) -> None:
    # An installed snapshot that conflicts with the log reaches the disk, the crash takes its WAL mark.
    fs, d = env
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(1, None, 0), None, ents(1, 10), None)
    s.close()
    s = open_storage(fs, d, crash_hook=RaiseAt(SNAP_AFTER_RENAME))
    s.recover()
    with pytest.raises(CrashPointReached):
        s.persist(HardState(3, None, 8), None, [], snap(8, 3))
    s.close()
    if isinstance(fs, SimFS):
        fs.fsync_dir(posixpath.join(d, "snap"))  # this test wants the rename to survive
    r = reopen(fs, d)
    assert r.snapshot == snap(8, 3) and r.entries == []  # the conflicting log gave way to the snapshot
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(3, None, 9), None, ents(9, 10, term=3), None)
    s.close()
    r = reopen(fs, d)
    assert r.snapshot == snap(8, 3) and r.entries == ents(9, 10, term=3)
    assert r.hard_state == HardState(3, None, 9)


def test_recovery_explains_itself(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d, segment_bytes=100)
    s.recover()
    for i in range(1, 20):
        s.persist(HardState(1, None, i), None, ents(i, i), None)
    s.persist(None, None, [], snap(5, 1))
    s.close()
    seen: list[str] = []
    handler = logger.add(lambda m: seen.append(str(m)), level="INFO", format="{message}")
    try:
        reopen(fs, d, segment_bytes=100)
    finally:
        logger.remove(handler)
    text = "".join(seen)
    assert "using snapshot" in text and "index 5" in text
    assert "recovered 14 entries (6..19)" in text and "WAL segments" in text


@pytest.mark.parametrize("point", [WAL_BEFORE_FSYNC, WAL_AFTER_FSYNC])
def test_wal_crash_points(env: tuple[FileSystem, str], point: str) -> None:
    fs, d = env
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(1, None, 0), None, ents(1, 5), None)
    s.close()
    s = open_storage(fs, d, crash_hook=RaiseAt(point))
    s.recover()
    with pytest.raises(CrashPointReached):
        s.persist(HardState(2, None, 5), None, ents(6, 8, term=2), None)
    if isinstance(fs, SimFS):
        fs.crash(random.Random(5))
    r = reopen(fs, d)
    if point == WAL_AFTER_FSYNC or isinstance(fs, RealFS):
        assert r.entries == ents(1, 5) + ents(6, 8, term=2) and r.hard_state == HardState(2, None, 5)
    else:
        assert r.entries[:5] == ents(1, 5)


def test_crash_point_exits_the_process() -> None:
    code = "from cluster.storage import crash_point; crash_point('wal-before-fsync'); print('survived')"
    env = {**os.environ, CRASH_ENV: WAL_BEFORE_FSYNC, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == CRASH_EXIT_CODE and "survived" not in proc.stdout
    assert WAL_BEFORE_FSYNC in proc.stderr
    env[CRASH_ENV] = "some-other-point"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "survived" in proc.stdout
    assert len(set(CRASH_POINTS)) == 7


def test_the_readme_lists_every_crash_point() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    listed = readme[readme.index("ZRAFT_CRASH_POINT` to one of") :].split(" and the node exits")[0]
    assert {p.strip("`,") for p in listed.split() if p.startswith("`") and "-" in p} == set(CRASH_POINTS)


def test_storage_hits_every_crash_point(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    hook = RaiseAt("none")
    s = open_storage(fs, d, segment_bytes=100, crash_hook=hook, snapshot_runner=StepRunner())
    s.recover()
    for i in range(1, 30):
        s.persist(HardState(1, None, i), None, ents(i, i), None)
    for i in (5, 10, 15):
        s.persist(None, None, [], snap(i, 1))
    s.compact(15)
    s.persist(None, None, [], snap(20, 1), snapshot_is_own=True)
    assert s.poll_snapshot() is None  # the writer has not run a step yet
    s.close()  # waits for the writer, which records the snapshot
    assert set(hook.hits) == set(CRASH_POINTS)


# --- compaction -------------------------------------------------------------------------------------


def test_compaction_deletes_covered_segments_and_old_snapshots(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d, segment_bytes=200)
    s.recover()
    for i in range(1, 101, 2):
        s.persist(HardState(2, "n1", i), None, ents(i, i + 1, term=2), None)
    before = wal_files(fs, d)
    for i in (20, 40, 60):
        s.persist(None, None, [], snap(i, 2))
    s.compact(80)  # capped at the newest snapshot, 60
    after = wal_files(fs, d)
    assert 0 < len(after) < len(before)
    assert s.stats.segments_deleted > 0
    snaps = fs.listdir(posixpath.join(d, "snap"))
    assert len(snaps) == 2
    s.persist(HardState(2, "n1", 100), None, ents(101, 102, term=2), None)
    s.close()
    r = reopen(fs, d, segment_bytes=200)
    assert r.snapshot == snap(60, 2)
    assert r.entries == ents(61, 102, term=2)
    assert r.hard_state == HardState(2, "n1", 100)


def test_compaction_never_deletes_the_active_segment(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d)
    s.recover()
    s.persist(None, None, ents(1, 10), None)
    s.persist(HardState(1, None, 10), None, [], snap(10, 1))
    s.compact(10)
    assert len(wal_files(fs, d)) == 1
    s.close()
    r = reopen(fs, d)
    assert r.snapshot == snap(10, 1) and r.entries == [] and r.hard_state == HardState(1, None, 10)


def test_crash_during_compaction(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    sim = isinstance(fs, SimFS)
    for seed in range(12 if sim else 1):
        dd = f"{d}-{seed}"
        s = open_storage(fs, dd, segment_bytes=150)
        s.recover()
        for i in range(1, 61, 2):
            s.persist(HardState(1, None, i), None, ents(i, i + 1), None)
        for i in (10, 30, 50):
            s.persist(None, None, [], snap(i, 1))
        s.close()
        if sim:
            assert isinstance(fs, SimFS)
            s = open_storage(fs, dd, segment_bytes=150)
            s.recover()
            fs.fail_after(1 + seed % 6)
            with pytest.raises(SimCrash):
                s.compact(50)
            fs.crash(random.Random(seed))
        else:
            s = open_storage(fs, dd, segment_bytes=150, crash_hook=RaiseAt(COMPACT_BEFORE_DELETE))
            s.recover()
            with pytest.raises(CrashPointReached):
                s.compact(50)
        r = reopen(fs, dd, segment_bytes=150)
        assert r.snapshot == snap(50, 1) and r.entries == ents(51, 60)
        assert r.hard_state == HardState(1, None, 59)


# --- identity ---------------------------------------------------------------------------------------


def test_identity_mismatch(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    reopen(fs, d)
    with pytest.raises(IdentityMismatch) as exc:
        reopen(fs, d, node_name="n2")
    assert "'n1'" in str(exc.value) and "'n2'" in str(exc.value)
    with pytest.raises(IdentityMismatch) as exc:
        reopen(fs, d, cluster_id="other")
    assert "'c1'" in str(exc.value) and "'other'" in str(exc.value)
    assert issubclass(IdentityMismatch, StorageError)
    reopen(fs, d)


def test_data_without_identity_is_refused(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    s = open_storage(fs, d)
    s.recover()
    s.persist(HardState(1, None, 0), None, ents(1, 3), None)
    s.close()
    fs.remove(posixpath.join(d, "meta"))
    with pytest.raises(StorageError, match="no identity file"):
        reopen(fs, d)


def test_damaged_identity_file(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    reopen(fs, d)
    flip(fs, posixpath.join(d, "meta"), 10)
    with pytest.raises(CorruptionError, match="meta"):
        reopen(fs, d)


# --- randomized crashes on SimFS --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class State:
    hs: HardState
    snap: Snapshot | None
    entries: tuple[Entry, ...]

    @property
    def snap_index(self) -> int:
        return self.snap.meta.index if self.snap else 0

    @property
    def last(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index

    @property
    def last_term(self) -> int:
        if self.entries:
            return self.entries[-1].term
        return self.snap.meta.term if self.snap else 0

    def term_at(self, index: int) -> int | None:
        if self.entries and self.entries[0].index <= index <= self.last:
            return self.entries[index - self.entries[0].index].term
        if self.snap and index == self.snap.meta.index:
            return self.snap.meta.term
        return None

    def with_snapshot(self, s: Snapshot) -> State:
        if self.term_at(s.meta.index) == s.meta.term:
            kept = tuple(e for e in self.entries if e.index > s.meta.index)
        else:
            kept = ()
        return dataclasses.replace(self, snap=s, entries=kept)

    def steps(
        self, hs: HardState | None, tf: int | None, entries: list[Entry], s: Snapshot | None
    ) -> list[State]:
        """The state after each record of a persist, in order: what a torn write can leave."""
        out = [self]
        cur = self
        if s is not None:
            cur = cur.with_snapshot(s)
            out.append(cur)
        if tf is not None:
            cur = dataclasses.replace(cur, entries=tuple(e for e in cur.entries if e.index < tf))
            out.append(cur)
        for e in entries:
            cur = dataclasses.replace(cur, entries=cur.entries + (e,))
            out.append(cur)
        if hs is not None:
            cur = dataclasses.replace(cur, hs=hs)
            out.append(cur)
        return out


def _random_ready(
    rng: random.Random, st: State, term: int
) -> tuple[int, HardState | None, int | None, list[Entry], Snapshot | None]:
    s = None
    cur = st
    if rng.random() < 0.12:
        if cur.last > cur.snap_index and rng.random() < 0.6:  # a local snapshot of part of the log
            idx = rng.randint(cur.snap_index + 1, cur.last)
            t = cur.term_at(idx)
            assert t is not None
        else:  # installed from a leader: beyond the log, or conflicting with it
            term += 1
            idx = rng.randint(cur.snap_index + 1, cur.last + 6)
            t = term
        s = snap(idx, t, rng.randbytes(rng.randint(0, 2000)))
        cur = cur.with_snapshot(s)
    tf = None
    if cur.last > cur.snap_index and rng.random() < 0.25:
        tf = rng.randint(cur.snap_index + 1, cur.last)
        term += 1
    nxt = tf if tf is not None else cur.last + 1
    n = rng.choice([0, 0, 1, 2, 5, 20])
    entries = [
        Entry(term, i, rng.randint(0, 1), rng.randbytes(rng.randint(0, 40))) for i in range(nxt, nxt + n)
    ]
    hs = HardState(term, rng.choice([None, "n1", "n2"]), rng.randint(0, 50)) if rng.random() < 0.5 else None
    return term, hs, tf, entries, s


def brief(*states: State) -> str:
    return "; ".join(
        f"[hs {s.hs.term}/{s.hs.vote}/{s.hs.commit} snap {s.snap.meta.index if s.snap else None}/"
        f"{s.snap.meta.term if s.snap else None} entries "
        f"{[(e.index, e.term) for e in s.entries][:3]}..{[(e.index, e.term) for e in s.entries][-3:]}]"
        for s in states
    )


def _same_durable_state(got: State, want: State, max_commit: int) -> bool:
    """Equal, except for the commit index: commit-only hard states are written without an fsync, so
    what survives a crash may be any commit index written so far (a restarted node learns it again)."""
    return (
        got.snap == want.snap
        and got.entries == want.entries
        and (got.hs.term, got.hs.vote) == (want.hs.term, want.hs.vote)
        and got.hs.commit <= max_commit
    )


def _recovered_state(r: Recovered) -> State:
    return State(r.hard_state, r.snapshot, tuple(r.entries))


@pytest.mark.parametrize("seed", range(40))
def test_randomized_crashes_never_lose_persisted_state(seed: int) -> None:
    rng = random.Random(seed)
    fs = SimFS(page_size=rng.choice([512, 4096]))  # 512: holes inside a segment, and inside a batch
    d = "/data/n1"
    seg = rng.choice([256, 1024, 4096])

    def restart(candidates: list[State]) -> tuple[DiskStorage, State]:
        while True:
            s = open_storage(fs, d, segment_bytes=seg)
            if rng.random() < 0.15:
                fs.fail_after(rng.randint(1, 6))  # crash during recovery too
            try:
                r = s.recover()
            except SimCrash:
                fs.crash(rng)
                continue
            finally:
                fs.fail_after(None)
            got = _recovered_state(r)
            matching = [c for c in candidates if _same_durable_state(got, c, max_commit)]
            assert matching, f"seed {seed}: got {brief(got)}, expected one of {brief(*candidates)}"
            got = matching[0]
            return s, got

    max_commit = 0
    s, state = restart([State(HardState(0, None, 0), None, ())])
    term = 1
    for _step in range(RANDOM_STEPS):
        crash_now = rng.random() < 0.15
        if crash_now:
            fs.fail_after(rng.randint(1, 10))
        if rng.random() < 0.1:
            candidates = [state]
            try:
                s.compact(rng.randint(0, state.snap_index + 3))
            except SimCrash:
                fs.crash(rng)
                s, state = restart(candidates)
                continue
        else:
            term, hs, tf, entries, sn = _random_ready(rng, state, term)
            max_commit = max(max_commit, hs.commit if hs else 0)
            candidates = state.steps(hs, tf, entries, sn)
            try:
                s.persist(hs, tf, entries, sn)
            except SimCrash:
                fs.crash(rng)
                s, state = restart(candidates)
                term = max(term, state.hs.term, state.last_term)
                continue
            state = candidates[-1]
        fs.fail_after(None)
        if rng.random() < 0.05:  # power loss between calls: everything that returned is durable
            fs.crash(rng)
            s, state = restart([state])
    s.close()
    fs.crash(rng)
    restart([state])


def test_power_loss_during_a_batch_leaves_the_synced_log_and_a_prefix_of_the_batch(warned: list[str]) -> None:
    """Page-granular loss (SimFS, 512-byte pages) of the one batch whose fsync never returned: recovery
    always starts, keeps every synced batch, and keeps at most a prefix of the torn one."""
    reasons: collections.Counter[str] = collections.Counter()
    for seed in range(60):
        rng = random.Random(seed)
        fs = SimFS(page_size=512)
        s = open_storage(fs, "/d", segment_bytes=1 << 16, crash_hook=RaiseAt(WAL_BEFORE_FSYNC, 1 + seed % 4))
        s.recover()
        synced: list[Entry] = []
        term = 1
        try:
            while True:
                first = len(synced) + 1
                batch = [
                    Entry(term, i, 0, rng.randbytes(rng.randint(20, 400)))
                    for i in range(first, first + rng.randint(1, 8))
                ]
                if rng.random() < 0.3:
                    s.persist(HardState(term, "n1", len(synced)), None, [], None)  # commit only, unsynced
                s.persist(HardState(term, "n1", 0), None, batch, None)
                synced += batch
        except CrashPointReached:
            pass
        warned.clear()
        fs.crash(rng)
        r = reopen(fs, "/d", segment_bytes=1 << 16)
        assert r.entries[: len(synced)] == synced, f"seed {seed}: a synced entry was lost"
        assert r.entries == synced + batch[: len(r.entries) - len(synced)], f"seed {seed}: not a prefix"
        reasons.update(w.split("(")[1].split(")")[0] for w in warned if "torn write" in w)
    # Holes with records after them, and torn tails, were both exercised.
    assert reasons["zero-filled hole, and nothing after it was synced"] >= 5, reasons
    assert reasons["zero-filled hole at the tail"] >= 5, reasons


def test_only_term_vote_and_log_changes_cost_an_fsync() -> None:
    """Rule 3 needs term, vote and entries durable before anything depends on them; a commit index alone
    need not be, so it is written without an fsync (the next fsync covers it)."""
    fs = SimFS()
    s = open_storage(fs, "/d")
    s.recover()
    base = fs.fsync_count
    s.persist(HardState(1, "n1", 0), None, [Entry(1, 1, 0, b"a")], None)
    after_entries = fs.fsync_count
    assert after_entries > base
    s.persist(HardState(1, "n1", 1), None, [], None)  # commit only
    assert fs.fsync_count == after_entries
    s.persist(HardState(2, None, 1), None, [], None)  # a new term must be durable
    assert fs.fsync_count > after_entries
    fs.crash(random.Random(1))
    r = open_storage(fs, "/d").recover()
    assert (r.hard_state.term, r.hard_state.vote) == (2, None) and [e.index for e in r.entries] == [1]


# --- preallocated segments (wal.py) -------------------------------------------------------------------


def _segment_sizes(fs: FileSystem, d: str) -> list[tuple[int, int]]:
    """(size on disk, where the records end) of every segment, oldest first."""
    return [(fs.size(p), records_end(fs.read(p))) for p in wal_files(fs, d)]


@pytest.mark.parametrize("segment_mode", ["prealloc"], indirect=True)
def test_segments_are_created_at_full_size_and_rolled_into_spares(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    seg = 1024
    s = open_storage(fs, d, segment_bytes=seg)
    s.recover()
    s.persist(HardState(1, "n1", 0), None, ents(1, 2), None)
    ((size, end),) = _segment_sizes(fs, d)
    assert size == seg and 0 < end < seg  # reserved space, written from the start
    assert not fs.exists(posixpath.join(d, "wal", "spare.tmp"))  # not needed before half full
    i = 3
    while s.stats.segments_rolled < 4:
        s.persist(HardState(1, "n1", i), None, ents(i, i + 3), None)
        i += 4
    assert s.stats.segments_from_spare == 3  # every roll after the first segment found a spare ready
    *old, (last_size, last_end) = _segment_sizes(fs, d)
    assert all(size == end for size, end in old)  # a rolled-over segment is cut to its records
    assert last_size == seg and last_end < seg
    s.close()
    assert reopen(fs, d).entries == ents(1, i - 1)


@pytest.mark.parametrize("segment_mode", ["prealloc"], indirect=True)
def test_a_smaller_segment_size_after_a_restart_cuts_the_preallocated_tail(
    env: tuple[FileSystem, str],
) -> None:
    fs, d = env
    s = open_storage(fs, d, segment_bytes=8192)
    s.recover()
    s.persist(HardState(1, "n1", 0), None, ents(1, 30), None)
    s.close()
    s = open_storage(fs, d, segment_bytes=256)
    s.recover()
    for i in range(31, 61, 5):
        s.persist(HardState(1, "n1", i), None, ents(i, i + 4), None)
    s.close()
    *old, _last = _segment_sizes(fs, d)
    assert old and all(size == end for size, end in old)
    assert reopen(fs, d, segment_bytes=256).entries == ents(1, 60)


@pytest.mark.parametrize("segment_mode", ["prealloc"], indirect=True)
def test_a_preallocated_segment_never_written_is_dropped_at_recovery(env: tuple[FileSystem, str]) -> None:
    fs, d = env
    _three_batches(fs, d)
    (path,) = wal_files(fs, d)
    fs.truncate(path, records_end(fs.read(path)))  # what a roll does first (and syncs)
    fresh = posixpath.join(d, "wal", "0000000000000002-0000000000000031.wal")  # renamed, head never written
    f = fs.open_append(fresh)
    f.write(bytes(512))
    f.fsync()
    f.close()
    fs.fsync_dir(posixpath.join(d, "wal"))
    s = open_storage(fs, d)
    r = s.recover()
    assert r.entries == ents(1, 30) and not fs.exists(fresh)
    s.persist(HardState(2, None, 30), None, ents(31, 31, term=2), None)  # a fresh segment starts here
    s.close()
    assert reopen(fs, d).entries == ents(1, 30) + ents(31, 31, term=2)


@pytest.mark.parametrize("segment_mode", ["prealloc"], indirect=True)
def test_background_spares_on_the_real_file_system(tmp_path: Path) -> None:
    fs, d = RealFS(), str(tmp_path / "n1")
    s = open_storage(fs, d, segment_bytes=64 * 1024, background=True)
    s.recover()
    i = 1
    while s.stats.segments_from_spare < 3:
        s.persist(HardState(1, "n1", i), None, ents(i, i + 49, tag=b"x" * 200), None)
        i += 50
        assert i < 20_000, "no spare was ever ready"
    s.close()  # waits for a fill still running
    r = reopen(fs, d)
    assert [e.index for e in r.entries] == list(range(1, i))
    assert all(size == end for size, end in _segment_sizes(fs, d)[:-1])


# --- own snapshots written in the background ----------------------------------------------------------


class StepRunner:
    """A snapshot runner that runs a job's steps only when told to (or when the storage waits for it)."""

    def __init__(self) -> None:
        self.jobs: list[SnapshotJob] = []

    def start(self, job: SnapshotJob) -> None:
        self.jobs.append(job)

    def wait(self, job: SnapshotJob) -> None:
        while not job.step():
            pass


WRITER_STEPS = ["temp file written", "temp file synced", "renamed", "directory synced"]


@pytest.mark.parametrize("steps", range(len(WRITER_STEPS) + 2))
def test_an_own_snapshot_survives_a_power_loss_between_any_two_writer_steps(steps: int) -> None:
    """steps = how many of the writer's steps ran before the power failed; one more: the job finished
    (file durable) but the storage had not recorded it; two more: recorded in the WAL."""
    for seed in range(12):
        fs, runner = SimFS(page_size=512), StepRunner()
        s = open_storage(fs, "/d", snapshot_runner=runner)
        s.recover()
        s.persist(HardState(1, "n1", 20), None, ents(1, 30), None)
        s.persist(None, None, [], snap(20, 1, data=b"s" * 3000), snapshot_is_own=True)
        (job,) = runner.jobs
        for i in range(min(steps, len(WRITER_STEPS) + 1)):
            job.step()
            s.persist(HardState(1, "n1", 20), None, ents(31 + i, 31 + i), None)  # the node goes on meanwhile
        assert job.steps_done == WRITER_STEPS[:steps] and job.finished == (steps > len(WRITER_STEPS))
        if steps == len(WRITER_STEPS) + 1:
            assert s.poll_snapshot() == 20
        fs.crash(random.Random(seed))
        r = reopen(fs, "/d")
        last = 30 + min(steps, len(WRITER_STEPS) + 1)
        if steps >= len(WRITER_STEPS):  # the directory was synced: the file is durable
            assert r.snapshot == snap(20, 1, data=b"s" * 3000) and r.entries == ents(21, last), seed
        else:
            assert r.snapshot in (None, snap(20, 1, data=b"s" * 3000)), seed
            assert r.entries == ents(21 if r.snapshot else 1, last), seed
        assert not [n for n in fs.listdir("/d/snap") if n.endswith(".tmp")]


def _wait_for_snapshot(s: DiskStorage, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = s.poll_snapshot()
        if index is not None:
            return index
        time.sleep(0.005)
    raise AssertionError("the background snapshot never became durable")


def test_an_own_snapshot_is_written_in_the_background_then_recorded(tmp_path: Path) -> None:
    fs, d = RealFS(), str(tmp_path / "n1")
    s = open_storage(fs, d, background=True)
    s.recover()
    s.persist(HardState(1, "n1", 20), None, ents(1, 30), None)
    s.persist(None, None, [], snap(20, 1), snapshot_is_own=True)
    assert s.snapshot_index == 0  # not durable yet: nothing counts on it
    s.persist(HardState(1, "n1", 25), None, ents(31, 32), None)  # the node goes on meanwhile
    assert _wait_for_snapshot(s) == 20 and s.snapshot_index == 20
    s.compact(20)
    s.close()
    r = reopen(fs, d)
    assert r.snapshot == snap(20, 1) and r.entries == ents(21, 32)


def test_any_other_snapshot_waits_for_the_background_writer(tmp_path: Path) -> None:
    fs, d = RealFS(), str(tmp_path / "n1")
    s = open_storage(fs, d, background=True)
    s.recover()
    s.persist(HardState(1, "n1", 30), None, ents(1, 30), None)
    s.persist(None, None, [], snap(10, 1), snapshot_is_own=True)
    s.persist(HardState(2, None, 30), None, [], snap(25, 1))  # installed: written now, after the first
    assert s.snapshot_index == 25 and s.poll_snapshot() is None
    s.close()
    r = reopen(fs, d)
    assert r.snapshot == snap(25, 1) and r.entries == ents(26, 30)


def test_a_failed_background_snapshot_leaves_the_log_whole(tmp_path: Path, warned: list[str]) -> None:
    class FailingRename(RealFS):
        def rename(self, src: str, dst: str) -> None:
            if posixpath.basename(posixpath.dirname(dst)) == "snap":
                raise OSError("injected: rename failed")
            super().rename(src, dst)

    d = str(tmp_path / "n1")
    s = open_storage(FailingRename(), d, background=True)
    s.recover()
    s.persist(HardState(1, "n1", 20), None, ents(1, 30), None)
    s.persist(None, None, [], snap(20, 1), snapshot_is_own=True)
    deadline = time.monotonic() + 10
    while s._snapshot_job is not None and time.monotonic() < deadline:  # noqa: SLF001
        assert s.poll_snapshot() is None
        time.sleep(0.005)
    assert s.snapshot_index == 0 and any("could not write snapshot 20" in w for w in warned)
    s.close()
    r = reopen(RealFS(), d)
    assert r.snapshot is None and r.entries == ents(1, 30)
