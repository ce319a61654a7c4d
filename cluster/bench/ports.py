"""Free loopback ports for the clusters the benchmark starts.

A cluster needs a block of ports at fixed offsets from a base (zraft: base+i for clients, base+100+i for
peers, like cluster-local). The base is drawn below Linux's ephemeral range (32768-60999) so connections
opened meanwhile by anything on the machine do not take the ports between the check and the bind.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from cluster.cli.local_nodes import port_in_use

LOW_PORT = 20_000
HIGH_PORT = 32_000
HOST = "127.0.0.1"


def pick_base_port(
    offsets: Sequence[int],
    rng: random.Random | None = None,
    in_use: Callable[[str, int], bool] = port_in_use,
    attempts: int = 200,
) -> int:
    """A base port B such that every B+offset is free now; RuntimeError when none is found."""
    draw = rng or random.Random()
    top = HIGH_PORT - max(offsets)
    for _ in range(attempts):
        base = draw.randrange(LOW_PORT, top)
        if not any(in_use(HOST, base + o) for o in offsets):
            return base
    raise RuntimeError(f"no free block of {len(offsets)} ports found between {LOW_PORT} and {HIGH_PORT}")
