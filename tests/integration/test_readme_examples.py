"""The README's Python examples run as printed against a real 3-node cluster (their endpoints replaced by
the test cluster's): the blocking client's and the asyncio client's embedding examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.test_client import started
from tests.integration.util import REPO_ROOT, start_cluster

pytestmark = pytest.mark.integration

README_ENDPOINTS = '["tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"]'


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def client_examples() -> list[str]:
    blocks = [b for b in python_blocks((REPO_ROOT / "README.md").read_text()) if README_ENDPOINTS in b]
    assert len(blocks) == 2, "the README's blocking and asyncio embedding examples"
    return blocks


@pytest.mark.parametrize("which", [0, 1], ids=["Client", "AsyncClient"])
def test_the_readme_embedding_example_runs(
    which: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = client_examples()[which]
    with start_cluster(3) as cluster:
        started(cluster)
        endpoints = repr([n.client_url for n in cluster.nodes])
        exec(compile(code.replace(README_ENDPOINTS, endpoints), f"README example {which}", "exec"), {})
    printed = capsys.readouterr().out
    assert "PUT" in printed  # the watch in each example printed an event
