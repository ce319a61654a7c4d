"""What Client and AsyncClient make of their constructor's arguments, in one place so the two cannot
differ: the checked endpoints and timeouts, the CURVE settings, this client's id and the ClientActor's
options."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from actors.client import ClientOptions
from actors.messages import NodeId
from cluster.client.calls import SEQ_WINDOW
from cluster.client.commands import SESSION_HOOKS
from cluster.client.curve import ClientCurve, ServerKeys, client_curve
from cluster.client.endpoints import parse_endpoints


@dataclass(frozen=True, slots=True)
class ClientSettings:
    urls: list[str]
    timeout: float
    client_id: NodeId
    options: ClientOptions
    curve: ClientCurve | None


def client_settings(
    endpoints: list[str] | str,
    timeout: float,
    attempt_timeout: float,
    curve_secret_key: str | bytes | None,
    server_public_key: ServerKeys | None,
) -> ClientSettings:
    """Check the constructor's arguments. Raises ValueError for a malformed endpoint, a non-positive
    timeout or unusable CURVE keys."""
    curve = client_curve(curve_secret_key, server_public_key)
    urls = parse_endpoints(endpoints if isinstance(endpoints, str) else ",".join(endpoints))
    if timeout <= 0 or attempt_timeout <= 0:
        raise ValueError("timeout and attempt_timeout must be positive")
    options = ClientOptions(
        attempt_timeout=min(attempt_timeout, timeout), max_seq_window=SEQ_WINDOW, sessions=SESSION_HOOKS
    )
    return ClientSettings(urls, timeout, f"cli-{secrets.token_hex(8)}", options, curve)
