"""What a user runs or embeds: config, the KV state machine, storage, node assembly, client, CLI mains."""

from cluster.client import Client
from cluster.errors import (
    ClientClosed,
    InvalidRequest,
    NoAnswer,
    OutcomeUnknown,
    Rejected,
    Unavailable,
    ZraftError,
)

__all__ = [
    "Client",
    "ClientClosed",
    "InvalidRequest",
    "NoAnswer",
    "OutcomeUnknown",
    "Rejected",
    "Unavailable",
    "ZraftError",
]
