"""The WAL record format: [length u32][crc32 u32][type u8][payload], little endian.

`length` is the payload length; the CRC (zlib.crc32) covers the type byte and the payload. Payloads are
msgpack arrays:

    ENTRY          [term, index, kind, data]      a log entry
    HARD_STATE     [term, vote or None, commit]   the latest one wins
    TRUNCATE       [from_index]                   drop entries >= from_index
    SNAPSHOT_MARK  [index, term]                  a durable snapshot covers entries <= index
    SYNC           [offset]                       the end of a batch the writer fsyncs before it writes on

SYNC (added with issue 9; older WALs have none, and an older zraft refuses a WAL that has them) ends
every batch that is fsynced, and carries its own offset in the segment so that a copy of a record inside
some payload is never taken for one. It is how recovery tells a torn write from damage: the writer writes
nothing after a SYNC record until that fsync has returned, so any byte found after a SYNC record proves
that everything up to it was durable (replay.py).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from typing import Any

import msgpack

from actors.messages import Entry, HardState


class RecordType(IntEnum):
    ENTRY = 1
    HARD_STATE = 2
    TRUNCATE = 3
    SNAPSHOT_MARK = 4
    SYNC = 5


HEADER = struct.Struct("<IIB")
HEADER_SIZE = HEADER.size  # 9
MAX_PAYLOAD = 1 << 30  # a length beyond this is garbage, not a record

TYPE_CRC: dict[int, int] = {int(t): zlib.crc32(bytes([t])) for t in RecordType}
_pack_header = HEADER.pack
_crc32 = zlib.crc32

# Every payload is a msgpack fixarray of 1..4 items, so a record's type byte is followed by 0x91..0x94.
# Used to look for valid records after a bad one without trying every byte offset.
_RECORD_START = re.compile(rb"[\x01-\x05][\x91-\x94]")


class RecordFormatError(ValueError):
    """A payload that passed its CRC but does not have the expected shape."""


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def append_record(buf: bytearray, rtype: int, payload: bytes) -> None:
    """Append one framed record to buf."""
    buf += _pack_header(len(payload), _crc32(payload, TYPE_CRC[rtype]), rtype)
    buf += payload


def encode_record(rtype: int, payload: bytes) -> bytes:
    buf = bytearray()
    append_record(buf, rtype, payload)
    return bytes(buf)


def append_entries(buf: bytearray, entries: Iterable[Entry]) -> int:
    """Frame every entry once into buf; returns how many were appended."""
    packer = msgpack.Packer(use_bin_type=True)
    pack = packer.pack
    crc0 = TYPE_CRC[RecordType.ENTRY]
    entry_type = int(RecordType.ENTRY)
    n = 0
    for e in entries:
        payload = pack([e.term, e.index, int(e.kind), bytes(e.data)])
        buf += _pack_header(len(payload), _crc32(payload, crc0), entry_type)
        buf += payload
        n += 1
    return n


def hard_state_payload(hs: HardState) -> bytes:
    return _packb([hs.term, hs.vote, hs.commit])


def truncate_payload(from_index: int) -> bytes:
    return _packb([from_index])


def snapshot_mark_payload(index: int, term: int) -> bytes:
    return _packb([index, term])


def sync_payload(offset: int) -> bytes:
    return _packb([offset])


def append_sync(buf: bytearray, offset: int) -> None:
    """Append the SYNC record that ends a batch; offset is where that record starts in its segment."""
    append_record(buf, RecordType.SYNC, sync_payload(offset))


def entry_maker() -> Callable[[int, int, int, bytes], Entry]:
    """A constructor for Entry that skips the frozen dataclass __init__ (one object.__setattr__ call
    per field, about half the cost of replaying a record) by filling the slots directly. Recovery
    builds an Entry per record, so this matters; it falls back to Entry if the class changes shape."""
    fields = getattr(Entry, "__dataclass_fields__", {})
    if list(fields) != ["term", "index", "kind", "data"] or hasattr(Entry, "__post_init__"):
        return Entry
    new = object.__new__
    set_term, set_index = Entry.term.__set__, Entry.index.__set__  # type: ignore[attr-defined,misc]
    set_kind, set_data = Entry.kind.__set__, Entry.data.__set__  # type: ignore[attr-defined,misc]

    def make(term: int, index: int, kind: int, data: bytes) -> Entry:
        e = new(Entry)
        set_term(e, term)
        set_index(e, index)
        set_kind(e, kind)
        set_data(e, data)
        return e

    return make


def _is_int(x: object) -> bool:
    return type(x) is int and x >= 0


def decode_entry(obj: Any) -> Entry:
    if not (
        type(obj) is list
        and len(obj) == 4
        and _is_int(obj[0])
        and _is_int(obj[1])
        and _is_int(obj[2])
        and type(obj[3]) is bytes
    ):
        raise RecordFormatError(f"bad ENTRY payload {obj!r:.80}")
    return Entry(obj[0], obj[1], obj[2], obj[3])


def decode_hard_state(obj: Any) -> HardState:
    if not (
        type(obj) is list
        and len(obj) == 3
        and _is_int(obj[0])
        and (obj[1] is None or type(obj[1]) is str)
        and _is_int(obj[2])
    ):
        raise RecordFormatError(f"bad HARD_STATE payload {obj!r:.80}")
    return HardState(obj[0], obj[1], obj[2])


def decode_truncate(obj: Any) -> int:
    if not (type(obj) is list and len(obj) == 1 and _is_int(obj[0]) and obj[0] >= 1):
        raise RecordFormatError(f"bad TRUNCATE payload {obj!r:.80}")
    return int(obj[0])


def decode_snapshot_mark(obj: Any) -> tuple[int, int]:
    if not (type(obj) is list and len(obj) == 2 and _is_int(obj[0]) and _is_int(obj[1])):
        raise RecordFormatError(f"bad SNAPSHOT_MARK payload {obj!r:.80}")
    return int(obj[0]), int(obj[1])


def decode_sync(obj: Any) -> int:
    if not (type(obj) is list and len(obj) == 1 and _is_int(obj[0])):
        raise RecordFormatError(f"bad SYNC payload {obj!r:.80}")
    return int(obj[0])


def check_record(buf: bytes | memoryview, offset: int) -> tuple[int, int] | str:
    """Validate the framing of the record at offset: (type, end offset) or the reason it is bad."""
    n = len(buf)
    if offset + HEADER_SIZE > n:
        return f"incomplete record header ({n - offset} of {HEADER_SIZE} bytes)"
    length, crc, rtype = HEADER.unpack_from(buf, offset)
    start = offset + HEADER_SIZE
    end = start + length
    if rtype not in TYPE_CRC:
        return f"unknown record type {rtype}"
    if length > MAX_PAYLOAD:
        return f"implausible record length {length}"
    if end > n:
        return f"short payload ({n - start} of {length} bytes)"
    if _crc32(memoryview(buf)[start:end], TYPE_CRC[rtype]) != crc:
        return "checksum mismatch"
    return rtype, end


def find_valid_record(buf: bytes | memoryview, start: int) -> int | None:
    """The offset of the first record with valid framing that begins at or after start, if any."""
    data = bytes(buf) if isinstance(buf, memoryview) else buf
    for m in _RECORD_START.finditer(data, start + HEADER_SIZE - 1):
        offset = m.start() - (HEADER_SIZE - 1)
        if offset >= start and isinstance(check_record(data, offset), tuple):
            return offset
    return None


def valid_records(buf: bytes | memoryview, start: int) -> Iterator[tuple[int, int, int]]:
    """(offset, type, end) of every record with valid framing at or after start, skipping damage."""
    data = bytes(buf) if isinstance(buf, memoryview) else buf
    off: int | None = start
    while off is not None and off < len(data):
        res = check_record(data, off)
        if isinstance(res, tuple):
            yield off, res[0], res[1]
            off = res[1]
        else:
            off = find_valid_record(data, off + 1)


def unpack_payload(buf: bytes | memoryview) -> Any:
    return msgpack.unpackb(buf, raw=False, strict_map_key=False)
