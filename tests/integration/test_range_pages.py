"""Range reads in pages against a real 3-node cluster holding 200k keys: through cluster.Client and through
cluster-ctl, every key comes back exactly once, in order.

The keys and values together are well past the 16 MiB frame limit, so a single unpaged answer could not be
delivered at all (before paging, the client dropped it and the node recomputed it on every retry).
Timings are printed for the record, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from cluster import Client
from cluster.kv.machine import DEFAULT_RANGE_LIMIT, MAX_RANGE_LIMIT
from tests.integration.util import REPO_ROOT, Cluster, start_cluster, wait_for_leader
from transport.codec import MAX_FRAME_BYTES

pytestmark = pytest.mark.integration

KEYS = 200_000
PREFIX = "pg/"
VALUE = "v" * 80  # with its metadata about 150 bytes a key: 30 MB in all
IN_FLIGHT = 2_000  # puts in flight at once (the client sends up to its sequence window of them)
CTL = REPO_ROOT / "bin" / "cluster-ctl"


def key(i: int) -> str:
    return f"{PREFIX}{i:06d}"


@pytest.fixture(scope="module")
def loaded() -> Iterator[tuple[Cluster, Client]]:
    """A cluster holding KEYS keys under PREFIX (and a few around it that must not show)."""
    with start_cluster(3) as cluster:
        wait_for_leader(cluster)
        with Client([n.client_url for n in cluster.nodes], timeout=60.0) as client:
            started = time.monotonic()
            # Written in a scrambled order, so the listing's order is the store's doing.
            order = [(i * 7919) % KEYS for i in range(KEYS)]
            in_flight: deque[Future[int]] = deque()
            for i in order:
                in_flight.append(client.put_async(key(i), VALUE))
                if len(in_flight) >= IN_FLIGHT:
                    in_flight.popleft().result()
            for future in in_flight:
                future.result()
            for neighbour in ("pg", "pg.", "ph/0", "pf/9"):
                client.put(neighbour, "outside the prefix")
            print(f"\n{KEYS} puts in {time.monotonic() - started:.1f}s")
            yield cluster, client


def test_the_whole_prefix_could_not_be_one_answer() -> None:
    assert KEYS * (len(key(0)) + len(VALUE)) > MAX_FRAME_BYTES


def test_client_pages_through_every_key_once_in_order(loaded: tuple[Cluster, Client]) -> None:
    _, client = loaded
    first = client.range(PREFIX)
    assert len(first.kvs) == DEFAULT_RANGE_LIMIT and first.more
    assert [kv["key"] for kv in first.kvs] == [key(i) for i in range(DEFAULT_RANGE_LIMIT)]
    started = time.monotonic()
    entries = client.range_all(PREFIX, page_size=MAX_RANGE_LIMIT)
    keys = [kv["key"] for kv in entries]
    print(f"range_all: {len(keys)} keys in {entries.pages} pages, {time.monotonic() - started:.1f}s")
    assert keys == [key(i) for i in range(KEYS)]
    assert entries.pages == -(-KEYS // MAX_RANGE_LIMIT)
    assert entries.first_revision <= entries.last_revision
    serial = client.range_all(PREFIX, serializable=True)  # default pages, possibly from any node
    assert sum(1 for _ in serial) == KEYS and serial.pages == -(-KEYS // DEFAULT_RANGE_LIMIT)


def test_cluster_ctl_pages_through_every_key_once_in_order(loaded: tuple[Cluster, Client]) -> None:
    cluster, _ = loaded
    endpoints = ",".join(n.client_url for n in cluster.nodes)
    started = time.monotonic()
    listed = subprocess.run(
        [sys.executable, str(CTL), "--endpoints", endpoints, "--timeout", "20", "get", PREFIX, "--prefix"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    print(f"cluster-ctl get --prefix: {time.monotonic() - started:.1f}s")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0::2] == [key(i) for i in range(KEYS)]
    assert set(lines[1::2]) == {VALUE}
    # --limit across a page boundary, as JSON.
    limited = subprocess.run(
        [sys.executable, str(CTL), "--endpoints", endpoints, "-w", "json", "get", PREFIX, "--prefix"]
        + ["--limit", str(MAX_RANGE_LIMIT + 5)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert limited.returncode == 0, limited.stderr
    listing = json.loads(limited.stdout)
    assert listing["count"] == MAX_RANGE_LIMIT + 5
    assert [kv["key"] for kv in listing["kvs"]] == [key(i) for i in range(MAX_RANGE_LIMIT + 5)]
