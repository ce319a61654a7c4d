"""A private test network of Linux network namespaces, and the packet faults injected into it.

Layout of one run (every name starts with the run's prefix ``zfault-<pid>-<hex>``, so a leftover of a run
that died can be recognised and removed by `sweep_stale`):

    <prefix>-br   bridge namespace: bridge br0 (198.18.0.254/24); clients and probes run here
    <prefix>-n1   node namespace: eth0 (198.18.0.1/24), the other end of the veth is vn1 on br0
    ...

The addresses come from 198.18.0.0/15 (RFC 2544, reserved for network testing). They exist only inside
these namespaces: the namespaces have no link to the host's namespace and no default route, so nothing
sent here can leave them.

The kernel here has neither sch_netem nor the gact action nor iptables, so faults are built from what it
has (`verify_mechanisms` in the tests proves each one): classic BPF programs attached in direct-action mode
to the clsact hook of a node's eth0 return TC_ACT_SHOT for the packets to drop — on *egress* (the node
cannot send to those peers) or on *ingress* (it cannot receive from them); a program can drop a random
share of matching packets (cBPF's ``ld rand``), which is packet loss; and a token-bucket (tbf) qdisc on
both ends of a veth makes a slow link, whose queueing delay grows with the traffic on it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = ipaddress.IPv4Network("198.18.0.0/24")
BRIDGE_ADDRESS = "198.18.0.254"
PREFIX_RE = re.compile(r"^zfault-(\d+)-[0-9a-f]+-")
IP = shutil.which("ip") or "/usr/sbin/ip"
TC = shutil.which("tc") or "/usr/sbin/tc"

# classic BPF opcodes, and the two return values of a direct-action tc program
_LDH_ABS, _LD_ABS, _JEQ_K, _JGE_K, _RET_K = 0x28, 0x20, 0x15, 0x35, 0x06
_TC_ACT_SHOT = 2
_TC_ACT_UNSPEC = 0xFFFFFFFF  # -1: not ours, let the next filter (or the stack) decide
_SKF_AD_RANDOM = (1 << 32) - 0x1000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM: a random u32
_ETHERTYPE_OFFSET, _IPV4_SRC_OFFSET, _IPV4_DST_OFFSET = 12, 26, 30  # cls_bpf sees the Ethernet header


class NetnsError(RuntimeError):
    """A namespace, link or qdisc command failed."""


def run(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (not root, no ip/tc, creation refused), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not (os.path.exists(IP) and os.path.exists(TC)):
        return "iproute2 (ip, tc) is not installed"
    probe = f"zfault-{os.getpid()}-{uuid.uuid4().hex[:6]}-probe"
    proc = run([IP, "netns", "add", probe], check=False)
    if proc.returncode != 0:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    try:  # the kernel must also have veth, the clsact hook with BPF filters, and tbf
        for args in (
            [IP, "-n", probe, "link", "add", "a0", "type", "veth", "peer", "name", "b0"],
            [TC, "-n", probe, "qdisc", "add", "dev", "a0", "clsact"],
            [TC, "-n", probe, "filter", "add", "dev", "a0", "ingress", "bpf", "da", "bytecode",
             drop_program([BRIDGE_ADDRESS], match_source=True, probability=0.5)],
            [TC, "-n", probe, "qdisc", "add", "dev", "a0", "root", "tbf", "rate", "64kbit", "burst", "1600",
             "latency", "800ms"],
        ):  # fmt: skip
            proc = run(args, check=False)
            if proc.returncode != 0:
                step = " ".join(args[3:6])
                return f"the kernel cannot do what the fault tests need: {step}: {proc.stderr.strip()}"
    finally:
        run([IP, "netns", "del", probe], check=False)
    return None


def list_namespaces() -> list[str]:
    out = run([IP, "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_namespace(name: str) -> None:
    """Kill every process still inside the namespace, then delete it (its veth ends go with it)."""
    pids = run([IP, "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    run([IP, "netns", "del", name], check=False)


def sweep_stale() -> list[str]:
    """Remove the namespaces and temporary directories left by harness runs whose process is gone (killed
    outright, so its own cleanup never ran); returns their names."""
    removed = []
    for name in list_namespaces():
        match = PREFIX_RE.match(name + "-")
        if match and not _pid_alive(int(match.group(1))):
            remove_namespace(name)
            removed.append(name)
    for path in Path(tempfile.gettempdir()).glob("zfault-*"):
        match = PREFIX_RE.match(path.name)
        if match and path.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


# --- classic BPF programs -------------------------------------------------------------------------


def _insn(code: int, jt: int, jf: int, k: int) -> str:
    return f"{code} {jt} {jf} {k & 0xFFFFFFFF}"


def drop_program(addresses: Sequence[str], match_source: bool, probability: float = 1.0) -> str:
    """tc's bytecode text of a cBPF program that drops IPv4 packets from (match_source) or to one of
    `addresses`, each with the given probability, and leaves every other packet alone."""
    if not addresses:
        raise ValueError("a drop program needs at least one address")
    if not 0.0 < probability <= 1.0:
        raise ValueError("probability must be in (0, 1]")
    ips = [int(ipaddress.IPv4Address(a)) for a in addresses]
    random_part = probability < 1.0
    # layout: 0 ldh type; 1 jeq ipv4; 2 ld addr; 3..3+n-1 jeq addr_i; [ld rand; jge thr]; ret shot; ret unspec
    n = len(ips)
    body: list[str] = []
    after_match = 2 if random_part else 0  # instructions between the address tests and "ret shot"
    total = 3 + n + after_match + 2
    unspec_at = total - 1
    shot_at = total - 2
    body.append(_insn(_LDH_ABS, 0, 0, _ETHERTYPE_OFFSET))
    body.append(_insn(_JEQ_K, 0, unspec_at - 2, 0x0800))
    body.append(_insn(_LD_ABS, 0, 0, _IPV4_SRC_OFFSET if match_source else _IPV4_DST_OFFSET))
    first_after_tests = 3 + n
    for i, ip in enumerate(ips):
        here = 3 + i
        jt = first_after_tests - here - 1
        jf = 0 if i < n - 1 else unspec_at - here - 1
        body.append(_insn(_JEQ_K, jt, jf, ip))
    if random_part:
        threshold = min(int(probability * 2**32), 2**32 - 1)
        body.append(_insn(_LD_ABS, 0, 0, _SKF_AD_RANDOM))
        here = first_after_tests + 1
        body.append(_insn(_JGE_K, unspec_at - here - 1, shot_at - here - 1, threshold))
    body.append(_insn(_RET_K, 0, 0, _TC_ACT_SHOT))
    body.append(_insn(_RET_K, 0, 0, _TC_ACT_UNSPEC))
    assert len(body) == total
    return f"{total}," + ",".join(body)


# --- the network ----------------------------------------------------------------------------------


@dataclass
class TestNetwork:
    """A bridge namespace and one namespace per node, created by `create()` and removed by `destroy()`."""

    __test__ = False  # not a pytest test class

    node_names: Sequence[str]
    prefix: str = field(default_factory=lambda: f"zfault-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    created: list[str] = field(default_factory=list)
    _shaped: set[str] = field(default_factory=set)

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-br"

    def node_ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def address(self, name: str) -> str:
        return str(SUBNET.network_address + 1 + list(self.node_names).index(name))

    def addresses(self, names: Iterable[str]) -> list[str]:
        return [self.address(n) for n in names]

    def create(self) -> None:
        br = self.bridge_ns
        self._add_ns(br)
        run([IP, "-n", br, "link", "set", "lo", "up"])
        run([IP, "-n", br, "link", "add", "br0", "type", "bridge"])
        run([IP, "-n", br, "addr", "add", f"{BRIDGE_ADDRESS}/{SUBNET.prefixlen}", "dev", "br0"])
        run([IP, "-n", br, "link", "set", "br0", "up"])
        for name in self.node_names:
            ns = self.node_ns(name)
            self._add_ns(ns)
            run([IP, "-n", ns, "link", "set", "lo", "up"])
            run(
                [IP, "-n", br, "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0", "netns", ns]
            )
            run([IP, "-n", br, "link", "set", f"v{name}", "master", "br0", "up"])
            run([IP, "-n", ns, "addr", "add", f"{self.address(name)}/{SUBNET.prefixlen}", "dev", "eth0"])
            run([IP, "-n", ns, "link", "set", "eth0", "up"])
            run([TC, "-n", ns, "qdisc", "add", "dev", "eth0", "clsact"])

    def _add_ns(self, name: str) -> None:
        run([IP, "netns", "add", name])
        self.created.append(name)

    def destroy(self) -> None:
        """Remove every namespace this network created (and whatever still runs inside); idempotent."""
        while self.created:
            remove_namespace(self.created.pop())

    def exec_prefix(self, ns: str) -> list[str]:
        return [IP, "netns", "exec", ns]

    # --- faults ---

    def drop(self, node: str, peers: Sequence[str], *, ingress: bool, probability: float = 1.0) -> None:
        """Drop packets on `node`'s link: arriving from (ingress) or leaving for (egress) `peers`."""
        if not peers:
            return
        program = drop_program(self.addresses(peers), match_source=ingress, probability=probability)
        hook = "ingress" if ingress else "egress"
        run(
            [
                TC,
                "-n",
                self.node_ns(node),
                "filter",
                "add",
                "dev",
                "eth0",
                hook,
                "bpf",
                "da",
                "bytecode",
                program,
            ]
        )

    def block(self, src: str, dst: str) -> None:
        """Packets from src to dst vanish (dropped as they leave src); dst to src still flows."""
        self.drop(src, [dst], ingress=False)

    def slow_link(self, node: str, rate_kbit: int) -> None:
        """A slow link between `node` and the bridge, both ways: a token bucket with a deep queue."""
        for ns, dev in ((self.node_ns(node), "eth0"), (self.bridge_ns, f"v{node}")):
            run(
                [
                    TC,
                    "-n",
                    ns,
                    "qdisc",
                    "replace",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    f"{rate_kbit}kbit",
                    "burst",
                    "1600",
                    "latency",
                    "800ms",
                ]
            )
        self._shaped.add(node)

    def heal(self) -> None:
        """Remove every drop filter and slow link; the network is whole again."""
        for name in self.node_names:
            ns = self.node_ns(name)
            for hook in ("ingress", "egress"):
                run([TC, "-n", ns, "filter", "del", "dev", "eth0", hook], check=False)
        for node in sorted(self._shaped):
            run([TC, "-n", self.node_ns(node), "qdisc", "del", "dev", "eth0", "root"], check=False)
            run([TC, "-n", self.bridge_ns, "qdisc", "del", "dev", f"v{node}", "root"], check=False)
        self._shaped.clear()

    def describe_filters(self) -> str:
        """What tc has installed on every node's link (for failure reports)."""
        lines = []
        for name in self.node_names:
            for hook in ("ingress", "egress"):
                out = run([TC, "-n", self.node_ns(name), "filter", "show", "dev", "eth0", hook], check=False)
                if out.stdout.strip():
                    lines.append(f"{name} {hook}: {out.stdout.strip()}")
        return "\n".join(lines)
