"""Inside a worker process: one PySyncObj node holding a replicated dict, and the driver that loads it.

PySyncObj is a library, not a server: it has no client protocol. So each node process also runs the load
generator, whose threads call the node's replicated dict directly and wait for each command with
sync=True (blocking until the command is committed and applied on this node; followers forward commands to
the leader). PySyncObj keeps its log in memory and does not fsync.

    put                 ReplDict.set(key, value, sync=True)
    linearizable get    a replicated (logged) read: PySyncObj has no ReadIndex, so reads go through the log
    serializable get    ReplDict.get(key): the local copy, no network
    compare-and-swap    a replicated method that swaps only when the current value equals the expected one

Configuration ("fastest"): unbatched AppendEntries (see fastest_conf), no journal file, no dump file, log
compaction effectively off for the length of a benchmark, no dynamic membership.
"""

from __future__ import annotations

from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.batteries import ReplDict

COMPACTION_NEVER = 10**9


def fastest_conf() -> SyncObjConf:
    """Unbatched AppendEntries: each command wakes the node and is sent at once. Batched mode (PySyncObj's
    default) waits for the next 0.1 s append period, which caps a thread at about 10 commands/s; shortening
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
    """A node of the cluster and the driver of its local replicated dict."""

    def __init__(self, self_address: str, partners: list[str], timeout: float) -> None:
        self.timeout = timeout
        self.dict = BenchDict()
        self.node = SyncObj(self_address, partners, conf=fastest_conf(), consumers=[self.dict])

    def put(self, key: str, value: bytes) -> None:
        self.dict.set(key, value, sync=True, timeout=self.timeout)

    def get(self, key: str, serializable: bool) -> bytes | None:
        if serializable:
            value: Any = self.dict.get(key)
        else:
            value = self.dict.read(key, sync=True, timeout=self.timeout)
        return None if value is None else bytes(value)

    def cas(self, key: str, expected: bytes, new: bytes) -> bool:
        return bool(self.dict.cas(key, expected, new, sync=True, timeout=self.timeout))

    def info(self) -> dict[str, Any]:
        status = self.node.getStatus()
        leader = status.get("leader")
        return {"ok": True, "leader": str(leader) if leader is not None else "", "ready": self.node.isReady()}

    def close(self) -> None:
        self.node.destroy()
