"""The keyspace of one replica: keys, their records and the global revision, and the ops that use them.

Data model (etcd's): a global `revision`, starting at 0, grows by one for every change (a put, or a delete
that removed at least one key; a whole `del_prefix` is one change). Every key keeps `create_revision`,
`mod_revision` and `version` (the number of puts since it was created; deleting removes the key, and
re-creating it starts again at version 1). Keys sort by code point, which is the same as UTF-8 byte order.

Ops arrive here already validated (cluster/kv/ops.py); results are returned encoded. A write's result
never carries a value (only revisions, counts and flags): it is what a client session caches to answer a
retry (cluster/kv/sessions.py), so it must stay a few dozen bytes whatever the values are.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from heapq import merge
from typing import Any

import msgpack

from cluster.kv.ops import DEFAULT_RANGE_LIMIT, MAX_RANGE_BYTES, Value, pack
from transport.codec import msgpack_array_header

# One key's state: (value, create_revision, mod_revision, version). A tuple keeps 100k keys small.
Record = tuple[Value, int, int, int]
# Told of every change: (revision, key, the key's new record or None when deleted, its record before or
# None when it was absent). The watch history.
ChangeHook = Callable[[int, str, Record | None, Record | None], None]

MAX_PENDING_KEY_CHANGES = 64  # deleted keys taken out of the sorted list one by one; beyond, filtered

_DOUBLE = struct.Struct(">d")
# A range answer, {"ok": True, "rev": rev, "kvs": [kv, ...], "more": bool}, in pieces around its kvs.
_RANGE_HEAD = b"\x84" + pack("ok") + pack(True) + pack("rev")
_KVS = pack("kvs")
_MORE = {True: pack("more") + pack(True), False: pack("more") + pack(False)}


class Keyspace:
    """Keys -> records, the revision, and a lazily maintained sorted key list."""

    __slots__ = ("_data", "_keys_added", "_keys_removed", "_packer", "_revision", "_sorted_keys", "on_change")

    def __init__(self, on_change: ChangeHook | None = None) -> None:
        self.on_change = on_change
        self._revision = 0
        self._data: dict[str, Record] = {}
        # Sorted keys for range/snapshot, brought up to date lazily: the last sorted list (never changed
        # in place: a snapshot job may hold it) plus the keys created and deleted since; None when more
        # changed than the list holds, so that sorting everything again is no dearer than patching it.
        self._sorted_keys: list[str] | None = []
        self._keys_added: set[str] = set()
        self._keys_removed: set[str] = set()
        # Reused for the kvs of a range page: msgpack.packb makes a Packer per call, which doubles the
        # cost of a page. Per keyspace, since one replica is only ever used by one thread at a time.
        self._packer = msgpack.Packer(use_bin_type=True)

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def records(self) -> dict[str, Record]:
        """The live key -> record table (callers must not change it)."""
        return self._data

    def __len__(self) -> int:
        return len(self._data)

    def replace(self, revision: int, keys: list[str], table: dict[str, Record]) -> None:
        """Take a whole new state (from a snapshot): `keys` sorted and unique, `table` their records."""
        self._revision = revision
        self._data = table
        self._set_sorted_keys(keys)

    def sorted_keys(self) -> list[str]:
        """Every key in order. The list is never changed in place afterwards (a snapshot job may hold
        it): a change replaces or drops the cached list."""
        keys = self._sorted_keys
        if keys is None:
            keys = sorted(self._data)
        elif self._keys_added or self._keys_removed:
            removed = self._keys_removed
            if len(removed) <= MAX_PENDING_KEY_CHANGES:
                keys = keys.copy()  # a fraction of a millisecond at 100k keys, against ~13 ms to sort them
                for key in removed:
                    at = bisect_left(keys, key)
                    if at < len(keys) and keys[at] == key:
                        del keys[at]
            else:
                keys = [key for key in keys if key not in removed]
            if self._keys_added:
                # A sorted run and an unsorted tail: the sort finds the run and merges the sorted tail
                # into it, about linear in the keys (a busy writer creates thousands between two ranges).
                keys.extend(self._keys_added)
                keys.sort()
        else:
            return keys
        self._set_sorted_keys(keys)
        return keys

    # -- queries -------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        record = self._data.get(key)
        kv = None if record is None else kv_dict(key, record)
        return pack({"ok": True, "rev": self._revision, "kv": kv})

    def range(self, prefix: str, limit: int, after: str) -> bytes:
        """One page of the keys under `prefix` after `after` (cluster/kv/ops.py says what a page is)."""
        data = self._data
        limit = limit or DEFAULT_RANGE_LIMIT
        # Each kv is encoded once, on its own, so the page's size is known before the answer is built.
        items: list[bytes] = []
        size = 0
        more = False
        encode = self._packer.pack
        for key in self._keys_from(prefix, after):
            if not key.startswith(prefix):
                break
            if len(items) == limit:
                more = True
                break
            item: bytes = encode(kv_dict(key, data[key]))
            if items and size + len(item) > MAX_RANGE_BYTES:
                more = True
                break
            items.append(item)
            size += len(item)
        return b"".join(
            [_RANGE_HEAD, pack(self._revision), _KVS, msgpack_array_header(len(items)), *items, _MORE[more]]
        )

    # -- writes --------------------------------------------------------------------------------------

    def execute(self, op: list[Any]) -> bytes:
        """Run one validated write op and return its encoded result."""
        name = op[0]
        data = self._data
        if name == "put":
            key, value = op[1], op[2]
            prev = data.get(key)
            self._put(key, value, prev)
            return pack({"ok": True, "rev": self._revision, "created": prev is None})
        if name == "del":
            deleted = self._delete(op[1])
            return pack({"ok": True, "rev": self._revision, "deleted": deleted})
        if name == "del_prefix":
            count = self._delete_prefix(op[1])
            return pack({"ok": True, "rev": self._revision, "deleted": count})
        key, expected = op[1], op[2]
        current = data.get(key)
        if name in ("cas_rev", "cas_del_rev"):  # compared by mod revision: no ABA on equal values
            matches = current is None if expected == 0 else (current is not None and current[2] == expected)
        else:
            matches = (
                current is None
                if expected is None
                else (current is not None and same_value(current[0], expected))
            )
        if name in ("cas", "cas_rev"):
            if matches:
                self._put(key, op[3], current)
            return pack({"ok": True, "rev": self._revision, "swapped": matches})
        # cas_del, cas_del_rev
        deleted = self._delete(key) if matches else 0
        return pack({"ok": True, "rev": self._revision, "swapped": matches, "deleted": deleted})

    def _put(self, key: str, value: Value, prev: Record | None) -> None:
        self._revision += 1
        rev = self._revision
        record = (value, rev, rev, 1) if prev is None else (value, prev[1], rev, prev[3] + 1)
        self._data[key] = record
        if prev is None:
            self._key_created(key)
        if self.on_change is not None:
            self.on_change(rev, key, record, prev)

    def _delete(self, key: str) -> int:
        prev = self._data.pop(key, None)
        if prev is None:
            return 0
        self._revision += 1
        self._key_deleted(key)
        if self.on_change is not None:
            self.on_change(self._revision, key, None, prev)
        return 1

    def _delete_prefix(self, prefix: str) -> int:
        data = self._data
        if not data:
            return 0
        hook = self.on_change
        removed: list[tuple[str, Record]] = []
        if not prefix:
            count = len(data)
            if hook is not None:
                removed = [(key, data[key]) for key in self.sorted_keys()]
            self._data = {}
            self._set_sorted_keys([])
        else:
            keys = self.sorted_keys()
            lo = bisect_left(keys, prefix)
            hi = lo
            while hi < len(keys) and keys[hi].startswith(prefix):
                hi += 1
            count = hi - lo
            if not count:
                return 0
            removed = [(key, data.pop(key)) for key in keys[lo:hi]]
            # A new list, still sorted and exact: the old one may belong to a snapshot job in progress.
            self._set_sorted_keys(keys[:lo] + keys[hi:])
        self._revision += 1
        if hook is not None:
            for key, prev in removed:  # one revision for the whole del_prefix, an event per key, in order
                hook(self._revision, key, None, prev)
        return count

    # -- the sorted key list -------------------------------------------------------------------------

    def _keys_from(self, prefix: str, after: str) -> Iterator[str]:
        """Every key from the first under `prefix` that sorts after `after`, in order (callers stop at the
        first key past the prefix). The sorted list is not brought up to date for it: its keys are merged
        with the keys created since that fall under the prefix, so a small range on a busy keyspace (the
        status page reads the members' records ten times a second) costs no sort of every key."""
        keys = self._sorted_keys
        added, removed = self._keys_added, self._keys_removed
        if keys is None or len(added) + len(removed) > max(MAX_PENDING_KEY_CHANGES, len(keys) // 8):
            keys = self.sorted_keys()  # so many changed that scanning them for each range would cost more
            added, removed = self._keys_added, self._keys_removed
        start = bisect_left(keys, prefix)
        if after:
            start = max(start, bisect_right(keys, after))
        if not added and not removed:
            return (keys[i] for i in range(start, len(keys)))
        base = (keys[i] for i in range(start, len(keys)) if keys[i] not in removed)
        # Every key under the prefix sorts before any later key that is not under it, so the merged order
        # still puts all of them before the first key past the prefix.
        new = sorted(key for key in added if key.startswith(prefix) and key > after)
        return merge(base, new) if new else base

    def _set_sorted_keys(self, keys: list[str] | None) -> None:
        self._sorted_keys = keys
        self._keys_added.clear()
        self._keys_removed.clear()

    def _key_created(self, key: str) -> None:
        if self._sorted_keys is None:
            return
        if key in self._keys_removed:
            self._keys_removed.discard(key)  # deleted and created again: the sorted list still has it
        else:
            self._keys_added.add(key)
        self._check_key_changes()

    def _key_deleted(self, key: str) -> None:
        if self._sorted_keys is None:
            return
        if key in self._keys_added:
            self._keys_added.discard(key)  # created and deleted since the list was sorted
        else:
            self._keys_removed.add(key)
        self._check_key_changes()

    def _check_key_changes(self) -> None:
        keys = self._sorted_keys
        pending = len(self._keys_added) + len(self._keys_removed)
        if keys is not None and pending > max(MAX_PENDING_KEY_CHANGES, len(keys)):
            self._set_sorted_keys(None)


def kv_dict(key: str, record: Record) -> dict[str, Any]:
    return {
        "key": key,
        "value": record[0],
        "create_revision": record[1],
        "mod_revision": record[2],
        "version": record[3],
    }


def same_value(a: Value, b: Value) -> bool:
    """Equal and of the same types throughout (so 1, 1.0 and True differ); floats compare bit for bit."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is float:
        return _DOUBLE.pack(a) == _DOUBLE.pack(b)
    if kind is list:
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if kind is dict:
        return a.keys() == b.keys() and all(same_value(v, b[k]) for k, v in a.items())
    return bool(a == b)
