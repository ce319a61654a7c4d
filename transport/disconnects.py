"""Closed connections of one socket, read from its ZeroMQ monitor socket.

A process that dies (kill -9, a crash) has its TCP connections closed by its kernel at once, and the
DEALERs connected to it see that at once, long before any timeout could tell. The owner watches
`socket` for input and calls `take()` for how many connections closed since the last call. Nothing
here is a proof of death: a connection also closes when a live process's host resets it, so only
timing may depend on it (actors/node.py peer_disconnected).
"""

from __future__ import annotations

import contextlib
from typing import Final

import zmq
from zmq.utils.monitor import parse_monitor_message

MONITOR_DRAIN: Final = 1000  # events read per take(), so a flapping connection cannot hold the loop


class DisconnectMonitor:
    """Counts the connections of `sock` that closed (ZMQ_EVENT_DISCONNECTED)."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.socket: zmq.Socket[bytes] = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._watched = sock

    def take(self) -> int:
        closed = 0
        for _ in range(MONITOR_DRAIN):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if parse_monitor_message(frames)["event"] == zmq.EVENT_DISCONNECTED:
                closed += 1
        return closed

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):  # the watched socket may already be closed
            self._watched.disable_monitor()
        self.socket.close(linger=0)
