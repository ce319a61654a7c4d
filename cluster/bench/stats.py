"""Latency statistics: nearest-rank percentiles and a log-bucketed histogram for the distribution plot.

Samples are latencies in seconds; everything reported is in milliseconds.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

HIST_LOW = 1e-6  # 1 microsecond: the first bucket edge (an in-process dict read takes about that)
HIST_DECADES = 8  # up to 100 s
HIST_PER_DECADE = 20


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """The nearest-rank p-th percentile (0 < p <= 100) of ascending samples: the smallest sample with at
    least p% of the samples at or below it. NaN for no samples."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p}")
    n = len(sorted_samples)
    if n == 0:
        return math.nan
    rank = math.ceil(p / 100 * n - 1e-9)  # tolerate float noise: 99.9/100*1000 is 999.0000000000001
    return float(sorted_samples[min(max(rank, 1), n) - 1])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Milliseconds; NaN when there were no samples."""

    count: int
    mean: float
    p50: float
    p99: float
    p999: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in asdict(self).items()}


def _json_number(value: float | int) -> float | int | None:
    """JSON has no NaN: None for "no samples"; floats rounded to 4 decimals."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def summarize(samples: Sequence[float], *, is_sorted: bool = False) -> LatencySummary:
    """Count, mean, p50, p99, p99.9 and max of latencies given in seconds, reported in milliseconds."""
    ordered = samples if is_sorted else sorted(samples)
    n = len(ordered)
    if n == 0:
        return LatencySummary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    ms = 1000.0
    return LatencySummary(
        count=n,
        mean=math.fsum(ordered) / n * ms,
        p50=percentile(ordered, 50) * ms,
        p99=percentile(ordered, 99) * ms,
        p999=percentile(ordered, 99.9) * ms,
        max=ordered[-1] * ms,
    )


def bucket_edges() -> list[float]:
    """Histogram bucket edges in seconds: HIST_PER_DECADE log-spaced buckets per decade from HIST_LOW."""
    return [HIST_LOW * 10 ** (i / HIST_PER_DECADE) for i in range(HIST_DECADES * HIST_PER_DECADE + 1)]


def histogram(sorted_samples: Sequence[float]) -> list[int]:
    """Counts per bucket [edge i, edge i+1) of bucket_edges() for ascending samples (seconds); samples
    below the first edge count in the first bucket, samples at or above the last edge in the last."""
    edges = bucket_edges()
    below = [bisect_left(sorted_samples, edge) for edge in edges[1:-1]]
    cumulative = [0, *below, len(sorted_samples)]
    return [cumulative[i + 1] - cumulative[i] for i in range(len(edges) - 1)]


def cdf(counts: Sequence[int]) -> list[tuple[float, float]]:
    """(latency ms at a bucket's upper edge, fraction of samples at or below it) for non-empty buckets."""
    total = sum(counts)
    if total == 0:
        return []
    edges = bucket_edges()
    points = []
    seen = 0
    for i, c in enumerate(counts):
        if c:
            seen += c
            points.append((edges[i + 1] * 1000.0, seen / total))
    return points
