"""Messages between cluster-bench and its worker processes: a 4-byte big-endian length, then msgpack.

The bench writes commands to a worker's stdin and reads answers from its stdout (the worker moves its own
stdout aside first, so nothing printed can corrupt the stream). Every message is a map with a "cmd"
(commands) or "ok" (answers) key; nothing but msgpack crosses the pipe.
"""

from __future__ import annotations

import select
import struct
from typing import IO, Any

import msgpack

_HEADER = struct.Struct(">I")
MAX_MESSAGE = 256 * 1024 * 1024


class WorkerGone(Exception):
    """The other side closed the stream or did not answer in time."""


def encode_message(message: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(message, use_bin_type=True)
    return _HEADER.pack(len(body)) + body


def write_message(stream: IO[bytes], message: dict[str, Any]) -> None:
    stream.write(encode_message(message))
    stream.flush()


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            raise WorkerGone("stream closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_message(stream: IO[bytes], timeout: float | None = None) -> dict[str, Any]:
    """The next message; WorkerGone on end of stream, or when none starts within `timeout` seconds
    (the timeout needs an unbuffered stream, such as a Popen pipe with bufsize=0)."""
    if timeout is not None:
        ready, _, _ = select.select([stream], [], [], max(0.0, timeout))
        if not ready:
            raise WorkerGone(f"no answer within {timeout:g}s")
    (size,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    if size > MAX_MESSAGE:
        raise WorkerGone(f"message of {size} bytes is too large")
    message = msgpack.unpackb(_read_exact(stream, size), raw=False)
    if not isinstance(message, dict):
        raise WorkerGone("message is not a map")
    return message
