"""cluster-bench: benchmark zraft, optionally side by side with etcd and PySyncObj (see --help).

Exit status: 0 after a complete run, 1 when a system failed during the run, 2 for usage errors and missing
prerequisites (the message says how to install them), 130 when interrupted.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import signal
import sys
import threading
import time
from datetime import datetime
from types import FrameType
from typing import Any

from cluster.bench.blocking_drivers import ETCD_BLOCKING_CLIENT
from cluster.bench.drivers import ETCD_CLIENT, ETCD_CLIENT_INSTALL
from cluster.bench.etcd_cluster import INSTALL_HINT, EtcdCluster, find_etcd
from cluster.bench.options import DEFAULT_CONCURRENCY, DEFAULT_WATCH_CONCURRENCY, BenchOptions, parse_options
from cluster.bench.plot import draw_png
from cluster.bench.pool import BenchError
from cluster.bench.progress import Progress
from cluster.bench.report import (
    PNG_NAME,
    add_ratios,
    document,
    format_table,
    legend,
    sort_rows,
    write_results,
)
from cluster.bench.runner import Runner, plan_cells
from cluster.bench.system import System
from cluster.bench.zraft_cluster import ZraftCluster

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
BENCH_EXTRA = "pip install -e '.[bench]'"


def missing_prerequisite(compare: tuple[str, ...]) -> str | None:
    """What must be installed before this comparison can run, as instructions; None when all is there."""
    if "etcd" in compare:
        if find_etcd() is None:
            return INSTALL_HINT
        try:
            import pyetcd  # noqa: F401
        except Exception as exc:
            return (
                f"the etcd client cannot be imported ({type(exc).__name__}: {exc}). Install it with\n"
                f"    {ETCD_CLIENT_INSTALL}\nor all benchmark extras with\n    {BENCH_EXTRA}"
            )
    if "pysyncobj" in compare:
        try:
            import pysyncobj  # noqa: F401
        except Exception as exc:
            return (
                f"PySyncObj cannot be imported ({type(exc).__name__}: {exc}). Install it with\n"
                f"    pip install pysyncobj\nor all benchmark extras with\n    {BENCH_EXTRA}"
            )
    return None


def build_systems(options: BenchOptions) -> dict[str, System]:
    from cluster.bench.pysyncobj_cluster import PySyncObjCluster

    endpoints = list(options.endpoints) if options.endpoints else None
    systems: dict[str, System] = {
        "zraft": ZraftCluster(options.nodes, endpoints, options.data_root, options.op_timeout)
    }
    if options.secure:
        systems["zraft-secure"] = ZraftCluster(
            options.nodes, None, options.data_root, options.op_timeout, secure=True
        )
    for name in options.compare:
        if name == "etcd":
            systems[name] = EtcdCluster(find_etcd() or "etcd", options.data_root, options.op_timeout)
        elif name == "pysyncobj":
            systems[name] = PySyncObjCluster(options.op_timeout)
    return systems


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_meta(options: BenchOptions, started: datetime, loadavg: tuple[float, ...]) -> dict[str, Any]:
    return {
        "tool": "cluster-bench",
        "started": started.isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "host": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in loadavg],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": {
            "zraft": _version("zraft"),
            "etcd-sdk-python": _version("etcd-sdk-python"),
            "pysyncobj": _version("pysyncobj"),
        },
        "etcd_client": ETCD_CLIENT if "etcd" in options.compare else None,
        "etcd_blocking_client": (
            ETCD_BLOCKING_CLIENT if "etcd" in options.compare and "threads" in options.client_modes else None
        ),
        "options": {
            "systems": list(options.systems),
            "workloads": list(options.workloads),
            "concurrency": list(options.concurrency),
            "client_modes": list(options.client_modes),
            "clients": options.clients,
            "duration_s": options.duration,
            "warmup_s": options.warmup,
            "preload_keys": options.preload,
            "seed": options.seed,
            "quick": options.quick,
            "op_timeout_s": options.op_timeout,
        },
    }


def describe_systems(descriptions: dict[str, dict[str, str]]) -> str:
    lines = []
    for name, facts in descriptions.items():
        lines.append(f"{name}:")
        lines.extend(f"  {key:<10} {text}" for key, text in facts.items())
    return "\n".join(lines)


def stop_all(systems: list[System]) -> None:
    """Stop the systems side by side (each waits for its own processes to exit)."""
    threads = [threading.Thread(target=s.stop, name=f"stop-{s.name}") for s in systems]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(options: BenchOptions) -> int:
    started = datetime.now()
    t0 = time.monotonic()
    loadavg = os.getloadavg()
    logs = options.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    systems = build_systems(options)
    own = {"watch": DEFAULT_WATCH_CONCURRENCY} if options.concurrency == DEFAULT_CONCURRENCY else {}
    plan = plan_cells(options.workloads, options.concurrency, list(systems), options.client_modes, own)
    progress = Progress(len(plan))
    started_systems: list[System] = []
    try:
        for system in systems.values():
            progress.message(f"cluster-bench: starting {system.name} (logs in {logs})")
            started_systems.append(system)
            system.start(options.clients, logs)
            progress.message(f"cluster-bench: preloading {options.preload} keys into {system.name}")
            system.pool.preload(options.preload, options.seed)
        runner = Runner(
            systems,
            duration=options.duration,
            warmup=options.warmup,
            read_set=options.preload,
            seed=options.seed,
            op_timeout=options.op_timeout,
            progress=progress,
        )
        rows = runner.run(plan)
        descriptions = {name: s.describe() for name, s in systems.items()}
        notes = [note for s in systems.values() for note in s.notes()]
    except BenchError as exc:
        progress.done()
        print(f"cluster-bench: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        stop_all(started_systems)
    for order, row in enumerate(rows):
        row["run_order"] = order
    sort_rows(rows, options.workloads, options.systems, options.client_modes)
    add_ratios(rows)
    meta = run_meta(options, started, loadavg) | {"elapsed_s": round(time.monotonic() - t0, 1)}
    table = format_table(rows, options.compare)
    json_path, table_path = write_results(options.out, document(meta, descriptions, rows, notes), table)
    png = (
        draw_png(rows, options.out / PNG_NAME, f"cluster-bench {started:%Y-%m-%d %H:%M}")
        if options.plot
        else None
    )
    print(describe_systems(descriptions))
    print()
    print(table)
    print()
    print(legend(options.compare, options.client_modes))
    for note in notes:
        print(f"note: {note}")
    load = "/".join(f"{x:.2f}" for x in loadavg)
    cores = meta["host"]["cpus"]
    print(f"\nfinished in {meta['elapsed_s']:.0f}s on {cores} cores (load average at start {load})")
    print(f"results: {json_path}\ntable:   {table_path}")
    if png is not None:
        print(f"plot:    {png}")
    elif options.plot:
        print(f"plot:    skipped (matplotlib is not installed: {BENCH_EXTRA})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    problem = missing_prerequisite(options.compare)
    if problem is not None:
        print(f"cluster-bench: {problem}", file=sys.stderr)
        return EXIT_USAGE
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(options)
    except KeyboardInterrupt:
        print("\ncluster-bench: interrupted; every process it started has been stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
