"""What platforms use: a registry of servers and processes with heartbeats and liveness, and cluster events,
built on the KV's leases and watches through a Client (cluster/service/service.py: ClusterService), or
for asyncio through an AsyncClient (cluster/service/aio.py: AsyncClusterService).
The layout of the keys and records is in cluster/service/records.py."""

from cluster.service.aio import AsyncClusterService, AsyncRegistryChanges
from cluster.service.events import Delivery, Event, EventResult
from cluster.service.records import OFFLINE, ONLINE, PROCESS, SERVER
from cluster.service.registrant import RecordNotFound, TakenOver
from cluster.service.service import ClusterService, NotConfirmed, RegistryChanges
from cluster.service.writes import QueueFull, ServiceClosed

__all__ = [
    "OFFLINE",
    "ONLINE",
    "PROCESS",
    "SERVER",
    "AsyncClusterService",
    "AsyncRegistryChanges",
    "ClusterService",
    "Delivery",
    "Event",
    "EventResult",
    "NotConfirmed",
    "QueueFull",
    "RecordNotFound",
    "RegistryChanges",
    "ServiceClosed",
    "TakenOver",
]
