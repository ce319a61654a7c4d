"""The identity file `<data-dir>/meta`: which cluster and which node a data directory belongs to.

Format: b"ZRID" + crc32 u32 of the body + msgpack body {"version", "cluster_id", "node_name"}.
Written once, atomically, when the data directory is created; checked on every start so a node never
replays another node's (or another cluster's) log.
"""

from __future__ import annotations

import posixpath
import struct
import zlib

import msgpack

from cluster.storage.errors import CorruptionError, IdentityMismatch
from cluster.storage.files import atomic_write
from cluster.storage.fs import FileSystem

META_NAME = "meta"
_MAGIC = b"ZRID"
_HEAD = struct.Struct("<4sI")
VERSION = 1


def meta_path(data_dir: str) -> str:
    return posixpath.join(data_dir, META_NAME)


def write_identity(fs: FileSystem, data_dir: str, cluster_id: str, node_name: str) -> None:
    body = msgpack.packb(
        {"version": VERSION, "cluster_id": cluster_id, "node_name": node_name}, use_bin_type=True
    )
    atomic_write(fs, meta_path(data_dir), [_HEAD.pack(_MAGIC, zlib.crc32(body)), body])


def read_identity(fs: FileSystem, data_dir: str) -> tuple[str, str]:
    """(cluster_id, node_name) from the identity file; CorruptionError when it is damaged."""
    path = meta_path(data_dir)
    raw = fs.read(path)
    if len(raw) < _HEAD.size:
        raise CorruptionError(f"{path}: identity file is truncated ({len(raw)} bytes)")
    magic, crc = _HEAD.unpack_from(raw, 0)
    body = raw[_HEAD.size :]
    if magic != _MAGIC or zlib.crc32(body) != crc:
        raise CorruptionError(f"{path}: identity file is damaged (bad magic or checksum at offset 0)")
    try:
        obj = msgpack.unpackb(body, raw=False)
        cluster_id, node_name = obj["cluster_id"], obj["node_name"]
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptionError(f"{path}: identity file is unreadable: {exc}") from exc
    if not isinstance(cluster_id, str) or not isinstance(node_name, str):
        raise CorruptionError(f"{path}: identity file has bad field types")
    return cluster_id, node_name


def check_identity(fs: FileSystem, data_dir: str, cluster_id: str, node_name: str) -> None:
    found_cluster, found_node = read_identity(fs, data_dir)
    if (found_cluster, found_node) != (cluster_id, node_name):
        raise IdentityMismatch(
            f"data directory {data_dir} belongs to node {found_node!r} of cluster {found_cluster!r}, "
            f"but this node is {node_name!r} of cluster {cluster_id!r}; refusing to start"
        )
