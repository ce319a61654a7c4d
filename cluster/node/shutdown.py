"""GracefulStop: what a node does between SIGTERM/SIGINT and closing its sockets.

A follower stops at once. A leader first hands leadership to its most up-to-date follower (Raft
dissertation 3.10: TimeoutNow) and keeps serving the loop until another node leads, or two election
timeouts pass, so the cluster does not sit through an election timeout without a leader; a second
signal cuts that wait short. The signal handler only calls `request()` (sets a flag); the runtime calls
`step()` every turn. An embedded node (cluster/node/embedded.py) calls `request()` from the thread that
stops it, with a reason instead of a signal, then wakes the loop.
"""

from __future__ import annotations

import math
import signal

from loguru import logger

from actors.node import NodeActor, Role


class GracefulStop:
    def __init__(self, name: str, election_timeout: float) -> None:
        self.name = name
        self.election_timeout = election_timeout
        self._signum: int | None = None
        self._reason = ""
        self._started = False
        self._deadline = math.inf
        self._done = False
        self._forced = False

    @property
    def requested(self) -> bool:
        return self._signum is not None

    @property
    def done(self) -> bool:
        return self._done

    def request(self, signum: int, reason: str = "") -> None:
        """Async-signal friendly: only records the request (`reason` replaces the signal's name in the
        log). A second request skips the handover."""
        if self._signum is None:
            self._reason = reason
            self._signum = signum
        else:
            self._forced = True

    def next_deadline(self) -> float:
        return self._deadline if self._started and not self._done else math.inf

    def step(self, node: NodeActor, now: float) -> bool:
        """Advance the stop sequence; True once the node may close."""
        if self._signum is None or self._done:
            return self._done
        if not self._started:
            self._started = True
            cause = self._reason or f"{_signal_name(self._signum)} received"
            logger.info("{}: {}: shutting down", self.name, cause)
            if node.role is Role.LEADER:
                target = node.transfer_leadership(now)
                if target is not None:
                    self._deadline = now + 2 * self.election_timeout
                    logger.info("{}: transferring leadership to {} (term {})", self.name, target, node.term)
                    return False
                logger.info("{}: no follower to hand leadership to", self.name)
            self._done = True
            return True
        if self._forced:
            logger.warning("{}: second stop signal: stopping without waiting for the handover", self.name)
            self._done = True
        elif node.leader is not None and node.leader != self.name:
            logger.info("{}: leadership moved to {} (term {})", self.name, node.leader, node.term)
            self._done = True
        elif now >= self._deadline:
            logger.warning(
                "{}: no other node took over within {:.1f}s; stopping anyway",
                self.name,
                2 * self.election_timeout,
            )
            self._done = True
        return self._done


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
