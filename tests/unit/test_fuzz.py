"""The fuzz targets of tests/fuzz with a few thousand cases in all, derandomized (the soak runs
`python -m tests.fuzz --cases 25000`). Each asserts that every case ended in an expected way."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import LiveNode, run

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


def test_regression_a_bad_query_mentioning_lease_does_not_stop_the_node() -> None:
    """Found by the node target: a READ whose payload had b"lease_" in its first bytes but was no valid
    query raised Invalid out of the KV service (it caught only ValueError), which stopped the node."""
    live = LiveNode()
    try:
        frame = b"\x97\x01\x08\xa2\x00\x00\xa2\x00\x00\x00\x01\xc4\x11\x00\x00lease_" + bytes(9)
        live.feed([("client", [b"\x00cli", frame])], 0.0)
        assert live.runtime.counters["client_frames"] == 1
    finally:
        live.close()
