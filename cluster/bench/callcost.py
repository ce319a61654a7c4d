"""What one blocking Client call costs the client process, thread by thread: CPU microseconds per call of
the calling thread, the client's I/O thread and ZeroMQ's own I/O thread (from /proc/self/task, Linux
only), and the wall time per call, for N calls made one after the other. Not a test; a measurement:

    python -m cluster.bench.callcost --endpoints tcp://127.0.0.1:7001,... [--calls 2000] [--op sget]

CPU time is less disturbed by other load on the machine than latency is, so alternating runs of two
versions of the client show a change in the client's own work even on a busy machine. The resolution is
one clock tick (usually 10 ms) over all the calls: 5 us per call at 2000 calls.
"""

from __future__ import annotations

import argparse
import os
import time

from cluster.client.api import Client
from cluster.client.endpoints import default_endpoints, parse_endpoints

VALUE = b"v" * 100


def thread_cpu() -> dict[tuple[str, str], float]:
    """(thread id, thread name) -> CPU seconds, for every thread of this process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[(tid, name)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", default="", help="comma-separated client URLs")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--op", choices=("put", "get", "sget"), default="sget", help="sget: serializable get")
    args = parser.parse_args(argv)
    endpoints = parse_endpoints(args.endpoints) if args.endpoints else default_endpoints()
    with Client(endpoints, timeout=10.0) as client:
        client.put("callcost/warm", VALUE)
        before = thread_cpu()
        started = time.perf_counter()
        for i in range(args.calls):
            key = f"callcost/{i % 100}"
            if args.op == "put":
                client.put(key, VALUE)
            else:
                client.get(key, serializable=args.op == "sget")
        wall = time.perf_counter() - started
        after = thread_cpu()
    main_id = str(os.getpid())
    print(f"load average {'/'.join(f'{x:.2f}' for x in os.getloadavg())}; {args.calls} x {args.op}")
    for (tid, name), cpu in sorted(after.items()):
        spent = cpu - before.get((tid, name), 0.0)
        if spent > 0:
            # Python does not name OS threads: the one left besides ZeroMQ's is the client's I/O thread
            role = "caller" if tid == main_id else name if name.startswith("ZMQ") else "client I/O"
            print(f"  {role:<16} {spent / args.calls * 1e6:6.0f} us CPU per call")
    print(f"  wall             {wall / args.calls * 1e6:6.0f} us per call")


if __name__ == "__main__":
    main()
