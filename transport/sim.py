"""Deterministic simulation runtime: a virtual clock with an event queue, and a faulty network.

Nothing here knows Raft. Messages are any objects with `src` and `dst` attributes; the network drops,
duplicates, delays (and therefore reorders) them and honours symmetric or one-way partitions, all drawn
from one seeded random.Random so a run is exactly reproducible from its seed. The simulated disk lives in
cluster/storage/fs.py (SimFS).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol


class Addressed(Protocol):
    @property
    def src(self) -> str: ...

    @property
    def dst(self) -> str: ...


class Scheduler:
    """A virtual clock: callbacks run in time order; ties run in the order they were scheduled."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = 0
        self.events_run = 0

    def at(self, when: float, callback: Callable[[], None]) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (max(when, self.now), self._counter, callback))

    def after(self, delay: float, callback: Callable[[], None]) -> None:
        self.at(self.now + delay, callback)

    def run_next(self) -> bool:
        if not self._queue:
            return False
        when, _, callback = heapq.heappop(self._queue)
        self.now = when
        self.events_run += 1
        callback()
        return True

    def next_time(self) -> float:
        return self._queue[0][0] if self._queue else float("inf")


@dataclass(slots=True)
class NetworkFaults:
    drop: float = 0.0  # probability a message is lost
    duplicate: float = 0.0  # probability a message is delivered twice
    min_delay: float = 0.001
    max_delay: float = 0.010  # delays are uniform in [min, max], so messages reorder


class SimNetwork:
    def __init__(
        self,
        scheduler: Scheduler,
        rng: random.Random,
        deliver: Callable[[Any], None],
        faults: NetworkFaults | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._rng = rng
        self._deliver = deliver
        self.faults = faults or NetworkFaults()
        self._blocked: set[tuple[str, str]] = set()
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    def send(self, msg: Addressed, duplicable: bool = True) -> None:
        """Deliver `msg` after a random delay, or lose it; a duplicable one is sometimes delivered twice
        (a stream that never duplicates, such as one TCP connection, sends with duplicable=False)."""
        self.sent += 1
        if (msg.src, msg.dst) in self._blocked or self._rng.random() < self.faults.drop:
            self.dropped += 1
            return
        copies = 2 if self._rng.random() < self.faults.duplicate and duplicable else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            delay = self._rng.uniform(self.faults.min_delay, self.faults.max_delay)
            self._scheduler.after(delay, partial(self._arrive, msg))

    def _arrive(self, msg: Addressed) -> None:
        # A partition made while the message was in flight still cuts it off.
        if (msg.src, msg.dst) in self._blocked:
            self.dropped += 1
            return
        self._deliver(msg)

    def block(self, src: str, dst: str) -> None:
        """One-way: messages from src to dst are lost."""
        self._blocked.add((src, dst))

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Symmetric: nodes talk only within their group. Names not listed are unaffected."""
        sets = [set(g) for g in groups]
        for a in sets:
            for b in sets:
                if a is b:
                    continue
                for x in a:
                    for y in b:
                        self._blocked.add((x, y))

    def isolate(self, node: str, others: Iterable[str]) -> None:
        for other in others:
            if other != node:
                self._blocked.add((node, other))
                self._blocked.add((other, node))

    def rejoin(self, node: str, others: Iterable[str]) -> None:
        """Undo isolate(node, others) (and any other block between them), leaving other cuts as they are."""
        for other in others:
            self._blocked.discard((node, other))
            self._blocked.discard((other, node))

    def heal(self) -> None:
        self._blocked.clear()

    @property
    def partitioned(self) -> bool:
        return bool(self._blocked)
