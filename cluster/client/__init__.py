"""The embeddable client: `Client` (blocking and `*_async` calls), its I/O thread, command encoding and
result checking, discovery of the cluster's client URLs, and endpoint parsing."""

from cluster.client.api import Client

__all__ = ["Client"]
