"""The embeddable client: `Client` (blocking and `*_async` calls), `AsyncClient` (asyncio), their shared
driver core, the I/O thread, command encoding and result checking, range pages, discovery of the cluster's
client URLs, and endpoint parsing."""

from cluster.client.aio import AsyncClient
from cluster.client.api import Client
from cluster.client.ranges import AsyncRangeIterator, RangeIterator, RangePage

__all__ = ["AsyncClient", "AsyncRangeIterator", "Client", "RangeIterator", "RangePage"]
