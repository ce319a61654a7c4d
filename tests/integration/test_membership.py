"""Membership changes with real processes while a client writes (tests/integration/membership_scenarios.py):
grow 3 -> 5 through two learners, shrink 5 -> 3 removing the leader among others, replace a node by a
fresh one under a new name, move a node to a new port; every acknowledged write reads back at the end."""

from __future__ import annotations

from pathlib import Path

from tests.integration.membership_scenarios import run_all


def test_grow_shrink_replace_and_move_while_writing(tmp_path: Path) -> None:
    lines: list[str] = []
    s = run_all(tmp_path, lines.append)
    assert list(s.gaps)[:2] == ["grow 3 -> 5", "shrink 5 -> 3"] and len(s.gaps) == 4, s.gaps
    assert len(s.writer.acked) > 0  # and run_all checked that every one of them reads back
    print("\n".join(lines))
