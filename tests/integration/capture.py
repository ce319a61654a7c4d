"""CaptureProxy: a recording TCP proxy on loopback, for tests that check what the wire shows."""

from __future__ import annotations

import selectors
import socket
import threading
from contextlib import suppress


class CaptureProxy:
    """A TCP proxy on a free loopback port that records every byte it forwards, both ways.

    Why it is built this way (the #14 abort): the first version took its port from free_ports() and bound
    it later, ran two threads per connection and left a pair half open when one side closed. When its
    port came out equal to its target's (the node's peer port, chosen and released a moment before), it
    connected to itself: each connection made another, thousands of threads and sockets within seconds,
    until libzmq in the test process could not get a file descriptor ("Too many open files
    (src/epoll.cpp:38)", an assertion: SIGABRT; pytest's capture swallowed the text, and faulthandler's
    dump stops at 100 threads, which is why it showed "about 100" pump threads). Now the port is bound
    (held) from the start, so ports chosen after it cannot be it; pairs are bounded; nothing grows.

    One thread does everything (accept, connect, forward, close) through a selector, so no socket is ever
    used by one thread while another closes it, and the thread count does not grow with the connections.
    A connection pair is closed as a whole as soon as either side ends, so a peer that reconnects leaves
    nothing behind; at most MAX_PAIRS pairs are open at once (more are refused, as a dead target is).
    """

    MAX_PAIRS = 16
    SEND_TIMEOUT = 5.0

    def __init__(self, target_port: int = 0) -> None:
        """`target_port` may be set later (`target_port` attribute), before anything connects: a test
        can bind its proxies first and choose the nodes' ports after, so they never collide."""
        self.data = bytearray()
        self.accepted = 0  # connections forwarded, over the proxy's life
        self.refused = 0  # connections closed at once: the target was down, or MAX_PAIRS were open
        self.peak_pairs = 0
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._other: dict[socket.socket, socket.socket] = {}  # each forwarded socket -> its partner
        self._lock = threading.Lock()  # guards data (read by the test while the proxy runs)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="capture-proxy", daemon=True)
        self._thread.start()

    def captured(self) -> bytes:
        with self._lock:
            return bytes(self.data)

    def _serve(self) -> None:
        try:
            while not self._stopped.is_set():
                for key, _ in self._selector.select(timeout=0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept()
                    elif sock in self._other:  # not closed earlier in this same batch
                        self._forward(sock)
        finally:
            for sock in list(self._other):
                self._close_pair(sock)
            self._selector.close()
            self._listener.close()

    def _accept(self) -> None:
        try:
            inbound, _ = self._listener.accept()
        except OSError:
            return
        if len(self._other) // 2 >= self.MAX_PAIRS:
            self.refused += 1
            inbound.close()
            return
        try:
            outbound = socket.create_connection(("127.0.0.1", self.target_port), timeout=self.SEND_TIMEOUT)
        except OSError:  # the target is not up yet: the connecting side will try again
            self.refused += 1
            inbound.close()
            return
        self.accepted += 1
        for a, b in ((inbound, outbound), (outbound, inbound)):
            a.settimeout(self.SEND_TIMEOUT)  # recv only runs when readable; sendall may wait this long
            self._other[a] = b
            self._selector.register(a, selectors.EVENT_READ)
        self.peak_pairs = max(self.peak_pairs, len(self._other) // 2)

    def _forward(self, src: socket.socket) -> None:
        try:
            chunk = src.recv(65536)
            if chunk:
                with self._lock:
                    self.data += chunk
                self._other[src].sendall(chunk)
                return
        except OSError:
            pass
        self._close_pair(src)  # either side ended (or failed): end the other side too

    def _close_pair(self, sock: socket.socket) -> None:
        other = self._other.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._other.pop(s, None)
            with suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()

    def close(self) -> None:
        """Stop the proxy's thread, which closes every socket itself."""
        self._stopped.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the capture proxy did not stop"
