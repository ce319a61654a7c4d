"""The benchmark's workloads: what one load-generating thread does, operation after operation.

Keys are 8 bytes (decimal, zero padded) drawn from a 100,000-key space and values are 100 bytes: the
defaults of etcd's own benchmark tool. Reads go to a preloaded set of keys spread over the key space, so
every read finds a value. Every workload runs against a `Driver`: the same closures drive zraft, etcd and
PySyncObj.

    put         put a random key from the key space
    get         linearizable get of a preloaded key
    serial-get  serializable (local, possibly stale) get of a preloaded key
    mixed       90% linearizable get / 10% put, both over the preloaded keys
    cas         compare-and-swap: each thread owns one key and swaps the value it last wrote for a new one
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

KEY_SIZE = 8
KEY_SPACE = 100_000
VALUE_SIZE = 100
MIXED_READ_FRACTION = 0.9
CAS_KEY_PREFIX = "c"
_CAS_SLOTS = 10 ** (KEY_SIZE - len(CAS_KEY_PREFIX))
_MAX_THREADS_PER_WORKER = 10_000

WORKLOADS: dict[str, str] = {
    "put": "put, 8-byte keys over a 100k key space, 100-byte values",
    "get": "linearizable get of a preloaded key",
    "serial-get": "serializable get of a preloaded key",
    "mixed": "90% linearizable get / 10% put over the preloaded keys",
    "cas": "compare-and-swap on a key owned by the thread (always expected to succeed)",
}
WRITE_WORKLOADS = frozenset({"put", "mixed", "cas"})

# An operation returns True when it saw what it expected, False for a "miss" (a get that found nothing,
# a compare-and-swap that did not swap): misses are counted, they are not errors.
Op = Callable[[], bool]


class Driver(Protocol):
    """The operations a system under test offers the load generator. Values are bytes."""

    def put(self, key: str, value: bytes) -> None: ...

    def get(self, key: str, serializable: bool) -> bytes | None: ...

    def cas(self, key: str, expected: bytes, new: bytes) -> bool: ...

    def close(self) -> None: ...


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


def cas_key(worker: int, thread: int) -> str:
    """The key a compare-and-swap thread owns: unique per (worker, thread), 8 bytes, outside read_keys."""
    if not 0 <= thread < _MAX_THREADS_PER_WORKER or not 0 <= worker < _CAS_SLOTS // _MAX_THREADS_PER_WORKER:
        raise ValueError(f"no cas key for worker {worker}, thread {thread}")
    return f"{CAS_KEY_PREFIX}{worker * _MAX_THREADS_PER_WORKER + thread:0{KEY_SIZE - len(CAS_KEY_PREFIX)}d}"


def make_value(rng: random.Random) -> bytes:
    return rng.randbytes(VALUE_SIZE)


def numbered_value(base: bytes, number: int) -> bytes:
    """`base` with its last 8 bytes replaced by `number`: distinct values of the same size."""
    return base[:-8] + number.to_bytes(8, "big")


def split_concurrency(total: int, workers: int) -> list[int]:
    """Threads per worker process for a total concurrency: as even as possible, the first ones get more."""
    if total < 1 or workers < 1:
        raise ValueError("concurrency and workers must be positive")
    share, extra = divmod(total, workers)
    return [share + (1 if i < extra else 0) for i in range(workers)]


@dataclass(frozen=True, slots=True)
class ThreadContext:
    """What one load-generating thread needs to know to build its operation."""

    worker: int
    thread: int
    seed: int
    read_set: int  # how many keys were preloaded (read_keys(read_set))
    key_space: int = KEY_SPACE


def make_op(workload: str, driver: Driver, ctx: ThreadContext) -> Op:
    """The operation one thread repeats. For "cas" this writes the thread's key first (not timed)."""
    rng = random.Random(ctx.seed * 1_000_003 + ctx.worker * 10_007 + ctx.thread)
    value = make_value(rng)
    keys = read_keys(ctx.read_set, ctx.key_space)
    pick = rng.choice
    if workload == "put":
        space = ctx.key_space

        def put() -> bool:
            driver.put(key_for(rng.randrange(space)), value)
            return True

        return put
    if workload in ("get", "serial-get"):
        serializable = workload == "serial-get"

        def get() -> bool:
            return driver.get(pick(keys), serializable) is not None

        return get
    if workload == "mixed":
        draw = rng.random

        def mixed() -> bool:
            key = pick(keys)
            if draw() < MIXED_READ_FRACTION:
                return driver.get(key, False) is not None
            driver.put(key, value)
            return True

        return mixed
    if workload == "cas":
        return _cas_op(driver, cas_key(ctx.worker, ctx.thread), value)
    raise ValueError(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")


@dataclass(slots=True)
class _CasState:
    number: int
    current: bytes


def _cas_op(driver: Driver, key: str, base: bytes) -> Op:
    state = _CasState(0, numbered_value(base, 0))
    driver.put(key, state.current)

    def cas() -> bool:
        new = numbered_value(base, state.number + 1)
        if driver.cas(key, state.current, new):
            state.number, state.current = state.number + 1, new
            return True
        seen = driver.get(key, False)  # someone else wrote it (should not happen): resynchronise
        if seen is None:
            seen = numbered_value(base, 0)
            driver.put(key, seen)
        state.current = seen
        return False

    return cas
