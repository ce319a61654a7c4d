"""python -m tests.fuzz [--target T ...] [--cases N] [--seed S]: run the fuzz targets and report.

Each target runs N hypothesis cases (default 25,000); the report gives, per target, the cases run, how
they ended, the wall time and the process's peak RSS after it. A failing case stops the run with its
traceback and the hypothesis blob that replays it; the exit status is then 1.

    python -m tests.fuzz --cases 25000               # the soak: 4 targets x 25,000 = 100,000 cases
    python -m tests.fuzz --target node --cases 2000 --seed 7
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from loguru import logger

from tests.fuzz.targets import TARGETS, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--target", action="append", choices=TARGETS, help="repeatable; default: all")
    parser.add_argument("--cases", type=int, default=25_000, help="cases per target (default 25000)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomized)")
    parser.add_argument("--progress", action="store_true", help="print cases and RSS every 1000 cases")
    args = parser.parse_args(argv)
    logger.remove()  # the live node logs every dropped frame; the report is what matters here
    logger.add(sys.stderr, level="ERROR")
    total = 0
    for target in args.target or TARGETS:
        started = time.monotonic()

        def progress(cases: int, target: str = target, started: float = started) -> None:
            print(
                f"{target}: {cases} cases, {time.monotonic() - started:.0f}s, RSS {_rss_mb():.0f} MB",
                flush=True,
            )

        try:
            tally = run(target, args.cases, args.seed, progress=progress if args.progress else None)
        except Exception:  # noqa: BLE001 - hypothesis has printed the failing case
            print(f"{target}: FAILED (see the traceback and the reproduction blob above)", flush=True)
            raise
        seconds = time.monotonic() - started
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(tally.outcomes.items()))
        print(
            f"{target}: {tally.cases} cases in {seconds:.1f}s ({outcomes}); peak RSS {rss_mb:.0f} MB",
            flush=True,
        )
        if tally.sizes:
            print(f"{target}: the node holds at the end: {tally.sizes}", flush=True)
        total += tally.cases
    print(f"total: {total} cases, no failure")
    return 0


def _rss_mb() -> float:
    """The process's resident set now (not the peak), from /proc where there is one."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    sys.exit(main())
