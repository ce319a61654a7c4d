"""The latency floor of one write on this machine: what a put at concurrency 1 cannot beat, measured with
the same tools zraft uses (pyzmq, Python, the disk's fsync). Not a test; a measurement:

    python -m cluster.bench.floor [--rounds 2000] [--dir /path/on/the/bench/disk]

It prints medians (and p90) of:
  zmq rtt        one loopback round trip between two Python processes over a DEALER/ROUTER pair, a
                 ~150-byte message each way (what a client request and a replication message cost on the
                 wire, Python's share included, with no Raft work)
  fsync 1        appending ~200 bytes to a file and fsync-ing it, one process alone
  fsync 3        the same from three processes at once on one disk (three nodes syncing one disk, as a
                 3-node cluster on one machine does for every write)

A put needs the client->leader round trip, the leader->follower round trip (sent before the leader's own
fsync, so the fsyncs overlap) and one fsync of each (in parallel, but on one disk), so its floor is
about 2 x zmq rtt + fsync 3; the line `floor` prints that sum.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from multiprocessing.synchronize import Barrier

import zmq

MESSAGE = b"x" * 150
RECORD = b"r" * 200


def _echo(ports: mp.Queue[int], rounds: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    ports.put(sock.bind_to_random_port("tcp://127.0.0.1"))  # bound by its user: no port race
    for _ in range(rounds):
        ident, payload = sock.recv_multipart()
        sock.send_multipart([ident, payload])
    sock.close(linger=0)
    ctx.term()


def zmq_rtt(rounds: int) -> list[float]:
    """Round-trip times (seconds) between this process (DEALER) and an echoing ROUTER process."""
    ports: mp.Queue[int] = mp.Queue()
    echo = mp.Process(target=_echo, args=(ports, rounds + 50), daemon=True)
    echo.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)  # a lost echo process ends the measurement, not the caller
    sock.connect(f"tcp://127.0.0.1:{ports.get(timeout=30)}")
    times = []
    for i in range(rounds + 50):
        t0 = time.perf_counter()
        sock.send(MESSAGE)
        sock.recv()
        if i >= 50:  # warm-up
            times.append(time.perf_counter() - t0)
    echo.join(10)
    sock.close(linger=0)
    ctx.term()
    return times


def _fsyncer(
    path: str, rounds: int, barrier: Barrier | None, out: mp.Queue[list[float]] | None
) -> list[float]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    if barrier is not None:
        barrier.wait()
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            os.write(fd, RECORD)
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    if out is not None:
        out.put(times)
    return times


def fsync_times(directory: str, rounds: int, writers: int) -> list[float]:
    """fsync latencies (seconds) of `writers` processes appending and syncing at once (one file each)."""
    if writers == 1:
        return _fsyncer(os.path.join(directory, "w0"), rounds, None, None)
    barrier = mp.Barrier(writers)
    out: mp.Queue[list[float]] = mp.Queue()
    procs = [
        mp.Process(target=_fsyncer, args=(os.path.join(directory, f"w{i}"), rounds, barrier, out))
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    times = [t for _ in procs for t in out.get(timeout=300)]
    for p in procs:
        p.join(10)
    return times


def _ms(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.9)] * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="where the fsync files go (default: the temp directory)")
    args = parser.parse_args(argv)
    print(f"load average {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    rtt = _ms(zmq_rtt(args.rounds))
    print(f"zmq rtt   median {rtt[0]:.3f} ms  p90 {rtt[1]:.3f} ms")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="zraft-floor-") as directory:
        one = _ms(fsync_times(directory, args.rounds // 4, 1))
        print(f"fsync 1   median {one[0]:.3f} ms  p90 {one[1]:.3f} ms")
        three = _ms(fsync_times(directory, args.rounds // 4, 3))
        print(f"fsync 3   median {three[0]:.3f} ms  p90 {three[1]:.3f} ms")
    print(f"floor     2 x zmq rtt + fsync 3 = {2 * rtt[0] + three[0]:.3f} ms (medians)")


if __name__ == "__main__":
    main()
