"""Per-prefix permissions: users (by CURVE public key) with read and write rights on key prefixes.

The table is replicated through the log as ordinary keys, one per user, so it is in every snapshot and
every node enforces the same rules:

    __zraft/users/NAME = {"key": Z85 public key, "read": [prefix, ...], "write": [prefix, ...]}

A right on prefix P covers every key starting with P ("" = every key); a range or a watch of a prefix
needs a right on a prefix of it. Who is asking is the public key the client's CURVE connection proved (the
"principal": cluster/node/runtime.py passes it), never anything the request says.

Rules, checked by the KV service for requests from the client port (a member's own writes come in on the
peer port and are not checked here) of a node with CURVE (without it no client proves a key, so nothing
is checked and the node's start-up warning says the cluster is open):
- no users at all: everything is open, as without permissions (the node's start-up warning says so);
- otherwise a key that is no user's gets nothing, a user gets what its prefixes allow; a write right
  implies nothing about reading, and the reverse;
- `__zraft/` stays writable by nodes only, except the user records themselves, which an administrator
  writes: a member's key, a user with the write prefix "" (all keys), or anyone while no user exists
  (so the first user added should be such an administrator, or the operator uses a member's key);
- lease grants and revokes need some write right, lease queries some right; STATUS needs none.

A refused request gets {"ok": False, "code": "permission_denied"} (the client's PermissionDenied) and
writes nothing. This module is pure: no clock, no I/O, no sockets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from actors.contracts import StateMachine
from cluster.kv.ops import MAX_RANGE_LIMIT, Invalid, decode_result, encode_query, parse_query

USERS_PREFIX: Final = "__zraft/users/"
RESERVED_PREFIX: Final = "__zraft/"
PERMISSION_DENIED_CODE: Final = "permission_denied"
MAX_PREFIXES: Final = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_Z85_KEY = re.compile(r"[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
# Writes that name no key, and what a refusal calls them: any write right allows them.
_KEYLESS_WRITES: Final = {"lease_grant": "leases", "lease_revoke": "leases", "session_open": "sessions"}


@dataclass(frozen=True, slots=True)
class User:
    name: str
    key: str  # Z85 public key
    read: tuple[str, ...]
    write: tuple[str, ...]


def user_record(key: str, read: Sequence[str], write: Sequence[str]) -> dict[str, Any]:
    """The value stored under USERS_PREFIX + name (checked as check_user_record does)."""
    return {"key": key, "read": list(read), "write": list(write)}


def check_user_record(name: str, value: Any) -> str | None:
    """Why `value` cannot be the record of user `name`, or None when it can."""
    if not _NAME.fullmatch(name):
        return "a user name is 1-128 letters, digits, '_', '.', '@' or '-', starting with a letter or digit"
    if type(value) is not dict or set(value) != {"key", "read", "write"}:
        return "a user record is a map of key, read and write"
    if type(value["key"]) is not str or not _Z85_KEY.fullmatch(value["key"]):
        return "a user's key is a 40-character Z85 CURVE public key"
    for field in ("read", "write"):
        prefixes = value[field]
        if (
            type(prefixes) is not list
            or len(prefixes) > MAX_PREFIXES
            or any(type(p) is not str for p in prefixes)
        ):
            return f"a user's {field} rights are a list of at most {MAX_PREFIXES} key prefixes"
    return None


def _covered(prefixes: tuple[str, ...], key: str) -> bool:
    return any(key.startswith(p) for p in prefixes)


class PermissionTable:
    """The users of one revision of the state machine, by public key."""

    def __init__(self, users: Sequence[User]) -> None:
        self.users = {u.name: u for u in users}
        self.by_key: dict[str, User] = {}
        for user in sorted(users, key=lambda u: u.name):
            self.by_key.setdefault(user.key, user)  # a key given to two users: the first name wins

    @classmethod
    def read(cls, sm: StateMachine) -> PermissionTable:
        users: list[User] = []
        after = ""
        while True:
            result = decode_result(sm.query(encode_query(["range", USERS_PREFIX, MAX_RANGE_LIMIT, after])))
            kvs = result.get("kvs", []) if result["ok"] else []
            for kv in kvs:
                name = kv["key"][len(USERS_PREFIX) :]
                value = kv.get("value")
                if check_user_record(name, value) is None:
                    users.append(User(name, value["key"], tuple(value["read"]), tuple(value["write"])))
            if not kvs or not result.get("more"):
                return cls(users)
            after = kvs[-1]["key"]

    @property
    def open(self) -> bool:
        return not self.users

    def may(self, principal: str, right: str, key: str) -> bool:
        if self.open:
            return True
        user = self.by_key.get(principal)
        if user is None:
            return False
        return _covered(user.read if right == "read" else user.write, key)

    def any_right(self, principal: str, right: str) -> bool:
        if self.open:
            return True
        user = self.by_key.get(principal)
        return user is not None and bool(user.read if right == "read" else user.write)

    def is_admin(self, principal: str) -> bool:
        if self.open:
            return True
        user = self.by_key.get(principal)
        return user is not None and "" in user.write


def is_user_write(op: list[Any]) -> bool:
    """A put or delete of one user record (what `cluster-ctl user add/remove` sends)."""
    return (
        op[0] in ("put", "del")
        and isinstance(op[1], str)
        and op[1].startswith(USERS_PREFIX)
        and "/" not in op[1][len(USERS_PREFIX) :]
    )


class Permissions:
    """The KV service's view of the table: re-read when the state machine's revision has moved."""

    def __init__(
        self, sm: StateMachine, is_member: Callable[[str], bool] = lambda _key: False, enabled: bool = True
    ) -> None:
        """`enabled` False: nothing is checked (a node without CURVE, whose clients prove no key)."""
        self._sm = sm
        self._is_member = is_member
        self.enabled = enabled
        self._revision = -1
        self._table = PermissionTable([])

    def table(self) -> PermissionTable:
        revision = getattr(self._sm, "revision", None)
        if revision is None or revision != self._revision:
            self._table = PermissionTable.read(self._sm)
            self._revision = revision if isinstance(revision, int) else -1
        return self._table

    def write_denied(self, principal: str, op: list[Any]) -> str | None:
        """Why a client's validated write op is refused, or None. `__zraft/` keys other than user
        records are the caller's business (refused as reserved)."""
        if not self.enabled or self._is_member(principal):
            return None
        table = self.table()
        if is_user_write(op):
            if not table.is_admin(principal):
                return (
                    "only an administrator (a member's key, or a user who may write every key) manages users"
                )
            if op[0] == "put":
                return check_user_record(op[1][len(USERS_PREFIX) :], op[2])
            return None
        if table.open:
            return None
        name = op[0]
        if name in _KEYLESS_WRITES:
            allowed = table.any_right(principal, "write")
            return None if allowed else _no(principal, table, "write", _KEYLESS_WRITES[name])
        key = op[1]
        if not table.may(principal, "write", key):
            return _no(principal, table, "write", key)
        return None

    def query_denied(self, principal: str, payload: bytes) -> str | None:
        """Why a client's READ or SERIAL_READ is refused, or None (a malformed query is the state
        machine's to answer)."""
        if not self.enabled or self._is_member(principal):
            return None
        table = self.table()
        if table.open:
            return None
        try:
            op = parse_query(payload)
        except (Invalid, ValueError):
            return None
        if op[0] in ("get", "range"):
            return None if table.may(principal, "read", op[1]) else _no(principal, table, "read", op[1])
        ok = table.any_right(principal, "read") or table.any_right(principal, "write")
        return None if ok else _no(principal, table, "read", "leases")

    def member_change_denied(self, principal: str) -> str | None:
        """Why a client's MEMBER request (a membership change) is refused, or None: like managing users,
        it is for administrators (a member's key, or a user who may write every key)."""
        if not self.enabled or self._is_member(principal):
            return None
        if self.table().is_admin(principal):
            return None
        return "only an administrator (a member's key, or a user who may write every key) changes members"

    def watch_denied(self, principal: str, key: str) -> str | None:
        if not self.enabled or self._is_member(principal):
            return None
        table = self.table()
        return None if table.may(principal, "read", key) else _no(principal, table, "read", key)


def _no(principal: str, table: PermissionTable, right: str, what: str) -> str:
    user = table.by_key.get(principal)
    who = f"user {user.name}" if user is not None else "this client's key, which is no user's,"
    return f"{who} may not {right} {what[:64]!r}"
