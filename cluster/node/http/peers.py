"""PeerStatus: the other members' own status snapshots, fetched over their HTTP status servers.

/api/v1/cluster/status shows every member as that member sees itself (role, term, commit, applied), so the
node that answers asks each other member's /api/v1/node/status, in parallel, with a short timeout; a member
that does not answer in time is shown unreachable with the reason. Answers are kept for CACHE_SECONDS, so
many pages polling one node cost the others at most one request each per interval. Runs on the HTTP
server's threads, never on the node's loop.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

NODE_STATUS_PATH: Final = "/api/v1/node/status"
TIMEOUT: Final = 1.0
CACHE_SECONDS: Final = 0.5
MAX_BODY: Final = 4 << 20

Result = tuple[dict[str, Any] | None, str]  # (the member's snapshot, or None and why)


class PeerStatus:
    def __init__(self, timeout: float = TIMEOUT, cache_seconds: float = CACHE_SECONDS) -> None:
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="zraft-http-peers")
        self._cache: dict[str, tuple[float, Result]] = {}
        self._lock = threading.Lock()

    def fetch_all(self, urls: Mapping[str, str]) -> dict[str, Result]:
        """name -> result for each member's HTTP URL ("" = none advertised)."""
        now = time.monotonic()
        out: dict[str, Result] = {}
        pending = {}
        with self._lock:
            for name, url in urls.items():
                cached = self._cache.get(url)
                if not url:
                    out[name] = (None, "no HTTP URL advertised")
                elif cached is not None and now - cached[0] < self._cache_seconds:
                    out[name] = cached[1]
                else:
                    pending[name] = url
        futures = {name: self._pool.submit(self._fetch, url) for name, url in pending.items()}
        for name, future in futures.items():
            result = future.result()  # bounded by the fetch's own timeout
            out[name] = result
            with self._lock:
                self._cache[pending[name]] = (time.monotonic(), result)
        return out

    def _fetch(self, base_url: str) -> Result:
        try:
            with urllib.request.urlopen(base_url + NODE_STATUS_PATH, timeout=self._timeout) as response:
                body = response.read(MAX_BODY + 1)
        except urllib.error.HTTPError as exc:
            return None, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, f"unreachable: {reason}"
        if len(body) > MAX_BODY:
            return None, "status too large"
        try:
            data = json.loads(body)
        except ValueError:
            return None, "not a JSON status"
        snapshot = data.get("body") if isinstance(data, dict) else None
        if not isinstance(snapshot, dict) or "node" not in snapshot:
            return None, "not a node status"
        return snapshot, ""

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
