"""LogRateLimiter: decides when a repeated event may be logged again, and how many were suppressed.

Hostile or broken senders can produce thousands of bad frames a second; logging each would flood the log
and slow the node. The runtime asks `allow(key, now)` before logging and includes the number of events
suppressed since the last logged one. The clock is passed in, so this is deterministic under test.
"""

from __future__ import annotations


class LogRateLimiter:
    def __init__(self, interval: float) -> None:
        if interval < 0:
            raise ValueError("interval must be >= 0")
        self.interval = interval
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """None when this event should not be logged; otherwise how many were suppressed before it."""
        if now < self._next.get(key, float("-inf")):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval
        return self._suppressed.pop(key, 0)
