"""Client-side checks that need no cluster: the error hierarchy, validation before sending, result
checking, how cluster-ctl parses values and arguments, and its exit statuses for bad input."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from actors.client import Completion, Outcome
from actors.messages import RequestKind
from cluster import (
    AlreadyApplied,
    Busy,
    InvalidRequest,
    NoAnswer,
    OutcomeUnknown,
    Rejected,
    SessionExpired,
    Unavailable,
    ZraftError,
)
from cluster.cli import ctl
from cluster.cli.ctl_output import kvs_text, status_text, to_json
from cluster.client.calls import Request, interpret
from cluster.client.commands import check_result, describe_bad_request, encode_query, write_encoder
from cluster.client.endpoints import ENDPOINTS_ENV, default_endpoints, local_endpoints, parse_endpoints
from cluster.kv.machine import MAX_KEY_BYTES, MAX_RANGE_LIMIT, MAX_VALUE_BYTES, KVStateMachine, encode_command

# --- the hierarchy ------------------------------------------------------------------------------------


def test_unknown_outcome_and_definite_failure_are_separate_branches() -> None:
    unknown = OutcomeUnknown("put", 5.0)
    unavailable = Unavailable("get", 5.0)
    rejected = Rejected("cas", "boom")
    invalid = InvalidRequest("put", "key must not be empty")
    assert all(isinstance(e, ZraftError) for e in (unknown, unavailable, rejected, invalid))
    assert isinstance(unknown, NoAnswer) and isinstance(unavailable, NoAnswer)
    assert not isinstance(unknown, Rejected) and not isinstance(unavailable, Rejected)
    assert isinstance(invalid, Rejected) and isinstance(invalid, ValueError)
    assert not isinstance(rejected, NoAnswer)


def test_already_applied_is_an_unknown_outcome_never_a_rejection() -> None:
    """Code that handles OutcomeUnknown (read the state back) handles it right; code that resends after
    a Rejected (safe only for what was never applied) never sees it."""
    applied = AlreadyApplied("cas", 5.0, "write already applied; its result is no longer kept")
    assert isinstance(applied, OutcomeUnknown) and isinstance(applied, NoAnswer)
    assert not isinstance(applied, Rejected)
    assert "was applied" in str(applied) and "no longer knows its result" in str(applied)
    assert "may or may not" not in str(applied) and "never applied" not in str(applied)


def test_messages_say_what_the_caller_may_conclude() -> None:
    assert "may or may not have been applied" in str(OutcomeUnknown("put", 2.5))
    assert "2.5s" in str(OutcomeUnknown("put", 2.5))
    assert "nothing was changed" in str(Unavailable("get", 1, "no leader reachable"))
    assert "no leader reachable" in str(Unavailable("get", 1, "no leader reachable"))
    assert str(Rejected("cas", "bad op")) == "cas rejected by the cluster: bad op"
    err = InvalidRequest("put", "key must not be empty")
    assert str(err) == "invalid put: key must not be empty" and err.reason == "key must not be empty"


def test_a_nodes_refusals_become_invalid_request_and_busy() -> None:
    """BAD_REQUEST (the node found it invalid before proposing) and BUSY are definite: never applied."""
    put = Request("put", RequestKind.WRITE, b"", 5.0)
    with pytest.raises(InvalidRequest, match="reserved"):
        interpret(put, Completion(1, Outcome.REJECTED, b"keys under '__zraft/' are reserved"))
    with pytest.raises(Busy) as info:
        interpret(put, Completion(1, Outcome.BUSY, b"too many writes wait for commit; retry later"))
    assert isinstance(info.value, Rejected) and not isinstance(info.value, NoAnswer)
    assert "busy" in str(info.value) and "too many writes" in str(info.value)
    with pytest.raises(Unavailable, match="no leader took the write"):  # known not applied
        interpret(put, Completion(1, Outcome.NOT_APPLIED, b""))
    with pytest.raises(OutcomeUnknown):
        interpret(put, Completion(1, Outcome.TIMEOUT, b""))


def test_a_session_that_ended_under_a_retried_write_is_an_outcome_unknown_with_the_clusters_words() -> None:
    put = Request("put", RequestKind.WRITE, b"", 5.0)
    refusal = KVStateMachine().apply(1, encode_command(77, 1, 1, ["put", "k", 1]))  # never registered
    with pytest.raises(SessionExpired) as info:
        interpret(put, Completion(1, Outcome.SESSION_EXPIRED, refusal))
    assert isinstance(info.value, OutcomeUnknown) and not isinstance(info.value, Rejected)
    assert "session 77 is unknown" in str(info.value) and "at most once" in str(info.value)


# --- validation before sending ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "words"),
    [
        (["put", "", 1], "key must not be empty"),
        (["put", "k" * (MAX_KEY_BYTES + 1), 1], "key too large"),
        (["put", 7, 1], "key must be a string"),
        (["put", "k", "x" * (MAX_VALUE_BYTES + 10)], "value too large"),
        (["put", "k", "x" * (3 * MAX_VALUE_BYTES)], f"at most {MAX_VALUE_BYTES} bytes"),
        (["put", "k", {1, 2}], "value cannot be stored"),
        (["put", "k", object()], "value cannot be stored"),
        (["put", "k", 2**70], "value cannot be stored"),
        (["put", "k", {1: "int map key"}], "map keys inside a value must be str or bytes"),
        (["cas", "k", None, {"deep": [[[[]]]] * 1}], ""),  # valid: the only case that passes
    ],
)
def test_writes_are_validated_with_the_state_machines_own_words(op: list[Any], words: str) -> None:
    if not words:
        write_encoder("cas", 1, op)
        return
    with pytest.raises(InvalidRequest, match=words) as info:
        write_encoder(str(op[0]), 1, op)
    assert info.value.operation == op[0]


def test_deep_nesting_is_refused() -> None:
    value: Any = 1
    for _ in range(100):
        value = [value]
    with pytest.raises(InvalidRequest, match="nested deeper"):
        write_encoder("put", 1, ["put", "k", value])


@pytest.mark.parametrize(
    ("op", "words"),
    [
        (["get", "k" * (MAX_KEY_BYTES + 1)], "key too large"),
        (["range", "p" * (MAX_KEY_BYTES + 1), 0, ""], "prefix too large"),
        (["range", "p", 0, "a" * (MAX_KEY_BYTES + 1)], "after too large"),
        (["get", ""], "key must not be empty"),
        (["range", "p", -1, ""], "limit must be a non-negative integer"),
        (["range", "p", MAX_RANGE_LIMIT + 1, ""], "limit too large"),
        (["range", "p", 0], "takes 3 argument"),
        (["get", b"bytes"], "key must be a string"),
    ],
)
def test_queries_are_validated(op: list[Any], words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        encode_query(str(op[0]), op)


@pytest.mark.parametrize("seq,floor", [(1, 1), (2, 1), (300, 299), (2**40, 2**33), (2**63 - 1, 1)])
def test_the_write_encoder_builds_exactly_what_kv_encodes(seq: int, floor: int) -> None:
    op = ["cas", "k", {"a": [1, 2.5, b"\x00"]}, None]
    session = 2**62 + 12345
    encode = write_encoder("cas", session, op)
    assert encode(session, seq, floor) == encode_command(session, seq, floor, op)


def test_results_with_ok_false_raise_rejected_with_their_error_text() -> None:
    data = msgpack.packb({"ok": False, "error": "op 'put' takes 2 argument(s), got 1"})
    with pytest.raises(Rejected, match="takes 2 argument"):
        check_result("put", data)
    with pytest.raises(Rejected, match="unreadable answer"):
        check_result("get", b"\xc1")  # never valid msgpack
    assert check_result("get", msgpack.packb({"ok": True, "kv": None}))["kv"] is None
    assert describe_bad_request(b"unknown request kind") == "unknown request kind"
    assert describe_bad_request(b"") == "bad request"


def test_a_retry_whose_answer_was_dropped_raises_already_applied() -> None:
    """The state machine's answer to a retry of an applied write whose cached answer was dropped (the
    per-session bound) becomes AlreadyApplied, and the write is not applied a second time."""
    sm = KVStateMachine(max_responses_per_session=2)
    session = 1
    sm.apply(1, encode_command(0, 0, 0, ["session_open", 0, 0]))  # registers session 1
    encode = write_encoder("cas", session, ["cas", "lock", None, "me"])
    first = sm.apply(2, encode(session, 1, 1))
    assert check_result("cas", first)["swapped"] is True
    for seq in (2, 3):  # two more writes: seq 1's answer no longer fits the session's cache
        sm.apply(seq + 1, write_encoder("put", session, ["put", f"k{seq}", seq])(session, seq, 1))
    revision = sm.revision
    with pytest.raises(AlreadyApplied) as caught:
        check_result("cas", sm.apply(5, encode(session, 1, 1)), timeout=3.0)
    assert caught.value.operation == "cas" and caught.value.timeout == 3.0
    assert sm.revision == revision


def test_an_older_nodes_already_acknowledged_answer_also_raises_already_applied() -> None:
    legacy = msgpack.packb({"ok": False, "error": "request already acknowledged"})
    with pytest.raises(AlreadyApplied):
        check_result("put", legacy)


# --- endpoints ------------------------------------------------------------------------------------------


def test_endpoint_lists_are_checked_and_default_to_the_local_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_endpoints(" tcp://a:1, tcp://b:2 ,") == ["tcp://a:1", "tcp://b:2"]
    for bad in ("", "a:1", "tcp://a", "tcp://a:0", "tcp://a:x", "http://a:1"):
        with pytest.raises(ValueError):
            parse_endpoints(bad)
    monkeypatch.delenv(ENDPOINTS_ENV, raising=False)
    assert default_endpoints() == local_endpoints() == [f"tcp://127.0.0.1:{7000 + i}" for i in (1, 2, 3)]
    monkeypatch.setenv(ENDPOINTS_ENV, "tcp://10.0.0.1:9001")
    assert default_endpoints() == ["tcp://10.0.0.1:9001"]


# --- cluster-ctl ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("-1.5", -1.5),
        ("true", True),
        ("null", None),
        ('"42"', "42"),
        ("[1, 2]", [1, 2]),
        ('{"a": {"b": 1}}', {"a": {"b": 1}}),
        ("hello", "hello"),
        ("hello world", "hello world"),
        ("{not json", "{not json"),
        ("", ""),
        ("01", "01"),  # not valid JSON: kept as the string
    ],
)
def test_cli_values_are_json_when_valid_else_strings(text: str, value: Any) -> None:
    assert ctl.parse_value(text) == value and type(ctl.parse_value(text)) is type(value)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["put", "k"],
        ["get"],
        ["cas", "k", "1"],
        ["-w", "yaml", "status"],
        ["--timeout", "0", "status"],
        ["--timeout", "soon", "status"],
        ["get", "k", "--limit", "x"],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        ctl.main(argv)
    assert info.value.code == ctl.EXIT_USAGE
    err = capsys.readouterr().err
    assert "cluster-ctl" in err and "error:" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--endpoints", "nonsense", "status"], "bad endpoint"),
        (["put", "", "v"], "key must not be empty"),
        (["put", "k" * (MAX_KEY_BYTES + 1), "v"], "key too large"),
        (["get", "k" * (MAX_KEY_BYTES + 1)], "key too large"),
        (["get", "k", "--prefix", "--limit", "-3"], "--limit"),
        (["cas", "", "null", "1"], "key must not be empty"),
    ],
)
def test_bad_requests_exit_2_with_one_line_before_any_network_use(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 1 on loopback: nothing answers there, so reaching the network would exit 3, not 2.
    assert ctl.main(["--endpoints", "tcp://127.0.0.1:1", *argv] if argv[0] != "--endpoints" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


def test_options_are_accepted_after_the_command_too() -> None:
    args = ctl.build_parser().parse_args(
        ["get", "k", "-w", "json", "--timeout", "2", "--endpoints", "tcp://a:1"]
    )
    assert (args.write_out, args.timeout, args.endpoints) == ("json", 2.0, "tcp://a:1")
    args = ctl.build_parser().parse_args(["-w", "table", "status"])
    assert (args.write_out, args.timeout, args.endpoints) == ("table", 5.0, None)


def test_output_formats() -> None:
    kvs = [
        {"key": "a", "value": "x", "create_revision": 1, "mod_revision": 2, "version": 2},
        {"key": "b", "value": {"n": [1]}, "create_revision": 3, "mod_revision": 3, "version": 1},
    ]
    assert json.loads(kvs_text(kvs, "json")) == {"kvs": kvs, "count": 2}
    assert kvs_text(kvs, "simple") == 'a\nx\nb\n{"n": [1]}'
    header, *rows = kvs_text(kvs, "table").splitlines()
    assert header.split() == ["KEY", "VALUE", "VERSION", "CREATE-REVISION", "MOD-REVISION"]
    assert rows[1].split()[:2] == ["b", '{"n":'] and len(rows) == 2
    assert json.loads(to_json({"v": b"\x00\x01"})) == {"v": {"base64": "AAE="}}
    row = {"term": 3, "commit": 9}
    status = {
        "leader": "n2",
        "term": 3,
        "members": [
            {**row, "name": "n1", "client_url": "tcp://h:1", "role": "follower", "applied": 9},
            {**row, "name": "n2", "client_url": "tcp://h:2", "role": "leader", "applied": 8},
            {"name": "n3", "client_url": "tcp://h:3", "reachable": False, "role": "unreachable"},
        ],
    }
    lines = status_text(status, "table").splitlines()
    assert lines[0].split() == ["leader:", "n2", "term:", "3"]
    assert lines[3].split() == ["n2", "tcp://h:2", "leader", "3", "9", "8", "*"]
    assert lines[4].split() == ["n3", "tcp://h:3", "unreachable"]
    assert json.loads(status_text(status, "json")) == status
