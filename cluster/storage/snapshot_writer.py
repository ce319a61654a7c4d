"""The snapshot writer: a node's own snapshot file, written off the event loop as a job of steps.

A snapshot the node took itself guards nothing in its Ready (the WAL still holds every entry it covers),
so DiskStorage (storage.py) hands its file to a `SnapshotJob` and goes on; once the job is finished it
records the snapshot in the WAL. The job is the steps of `write_snapshot_steps` (temp file written, synced,
renamed, directory synced). Who runs those steps is a `SnapshotRunner`: production's `ThreadRunner` runs
them on a thread; the simulator runs the very same steps as simulated events (tests/sim/harness.py), so
crashes and other work fall between them deterministically.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

from actors.messages import Snapshot
from cluster.storage.crash import CrashHook
from cluster.storage.fs import FileSystem
from cluster.storage.snapshots import write_snapshot_steps


class SnapshotJob:
    """One snapshot file to write atomically and durably, a step at a time; remembers what went wrong."""

    def __init__(self, fs: FileSystem, snap_dir: str, snapshot: Snapshot, hook: CrashHook) -> None:
        self.snapshot = snapshot
        self._steps: Iterator[str] = write_snapshot_steps(fs, snap_dir, snapshot, hook)
        self.steps_done: list[str] = []
        self.error: Exception | None = None
        self.finished = False  # set last, once the file is durable or the job failed

    def step(self) -> bool:
        """Run the next step; True once the job is finished. Exceptions propagate to the runner, which
        reports them through `fail` (or, in the simulator, lets a simulated power loss through)."""
        if self.finished:
            return True
        try:
            self.steps_done.append(next(self._steps))
        except StopIteration:
            self.finished = True
        return self.finished

    def fail(self, error: Exception) -> None:
        self.error = error
        self.finished = True

    def run(self) -> None:
        """Every remaining step, failures recorded in `error`."""
        try:
            while not self.step():
                pass
        except Exception as exc:  # noqa: BLE001 - reported by DiskStorage on the loop's thread
            self.fail(exc)


class SnapshotRunner(Protocol):
    """Runs snapshot jobs, one at a time (DiskStorage waits for one before it starts the next)."""

    def start(self, job: SnapshotJob) -> None:
        """Begin running job's steps; return at once."""

    def wait(self, job: SnapshotJob) -> None:
        """Return once job is finished."""


class ThreadRunner:
    """Production's runner: each job's steps on a thread of its own."""

    def __init__(self) -> None:
        self._threads: dict[int, threading.Thread] = {}

    def start(self, job: SnapshotJob) -> None:
        thread = threading.Thread(target=job.run, name=f"snapshot-{job.snapshot.meta.index}", daemon=True)
        self._threads[id(job)] = thread
        thread.start()

    def wait(self, job: SnapshotJob) -> None:
        thread = self._threads.pop(id(job), None)
        if thread is not None:
            thread.join()
