"""The network-fault harness ("nemesis"): real node processes in network namespaces, clients recording
histories, and a seeded schedule of faults — partitions (symmetric, one-way, bridge), packet loss, a slow
leader link, kill -9, SIGSTOP/SIGCONT and a stalling disk — each held for a bounded time and then healed.

At the end every replica must hold the same keyspace, every acknowledged write must be present and the
recorded history must be linearizable (tests/sim/linearizability.py, per key). A failure prints the seed,
the fault schedule and the command that replays it (the same schedule; the interleavings differ run to run).

    python -m tests.fault.nemesis --minutes 30 --seed 7            # a soak
    python -m tests.fault.nemesis --seed 7 --steps 4 --kinds bridge  # a short run of one fault kind

It runs as root (namespaces need it) and removes everything it made — namespaces, processes, data
directories — on the way out, also after a failure, Ctrl-C or SIGTERM; a run that was killed outright is
cleaned up by the next one (`netns.sweep_stale`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cluster.storage.crash import FSYNC_STALL_ENV
from tests.fault import netns
from tests.fault.worker import UNIQUE_PREFIX
from tests.integration.util import wait_until
from tests.sim.linearizability import Operation, check_history

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = REPO_ROOT / "bin" / "cluster-node"
PEER_PORT, CLIENT_PORT = 7101, 7001  # the same in every namespace: each node has its own address
ELECTION_TIMEOUT_MS, HEARTBEAT_MS = 500, 100
# Small snapshots and segments, so a node cut off for a while catches up through InstallSnapshot.
STORAGE_ARGS = ["--snapshot-entries", "400", "--wal-segment-bytes", "65536"]
CLIENT_TIMEOUT = 2.0
KEYS = ["k0", "k1", "k2", "k3"]
KEY_EPOCH_SECONDS = 30.0  # each key's history spans at most this long (plus a client timeout)
RECOVERY_TIMEOUT = 30.0  # after healing, writes must be acknowledged again within this
CONVERGE_TIMEOUT = 30.0
READY_TIMEOUT = 20.0
POLL_INTERVAL = 0.1  # how often a wait polls the cluster or the histories

SYMMETRIC = ("partition-split", "partition-leader")
ONE_WAY = ("oneway-no-receive", "oneway-no-send")
BRIDGE = ("bridge",)
PARTITIONS = SYMMETRIC + ONE_WAY + BRIDGE
LINK = ("loss", "slow-leader")
PROCESS = ("kill", "pause", "fsync-stall")
ALL_KINDS = PARTITIONS + LINK + PROCESS
# faults that can be laid over a partition in one step
OVERLAYS = ("loss", "slow-leader", "pause", "fsync-stall", "kill")


class NemesisFailure(AssertionError):
    """A checked property did not hold (or the cluster did not recover); the message says how to replay."""


# --- the schedule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    kind: str
    on_leader: bool  # aim at the current leader (else at node `pick`)
    pick: int  # index into the node list, when not aimed at the leader
    probability: float = 0.0  # loss
    rate_kbit: int = 0  # slow link

    def describe(self) -> str:
        target = "leader" if self.on_leader else f"node#{self.pick}"
        extra = f" p={self.probability:.2f}" if self.kind == "loss" else ""
        extra += f" {self.rate_kbit}kbit" if self.kind == "slow-leader" else ""
        return f"{self.kind}({target}{extra})"


@dataclass(frozen=True)
class Step:
    faults: tuple[Fault, ...]
    duration: float
    pause_before: float

    def describe(self) -> str:
        return f"{' + '.join(f.describe() for f in self.faults)} for {self.duration:.1f}s"


def make_fault(rng: random.Random, kind: str, nodes: int) -> Fault:
    on_leader = kind in ("partition-leader", "slow-leader") or rng.random() < 0.5
    return Fault(
        kind=kind,
        on_leader=on_leader,
        pick=rng.randrange(nodes),
        probability=round(rng.uniform(0.05, 0.3), 2) if kind == "loss" else 0.0,
        rate_kbit=rng.choice([64, 128, 256]) if kind == "slow-leader" else 0,
    )


def make_schedule(
    seed: int, steps: int, kinds: Sequence[str], nodes: int, combine: float = 0.3
) -> list[Step]:
    """`steps` fault steps drawn from `kinds` (each kind at least once when steps allow), from the seed."""
    rng = random.Random(seed)
    order = list(kinds)
    rng.shuffle(order)
    schedule = []
    for i in range(steps):
        kind = order[i] if i < len(order) else rng.choice(list(kinds))
        faults = [make_fault(rng, kind, nodes)]
        if kind in PARTITIONS and rng.random() < combine:
            faults.append(make_fault(rng, rng.choice(OVERLAYS), nodes))
        schedule.append(Step(tuple(faults), round(rng.uniform(2.0, 6.0), 1), round(rng.uniform(0.5, 2.0), 1)))
    return schedule


# --- processes ------------------------------------------------------------------------------------


@dataclass
class NodeProcess:
    name: str
    ns_command: list[str]
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    killed: bool = False  # by the harness: any other exit is the node failing

    def start(self) -> None:
        env = dict(os.environ, **self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.ns_command, sys.executable, str(NODE_BIN), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(REPO_ROOT),
                start_new_session=True,
            )
        self.paused = False
        self.killed = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.paused = False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Probe:
    """The probe process in the bridge namespace (tests/fault/worker.py probe): one JSON line each way."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*command, sys.executable, "-m", "tests.fault.worker", "probe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(REPO_ROOT),
            start_new_session=True,
        )

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()  # every request bounds its own waits
        if not line:
            raise NemesisFailure(f"the probe process died (exit {self.proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class ClientWorker:
    name: str
    proc: subprocess.Popen[str]
    history: Path
    minority: bool = False

    def stop(self, timeout: float) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# --- histories ------------------------------------------------------------------------------------


@dataclass
class Record:
    op: Operation
    outcome: str  # ok / unknown / failed
    end: float  # when the client gave up or got its answer
    minority: bool


class Histories:
    """Reads the workers' history files incrementally (they keep growing while the run goes on)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._offsets: dict[Path, int] = {}
        self._minority: set[Path] = set()

    def add_file(self, path: Path, minority: bool) -> None:
        self._offsets.setdefault(path, 0)
        if minority:
            self._minority.add(path)

    def refresh(self) -> None:
        for path, offset in self._offsets.items():
            if not path.exists():
                continue
            with open(path, encoding="utf-8") as f:
                f.seek(offset)
                data = f.read()
            complete = data[: data.rfind("\n") + 1]  # a half-written last line waits for the next refresh
            self._offsets[path] = offset + len(complete.encode())
            for line in complete.splitlines():
                row = json.loads(line)
                op = Operation(
                    row["client"],
                    row["key"],
                    row["kind"],
                    tuple(row["args"]),
                    row["invoke"],
                    row["complete"],
                    row["result"],
                )
                self.records.append(Record(op, row["outcome"], row["end"], path in self._minority))

    def last_write_ack(self) -> float:
        return max((r.end for r in self.records if r.outcome == "ok" and r.op.kind != "get"), default=0.0)


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Injected:
    step: Step
    started: float
    healed: float
    resolved: list[str]  # what was actually done, e.g. "partition-leader {n2} | {n1,n3}"
    minority: list[str] = field(default_factory=list)
    leader_before: str | None = None
    leader_during: str | None = None  # the leader of the highest term just before healing


class Nemesis:
    """One harness run: build the network, start nodes and clients, play the schedule, check, clean up."""

    def __init__(
        self,
        seed: int,
        schedule: list[Step],
        nodes: int = 3,
        clients: int = 2,
        log: Callable[[str], None] = print,
        replay: str = "",
    ) -> None:
        self.seed = seed
        self.schedule = schedule
        self.names = [f"n{i + 1}" for i in range(nodes)]
        self.client_count = clients
        self.log = log
        self.replay = replay
        self.net = netns.TestNetwork(self.names)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.net.prefix}-"))
        self.nodes: dict[str, NodeProcess] = {}
        self.workers: list[ClientWorker] = []
        self.probe: Probe | None = None
        self.histories = Histories()
        self.injected: list[Injected] = []
        self.leaders_by_term: dict[int, str] = {}
        self.t0 = time.monotonic()
        self._cleaned = False

    # --- addresses ---

    def client_url(self, name: str) -> str:
        return f"tcp://{self.net.address(name)}:{CLIENT_PORT}"

    def peer_url(self, name: str) -> str:
        return f"tcp://{self.net.address(name)}:{PEER_PORT}"

    def stall_flag(self, name: str) -> Path:
        return self.workdir / f"stall-{name}"

    def elapsed(self) -> str:
        return f"[{time.monotonic() - self.t0:7.1f}s]"

    # --- lifecycle ---

    def setup(self) -> None:
        stale = netns.sweep_stale()
        if stale:
            self.log(f"removed leftovers of earlier runs: {', '.join(stale)}")
        self.net.create()
        initial = ",".join(f"{n}={self.peer_url(n)}" for n in self.names)
        for name in self.names:
            args = [
                "--name",
                name,
                "--data-dir",
                str(self.workdir / name),
                "--peer-url",
                self.peer_url(name),
                "--client-url",
                self.client_url(name),
                "--initial-cluster",
                initial,
                "--election-timeout-ms",
                str(ELECTION_TIMEOUT_MS),
                "--heartbeat-ms",
                str(HEARTBEAT_MS),
                *STORAGE_ARGS,
            ]
            node = NodeProcess(
                name,
                self.net.exec_prefix(self.net.node_ns(name)),
                args,
                {FSYNC_STALL_ENV: str(self.stall_flag(name))},
                self.workdir / f"{name}.log",
            )
            self.nodes[name] = node
            node.start()
        self.probe = Probe(self.net.exec_prefix(self.net.bridge_ns))
        self.wait_for_leader(READY_TIMEOUT, "a first leader")
        for i in range(self.client_count):
            self.start_worker(f"c{i + 1}", self.names, self.net.bridge_ns, minority=False)

    def cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        for worker in self.workers:
            worker.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=10)
        if self.probe is not None:
            self.probe.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.probe.proc.wait(timeout=10)
        for node in self.nodes.values():
            node.kill()
        self.net.destroy()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def start_worker(self, name: str, targets: Sequence[str], ns: str, minority: bool) -> ClientWorker | None:
        """A client worker process in namespace `ns` talking to `targets`; a minority-side one runs inside a
        minority node's namespace, so the partition's filters cut it off from the majority too."""
        history = self.workdir / f"history-{name}.jsonl"
        seed = random.Random(f"{self.seed}/{name}").randrange(2**32)
        proc = subprocess.Popen(
            [
                *self.net.exec_prefix(ns),
                sys.executable,
                "-m",
                "tests.fault.worker",
                "client",
                "--name",
                name,
                "--endpoints",
                ",".join(self.client_url(t) for t in targets),
                "--keys",
                ",".join(KEYS),
                "--seed",
                str(seed),
                "--history",
                str(history),
                "--timeout",
                str(CLIENT_TIMEOUT),
                "--threads",
                "2" if not minority else "1",
                "--epoch-seconds",
                str(KEY_EPOCH_SECONDS),
                "--origin",
                repr(self.t0),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(REPO_ROOT),
            start_new_session=True,
        )
        worker = ClientWorker(name, proc, history, minority)
        self.workers.append(worker)
        self.histories.add_file(history, minority)
        assert proc.stdout is not None
        line = _read_line(proc.stdout, READY_TIMEOUT)
        if line.strip() != "ready":
            if minority:  # a client on the minority side may find no node that answers: not a failure
                self.log(f"{self.elapsed()} minority client {name} could not start: {line.strip()!r}")
                return None
            raise NemesisFailure(f"client worker {name} did not start: {line.strip()!r}")
        return worker

    # --- observing the cluster ---

    def statuses(self, names: Sequence[str] | None = None, timeout: float = 0.5) -> dict[str, dict[str, Any]]:
        assert self.probe is not None
        names = list(self.names if names is None else names)
        if not names:
            return {}
        answer = self.probe.ask(cmd="status", urls=[self.client_url(n) for n in names], timeout=timeout)
        found = {n: s for n, s in zip(names, answer["statuses"], strict=True) if s is not None}
        for name, status in found.items():  # Election Safety, as far as polling can see it
            if status["role"] == "leader":
                other = self.leaders_by_term.setdefault(status["term"], name)
                if other != name:
                    raise NemesisFailure(f"two leaders in term {status['term']}: {other} and {name}")
        return found

    def leader(self) -> str | None:
        alive = [n for n in self.names if self.nodes[n].alive() and not self.nodes[n].paused]
        best: tuple[int, str] | None = None
        for name, status in self.statuses(alive).items():
            if status["role"] == "leader" and (best is None or status["term"] > best[0]):
                best = (status["term"], name)
        return best[1] if best else None

    def wait_for_leader(self, timeout: float, what: str) -> str:
        return wait_until(self.leader, timeout, what, POLL_INTERVAL, error=NemesisFailure)

    # --- faults ---

    def target(self, fault: Fault, leader: str | None) -> str:
        if fault.on_leader and leader is not None:
            return leader
        return self.names[fault.pick % len(self.names)]

    def inject(self, step: Step) -> Injected:
        leader = self.leader()
        done: list[str] = []
        minority: list[str] = []
        for fault in step.faults:
            node = self.target(fault, leader)
            others = [n for n in self.names if n != node]
            kind = fault.kind
            if kind in ("partition-split", "partition-leader"):
                if kind == "partition-leader":
                    small = [node]
                else:
                    size = max(1, (len(self.names) - 1) // 2)
                    small = sorted(
                        [node, *random.Random(f"{self.seed}/{len(self.injected)}").sample(others, size - 1)]
                    )
                big = [n for n in self.names if n not in small]
                for a in small:
                    for b in big:
                        self.net.block(a, b)
                        self.net.block(b, a)
                minority = small
                done.append(f"{kind} {{{','.join(small)}}} | {{{','.join(big)}}}")
            elif kind == "oneway-no-receive":
                self.net.drop(node, others, ingress=True)
                done.append(f"{kind}: {node} sends to all, receives from none (ingress drop)")
            elif kind == "oneway-no-send":
                self.net.drop(node, others, ingress=False)
                done.append(f"{kind}: {node} receives from all, sends to none (egress drop)")
            elif kind == "bridge":
                rest = others
                half = len(rest) // 2
                left, right = rest[:half], rest[half:]
                for a in left:
                    for b in right:
                        self.net.block(a, b)
                        self.net.block(b, a)
                done.append(f"bridge: {{{','.join(left)}}} | {node} | {{{','.join(right)}}}")
            elif kind == "loss":
                for n in self.names:  # every link loses packets both ways
                    self.net.drop(
                        n, [m for m in self.names if m != n], ingress=False, probability=fault.probability
                    )
                done.append(f"loss {fault.probability:.0%} on every node-to-node link")
            elif kind == "slow-leader":
                self.net.slow_link(node, fault.rate_kbit)
                done.append(f"slow link {fault.rate_kbit}kbit on {node}")
            elif kind == "kill":
                self.nodes[node].kill()
                self.nodes[node].killed = True
                done.append(f"kill -9 {node}")
            elif kind == "pause":
                self.nodes[node].signal(signal.SIGSTOP)
                self.nodes[node].paused = True
                done.append(f"SIGSTOP {node}")
            elif kind == "fsync-stall":
                self.stall_flag(node).touch()
                done.append(f"fsync stall on {node}")
            else:
                raise ValueError(f"unknown fault kind {kind!r}")
        return Injected(step, time.monotonic(), 0.0, done, minority, leader_before=leader)

    def check_nodes_running(self) -> None:
        for name, node in self.nodes.items():
            if not node.killed and not node.alive():
                code = node.proc.returncode if node.proc else None
                raise NemesisFailure(f"node {name} exited by itself with status {code}")

    def heal(self) -> None:
        self.check_nodes_running()
        self.net.heal()
        for name, node in self.nodes.items():
            self.stall_flag(name).unlink(missing_ok=True)
            if node.paused:
                node.signal(signal.SIGCONT)
                node.paused = False
            if not node.alive():
                node.start()

    def play(self, deadline: float | None = None) -> None:
        for index, step in enumerate(self.schedule):
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(step.pause_before)  # quiet time between faults is part of the schedule
            record = self.inject(step)
            self.log(f"{self.elapsed()} step {index + 1}: {'; '.join(record.resolved)} for {step.duration}s")
            minority_worker = None
            if record.minority:
                minority_worker = self.start_worker(
                    f"m{index + 1}", record.minority, self.net.node_ns(record.minority[0]), minority=True
                )
            time.sleep(max(0.0, record.started + step.duration - time.monotonic()))  # the fault's length
            if minority_worker is not None:
                minority_worker.stop(CLIENT_TIMEOUT + 10)
            record.leader_during = self.leader()
            if step.faults[0].kind == "partition-leader" and record.leader_before is not None:
                record.leader_during = self.wait_for_new_leader(record)
            self.heal()
            record.healed = time.monotonic()
            self.injected.append(record)
            self.wait_for_writes_after(record.healed, index + 1)

    def wait_for_new_leader(self, record: Injected) -> str | None:
        """With its leader cut off, the majority must elect another (held a little longer if need be).
        Not required when another fault of the step may leave the majority without a quorum."""
        if any(f.kind in ("kill", "pause", "fsync-stall") for f in record.step.faults[1:]):
            return self.leader()

        def new_leader() -> str | None:
            leader = self.leader()
            return leader if leader != record.leader_before else None

        what = f"the majority to elect a leader other than the isolated {record.leader_before}"
        return wait_until(new_leader, RECOVERY_TIMEOUT, what, POLL_INTERVAL, error=NemesisFailure)

    def wait_for_writes_after(self, healed: float, step: int) -> None:
        def acknowledged() -> bool:
            self.histories.refresh()
            return self.histories.last_write_ack() > healed

        left = max(0.0, healed + RECOVERY_TIMEOUT - time.monotonic())
        what = f"a write acknowledged within {RECOVERY_TIMEOUT:g}s of healing step {step}"
        wait_until(acknowledged, left, what, POLL_INTERVAL, error=NemesisFailure)

    # --- checks ---

    def finish(self) -> None:
        self.check_nodes_running()
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.stop(CLIENT_TIMEOUT * 4 + 10)
            if worker.proc.returncode not in (0, 3):
                raise NemesisFailure(f"client worker {worker.name} exited with {worker.proc.returncode}")
        self.histories.refresh()
        self.wait_converged()
        assert self.probe is not None
        keys = sorted({r.op.key for r in self.histories.records if not r.op.key.startswith(UNIQUE_PREFIX)})
        reads = self.probe.ask(
            cmd="read", urls=[self.client_url(n) for n in self.names], keys=keys, timeout=10.0
        )["reads"]
        for read in reads:
            if not read["ok"]:
                raise NemesisFailure(f"final read of {read['key']} found no leader")
            op = Operation("final", read["key"], "get", (), read["invoke"], read["complete"], read["value"])
            self.histories.records.append(Record(op, "ok", read["complete"], False))
        result = check_history(r.op for r in self.histories.records if r.outcome != "failed")
        if not result.ok:
            raise NemesisFailure(f"history not linearizable:\n{result.explanation}")
        self.log(f"{self.elapsed()} {result.explanation}")

    def wait_converged(self) -> None:
        last: dict[str, dict[str, Any]] = {}  # the statuses seen last, to describe the cluster if it is stuck

        def converged() -> bool:
            last.clear()
            last.update(self.statuses(timeout=1.0))
            applied = {s["applied"] for s in last.values()}
            commits = {s["commit"] for s in last.values()}
            return len(last) == len(self.names) and len(applied) == 1 and applied == commits

        def stuck(message: str) -> NemesisFailure:
            return NemesisFailure(f"{message}:\n{self.describe_stuck(last)}")

        wait_until(converged, CONVERGE_TIMEOUT, "the replicas to converge", POLL_INTERVAL, error=stuck)
        applied = next(iter(last.values()))["applied"]
        assert self.probe is not None
        dumps = self.probe.ask(cmd="dump", urls=[self.client_url(n) for n in self.names], timeout=5.0)[
            "dumps"
        ]
        first = dumps[0]
        for name, other in zip(self.names, dumps, strict=True):
            if other is None or other != first:
                raise NemesisFailure(f"replica {name} differs from {self.names[0]} after healing")
        stored = {kv["key"]: kv["value"] for kv in first or []}
        lost = [
            r.op.key
            for r in self.histories.records
            if r.outcome == "ok"
            and r.op.key.startswith(UNIQUE_PREFIX)
            and stored.get(r.op.key) != r.op.args[0]
        ]
        if lost:
            raise NemesisFailure(f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}")
        self.log(
            f"{self.elapsed()} all {len(self.names)} replicas hold the same {len(stored)} keys; "
            f"applied index {applied}"
        )

    def describe_stuck(self, before: dict[str, dict[str, Any]]) -> str:
        """Each node's Raft position, what its counters did over the next two seconds (is anything still
        sent, dropped, received?) and its TCP connections: a stuck protocol or a stuck link?"""
        time.sleep(2.0)  # a deliberate observation window, not a wait for a condition
        after = self.statuses(timeout=1.0)
        lines = []
        for name in self.names:
            a, b = before.get(name), after.get(name)
            if a is None or b is None:
                lines.append(f"{name}: no status")
                continue
            keys = ("role", "term", "leader", "commit", "applied", "last_index", "snapshot_index")
            lines.append(f"{name}: " + ", ".join(f"{k} {b.get(k)}" for k in keys))
            if "progress" in b:
                lines.append(f"  progress {b['progress']}")
            ra, rb = a.get("runtime", {}), b.get("runtime", {})
            delta = {
                "peer_frames": rb.get("peer_frames", 0) - ra.get("peer_frames", 0),
                "peer_sent": rb.get("peer_send", {}).get("sent", 0) - ra.get("peer_send", {}).get("sent", 0),
                "peer_dropped_full": rb.get("peer_send", {}).get("dropped_full", 0)
                - ra.get("peer_send", {}).get("dropped_full", 0),
            }
            lines.append(f"  over 2s: {delta}; stats {b.get('stats')}")
            sockets = netns.run([*self.net.exec_prefix(self.net.node_ns(name)), "ss", "-tnoi"], check=False)
            lines.append("  " + sockets.stdout.strip().replace("\n", "\n  "))
        return "\n".join(lines)

    # --- the report ---

    def summary(self) -> list[str]:
        records = self.histories.records
        outcomes = Counter((r.op.kind, r.outcome) for r in records if r.op.client != "final")
        lines = [
            f"operations: {sum(outcomes.values())} "
            f"(ok {sum(v for (k, o), v in outcomes.items() if o == 'ok')}, "
            f"unknown {sum(v for (k, o), v in outcomes.items() if o == 'unknown')}, "
            f"failed {sum(v for (k, o), v in outcomes.items() if o == 'failed')})"
        ]
        for kind in ("get", "put", "cas", "delete"):
            lines.append(
                f"  {kind:6}  ok {outcomes[(kind, 'ok')]:6}  unknown {outcomes[(kind, 'unknown')]:5}  "
                f"failed {outcomes[(kind, 'failed')]:5}"
            )
        per_kind: dict[str, list[Injected]] = defaultdict(list)
        for inj in self.injected:
            for fault in inj.step.faults:
                per_kind[fault.kind].append(inj)
        acks = sorted(
            r.end for r in records if r.outcome == "ok" and r.op.kind != "get" and r.op.client != "final"
        )
        lines.append(
            "faults injected, and write availability under them (longest gap between acknowledged "
            "writes while the fault lasted; time from healing to the next acknowledged write):"
        )
        for kind in ALL_KINDS:
            runs = per_kind.get(kind, [])
            if not runs:
                lines.append(f"  {kind:18} 0")
                continue
            gaps = [longest_gap(acks, inj.started, inj.healed) for inj in runs]
            recover = [next((a for a in acks if a > inj.healed), inj.healed) - inj.healed for inj in runs]
            lines.append(
                f"  {kind:18} {len(runs):3}x  longest gap max {max(gaps):5.2f}s median "
                f"{statistics.median(gaps):5.2f}s; recovery max {max(recover):5.2f}s"
            )
        minority = [r for r in records if r.minority]
        definite = [r.end - r.op.invoke for r in minority if r.outcome == "failed"]
        unknown = [r.end - r.op.invoke for r in minority if r.outcome == "unknown"]
        succeeded = sum(1 for r in minority if r.outcome == "ok")
        lines.append(
            f"minority-side clients: {len(minority)} operations; definite errors {len(definite)}"
            + (
                f" after median {statistics.median(definite):.2f}s, max {max(definite):.2f}s"
                if definite
                else ""
            )
            + f"; unknown outcomes {len(unknown)}"
            + (f" after median {statistics.median(unknown):.2f}s" if unknown else "")
            + f"; succeeded {succeeded} (answered before the old leader stepped down, "
            "or reads it could still confirm)"
        )
        return lines

    def describe_schedule(self) -> str:
        lines = [
            f"  {i + 1}. {step.describe()} (after {step.pause_before}s)"
            for i, step in enumerate(self.schedule)
        ]
        done = [f"  step {i + 1} did: {'; '.join(inj.resolved)}" for i, inj in enumerate(self.injected)]
        return "\n".join(lines + done)

    def failure_report(self, error: BaseException) -> str:
        parts = [
            f"NEMESIS FAILURE (seed {self.seed}): {error}",
            "schedule:",
            self.describe_schedule(),
            f"replay: {self.replay}",
        ]
        filters = self.net.describe_filters() if self.net.created else ""
        if filters:
            parts.append(f"tc filters at the failure:\n{filters}")
        for name, node in self.nodes.items():
            parts.append(f"----- last lines of {name}'s log -----\n{node.log_tail()}")
        return "\n".join(parts)


def longest_gap(acks: Sequence[float], start: float, end: float) -> float:
    """The longest stretch of [start, end] without an acknowledged write (acks sorted)."""
    inside = [a for a in acks if start < a < end]
    edges = [start, *inside, end]
    return max(b - a for a, b in zip(edges, edges[1:], strict=False))


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line from a child's stdout, or "" after `timeout` seconds."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return stream.readline()


@contextlib.contextmanager
def running(nemesis: Nemesis) -> Iterator[Nemesis]:
    """Set the run up and always tear it down, also on SIGTERM/SIGHUP and at interpreter exit."""
    atexit.register(nemesis.cleanup)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in previous:
        signal.signal(sig, interrupted)
    try:
        nemesis.setup()
        yield nemesis
    finally:
        nemesis.cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        atexit.unregister(nemesis.cleanup)


def run_schedule(nemesis: Nemesis, deadline_minutes: float | None = None) -> Nemesis:
    """Play the schedule against a fresh cluster and check the outcome; NemesisFailure (with the seed, the
    schedule, the replay command and the nodes' last log lines) when a property fails."""
    with running(nemesis):
        try:
            deadline = None if deadline_minutes is None else time.monotonic() + deadline_minutes * 60
            nemesis.play(deadline)
            nemesis.finish()
        except NemesisFailure as exc:
            raise NemesisFailure(nemesis.failure_report(exc)) from exc
    return nemesis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fault.nemesis", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seed", type=int, default=None, help="schedule seed (default: random, printed)")
    parser.add_argument("--minutes", type=float, default=None, help="run fault steps for this long (a soak)")
    parser.add_argument("--steps", type=int, default=None, help="run this many fault steps")
    parser.add_argument("--kinds", default=",".join(ALL_KINDS), help=f"fault kinds: {','.join(ALL_KINDS)}")
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown:
        parser.error(f"unknown fault kinds {unknown}")
    reason = netns.unavailable_reason()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    # a soak draws more steps than it can play; the deadline ends it
    steps = args.steps if args.steps is not None else (int(args.minutes * 60 / 3) + 1 if args.minutes else 10)
    schedule = make_schedule(seed, steps, kinds, args.nodes)
    replay = [
        "python",
        "-m",
        "tests.fault.nemesis",
        "--seed",
        str(seed),
        "--nodes",
        str(args.nodes),
        "--kinds",
        ",".join(kinds),
    ]
    replay += ["--minutes", str(args.minutes)] if args.minutes else ["--steps", str(steps)]
    replay_text = shlex.join(replay)
    print(f"seed {seed}; {args.nodes} nodes; kinds {','.join(kinds)}; replay: {replay_text}", flush=True)
    started = time.monotonic()
    nemesis = Nemesis(
        seed, schedule, nodes=args.nodes, log=lambda s: print(s, flush=True), replay=replay_text
    )
    try:
        run_schedule(nemesis, deadline_minutes=args.minutes)
    except NemesisFailure as exc:
        print(str(exc), flush=True)
        for line in nemesis.summary():
            print(line)
        print(f"RESULT: FAILED (seed {seed}) after {time.monotonic() - started:.0f}s", flush=True)
        return 1
    for line in nemesis.summary():
        print(line)
    print(
        f"RESULT: OK (seed {seed}): {len(nemesis.injected)} fault steps in "
        f"{time.monotonic() - started:.0f}s; history linearizable, replicas identical, "
        "every acknowledged write present",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
