"""A tiny file-system interface for the storage layer, with a real and a simulated implementation.

The storage (cluster/storage/) never calls `os` directly: it goes through a `FileSystem`, so the
deterministic simulator can run the very same write and recovery code on `SimFS`.

`RealFS` is a thin layer over `os` (os.open / os.write / os.fdatasync, directory fsync through an
O_DIRECTORY file descriptor). A file's `fsync()` is fdatasync where the platform has it: it makes the
content and the size durable, which is all a log needs, without flushing timestamps.

`SimFS` is in memory and models what a power loss does to a POSIX file system that promises only
what fsync promises:

* every file has durable bytes and unsynced bytes; `AppendFile.fsync()` makes the file's content
  durable (not its name); a file may also be written from an offset (`open_write_at`), overwriting
  what is there, e.g. the zeros of a preallocated WAL segment;
* creating, renaming and removing a name (file or directory) is durable only after `fsync_dir()` of
  the directory holding the name (a rename becomes durable when either directory is fsynced);
* `crash(rng)` is the power loss, page by page (`page_size` bytes, 4096 by default; a multiple of the
  512-byte sector recovery reasons about). Each file comes back as its durable content with any subset
  of the pages written since its last fsync: a page that reached the disk holds its new bytes, a lost
  one its old bytes where there were any and zeros elsewhere (over preallocated space or where the file
  grew). So a write can be torn anywhere a page boundary falls, and a later page can survive an
  earlier one. The file's size is its new size or, as when the size reached the disk but not the data
  or the other way round, anything between its old and new sizes. How many pages survive is drawn per
  file (none, all, or each with some probability), so whole-write losses and mixtures both occur. Each
  un-synced directory operation is kept or lost at random, in order; a rename is atomic (the file is
  under the old or the new name, never both and never neither, unless its creation was lost too).
  Names whose directory was lost disappear. Afterwards the SimFS is usable again (the node restarts
  on it); handles opened before the crash raise OSError. Given the same rng the outcome is the same.
* `fail_after(n)` arms an injected crash: the n-th mutating operation from now raises `SimCrash`
  before it takes effect, so a test can stop the storage at any moment and then call `crash()`.

Callers are responsible for `fsync_dir()` after creating, renaming or removing names, on both
implementations; `RealFS` does not add hidden fsyncs.
"""

from __future__ import annotations

import os
import posixpath
import random
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview


@runtime_checkable
class AppendFile(Protocol):
    """A file opened for appending."""

    path: str

    def write(self, data: Buffer) -> None:
        """Append all of data (loops over short writes)."""

    def fsync(self) -> None:
        """Make the file's content durable."""

    def close(self) -> None: ...


@runtime_checkable
class FileSystem(Protocol):
    """What the storage needs from a file system, and nothing more."""

    fsync_count: int

    def makedirs(self, path: str) -> None:
        """Create path and any missing parents; no error when it exists."""

    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted."""

    def exists(self, path: str) -> bool: ...

    def size(self, path: str) -> int: ...

    def read(self, path: str) -> bytes:
        """The whole file in one read."""

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Up to length bytes from offset (fewer at the end of the file)."""

    def open_append(self, path: str) -> AppendFile:
        """Open for appending, creating the file when missing."""

    def open_write_at(self, path: str, offset: int) -> AppendFile:
        """Open an existing file to write sequentially from `offset`, overwriting what is there."""

    def allocate(self, path: str, size: int) -> bool:
        """Extend an existing file to `size` bytes that read as zeros, reserving the disk space where the
        file system can (fallocate). False when the platform cannot, leaving the file as it was."""

    def truncate(self, path: str, size: int) -> None: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace dst with src."""

    def remove(self, path: str) -> None: ...

    def fsync_dir(self, path: str) -> None:
        """Make the creations, renames and removals of names in this directory durable."""


# --- the real thing ---------------------------------------------------------------------------------


_datasync = getattr(os, "fdatasync", os.fsync)


class _RealFile:
    __slots__ = ("path", "_fd", "_fs")

    def __init__(self, fs: RealFS, path: str, offset: int | None = None) -> None:
        self.path = path
        self._fs = fs
        if offset is None:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        else:
            self._fd = os.open(path, os.O_WRONLY)
            try:
                os.lseek(self._fd, offset, os.SEEK_SET)
            except OSError:
                os.close(self._fd)
                raise

    def _require_fd(self) -> int:
        if self._fd is None:
            raise OSError(f"{self.path}: file is closed")
        return self._fd

    def write(self, data: Buffer) -> None:
        fd = self._require_fd()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def fsync(self) -> None:
        _datasync(self._require_fd())
        self._fs.fsync_count += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RealFS:
    """The real file system through `os`."""

    def __init__(self) -> None:
        self.fsync_count = 0
        self.dir_fsync_count = 0

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def read(self, path: str) -> bytes:
        with open(path, "rb", buffering=0) as f:
            return f.read()

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def open_append(self, path: str) -> AppendFile:
        return _RealFile(self, path)

    def open_write_at(self, path: str, offset: int) -> AppendFile:
        if offset < 0:
            raise ValueError("offset must be >= 0")
        return _RealFile(self, path, offset)

    def allocate(self, path: str, size: int) -> bool:
        fallocate = getattr(os, "posix_fallocate", None)
        if fallocate is None:
            return False
        fd = os.open(path, os.O_WRONLY)
        try:
            fallocate(fd, 0, size)
        except OSError:  # not supported by this file system, or no space: the caller appends instead
            return False
        finally:
            os.close(fd)
        return True

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.fsync_count += 1
        self.dir_fsync_count += 1


# --- the simulated one ------------------------------------------------------------------------------


class SimCrash(Exception):
    """Raised by a SimFS operation when an injected crash (`SimFS.fail_after`) fires."""


class _Dir:
    """Marker for a directory entry in the name tables."""

    __slots__ = ()


_DIR = _Dir()


class _Inode:
    __slots__ = ("ino", "data", "durable_len", "before_rewrite", "dirty", "page_size")

    def __init__(self, ino: int, page_size: int) -> None:
        self.ino = ino
        self.page_size = page_size
        self.data = bytearray()
        self.durable_len = 0  # data[:durable_len] is durable, when before_rewrite is None
        # The durable content, once a truncate or a write since the last fsync reached into durable_len.
        self.before_rewrite: bytes | None = None
        self.dirty: set[int] = set()  # pages written (or cut) since the last fsync

    def _touch(self, start: int, end: int) -> None:
        ps = self.page_size
        self.dirty.update(range(start // ps, (end + ps - 1) // ps))

    def append(self, data: Buffer) -> None:
        start = len(self.data)
        self.data += data
        self._touch(start, len(self.data))

    def overwrite(self, offset: int, data: Buffer) -> None:
        """Write data at offset (extending the file if it runs past the end)."""
        if offset < self.durable_len and self.before_rewrite is None:
            self.before_rewrite = bytes(self.data[: self.durable_len])
        self.data[offset : offset + len(data)] = data
        self._touch(offset, offset + len(data))

    def resize(self, size: int) -> None:
        """Truncate or extend (with zeros) to size bytes."""
        if size < self.durable_len and self.before_rewrite is None:
            self.before_rewrite = bytes(self.data[: self.durable_len])
        old_len = len(self.data)
        if size <= old_len:
            del self.data[size:]
        else:
            self.data += bytes(size - old_len)
        self._touch(min(size, old_len), max(size, old_len))
        if self.before_rewrite is None:
            self.durable_len = min(self.durable_len, size)

    def sync(self) -> None:
        self.durable_len = len(self.data)
        self.before_rewrite = None
        self.dirty.clear()

    def crash_content(self, rng: random.Random) -> bytearray:
        old = self.before_rewrite if self.before_rewrite is not None else self.data[: self.durable_len]
        new = self.data
        if not self.dirty and len(old) == len(new):
            return bytearray(old)
        if len(new) >= len(old):  # grown: the new size, or the old one, or any size between reached the disk
            size = len(new) if rng.random() < 0.5 else rng.randint(len(old), len(new))
        else:  # cut: the new size reached the disk or not
            size = rng.choice((len(new), len(old)))
        out = bytearray(old[:size])
        out += bytes(size - len(out))
        pick = rng.random()
        survive = 0.0 if pick < 0.2 else 1.0 if pick < 0.4 else rng.random()
        ps = self.page_size
        for page in sorted(self.dirty):
            start = page * ps
            if start >= size:
                break
            if rng.random() < survive:
                end = min(start + ps, size)
                out[start : start + len(new[start:end])] = new[start:end]  # beyond the new size: the old
        return out


Node = _Inode | _Dir


@dataclass(slots=True)
class _DirOp:
    kind: str  # "create" | "mkdir" | "remove" | "rename"
    dirs: tuple[str, ...]  # directories whose fsync makes this durable
    src: tuple[str, str] | None  # (dir, name) removed
    dst: tuple[str, str] | None  # (dir, name) added
    node: Node = field(default=_DIR)


class _SimFile:
    __slots__ = ("path", "_fs", "_inode", "_generation", "_closed", "_pos")

    def __init__(self, fs: SimFS, path: str, inode: _Inode, pos: int | None = None) -> None:
        self.path = path
        self._fs = fs
        self._inode = inode
        self._generation = fs.generation
        self._closed = False
        self._pos = pos  # None: append at the end; else the offset of the next write

    def _check(self) -> None:
        if self._closed:
            raise OSError(f"{self.path}: file is closed")
        if self._generation != self._fs.generation:
            raise OSError(f"{self.path}: stale handle from before a crash")

    def write(self, data: Buffer) -> None:
        self._check()
        self._fs._tick("write")
        if self._pos is None:
            self._inode.append(data)
        else:
            self._inode.overwrite(self._pos, data)
            self._pos += len(data)
        self._fs.bytes_written += len(data)

    def fsync(self) -> None:
        self._check()
        self._fs._tick("fsync")
        self._inode.sync()
        self._fs.fsync_count += 1

    def close(self) -> None:
        self._closed = True


def _split(path: str) -> tuple[str, str]:
    path = _norm(path)
    parent, name = posixpath.split(path)
    return (parent or "."), name


def _norm(path: str) -> str:
    return posixpath.normpath(os.fspath(path))


class SimFS:
    """An in-memory file system with power-loss semantics (see the module docstring)."""

    def __init__(self, page_size: int = 4096) -> None:
        if page_size <= 0 or page_size % 512:
            raise ValueError("page_size must be a positive multiple of 512")
        self.page_size = page_size
        self._cur: dict[str, dict[str, Node]] = {"/": {}, ".": {}}
        self._dur: dict[str, dict[str, Node]] = {"/": {}, ".": {}}
        self._pending: list[_DirOp] = []
        self._next_ino = 1
        self._fail_countdown: int | None = None
        self.generation = 0
        self.fsync_count = 0
        self.dir_fsync_count = 0
        self.bytes_written = 0
        self.crash_count = 0

    # --- injected crashes ---

    def fail_after(self, n: int | None) -> None:
        """The n-th mutating operation from now (1 = the next one) raises SimCrash; None disarms."""
        if n is not None and n < 1:
            raise ValueError("n must be >= 1")
        self._fail_countdown = n

    def _tick(self, op: str) -> None:
        if self._fail_countdown is not None:
            self._fail_countdown -= 1
            if self._fail_countdown <= 0:
                self._fail_countdown = None
                raise SimCrash(f"injected crash at {op}")

    # --- lookups ---

    def _lookup(self, path: str) -> Node | None:
        parent, name = _split(path)
        if name in ("", ".") or parent == path:
            return _DIR if _norm(path) in self._cur else None
        entries = self._cur.get(parent)
        if entries is None:
            return None
        return entries.get(name)

    def _inode(self, path: str) -> _Inode:
        node = self._lookup(path)
        if node is None:
            raise FileNotFoundError(path)
        if not isinstance(node, _Inode):
            raise IsADirectoryError(path)
        return node

    def _dir_entries(self, path: str) -> dict[str, Node]:
        entries = self._cur.get(_norm(path))
        if entries is None:
            raise FileNotFoundError(path)
        return entries

    # --- the FileSystem interface ---

    def makedirs(self, path: str) -> None:
        path = _norm(path)
        if path in self._cur:
            return
        parent, name = _split(path)
        if parent not in self._cur:
            self.makedirs(parent)
        existing = self._cur[parent].get(name)
        if isinstance(existing, _Inode):
            raise FileExistsError(path)
        self._tick("mkdir")
        self._cur[parent][name] = _DIR
        self._cur[path] = {}
        self._pending.append(_DirOp("mkdir", (parent,), None, (parent, name), _DIR))

    def listdir(self, path: str) -> list[str]:
        return sorted(self._dir_entries(path))

    def exists(self, path: str) -> bool:
        return self._lookup(path) is not None

    def size(self, path: str) -> int:
        return len(self._inode(path).data)

    def read(self, path: str) -> bytes:
        return bytes(self._inode(path).data)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        data = self._inode(path).data
        return bytes(data[offset : offset + length])

    def open_append(self, path: str) -> AppendFile:
        node = self._lookup(path)
        if node is None:
            parent, name = _split(path)
            entries = self._dir_entries(parent)
            self._tick("create")
            node = _Inode(self._next_ino, self.page_size)
            self._next_ino += 1
            entries[name] = node
            self._pending.append(_DirOp("create", (parent,), None, (parent, name), node))
        elif not isinstance(node, _Inode):
            raise IsADirectoryError(path)
        return _SimFile(self, _norm(path), node)

    def allocate(self, path: str, size: int) -> bool:
        inode = self._inode(path)
        self._tick("allocate")
        if size > len(inode.data):
            inode.resize(size)  # durable at the next fsync, like an append
        return True

    def open_write_at(self, path: str, offset: int) -> AppendFile:
        if offset < 0:
            raise ValueError("offset must be >= 0")
        inode = self._inode(path)
        if offset > len(inode.data):
            inode.resize(offset)  # like a sparse hole: reads back as zeros
        return _SimFile(self, _norm(path), inode, offset)

    def truncate(self, path: str, size: int) -> None:
        inode = self._inode(path)
        self._tick("truncate")
        inode.resize(size)

    def rename(self, src: str, dst: str) -> None:
        node = self._lookup(src)
        if node is None:
            raise FileNotFoundError(src)
        if not isinstance(node, _Inode):
            raise IsADirectoryError(f"SimFS renames files only: {src}")
        sdir, sname = _split(src)
        ddir, dname = _split(dst)
        dentries = self._dir_entries(ddir)
        if isinstance(dentries.get(dname), _Dir):
            raise IsADirectoryError(dst)
        self._tick("rename")
        del self._cur[sdir][sname]
        dentries[dname] = node
        self._pending.append(_DirOp("rename", (sdir, ddir), (sdir, sname), (ddir, dname), node))

    def remove(self, path: str) -> None:
        node = self._lookup(path)
        if node is None:
            raise FileNotFoundError(path)
        if not isinstance(node, _Inode):
            raise IsADirectoryError(path)
        parent, name = _split(path)
        self._tick("remove")
        del self._cur[parent][name]
        self._pending.append(_DirOp("remove", (parent,), (parent, name), None, node))

    def fsync_dir(self, path: str) -> None:
        path = _norm(path)
        self._dir_entries(path)
        self._tick("fsync_dir")
        keep: list[_DirOp] = []
        for op in self._pending:
            if path in op.dirs:
                self._apply_durable(op)
            else:
                keep.append(op)
        self._pending = keep
        self.fsync_count += 1
        self.dir_fsync_count += 1

    # --- test helpers ---

    def corrupt(self, path: str, offset: int, xor: int = 0xFF) -> None:
        """Flip bits of one byte, durably (bit rot): for corruption tests."""
        inode = self._inode(path)
        inode.data[offset] ^= xor
        if inode.before_rewrite is not None and offset < len(inode.before_rewrite):
            old = bytearray(inode.before_rewrite)
            old[offset] ^= xor
            inode.before_rewrite = bytes(old)

    # --- durability ---

    def _apply_durable(self, op: _DirOp) -> None:
        dur = self._dur
        if op.src is not None:
            sdir, sname = op.src
            entries = dur.get(sdir)
            if entries is not None and entries.get(sname) is op.node:
                del entries[sname]
        if op.dst is not None:
            ddir, dname = op.dst
            dur.setdefault(ddir, {})[dname] = op.node
            if op.kind == "mkdir":
                dur.setdefault(posixpath.join(ddir, dname) if ddir != "." else dname, {})

    def crash(self, rng: random.Random) -> None:
        """Power loss, then the machine comes back: see the module docstring."""
        for op in self._pending:
            if rng.random() < 0.5:
                self._apply_durable(op)
        self._pending = []
        self._fail_countdown = None

        # Keep what is reachable from the roots, in a deterministic order.
        new: dict[str, dict[str, Node]] = {}
        contents: dict[int, _Inode] = {}
        stack = ["/", "."]
        while stack:
            d = stack.pop()
            entries = self._dur.get(d, {})
            kept: dict[str, Node] = {}
            for name in sorted(entries):
                node = entries[name]
                if isinstance(node, _Dir):
                    child = posixpath.join(d, name) if d != "." else name
                    if child in self._dur:
                        kept[name] = node
                        stack.append(child)
                else:
                    inode = contents.get(node.ino)
                    if inode is None:
                        inode = _Inode(node.ino, self.page_size)
                        inode.data = node.crash_content(rng)
                        inode.durable_len = len(inode.data)
                        contents[node.ino] = inode
                    kept[name] = inode
            new[d] = kept
        self._cur = {d: dict(entries) for d, entries in new.items()}
        self._dur = {d: dict(entries) for d, entries in new.items()}
        self.generation += 1
        self.crash_count += 1
