"""The embeddable client: `Client` (blocking and `*_async` calls), its I/O thread, command encoding and
result checking, range pages, discovery of the cluster's client URLs, and endpoint parsing."""

from cluster.client.api import Client
from cluster.client.ranges import RangeIterator, RangePage

__all__ = ["Client", "RangeIterator", "RangePage"]
