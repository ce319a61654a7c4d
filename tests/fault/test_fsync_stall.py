"""The stalling-disk hook (ZRAFT_FSYNC_STALL in cluster/storage/crash.py): a WAL fsync waits while the
flag file exists and goes on once it is removed, so the fault harness can start and end a stall at will."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from loguru import logger

from actors.messages import Entry, HardState
from cluster.storage import DiskStorage
from cluster.storage.crash import FSYNC_STALL_ENV, FsyncStall, default_crash_hook
from cluster.storage.fs import RealFS


def test_the_hook_is_installed_only_when_the_variable_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(FSYNC_STALL_ENV, raising=False)
    assert not isinstance(default_crash_hook(), FsyncStall)
    monkeypatch.setenv(FSYNC_STALL_ENV, str(tmp_path / "stall"))
    hook = default_crash_hook()
    assert isinstance(hook, FsyncStall) and hook.flag_path == str(tmp_path / "stall")


def test_a_wal_fsync_waits_while_the_flag_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    flag = tmp_path / "stall"
    monkeypatch.setenv(FSYNC_STALL_ENV, str(flag))
    storage = DiskStorage(RealFS(), str(tmp_path / "data"), cluster_id="c", node_name="n1", preallocate=False)
    storage.recover()
    storage.persist(HardState(1, None, 0), None, [Entry(1, 1, 0, b"a")], None)  # no flag: no wait
    fsyncs = storage.stats.fsyncs

    flag.touch()
    done = threading.Event()
    stalled = threading.Event()
    sink = logger.add(lambda m: stalled.set() if "fsync stalled" in str(m) else None, level="WARNING")

    def persist() -> None:
        storage.persist(HardState(1, None, 1), None, [Entry(1, 2, 0, b"b")], None)
        done.set()

    writer = threading.Thread(target=persist, daemon=True)
    writer.start()
    try:
        assert stalled.wait(10.0), "the fsync never reached the stall"
        assert not done.wait(0.2)  # held there while the flag exists
        assert storage.stats.fsyncs == fsyncs
    finally:
        flag.unlink()
        logger.remove(sink)
    assert done.wait(10.0), "the fsync did not go on after the stall ended"
    writer.join(timeout=10.0)
    storage.close()
