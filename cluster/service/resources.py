"""CPU and memory usage for heartbeats: one sample per heartbeat, reported as the average of the last 100.

A server reports the machine (all cores, used memory = total - available); a process reports itself (its CPU
time share, its resident memory) against the machine's capacity. CPU is in percent of one core, so a
4-core machine has CPU_CAPACITY 400 (the "used / capacity = %" column of `cluster-ctl servers`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import psutil

from cluster.service.records import CPU_CAPACITY, CPU_USED, MEMORY_CAPACITY, MEMORY_USED

SAMPLES = 100


class ResourceSampler:
    """Samples usage on each call of `sample()` and averages the last SAMPLES samples."""

    def __init__(self, whole_machine: bool, samples: int = SAMPLES) -> None:
        self.whole_machine = whole_machine
        self.cores = psutil.cpu_count() or 1
        self._process = psutil.Process()
        self._cpu: deque[float] = deque(maxlen=samples)
        self._mem: deque[float] = deque(maxlen=samples)
        # The first cpu_percent() call only starts the measurement: prime it now.
        self._cpu_percent()

    def _cpu_percent(self) -> float:
        if self.whole_machine:
            return float(psutil.cpu_percent(interval=None)) * self.cores
        return float(self._process.cpu_percent(interval=None))

    def sample(self) -> dict[str, Any]:
        """Take one sample; the averages of the last samples as record fields."""
        memory = psutil.virtual_memory()
        used = memory.total - memory.available if self.whole_machine else self._process.memory_info().rss
        self._cpu.append(self._cpu_percent())
        self._mem.append(float(used))
        return {
            CPU_CAPACITY: self.cores * 100,
            CPU_USED: round(sum(self._cpu) / len(self._cpu), 1),
            MEMORY_CAPACITY: int(memory.total),
            MEMORY_USED: int(sum(self._mem) / len(self._mem)),
        }
