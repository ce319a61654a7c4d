"""The permission table over a real KVStateMachine: rights by prefix, administrators, the open mode."""

from __future__ import annotations

from typing import Any

import zmq

from cluster.kv.machine import KVStateMachine, encode_command, encode_query
from cluster.kv.permissions import USERS_PREFIX, Permissions, check_user_record, user_record

ADMIN, READER, NODE, STRANGER = (zmq.curve_keypair()[0].decode() for _ in range(4))


def _apply(sm: KVStateMachine, op: list[Any]) -> None:
    sm.apply(sm.applied_index + 1, encode_command(0, 0, 0, op))


def test_rights_follow_the_replicated_user_records() -> None:
    sm = KVStateMachine()
    perms = Permissions(sm, is_member=lambda key: key == NODE)
    put = ["put", "svc/a", 1]
    assert perms.table().open
    assert perms.write_denied(STRANGER, put) is None  # no users: open
    assert (
        perms.write_denied(STRANGER, ["put", USERS_PREFIX + "admin", user_record(ADMIN, [""], [""])]) is None
    )
    _apply(sm, ["put", USERS_PREFIX + "admin", user_record(ADMIN, [""], [""])])
    _apply(sm, ["put", USERS_PREFIX + "reader", user_record(READER, ["svc/"], ["svc/web/"])])
    assert not perms.table().open
    assert perms.write_denied(ADMIN, put) is None
    assert perms.write_denied(READER, ["put", "svc/web/x", 1]) is None
    assert "may not write" in (perms.write_denied(READER, put) or "")
    assert perms.write_denied(READER, ["del_prefix", "svc/"]) is not None
    assert perms.write_denied(READER, ["lease_grant", 1000, 0]) is None  # some write right
    assert perms.write_denied(STRANGER, ["lease_grant", 1000, 0]) is not None
    assert perms.write_denied(READER, ["session_open", 60_000, 0]) is None  # a writer registers its session
    assert "sessions" in (perms.write_denied(STRANGER, ["session_open", 60_000, 0]) or "")
    assert perms.query_denied(READER, encode_query(["get", "svc/a"])) is None
    assert perms.query_denied(READER, encode_query(["range", "svc/", 0, ""])) is None
    assert perms.query_denied(READER, encode_query(["range", "", 0, ""])) is not None
    assert perms.query_denied(READER, encode_query(["get", "other"])) is not None
    assert perms.query_denied(READER, b"\xc1 not a query") is None  # the state machine answers it
    assert perms.watch_denied(READER, "svc/web/") is None
    assert perms.watch_denied(STRANGER, "svc/") is not None
    evil = ["put", USERS_PREFIX + "reader", user_record(READER, [""], [""])]
    assert "administrator" in (perms.write_denied(READER, evil) or "")
    assert perms.write_denied(ADMIN, evil) is None
    assert perms.write_denied(NODE, evil) is None  # a member's key administers
    assert perms.write_denied(NODE, ["put", "anything", 1]) is None
    assert "map of key" in (perms.write_denied(ADMIN, ["put", USERS_PREFIX + "x", "not a record"]) or "")
    unenforced = Permissions(sm, enabled=False)  # a node without CURVE: no client proves a key
    assert unenforced.write_denied(STRANGER, put) is None
    assert unenforced.query_denied(STRANGER, encode_query(["get", "svc/a"])) is None
    _apply(sm, ["del", USERS_PREFIX + "reader"])
    assert perms.query_denied(READER, encode_query(["get", "svc/a"])) is not None


def test_user_record_checks() -> None:
    assert check_user_record("web-1", user_record(READER, ["a/"], [])) is None
    assert check_user_record("", user_record(READER, [], [])) is not None
    assert check_user_record("web", user_record("short", [], [])) is not None
    assert check_user_record("web", {"key": READER, "read": [1], "write": []}) is not None
    assert check_user_record("web", {"key": READER, "read": ["a"] * 65, "write": []}) is not None
