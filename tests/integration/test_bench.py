"""bin/cluster-bench end to end, zraft only, with tiny cells: it starts a cluster through bin/cluster-node,
runs every workload at two concurrencies, stops everything, and its JSON holds every requested row.
Nothing about speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.bench.workloads import WORKLOADS
from tests.integration.util import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(60)
def test_quick_run_writes_every_requested_row(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [
        sys.executable, str(REPO_ROOT / "bin" / "cluster-bench"), "--quick",
        "--duration", "0.2", "--warmup", "0.05", "--concurrency", "1,4", "--clients", "1",
        "--preload", "20", "--no-plot", "--data-root", str(tmp_path), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=50, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((out / "results.json").read_text())
    cells = {(r["system"], r["workload"], r["concurrency"]) for r in doc["rows"]}
    assert cells == {("zraft", w, c) for w in WORKLOADS for c in (1, 4)}
    for row in doc["rows"]:
        assert row["errors"] == 0, row
        if row["workload"] in ("get", "mixed", "cas"):  # linearizable: every preloaded key is found
            assert row["misses"] == 0, row
        assert set(row["nodes"]) == {"n1", "n2", "n3"}
    assert "zraft" in doc["systems"] and doc["systems"]["zraft"]["load"]
    assert (out / "table.txt").read_text().startswith("workload")
    assert "put" in done.stdout and "results:" in done.stdout
    assert not list(tmp_path.glob("zraft-bench-*")), "temporary data directories must be removed"
