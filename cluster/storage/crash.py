"""Crash points: named places in the storage code where a fault test can make the process die.

`crash_point(name)` exits the process at once (os._exit(77): no cleanup, no buffered output flushed)
when the environment variable ZRAFT_CRASH_POINT equals name (at its ZRAFT_CRASH_AFTER-th hit).
Real nodes pass it as their crash hook; the simulator passes its own hook (for example `RaiseAt`)
to stop a node at the same places in-process.

A stalling disk for fault tests: with ZRAFT_FSYNC_STALL=PATH, every WAL or snapshot fsync waits while the
file PATH exists, so a test can start and end a stall during a run by creating and removing that file.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from loguru import logger

CRASH_ENV = "ZRAFT_CRASH_POINT"
CRASH_AFTER_ENV = "ZRAFT_CRASH_AFTER"
CRASH_EXIT_CODE = 77
FSYNC_STALL_ENV = "ZRAFT_FSYNC_STALL"
_STALL_POLL_SECONDS = 0.01

WAL_BEFORE_FSYNC = "wal-before-fsync"
WAL_AFTER_FSYNC = "wal-after-fsync"
SNAP_AFTER_TEMP_WRITE = "snap-after-temp-write"  # temp file written, not yet fsynced
SNAP_BEFORE_RENAME = "snap-before-rename"  # temp file fsynced, not yet renamed
SNAP_AFTER_RENAME = "snap-after-rename"  # renamed, directory not yet fsynced
SNAP_BEFORE_MARK = "snap-before-mark"  # an own snapshot's file is durable, its WAL record not yet written
COMPACT_BEFORE_DELETE = "compact-before-delete"

CRASH_POINTS: tuple[str, ...] = (
    WAL_BEFORE_FSYNC,
    WAL_AFTER_FSYNC,
    SNAP_AFTER_TEMP_WRITE,
    SNAP_BEFORE_RENAME,
    SNAP_AFTER_RENAME,
    SNAP_BEFORE_MARK,
    COMPACT_BEFORE_DELETE,
)

CrashHook = Callable[[str], None]


_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Exit the process immediately when ZRAFT_CRASH_POINT names this point.

    With ZRAFT_CRASH_AFTER=N the process exits at the Nth time the point is reached (default the first),
    so a fault test can let a node run under load before it dies there.
    """
    if os.environ.get(CRASH_ENV) == name:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] < int(os.environ.get(CRASH_AFTER_ENV, "1")):
            return
        logger.critical("crash point {} reached: exiting with code {}", name, CRASH_EXIT_CODE)
        with contextlib.suppress(OSError):
            os.write(2, f"zraft: crash point {name} reached\n".encode())
        os._exit(CRASH_EXIT_CODE)


def _no_crash(name: str) -> None:
    """The hook of a process started without ZRAFT_CRASH_POINT: nothing to check, on the hot path."""


class FsyncStall:
    """A crash hook that, just before each fsync, waits while the file `flag_path` exists, then calls
    `inner` (so stalls and crash points combine)."""

    BEFORE_FSYNC = frozenset({WAL_BEFORE_FSYNC, SNAP_AFTER_TEMP_WRITE})

    def __init__(self, flag_path: str, inner: CrashHook) -> None:
        self.flag_path = flag_path
        self.inner = inner

    def __call__(self, name: str) -> None:
        if name in self.BEFORE_FSYNC and os.path.exists(self.flag_path):
            logger.warning("fsync stalled while {} exists", self.flag_path)
            while os.path.exists(self.flag_path):
                time.sleep(_STALL_POLL_SECONDS)  # the flag is a file another process removes: poll it
            logger.warning("fsync stall over")
        self.inner(name)


def default_crash_hook() -> CrashHook:
    """crash_point when this process was started with ZRAFT_CRASH_POINT set, else a hook that does nothing
    (so an ordinary node does not look the variable up twice per fsync); wrapped in FsyncStall when
    ZRAFT_FSYNC_STALL names a flag file. The environment is read once, when the storage is opened."""
    hook = crash_point if os.environ.get(CRASH_ENV) else _no_crash
    stall = os.environ.get(FSYNC_STALL_ENV)
    return FsyncStall(stall, hook) if stall else hook


class CrashPointReached(Exception):
    """Raised by `RaiseAt` in place of exiting the process."""

    def __init__(self, name: str) -> None:
        super().__init__(f"crash point {name} reached")
        self.name = name


class RaiseAt:
    """A crash hook for in-process tests: raise CrashPointReached at the given point (nth time it is hit)."""

    def __init__(self, name: str, nth: int = 1) -> None:
        self.name = name
        self.remaining = nth
        self.hits: list[str] = []

    def __call__(self, name: str) -> None:
        self.hits.append(name)
        if name == self.name:
            self.remaining -= 1
            if self.remaining == 0:
                raise CrashPointReached(name)
