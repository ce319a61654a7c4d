"""What a node measures about itself for /metrics and the status page: latency histograms, counts of client
requests and answers, leader changes, and its last events.

Everything here but `TimedFS` belongs to the node's loop thread: the runtime records into it, and once per
publication (cluster/node/bridge.py) `Instruments.export()` copies it into plain immutable data that the
HTTP thread reads. `TimedFS` wraps the storage's file-system seam to time each fsync; fsyncs also happen on
storage's background threads (spare WAL segments, the node's own snapshots), so its histogram takes a lock.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, deque
from typing import Any, Final

from actors.messages import RequestKind, Status
from cluster.storage.fs import AppendFile, Buffer, RealFS

# seconds: from a fast NVMe fsync to a disk that stalls
LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
MAX_EVENTS: Final = 50


class Histogram:
    """Counts of observations at or below each bound (not cumulative here), their sum and count."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot: above every bound (+Inf)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def export(self) -> dict[str, Any]:
        """Cumulative bucket counts as Prometheus wants them: [(bound, count <= bound)], +Inf last."""
        running = 0
        buckets: list[tuple[float, int]] = []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            buckets.append((bound, running))
        return {"buckets": buckets, "sum": self.total, "count": self.count}


class LockedHistogram(Histogram):
    """A Histogram observed from several threads."""

    __slots__ = ("_lock",)

    def __init__(self, bounds: tuple[float, ...]) -> None:
        super().__init__(bounds)
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            super().observe(value)

    def export(self) -> dict[str, Any]:
        with self._lock:
            return super().export()


class Instruments:
    """The loop's own measurements; see the module docstring."""

    def __init__(self) -> None:
        self.append_seconds = Histogram(LATENCY_BUCKETS)  # one Ready's WAL write + fsync
        self.apply_seconds = Histogram(LATENCY_BUCKETS)  # one Ready's apply pass
        self.entries_per_fsync = Histogram(BATCH_BUCKETS)
        self.snapshot_seconds = Histogram(LATENCY_BUCKETS)  # handed to the writer -> durable and marked
        self.fsync_seconds: Histogram = LockedHistogram(LATENCY_BUCKETS)  # every fsync: TimedFS's, when used
        self.requests: Counter[int] = Counter()  # client requests by kind
        self.answers: Counter[int] = Counter()  # answers and stream frames sent to clients, by status
        self.proposals_committed = 0  # our own proposals applied (Ready.applied)
        self.leader_changes = 0  # times this node saw a different leader (or none) than before
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.snapshot_started: float | None = None

    def event(self, text: str, level: str = "info") -> None:
        """Remember something worth showing on the status page (wall-clock time: it is shown to people)."""
        self.events.append({"time": time.time(), "text": text, "level": level})

    def export(self) -> dict[str, Any]:
        return {
            "histograms": {
                "append_seconds": self.append_seconds.export(),
                "apply_seconds": self.apply_seconds.export(),
                "entries_per_fsync": self.entries_per_fsync.export(),
                "snapshot_seconds": self.snapshot_seconds.export(),
                "fsync_seconds": self.fsync_seconds.export(),
            },
            "requests": {_name(RequestKind, k): n for k, n in self.requests.items()},
            "answers": {_name(Status, k): n for k, n in self.answers.items()},
            "proposals_committed": self.proposals_committed,
            "leader_changes": self.leader_changes,
            "events": list(self.events),
        }


def _name(enum: type[RequestKind] | type[Status], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return f"unknown_{value}"


class _TimedFile:
    """An AppendFile whose fsync is timed."""

    def __init__(self, inner: AppendFile, histogram: Histogram) -> None:
        self.path = inner.path
        self._inner = inner
        self._histogram = histogram

    def write(self, data: Buffer) -> None:
        self._inner.write(data)

    def fsync(self) -> None:
        start = time.monotonic()
        self._inner.fsync()
        self._histogram.observe(time.monotonic() - start)

    def close(self) -> None:
        self._inner.close()


class TimedFS(RealFS):
    """The real file system, timing every fsync of a file or a directory into `fsync_seconds`."""

    def __init__(self) -> None:
        super().__init__()
        self.fsync_seconds = LockedHistogram(LATENCY_BUCKETS)
        self._histogram = self.fsync_seconds

    def open_append(self, path: str) -> AppendFile:
        return _TimedFile(super().open_append(path), self._histogram)

    def open_write_at(self, path: str, offset: int) -> AppendFile:
        return _TimedFile(super().open_write_at(path, offset), self._histogram)

    def fsync_dir(self, path: str) -> None:
        start = time.monotonic()
        super().fsync_dir(path)
        self._histogram.observe(time.monotonic() - start)
