"""Snapshot files in `<data-dir>/snap/`, named `<term>-<index>.snap` (zero-padded decimal).

Format: b"ZSNP" | header length u32 | header crc32 u32 | msgpack header | data, where the header is
[version, index, term, members, data length, data crc32, configuration] (the configuration, the bytes
of actors/membership.py, is absent from older files). A file is written under a temp name, fsynced,
renamed and its directory fsynced, so a crash leaves the old snapshot, the new one, or a stray temp file
(removed at recovery); never a half-written snapshot under a real name. A file whose checksums do not match
is skipped at recovery in favour of the previous snapshot.
"""

from __future__ import annotations

import posixpath
import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
from loguru import logger

from actors.messages import Snapshot, SnapshotMeta
from cluster.storage import crash as cp
from cluster.storage.crash import CrashHook
from cluster.storage.errors import CorruptionError
from cluster.storage.files import atomic_write_steps
from cluster.storage.fs import FileSystem

_MAGIC = b"ZSNP"
_HEAD = struct.Struct("<4sII")
VERSION = 1
SUFFIX = ".snap"
_NAME = re.compile(r"^(\d{16,})-(\d{16,})\.snap$")


def snapshot_name(term: int, index: int) -> str:
    return f"{term:016d}-{index:016d}{SUFFIX}"


def parse_snapshot_name(name: str) -> tuple[int, int] | None:
    """(term, index) from a snapshot file name, None for other names."""
    m = _NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def list_snapshots(fs: FileSystem, snap_dir: str) -> list[tuple[int, int, str]]:
    """(index, term, name) of every snapshot file, oldest first."""
    found = []
    for name in fs.listdir(snap_dir):
        parsed = parse_snapshot_name(name)
        if parsed is not None:
            term, index = parsed
            found.append((index, term, name))
    found.sort()
    return found


def encode_header(snapshot: Snapshot) -> bytes:
    meta = snapshot.meta
    header: bytes = msgpack.packb(
        [
            VERSION,
            meta.index,
            meta.term,
            list(meta.members),
            len(snapshot.data),
            zlib.crc32(snapshot.data),
            meta.config,
        ],
        use_bin_type=True,
    )
    return _HEAD.pack(_MAGIC, len(header), zlib.crc32(header)) + header


def write_snapshot(fs: FileSystem, snap_dir: str, snapshot: Snapshot, hook: CrashHook | None = None) -> str:
    """Write a snapshot file atomically and durably; returns its name."""
    for _ in write_snapshot_steps(fs, snap_dir, snapshot, hook):
        pass
    return snapshot_name(snapshot.meta.term, snapshot.meta.index)


def write_snapshot_steps(
    fs: FileSystem, snap_dir: str, snapshot: Snapshot, hook: CrashHook | None = None
) -> Iterator[str]:
    """write_snapshot one step at a time (see files.atomic_write_steps): what the snapshot writer runs."""
    return atomic_write_steps(
        fs,
        posixpath.join(snap_dir, snapshot_name(snapshot.meta.term, snapshot.meta.index)),
        [encode_header(snapshot), snapshot.data],
        hook,
        (cp.SNAP_AFTER_TEMP_WRITE, cp.SNAP_BEFORE_RENAME, cp.SNAP_AFTER_RENAME),
    )


def _parse_header(path: str, raw: bytes) -> tuple[SnapshotMeta, int, int, int]:
    """(meta, data offset, data length, data crc) from the start of a snapshot file."""
    if len(raw) < _HEAD.size:
        raise CorruptionError(f"{path}: snapshot header truncated at offset {len(raw)}")
    magic, hlen, hcrc = _HEAD.unpack_from(raw, 0)
    if magic != _MAGIC:
        raise CorruptionError(f"{path}: bad snapshot magic at offset 0")
    end = _HEAD.size + hlen
    if len(raw) < end:
        raise CorruptionError(f"{path}: snapshot header truncated at offset {len(raw)}")
    header = raw[_HEAD.size : end]
    if zlib.crc32(header) != hcrc:
        raise CorruptionError(f"{path}: snapshot header checksum mismatch at offset {_HEAD.size}")
    try:
        obj: Any = msgpack.unpackb(header, raw=False)
        version, index, term, members, dlen, dcrc, *rest = obj
        config = rest[0] if rest else b""  # older headers carry no configuration
    except (ValueError, TypeError) as exc:
        raise CorruptionError(f"{path}: unreadable snapshot header: {exc}") from exc
    if version != VERSION:
        raise CorruptionError(f"{path}: unknown snapshot version {version}")
    if not (isinstance(members, list) and all(isinstance(m, str) for m in members)):
        raise CorruptionError(f"{path}: bad member list in snapshot header")
    if not isinstance(config, bytes):
        raise CorruptionError(f"{path}: bad configuration in snapshot header")
    return SnapshotMeta(index=index, term=term, members=tuple(members), config=config), end, dlen, dcrc


def load_snapshot(fs: FileSystem, path: str) -> Snapshot:
    """Read and verify a whole snapshot file (one read); CorruptionError when it is damaged."""
    raw = fs.read(path)
    meta, start, dlen, dcrc = _parse_header(path, raw)
    if len(raw) != start + dlen:
        raise CorruptionError(
            f"{path}: snapshot data is {len(raw) - start} bytes, header says {dlen} (offset {start})"
        )
    data = raw[start:] if start else raw
    if zlib.crc32(data) != dcrc:
        raise CorruptionError(f"{path}: snapshot data checksum mismatch (data at offset {start})")
    return Snapshot(meta=meta, data=data)


def load_newest_valid(fs: FileSystem, snap_dir: str) -> tuple[Snapshot | None, str | None]:
    """The newest snapshot whose checksums hold, skipping damaged ones with a warning."""
    for index, term, name in reversed(list_snapshots(fs, snap_dir)):
        path = posixpath.join(snap_dir, name)
        try:
            snap = load_snapshot(fs, path)
        except CorruptionError as exc:
            logger.warning("skipping damaged snapshot {}: {}", path, exc)
            continue
        if (snap.meta.index, snap.meta.term) != (index, term):
            logger.warning(
                "skipping snapshot {}: header says index {} term {}", path, snap.meta.index, snap.meta.term
            )
            continue
        return snap, path
    return None, None
