"""ElectionActor: election timers, vote counting, Pre-Vote and CheckQuorum for one node.

It owns only election state (DESIGN.md rule 2): the randomized deadline, the votes counted in the current
(pre-)campaign, when the leader was last heard from, and when each peer last answered a leader. It never
touches the node's term, vote or log; it answers questions and returns decisions that NodeActor carries out.
"""

from __future__ import annotations

import random
from enum import Enum

from actors.config import RaftConfig
from actors.messages import NodeId


class Tally(Enum):
    PENDING = 0
    WON = 1
    LOST = 2


class ElectionActor:
    def __init__(self, node_id: NodeId, voters: tuple[NodeId, ...], config: RaftConfig, rng: random.Random):
        self._id = node_id
        self._voters = voters
        self._config = config
        self._rng = rng
        self._deadline = 0.0
        self._leader_contact = float("-inf")
        self._votes: dict[NodeId, bool] = {}
        self._peer_contact: dict[NodeId, float] = {}
        self._quorum_deadline = 0.0
        self._gone_rank: int | None = None  # our rank while the leader's connection is known closed

    def set_voters(self, voters: tuple[NodeId, ...]) -> None:
        """A new configuration is in force: count only its voters from now on (dissertation 4.1)."""
        self._voters = voters
        self._votes = {v: g for v, g in self._votes.items() if v in voters}

    @property
    def quorum(self) -> int:
        return len(self._voters) // 2 + 1

    # --- timers -----------------------------------------------------------------------------------

    def reset_timer(self, now: float) -> None:
        """Start a fresh randomized election timeout (paper 5.2); our short slot while the leader is
        gone (see leader_gone)."""
        if self._gone_rank is not None:
            self._deadline = now + self._slot(self._gone_rank)
            return
        base = self._config.election_timeout
        self._deadline = now + base + self._rng.random() * base

    def deadline(self) -> float:
        return self._deadline

    def expired(self, now: float) -> bool:
        return now >= self._deadline

    # --- follower side ----------------------------------------------------------------------------

    def heard_from_leader(self, now: float) -> None:
        self._leader_contact = now
        self._gone_rank = None
        self.reset_timer(now)

    def leader_gone(self, now: float, rank: int) -> None:
        """Our connection to the leader closed (its process ended): stop waiting out its heartbeats.

        The timer is cut to a short one, in a slot of its own for each follower by `rank` (our place
        among the members other than the lost leader): slot k is [2k + 1, 2k + 2) tenths of the base
        timeout. Slots keep the followers' campaigns apart, since two at once would split the vote and
        cost a whole randomized timeout; the first slot waits a tenth so that the others have also seen
        the connection close (until then they ignore a pre-vote, being in the leader's lease). Until a
        leader is heard from again every new timer is that slot too, so a campaign that a slow follower
        ignored is tried again a slot later, not a whole timeout later.
        """
        self._leader_contact = float("-inf")
        self._gone_rank = rank
        self._deadline = min(self._deadline, now + self._slot(rank))

    def _slot(self, rank: int) -> float:
        tenth = self._config.election_timeout / 10
        return tenth * (2 * rank + 1 + self._rng.random())

    def in_lease(self, now: float, has_leader: bool) -> bool:
        """True while a current leader was heard within the minimum election timeout.

        With CheckQuorum such a node ignores (pre-)vote requests that were not caused by a leadership
        transfer, so a rejoining partitioned node cannot depose a healthy leader (dissertation 4.2.3, 9.6).
        """
        return (
            self._config.check_quorum
            and has_leader
            and now - self._leader_contact < self._config.election_timeout
        )

    # --- candidate side ---------------------------------------------------------------------------

    def start_tally(self) -> Tally:
        self._votes = {self._id: True} if self._id in self._voters else {}
        return self._tally()

    def record_vote(self, voter: NodeId, granted: bool) -> Tally:
        if voter in self._voters:
            self._votes.setdefault(voter, granted)
        return self._tally()

    def _tally(self) -> Tally:
        granted = sum(1 for g in self._votes.values() if g)
        rejected = len(self._votes) - granted
        if granted >= self.quorum:
            return Tally.WON
        if rejected >= self.quorum:
            return Tally.LOST
        return Tally.PENDING

    # --- leader side: CheckQuorum -----------------------------------------------------------------

    def start_leading(self, now: float) -> None:
        self._gone_rank = None
        self._peer_contact = {}
        self._leader_contact = now
        self._quorum_deadline = now + self._config.election_timeout

    def heard_from_peer(self, peer: NodeId, now: float) -> None:
        self._peer_contact[peer] = now

    def heard_within(self, peer: NodeId, now: float) -> bool:
        """Whether `peer` answered this leader within the last election timeout."""
        seen = self._peer_contact.get(peer)
        return seen is not None and now - seen <= self._config.election_timeout

    def quorum_deadline(self) -> float:
        return self._quorum_deadline if self._config.check_quorum else float("inf")

    def check_quorum(self, now: float) -> bool:
        """Called at the quorum deadline: did a majority (self included) answer within the last timeout?"""
        window = self._config.election_timeout
        active = (self._id in self._voters) + sum(
            1
            for peer, seen in self._peer_contact.items()
            if peer != self._id and peer in self._voters and now - seen <= window
        )
        self._quorum_deadline = now + window
        if active >= self.quorum:
            self._leader_contact = now  # the leader's own lease: it ignores disruptive vote requests
            return True
        return False
