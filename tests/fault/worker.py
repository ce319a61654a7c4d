"""Processes the network-fault harness starts inside the test network (with `ip netns exec`): client
workers that record a history, and a probe that answers the harness's questions about the nodes.

    python -m tests.fault.worker client --name c1 --endpoints URL,... --keys k0,k1 --seed 7 --history FILE
    python -m tests.fault.worker probe

A client worker runs `--threads` logical clients over one Client, each doing get/put/cas/delete on the
given keys (and, now and then, a put of a key of its own that is never written again, so the harness can
check that every acknowledged write survives), until its stdin closes. Every finished operation becomes
one JSON line in the history file: client, key, kind, args, invoke and complete times (time.monotonic,
which all processes on the machine share), result and outcome — "ok", "unknown" (OutcomeUnknown: the write
may or may not have been applied) or "failed" (Rejected or Unavailable: certainly not applied).

The probe reads one JSON request per line on stdin and writes one JSON answer per line: the status of
each node, each node's whole keyspace read locally, or a linearizable read of keys.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from actors.messages import RequestKind, Status
from cluster import Client, OutcomeUnknown, Rejected, Unavailable
from cluster.errors import NoAnswer
from cluster.kv.machine import MAX_RANGE_LIMIT, encode_query
from tests.integration.util import request, result_of, send_request, try_status

UNIQUE_PREFIX = "u/"


class HistoryFile:
    """One JSON line per finished operation, written and flushed under a lock (threads share it)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def record(self, **fields: Any) -> None:
        line = json.dumps(fields, separators=(",", ":"))
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


@dataclass(frozen=True)
class Workload:
    keys: list[str]
    unique_every: int  # every Nth operation is a put of a key of its own (0: never)
    think: float  # mean pause between operations, so a long soak does not hog the machine
    epoch_seconds: float  # the keys get a new generation suffix this often (0: never)
    origin: float  # time.monotonic() at which generation 0 began (shared by every worker)

    def key(self, rng: random.Random) -> str:
        """A key for the next operation: the generation suffix keeps each key's history short, so checking
        a long soak's history stays cheap (linearizability is checked per key)."""
        base = rng.choice(self.keys)
        if not self.epoch_seconds:
            return base
        return f"{base}.{int((time.monotonic() - self.origin) // self.epoch_seconds)}"


def run_logical_client(
    client: Client,
    name: str,
    workload: Workload,
    rng: random.Random,
    history: HistoryFile,
    stop: threading.Event,
) -> None:
    seen: dict[str, Any] = {}  # the last value this client saw for each key: what its cas expects
    counter = 0
    args: list[Any]
    while not stop.wait(rng.uniform(0, 2 * workload.think)):
        counter += 1
        if workload.unique_every and counter % workload.unique_every == 0:
            key, kind, args = f"{UNIQUE_PREFIX}{name}/{counter}", "put", [counter]
        else:
            key = workload.key(rng)
            roll = rng.random()
            if roll < 0.35:
                kind, args = "get", []
            elif roll < 0.65:
                kind, args = "put", [f"{name}-{counter}"]
            elif roll < 0.9:
                kind, args = "cas", [seen.get(key), f"{name}-{counter}"]
            else:
                kind, args = "delete", []
        invoke = time.monotonic()
        outcome, result, error = "ok", None, ""
        try:
            if kind == "get":
                result = client.get(key)
                seen[key] = result
            elif kind == "put":
                client.put(key, args[0])
                seen[key] = args[0]
            elif kind == "cas":
                result = client.cas(key, args[0], args[1])
                if result:
                    seen[key] = args[1]
            else:
                result = client.delete(key)
                seen[key] = None
        except OutcomeUnknown as exc:
            outcome, error = "unknown", type(exc).__name__
        except (Rejected, Unavailable) as exc:
            outcome, error = "failed", type(exc).__name__
        except NoAnswer as exc:  # a NoAnswer that is neither: treat as unknown, but say so
            outcome, error = "unknown", type(exc).__name__
        complete = time.monotonic()
        history.record(
            client=name,
            key=key,
            kind=kind,
            args=args,
            invoke=invoke,
            complete=complete if outcome != "unknown" else None,
            end=complete,
            result=result,
            outcome=outcome,
            error=error,
        )


def client_main(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    try:
        client = Client(args.endpoints, timeout=args.timeout)
    except Unavailable as exc:
        print(f"unavailable: {exc}", flush=True)
        return 3
    stop = threading.Event()
    workload = Workload(args.keys.split(","), args.unique_every, args.think, args.epoch_seconds, args.origin)
    with client, open(args.history, "a", encoding="utf-8") as stream:
        history = HistoryFile(stream)
        threads = [
            threading.Thread(
                target=run_logical_client,
                args=(client, f"{args.name}.{i}", workload, random.Random(rng.random()), history, stop),
                daemon=True,
            )
            for i in range(args.threads)
        ]
        for t in threads:
            t.start()
        print("ready", flush=True)
        sys.stdin.read()  # the harness closes our stdin to stop us
        stop.set()
        for t in threads:
            t.join(timeout=args.timeout + 10)
        if any(t.is_alive() for t in threads):
            print("a client thread did not stop", flush=True)
            return 4
    print("stopped", flush=True)
    return 0


# --- the probe ------------------------------------------------------------------------------------


def dump(url: str, timeout: float) -> list[dict[str, Any]] | None:
    """The node's whole keyspace read locally (serializable), page by page; None when it does not answer."""
    kvs: list[dict[str, Any]] = []
    after = ""
    while True:
        query = encode_query(["range", "", MAX_RANGE_LIMIT, after])
        try:
            resp = send_request(url, request(RequestKind.SERIAL_READ, query), timeout)
        except TimeoutError:
            return None
        if resp.status != Status.OK:
            return None
        page = result_of(resp)
        kvs += page["kvs"]
        if not page["more"]:
            return kvs
        after = page["kvs"][-1]["key"]


def probe_main() -> int:
    client: Client | None = None
    try:
        for line in sys.stdin:
            req = json.loads(line)
            cmd, urls, timeout = req["cmd"], req["urls"], float(req.get("timeout", 1.0))
            answer: dict[str, Any]
            if cmd == "status":
                answer = {"statuses": [try_status(url, timeout) for url in urls]}
            elif cmd == "dump":
                answer = {"dumps": [dump(url, timeout) for url in urls]}
            elif cmd == "read":
                if client is None:
                    client = Client(urls, timeout=timeout)
                reads = []
                for key in req["keys"]:
                    invoke = time.monotonic()
                    try:
                        value = client.get(key, timeout=timeout)
                    except Unavailable:
                        reads.append({"key": key, "ok": False})
                        continue
                    reads.append(
                        {
                            "key": key,
                            "ok": True,
                            "value": value,
                            "invoke": invoke,
                            "complete": time.monotonic(),
                        }
                    )
                answer = {"reads": reads}
            elif cmd == "fill":  # many keys at once, e.g. to make snapshots large
                if client is None:
                    client = Client(urls, timeout=timeout)
                futures = [
                    client.put_async(f"fill/{i:07d}", "v" * int(req["size"]), timeout=timeout)
                    for i in range(int(req["count"]))
                ]
                answer = {"filled": sum(1 for f in futures if f.exception(timeout + 5) is None)}
            else:
                answer = {"error": f"unknown command {cmd!r}"}
            sys.stdout.write(json.dumps(answer, default=repr) + "\n")
            sys.stdout.flush()
    finally:
        if client is not None:
            client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fault.worker")
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("client", help="run logical clients and record their history")
    c.add_argument("--name", required=True)
    c.add_argument("--endpoints", required=True)
    c.add_argument("--keys", required=True)
    c.add_argument("--seed", type=int, required=True)
    c.add_argument("--history", required=True)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--timeout", type=float, default=2.0)
    c.add_argument("--unique-every", type=int, default=5)
    c.add_argument("--think", type=float, default=0.01, help="mean pause between operations, seconds")
    c.add_argument("--epoch-seconds", type=float, default=0.0, help="new key generation this often")
    c.add_argument("--origin", type=float, default=0.0, help="time.monotonic() of key generation 0")
    sub.add_parser("probe", help="answer status/dump/read requests, one JSON line each")
    args = parser.parse_args(argv)
    if args.mode == "client":
        return client_main(args)
    return probe_main()


if __name__ == "__main__":
    sys.exit(main())
