"""WAL segment files in `<data-dir>/wal/`, named `<seq>-<first index>.wal` (zero-padded decimal).

`seq` orders the segments; `first index` is the log's last index + 1 when the segment was started, so
every entry that is still live in a segment is below the first index of any later segment (truncation
only ever removes entries). Each segment starts with a HARD_STATE record, so deleting older segments
never loses the term, vote or commit index.

Preallocation: appending to a file changes its size, so every sync also commits file-system metadata.
Writing over zeros that are already on disk does not, and the sync is cheaper. Measured on ext4 with
three processes syncing 2.5 KB writes at once: 475 us appending, 390 us over space reserved with
fallocate, 305 us over zeros written and synced beforehand. So, as etcd does, a segment is created at
its full size (`preallocate` bytes) and written from its start: over zeros written ahead of time into
`spare.tmp` when such a spare is ready (the spare is filled once the active segment is half full, in a
background thread when `background` is set, so the filling never stalls the event loop), else over
space reserved with fallocate. Recovery treats zeros after the last record of the last segment as unused
space (replay.py) and the writer continues where the records end. A segment left behind by a roll is cut
to its records first, so only the last segment ever has such a tail.

Sync markers: every batch that is fsynced ends with a SYNC record (records.py), and the writer writes
nothing more to the segment until that fsync has returned (one thread writes the WAL, one batch at a
time; `append` is the only way in). A new segment's head is fsynced with a SYNC of its own before any
batch follows it. So bytes found after a SYNC record prove that every byte before it was durable, which is
what lets recovery tell a torn write (zeros where the last, unsynced batch never reached the disk) from
damage to synced data.
"""

from __future__ import annotations

import posixpath
import re
import threading
import time
from dataclasses import dataclass

from loguru import logger

from cluster.storage import crash as cp
from cluster.storage import records
from cluster.storage.crash import CrashHook
from cluster.storage.errors import StorageError
from cluster.storage.fs import AppendFile, Buffer, FileSystem

SUFFIX = ".wal"
SPARE_NAME = "spare.tmp"  # the next segment being preallocated; recovery deletes it like any temp file
_ZERO_CHUNK = bytes(1 << 20)
_FILL_PAUSE = 0.01  # seconds after each synced chunk of a background fill: 64 MiB take under a second
_NAME = re.compile(r"^(\d{16,})-(\d{16,})\.wal$")


@dataclass(frozen=True, slots=True)
class Segment:
    seq: int
    first_index: int
    name: str


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016d}-{first_index:016d}{SUFFIX}"


def parse_segment_name(name: str) -> Segment | None:
    m = _NAME.match(name)
    return Segment(int(m.group(1)), int(m.group(2)), name) if m else None


def list_segments(fs: FileSystem, wal_dir: str) -> list[Segment]:
    """Every segment file, in sequence order."""
    segs = []
    for name in fs.listdir(wal_dir):
        seg = parse_segment_name(name)
        if seg is not None:
            segs.append(seg)
        elif not name.endswith(".tmp"):
            logger.warning("ignoring unexpected file {} in {}", name, wal_dir)
    segs.sort(key=lambda s: s.seq)
    return segs


class SparePreparer:
    """Fills `spare.tmp` with durable zeros, now or in a background thread, for the next roll."""

    def __init__(self, fs: FileSystem, wal_dir: str, size: int, background: bool) -> None:
        self.fs = fs
        self.path = posixpath.join(wal_dir, SPARE_NAME)
        self.size = size
        self.background = background
        self._thread: threading.Thread | None = None
        self._ready = False
        self.failures = 0

    def start(self) -> None:
        """Begin preparing a spare unless one is ready or being prepared."""
        if self._ready or self._thread is not None or self.failures:
            return
        if not self.background:
            self._ready = self._fill(pace=False)
            return
        self._thread = threading.Thread(target=self._fill_in_background, name="wal-spare", daemon=True)
        self._thread.start()

    def take(self) -> str | None:
        """The path of a ready spare (now the caller's), or None when none is ready yet."""
        if self._thread is not None and not self._thread.is_alive():
            self._thread.join()
            self._thread = None
        if not self._ready or self._thread is not None:
            return None
        self._ready = False
        return self.path

    def wait(self, timeout: float) -> None:
        """Let a background fill finish (or give up after timeout): called before closing."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _fill_in_background(self) -> None:
        self._ready = self._fill(pace=True)

    def _fill(self, pace: bool) -> bool:
        """Write the spare's zeros and sync them. Paced, a chunk at a time with a pause after each sync:
        one sync of the whole file would flush tens of megabytes at once, and every WAL sync on the disk
        would wait behind it (measured: the worst put latency went from about 30 ms to about 85 ms)."""
        fs = self.fs
        try:
            if fs.exists(self.path):
                fs.remove(self.path)
            f = fs.open_append(self.path)
            try:
                left = self.size
                while left > 0:
                    chunk = _ZERO_CHUNK if left >= len(_ZERO_CHUNK) else bytes(left)
                    f.write(chunk)
                    left -= len(chunk)
                    if pace:
                        f.fsync()
                        time.sleep(_FILL_PAUSE)
                f.fsync()
            finally:
                f.close()
        except OSError as exc:
            self.failures += 1
            logger.warning(
                "could not preallocate the next WAL segment {} ({}); appending instead", self.path, exc
            )
            return False
        return True


class WalWriter:
    """Owns the active segment: appends batches with one fsync each, rolls, deletes old segments."""

    def __init__(
        self,
        fs: FileSystem,
        wal_dir: str,
        hook: CrashHook,
        preallocate: int = 0,
        background: bool = False,
    ) -> None:
        self.fs = fs
        self.wal_dir = wal_dir
        self.hook = hook
        self.segments: list[Segment] = []  # live segments, oldest first; the last one is active
        self.size = 0  # bytes written to the active segment (its logical size)
        self.fsyncs = 0
        self._file: AppendFile | None = None
        self._file_size = 0  # the active segment's size on disk: more than `size` while preallocated
        self._unsynced = False
        self._next_seq = 1
        self.preallocate = preallocate
        self._spare = SparePreparer(fs, wal_dir, preallocate, background) if preallocate > 0 else None

    def path(self, seg: Segment) -> str:
        return posixpath.join(self.wal_dir, seg.name)

    @property
    def active(self) -> Segment | None:
        return self.segments[-1] if self._file is not None else None

    def open(self, segments: list[Segment], next_seq: int, end: int | None = None) -> None:
        """Adopt the recovered segments; the last one (if any) becomes the active segment, written from
        `end` (where its records end; default: its size) on."""
        self.segments = list(segments)
        self._next_seq = max([next_seq] + [s.seq + 1 for s in segments])
        if segments:
            path = self.path(segments[-1])
            self._file_size = self.fs.size(path)
            self.size = self._file_size if end is None else end
            if self.size < self._file_size:
                self._file = self.fs.open_write_at(path, self.size)
            else:
                self._file = self.fs.open_append(path)

    def roll(self, first_index: int, head: Buffer) -> bool:
        """Start a new segment whose first record is head (the current HARD_STATE), fsynced with a SYNC
        record. True when the segment is a spare of zeros written ahead."""
        if self._file is not None:
            if self._unsynced:
                self._file.fsync()
                self.fsyncs += 1
                self._unsynced = False
            self._file.close()
            self._file = None
            if self.size < self._file_size:  # unused preallocated space: only the last segment may have it
                self.fs.truncate(self.path(self.segments[-1]), self.size)
                self._sync_file(self.path(self.segments[-1]))
        seg = Segment(self._next_seq, first_index, segment_name(self._next_seq, first_index))
        self._next_seq += 1
        path = self.path(seg)
        if self.fs.exists(path):
            raise StorageError(f"{path}: segment already exists")
        spare = self._spare.take() if self._spare is not None else None
        if spare is not None:
            self.fs.rename(spare, path)
            how = "over zeros written ahead"
        else:
            self.fs.open_append(path).close()
            how = "appending"
            if self.preallocate and self.fs.allocate(path, self.preallocate):
                how = "over reserved space"
        self._file_size = self.fs.size(path)
        self._file = self.fs.open_write_at(path, 0) if self._file_size else self.fs.open_append(path)
        self.fs.fsync_dir(self.wal_dir)
        self.fsyncs += 1
        self.segments.append(seg)
        self.size = 0
        logger.debug("started WAL segment {}, writing {}", path, how)
        # Synced on its own, so that every segment this writer starts has a SYNC record before any batch.
        self.append(bytearray(head), sync=True, hooks=False)
        return spare is not None

    def append(self, buf: bytearray, sync: bool, hooks: bool = True) -> None:
        """Write one batch at the end of the active segment. With sync, end it with a SYNC record and
        fsync before returning (between the two WAL crash points when hooks is set)."""
        if sync:
            records.append_sync(buf, self.size + len(buf))
        self._write(buf)
        if sync:
            self._sync(hooks)

    def _write(self, data: Buffer) -> None:
        if self._file is None:
            raise StorageError("no active WAL segment")
        self._unsynced = True
        self._file.write(data)
        self.size += len(data)
        self._file_size = max(self._file_size, self.size)
        if self._spare is not None and 2 * self.size >= self.preallocate:
            self._spare.start()

    def _sync(self, hooks: bool) -> None:
        if self._file is None:
            raise StorageError("no active WAL segment")
        if hooks:
            self.hook(cp.WAL_BEFORE_FSYNC)
        self._file.fsync()
        self.fsyncs += 1
        self._unsynced = False
        if hooks:
            self.hook(cp.WAL_AFTER_FSYNC)

    def remove_oldest(self, count: int) -> list[Segment]:
        """Delete the oldest count segments (never the active one), oldest first; fsync the directory."""
        count = min(count, len(self.segments) - 1)
        if count <= 0:
            return []
        doomed = self.segments[:count]
        for seg in doomed:
            self.fs.remove(self.path(seg))
            self.segments.pop(0)
        self.fs.fsync_dir(self.wal_dir)
        self.fsyncs += 1
        return doomed

    def _sync_file(self, path: str) -> None:
        f = self.fs.open_append(path)
        try:
            f.fsync()
            self.fsyncs += 1
        finally:
            f.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._spare is not None:
            self._spare.wait(timeout=5.0)
