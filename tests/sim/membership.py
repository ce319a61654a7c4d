"""Membership changes in the simulator: an operator that adds learners, promotes them, and removes members
(the leader included) at random moments, under the same faults as everything else.

A new member always gets a fresh name and a fresh disk, and starts the way `cluster-node --join` does:
knowing the leader's configuration with itself added as a learner. A removed member keeps running until its
removal is committed (so its behaviour once removed is exercised under the faults), then it is shut down
for good. Changes are proposed straight to the leader's NodeActor, as the KV service does for `member ...`
requests; refusals (busy, a learner too far behind, a leader that must hand over first) are part of the mix.

Checked after every event (`check_configurations`): consecutive configurations in any node's log differ
by at most one voter (so no two majorities of consecutive configurations are disjoint), a leader never
proposes a configuration while another one in its log is uncommitted, and a leader is a voter of the
configuration it leads under.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from actors.contracts import Refusal
from actors.membership import ConfigChange, Configuration, Member, voter_difference
from actors.node import ChangeRefused, NodeActor, Role

if TYPE_CHECKING:
    from tests.sim.harness import SimCluster

EXTRA_NAMES = 6  # members a run may add, beyond the initial ones
MIN_VOTERS = 3
INTERVAL = (0.4, 2.0)  # simulated seconds between two operator actions


class ConfigViolation(AssertionError):
    pass


def check_configurations(actor: NodeActor, joined: bool) -> None:
    """`joined`: the node started from a configuration learned at its join (not the one at index 0), so
    the configuration at its log's base counts only once a snapshot put it there."""
    history = actor.config_history
    if joined and actor.log.base_index == 0:
        history = history[1:]
    for (_, a), (index, b) in zip(history, history[1:], strict=False):
        if voter_difference(a, b) > 1:
            raise ConfigViolation(
                f"{actor.id}: configuration at {index} changes more than one voter: {a.voters} -> {b.voters}"
            )
    if actor.role is Role.LEADER:
        # A leader proposes a configuration only once an entry of its own term committed and no other
        # configuration waits (dissertation 4.1 and its single-server fix), so at most one configuration
        # above its commit index is its own, and then none older is there. Configurations of earlier
        # terms above it are legal: a new leader's commit index can lag what the old one committed (a
        # restarted node recovers the last commit index that was synced), until its first entry commits.
        pending = [(i, actor.log.term_at(i)) for i, _ in history if i > actor.commit_index]
        own = [i for i, term in pending if term == actor.term]
        if len(own) > 1 or (own and len(pending) > len(own)):
            raise ConfigViolation(
                f"leader {actor.id} proposed a configuration at {own[-1]} while {len(pending) - 1} other "
                "configuration(s) in its log were uncommitted"
            )
        if not actor.configuration.is_voter(actor.id):
            raise ConfigViolation(f"leader {actor.id} is not a voter of {actor.configuration.voters}")


class MembershipOperator:
    def __init__(self, cluster: SimCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.next_name = cluster.options.nodes + 1
        self.proposed: dict[str, int] = {"add": 0, "promote": 0, "remove": 0, "update": 0}
        self.refused = 0
        self.handovers = 0  # removals of the leader, answered by handing leadership over first
        self.retired: list[str] = []

    def start(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        self.cluster.scheduler.after(self.rng.uniform(*INTERVAL), self._act)

    def _act(self) -> None:
        cluster = self.cluster
        self._schedule()
        leader = cluster._leader()
        if leader is None or leader.actor is None:
            return
        actor = leader.actor
        self.retire_removed(actor)
        if cluster.healing:
            return  # after healing the operator only shuts down the nodes that left
        config = actor.configuration
        choices = ["remove", "update"]
        if config.learners:
            choices += ["promote", "promote"]
        if self.next_name <= cluster.options.nodes + EXTRA_NAMES:
            choices += ["add", "add"]
        op = self.rng.choice(choices)
        if op == "add":
            self._add(actor, config)
        elif op == "promote":
            self._propose(actor, ConfigChange("promote", self.rng.choice(config.learners)))
        elif op == "remove":
            voters = config.voters
            pick = self.rng.choice(config.names)
            if pick in voters and len(voters) <= MIN_VOTERS:
                return
            self._propose(actor, ConfigChange("remove", pick))
        else:
            name = self.rng.choice(config.names)
            self._propose(actor, ConfigChange("update", name, f"sim://{name}/{self.rng.randrange(1000)}"))

    def _add(self, actor: NodeActor, config: Configuration) -> None:
        name = f"n{self.next_name}"
        change = ConfigChange("add", name, f"sim://{name}", f"sim://{name}/client")
        if not self._propose(actor, change):
            return
        self.next_name += 1
        # What `cluster-node --join` learns: the leader's members, with the new node as a learner.
        joining = Member(name, change.peer_url, change.client_url, learner=True)
        bootstrap = Configuration.of([*config.members, joining])
        self.cluster.add_node(name, bootstrap)

    def _propose(self, actor: NodeActor, change: ConfigChange) -> bool:
        outcome = actor.propose_change(change, self.cluster._clock(self.cluster.nodes[actor.id]))
        if isinstance(outcome, Refusal | ChangeRefused):
            self.refused += 1
            if outcome is Refusal.TRANSFERRING and change.op == "remove" and change.name == actor.id:
                self.handovers += 1
            return False
        self.proposed[change.op] += 1
        self.cluster._after_event(self.cluster.nodes[actor.id])
        return True

    def retire_removed(self, leader: NodeActor) -> None:
        """Shut down for good the nodes that the leader's committed configuration no longer lists, and the
        started nodes whose addition was lost."""
        # Only once an entry of the leader's term committed can no entry missing from its log ever commit.
        if leader.configuration_index > leader.commit_index:
            return
        if leader.log.term_at(leader.commit_index) != leader.term:
            return
        members = set(leader.configuration.names)
        for name in list(self.cluster.node_ids):
            if name not in members:
                self.cluster.retire_node(name)
                self.retired.append(name)
