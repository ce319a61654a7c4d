"""bin/cluster-bench end to end, zraft only, with tiny cells: it starts a cluster through bin/cluster-node,
runs every workload at two concurrencies in both client modes (the key-value workloads also through the
blocking client from threads), stops everything, and its JSON holds every requested row.
Nothing about speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.bench.workloads import STREAM_WORKLOADS, WORKLOADS
from tests.integration.util import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(90)
def test_quick_run_writes_every_requested_row(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [
        sys.executable, str(REPO_ROOT / "bin" / "cluster-bench"), "--quick",
        "--duration", "0.2", "--warmup", "0.05", "--concurrency", "1,4", "--clients", "1",
        "--preload", "20", "--no-plot", "--data-root", str(tmp_path), "--out", str(out),
        "--client", "async,threads",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=80, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((out / "results.json").read_text())
    cells = {(r["system"], r["workload"], r["concurrency"], r["client"]) for r in doc["rows"]}
    threaded = set(WORKLOADS) - STREAM_WORKLOADS  # the blocking client's key-value calls
    assert cells == {("zraft", w, c, "async") for w in WORKLOADS for c in (1, 4)} | {
        ("zraft", w, c, "threads") for w in threaded for c in (1, 4)
    }
    for row in doc["rows"]:
        assert row["errors"] == 0, row
        assert row["ops"] > 0, row
        if row["client"] == "threads":
            assert row["of_async"] is not None, row
        if row["workload"] in ("get", "mixed", "cas"):  # linearizable: every preloaded key is found
            assert row["misses"] == 0, row
        assert set(row["nodes"]) == {"n1", "n2", "n3"}
    assert "zraft" in doc["systems"] and doc["systems"]["zraft"]["load"]
    assert (out / "table.txt").read_text().startswith("workload")
    assert "put" in done.stdout and "results:" in done.stdout
    assert not list(tmp_path.glob("zraft-bench-*")), "temporary data directories must be removed"
