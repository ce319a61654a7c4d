"""The benchmark's workloads: what one load slot does, operation after operation, asynchronously.

Keys are 8 bytes (decimal, zero padded) drawn from a 100,000-key space and values are 100 bytes: the
defaults of etcd's own benchmark tool. Reads go to a preloaded set of keys spread over the key space, so
every read finds a value. Every workload runs against a `Driver`, the asynchronous face of one system's
client: the same operations drive zraft, etcd and PySyncObj.

    put         put a random key from the key space
    get         linearizable get of a preloaded key
    serial-get  serializable (local, possibly stale) get of a preloaded key
    mixed       90% linearizable get / 10% put, both over the preloaded keys
    cas         compare-and-swap: each slot owns one key and swaps the value it last wrote for a new one
    watch       1 writer, N watchers of one prefix (N = the concurrency): the latency of an event is its
                arrival at a watcher minus the start of its put; events/s count every watcher's events
                (cluster/bench/watchload.py)
    lease       each slot keeps one lease (granted in setup, untimed) and renews it, one keepalive after
                the other

An operation is started with two callbacks and returns at once: later (from whatever thread the driver
completes on, or before it returns) exactly one of done(ok) or fail(exc) is called. ok is False for a
"miss" (a get that found nothing, a compare-and-swap that did not swap): misses are counted, they are not
errors. The compare-and-swap operation is a small chain of driver calls (swap; on a miss re-read the key
and resynchronise), one link started from the previous one's callback.

The watch and lease workloads need a `StreamDriver` (watches and leases); PySyncObj has neither, so the
bench runs them against zraft and etcd only (`STREAM_WORKLOADS`). A watched value carries the
time.monotonic() of its put's start (`stamped_value`): on Linux that clock is the same for every process
of the machine, so a watcher in another process than the writer can time the delivery.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

KEY_SIZE = 8
KEY_SPACE = 100_000
VALUE_SIZE = 100
MIXED_READ_FRACTION = 0.9
CAS_KEY_PREFIX = "c"
_CAS_KEYS = 10 ** (KEY_SIZE - len(CAS_KEY_PREFIX))
MAX_SLOTS_PER_WORKER = 10_000

WORKLOADS: dict[str, str] = {
    "put": "put, 8-byte keys over a 100k key space, 100-byte values",
    "get": "linearizable get of a preloaded key",
    "serial-get": "serializable get of a preloaded key",
    "mixed": "90% linearizable get / 10% put over the preloaded keys",
    "cas": "compare-and-swap on a key owned by the slot (always expected to succeed)",
    "watch": "1 writer, N watchers of its prefix (N = concurrency): put-to-event latency, events/s",
    "lease": "N leases, each renewed by one keepalive after the other",
}
WRITE_WORKLOADS = frozenset({"put", "mixed", "cas", "watch"})
STREAM_WORKLOADS = frozenset({"watch", "lease"})  # need a StreamDriver
STREAM_SYSTEMS = frozenset({"zraft", "etcd"})  # the systems with one
WATCH_PREFIX = "wbench/"
WATCH_KEYS = 1000  # the writer cycles over this many keys under WATCH_PREFIX
LEASE_TTL = 60  # seconds: far longer than a cell, so no lease expires during the run
_TIMED, _MARKER = 1, 0  # the first byte of a watched value
_STAMP = struct.Struct("!Bd")

Fail = Callable[[BaseException], None]
Done = Callable[[bool], None]  # True: the operation saw what it expected; False: a miss


class Driver(Protocol):
    """The asynchronous operations a system under test offers the load generator. Values are bytes.

    Each call starts one operation and returns at once. Exactly one of its callbacks is called later, on
    any thread (the client's I/O or callback thread), or even before the call returns; a driver never
    raises from these calls: an immediate failure goes to `fail` as well. Callbacks must be quick.
    """

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None: ...

    def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None: ...

    def cas(
        self, key: str, expected: bytes, new: bytes, done: Callable[[bool], None], fail: Fail
    ) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class StreamDriver(Driver, Protocol):
    """A Driver that also offers watches and leases (zraft and etcd)."""

    def watch(self, prefix: str, on_value: Callable[[bytes], None], fail: Fail) -> Callable[[], None]:
        """Watch the prefix from now on: `on_value(value)` for every put under it, in order, on the
        driver's thread; fail(exc) if the watch ends. Returns a function that cancels it (any thread)."""
        ...

    def lease_grant(self, ttl: int, done: Callable[[int], None], fail: Fail) -> None: ...

    def lease_keepalive(self, lease_id: int, done: Callable[[], None], fail: Fail) -> None: ...


class Operation(Protocol):
    """What one load slot repeats. Only one call of a slot's operation is in flight at a time."""

    def setup(self, done: Callable[[], None], fail: Fail) -> None:
        """Once, before the timed run (not timed); e.g. "cas" writes the slot's key."""
        ...

    def __call__(self, done: Done, fail: Fail) -> None:
        """Start the operation; done(ok) or fail(exc) follows (see the module docstring)."""
        ...


def key_for(index: int) -> str:
    """The 8-byte key of `index` in the key space."""
    if not 0 <= index < 10**KEY_SIZE:
        raise ValueError(f"key index {index} does not fit in {KEY_SIZE} digits")
    return f"{index:0{KEY_SIZE}d}"


@lru_cache(maxsize=4)
def read_keys(count: int, key_space: int = KEY_SPACE) -> tuple[str, ...]:
    """`count` distinct keys spread evenly over the key space: the keys preloaded for reads."""
    if not 1 <= count <= key_space:
        raise ValueError(f"the read set must hold 1..{key_space} keys, not {count}")
    return tuple(key_for(i * key_space // count) for i in range(count))


def cas_key(worker: int, slot: int) -> str:
    """The key a compare-and-swap slot owns: unique per (worker, slot), 8 bytes, outside read_keys."""
    if not 0 <= slot < MAX_SLOTS_PER_WORKER or not 0 <= worker < _CAS_KEYS // MAX_SLOTS_PER_WORKER:
        raise ValueError(f"no cas key for worker {worker}, slot {slot}")
    return f"{CAS_KEY_PREFIX}{worker * MAX_SLOTS_PER_WORKER + slot:0{KEY_SIZE - len(CAS_KEY_PREFIX)}d}"


def make_value(rng: random.Random) -> bytes:
    return rng.randbytes(VALUE_SIZE)


def numbered_value(base: bytes, number: int) -> bytes:
    """`base` with its last 8 bytes replaced by `number`: distinct values of the same size."""
    return base[:-8] + number.to_bytes(8, "big")


def stamped_value(base: bytes, marker: bool = False, now: float | None = None) -> bytes:
    """`base` (VALUE_SIZE bytes) headed by a kind byte and the time.monotonic() of now."""
    stamp = _STAMP.pack(_MARKER if marker else _TIMED, time.monotonic() if now is None else now)
    return stamp + base[len(stamp) :]


def read_stamp(value: bytes) -> tuple[bool, float] | None:
    """(is a marker, stamp) of a stamped value; None for anything else."""
    if len(value) < _STAMP.size:
        return None
    kind, stamp = _STAMP.unpack_from(value)
    if kind not in (_TIMED, _MARKER):
        return None
    return kind == _MARKER, stamp


def split_concurrency(total: int, workers: int) -> list[int]:
    """Requests in flight per worker process for a total concurrency: as even as possible, the first
    ones get more."""
    if total < 1 or workers < 1:
        raise ValueError("concurrency and workers must be positive")
    share, extra = divmod(total, workers)
    return [share + (1 if i < extra else 0) for i in range(workers)]


@dataclass(frozen=True, slots=True)
class SlotContext:
    """What one load slot needs to know to build its operation."""

    worker: int
    slot: int
    seed: int
    read_set: int  # how many keys were preloaded (read_keys(read_set))
    key_space: int = KEY_SPACE


def make_op(workload: str, driver: Driver, ctx: SlotContext) -> Operation:
    """The operation one slot repeats, with its own seeded random choices."""
    rng = random.Random(ctx.seed * 1_000_003 + ctx.worker * 10_007 + ctx.slot)
    value = make_value(rng)
    keys = read_keys(ctx.read_set, ctx.key_space)
    if workload == "put":
        return _Put(driver, rng, value, ctx.key_space)
    if workload in ("get", "serial-get"):
        return _Get(driver, rng, keys, workload == "serial-get")
    if workload == "mixed":
        return _Mixed(driver, rng, keys, value)
    if workload == "cas":
        return _Cas(driver, cas_key(ctx.worker, ctx.slot), value)
    if workload in STREAM_WORKLOADS:
        if not isinstance(driver, StreamDriver):
            raise ValueError(f"the {workload} workload needs watches and leases, which this system lacks")
        if workload == "watch":
            return _StampedPut(driver, value)
        return _Keepalive(driver)
    raise ValueError(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")


class _NoSetup:
    def setup(self, done: Callable[[], None], fail: Fail) -> None:
        done()


class _Put(_NoSetup):
    def __init__(self, driver: Driver, rng: random.Random, value: bytes, key_space: int) -> None:
        self.driver = driver
        self.randrange = rng.randrange
        self.value = value
        self.key_space = key_space

    def __call__(self, done: Done, fail: Fail) -> None:
        self.driver.put(key_for(self.randrange(self.key_space)), self.value, lambda: done(True), fail)


class _Get(_NoSetup):
    def __init__(self, driver: Driver, rng: random.Random, keys: tuple[str, ...], serializable: bool) -> None:
        self.driver = driver
        self.pick = rng.choice
        self.keys = keys
        self.serializable = serializable

    def __call__(self, done: Done, fail: Fail) -> None:
        self.driver.get(self.pick(self.keys), self.serializable, lambda v: done(v is not None), fail)


class _Mixed(_NoSetup):
    def __init__(self, driver: Driver, rng: random.Random, keys: tuple[str, ...], value: bytes) -> None:
        self.driver = driver
        self.pick = rng.choice
        self.draw = rng.random
        self.keys = keys
        self.value = value

    def __call__(self, done: Done, fail: Fail) -> None:
        key = self.pick(self.keys)
        if self.draw() < MIXED_READ_FRACTION:
            self.driver.get(key, False, lambda v: done(v is not None), fail)
        else:
            self.driver.put(key, self.value, lambda: done(True), fail)


class _Cas:
    """Swap the value this slot last wrote for the next numbered one. On a miss (someone else wrote the
    key, which should not happen) read the key back and resynchronise, writing it if it vanished."""

    def __init__(self, driver: Driver, key: str, base: bytes) -> None:
        self.driver = driver
        self.key = key
        self.base = base
        self.number = 0
        self.current = numbered_value(base, 0)

    def setup(self, done: Callable[[], None], fail: Fail) -> None:
        self.driver.put(self.key, self.current, done, fail)

    def __call__(self, done: Done, fail: Fail) -> None:
        new = numbered_value(self.base, self.number + 1)

        def swapped(ok: bool) -> None:
            if ok:
                self.number, self.current = self.number + 1, new
                done(True)
            else:
                self.driver.get(self.key, False, resync, fail)

        def resync(seen: bytes | None) -> None:
            if seen is not None:
                self.current = seen
                done(False)
                return
            fresh = numbered_value(self.base, 0)

            def rewritten() -> None:
                self.current = fresh
                done(False)

            self.driver.put(self.key, fresh, rewritten, fail)

        self.driver.cas(self.key, self.current, new, swapped, fail)


class _StampedPut(_NoSetup):
    """The watch workload's writer: puts stamped values over WATCH_KEYS keys under WATCH_PREFIX."""

    def __init__(self, driver: Driver, value: bytes) -> None:
        self.driver = driver
        self.value = value
        self.number = 0

    def __call__(self, done: Done, fail: Fail) -> None:
        self.number += 1
        key = f"{WATCH_PREFIX}{self.number % WATCH_KEYS:04d}"
        self.driver.put(key, stamped_value(self.value), lambda: done(True), fail)


class _Keepalive:
    """Grant one lease in setup, then renew it over and over."""

    def __init__(self, driver: StreamDriver) -> None:
        self.driver = driver
        self.lease_id = 0

    def setup(self, done: Callable[[], None], fail: Fail) -> None:
        def granted(lease_id: int) -> None:
            self.lease_id = lease_id
            done()

        self.driver.lease_grant(LEASE_TTL, granted, fail)

    def __call__(self, done: Done, fail: Fail) -> None:
        self.driver.lease_keepalive(self.lease_id, lambda: done(True), fail)
