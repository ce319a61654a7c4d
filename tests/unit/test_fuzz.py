"""The fuzz targets of tests/fuzz with a few thousand cases in all, derandomized (the soak runs
`python -m tests.fuzz --cases 25000`). Each asserts that every case ended in an expected way."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import run

CI_CASES = {"codec": 800, "node": 300, "wal": 300, "snapshot": 500}


@pytest.mark.parametrize("target", sorted(CI_CASES))
def test_fuzz_target_handles_every_case(target: str) -> None:
    tally = run(target, CI_CASES[target], seed=None)
    assert tally.cases >= CI_CASES[target] // 2  # hypothesis may stop early once it has seen enough
    expected = {
        "codec": {"decoded", "rejected"},
        "node": {"role:follower", "role:leader", "role:pre_candidate", "role:candidate"},
        "wal": {"corrupt", "replayed"},
        "snapshot": {"decoded", "invalid"},
    }[target]
    assert set(tally.outcomes) <= expected
    assert len(tally.outcomes) >= 2  # both kinds of ending were reached, not only the rejections
