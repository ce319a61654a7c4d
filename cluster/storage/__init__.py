"""Durable storage of one node: WAL segments, hard state, snapshots and the identity file.

Everything goes through a `cluster.storage.fs.FileSystem`, so the simulator runs the same recovery code
on `SimFS` that a real node runs on `RealFS`. See storage.py for the layout and the persist contract.
"""

from cluster.storage.crash import (
    COMPACT_BEFORE_DELETE,
    CRASH_ENV,
    CRASH_EXIT_CODE,
    CRASH_POINTS,
    SNAP_AFTER_RENAME,
    SNAP_AFTER_TEMP_WRITE,
    SNAP_BEFORE_MARK,
    SNAP_BEFORE_RENAME,
    WAL_AFTER_FSYNC,
    WAL_BEFORE_FSYNC,
    CrashHook,
    CrashPointReached,
    RaiseAt,
    crash_point,
)
from cluster.storage.errors import CorruptionError, IdentityMismatch, StorageError
from cluster.storage.identity import read_identity
from cluster.storage.records import RecordType
from cluster.storage.snapshots import load_newest_valid, load_snapshot
from cluster.storage.storage import DEFAULT_SEGMENT_BYTES, DiskStorage, StorageStats

__all__ = [
    "COMPACT_BEFORE_DELETE",
    "CRASH_ENV",
    "CRASH_EXIT_CODE",
    "CRASH_POINTS",
    "DEFAULT_SEGMENT_BYTES",
    "SNAP_AFTER_RENAME",
    "SNAP_AFTER_TEMP_WRITE",
    "SNAP_BEFORE_MARK",
    "SNAP_BEFORE_RENAME",
    "WAL_AFTER_FSYNC",
    "WAL_BEFORE_FSYNC",
    "CorruptionError",
    "CrashHook",
    "CrashPointReached",
    "DiskStorage",
    "IdentityMismatch",
    "RaiseAt",
    "RecordType",
    "StorageError",
    "StorageStats",
    "crash_point",
    "load_newest_valid",
    "load_snapshot",
    "read_identity",
]
