"""Watchers in the simulation, and the check that each saw exactly the committed changes.

A SimWatcher drives the client's WatchFollower (cluster/client/watching.py) over the simulated network,
like the Client's I/O thread does over ZeroMQ; it consumes events after a random delay, so credit and
the slow-watcher bound are exercised too. When its watch ends with Compacted (a node restarted and lost
its history, or the watcher asked too far back), it does what a user would after re-listing: watch again
from the compact revision + 1, as a new segment.

The check replays the committed log (every applied command, by index) through a fresh state machine with
an unbounded history: that is the reference list of changes. Each segment's events must be exactly the
reference's changes under the watched key or prefix from the segment's start, in revision order: no gap,
no duplicate, nothing invented; and everything up to the revision its streams said they were complete
through. After healing, every watcher must catch up with the last revision. Half the watchers ask for
the previous values (prev_kv): each event's "prev" must be the value the key held before that change,
as the reference's own sequence of changes says (computed here, not by the state machine).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any

import msgpack

from actors.messages import ClientResponse
from cluster.client.watching import FollowerOptions, WatchFollower
from cluster.errors import Compacted
from cluster.kv.machine import KVStateMachine

if TYPE_CHECKING:
    from tests.sim.harness import SimCluster

EventTuple = tuple[str, str, Any, int, int, int]  # type, key, value, revision, create_revision, version

_IDS = count(1)


def _tuple(e: dict[str, Any]) -> EventTuple:
    return (e["type"], e["key"], e["value"], e["revision"], e["create_revision"], e["version"])


@dataclass(slots=True)
class Segment:
    start: int  # 0 until the first stream opened ("from now")
    events: list[EventTuple] = field(default_factory=list)
    through: int = 0
    compacted: bool = False
    prevs: list[Any] = field(default_factory=list)  # each event's "prev", for a prev_kv watcher


class SimWatcher:
    def __init__(self, cluster: SimCluster, index: int) -> None:
        self.cluster = cluster
        self.id = f"watcher{index}"
        self.rng = random.Random(cluster.rng.getrandbits(64))
        self.key, self.prefix = self.rng.choice([("k", True), ("k0", False), ("k1", True), ("", True)])
        self.window = self.rng.choice([1, 2, 5, 100])
        self.prev_kv = self.rng.random() < 0.5
        self.segments: list[Segment] = []
        self.follower: WatchFollower | None = None
        self.tick_token = 0
        self.resumes = 0

    def start_at(self, when: float, start: int) -> None:
        self.cluster.scheduler.at(when, lambda: self._begin(start))

    def _begin(self, start: int) -> None:
        if self.follower is not None:
            self.resumes += self.follower.resumes
        self.segments.append(Segment(start))
        nodes = self.cluster.all_names
        self.follower = WatchFollower(
            self.id,
            nodes,
            self.key,
            self.prefix,
            start,
            lambda: next(_IDS),
            FollowerOptions(
                window=self.window, open_timeout=1.0, silence_timeout=4.0, keepalive=3.0, prev_kv=self.prev_kv
            ),
            first_node=self.rng.randrange(len(nodes)),
        )
        self.follower.begin(self.cluster.scheduler.now)
        self.pump()

    @property
    def live(self) -> bool:
        return self.follower is not None and self.follower.ended is None

    def on_response(self, msg: ClientResponse) -> None:
        follower = self.follower
        if follower is None:
            return
        now = self.cluster.scheduler.now
        events = follower.on_response(msg, now)
        segment = self.segments[-1]
        segment.start = follower.start
        segment.events.extend(_tuple(e) for e in events)
        if any(("prev" in e) is not self.prev_kv for e in events):
            raise self.cluster.failure(f"{self.id} (prev_kv={self.prev_kv}) got events {events}")
        if self.prev_kv:
            segment.prevs.extend(e["prev"] for e in events)
        segment.through = follower.through
        if events:
            delay = self.rng.choice([0.0, 0.0, 0.01, 0.3])
            taken = len(events)
            self.cluster.scheduler.after(delay, lambda: self._consume(follower, taken))
        if not self._ended(follower):
            self.pump()

    def _ended(self, follower: WatchFollower) -> bool:
        ended = follower.ended
        if ended is None:
            return False
        if not isinstance(ended, Compacted):
            raise self.cluster.failure(f"{self.id}: watch ended: {ended}")
        self.segments[-1].compacted = True
        self._begin(ended.compact_revision + 1)  # as after re-listing at the compact revision
        return True

    def _consume(self, follower: WatchFollower, n: int) -> None:
        if follower is self.follower:
            follower.consumed(n)
            follower.tick(self.cluster.scheduler.now)
            self.pump()

    def _on_tick(self, token: int) -> None:
        follower = self.follower
        if token == self.tick_token and follower is not None:
            follower.tick(self.cluster.scheduler.now)
            if not self._ended(follower):
                self.pump()

    def pump(self) -> None:
        follower = self.follower
        assert follower is not None
        for msg in follower.take_messages():
            self.cluster.network.send(msg, duplicable=False)
        deadline = follower.next_deadline()
        if deadline != float("inf"):
            self.tick_token += 1
            token = self.tick_token
            self.cluster.scheduler.at(deadline, lambda: self._on_tick(token))


def reference_events(commands: dict[int, bytes]) -> list[EventTuple]:
    """Every change of the committed log, in order, from a replay with an unbounded history."""
    sm = KVStateMachine(history_events=10**9, history_bytes=10**15)
    for index in sorted(commands):
        sm.apply(index, commands[index])
    h = sm.history
    return [_tuple(msgpack.unpackb(h.at(s).data)) for s in range(h.first_seq, h.next_seq)]


def previous_values(reference: list[EventTuple]) -> list[Any]:
    """For each change of the reference, the value its key held just before (None: absent)."""
    values: dict[str, Any] = {}
    out: list[Any] = []
    for kind, key, value, *_ in reference:
        out.append(values.get(key))
        if kind == "PUT":
            values[key] = value
        else:
            values.pop(key, None)
    return out


def check_watchers(watchers: list[SimWatcher], reference: list[EventTuple], final_revision: int) -> str:
    """'' if every watcher saw exactly the committed changes; else what went wrong."""
    prevs = previous_values(reference)
    for w in watchers:
        for n, seg in enumerate(w.segments):
            if not seg.start:
                if seg.events:
                    return f"{w.id} segment {n}: events before its stream opened"
                continue
            positions = [
                i
                for i, e in enumerate(reference)
                if e[3] >= seg.start and (e[1].startswith(w.key) if w.prefix else e[1] == w.key)
            ]
            wanted = [reference[i] for i in positions]
            if seg.events != wanted[: len(seg.events)]:
                padded: list[EventTuple | None] = [*wanted, *([None] * len(seg.events))]
                at = next(i for i, e in enumerate(seg.events) if e != padded[i])
                return (
                    f"{w.id} ({w.key!r}, prefix={w.prefix}) segment {n} from revision {seg.start}: "
                    f"event {at} "
                    f"is {seg.events[at]}, expected {wanted[at] if at < len(wanted) else 'nothing'}"
                )
            expected = [prevs[i] for i in positions[: len(seg.events)]]
            if w.prev_kv and seg.prevs != expected:
                pairs = zip(seg.prevs, expected, strict=False)
                at = next(i for i, (got, want) in enumerate(pairs) if got != want)
                return (
                    f"{w.id} segment {n}: event {at} {seg.events[at]} carries prev {seg.prevs[at]!r}, "
                    f"but the key held {expected[at]!r} before"
                )
            complete = [e for e in wanted if e[3] <= seg.through]
            if len(seg.events) < len(complete):
                missed = complete[len(seg.events)]
                return f"{w.id} segment {n}: complete through {seg.through} but missed {missed}"
            last = n == len(w.segments) - 1
            if last and (seg.through < final_revision or len(seg.events) != len(wanted)):
                return f"{w.id}: did not catch up: through {seg.through} of {final_revision}"
    return ""
