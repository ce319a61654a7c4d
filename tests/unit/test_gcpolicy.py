"""cluster/node/gcpolicy.py: the survivors of a full collection are frozen, and the freezer reports it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from cluster.node.gcpolicy import FullCollectionFreezer


@pytest.fixture
def freezer() -> Iterator[FullCollectionFreezer]:
    policy = FullCollectionFreezer()
    policy.install()
    try:
        yield policy
    finally:
        policy.uninstall()
        gc.unfreeze()  # give this test process its collector back as it was


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def make_cycle() -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a


def test_a_full_collection_freezes_its_survivors_and_is_reported(freezer: FullCollectionFreezer) -> None:
    kept = [Node() for _ in range(100)]
    make_cycle()
    gc.collect(1)  # not a full collection: nothing frozen
    assert freezer.full_collections == 0 and gc.get_freeze_count() == 0
    make_cycle()
    gc.collect()
    report = freezer.describe()
    assert report["full_collections"] == 1
    assert report["cyclic_garbage"] >= 2  # the second cycle (the first went with the young collection)
    assert report["frozen_objects"] >= len(kept)
    assert 0 <= report["last_full_ms"] <= report["max_full_ms"]
    assert all(gc.is_tracked(n) for n in kept)


def test_after_uninstall_a_full_collection_freezes_nothing(freezer: FullCollectionFreezer) -> None:
    freezer.uninstall()
    gc.collect()
    assert freezer.full_collections == 0 and gc.get_freeze_count() == 0
