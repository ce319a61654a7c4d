"""A node's transport security: its CURVE keypair, the members' public keys, the admitted client keys.

With --curve-secret-key, --curve-peers and --curve-clients (cluster/node/config.py) both ports are CURVE
servers and the node's DEALERs are CURVE clients (transport/endpoints.py). Who may connect is decided by
the process's ZAP handler (transport/zap.py):

- peer port: exactly the members' public keys (the peer key file). A frame's sender is the member whose key
  its connection proved (the frame's User-Id), never the name it declares as its ZeroMQ identity: the
  runtime drops a frame whose declared name is not the member of its key (cluster/node/inbound.py).
- client port: the keys in the client directory, plus the members' own keys (an operator may use a node's
  key). The directory is re-read every RELOAD_INTERVAL seconds on the loop; a key whose file was removed
  can no longer connect, and frames still arriving on a connection it opened before are dropped too.

The peer key file maps a member name to a key. A member record of the configuration in force may carry
the member's key too (`cluster-ctl member add NAME ... --curve-public-key KEY`): `follow()` takes it, over
the file's, for the DEALER to that member and for admission on both ports, so adding a member to a running
secure cluster needs no edit of the others' peer key files and no restart. The original members (from
--initial-cluster) have no key in the configuration: theirs come from the file. A key learned this way
stays known for the life of the process (a removed member is still told the configuration that removed
it); the runtime's admission by name (NodeActor.accepted_senders) still decides whose frames count.

Without the three settings the node is open: it logs a warning once at start. Nothing here ever logs or
reports a secret key: status shows counts and public keys only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Final

import zmq

from actors.membership import Configuration
from cluster.node.config import ConfigError, NodeConfig
from transport.curve import (
    KeyFileError,
    KeyPair,
    is_key,
    key_text,
    parse_peer_keys,
    read_key_dir_checked,
    read_secret_key,
)
from transport.zap import CLIENT_DOMAIN, PEER_DOMAIN, Gatekeeper

RELOAD_INTERVAL: Final = 1.0  # seconds between two reads of the client key directory
OPEN_WARNING: Final = (
    "this cluster is OPEN: no --curve-secret-key, so the peer and client ports are plaintext and "
    "unauthenticated; anyone who can reach them can join as a member, read every key and write any "
    "(see the README's 'Securing a cluster')"
)

OPEN_ACCESS_WARNING: Final = (
    "no users are configured, so access is OPEN: every client the node admits may read and write every "
    "key (cluster-ctl user add; see the README's 'Securing a cluster')"
)


@dataclass
class NodeSecurity:
    pair: KeyPair | None = None
    member_keys: dict[str, bytes] = field(default_factory=dict)  # member name -> public key (Z85)
    clients_dir: str = ""
    client_keys: dict[bytes, str] = field(default_factory=dict)  # admitted client key -> its file's name
    gate: Gatekeeper | None = None
    startup_problems: list[str] = field(default_factory=list)  # logged once at start
    _member_of: dict[str, str] = field(default_factory=dict)  # User-Id (Z85 text) -> member name
    _admitted: frozenset[str] = frozenset()  # User-Ids admitted on the client port
    _next_reload: float = 0.0

    @property
    def secure(self) -> bool:
        return self.pair is not None

    @classmethod
    def load(cls, config: NodeConfig) -> NodeSecurity:
        """Read the key files the configuration names; ConfigError (naming a file, never a key)."""
        if not config.curve_secret_key:
            return cls()
        try:
            pair = read_secret_key(config.curve_secret_key)
            members = parse_peer_keys(config.curve_peers)
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None
        missing = [name for name in config.members if name not in members]
        if missing:
            raise ConfigError(
                f"peer key file {config.curve_peers} has no public key for member(s) {', '.join(missing)}"
            )
        if members.get(config.name) != pair.public:
            raise ConfigError(
                f"the public key of {config.curve_secret_key} is not the key {config.curve_peers} gives "
                f"for this node ({config.name})"
            )
        # Names that are not initial members stay: a member added later (cluster-ctl member add) is
        # connected to, and admitted, only with the key this file gives for it.
        unknown = sorted(set(members) - set(config.members))
        if len(set(members.values())) != len(members):
            raise ConfigError(f"peer key file {config.curve_peers} gives two members the same key")
        keys, problems = read_key_dir_checked(config.curve_clients)
        if problems and not keys and not os.path.isdir(config.curve_clients):
            raise ConfigError(problems[0])
        sec = cls(pair=pair, member_keys=members, clients_dir=config.curve_clients, client_keys=keys)
        sec._member_of = {key_text(k): name for name, k in members.items()}
        sec._admitted = sec._client_user_ids()
        sec.startup_problems = problems + [
            f"peer key file names {n}, which is not an initial member: its key is kept for when it is added"
            for n in unknown
        ]
        return sec

    def start(self, ctx: zmq.Context[Any]) -> None:
        """Start the ZAP handler (before any socket binds: without one, libzmq admits every key)."""
        if not self.secure:
            return
        self.gate = Gatekeeper(ctx)
        self.gate.start()
        self.gate.admit(PEER_DOMAIN, self.member_keys.values())
        self.gate.admit(CLIENT_DOMAIN, [*self.client_keys, *self.member_keys.values()])

    def follow(self, config: Configuration) -> list[str]:
        """Take the CURVE keys the configuration's member records carry; the names whose key is new (or
        changed), and now admitted on both ports. Keys that are not Z85 are skipped (said in the list as
        NAME: reason)."""
        if not self.secure:
            return []
        news: list[str] = []
        for member in config.members:
            key = member.curve_key
            if not key or self.member_keys.get(member.name) == key.encode("ascii", "replace"):
                continue
            if not is_key(key):
                news.append(f"{member.name}: not a Z85 CURVE key, ignored")
                continue
            self.member_keys[member.name] = key.encode("ascii")
            news.append(member.name)
        if news:
            self._member_of = {key_text(k): name for name, k in self.member_keys.items()}
            self._admitted = self._client_user_ids()
            if self.gate is not None:
                self.gate.admit(PEER_DOMAIN, self.member_keys.values())
                self.gate.admit(CLIENT_DOMAIN, [*self.client_keys, *self.member_keys.values()])
        return news

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.stop()
            self.gate = None

    def member_of(self, user_id: str) -> str | None:
        """The member whose public key a connection proved (its User-Id), or None."""
        return self._member_of.get(user_id)

    def client_admitted(self, user_id: str) -> bool:
        return user_id in self._admitted

    def reload(self, now: float) -> str | None:
        """Re-read the client key directory if it is time; a line to log when the admitted set changed."""
        if not self.secure or now < self._next_reload:
            return None
        self._next_reload = now + RELOAD_INTERVAL
        keys, problems = read_key_dir_checked(self.clients_dir)
        if keys == self.client_keys:
            return None
        added = len(set(keys) - set(self.client_keys))
        removed = len(set(self.client_keys) - set(keys))
        self.client_keys = keys
        self._admitted = self._client_user_ids()
        if self.gate is not None:
            self.gate.admit(CLIENT_DOMAIN, [*keys, *self.member_keys.values()])
        note = f"; skipped: {'; '.join(problems)}" if problems else ""
        return (
            f"client keys reloaded from {self.clients_dir}: {len(keys)} admitted "
            f"({added} added, {removed} removed){note}"
        )

    def describe(self) -> dict[str, Any]:
        """For status: whether CURVE is on and what is admitted (public facts only)."""
        if not self.secure:
            return {"curve": False}
        assert self.pair is not None
        return {
            "curve": True,
            "public_key": key_text(self.pair.public),
            "members": len(self.member_keys),
            "client_keys": len(self.client_keys),
        }

    def _client_user_ids(self) -> frozenset[str]:
        return frozenset(key_text(k) for k in [*self.client_keys, *self.member_keys.values()])
