"""Cluster configurations: who the members are, which of them vote, and the one-at-a-time changes.

A Configuration is the whole member list in force (dissertation chapter 4, single-server changes): each
member has a stable name, its peer and client URLs, and a learner flag (a learner receives the log but
never votes, campaigns or counts toward a majority). A change adds a learner, promotes a learner to voter,
removes a member, or updates a member's URLs; it changes the voters by at most one, which is what keeps
any majority of the old voters overlapping any majority of the new ones.

Configurations travel inside CONFIG log entries and snapshot metas as UTF-8 JSON (no msgpack here: the
actors know no wire encoding, and this text is read only by the actors and the runtime). Member records
keep fields they do not know (`extra`), so later additions (a public key per member) ride along unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Final

from actors.messages import NodeId

MAX_NAME_CHARS: Final = 256
MAX_URL_CHARS: Final = 512
MAX_MEMBERS: Final = 1024
MAX_CONFIG_BYTES: Final = 1 << 20
_KNOWN_FIELDS: Final = frozenset({"name", "peer_url", "client_url", "learner"})
CURVE_KEY_FIELD: Final = "curve_public_key"  # a member's CURVE public key (Z85 text), kept in `extra`
MAX_KEY_CHARS: Final = 64


class ChangeError(ValueError):
    """A membership change that cannot apply to the configuration (unknown member, a repeat, ...)."""


@dataclass(frozen=True, slots=True)
class Member:
    name: NodeId
    peer_url: str = ""
    client_url: str = ""
    learner: bool = False
    extra: tuple[tuple[str, Any], ...] = ()  # fields of later versions, kept as they came (sorted by key)

    @property
    def curve_key(self) -> str:
        """The member's CURVE public key (Z85 text) if its record carries one, else ""."""
        value = dict(self.extra).get(CURVE_KEY_FIELD, "")
        return value if isinstance(value, str) else ""

    def with_curve_key(self, key: str) -> Member:
        """This record with `key` as its CURVE key; "" keeps the one it has."""
        if not key:
            return self
        extra = dict(self.extra)
        extra[CURVE_KEY_FIELD] = key
        return replace(self, extra=tuple(sorted(extra.items())))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(name=self.name, peer_url=self.peer_url, client_url=self.client_url, learner=self.learner)
        return out


@dataclass(frozen=True, slots=True)
class Configuration:
    members: tuple[Member, ...] = field(default=())  # sorted by name

    @classmethod
    def of(cls, members: list[Member] | tuple[Member, ...]) -> Configuration:
        ordered = tuple(sorted(members, key=lambda m: m.name))
        names = [m.name for m in ordered]
        if len(set(names)) != len(names):
            raise ValueError(f"member names repeat: {names}")
        return cls(ordered)

    @classmethod
    def voters_only(cls, names: tuple[NodeId, ...] | list[NodeId]) -> Configuration:
        """A configuration known only by its voters' names (a bootstrap or an old snapshot)."""
        return cls.of([Member(name) for name in names])

    @property
    def names(self) -> tuple[NodeId, ...]:
        return tuple(m.name for m in self.members)

    @property
    def voters(self) -> tuple[NodeId, ...]:
        return tuple(m.name for m in self.members if not m.learner)

    @property
    def learners(self) -> tuple[NodeId, ...]:
        return tuple(m.name for m in self.members if m.learner)

    def get(self, name: NodeId) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None

    def is_voter(self, name: NodeId) -> bool:
        m = self.get(name)
        return m is not None and not m.learner

    def encode(self) -> bytes:
        return json.dumps(
            {"v": 1, "members": [m.as_dict() for m in self.members]}, sort_keys=True, separators=(",", ":")
        ).encode()


def decode_configuration(data: bytes) -> Configuration:
    """The configuration in `data`; ValueError when it is not one (DESIGN.md rule 7: never trust bytes)."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"configuration of {len(data)} bytes exceeds {MAX_CONFIG_BYTES}")
    try:
        obj = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"configuration is not JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("v") != 1 or not isinstance(obj.get("members"), list):
        raise ValueError("configuration lacks version 1 and a member list")
    raw_members = obj["members"]
    if not 0 < len(raw_members) <= MAX_MEMBERS:
        raise ValueError(f"configuration has {len(raw_members)} members (1..{MAX_MEMBERS})")
    members = [_member_from(raw) for raw in raw_members]
    if not any(not m.learner for m in members):
        raise ValueError("configuration has no voter")
    config = Configuration.of(members)
    if config.members != tuple(members):
        raise ValueError("configuration members are not sorted by name")
    return config


def _member_from(raw: Any) -> Member:
    if not isinstance(raw, dict):
        raise ValueError("a member record is not an object")
    name, peer_url, client_url, learner = (raw.get(k) for k in ("name", "peer_url", "client_url", "learner"))
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    for what, url in (("peer_url", peer_url), ("client_url", client_url)):
        if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
            raise ValueError(f"member {name!r}: {what} is not a string of at most {MAX_URL_CHARS} chars")
    if not isinstance(learner, bool):
        raise ValueError(f"member {name!r}: learner is not a boolean")
    extra = tuple(sorted((k, v) for k, v in raw.items() if k not in _KNOWN_FIELDS))
    return Member(str(name), str(peer_url), str(client_url), learner, extra)


def name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS or not name.isprintable():
        return f"member name {str(name)[:64]!r} is not a printable string of 1..{MAX_NAME_CHARS} chars"
    return None


# --- changes ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One membership change, as an operator asks for it."""

    op: str  # "add" (always as a learner), "promote", "remove", "update"
    name: NodeId
    peer_url: str = ""
    client_url: str = ""  # for update: "" keeps the current one
    curve_key: str = ""  # the member's CURVE public key (Z85 text); for update: "" keeps the current one

    def describe(self) -> str:
        return f"{self.op} {self.name}"


CHANGE_OPS: Final = ("add", "promote", "remove", "update")


def apply_change(config: Configuration, change: ConfigChange) -> Configuration:
    """The configuration after `change`; ChangeError when it does not apply. Never changes the voters by
    more than one (a learner is added, one learner becomes a voter, or one member leaves)."""
    problem = name_problem(change.name)
    if problem:
        raise ChangeError(problem)
    if change.op not in CHANGE_OPS:
        raise ChangeError(f"unknown membership change {change.op!r} (one of {', '.join(CHANGE_OPS)})")
    current = config.get(change.name)
    others = [m for m in config.members if m.name != change.name]
    if len(change.curve_key) > MAX_KEY_CHARS or not change.curve_key.isprintable():
        raise ChangeError(
            f"the CURVE key of {change.name} is not a printable string of at most {MAX_KEY_CHARS}"
        )
    if change.curve_key and any(m.curve_key == change.curve_key for m in others):
        raise ChangeError("that CURVE key belongs to another member")
    if change.op == "add":
        if current is not None:
            raise ChangeError(f"{change.name} is already a member")
        if not change.peer_url:
            raise ChangeError(f"adding {change.name} needs its peer URL")
        if any(m.peer_url == change.peer_url for m in others if m.peer_url):
            raise ChangeError(f"peer URL {change.peer_url} belongs to another member")
        added = Member(change.name, change.peer_url, change.client_url, True)
        return Configuration.of([*others, added.with_curve_key(change.curve_key)])
    if current is None:
        raise ChangeError(f"{change.name} is not a member")
    if change.op == "promote":
        if not current.learner:
            raise ChangeError(f"{change.name} is already a voter")
        return Configuration.of([*others, replace(current, learner=False)])
    if change.op == "remove":
        if not any(not m.learner for m in others):
            raise ChangeError(f"{change.name} is the last voter")
        return Configuration.of(others)
    if not change.peer_url:  # "update"
        raise ChangeError(f"updating {change.name} needs a peer URL")
    if any(m.peer_url == change.peer_url for m in others if m.peer_url):
        raise ChangeError(f"peer URL {change.peer_url} belongs to another member")
    client_url = change.client_url or current.client_url
    moved = replace(current, peer_url=change.peer_url, client_url=client_url)
    return Configuration.of([*others, moved.with_curve_key(change.curve_key)])


def already_done(config: Configuration, change: ConfigChange) -> bool:
    """Whether `config` already is what `change` asks for (a retried request whose first attempt took
    effect): add finds the learner or member with that peer URL, promote a voter, remove no such member,
    update the same URLs."""
    current = config.get(change.name)
    if change.op == "remove":
        return current is None
    if current is None:
        return False
    same_key = change.curve_key in ("", current.curve_key)
    if change.op == "add":
        return current.peer_url == change.peer_url and same_key
    if change.op == "promote":
        return not current.learner
    if change.op == "update":
        return (
            current.peer_url == change.peer_url and change.client_url in ("", current.client_url) and same_key
        )
    return False


def voter_difference(a: Configuration, b: Configuration) -> int:
    """How many voters one configuration has that the other lacks, both ways summed."""
    return len(set(a.voters) ^ set(b.voters))
