"""The README's cluster-service example is what a newcomer pastes first: it must run as printed against a
running cluster (here a test cluster, named through $ZRAFT_ENDPOINTS as the example reads it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.util import REPO_ROOT, start_cluster, wait_for_leader

pytestmark = pytest.mark.integration


def service_example(marker: str = " ClusterService(") -> str:
    """The README's python block that contains `marker` (" ClusterService(": the blocking example)."""
    text = (REPO_ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    [example] = [b for b in blocks if marker in b]
    return example


def run_example(tmp_path: Path, example: str) -> str:
    script = tmp_path / "example.py"
    script.write_text(example)
    with start_cluster(3) as cluster:
        wait_for_leader(cluster)
        env = dict(os.environ, ZRAFT_ENDPOINTS=",".join(n.client_url for n in cluster.nodes))
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
        )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_readme_asyncio_service_example_runs_against_a_cluster(tmp_path: Path) -> None:
    out = run_example(tmp_path, service_example(" AsyncClusterService("))
    assert "[('web-1', 'ONLINE')]" in out
    assert "intp got {'note': '2F7'} from SERVER_META/web-1" in out
    assert "acked by ['INTP_PROCESS_META/intp-spark-1'] not acked {}" in out
    assert "idle: web-1" in out


def test_the_readme_service_example_runs_against_a_cluster(tmp_path: Path) -> None:
    out = run_example(tmp_path, service_example())
    assert "web-1 ONLINE 127.0.0.1 8081" in out and "web-2 ONLINE 127.0.0.1 8082" in out
    assert "acked by ['INTP_PROCESS_META/intp-spark-1', 'SERVER_META/web-2'] not acked {}" in out
    assert "intp got {'note': '2F7', 'action': 'reload'} from SERVER_META/web-1" in out
    assert "launch {'group': 'python', 'id': 'intp-py-1'}" in out and "acked: True" in out
    assert "'quorum': True" in out
