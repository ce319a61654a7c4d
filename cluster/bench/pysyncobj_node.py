"""Inside a worker process: one PySyncObj node holding a replicated dict, and the driver that loads it.

PySyncObj is a library, not a server: it has no client protocol. So each node process also runs the load
generator, which calls the node's replicated dict directly through PySyncObj's asynchronous form: a
replicated method called with callback= returns at once, and PySyncObj calls callback(result, error) on
its own thread once the command is committed and applied on this node (followers forward commands to the
leader). The load generator issues the next command from that callback. Such a command has no timeout of
its own: the load generator expires one that never completes (loadgen.OP_GRACE past the op timeout).
PySyncObj keeps its log in memory and does not fsync.

    put                 ReplDict.set(key, value, callback=...)
    linearizable get    a replicated (logged) read: PySyncObj has no ReadIndex, so reads go through the log
    serializable get    ReplDict.get(key): the local copy, no network (completes before the call returns)
    compare-and-swap    a replicated method that swaps only when the current value equals the expected one

Configuration ("fastest"): unbatched AppendEntries (see fastest_conf), no journal file, no dump file, log
compaction effectively off for the length of a benchmark, no dynamic membership.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjException, replicated
from pysyncobj.batteries import ReplDict

from cluster.bench.workloads import Fail

COMPACTION_NEVER = 10**9
_FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if not k.startswith("_")}
logger = logging.getLogger(__name__)


def fastest_conf() -> SyncObjConf:
    """Unbatched AppendEntries: each command wakes the node and is sent at once. Batched mode (PySyncObj's
    default) waits for the next 0.1 s append period, which caps a slot at about 10 commands/s; shortening
    that period makes idle nodes spin and steal the CPU the other systems are measured on."""
    return SyncObjConf(
        appendEntriesUseBatch=False,
        journalFile=None,
        fullDumpFile=None,
        logCompactionMinEntries=COMPACTION_NEVER,
        logCompactionMinTime=COMPACTION_NEVER,
        dynamicMembershipChange=False,
        commandsWaitLeader=True,
    )


class BenchDict(ReplDict):  # type: ignore[misc]
    """ReplDict plus the two replicated operations a benchmark needs and ReplDict lacks."""

    @replicated  # type: ignore[untyped-decorator]
    def cas(self, key: str, expected: bytes, new: bytes) -> bool:
        if ReplDict.get(self, key) != expected:
            return False
        self._ReplDict__data[key] = new  # already inside the replicated apply: do not replicate again
        return True

    @replicated  # type: ignore[untyped-decorator]
    def read(self, key: str) -> Any:
        return ReplDict.get(self, key)


class PySyncObjDriver:
    """A node of the cluster and the asynchronous driver of its local replicated dict."""

    def __init__(self, self_address: str, partners: list[str], timeout: float) -> None:
        self.timeout = timeout
        self.dict = BenchDict()
        self.node = SyncObj(self_address, partners, conf=fastest_conf(), consumers=[self.dict])

    def put(self, key: str, value: bytes, done: Callable[[], None], fail: Fail) -> None:
        self._command(self.dict.set, (key, value), lambda _result: done(), fail)

    def get(self, key: str, serializable: bool, done: Callable[[bytes | None], None], fail: Fail) -> None:
        if serializable:
            value: Any = self.dict.get(key)
            done(None if value is None else bytes(value))
            return
        self._command(self.dict.read, (key,), lambda v: done(None if v is None else bytes(v)), fail)

    def cas(self, key: str, expected: bytes, new: bytes, done: Callable[[bool], None], fail: Fail) -> None:
        self._command(self.dict.cas, (key, expected, new), lambda swapped: done(bool(swapped)), fail)

    @staticmethod
    def _command(
        method: Callable[..., Any], args: tuple[Any, ...], done: Callable[[Any], None], fail: Fail
    ) -> None:
        """Start a replicated method with a callback; PySyncObj calls it on its own thread."""

        def callback(result: Any, error: int) -> None:
            # An exception escaping here would end PySyncObj's thread, and with it the node.
            try:
                if error == FAIL_REASON.SUCCESS:
                    done(result)
                else:
                    fail(SyncObjException(f"command failed: {_FAIL_NAMES.get(error, error)}"))
            except Exception:
                logger.exception("load generator callback failed")

        try:
            method(*args, callback=callback)
        except Exception as exc:  # e.g. the node is being destroyed
            fail(exc)

    def info(self) -> dict[str, Any]:
        status = self.node.getStatus()
        leader = status.get("leader")
        return {"ok": True, "leader": str(leader) if leader is not None else "", "ready": self.node.isReady()}

    def close(self) -> None:
        self.node.destroy()
