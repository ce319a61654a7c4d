"""DiskStorage: the durable log, hard state and snapshots of one node, through a FileSystem.

    <data-dir>/meta          identity: cluster id and node name
    <data-dir>/wal/*.wal     segments of CRC-checked records (records.py, wal.py)
    <data-dir>/snap/*.snap   snapshots (snapshots.py)

The runtime calls `recover()` once, then `persist()` once per Ready: everything in the Ready is written
with one write and made durable with one fsync (group commit) before the Ready's messages are sent
(DESIGN.md rule 3). `compact()` drops what a durable snapshot covers. The same code runs on the real
file system and on the simulator's SimFS.

A snapshot the node took itself (`snapshot_is_own`) guards nothing in its Ready: the WAL still holds every
entry it covers. With a snapshot runner (`background` gives production's thread; the simulator passes its
own), its file (about 35 ms for 12 MB here) is written by the snapshot writer (snapshot_writer.py) while
the node goes on; `poll_snapshot()` then records it in the WAL (SNAPSHOT_MARK, with its own fsync) and the
runtime compacts. A crash before that leaves the previous snapshot and the full WAL, or a durable file
without a mark, which recovery records (see recover()). Snapshot files are written one at a time, in
order: any other snapshot waits for the writer first.
"""

from __future__ import annotations

import gc
import posixpath
import time
from dataclasses import dataclass

from loguru import logger

from actors.contracts import Recovered
from actors.messages import Entry, HardState, Snapshot, SnapshotMeta
from cluster.storage import crash as cp
from cluster.storage import records
from cluster.storage.crash import CrashHook, default_crash_hook
from cluster.storage.errors import CorruptionError, StorageError
from cluster.storage.files import TEMP_SUFFIX, ensure_dir
from cluster.storage.fs import FileSystem
from cluster.storage.identity import META_NAME, check_identity, meta_path, write_identity
from cluster.storage.logindex import LogIndex
from cluster.storage.replay import LogReplayer
from cluster.storage.snapshot_writer import SnapshotJob, SnapshotRunner, ThreadRunner
from cluster.storage.snapshots import (
    list_snapshots,
    load_newest_valid,
    snapshot_name,
    write_snapshot,
)
from cluster.storage.wal import SPARE_NAME, Segment, WalWriter, list_segments

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
SNAPSHOTS_KEPT = 2
INITIAL_HARD_STATE = HardState(term=0, vote=None, commit=0)


@dataclass(slots=True)
class StorageStats:
    fsyncs: int = 0  # every fsync the storage asked for (files and directories)
    batches: int = 0  # persist() calls that wrote something
    records: int = 0
    bytes: int = 0
    entries: int = 0
    snapshots: int = 0
    segments_rolled: int = 0
    segments_from_spare: int = 0  # rolled into a spare of zeros written ahead (wal.py)
    segments_deleted: int = 0
    torn_records_cut: int = 0  # recoveries that cut a record cut short by the end of the file
    zero_holes_cut: int = 0  # recoveries that cut a zero-filled hole (replay.py)

    def entries_per_fsync(self) -> float:
        return self.entries / self.fsyncs if self.fsyncs else 0.0


class DiskStorage:
    def __init__(
        self,
        fs: FileSystem,
        data_dir: str,
        *,
        cluster_id: str,
        node_name: str,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        crash_hook: CrashHook | None = None,
        preallocate: bool = True,
        background: bool = False,
        snapshot_runner: SnapshotRunner | None = None,
    ) -> None:
        """`preallocate`: new WAL segments are files of segment_bytes durable zeros, written over
        (cheaper syncs; see wal.py), prepared in a background thread when `background` is set.
        `snapshot_runner` runs the writer of the node's own snapshots; by default a thread when
        `background` is set, else none (persist() writes them itself)."""
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        self.fs = fs
        self.data_dir = posixpath.normpath(data_dir)
        self.wal_dir = posixpath.join(self.data_dir, "wal")
        self.snap_dir = posixpath.join(self.data_dir, "snap")
        self.cluster_id = cluster_id
        self.node_name = node_name
        self.segment_bytes = segment_bytes
        self.background = background
        self._snapshot_runner = snapshot_runner or (ThreadRunner() if background else None)
        self._snapshot_job: SnapshotJob | None = None
        self.hook: CrashHook = crash_hook if crash_hook is not None else default_crash_hook()
        self.stats = StorageStats()
        self._wal = WalWriter(
            fs,
            self.wal_dir,
            self.hook,
            preallocate=segment_bytes if preallocate else 0,
            background=background,
        )
        self._hard_state = INITIAL_HARD_STATE
        self._synced_hard_state = INITIAL_HARD_STATE  # the last hard state known to be fsynced
        self._log = LogIndex()  # snapshot index/term, exact last index, terms of the durable log
        self._recovered = False
        self._closed = False

    # --- recovery ---

    def recover(self) -> Recovered:
        """Open (or create) the data directory and rebuild the durable state."""
        if self._recovered:
            raise StorageError("recover() was already called")
        if self._closed:
            raise StorageError("storage is closed")
        started = time.perf_counter()
        self._open_layout()
        self._remove_temp_files()

        snapshot, snap_path = load_newest_valid(self.fs, self.snap_dir)
        newest = list_snapshots(self.fs, self.snap_dir)
        skipped = [name for index, _, name in newest if snapshot is None or index > snapshot.meta.index]
        if snapshot is not None:
            logger.info(
                "{}: using snapshot {} (index {}, term {}, {} bytes)",
                self.node_name,
                snap_path,
                snapshot.meta.index,
                snapshot.meta.term,
                len(snapshot.data),
            )
        replayer = LogReplayer(snapshot.meta.index, snapshot.meta.term) if snapshot else LogReplayer()

        segments, stale = self._replayable_segments()
        if segments:
            replayer.begin(segments[0].first_index)
        # Replay creates an object per entry and frees almost nothing: the cyclic GC would rescan the
        # growing heap over and over (more than half the replay time), so it is paused meanwhile.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for i, seg in enumerate(segments):
                self._replay_segment(replayer, seg, is_last=i == len(segments) - 1)
            hard_state, entries = replayer.finish()
        except CorruptionError as exc:
            if skipped:
                raise CorruptionError(f"{exc} (damaged newer snapshots were skipped: {skipped})") from exc
            raise
        finally:
            if gc_was_enabled:
                gc.enable()

        # The last segment lost everything (torn before its first record, or a preallocated one never
        # written): drop it so the next persist starts a fresh segment that begins with the hard state.
        active_end: int | None = replayer.end if segments else None
        if segments and replayer.end == 0:
            active_end = None  # the segment before it was cut to its records when the WAL rolled
            empty = segments.pop()
            self.fs.remove(self._wal.path(empty))
            self.fs.fsync_dir(self.wal_dir)
            self.stats.fsyncs += 1
        if stale:
            for seg in stale:
                self.fs.remove(self._wal.path(seg))
            self.fs.fsync_dir(self.wal_dir)
            self.stats.fsyncs += 1
            logger.info(
                "{}: removed {} segments left over from an interrupted compaction", self.node_name, len(stale)
            )

        self._hard_state = hard_state if hard_state is not None else INITIAL_HARD_STATE
        self._synced_hard_state = self._hard_state
        if snapshot is not None:
            self._log.load(snapshot.meta.index, snapshot.meta.term, entries)
        else:
            self._log.load(0, 0, entries)
        self._wal.open(segments, next_seq=(stale[-1].seq + 1) if stale else 1, end=active_end)
        self._recovered = True
        if snapshot is not None and (snapshot.meta.index, snapshot.meta.term) not in replayer.marks:
            # The snapshot file became durable but the crash took its SNAPSHOT_MARK record. Write the mark
            # now, before anything else, so later records are replayed against the state returned here.
            self._write_mark_now(snapshot.meta.index, snapshot.meta.term, self._log.last)

        elapsed = time.perf_counter() - started
        logger.info(
            "{}: recovered {} entries{} from {} WAL segments ({} records, {} bytes), hard state {}, "
            "in {:.3f}s",
            self.node_name,
            len(entries),
            f" ({entries[0].index}..{entries[-1].index})" if entries else "",
            len(segments),
            replayer.records,
            replayer.bytes,
            self._hard_state,
            elapsed,
        )
        return Recovered(hard_state=self._hard_state, snapshot=snapshot, entries=entries)

    def _open_layout(self) -> None:
        fs = self.fs
        created = ensure_dir(fs, self.data_dir)
        if fs.exists(meta_path(self.data_dir)):
            check_identity(fs, self.data_dir, self.cluster_id, self.node_name)
        else:
            has_data = (
                fs.exists(self.wal_dir)
                and any(fs.size(posixpath.join(self.wal_dir, n)) for n in fs.listdir(self.wal_dir))
            ) or (fs.exists(self.snap_dir) and bool(list_snapshots(fs, self.snap_dir)))
            if has_data:
                raise StorageError(
                    f"{self.data_dir} holds WAL or snapshot data but no identity file "
                    f"{meta_path(self.data_dir)}; refusing to guess whose data it is"
                )
            write_identity(fs, self.data_dir, self.cluster_id, self.node_name)
            logger.info(
                "{}: {} data directory {} for cluster {}",
                self.node_name,
                "created" if created else "initialised",
                self.data_dir,
                self.cluster_id,
            )
        ensure_dir(fs, self.wal_dir)
        ensure_dir(fs, self.snap_dir)

    def _remove_temp_files(self) -> None:
        fs = self.fs
        for d in (self.data_dir, self.snap_dir, self.wal_dir):
            removed = False
            for name in fs.listdir(d):
                if name.endswith(TEMP_SUFFIX) and (d != self.data_dir or name == META_NAME + TEMP_SUFFIX):
                    fs.remove(posixpath.join(d, name))
                    # A spare segment is made again when needed; any other temp file is worth a word.
                    log = logger.debug if d == self.wal_dir and name == SPARE_NAME else logger.info
                    log("{}: removed leftover temp file {}", self.node_name, posixpath.join(d, name))
                    removed = True
            if removed:
                fs.fsync_dir(d)

    def _replayable_segments(self) -> tuple[list[Segment], list[Segment]]:
        """(segments to replay, stale segments before a gap in the sequence).

        Compaction deletes the oldest segments; when a crash loses only some of those deletions the
        sequence has a gap, and everything before the last gap was being deleted. If that was not so,
        the replayed log will not join the snapshot and recovery fails with CorruptionError.
        """
        segs = list_segments(self.fs, self.wal_dir)
        cut = 0
        for i in range(1, len(segs)):
            if segs[i].seq != segs[i - 1].seq + 1:
                cut = i
        if cut:
            logger.warning(
                "{}: WAL segment sequence has a gap before {}; ignoring {} older segments",
                self.node_name,
                segs[cut].name,
                cut,
            )
        return segs[cut:], segs[:cut]

    def _replay_segment(self, replayer: LogReplayer, seg: Segment, *, is_last: bool) -> None:
        path = self._wal.path(seg)
        buf = self.fs.read(path)
        cut = replayer.feed(buf, path, is_last)
        if cut is None:
            return
        logger.warning(
            "{}: torn write in {} at offset {} ({}): cutting {} bytes (a write that never completed)",
            self.node_name,
            path,
            cut,
            replayer.cut_reason,
            len(buf) - cut,
        )
        if replayer.cut_reason.startswith("zero-filled hole"):
            self.stats.zero_holes_cut += 1
        else:
            self.stats.torn_records_cut += 1
        self.fs.truncate(path, cut)
        f = self.fs.open_append(path)
        try:
            f.fsync()
        finally:
            f.close()

    # --- writing ---

    def persist(
        self,
        hard_state: HardState | None,
        truncate_from: int | None,
        entries: list[Entry] | tuple[Entry, ...],
        snapshot: Snapshot | None,
        snapshot_is_own: bool = False,
    ) -> None:
        """Make a Ready's persistent parts durable: snapshot file, then one WAL write and one fsync.

        An own snapshot is handed to the background writer when there is one (see the module docstring).
        """
        if not self._recovered or self._closed:
            raise StorageError("persist() needs an open, recovered storage")
        if snapshot is not None:
            self._finish_snapshot_writer(wait=True)  # files and marks stay in order
            if snapshot_is_own and self._snapshot_runner is not None:
                self._start_snapshot_writer(snapshot)
                snapshot = None
        if snapshot is None and truncate_from is None and not entries and hard_state is None:
            return
        self._validate(truncate_from, entries, snapshot)
        fsync_count = self._wal.fsyncs
        self._roll_if_due()

        log = self._log
        buf = bytearray()
        nrecords = 0
        if snapshot is not None:
            meta = snapshot.meta
            write_snapshot(self.fs, self.snap_dir, snapshot, self.hook)
            self.stats.fsyncs += 2  # the file and its directory
            self.stats.snapshots += 1
            nrecords += self._append_snapshot_records(buf, meta)
        if truncate_from is not None:
            records.append_record(buf, records.RecordType.TRUNCATE, records.truncate_payload(truncate_from))
            nrecords += 1
            log.truncate(truncate_from)
        if entries:
            nrecords += records.append_entries(buf, entries)
            log.append(entries)
            self.stats.entries += len(entries)
        if hard_state is not None:
            records.append_record(buf, records.RecordType.HARD_STATE, records.hard_state_payload(hard_state))
            nrecords += 1

        # Term and vote must be durable before a vote or acknowledgement leaves; a commit index alone
        # need not be (a restarted node learns it again), so a commit-only change rides along unsynced
        # until the next fsync, as etcd does.
        log_changed = snapshot is not None or truncate_from is not None or bool(entries)
        sync = log_changed or self._term_or_vote_changed(hard_state)
        self._wal.append(buf, sync=sync)
        if sync:
            self._synced_hard_state = hard_state or self._synced_hard_state
        if hard_state is not None:
            self._hard_state = hard_state
        self.stats.fsyncs += self._wal.fsyncs - fsync_count
        self.stats.batches += 1
        self.stats.records += nrecords + sync
        self.stats.bytes += len(buf)

    def _term_or_vote_changed(self, hard_state: HardState | None) -> bool:
        if hard_state is None:
            return False
        synced = self._synced_hard_state
        return (hard_state.term, hard_state.vote) != (synced.term, synced.vote)

    def _validate(
        self, truncate_from: int | None, entries: list[Entry] | tuple[Entry, ...], snapshot: Snapshot | None
    ) -> None:
        """Reject a Ready that would leave a log recovery cannot rebuild (before anything is written)."""
        if truncate_from is not None and truncate_from < 1:
            raise ValueError(f"truncate_from must be >= 1, got {truncate_from}")
        log = self._log
        if snapshot is not None and snapshot.meta.index < log.snapshot_index:
            raise StorageError(
                f"snapshot {snapshot.meta.index} is older than the durable one ({log.snapshot_index})"
            )
        if not entries:
            return
        if snapshot is not None or truncate_from is not None:
            log = log.copy()  # the log the entries will follow
            if snapshot is not None:
                log.apply_snapshot(snapshot.meta.index, snapshot.meta.term)
            if truncate_from is not None:
                log.truncate(truncate_from)
        first = entries[0].index
        if first > log.last + 1:
            raise StorageError(f"entries start at index {first} but the log ends at index {log.last}: a gap")
        if first <= log.snapshot_index:
            raise StorageError(
                f"entries start at index {first}, inside the snapshot (index {log.snapshot_index})"
            )
        for i, e in enumerate(entries):
            if e.index != first + i:
                raise StorageError(f"entries are not consecutive: index {e.index} at position {i}")

    def _roll(self) -> None:
        head = bytearray()
        records.append_record(
            head, records.RecordType.HARD_STATE, records.hard_state_payload(self._hard_state)
        )
        if self._wal.roll(self._log.last + 1, head):
            self.stats.segments_from_spare += 1
        self._synced_hard_state = self._hard_state  # the head is synced with the new segment
        self.stats.records += 2
        self.stats.bytes += len(head)
        self.stats.segments_rolled += 1

    # --- snapshots written in the background ---

    def _start_snapshot_writer(self, snapshot: Snapshot) -> None:
        if snapshot.meta.index < self._log.snapshot_index:
            raise StorageError(
                f"snapshot {snapshot.meta.index} is older than the durable one ({self._log.snapshot_index})"
            )
        assert self._snapshot_runner is not None
        self._snapshot_job = SnapshotJob(self.fs, self.snap_dir, snapshot, self.hook)
        self._snapshot_runner.start(self._snapshot_job)

    def poll_snapshot(self) -> int | None:
        """The index of a snapshot the background writer has just made durable and recorded in the WAL,
        or None; call it every loop turn, and compact() when it says so."""
        return self._finish_snapshot_writer(wait=False)

    def _finish_snapshot_writer(self, wait: bool) -> int | None:
        job = self._snapshot_job
        if job is None or (not wait and not job.finished):
            return None
        assert self._snapshot_runner is not None
        self._snapshot_runner.wait(job)
        self._snapshot_job = None
        meta = job.snapshot.meta
        if job.error is not None:
            logger.error(
                "{}: could not write snapshot {} (the WAL still holds its entries): {}",
                self.node_name,
                meta.index,
                job.error,
            )
            return None
        self.stats.fsyncs += 2  # the file and its directory
        self.stats.snapshots += 1
        self.hook(cp.SNAP_BEFORE_MARK)
        buf = bytearray()
        self._append_snapshot_records(buf, meta)
        fsyncs = self._wal.fsyncs
        self._write_synced(buf)
        self.stats.fsyncs += self._wal.fsyncs - fsyncs
        return meta.index

    def _append_snapshot_records(self, buf: bytearray, meta: SnapshotMeta) -> int:
        """The SNAPSHOT_MARK of a durable snapshot file, plus a TRUNCATE when the log conflicts with it;
        returns how many records were appended."""
        records.append_record(
            buf, records.RecordType.SNAPSHOT_MARK, records.snapshot_mark_payload(meta.index, meta.term)
        )
        if not self._log.apply_snapshot(meta.index, meta.term):
            return 1
        # The log conflicts with the snapshot: say so explicitly, the mark alone keeps the rest.
        records.append_record(buf, records.RecordType.TRUNCATE, records.truncate_payload(meta.index + 1))
        return 2

    def _write_synced(self, buf: bytearray) -> None:
        """Write records outside persist(), with a sync of their own."""
        self._roll_if_due()
        self._wal.append(buf, sync=True, hooks=False)

    def _roll_if_due(self) -> None:
        if self._wal.active is None or self._wal.size >= self.segment_bytes:
            self._roll()

    def _write_mark_now(self, index: int, term: int, last: int) -> None:
        logger.info("{}: recording snapshot {} (term {}) in the WAL", self.node_name, index, term)
        buf = bytearray()
        records.append_record(
            buf, records.RecordType.SNAPSHOT_MARK, records.snapshot_mark_payload(index, term)
        )
        # Whatever the replay held beyond the recovered log (a log the snapshot conflicted with) is gone.
        records.append_record(buf, records.RecordType.TRUNCATE, records.truncate_payload(last + 1))
        self._write_synced(buf)

    # --- compaction ---

    def compact(self, upto_index: int) -> None:
        """Delete WAL segments whose live entries are all <= upto_index (never the active segment) and
        snapshot files older than the newest two. upto_index is capped at the newest durable snapshot.

        Crash-safe at every step: segments go oldest first, so a crash leaves a suffix (or, when some
        deletions were not yet durable, a gap that recovery recognises); snapshots only ever lose old files.
        """
        if not self._recovered or self._closed:
            raise StorageError("compact() needs an open, recovered storage")
        upto = min(upto_index, self._log.snapshot_index)
        segs = self._wal.segments
        # Live entries of segment i are below the first index of every later segment.
        count = 0
        for i in range(len(segs) - 1):
            if segs[i + 1].first_index - 1 <= upto:
                count = i + 1
        current = (self._log.snapshot_index, self._log.snapshot_term)
        old_snaps = [
            (index, term, name)
            for index, term, name in list_snapshots(self.fs, self.snap_dir)[:-SNAPSHOTS_KEPT]
            if (index, term) != current
        ]
        if not count and not old_snaps:
            return
        self.hook(cp.COMPACT_BEFORE_DELETE)
        if count:
            doomed = self._wal.remove_oldest(count)
            self.stats.fsyncs += 1
            self.stats.segments_deleted += len(doomed)
            logger.debug(
                "{}: compacted WAL up to index {}: deleted {}", self.node_name, upto, [s.name for s in doomed]
            )
        if old_snaps:
            for _, _, name in old_snaps:
                self.fs.remove(posixpath.join(self.snap_dir, name))
            self.fs.fsync_dir(self.snap_dir)
            self.stats.fsyncs += 1
            logger.debug("{}: deleted old snapshots {}", self.node_name, [n for _, _, n in old_snaps])

    # --- reading snapshots back ---

    @property
    def snapshot_index(self) -> int:
        """Index of the newest durable snapshot (0 when none)."""
        return self._log.snapshot_index

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def snapshot_path(self) -> str | None:
        if not self._log.snapshot_index:
            return None
        return posixpath.join(self.snap_dir, snapshot_name(self._log.snapshot_term, self._log.snapshot_index))

    def close(self) -> None:
        if self._recovered and not self._closed:
            self._finish_snapshot_writer(wait=True)
        self._wal.close()
        self._closed = True
