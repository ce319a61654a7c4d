"""The configuration a node starts from: its --initial-cluster, or, joining a running cluster
(--initial-cluster-state existing --join URL,...), the members that cluster lists now.

A joining node asks the given client URLs for the cluster's status, and starts only if the cluster has
the same cluster id and already lists this node (added by `cluster-ctl member add NAME --peer-url URL`,
as a learner) with this node's peer URL. It then starts knowing those members; the leader sends it the
log (or a snapshot), whose configurations take over from there (actors/membership.py).
"""

from __future__ import annotations

from typing import Any

from actors.membership import Configuration, Member
from cluster.client.api import Client
from cluster.client.calls import members_view
from cluster.errors import ZraftError
from cluster.node.config import ConfigError, NodeConfig

JOIN_TIMEOUT = 10.0  # seconds to reach the running cluster at start
STATUS_TIMEOUT = 2.0  # the status round waits this long for members that do not answer (removed ones)


def initial_configuration(config: NodeConfig) -> Configuration:
    """The members of --initial-cluster, all voters; only this node's client URL is known."""
    return Configuration.of(
        [
            Member(name, url, config.client_url if name == config.name else "")
            for name, url in config.initial_cluster.items()
        ]
    )


def joined_configuration(config: NodeConfig, timeout: float = JOIN_TIMEOUT) -> Configuration:
    """The running cluster's members, checked against this node; ConfigError when it cannot join."""
    # TODO(security): this query is plaintext. On a CURVE cluster the client ports admit only CURVE
    # clients, so --join cannot reach it yet: it would need the node's own keypair (members' keys are
    # admitted on the client port) and the public key of the node behind each --join URL, which the peer
    # key file (by member name) does not give.
    try:
        with Client(list(config.join), timeout=timeout) as client:
            status = client.status(timeout=STATUS_TIMEOUT)
    except (ZraftError, ValueError) as exc:
        raise ConfigError(f"cannot reach the cluster to join at {','.join(config.join)}: {exc}") from None
    ids = {str(r.get("cluster_id")) for r in status.get("members") or () if r.get("reachable")}
    if ids != {config.cluster_id}:
        raise ConfigError(
            f"the cluster at {','.join(config.join)} has cluster id {', '.join(sorted(ids))}, not "
            f"{config.cluster_id} (--cluster-id)"
        )
    rows: list[dict[str, Any]] = members_view(status)
    members = [
        Member(
            str(r["name"]), str(r.get("peer_url", "")), str(r.get("client_url", "")), bool(r.get("learner"))
        )
        for r in rows
    ]
    me = next((m for m in members if m.name == config.name), None)
    if me is None:
        raise ConfigError(
            f"{config.name} is not a member of the cluster at {','.join(config.join)} (members "
            f"{', '.join(m.name for m in members)}): add it first with "
            f"cluster-ctl member add {config.name} --peer-url {config.peer_url} "
            f"--client-url {config.client_url}"
        )
    if me.peer_url != config.peer_url:
        raise ConfigError(
            f"the cluster lists {config.name} at peer URL {me.peer_url}, not {config.peer_url} (--peer-url): "
            f"cluster-ctl member update {config.name} --peer-url {config.peer_url}, or start it there"
        )
    return Configuration.of(members)
