"""An exclusive lock on a data directory, so two node processes never write the same WAL.

`<data-dir>/lock` is locked with flock(LOCK_EX | LOCK_NB) for as long as the node runs and holds the
owner's pid for the operator. The kernel drops the lock when the process dies, even on kill -9.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

LOCK_NAME = "lock"


class DataDirLocked(Exception):
    """Another process holds the data directory's lock."""


@contextlib.contextmanager
def data_dir_lock(data_dir: str) -> Iterator[None]:
    path = os.path.join(data_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise DataDirLocked(
                f"data directory {data_dir} is in use by another process (pid {owner}, lock file {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)
