"""Network faults between real node processes, each node in its own network namespace: short seeded
schedules of every partition kind (symmetric, one-way, bridge), packet loss and a slow leader link, and
kill -9 / SIGSTOP / a stalling disk, with client histories checked for linearizability and the replicas
compared after healing (tests/fault/nemesis.py does the work). First, proof that each packet-level
mechanism does what the harness relies on.

Skipped, with the reason, where network namespaces cannot be created (not root, no iproute2).
`python -m tests.fault.nemesis --minutes 30 --seed N` runs the same harness as a long soak.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

from tests.fault import netns
from tests.fault.nemesis import (
    BRIDGE,
    LINK,
    ONE_WAY,
    PROCESS,
    SYMMETRIC,
    Nemesis,
    make_schedule,
    run_schedule,
)

pytestmark = [pytest.mark.fault, pytest.mark.integration]

_REASON = netns.unavailable_reason()
needs_netns = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

_RECEIVER = """
import select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
print("ready", flush=True)
n = 0
watched = [s, sys.stdin]
while True:
    # Until a line on stdin says the sender has finished, wait as long as it takes (a loaded machine can
    # take seconds to start it); after that, silence this long means nothing more is on its way.
    readable, _, _ = select.select(watched, [], [], None if sys.stdin in watched else 0.5)
    if s in readable:
        s.recv(100)
        n += 1
    elif sys.stdin in readable:
        sys.stdin.readline()
        watched.remove(sys.stdin)
    elif not readable:
        break
print(n)
"""
_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"x" * int(sys.argv[3]), (sys.argv[1], 9999))
"""


@pytest.fixture
def pair() -> Iterator[netns.TestNetwork]:
    net = netns.TestNetwork(["n1", "n2"])
    try:
        net.create()
        yield net
    finally:
        net.destroy()
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(net.prefix)], "namespaces left behind"


def datagrams(net: netns.TestNetwork, src: str, dst: str, count: int = 40, size: int = 1) -> int:
    """How many of `count` UDP datagrams (of `size` bytes) sent at once from src's namespace reach dst."""
    receiver = subprocess.Popen(
        [*net.exec_prefix(net.node_ns(dst)), sys.executable, "-c", _RECEIVER, net.address(dst)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        subprocess.run(
            [
                *net.exec_prefix(net.node_ns(src)),
                sys.executable,
                "-c",
                _SENDER,
                net.address(dst),
                str(count),
                str(size),
            ],
            check=True,
            timeout=30,
        )
        out, _ = receiver.communicate("sent\n", timeout=30)
    finally:
        receiver.kill()
        receiver.wait(timeout=10)
    return int(out.strip())


@needs_netns
def test_drop_filters_cut_exactly_one_direction(pair: netns.TestNetwork) -> None:
    assert (datagrams(pair, "n1", "n2"), datagrams(pair, "n2", "n1")) == (40, 40)

    pair.drop("n1", ["n2"], ingress=True)  # n1 can send, cannot receive
    assert (datagrams(pair, "n1", "n2"), datagrams(pair, "n2", "n1")) == (40, 0)
    pair.heal()

    pair.drop("n1", ["n2"], ingress=False)  # n1 can receive, cannot send
    assert (datagrams(pair, "n1", "n2"), datagrams(pair, "n2", "n1")) == (0, 40)
    pair.heal()

    assert (datagrams(pair, "n1", "n2"), datagrams(pair, "n2", "n1")) == (40, 40)


@needs_netns
def test_random_drop_loses_a_share_of_packets(pair: netns.TestNetwork) -> None:
    pair.drop("n1", ["n2"], ingress=False, probability=0.5)
    delivered = datagrams(pair, "n1", "n2", count=400)
    assert 100 < delivered < 300  # binomial(400, 0.5): outside this is a ~1e-23 event
    assert datagrams(pair, "n2", "n1") == 40


@needs_netns
def test_slow_link_queues_a_burst_it_cannot_carry_and_sheds_the_rest(pair: netns.TestNetwork) -> None:
    pair.slow_link("n1", rate_kbit=64)
    # 400 kB at once into a 64 kbit/s link whose queue holds what it can send in 0.8 s (about 8 datagrams
    # get through; without the shaping even the receiver's socket buffer keeps more than 200 of them)
    assert datagrams(pair, "n1", "n2", count=400, size=1000) < 50
    assert datagrams(pair, "n2", "n1", count=400, size=1000) < 50
    pair.heal()
    assert datagrams(pair, "n1", "n2", count=40, size=1000) == 40


def test_drop_program_matches_only_ipv4_to_the_listed_addresses() -> None:
    program = netns.drop_program(["198.18.0.2", "198.18.0.3"], match_source=False)
    count, *insns = program.split(",")
    assert int(count) == len(insns) == 7
    assert insns[1] == f"{0x15} 0 4 {0x0800}"  # not IPv4: jump to "leave it alone"
    assert insns[2] == f"{0x20} 0 0 30"  # the destination address
    assert insns[-2:] == [f"{0x06} 0 0 2", f"{0x06} 0 0 {0xFFFFFFFF}"]


def play(seed: int, kinds: Sequence[str], steps: int) -> Nemesis:
    schedule = make_schedule(seed, steps, kinds, nodes=3)
    replay = (
        f"python -m tests.fault.nemesis --seed {seed} --nodes 3 --kinds {','.join(kinds)} --steps {steps}"
    )
    nemesis = run_schedule(Nemesis(seed, schedule, nodes=3, replay=replay))
    assert len(nemesis.injected) == steps
    done = {fault.kind for inj in nemesis.injected for fault in inj.step.faults}
    assert set(kinds) <= done
    assert any(r.outcome == "ok" and r.op.kind != "get" for r in nemesis.histories.records)
    return nemesis


@needs_netns
def test_symmetric_partitions_majority_minority_and_isolated_leader() -> None:
    nemesis = play(11, SYMMETRIC, steps=3)
    # (a step that also kills or pauses a majority node may leave the majority without a quorum)
    isolated = [inj for inj in nemesis.injected if [f.kind for f in inj.step.faults] == ["partition-leader"]]
    assert isolated
    for inj in isolated:
        # the filters really cut the old leader off: the majority elected another one meanwhile
        assert inj.leader_during not in (None, inj.leader_before), inj.resolved


@needs_netns
def test_one_way_partitions() -> None:
    play(12, ONE_WAY, steps=2)


@needs_netns
def test_bridge_partition() -> None:
    play(13, BRIDGE, steps=2)


@needs_netns
def test_packet_loss_and_slow_leader_link() -> None:
    play(14, LINK, steps=2)


@needs_netns
def test_kill_pause_and_stalled_fsync() -> None:
    play(15, PROCESS, steps=3)
