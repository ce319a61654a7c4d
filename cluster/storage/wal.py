"""WAL segment files in `<data-dir>/wal/`, named `<seq>-<first index>.wal` (zero-padded decimal).

`seq` orders the segments; `first index` is the log's last index + 1 when the segment was started, so
every entry that is still live in a segment is below the first index of any later segment (truncation
only ever removes entries). Each segment starts with a HARD_STATE record, so deleting older segments
never loses the term, vote or commit index.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from loguru import logger

from cluster.storage import crash as cp
from cluster.storage.crash import CrashHook
from cluster.storage.errors import StorageError
from transport.disk import AppendFile, Buffer, FileSystem

SUFFIX = ".wal"
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


class WalWriter:
    """Owns the active segment: appends batches with one fsync each, rolls, deletes old segments."""

    def __init__(self, fs: FileSystem, wal_dir: str, hook: CrashHook) -> None:
        self.fs = fs
        self.wal_dir = wal_dir
        self.hook = hook
        self.segments: list[Segment] = []  # live segments, oldest first; the last one is active
        self.size = 0  # bytes in the active segment
        self.fsyncs = 0
        self._file: AppendFile | None = None
        self._unsynced = False
        self._next_seq = 1

    def path(self, seg: Segment) -> str:
        return posixpath.join(self.wal_dir, seg.name)

    @property
    def active(self) -> Segment | None:
        return self.segments[-1] if self._file is not None else None

    def open(self, segments: list[Segment], next_seq: int) -> None:
        """Adopt the recovered segments; the last one (if any) becomes the active segment."""
        self.segments = list(segments)
        self._next_seq = max([next_seq] + [s.seq + 1 for s in segments])
        if segments:
            path = self.path(segments[-1])
            self.size = self.fs.size(path)
            self._file = self.fs.open_append(path)

    def roll(self, first_index: int, head: Buffer) -> None:
        """Start a new segment whose first record is head (the current HARD_STATE); not fsynced yet."""
        if self._file is not None:
            if self._unsynced:
                self._file.fsync()
                self.fsyncs += 1
                self._unsynced = False
            self._file.close()
            self._file = None
        seg = Segment(self._next_seq, first_index, segment_name(self._next_seq, first_index))
        self._next_seq += 1
        path = self.path(seg)
        if self.fs.exists(path):
            raise StorageError(f"{path}: segment already exists")
        self._file = self.fs.open_append(path)
        self.fs.fsync_dir(self.wal_dir)
        self.fsyncs += 1
        self.segments.append(seg)
        self.size = 0
        logger.debug("started WAL segment {}", path)
        self.write(head)

    def write(self, data: Buffer) -> None:
        if self._file is None:
            raise StorageError("no active WAL segment")
        self._unsynced = True
        self._file.write(data)
        self.size += len(data)

    def sync(self, hooks: bool = True) -> None:
        """The one fsync of a persist call, between its two crash points."""
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

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
