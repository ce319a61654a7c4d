"""The fuzz targets: what each one feeds, and what "handled" means for it.

- codec: any bytes given to decode/decode_frame either decode or raise DecodeError (nothing else escapes);
  a message that decodes encodes back to the same bytes' meaning.
- node: a live in-process node (the real NodeRuntime, real sockets on loopback, storage on SimFS) takes
  hostile frames through the same handlers as the peer ROUTER (from a member's connection, declaring a
  member's or any other identity), the client ROUTER (single requests, batches, garbage) and our DEALERs
  (answers, real-looking or not, to the node's advertise writes), then runs a
  loop turn on a clock that moves on. Nothing may raise; each case is deadline-checked (no hang).
- wal: a segment of valid, mutated or random records fed to the WAL replayer either replays or raises
  StorageError (CorruptionError) with a message.
- snapshot: decode_snapshot either returns a state or raises Invalid with a message.

Each target is a function of one drawn value; `run` wraps it in hypothesis with a case count.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.messages import AppendEntries, AppendEntriesResponse, Entry, Message, RequestVoteResponse
from actors.node import NodeActor
from cluster.kv.machine import KVStateMachine
from cluster.kv.ops import Invalid
from cluster.kv.snapshot import decode_snapshot
from cluster.node.config import NodeConfig
from cluster.node.runtime import CLIENT_SOCKET_LIMIT, PEER_SOCKET_LIMIT, NodeRuntime
from cluster.storage import DiskStorage
from cluster.storage.errors import StorageError
from cluster.storage.fs import SimFS
from cluster.storage.replay import LogReplayer
from tests.fuzz import strategies as fs
from tests.integration.util import free_ports
from transport.codec import MAX_FRAME_BYTES, DecodeError, decode, decode_frame, encode
from transport.endpoints import ClientPort, PeerMesh
from transport.loop import EventLoop


@dataclass
class Tally:
    """What a target saw: cases run, and how each ended."""

    cases: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # the live node's state at the end
    progress: Callable[[int], None] | None = None  # called every PROGRESS_EVERY cases (a soak's report)

    def count(self, outcome: str) -> None:
        self.cases += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if self.progress is not None and self.cases % PROGRESS_EVERY == 0:
            self.progress(self.cases)


PROGRESS_EVERY = 1000


# --- codec ------------------------------------------------------------------------------------------------


def codec_case(tally: Tally, frame: bytes) -> None:
    try:
        msgs = decode_frame(frame, MAX_FRAME_BYTES)
    except DecodeError as exc:
        assert str(exc), "a DecodeError must say why"
        tally.count("rejected")
    else:
        for msg in msgs:
            assert decode(encode(msg)) == msg
        tally.count("decoded")
    try:
        single: Message = decode(frame, 1 << 16)
    except DecodeError:
        return
    assert decode(encode(single)) == single


# --- a live node ------------------------------------------------------------------------------------------


class LiveNode:
    """n1 of a three-member cluster whose other members never answer; its handlers take fuzzed frames."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        p1, p2, p3, c1 = free_ports(4)
        initial = {f"n{i}": f"tcp://127.0.0.1:{p}" for i, p in zip((1, 2, 3), (p1, p2, p3), strict=True)}
        self.config = NodeConfig(
            name="n1",
            data_dir=tempfile.gettempdir(),
            peer_url=initial["n1"],
            client_url=f"tcp://127.0.0.1:{c1}",
            initial_cluster=initial,
            election_timeout_ms=300,
            heartbeat_ms=50,
            snapshot_entries=200,  # snapshots happen during a soak, through the real storage code
        )
        self.storage = DiskStorage(SimFS(), "/data", cluster_id="fuzz", node_name="n1", segment_bytes=1 << 16)
        recovered = self.storage.recover()
        self.sm = KVStateMachine()
        self.node = NodeActor(
            "n1",
            self.config.members,
            self.config.raft_config(),
            self.sm,
            random.Random(7),
            recovered,
            self.now,
        )
        self.mesh = PeerMesh.open(self.ctx, "n1", self.config.peer_url, self.config.peers, PEER_SOCKET_LIMIT)
        self.clients = ClientPort.open(self.ctx, self.config.client_url, CLIENT_SOCKET_LIMIT)
        self.loop = EventLoop(clock=lambda: self.now)
        self.runtime = NodeRuntime(
            self.config, self.node, self.sm, self.storage, self.mesh, self.clients, self.loop
        )

    def peer(self, sender: str, msg: Message) -> None:
        self.runtime._take_peer_frames([([sender.encode(), encode(msg)], sender)])

    def script(self, step: str, commands: list[bytes]) -> None:
        """Steps that follow the node's state, so the fuzzed frames also meet a leader with a log and a
        follower that applies: win an election, follow a leader that sends commands, ack as a follower."""
        node = self.node
        last, last_term = node.log.last_index(), node.log.last_term()
        if step == "win":
            for voter in ("n2", "n3"):
                self.peer(voter, RequestVoteResponse(voter, "n1", node.term + 1, True, True))
            self.now += 0.001
            self.runtime.turn(self.now)
            for voter in ("n2", "n3"):
                self.peer(voter, RequestVoteResponse(voter, "n1", node.term, True, False))
        elif step == "follow":
            term = node.term + (0 if node.role.name == "FOLLOWER" else 1)
            entries = tuple(Entry(term, last + 1 + i, 0, c) for i, c in enumerate(commands))
            self.peer("n2", AppendEntries("n2", "n1", term, last, last_term, entries, last + len(entries), 0))
        elif step == "ack" and node.role.name == "LEADER":
            for voter in ("n2", "n3"):
                self.peer(voter, AppendEntriesResponse(voter, "n1", node.term, True, last, 0, 0, 0))
        self.now += 0.001
        self.runtime.turn(self.now)

    def feed(self, frames: list[tuple[str, list[bytes]]], advance: float) -> None:
        for port, parts in frames:
            if port == "dealer":  # an answer on our DEALER to n2 (only advertise answers belong there)
                self.runtime._take_dealer_frames("n2", [parts])
            elif port == "peer":
                proven = parts[0].decode("utf-8", "replace") if parts[0] in (b"n2", b"n3") else None
                self.runtime._take_peer_frames([(parts, proven)])
            else:
                self.runtime._take_client_frames([(parts, "")])
        self.now += advance
        self.runtime.turn(self.now)

    def sizes(self) -> dict[str, int]:
        """What the node holds, to tell its own bounded state from growth without bound."""
        log = self.node.log
        return {
            "keys": len(self.sm),
            "log_entries": log.last_index() - log.base_index,
            "sessions": self.sm.session_count,
            "history_events": len(self.sm.history),
            "wal_bytes": sum(
                self.storage.fs.size(f"/data/wal/{n}") for n in self.storage.fs.listdir("/data/wal")
            ),
        }

    def close(self) -> None:
        self.runtime.close_monitors()  # monitor sockets left open would hold up ctx.term()
        self.loop.close()
        self.mesh.close()
        self.clients.close()
        self.storage.close()
        self.ctx.term()


peer_identities = st.sampled_from([b"n2", b"n3", b"n1", b"zz", b"\xff\xfe"])
peer_frames = st.tuples(st.just("peer"), st.builds(lambda i, f: [i, f], peer_identities, fs.hostile_frames))
client_frames = st.tuples(
    st.just("client"),
    st.one_of(
        st.builds(lambda f: [b"\x00cli", f], fs.hostile_frames),
        st.lists(st.binary(max_size=8), min_size=0, max_size=7),  # envelopes of every shape
    ),
)
dealer_frames = st.tuples(
    st.just("dealer"),
    st.one_of(
        st.builds(lambda f: [f], fs.hostile_frames),
        st.builds(lambda f: [f], fs.advertise_answers),
        st.lists(st.binary(max_size=8), max_size=3),
    ),
)
node_inputs = st.tuples(
    st.lists(st.sampled_from(["win", "follow", "ack", "none"]), max_size=3),
    st.lists(fs.commands, max_size=3),
    st.lists(st.one_of(peer_frames, client_frames, dealer_frames), min_size=1, max_size=6),
    st.sampled_from([0.0, 0.001, 0.05, 0.4]),
)


def node_case(live: LiveNode, tally: Tally, drawn: tuple[list[str], list[bytes], list[Any], float]) -> None:
    steps, commands, frames, advance = drawn
    for step in steps:
        live.script(step, commands)
    live.feed(frames, advance)
    tally.count(f"role:{live.node.role.name.lower()}")


# --- WAL and snapshot --------------------------------------------------------------------------------------


def wal_case(tally: Tally, drawn: tuple[bytes, bool, int]) -> None:
    segment, is_last, first = drawn
    replayer = LogReplayer()
    replayer.begin(first)
    try:
        replayer.feed(segment, "fuzz-segment", is_last)
        replayer.finish()
    except StorageError as exc:
        assert str(exc)
        tally.count("corrupt")
        return
    tally.count("replayed")


def snapshot_case(tally: Tally, data: bytes) -> None:
    try:
        decode_snapshot(data)
    except Invalid as exc:
        assert str(exc)
        tally.count("invalid")
        return
    tally.count("decoded")


# --- running ----------------------------------------------------------------------------------------------

TARGETS = ("codec", "node", "wal", "snapshot")


def run(
    target: str,
    cases: int,
    seed: int | None,
    deadline_ms: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> Tally:
    """Run `cases` hypothesis examples of one target; raises what the first failing case raised.
    `progress(cases so far)` is called every PROGRESS_EVERY cases."""
    tally = Tally(progress=progress)
    options = settings(
        max_examples=cases,
        deadline=deadline_ms,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    case: Callable[[Any], None]
    strategy: st.SearchStrategy[Any]
    live: LiveNode | None = None
    if target == "codec":
        strategy, case = fs.hostile_frames, lambda x: codec_case(tally, x)
    elif target == "node":
        live = LiveNode()
        strategy, case = node_inputs, lambda x: node_case(live, tally, x)  # type: ignore[arg-type]
    elif target == "wal":
        strategy = st.tuples(fs.wal_segments, st.booleans(), st.integers(1, 4))
        case = lambda x: wal_case(tally, x)  # noqa: E731
    elif target == "snapshot":
        strategy, case = fs.snapshot_bytes, lambda x: snapshot_case(tally, x)
    else:
        raise ValueError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
    test = given(strategy)(options(case))
    if seed is not None:
        from hypothesis import seed as hypothesis_seed

        test = hypothesis_seed(seed)(test)
    try:
        test()
    finally:
        if live is not None:
            tally.sizes = live.sizes()
            live.close()
    return tally
