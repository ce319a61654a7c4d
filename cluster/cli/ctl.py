"""cluster-ctl: talk to a zraft cluster from the command line (put, get, del, cas, watch, lease, status,
and the cluster service's servers, processes, register and event: cluster/cli/service_cmds.py).

The argument parser, the value parsing rule and the exit statuses live here; printing is in
cluster/cli/ctl_output.py and all cluster traffic goes through cluster.Client.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from loguru import logger

from cluster.cli import service_cmds
from cluster.cli.ctl_output import (
    FORMATS,
    kv_simple,
    kvs_text,
    members_text,
    show_value,
    status_text,
    to_json,
)
from cluster.cli.interrupt import STOP_POLL_S, stop_on
from cluster.client.api import Client
from cluster.client.commands import encode_query, write_encoder
from cluster.client.curve import SECRET_KEY_ENV, SERVER_KEY_ENV, curve_settings
from cluster.client.endpoints import ENDPOINTS_ENV, default_endpoints, local_endpoints, parse_endpoints
from cluster.errors import InvalidRequest, Rejected, WatchEnded, ZraftError
from cluster.kv.ops import MAX_RANGE_LIMIT
from cluster.kv.permissions import USERS_PREFIX, check_user_record, user_record
from transport.curve import KeyFileError, is_key, read_public_key, write_keypair

EXIT_OK = 0
EXIT_FAILED = 1  # a definite failure: rejected, cas did not swap, key not found on get, watch compacted
EXIT_USAGE = 2  # bad arguments, including values the client refuses before sending
EXIT_NO_ANSWER = 3  # unavailable, or the outcome of a write is unknown

_EPILOG = f"""\
values:
  VALUE, EXPECTED and NEW are parsed as JSON when they are valid JSON (42, true, null, [1,2],
  {{"a":1}}, "quoted"), else taken as a plain string. For cas, EXPECTED null means "the key is absent".

endpoints:
  --endpoints, else ${ENDPOINTS_ENV}, else the cluster-local defaults {",".join(local_endpoints())}.
  Any reachable node will do: the client learns the others and follows the leader.

exit status:
  0 ok   1 definite failure (rejected, cas not swapped, key not found)   2 usage error
  3 no answer in time (unavailable, or a write whose outcome is unknown)

examples:
  cluster-ctl put config/x '{{"replicas": 3}}'
  cluster-ctl get config/ --prefix -w table
  cluster-ctl cas lock/a null me
  cluster-ctl watch config/ --prefix -w json      (until Ctrl-C, which exits 0)
  cluster-ctl lease grant 30            # prints the lease id
  cluster-ctl put servers/a up --lease 1
  cluster-ctl lease keepalive 1         # one renewal; prints the seconds left
  cluster-ctl status
  cluster-ctl keygen --out keys --name n1   # keys/n1.key and keys/n1.key_secret
  cluster-ctl user add admin --key keys/admin.key --read '' --write ''
  cluster-ctl user add web --key keys/web.key --read svc/ --write svc/web/
  cluster-ctl member add n4 --peer-url tcp://10.0.0.4:7100 --client-url tcp://10.0.0.4:7000
  cluster-ctl member add n4 --peer-url ... --client-url ... --curve-public-key keys/n4.key  # CURVE
  cluster-ctl member promote n4         # once its learner has caught up
  cluster-ctl member remove n1          # the leader hands over first when it is the one removed
  cluster-ctl member update n2 --peer-url tcp://10.0.0.9:7100
  cluster-ctl member list -w json

security:
  With a secured cluster pass --curve-secret-key FILE and --server-public-key SPEC (or set
  $ZRAFT_CURVE_SECRET_KEY and $ZRAFT_SERVER_PUBLIC_KEY); see the README's "Securing a cluster".

cluster service (registry, liveness, events):
  cluster-ctl servers                    # also: processes
  cluster-ctl register server web-1 10.0.0.5 8080 --listen NOTE     (until Ctrl-C)
  cluster-ctl event send NOTE '{{"id": 1}}' [--to web-1]
  cluster-ctl event listen NOTE
"""


class UsageError(Exception):
    """Bad command-line input found after argparse (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own usage errors: one line, exit 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_value(text: str) -> Any:
    """JSON when `text` is valid JSON, else the text itself as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """Options accepted both before and after the command (defaults only on the main parser)."""
    parser.add_argument(
        "--endpoints",
        metavar="URL,...",
        default=default,
        help=f"client URLs of one or more nodes (default: ${ENDPOINTS_ENV}, else the cluster-local ones)",
    )
    parser.add_argument(
        "-w",
        "--write-out",
        choices=FORMATS,
        default=default if default is argparse.SUPPRESS else "simple",
        help="output format (default: simple; status prints a table unless json)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        metavar="S",
        default=default if default is argparse.SUPPRESS else 5.0,
        help="seconds to wait for an answer (default: 5)",
    )
    parser.add_argument(
        "--curve-secret-key",
        metavar="FILE",
        default=default,
        help=f"this client's CURVE secret key file (default: ${SECRET_KEY_ENV}); needs --server-public-key",
    )
    parser.add_argument(
        "--server-public-key",
        metavar="SPEC",
        default=default,
        help="the nodes' CURVE public keys: a key or .key file for every node, or URL=KEY|FILE,... "
        f"(default: ${SERVER_KEY_ENV})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cluster-ctl",
        description="Read and write keys in a zraft cluster and show its status.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(parser, None)
    common = _Parser(add_help=False)
    _common_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    put = sub.add_parser("put", parents=[common], help="set KEY to VALUE; prints the new revision")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", help="JSON, or else a plain string")
    put.add_argument(
        "--lease", type=int, metavar="ID", help="attach KEY to lease ID: it is deleted when the lease ends"
    )

    get = sub.add_parser("get", parents=[common], help="print the value of KEY (exit 1 when absent)")
    get.add_argument("key", metavar="KEY")
    get.add_argument(
        "--prefix", action="store_true", help="every key starting with KEY, sorted (read a page at a time)"
    )
    get.add_argument(
        "--limit", type=int, default=0, metavar="N", help="with --prefix: at most N keys (default: all)"
    )
    get.add_argument(
        "--serializable", action="store_true", help="answer from any node, possibly stale (faster)"
    )

    delete = sub.add_parser("del", parents=[common], help="delete KEY; prints how many keys were deleted")
    delete.add_argument("key", metavar="KEY")
    delete.add_argument("--prefix", action="store_true", help="delete every key starting with KEY")

    cas = sub.add_parser(
        "cas", parents=[common], help="set KEY to NEW only if it is EXPECTED (exit 1 when not)"
    )
    cas.add_argument("key", metavar="KEY")
    cas.add_argument("expected", metavar="EXPECTED", help="JSON (null = the key is absent), or a string")
    cas.add_argument("new", metavar="NEW", help="JSON, or else a plain string")

    watch = sub.add_parser(
        "watch", parents=[common], help="print the changes of KEY as they happen, until Ctrl-C"
    )
    watch.add_argument("key", metavar="KEY")
    watch.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    watch.add_argument(
        "--rev", type=int, default=None, metavar="N", help="start at revision N (default: now)"
    )
    watch.add_argument("--count", type=int, default=0, metavar="N", help="exit after N events")
    watch.add_argument(
        "--prev-kv",
        action="store_true",
        help='also the key\'s previous value: a line before the new value (json: "prev")',
    )
    lease = sub.add_parser("lease", parents=[common], help="grant, renew, revoke and list leases")
    lease_sub = lease.add_subparsers(dest="lease_command", metavar="LEASE_COMMAND", required=True)
    grant = lease_sub.add_parser(
        "grant", parents=[common], help="grant a lease of TTL seconds; prints its id"
    )
    grant.add_argument("ttl", type=_positive, metavar="TTL")
    for name, text in (
        ("keepalive", "renew lease ID once; prints the seconds it has left"),
        ("revoke", "end lease ID now, deleting its keys; prints how many"),
        ("info", "lease ID's granted TTL, seconds left and keys"),
    ):
        one = lease_sub.add_parser(name, parents=[common], help=text)
        one.add_argument("id", type=int, metavar="ID")
    lease_sub.add_parser("list", parents=[common], help="every lease with its seconds left")

    sub.add_parser("status", parents=[common], help="every node's role, term, commit and applied index")

    member = sub.add_parser("member", parents=[common], help="list, add, promote, remove and move members")
    member_sub = member.add_subparsers(dest="member_command", metavar="MEMBER_COMMAND", required=True)
    member_sub.add_parser("list", parents=[common], help="voters and learners, with each one's lag")
    add = member_sub.add_parser(
        "add", parents=[common], help="add NAME as a learner; then start it with --join"
    )
    update = member_sub.add_parser("update", parents=[common], help="change NAME's peer (and client) URL")
    for one in (add, update):
        one.add_argument("name", metavar="NAME")
        one.add_argument("--peer-url", required=True, metavar="URL")
        one.add_argument("--client-url", default="", metavar="URL")
        one.add_argument(
            "--curve-public-key",
            default="",
            metavar="KEY|FILE",
            help="the member's CURVE public key (Z85 text or its .key file): a CURVE cluster connects to "
            "and admits the member with it, no restart of the others needed",
        )
    add.add_argument(
        "--learner", action="store_true", help="the default and only way: a member joins as a learner"
    )
    for name, text in (
        ("promote", "make learner NAME a voter (refused until it has caught up)"),
        ("remove", "remove NAME (the leader hands over first when it is NAME)"),
    ):
        member_sub.add_parser(name, parents=[common], help=text).add_argument("name", metavar="NAME")

    # --- the cluster service's commands (cluster/cli/service_cmds.py) ---
    service_cmds.add_commands(sub, common, _positive)

    user = sub.add_parser("user", parents=[common], help="manage users and their key prefix rights")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True, parser_class=_Parser)
    add = user_sub.add_parser(
        "add", parents=[common], help="add (or replace) user NAME, identified by a CURVE public key"
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--key",
        required=True,
        metavar="KEY|FILE",
        help="the user's public key, or its .key file (write --key=KEY: a Z85 key may start with '-')",
    )
    add.add_argument(
        "--read",
        action="append",
        default=[],
        metavar="PREFIX",
        help="may read keys under PREFIX (repeatable)",
    )
    add.add_argument(
        "--write",
        action="append",
        default=[],
        metavar="PREFIX",
        help="may write keys under PREFIX (repeatable)",
    )
    remove = user_sub.add_parser("remove", parents=[common], help="remove user NAME")
    remove.add_argument("name", metavar="NAME")
    user_sub.add_parser("list", parents=[common], help="every user with its key and rights")

    keygen = sub.add_parser(
        "keygen",
        parents=[common],
        help="write a CURVE keypair: DIR/NAME.key (public) and DIR/NAME.key_secret (mode 0600)",
    )
    keygen.add_argument("--out", required=True, metavar="DIR", help="directory to write the key files into")
    keygen.add_argument(
        "--name", default="zraft", help="file name of the pair, e.g. the node name (default: zraft)"
    )
    return parser


# --- commands -----------------------------------------------------------------------------------------


def _put(c: Client, args: argparse.Namespace) -> int:
    rev = c.put(args.key, parse_value(args.value), lease=args.lease)
    if args.write_out == "json":
        print(to_json({"key": args.key, "revision": rev}))
    else:
        print(f"OK (revision {rev})")
    return EXIT_OK


def _get_prefix(c: Client, args: argparse.Namespace) -> int:
    """Every key under the prefix (at most --limit), read a page per request however many there are."""
    page_size = min(args.limit, MAX_RANGE_LIMIT) if args.limit else MAX_RANGE_LIMIT
    entries: Iterator[dict[str, Any]] = c.range_all(
        args.key, page_size=page_size, serializable=args.serializable
    )
    if args.limit:
        entries = islice(entries, args.limit)
    if args.write_out == "simple":  # streamed: printed as the pages arrive
        for entry in entries:
            print(kv_simple(entry))
    else:
        text = kvs_text(list(entries), args.write_out)
        if text:
            print(text)
    return EXIT_OK


def _get(c: Client, args: argparse.Namespace) -> int:
    if args.prefix:
        return _get_prefix(c, args)
    kv = c.get_kv(args.key, args.serializable)
    if kv is None:
        print(f"cluster-ctl: key not found: {args.key}", file=sys.stderr)
        return EXIT_FAILED
    if args.write_out == "json":
        print(to_json(kv))
    elif args.write_out == "table":
        print(kvs_text([kv], "table"))
    else:
        print(show_value(kv["value"]))
    return EXIT_OK


def _del(c: Client, args: argparse.Namespace) -> int:
    deleted = c.delete_prefix(args.key) if args.prefix else int(c.delete(args.key))
    print(to_json({"deleted": deleted}) if args.write_out == "json" else str(deleted))
    return EXIT_OK


def _cas(c: Client, args: argparse.Namespace) -> int:
    swapped = c.cas(args.key, parse_value(args.expected), parse_value(args.new))
    if args.write_out == "json":
        print(to_json({"key": args.key, "swapped": swapped}))
    elif swapped:
        print("OK")
    if not swapped:
        print(f"cluster-ctl: cas failed: {args.key} is not {args.expected}; nothing changed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _watch(c: Client, args: argparse.Namespace) -> int:
    """Events as they arrive: TYPE, KEY and VALUE lines (simple, table) or one JSON object per line,
    until Ctrl-C (exit 0) or --count events."""
    seen = 0
    with (
        stop_on(signal.SIGINT) as stop,
        c.watch(args.key, prefix=args.prefix, start_revision=args.rev, prev_kv=args.prev_kv) as w,
    ):
        while not stop:
            try:
                event = w.next(STOP_POLL_S)
            except StopIteration:
                break
            if event is None:
                continue
            if args.write_out == "json":
                print(to_json(event), flush=True)
            else:
                prev = f"\n{show_value(event['prev'])}" if args.prev_kv else ""
                value = "" if event["type"] == "DELETE" else f"\n{show_value(event['value'])}"
                print(f"{event['type']}\n{event['key']}{prev}{value}", flush=True)
            seen += 1
            if seen == args.count:
                break
    return EXIT_OK


def _lease(c: Client, args: argparse.Namespace) -> int:
    as_json = args.write_out == "json"
    command = args.lease_command
    if command == "grant":
        granted = c.lease_grant(args.ttl)
        print(
            to_json({"id": granted.id, "ttl": granted.ttl})
            if as_json
            else f"lease {granted.id} granted with TTL {granted.ttl:g}s"
        )
    elif command == "keepalive":
        left = c.lease_keepalive(args.id)
        print(
            to_json({"id": args.id, "ttl": left})
            if as_json
            else f"lease {args.id} kept alive with TTL {left:.1f}s"
        )
    elif command == "revoke":
        deleted = c.lease_revoke(args.id)
        print(
            to_json({"id": args.id, "deleted": deleted})
            if as_json
            else f"lease {args.id} revoked ({deleted} keys deleted)"
        )
    elif command == "info":
        info = c.lease_info(args.id)
        if as_json:
            print(
                to_json(
                    {"id": info.id, "granted_ttl": info.granted_ttl, "ttl": info.ttl, "keys": list(info.keys)}
                )
            )
        else:
            print(f"lease {info.id}: granted TTL {info.granted_ttl:g}s, remaining {info.ttl:.1f}s")
            for key in info.keys:
                print(f"  {key}")
    else:
        leases = c.lease_list()
        if as_json:
            print(
                to_json(
                    {"leases": [{"id": i.id, "granted_ttl": i.granted_ttl, "ttl": i.ttl} for i in leases]}
                )
            )
        for info in [] if as_json else leases:
            print(f"{info.id}\tTTL {info.granted_ttl:g}s\tremaining {info.ttl:.1f}s")
    return EXIT_OK


def _status(c: Client, args: argparse.Namespace) -> int:
    print(status_text(c.status(), args.write_out))
    return EXIT_OK


def _user(c: Client, args: argparse.Namespace) -> int:
    if args.user_command == "add":
        record = user_record(_public_key(args.key), args.read, args.write)
        c.put(USERS_PREFIX + args.name, record)
        print(to_json({"user": args.name, **record}) if args.write_out == "json" else f"OK user {args.name}")
        return EXIT_OK
    if args.user_command == "remove":
        existed = c.delete(USERS_PREFIX + args.name)
        if args.write_out == "json":
            print(to_json({"user": args.name, "removed": existed}))
        else:
            print(f"OK user {args.name} removed" if existed else f"no user {args.name}")
        return EXIT_OK if existed else EXIT_FAILED
    users = [
        {"name": e["key"][len(USERS_PREFIX) :], **e["value"]}
        for e in c.range_all(USERS_PREFIX)
        if isinstance(e.get("value"), dict)
    ]
    if args.write_out == "json":
        print(to_json(users))
    else:
        for u in users:
            rights = " ".join([*(f"read:{p!r}" for p in u["read"]), *(f"write:{p!r}" for p in u["write"])])
            print(f"{u['name']}  {u['key']}  {rights or '(no rights)'}")
    return EXIT_OK


def _public_key(text: str, flag: str = "--key") -> str:
    if is_key(text):
        return text
    try:
        return read_public_key(text).decode("ascii")
    except KeyFileError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _member(c: Client, args: argparse.Namespace) -> int:
    command = args.member_command
    if command == "list":
        print(members_text(c.member_list(), args.write_out))
        return EXIT_OK
    key = (
        _public_key(args.curve_public_key, "--curve-public-key")
        if command in ("add", "update") and args.curve_public_key
        else ""
    )
    try:
        if command == "add":
            members = c.member_add(args.name, args.peer_url, args.client_url, curve_public_key=key)
        elif command == "update":
            members = c.member_update(args.name, args.peer_url, args.client_url, curve_public_key=key)
        elif command == "promote":
            members = c.member_promote(args.name)
        else:
            members = c.member_remove(args.name)
    except InvalidRequest as exc:  # the leader refused the change (a learner behind, an unknown name...)
        raise Rejected(f"member {command}", exc.reason) from None
    if args.write_out == "json":
        print(to_json({"members": members}))
    else:
        print(f"member {command} {args.name}: done")
        print(members_text(members, args.write_out))
    return EXIT_OK


_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "user": _user,
    "put": _put,
    "get": _get,
    "del": _del,
    "cas": _cas,
    "watch": _watch,
    "lease": _lease,
    "status": _status,
    "member": _member,
    **service_cmds.COMMANDS,  # servers, processes, register, event
}


def check_request(args: argparse.Namespace) -> None:
    """Refuse a bad key, value or limit before connecting (exit status 2 without touching the network)."""
    if args.command == "get" and args.limit < 0:
        raise UsageError("--limit must not be negative")
    if args.command == "watch" and (args.count < 0 or (args.rev is not None and args.rev < 1)):
        raise UsageError("--count must not be negative, --rev must be >= 1")
    if args.command in ("put", "cas"):
        values = [args.value] if args.command == "put" else [args.expected, args.new]
        op = [args.command, args.key, *map(parse_value, values)]
        if args.command == "put" and args.lease is not None:
            if args.lease <= 0:
                raise UsageError("--lease must be a lease id (a positive integer)")
            op = ["put_lease", *op[1:], args.lease]
        write_encoder(args.command, 0, op)
    elif args.command in ("get", "del"):
        op = ["range", args.key, 0, ""] if args.prefix else ["get", args.key]
        encode_query(args.command, op)
    elif args.command == "user" and args.user_command == "add":
        problem = check_user_record(args.name, user_record(_public_key(args.key), args.read, args.write))
        if problem:
            raise UsageError(problem)
    elif args.command == "member" and args.member_command in ("add", "update") and args.curve_public_key:
        _public_key(args.curve_public_key, "--curve-public-key")  # a usage error before connecting
    elif args.command == "user" and args.user_command == "remove" and not args.name:
        raise UsageError("a user name is needed")
    elif args.command == "lease" and args.lease_command in ("keepalive", "revoke", "info") and args.id <= 0:
        raise UsageError("a lease id is a positive integer")
    service_cmds.check(args)  # the cluster service's commands


def _keygen(args: argparse.Namespace) -> int:
    """Write a keypair; prints the public key and the two paths (never the secret)."""
    try:
        public_path, secret_path = write_keypair(args.out, args.name)
    except FileExistsError:
        raise UsageError(
            f"{args.out}/{args.name}.key_secret exists already; not overwriting a secret"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot write into {args.out}: {exc.strerror or exc}") from None
    public = read_public_key(public_path).decode("ascii")
    if args.write_out == "json":
        print(
            to_json({"public_key": public, "public_file": str(public_path), "secret_file": str(secret_path)})
        )
    else:
        print(f"public key {public}\nwrote {public_path} and {secret_path} (mode 0600)")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; raises UsageError, ValueError or ZraftError."""
    if args.command == "keygen":
        return _keygen(args)
    check_request(args)
    endpoints = parse_endpoints(args.endpoints) if args.endpoints else default_endpoints()
    secret, servers = curve_settings(args.curve_secret_key, args.server_public_key)
    with Client(endpoints, timeout=args.timeout, curve_secret_key=secret, server_public_key=servers) as c:
        return _COMMANDS[args.command](c, args)


def main(argv: list[str] | None = None) -> int:
    logger.remove()
    logger.add(sys.stderr, level="ERROR", format="cluster-ctl: {message}")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (UsageError, InvalidRequest, ValueError) as exc:
        code, message = EXIT_USAGE, str(exc)
    except (Rejected, WatchEnded) as exc:
        code, message = EXIT_FAILED, str(exc)
    except ZraftError as exc:
        code, message = EXIT_NO_ANSWER, str(exc)
    except KeyboardInterrupt:
        code, message = EXIT_NO_ANSWER, "interrupted; the outcome of a write is unknown"
    print(f"cluster-ctl: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
