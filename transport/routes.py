"""RouteTable: a bounded, least-recently-used map from a sender's name to how a reply reaches it.

A ROUTER socket can answer a sender only through the identity frame it arrived with. The runtime records
that route per sender name when a request comes in and looks it up when the answer goes out; the table
forgets the least recently used senders beyond its capacity, so many short-lived clients cannot grow it
without bound. Generic: the values are whatever the caller stores.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class RouteTable(Generic[V]):
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.evicted = 0
        self._routes: OrderedDict[str, V] = OrderedDict()

    def remember(self, sender: str, route: V) -> None:
        """Record (or refresh) the route to `sender`, evicting the least recently used beyond capacity."""
        routes = self._routes
        routes[sender] = route
        routes.move_to_end(sender)
        while len(routes) > self.capacity:
            routes.popitem(last=False)
            self.evicted += 1

    def lookup(self, sender: str) -> V | None:
        route = self._routes.get(sender)
        if route is not None:
            self._routes.move_to_end(sender)
        return route

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, sender: object) -> bool:
        return sender in self._routes
