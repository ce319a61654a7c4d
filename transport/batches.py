"""Splitting a turn's worth of outgoing client messages into batch frames that stay within limits.

A batch frame (transport/codec.py) may hold at most MAX_BATCH_ITEMS messages, and the receiver refuses a
frame beyond its byte limit; `batches` cuts a list into consecutive runs that respect both, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from transport.codec import MAX_BATCH_ITEMS

T = TypeVar("T")


def batches(items: Sequence[T], max_bytes: int, size_of: Callable[[T], int]) -> Iterator[Sequence[T]]:
    """Consecutive runs of `items`, each of at most MAX_BATCH_ITEMS items and `max_bytes` by `size_of`.

    An item bigger than `max_bytes` on its own makes a run of one: it still has to go.
    """
    if not items:
        return
    start = 0
    total = 0
    for i, item in enumerate(items):
        size = size_of(item)
        if i > start and (total + size > max_bytes or i - start >= MAX_BATCH_ITEMS):
            yield items[start:i]
            start, total = i, 0
        total += size
    yield items[start:]
