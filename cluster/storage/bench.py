"""Recovery benchmark for DiskStorage: how fast does a node read its WAL back at start?

Writes N small entries in batches of 1000 per persist() (one fsync each) on the real file system, then
times a fresh DiskStorage.recover() and prints entries/second. Run through bin/storage-recovery-bench.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time

from loguru import logger

from actors.messages import Entry, HardState
from cluster.storage.fs import RealFS
from cluster.storage.storage import DEFAULT_SEGMENT_BYTES, DiskStorage

BATCH = 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries to write (default 1000000)")
    parser.add_argument("--data-dir", help="data directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--payload-bytes", type=int, default=16, help="bytes of data per entry (default 16)")
    parser.add_argument("--segment-bytes", type=int, default=DEFAULT_SEGMENT_BYTES)
    args = parser.parse_args(argv)

    logger.remove()
    logger.add(sys.stderr, level="INFO")
    temp = args.data_dir is None
    data_dir = tempfile.mkdtemp(prefix="zraft-bench-") if temp else args.data_dir
    try:
        fs = RealFS()
        opts = {"cluster_id": "bench", "node_name": "n1", "segment_bytes": args.segment_bytes}
        storage = DiskStorage(fs, data_dir, **opts)  # type: ignore[arg-type]
        start_index = len(storage.recover().entries) + 1
        payload = b"x" * args.payload_bytes
        t0 = time.perf_counter()
        index = start_index
        end = start_index + args.entries
        while index < end:
            n = min(BATCH, end - index)
            batch = [Entry(1, i, 0, payload) for i in range(index, index + n)]
            storage.persist(HardState(1, "n1", index - 1), None, batch, None)
            index += n
        write_s = time.perf_counter() - t0
        stats = storage.stats
        storage.close()
        print(
            f"wrote {args.entries} entries in {stats.batches} batches ({stats.fsyncs} fsyncs, "
            f"{stats.entries_per_fsync():.0f} entries/fsync, {stats.bytes / 1e6:.1f} MB) in {write_s:.2f}s"
        )

        storage = DiskStorage(fs, data_dir, **opts)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        recovered = storage.recover()
        seconds = time.perf_counter() - t0
        storage.close()
        n = len(recovered.entries)
        print(f"recovered {n} entries in {seconds:.3f}s: {n / seconds:,.0f} entries/second")
        return 0
    finally:
        if temp:
            shutil.rmtree(data_dir, ignore_errors=True)
