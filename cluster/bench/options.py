"""cluster-bench's command line: argparse, checks, and the resolved BenchOptions.

--quick changes the defaults (shorter cells, fewer concurrencies, a smaller read set); any option given
explicitly still wins.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cluster.bench.workloads import KEY_SPACE, WORKLOADS
from cluster.client.endpoints import parse_endpoints

COMPARABLE = ("etcd", "pysyncobj")
CLIENT_MODES = ("async", "threads")
DEFAULT_CONCURRENCY = (1, 16, 64, 256)
# The watch workload's cells when --concurrency is left at its default: 100 watchers of one writer is the
# fan-out case the project measures (issue 16), in place of 64.
DEFAULT_WATCH_CONCURRENCY = (1, 16, 100, 256)
QUICK_CONCURRENCY = (1, 32)
DEFAULT_DURATION = 5.0
QUICK_DURATION = 1.0
DEFAULT_WARMUP = 1.0
QUICK_WARMUP = 0.2
DEFAULT_PRELOAD = 10_000
QUICK_PRELOAD = 1_000
DEFAULT_OP_TIMEOUT = 10.0
RESULTS_DIR = Path("bench-results")


@dataclass(frozen=True, slots=True)
class BenchOptions:
    endpoints: tuple[str, ...] | None
    nodes: int
    clients: int
    concurrency: tuple[int, ...]
    workloads: tuple[str, ...]
    compare: tuple[str, ...]
    duration: float
    warmup: float
    preload: int
    out: Path
    data_root: str | None
    seed: int
    quick: bool
    plot: bool
    op_timeout: float
    secure: bool = False
    client_modes: tuple[str, ...] = ("async",)

    @property
    def systems(self) -> tuple[str, ...]:
        return ("zraft", *(("zraft-secure",) if self.secure else ()), *self.compare)


def int_list(text: str) -> tuple[int, ...]:
    """ "1,16,64" -> (1, 16, 64): positive, distinct, kept in the order given."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(f"{part!r} is not a positive integer")
        if int(part) not in values:
            values.append(int(part))
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return tuple(values)


def name_list(known: Sequence[str], what: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names: list[str] = []
        for part in text.split(","):
            part = part.strip()
            if part not in known:
                raise argparse.ArgumentTypeError(f"unknown {what} {part!r}; choose from {', '.join(known)}")
            if part not in names:
                names.append(part)
        return tuple(names)

    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def endpoint_list(text: str) -> tuple[str, ...]:
    try:
        return tuple(parse_endpoints(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    workloads = "; ".join(f"{name}: {text}" for name, text in WORKLOADS.items())
    parser = argparse.ArgumentParser(
        prog="cluster-bench",
        description="Benchmark zraft side by side with etcd and PySyncObj on this machine: throughput, "
        "latency percentiles, node CPU and memory, fsyncs. Starts fresh local clusters (or uses "
        "--endpoints), drives them from several load-generator processes, prints a table and writes JSON "
        "and a PNG.",
        epilog=f"workloads: {workloads}",
    )
    add = parser.add_argument
    add(
        "--endpoints",
        type=endpoint_list,
        metavar="URL,...",
        help="benchmark this running zraft cluster "
        "instead of starting one (node CPU/RSS are then not reported)",
    )
    add("--nodes", type=int, default=3, metavar="N", help="zraft nodes to start (default 3)")
    add(
        "--clients",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="load-generator processes per system (default: one per core, here %(default)s)",
    )
    add(
        "--concurrency",
        type=int_list,
        metavar="N,...",
        help=f"total requests in flight, per cell (default {','.join(map(str, DEFAULT_CONCURRENCY))}, "
        f"for watch {','.join(map(str, DEFAULT_WATCH_CONCURRENCY))}; "
        f"--quick: {','.join(map(str, QUICK_CONCURRENCY))})",
    )
    add(
        "--workloads",
        type=name_list(tuple(WORKLOADS), "workload"),
        default=tuple(WORKLOADS),
        metavar="NAME,...",
        help=f"which workloads (default all: {','.join(WORKLOADS)})",
    )
    add(
        "--compare",
        type=name_list(COMPARABLE, "system"),
        default=(),
        metavar="SYSTEM,...",
        help=f"also benchmark these systems, alternating with zraft: {','.join(COMPARABLE)}",
    )
    add(
        "--client",
        dest="client_modes",
        type=name_list(CLIENT_MODES, "client mode"),
        default=("async",),
        metavar="MODE,...",
        help="how each load process calls its client: async (one closed loop over the asynchronous API, "
        "the default), threads (one thread per request in flight, each making blocking calls, as a "
        "threaded application does; zraft and etcd only); async,threads runs both, alternating",
    )
    add(
        "--duration",
        type=positive_float,
        metavar="S",
        help=f"measured seconds per cell (default {DEFAULT_DURATION:g}; --quick: {QUICK_DURATION:g})",
    )
    add(
        "--warmup",
        type=float,
        metavar="S",
        help=f"unmeasured seconds before each cell (default {DEFAULT_WARMUP:g}; --quick: {QUICK_WARMUP:g})",
    )
    add(
        "--preload",
        type=int,
        metavar="N",
        help=f"keys written before the first cell, read by the get workloads (default {DEFAULT_PRELOAD}; "
        f"--quick: {QUICK_PRELOAD})",
    )
    add("--quick", action="store_true", help="a run of under a minute: short cells, fewer concurrencies")
    add("--out", type=Path, metavar="DIR", help="where results go (default ./bench-results/<timestamp>/)")
    add(
        "--data-root",
        metavar="DIR",
        help="where the temporary data directories go (default: the system's "
        "temporary directory); put it on the disk you care about, fsync speed is the disk's",
    )
    add("--seed", type=int, default=1, help="seed of the key and value generators (default 1)")
    add(
        "--op-timeout",
        type=positive_float,
        default=DEFAULT_OP_TIMEOUT,
        metavar="S",
        help=f"client timeout of one operation (default {DEFAULT_OP_TIMEOUT:g})",
    )
    add(
        "--secure",
        action="store_true",
        help="also run zraft with CURVE on every port (keys made for the run), alternating with the "
        "plaintext cluster, so the report gives the cost of encryption as a ratio",
    )
    add("--no-plot", dest="plot", action="store_false", help="do not draw the PNG")
    return parser


def parse_options(argv: Sequence[str] | None = None, now: datetime | None = None) -> BenchOptions:
    """Parse and check; usage errors exit with status 2 (argparse)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    preload = args.preload if args.preload is not None else QUICK_PRELOAD if quick else DEFAULT_PRELOAD
    warmup = args.warmup if args.warmup is not None else QUICK_WARMUP if quick else DEFAULT_WARMUP
    if not 1 <= args.nodes <= 99:
        parser.error("--nodes must be between 1 and 99")
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    if not 1 <= preload <= KEY_SPACE:
        parser.error(f"--preload must be between 1 and {KEY_SPACE}")
    if warmup < 0:
        parser.error("--warmup must not be negative")
    if args.endpoints is not None and args.secure:
        parser.error("--secure starts its own secure cluster; it does not apply to --endpoints")
    if args.endpoints is not None and args.nodes != 3:
        parser.error("--nodes applies to a cluster cluster-bench starts, not to --endpoints")
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return BenchOptions(
        endpoints=args.endpoints,
        nodes=args.nodes,
        clients=args.clients,
        concurrency=args.concurrency or (QUICK_CONCURRENCY if quick else DEFAULT_CONCURRENCY),
        workloads=args.workloads,
        compare=args.compare,
        duration=args.duration or (QUICK_DURATION if quick else DEFAULT_DURATION),
        warmup=warmup,
        preload=preload,
        out=args.out if args.out is not None else RESULTS_DIR / stamp,
        data_root=args.data_root,
        seed=args.seed,
        quick=quick,
        plot=args.plot,
        op_timeout=args.op_timeout,
        secure=bool(args.secure),
        client_modes=args.client_modes,
    )
