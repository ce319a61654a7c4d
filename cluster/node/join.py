"""The configuration a node starts from: its --initial-cluster, or, joining a running cluster
(--initial-cluster-state existing --join URL,...), the members that cluster lists now.

A joining node asks the given client URLs for the cluster's status, and starts only if the cluster has
the same cluster id and already lists this node (added by `cluster-ctl member add NAME --peer-url URL`,
as a learner) with this node's peer URL. It then starts knowing those members; the leader sends it the
log (or a snapshot), whose configurations take over from there (actors/membership.py).

On a CURVE cluster the query is a CURVE client session made with this node's own keypair (the members
admit a member's key on their client ports once `member add ... --curve-public-key` has committed it),
and each --join item is URL=KEY (or URL=FILE.key): the public key of the node behind that URL. The
cluster must list this node with this node's public key.
"""

from __future__ import annotations

from typing import Any

from actors.membership import CURVE_KEY_FIELD, Configuration, Member
from cluster.client.api import Client
from cluster.client.calls import members_view
from cluster.errors import ZraftError
from cluster.node.config import ConfigError, NodeConfig
from transport.curve import KeyFileError, is_key, read_public_key, read_secret_key

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
    where = ",".join(config.join_urls)
    server_keys = _server_keys(config)
    secret = config.curve_secret_key if server_keys else None
    try:
        with Client(
            list(config.join_urls),
            timeout=timeout,
            curve_secret_key=secret,
            server_public_key=server_keys or None,
        ) as client:
            status = client.status(timeout=STATUS_TIMEOUT)
    except (ZraftError, ValueError) as exc:
        raise ConfigError(f"cannot reach the cluster to join at {where}: {exc}") from None
    ids = {str(r.get("cluster_id")) for r in status.get("members") or () if r.get("reachable")}
    if ids != {config.cluster_id}:
        raise ConfigError(
            f"the cluster at {where} has cluster id {', '.join(sorted(ids))}, not "
            f"{config.cluster_id} (--cluster-id)"
        )
    rows: list[dict[str, Any]] = members_view(status)
    members = [
        Member(
            str(r["name"]), str(r.get("peer_url", "")), str(r.get("client_url", "")), bool(r.get("learner"))
        ).with_curve_key(str(r.get(CURVE_KEY_FIELD) or ""))
        for r in rows
    ]
    me = next((m for m in members if m.name == config.name), None)
    if me is None:
        raise ConfigError(
            f"{config.name} is not a member of the cluster at {where} (members "
            f"{', '.join(m.name for m in members)}): add it first with "
            f"cluster-ctl member add {config.name} --peer-url {config.peer_url} "
            f"--client-url {config.client_url}"
        )
    if me.peer_url != config.peer_url:
        raise ConfigError(
            f"the cluster lists {config.name} at peer URL {me.peer_url}, not {config.peer_url} (--peer-url): "
            f"cluster-ctl member update {config.name} --peer-url {config.peer_url}, or start it there"
        )
    mine = read_secret_key(config.curve_secret_key).public.decode("ascii") if server_keys else ""
    if me.curve_key and me.curve_key != mine:  # no key listed: the members' peer key files must have it
        raise ConfigError(
            f"the cluster lists {config.name} with another CURVE public key than this node's: cluster-ctl "
            f"member update {config.name} --peer-url {config.peer_url} --curve-public-key KEY (its .key file)"
        )
    return Configuration.of(members)


def _server_keys(config: NodeConfig) -> dict[str, bytes]:
    """URL -> the public key of the node behind it, from --join URL=KEY items; {} without CURVE."""
    given = dict(item.split("=", 1) for item in config.join if "=" in item)
    if not config.curve_secret_key:
        if given:
            raise ConfigError("--join URL=KEY gives a CURVE key, but this node has no --curve-secret-key")
        return {}
    missing = [url for url in config.join_urls if url not in given]
    if missing:
        raise ConfigError(
            "with CURVE every --join item is URL=KEY (or URL=FILE.key), the public key of the node behind "
            f"it; none for {', '.join(missing)}"
        )
    try:
        return {url: _public(value) for url, value in given.items()}
    except KeyFileError as exc:
        raise ConfigError(f"--join: {exc}") from None


def _public(value: str) -> bytes:
    return value.encode("ascii") if is_key(value) else read_public_key(value)
