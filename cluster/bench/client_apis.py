"""A quick comparison of the two client APIs on one cluster: put throughput of AsyncClient (N awaiting tasks
in one event loop) against Client's *_async futures (N slots, each completion starting the next put from
its callback, as cluster-bench's zraft driver does). Both keep exactly N puts in flight; rounds alternate.

    python -m cluster.bench.client_apis --endpoints tcp://127.0.0.1:7001,... --concurrency 64 --seconds 5

Without --endpoints it uses $ZRAFT_ENDPOINTS or a default cluster-local cluster. It prints puts per second
of each round and the median per API; it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from concurrent.futures import Future

from cluster.client.aio import AsyncClient
from cluster.client.api import Client
from cluster.client.endpoints import default_endpoints, parse_endpoints


def futures_round(client: Client, concurrency: int, seconds: float, tag: str) -> float:
    """Puts per second with `concurrency` puts always in flight through put_async callbacks."""
    lock = threading.Lock()
    finished = threading.Event()
    done = 0
    open_slots = concurrency
    errors: list[BaseException] = []
    stop_at = time.monotonic() + seconds

    def issue(slot: int, n: int) -> None:
        fut = client.put_async(f"bench-apis/{tag}/{slot}/{n % 100}", n)
        fut.add_done_callback(lambda f: settle(f, slot, n))

    def settle(fut: Future[int], slot: int, n: int) -> None:
        nonlocal done, open_slots
        with lock:
            if fut.exception() is not None:
                errors.append(fut.exception())  # type: ignore[arg-type]
            else:
                done += 1
            if time.monotonic() < stop_at and not errors:
                issue(slot, n + 1)
                return
            open_slots -= 1
            if open_slots == 0:
                finished.set()

    started = time.monotonic()
    for slot in range(concurrency):
        issue(slot, 0)
    if not finished.wait(seconds + 30.0):
        raise TimeoutError("the futures round did not finish")
    if errors:
        raise errors[0]
    return done / (time.monotonic() - started)


async def async_round(client: AsyncClient, concurrency: int, seconds: float, tag: str) -> float:
    """Puts per second with `concurrency` tasks each awaiting one put after another."""
    stop_at = time.monotonic() + seconds
    counts = [0] * concurrency

    async def slot(index: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            await client.put(f"bench-apis/{tag}/{index}/{n % 100}", n)
            n += 1
        counts[index] = n

    started = time.monotonic()
    await asyncio.gather(*(slot(i) for i in range(concurrency)))
    return sum(counts) / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", default="", help="comma-separated client URLs")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per API, alternating")
    args = parser.parse_args(argv)
    endpoints = parse_endpoints(args.endpoints) if args.endpoints else default_endpoints()
    results: dict[str, list[float]] = {"futures": [], "asyncclient": []}

    async def run_async(round_no: int) -> float:
        async with AsyncClient(endpoints, timeout=10.0) as client:
            await client.put("bench-apis/warm", 0)
            return await async_round(client, args.concurrency, args.seconds, f"a{round_no}")

    for round_no in range(args.rounds):
        with Client(endpoints, timeout=10.0) as blocking:
            blocking.put("bench-apis/warm", 0)
            rate = futures_round(blocking, args.concurrency, args.seconds, f"f{round_no}")
        results["futures"].append(rate)
        print(f"round {round_no + 1}: futures      {rate:8.0f} puts/s", flush=True)
        rate = asyncio.run(run_async(round_no))
        results["asyncclient"].append(rate)
        print(f"round {round_no + 1}: AsyncClient  {rate:8.0f} puts/s", flush=True)
    for api, rates in results.items():
        print(f"median {api:<12} {statistics.median(rates):8.0f} puts/s at concurrency {args.concurrency}")


if __name__ == "__main__":
    main()
