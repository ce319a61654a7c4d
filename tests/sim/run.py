"""Run the deterministic simulator from the command line: replay one seed or soak thousands.

    python -m tests.sim.run --seed 1234                 # replay exactly one seed (its CI profile)
    python -m tests.sim.run --seeds 5000 --start 100000  # soak: seeds 100000..104999
    python -m tests.sim.run --seeds 200 --profile harsh5 --jobs 2

Every failure prints its one-line replay command. Exit status 1 when any seed failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from tests.sim.harness import SimFailure, SimOptions, SimReport, run_seed


def _options(seed: int, profile: str, nodes: int | None, clients: int | None) -> SimOptions:
    opts = SimOptions.named(profile) if profile else SimOptions.for_seed(seed)
    if nodes is not None:
        opts.nodes, opts.profile = nodes, ""
    if clients is not None:
        opts.clients, opts.profile = clients, ""
    return opts


def _one(args: tuple[int, str, int | None, int | None]) -> tuple[int, SimReport | None, str]:
    seed, profile, nodes, clients = args
    try:
        return seed, run_seed(seed, _options(seed, profile, nodes, clients)), ""
    except SimFailure as exc:
        return seed, None, str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.run", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="run just this seed")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--profile", default="", help="default3 or harsh5 (default: chosen per seed)")
    parser.add_argument("--nodes", type=int, help="override the cluster size")
    parser.add_argument("--clients", type=int, help="override the number of clients")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    work = [(s, args.profile, args.nodes, args.clients) for s in seeds]
    started = time.monotonic()
    failed = events = ops = 0
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(_one, work, chunksize=8))
    else:
        results = [_one(w) for w in work]
    for _seed, report, error in results:
        if report is None:
            failed += 1
            print(f"FAIL {error}")
        else:
            events += report.events
            ops += report.operations
            if args.seed is not None:
                print(report)
    elapsed = time.monotonic() - started
    print(
        f"{len(seeds) - failed} passed, {failed} failed: {len(seeds)} seeds, {events} simulated events, "
        f"{ops} client operations checked, {elapsed:.1f}s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
