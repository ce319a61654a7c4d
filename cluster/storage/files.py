"""Small durable-file helpers on top of a FileSystem: directory creation and atomic replacement."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator, Sequence

from cluster.storage.fs import Buffer, FileSystem

TEMP_SUFFIX = ".tmp"


def parent_dir(path: str) -> str:
    return posixpath.dirname(posixpath.normpath(path)) or "."


def ensure_dir(fs: FileSystem, path: str) -> bool:
    """Create path (and missing parents) durably. Returns True when something was created."""
    path = posixpath.normpath(path)
    missing: list[str] = []
    p = path
    while not fs.exists(p):
        missing.append(p)
        parent = parent_dir(p)
        if parent == p:
            break
        p = parent
    if not missing:
        return False
    fs.makedirs(path)
    for created in reversed(missing):
        fs.fsync_dir(parent_dir(created))
    return True


def atomic_write(
    fs: FileSystem,
    path: str,
    parts: Sequence[Buffer],
    hook: Callable[[str], None] | None = None,
    points: tuple[str, str, str] | None = None,
) -> None:
    """Write parts to path atomically: temp name, write, fsync, rename, fsync the directory.

    points names the (after-temp-write, before-rename, after-rename) crash points passed to hook.
    """
    for _ in atomic_write_steps(fs, path, parts, hook, points):
        pass


def atomic_write_steps(
    fs: FileSystem,
    path: str,
    parts: Sequence[Buffer],
    hook: Callable[[str], None] | None = None,
    points: tuple[str, str, str] | None = None,
) -> Iterator[str]:
    """atomic_write, one step per iteration (yielding the name of the step just done), so that a caller
    can interleave other work, or a crash, between the steps."""
    tmp = path + TEMP_SUFFIX
    if fs.exists(tmp):
        fs.remove(tmp)
    f = fs.open_append(tmp)
    try:
        for part in parts:
            f.write(part)
        yield "temp file written"
        if hook is not None and points is not None:
            hook(points[0])
        f.fsync()
    finally:
        f.close()
    yield "temp file synced"
    if hook is not None and points is not None:
        hook(points[1])
    fs.rename(tmp, path)
    yield "renamed"
    if hook is not None and points is not None:
        hook(points[2])
    fs.fsync_dir(parent_dir(path))
    yield "directory synced"
