"""The simulator's configuration checks (tests/sim/membership.py) on hand-made leader states: a false alarm
there stops a soak, and a missed violation makes the soak prove nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from actors.membership import Configuration, Member
from actors.node import Role
from tests.sim.membership import ConfigViolation, check_configurations

BASE = Configuration.voters_only(("n1", "n2", "n3"))
PLUS_N4 = Configuration.of([Member("n1"), Member("n2"), Member("n3"), Member("n4", learner=True)])
N4_VOTES = Configuration.voters_only(("n1", "n2", "n3", "n4"))


@dataclass
class FakeLog:
    terms: dict[int, int]
    base_index: int = 0

    def term_at(self, index: int) -> int | None:
        return self.terms.get(index)


@dataclass
class FakeLeader:
    """What check_configurations reads of a NodeActor."""

    term: int
    commit_index: int
    config_history: tuple[tuple[int, Configuration], ...]
    log: FakeLog = field(default_factory=lambda: FakeLog({}))
    id: str = "n1"
    role: Role = Role.LEADER

    @property
    def configuration(self) -> Configuration:
        return self.config_history[-1][1]


def leader(term: int, commit: int, configs: list[tuple[int, int, Configuration]]) -> FakeLeader:
    """configs: (index, term of that entry, configuration)."""
    history = ((0, BASE), *((i, c) for i, _, c in configs))
    return FakeLeader(term, commit, history, FakeLog({i: t for i, t, _ in configs}))


def test_a_new_leader_may_inherit_configurations_of_earlier_terms_above_its_lagging_commit() -> None:
    # Seed 5505659: the term-4 leader committed the configuration at 20 before it appended the one at 25;
    # the node elected in term 5 had recovered commit index 16.
    check_configurations(leader(5, 16, [(20, 4, PLUS_N4), (25, 4, N4_VOTES)]), joined=False)  # type: ignore[arg-type]


def test_one_own_uncommitted_configuration_is_fine() -> None:
    check_configurations(leader(5, 21, [(20, 4, PLUS_N4), (25, 5, N4_VOTES)]), joined=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "configs",
    [
        [(20, 5, PLUS_N4), (25, 5, N4_VOTES)],  # two of its own uncommitted
        [(20, 4, PLUS_N4), (25, 5, N4_VOTES)],  # its own while an earlier one is uncommitted
    ],
)
def test_a_leader_proposing_while_another_configuration_waits_is_a_violation(
    configs: list[tuple[int, int, Configuration]],
) -> None:
    with pytest.raises(ConfigViolation, match="proposed a configuration at 25"):
        check_configurations(leader(5, 16, configs), joined=False)  # type: ignore[arg-type]
