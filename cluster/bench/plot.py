"""The PNG: for each workload, throughput against concurrency (one line per system and client mode; the
threads mode dashed) above the latency distribution (cumulative, from each row's log-bucketed histogram;
one line per system, client mode and concurrency).

Needs matplotlib (the `bench` extra); draw_png() returns None, without raising, when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cluster.bench.report import client_of
from cluster.bench.stats import cdf

LOG_SCALE_SPREAD = 30  # throughputs of one workload further apart than this get a log scale
COLORS = {"zraft": "tab:blue", "zraft-secure": "tab:purple", "etcd": "tab:orange", "pysyncobj": "tab:green"}


def draw_png(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        return None
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    series = list(dict.fromkeys((r["system"], client_of(r)) for r in rows))
    several_modes = len({client for _, client in series}) > 1
    concurrencies = sorted({r["concurrency"] for r in rows})
    fig, axes = plt.subplots(2, len(workloads), figsize=(4.2 * len(workloads), 8), squeeze=False)
    for col, workload in enumerate(workloads):
        top, bottom = axes[0][col], axes[1][col]
        for system, client in series:
            mine = sorted(
                (
                    r
                    for r in rows
                    if r["workload"] == workload and r["system"] == system and client_of(r) == client
                ),
                key=lambda r: r["concurrency"],
            )
            if not mine:
                continue
            color = COLORS.get(system)
            name = f"{system} {client}" if several_modes else system
            top.plot(
                [r["concurrency"] for r in mine],
                [r["ops_per_s"] for r in mine],
                "o-" if client == "async" else "s--",
                color=color,
                label=name,
            )
            for r in mine:
                points = cdf(r["histogram"])
                if not points:
                    continue
                shade = 0.35 + 0.65 * (concurrencies.index(r["concurrency"]) + 1) / len(concurrencies)
                bottom.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    color=color,
                    alpha=shade,
                    linewidth=1.2,
                    linestyle="-" if client == "async" else "--",
                    label=f"{name} c={r['concurrency']}",
                )
        top.set_title(workload)
        top.set_xscale("log", base=2)
        top.set_xticks(concurrencies, [str(c) for c in concurrencies])
        top.set_xlabel("concurrency (requests in flight)")
        top.set_ylabel("ops/s")
        rates = [r["ops_per_s"] for r in rows if r["workload"] == workload and r["ops_per_s"] > 0]
        if rates and max(rates) > LOG_SCALE_SPREAD * min(rates):
            top.set_yscale("log")  # e.g. an in-process read next to networked ones
        else:
            top.set_ylim(bottom=0)
        top.grid(True, alpha=0.3)
        top.legend(fontsize=8)
        bottom.set_xscale("log")
        bottom.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        bottom.xaxis.set_minor_formatter(NullFormatter())
        bottom.set_xlabel("latency (ms)")
        bottom.set_ylabel("fraction of operations at or below")
        bottom.set_ylim(0, 1.01)
        bottom.grid(True, alpha=0.3)
        bottom.legend(fontsize=6, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
