"""What a user runs or embeds: the node (node/, and `Node`, a node on a thread of the application), the KV
state machine (kv/), storage (storage/), the client (client/), the command-line tools (cli/) and the
benchmark (bench/). Public imports live here."""

from cluster.client import AsyncClient, Client
from cluster.errors import (
    AlreadyApplied,
    Busy,
    ClientClosed,
    HandshakeRefused,
    InvalidRequest,
    LeaseExpired,
    LeaseNotFound,
    NoAnswer,
    OutcomeUnknown,
    PermissionDenied,
    Rejected,
    SessionExpired,
    Unavailable,
    ZraftError,
)
from cluster.node.embedded import Node, NodeFailed

__all__ = [
    "AlreadyApplied",
    "AsyncClient",
    "Busy",
    "Client",
    "ClientClosed",
    "HandshakeRefused",
    "InvalidRequest",
    "LeaseExpired",
    "LeaseNotFound",
    "PermissionDenied",
    "NoAnswer",
    "Node",
    "NodeFailed",
    "OutcomeUnknown",
    "Rejected",
    "SessionExpired",
    "Unavailable",
    "ZraftError",
]
