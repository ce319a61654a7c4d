"""The garbage collector's policy in a cluster-node process: what survives a full collection is frozen.

A node's heap is mostly long-lived state (the log's entries, the keyspace, sessions, the watch history),
and CPython's full (generation 2) collection walks every tracked object. Under put@64 on a 2-core machine
a node held enough of them for full collections of 120-190 ms every few seconds (timed with gc
callbacks), which were the maximum and p99.9 latencies of the benchmark. After each full collection the
FullCollectionFreezer moves what survived it into the permanent generation (gc.freeze), so the next full
collection walks only what was allocated since.

Frozen objects are still freed by reference counting as usual. Only a reference cycle whose objects were
frozen while alive would never be collected: the node's steady state makes none that reach a full
collection (under load, every full collection after the first found no cyclic garbage; the first, which
runs shortly after start-up, found a few hundred objects of start-up's). `describe()` reports the
collections, their pauses and what they found, so a leak would show in the node's status.

Only cluster-node installs it, since the process is the node's own; an embedded node (cluster/node/
embedded.py) leaves its application's collector alone.
"""

from __future__ import annotations

import gc
import time
from typing import Any


class FullCollectionFreezer:
    """Freeze the survivors of every full collection; see the module docstring."""

    def __init__(self) -> None:
        self.full_collections = 0
        self.cyclic_garbage = 0  # objects the full collections found unreachable (reference cycles)
        self.last_pause = 0.0
        self.max_pause = 0.0
        self._started = 0.0

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.full_collections += 1
        self.cyclic_garbage += info["collected"]
        self.last_pause = pause
        self.max_pause = max(self.max_pause, pause)
        gc.freeze()  # the collection is over: its survivors are not walked again

    def describe(self) -> dict[str, Any]:
        return {
            "full_collections": self.full_collections,
            "cyclic_garbage": self.cyclic_garbage,
            "last_full_ms": round(self.last_pause * 1000, 3),
            "max_full_ms": round(self.max_pause * 1000, 3),
            "frozen_objects": gc.get_freeze_count(),
        }
