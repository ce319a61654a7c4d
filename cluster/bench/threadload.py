"""Inside a worker process, for `cluster-bench --client threads`: one thread per load slot, each calling
the client's blocking API in a loop, the way a threaded application (a web server's request threads)
uses it.

A ThreadedCell is a Cell (loadgen.py) whose slots run on threads of their own against a blocking driver
(blocking_drivers.py): such a driver makes the blocking call in the calling thread and calls done/fail
before it returns, so a slot's issuing loop goes straight on to its next operation in the same thread.
Timing, windows, tallies and the answer are the Cell's. A failed operation makes the slot's own thread
wait ERROR_PAUSE (not the main thread, which only supervises: it expires an operation the client never
ended, and waits for the threads).
"""

from __future__ import annotations

import threading
import time

from cluster.bench.loadgen import ERROR_PAUSE, Cell, _Slot

THREAD_STACK = 256 * 1024  # bytes per slot thread: a few hundred threads must not reserve 8 MB each
JOIN_GRACE = 5.0  # seconds past the end (and the client timeout) to wait for the slot threads


class ThreadedCell(Cell):
    """N slots, N threads, blocking calls; prepare(), then run() once (as for Cell)."""

    _paused_slots: set[int]  # id() of slots whose last operation failed
    _pause_lock: threading.Lock
    _threads: list[threading.Thread]

    def pause(self, slot: _Slot) -> None:
        """Called by a slot after a failure, on its own thread: its loop waits, then issues again."""
        with self._pause_lock:
            self._paused_slots.add(id(slot))

    def _take_pause(self, slot: _Slot) -> bool:
        with self._pause_lock:
            if id(slot) in self._paused_slots:
                self._paused_slots.discard(id(slot))
                return True
            return False

    def _drive(self, slot: _Slot) -> None:
        while True:
            slot.issue()  # returns at the end time, or after a failure
            if not self._take_pause(slot):
                return
            time.sleep(ERROR_PAUSE)

    def start_slots(self) -> None:
        self._paused_slots, self._pause_lock, self._threads = set(), threading.Lock(), []
        previous = threading.stack_size()
        threading.stack_size(THREAD_STACK)
        try:
            for index, slot in enumerate(self.slots):
                thread = threading.Thread(target=self._drive, args=(slot,), name=f"slot-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
        finally:
            threading.stack_size(previous)

    def finish_slots(self) -> None:
        deadline = time.perf_counter() + self.op_timeout + JOIN_GRACE
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.perf_counter()))
