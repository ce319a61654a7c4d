"""A cluster-bench worker process: `python -m cluster.bench.worker`, driven over stdin/stdout (ipc.py).

The first message names the driver to build ({"driver": "zraft" | "etcd" | "pysyncobj", ...}); the worker
answers {"ok": true, "pid": ...} and then serves commands until "stop" or end of input:

    prepare  {workload, in_flight, worker, seed, read_set,  build the slots of one cell (loadgen.Cell; for
              client}                                        "watch" the watchers, watchload.WatchCell; with
                                                             client "threads", one thread per slot making
                                                             blocking calls: threadload.ThreadedCell)
    go       {start, warmup, duration}                       run the prepared cell; answer its samples
    preload  {keys, in_flight, seed}                         put each of `keys` read keys once
    info     {}                                              the driver's view (PySyncObj: leader, ready)

The driver's "timeout" (init) bounds every operation; the load generator also uses it to expire an
operation whose driver never completed it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from cluster.bench.blocking_drivers import build_blocking_driver
from cluster.bench.ipc import WorkerGone, read_message, write_message
from cluster.bench.loadgen import DEFAULT_OP_TIMEOUT, Cell, preload
from cluster.bench.threadload import ThreadedCell
from cluster.bench.watchload import WatchCell
from cluster.bench.workloads import STREAM_WORKLOADS, Driver, StreamDriver, read_keys


def init_timeout(init: dict[str, Any]) -> float:
    return float(init.get("timeout", DEFAULT_OP_TIMEOUT))


def build_driver(init: dict[str, Any]) -> Driver:
    kind = init.get("driver")
    timeout = init_timeout(init)
    if kind == "zraft":
        from cluster.bench.drivers import ZraftDriver

        return ZraftDriver(
            list(init["endpoints"]),
            timeout,
            curve_secret_key=init.get("curve_secret_key"),
            server_public_key=init.get("server_public_key"),
        )
    if kind == "etcd":
        from cluster.bench.drivers import EtcdDriver

        return EtcdDriver(str(init["endpoint"]), timeout)
    if kind == "pysyncobj":
        from cluster.bench.pysyncobj_node import PySyncObjDriver

        return PySyncObjDriver(str(init["self"]), list(init["partners"]), timeout)
    raise ValueError(f"unknown driver {kind!r}")


def make_cell(
    driver: Driver, msg: dict[str, Any], op_timeout: float, blocking: Callable[[], Driver] | None = None
) -> Cell | WatchCell:
    """The cell a "prepare" asks for: the watch workload's own (watchload.py), a closed loop through the
    asynchronous API, or (client "threads") a thread per slot calling the blocking driver `blocking()`."""
    args = (msg["in_flight"], msg["worker"], msg["seed"], msg["read_set"], op_timeout)
    if msg.get("client", "async") == "threads":
        if blocking is None or msg["workload"] in STREAM_WORKLOADS:
            raise ValueError(f"no blocking client for the {msg['workload']} workload here")
        return ThreadedCell(blocking(), msg["workload"], *args)
    if msg["workload"] == "watch":
        if not isinstance(driver, StreamDriver):
            raise ValueError("the watch workload needs watches, which this system lacks")
        return WatchCell(driver, *args)
    return Cell(driver, msg["workload"], *args)


def serve(
    driver: Driver,
    inp: IO[bytes],
    out: IO[bytes],
    op_timeout: float = DEFAULT_OP_TIMEOUT,
    blocking: Callable[[], Driver] | None = None,
) -> None:
    cell: Cell | WatchCell | None = None
    while True:
        try:
            msg = read_message(inp)
        except WorkerGone:
            return
        cmd = msg.get("cmd")
        if cmd == "stop":
            with contextlib.suppress(OSError):  # the bench may no longer be listening
                write_message(out, {"ok": True})
            return
        try:
            if cmd == "prepare":
                cell = make_cell(driver, msg, op_timeout, blocking)
                cell.prepare()
                answer: dict[str, Any] = {"ok": True}
            elif cmd == "go":
                if cell is None:
                    raise RuntimeError("go before prepare")
                answer, cell = cell.run(msg["start"], msg["warmup"], msg["duration"]), None
            elif cmd == "preload":
                answer = preload(driver, read_keys(msg["keys"]), msg["in_flight"], msg["seed"])
            elif cmd == "info":
                info = getattr(driver, "info", None)
                answer = info() if info is not None else {"ok": True}
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        write_message(out, answer)


def main() -> int:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to the log, not into the stream
    inp = sys.stdin.buffer
    try:
        init = read_message(inp)
    except WorkerGone:
        return 1
    try:
        driver = build_driver(init)
    except Exception as exc:
        write_message(out, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    write_message(out, {"ok": True, "pid": os.getpid()})
    made: list[Driver] = []

    def blocking() -> Driver:  # made when a "threads" cell first needs it
        if not made:
            made.append(build_blocking_driver(init, driver))
        return made[0]

    try:
        serve(driver, inp, out, init_timeout(init), blocking)
    finally:
        for other in made:
            other.close()
        driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
