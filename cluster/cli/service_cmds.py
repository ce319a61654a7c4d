"""cluster-ctl's cluster-service commands: `servers`, `processes`, `register server|process` and
`event send|listen`, on top of cluster.service.ClusterService.

    cluster-ctl servers              # name, host:port, status, CPU, memory, start, heartbeat, processes
    cluster-ctl processes
    cluster-ctl register server web-1 10.0.0.5 8080 [--meta JSON] [--listen TOPIC]...   # until Ctrl-C
    cluster-ctl register process g1 intp-1 10.0.0.5 9001 [--meta JSON] [--listen TOPIC]...
    cluster-ctl event send NOTE '{"id": 1}' [--to TARGET]     # prints who acknowledged; exit 1 if not all
    cluster-ctl event listen NOTE [--count N]                 # prints events until Ctrl-C

`register` prints one line when the record is committed, then each event received on a --listen topic (one
JSON object per line: topic, sender, id, payload), and deregisters on Ctrl-C or SIGTERM (exit 0); a
kill -9 leaves the record to go OFFLINE after the heartbeat timeout.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from cluster.cli.ctl_output import show_value, table, to_json
from cluster.cli.interrupt import STOP_POLL_S, stop_on
from cluster.client.api import Client
from cluster.service import ClusterService, Event
from cluster.service import records as r
from cluster.service.service import DEFAULT_GRACE, DEFAULT_INTERVAL, DEFAULT_TIMEOUT

EXIT_OK = 0
EXIT_FAILED = 1

_print_lock = threading.Lock()


def _emit(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def add_commands(sub: Any, common: argparse.ArgumentParser, positive: Callable[[str], float]) -> None:
    """Add the service commands to cluster-ctl's subparsers."""
    sub.add_parser("servers", parents=[common], help="registered servers: status, load, heartbeat")
    sub.add_parser("processes", parents=[common], help="registered processes: status, load, heartbeat")

    register = sub.add_parser(
        "register", parents=[common], help="register a server or process and heartbeat until Ctrl-C"
    )
    kinds = register.add_subparsers(dest="register_kind", metavar="KIND", required=True)
    server = kinds.add_parser("server", parents=[common], help="register SERVER_META/NAME")
    server.add_argument("name", metavar="NAME")
    process = kinds.add_parser("process", parents=[common], help="register INTP_PROCESS_META/NAME")
    process.add_argument("group", metavar="GROUP")
    process.add_argument("name", metavar="NAME")
    for parser in (server, process):
        parser.add_argument("host", metavar="HOST")
        parser.add_argument("port", type=int, metavar="PORT")
        parser.add_argument("--meta", metavar="JSON", help="extra fields for the record (a JSON object)")
        parser.add_argument(
            "--listen", action="append", default=[], metavar="TOPIC", help="print events on TOPIC"
        )
        _timing_options(parser, positive)

    event = sub.add_parser("event", parents=[common], help="send or listen to cluster events")
    event_sub = event.add_subparsers(dest="event_command", metavar="EVENT_COMMAND", required=True)
    send = event_sub.add_parser("send", parents=[common], help="send an event; prints who acknowledged")
    send.add_argument("topic", metavar="TOPIC")
    send.add_argument("payload", metavar="PAYLOAD", help="JSON, or else a plain string")
    send.add_argument("--to", metavar="TARGET", help="one registrant (ID or KIND/ID); default: everyone")
    send.add_argument(
        "--ack-timeout", type=positive, default=2.0, metavar="S", help="seconds to wait for acks (2)"
    )
    listen = event_sub.add_parser("listen", parents=[common], help="print events on TOPIC until Ctrl-C")
    listen.add_argument("topic", metavar="TOPIC")
    listen.add_argument("--count", type=int, default=0, metavar="N", help="exit after N events")


def _timing_options(parser: argparse.ArgumentParser, positive: Callable[[str], float]) -> None:
    parser.add_argument(
        "--interval", type=positive, default=DEFAULT_INTERVAL, metavar="S", help="heartbeat interval (3)"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=positive,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="OFFLINE after S seconds of silence (9; at least 3 x the interval)",
    )
    parser.add_argument(
        "--grace", type=positive, default=DEFAULT_GRACE, metavar="S", help="delete S s after OFFLINE (600)"
    )


# --- tables -------------------------------------------------------------------------------------------


def _when(value: Any) -> str:
    if not isinstance(value, int | float):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def _usage(used: Any, capacity: Any, unit: float = 1.0, suffix: str = "") -> str:
    if not isinstance(used, int | float) or not isinstance(capacity, int | float) or capacity <= 0:
        return ""
    return f"{used / unit:.1f}{suffix} / {capacity / unit:.1f}{suffix} = {100 * used / capacity:.0f}%"


def records_text(kind: str, records: list[dict[str, Any]], fmt: str) -> str:
    """Servers or processes as the original's /nodes view (or JSON)."""
    if fmt == "json":
        return to_json({"kind": kind, "records": records, "count": len(records)})
    gib = 1024.0**3
    rows = []
    for rec in records:
        if kind == r.SERVER:
            name, host, port = rec.get(r.NODE_NAME), rec.get(r.SERVER_HOST), rec.get(r.SERVER_PORT)
            started, extra = rec.get(r.SERVER_START_TIME), str(rec.get(r.INTP_PROCESS_COUNT, 0))
        else:
            name, host, port = (
                rec.get(r.INTP_PROCESS_NAME),
                rec.get(r.INTP_TSERVER_HOST),
                rec.get(r.INTP_TSERVER_PORT),
            )
            started, extra = rec.get(r.INTP_START_TIME), str(rec.get(r.INTP_GROUP_ID, ""))
        rows.append(
            [
                str(name),
                f"{host}:{port}",
                str(rec.get(r.STATUS, "")),
                _usage(rec.get(r.CPU_USED), rec.get(r.CPU_CAPACITY)),
                _usage(rec.get(r.MEMORY_USED), rec.get(r.MEMORY_CAPACITY), gib, "G"),
                _when(started),
                _when(rec.get(r.LATEST_HEARTBEAT)),
                extra,
            ]
        )
    last = "processes" if kind == r.SERVER else "group"
    columns = ("name", "host:port", "status", "cpu", "memory", "start_time", "latest_heartbeat", last)
    if fmt == "simple" and not rows:
        return ""
    return table(columns, rows)


def event_line(event: Event) -> str:
    return to_json({"topic": event.topic, "sender": event.sender, "id": event.id, "payload": event.payload})


# --- commands -----------------------------------------------------------------------------------------


def _servers(c: Client, args: argparse.Namespace) -> int:
    with ClusterService(c, monitor=False) as svc:
        text = records_text(r.SERVER, svc.servers(), args.write_out)
    if text:
        print(text)
    return EXIT_OK


def _processes(c: Client, args: argparse.Namespace) -> int:
    with ClusterService(c, monitor=False) as svc:
        text = records_text(r.PROCESS, svc.processes(), args.write_out)
    if text:
        print(text)
    return EXIT_OK


def _meta(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    meta = json.loads(text)
    if not isinstance(meta, dict):
        raise ValueError("--meta must be a JSON object")
    return meta


def _until_stopped(svc: ClusterService) -> bool:
    """Block until Ctrl-C or SIGTERM (True), or until another process takes the registration over
    (False)."""
    with stop_on(signal.SIGINT, signal.SIGTERM) as stop:
        while not stop:
            if svc.taken_over():
                return False
            time.sleep(STOP_POLL_S)  # a bounded wait between looks at the flag and the registration
    return True


def _register(c: Client, args: argparse.Namespace) -> int:
    meta = _meta(args.meta)
    svc = ClusterService(c, interval=args.interval, timeout=args.heartbeat_timeout, grace=args.grace)
    try:
        for topic in args.listen:
            svc.subscribe(topic, lambda event: _emit(event_line(event)))
        if args.register_kind == "server":
            svc.register_server(args.name, args.host, args.port, meta)
            name = r.record_key(r.SERVER, args.name)
        else:
            svc.register_process(args.group, args.name, args.host, args.port, meta)
            name = r.record_key(r.PROCESS, args.name)
        _emit(to_json({"registered": name}) if args.write_out == "json" else f"registered {name}")
        if not _until_stopped(svc):
            print(f"cluster-ctl: {name} was taken over by another registration; stopping", file=sys.stderr)
            return EXIT_FAILED
    finally:
        svc.close()
    return EXIT_OK


def result_text(result: Any, fmt: str) -> str:
    if fmt == "json":
        return to_json(result.as_dict())
    lines = [
        f"{d.target}: " + (f"acked ({d.listeners} listeners)" if d.acked else f"NOT acked ({d.reason})")
        for d in result.deliveries
    ]
    for target, errors in result.errors.items():
        lines.extend(f"{target}: listener error: {e}" for e in errors)
    return "\n".join(lines) if lines else "no live target"


def _event(c: Client, args: argparse.Namespace) -> int:
    from cluster.cli.ctl import parse_value  # the same value rule as put

    if args.event_command == "send":
        with ClusterService(c, monitor=False) as svc:
            payload = parse_value(args.payload)
            if args.to:
                result = svc.unicast(args.to, args.topic, payload, timeout=args.ack_timeout)
            else:
                result = svc.broadcast(args.topic, payload, timeout=args.ack_timeout)
        print(result_text(result, args.write_out))
        return EXIT_OK if result.ok and result.deliveries else EXIT_FAILED
    seen = threading.Semaphore(0)

    def show(event: Event) -> None:
        if args.write_out == "json":
            _emit(event_line(event))
        else:
            _emit(f"{event.topic} from {event.sender}: {show_value(event.payload)}")
        seen.release()

    with ClusterService(c, monitor=False) as svc, stop_on(signal.SIGINT) as stop:
        svc.subscribe(args.topic, show)
        svc.wait_registered()
        shown = 0
        while not stop and (not args.count or shown < args.count):
            if seen.acquire(timeout=STOP_POLL_S):  # a bounded wait, so the stop flag is seen
                shown += 1
    return EXIT_OK


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "servers": _servers,
    "processes": _processes,
    "register": _register,
    "event": _event,
}


def check(args: argparse.Namespace) -> None:
    """Refuse bad arguments before connecting (ValueError: exit status 2)."""
    if args.command == "register":
        r.check_id(args.name)
        _meta(args.meta)
        if not 0 < args.port < 65536:
            raise ValueError(f"bad port {args.port}")
    if args.command == "event" and args.event_command == "listen" and args.count < 0:
        raise ValueError("--count must not be negative")
