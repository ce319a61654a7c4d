"""StatusHttpServer: waitress serving StatusApp on its own thread, beside the node's loop.

Why waitress: it is a maintained, pure-Python WSGI server (no C extension to build) whose I/O thread reads
each request completely and writes each response from a buffer, while a small pool of worker threads runs
the application only on whole requests. A client that connects and sends nothing, sends a header a byte at a
time, or never reads its answer ties up a buffer and a file descriptor until `channel_timeout`, not a worker
and never the node's loop. The standard library's http.server gives each connection a thread that blocks in
its reads and writes for as long as the client likes, with only a socket timeout to bound it.

Polling, not server-sent events: a stream would hold one of waitress's few workers per open page.

The server binds in `start()` (a port in use fails before the node starts serving) and runs waitress's
event loop one poll at a time in its thread, so `stop()` can end it from the node's thread: it sets a flag,
wakes the poll, and the server thread closes every channel and joins the workers itself.
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Any, Final

from loguru import logger
from waitress import create_server, wasyncore

from cluster.node.bridge import LoopBridge
from cluster.node.http.app import StatusApp

WORKER_THREADS: Final = 4
CHANNEL_TIMEOUT: Final = 30  # seconds an idle connection (nothing sent, or nothing read) may stay
CONNECTION_LIMIT: Final = 200
MAX_REQUEST_BYTES: Final = 64 * 1024  # headers and body: the API takes no request bodies
POLL_SECONDS: Final = 0.5


class HttpBindError(Exception):
    """The HTTP status server cannot listen where it was asked to."""


class StatusHttpServer:
    def __init__(
        self, name: str, host: str, port: int, bridge: LoopBridge, values_served: bool = True
    ) -> None:
        self.name = name
        self.bridge = bridge
        self.app = StatusApp(name, bridge, values_served=values_served)
        self._map: dict[int, Any] = {}
        try:
            self._server = create_server(
                self.app,
                map=self._map,
                host=host,
                port=port,
                threads=WORKER_THREADS,
                channel_timeout=CHANNEL_TIMEOUT,
                connection_limit=CONNECTION_LIMIT,
                max_request_header_size=MAX_REQUEST_BYTES,
                max_request_body_size=MAX_REQUEST_BYTES,
                ident="zraft",
                clear_untrusted_proxy_headers=True,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                reason = "address already in use (is another node running on this port?)"
            else:
                reason = str(exc.strerror or exc)
            raise HttpBindError(f"cannot bind http://{host}:{port}: {reason}") from None
        # "task queue depth" warnings are expected under load: the queue is the point
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def start(self) -> None:
        self._thread.start()
        host = self._server.effective_host
        logger.info("{}: HTTP status server on http://{}:{}", self.name, host, self.port)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=POLL_SECONDS, map=self._map, use_poll=True, count=1)
        except Exception:
            logger.exception("{}: the HTTP status server stopped by an error", self.name)
        finally:
            self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
            wasyncore.close_all(self._map)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._server.pull_trigger()  # wake its poll
            self._thread.join(timeout)
        else:
            self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
            wasyncore.close_all(self._map)
        self.app.peers.close()
