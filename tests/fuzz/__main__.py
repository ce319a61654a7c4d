"""python -m tests.fuzz [--target T ...] [--cases N] [--seed S]: run the fuzz targets and report.

Each target runs N hypothesis cases (default 25,000); the report gives, per target, the cases run, how
they ended, the wall time and the process's peak RSS after it. A failing case stops the run with its
traceback and the hypothesis blob that replays it; the exit status is then 1.

    python -m tests.fuzz --cases 25000               # the soak: 4 targets x 25,000 = 100,000 cases
    python -m tests.fuzz --target node --cases 2000 --seed 7

Memory: hypothesis keeps what every case of a run drew (its data tree, so that it does not repeat itself),
about 16 KB per codec case and more per node case here, so one 25,000-case run grows by hundreds of MB
while the code under test holds nothing. A soak therefore runs in hypothesis runs of --chunk cases (each
with its own seed: --seed plus the cases before it), and its RSS stays flat; --progress shows it. The
node target's live node is made anew for each chunk; its own state stays bounded (see the end report).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from loguru import logger

from tests.fuzz.targets import TARGETS, Tally, run

CHUNK = 2000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--target", action="append", choices=TARGETS, help="repeatable; default: all")
    parser.add_argument("--cases", type=int, default=25_000, help="cases per target (default 25000)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomized)")
    parser.add_argument("--progress", action="store_true", help="print cases and RSS every 1000 cases")
    parser.add_argument(
        "--chunk",
        type=int,
        default=CHUNK,
        help=f"cases per hypothesis run (default {CHUNK}); see the module docstring",
    )
    args = parser.parse_args(argv)
    logger.remove()  # the live node logs every dropped frame; the report is what matters here
    logger.add(sys.stderr, level="ERROR")
    total = 0
    for target in args.target or TARGETS:
        started = time.monotonic()

        tally = Tally()
        while tally.cases < args.cases:
            done = tally.cases

            def progress(
                cases: int, target: str = target, started: float = started, done: int = done
            ) -> None:
                seconds = time.monotonic() - started
                print(f"{target}: {done + cases} cases, {seconds:.0f}s, RSS {_rss_mb():.0f} MB", flush=True)

            cases = min(args.chunk, args.cases - done)
            chunked = args.chunk < args.cases
            seed = (args.seed or 0) + done if chunked else args.seed  # each chunk its own examples
            try:
                part = run(target, cases, seed, progress=progress if args.progress else None)
            except Exception:  # noqa: BLE001 - hypothesis has printed the failing case
                print(f"{target}: FAILED (see the traceback and the reproduction blob above)", flush=True)
                raise
            tally.cases += part.cases
            for outcome, count in part.outcomes.items():
                tally.outcomes[outcome] = tally.outcomes.get(outcome, 0) + count
            tally.sizes = part.sizes
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
