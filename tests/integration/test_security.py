"""CurveZMQ against real node processes: who gets in, who does not, and what the wire shows.

Every cluster here is started through bin/cluster-node with --curve-secret-key/--curve-peers/--curve-clients;
keys are written with transport.curve.write_keypair (the same code as `cluster-ctl keygen`, whose CLI is
tested at the end). Waits are bounded (wait_until); every process is stopped by start_cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.messages import ClientResponse, Status
from cluster import AsyncClient, Client, HandshakeRefused, PermissionDenied, Unavailable, ZraftError
from cluster.node.http.views import PROCESS_PREFIX, SERVER_PREFIX
from cluster.service import Event
from cluster.service.event_socket import EventEndpoint
from cluster.service.events import encode_event
from tests.integration.capture import CaptureProxy
from tests.integration.util import (
    REPO_ROOT,
    Cluster,
    NodeHandle,
    free_ports,
    node_args,
    start_cluster,
    try_status,
    wait_until,
    write_request,
)
from transport.codec import decode, encode
from transport.curve import KeyPair, client_options, key_text, read_secret_key, write_keypair

pytestmark = pytest.mark.integration

CTL = REPO_ROOT / "bin" / "cluster-ctl"
WAIT = 20.0  # generous: the machine is shared


@dataclass
class Keys:
    folder: Path
    nodes: dict[str, KeyPair]
    client: KeyPair

    @property
    def peers_file(self) -> Path:
        return self.folder / "peers"

    @property
    def clients_dir(self) -> Path:
        return self.folder / "clients"

    def node_flags(self, name: str) -> list[str]:
        return [
            "--curve-secret-key", str(self.folder / f"{name}.key_secret"),
            "--curve-peers", str(self.peers_file),
            "--curve-clients", str(self.clients_dir),
        ]  # fmt: skip

    def servers(self, cluster: Cluster) -> dict[str, str | bytes]:
        return {n.client_url: self.nodes[n.name].public for n in cluster.nodes}

    def secrets(self) -> list[str]:
        return [key_text(p.secret) for p in [*self.nodes.values(), self.client]]


def make_keys(folder: Path, names: Sequence[str]) -> Keys:
    nodes = {}
    for name in names:
        write_keypair(folder, name)
        nodes[name] = read_secret_key(folder / f"{name}.key_secret")
    (folder / "peers").write_text("".join(f"{name} = {name}.key\n" for name in names))
    (folder / "clients").mkdir()
    write_keypair(folder, "client")
    client = read_secret_key(folder / "client.key_secret")
    (folder / "clients" / "client.key").write_bytes((folder / "client.key").read_bytes())
    return Keys(folder, nodes, client)


@contextmanager
def secure_cluster(
    tmp_path: Path, n: int, start: Sequence[str] | None = None, election_timeout_ms: int | None = None
) -> Iterator[tuple[Cluster, Keys]]:
    names = [f"n{i + 1}" for i in range(n)]
    keys = make_keys(tmp_path / "keys", names)
    timeouts = {} if election_timeout_ms is None else {"election_timeout_ms": election_timeout_ms}
    with start_cluster(
        n, base_dir=tmp_path, node_args_of=keys.node_flags, start=start, **timeouts
    ) as cluster:
        yield cluster, keys


def secure_client(cluster: Cluster, keys: Keys, pair: KeyPair | None = None, timeout: float = 5.0) -> Client:
    return Client(
        [n.client_url for n in cluster.nodes],
        timeout=timeout,
        curve_secret_key=(pair or keys.client).secret,
        server_public_key=keys.servers(cluster),
    )


def row(c: Client, name: str) -> dict[str, Any]:
    """One node's own status, as Client.status() lists it."""
    rows = {r["name"]: r for r in c.status()["members"]}
    assert rows[name]["reachable"], rows[name]
    return dict(rows[name])


def _all_rows(c: Client, cluster: Cluster) -> list[dict[str, Any]] | None:
    rows = {r["name"]: r for r in c.status()["members"]}
    if not all(rows[n.name]["reachable"] for n in cluster.nodes):
        return None
    return [dict(rows[n.name]) for n in cluster.nodes]


def counter(cluster: Cluster, node: NodeHandle, keys: Keys, name: str) -> int:
    with Client(
        [node.client_url],
        timeout=5.0,
        curve_secret_key=keys.client.secret,
        server_public_key=keys.servers(cluster),
    ) as c:
        return int(row(c, node.name)["runtime"].get(name, 0))


def secure_client_for(node: NodeHandle, keys: Keys) -> Client:
    return Client(
        [node.client_url],
        timeout=5.0,
        curve_secret_key=keys.client.secret,
        server_public_key=keys.nodes[node.name].public,
    )


def test_admitted_client_works_others_are_refused_and_no_secret_is_shown(tmp_path: Path) -> None:
    with secure_cluster(tmp_path, 3) as (cluster, keys):
        with secure_client(cluster, keys, timeout=WAIT) as c:
            rev = c.put("svc/a", "10.0.0.1:80")
            assert c.get("svc/a") == "10.0.0.1:80"
            # every node's own row; on a loaded machine one node may miss a status round's deadline
            rows = wait_until(lambda: _all_rows(c, cluster), WAIT, "every node to answer a status request")
        assert rev > 0
        for r in rows:
            assert r["runtime"]["security"]["curve"] is True
            assert r["runtime"]["security"]["public_key"] == key_text(keys.nodes[r["name"]].public)

        async def through_async_client() -> Any:
            async with AsyncClient(
                [n.client_url for n in cluster.nodes],
                timeout=WAIT,
                curve_secret_key=str(keys.folder / "client.key_secret"),
                server_public_key=keys.servers(cluster),
            ) as ac:
                return await ac.get("svc/a")

        assert asyncio.run(through_async_client()) == "10.0.0.1:80"

        urls = [n.client_url for n in cluster.nodes]
        # Refused handshakes are named, per node, instead of a bare timeout (HandshakeRefused is Unavailable)
        with pytest.raises(
            HandshakeRefused, match="the node requires CURVE: this client has no keys"
        ) as no_keys:
            Client(urls, timeout=1.5)
        assert set(no_keys.value.refusals) == set(urls)
        stranger = KeyPair(*zmq.curve_keypair())
        with pytest.raises(HandshakeRefused, match="the node refused our CURVE key") as refused:
            Client(
                urls, timeout=1.5, curve_secret_key=stranger.secret, server_public_key=keys.servers(cluster)
            )
        assert set(refused.value.refusals) == set(urls)
        assert isinstance(refused.value, Unavailable)
        wrong_server = {url: keys.client.public for url in urls}  # the client's own key as every node's
        with pytest.raises(HandshakeRefused, match="server key mismatch"):
            Client(urls, timeout=1.5, curve_secret_key=keys.client.secret, server_public_key=wrong_server)

        async def async_refused() -> None:
            async with AsyncClient(
                urls, timeout=1.5, curve_secret_key=stranger.secret, server_public_key=keys.servers(cluster)
            ):
                pass

        with pytest.raises(HandshakeRefused, match="the node refused our CURVE key"):
            asyncio.run(async_refused())
        write_keypair(keys.folder, "stranger")
        ctl = _ctl(cluster, keys, "get", "svc/a", "--timeout", "1.5", secret="stranger.key_secret")
        assert ctl.returncode == 3, ctl.stderr
        assert f"{urls[0]}: the node refused our CURVE key" in ctl.stderr

        wait_until(
            lambda: all("refused a connection on the client port" in n.log_text() for n in cluster.nodes),
            WAIT,
            "every node to log the refused clients",
        )
        with secure_client(cluster, keys) as c:
            texts = [json.dumps(c.status())]
        for text in [*texts, *(n.log_text() for n in cluster.nodes)]:
            for secret in keys.secrets():
                assert secret not in text


def test_a_node_without_the_cluster_keys_cannot_join_or_disrupt(tmp_path: Path) -> None:
    """n1 and n2 hold the cluster's keys; the process started as "n3" does not (first its own key, then
    none). It campaigns with a short election timeout, yet the cluster's term and leader never move."""
    # a long election timeout for n1 and n2: a loaded machine must not cause an election of its own here
    with secure_cluster(tmp_path, 3, start=["n1", "n2"], election_timeout_ms=3000) as (cluster, keys):
        leader = wait_for_leader_secure(cluster, keys)
        with secure_client(cluster, keys) as c:
            term = c.status()["term"]
        rogue = cluster.node("n3")
        rogue_keys = tmp_path / "rogue"
        write_keypair(rogue_keys, "n3")
        # its own view: its own key for n3, the real keys of n1 and n2 (so its DEALERs could reach them)
        (rogue_keys / "peers").write_text(
            f"n1 {key_text(keys.nodes['n1'].public)}\nn2 {key_text(keys.nodes['n2'].public)}\nn3 = n3.key\n"
        )
        (rogue_keys / "clients").mkdir()
        base_args = _without_curve(rogue.args)
        for extra in (
            ["--curve-secret-key", str(rogue_keys / "n3.key_secret"),
             "--curve-peers", str(rogue_keys / "peers"), "--curve-clients", str(rogue_keys / "clients")],
            [],  # plaintext
        ):  # fmt: skip
            rogue.args = [*base_args, *extra, "--election-timeout-ms", "150", "--heartbeat-ms", "30"]
            rogue.start()
            kinds = (
                ["refused_peer_unknown_key"]
                if extra
                else ["refused_peer_plaintext", "refused_peer_handshake"]
            )
            for node in (cluster.node("n1"), cluster.node("n2")):
                wait_until(
                    lambda n=node, k=kinds: sum(counter(cluster, n, keys, x) for x in k) >= 1,
                    WAIT,
                    f"{node.name} to refuse n3",
                    interval=0.2,
                )
            rogue.kill()
        with secure_client(cluster, keys) as c:
            after = c.status()
            c.put("still", "writable")
            peer_frames = [row(c, n)["runtime"].get("unproven_peer", 0) for n in ("n1", "n2")]
        assert after["term"] == term
        assert after["leader"] == leader
        assert peer_frames == [0, 0]  # nothing of the rogue's ever got past the handshake


def wait_for_leader_secure(cluster: Cluster, keys: Keys) -> str:
    def leader() -> str | None:
        try:
            with secure_client(cluster, keys, timeout=2.0) as c:
                return str(c.status(timeout=2.0).get("leader") or "") or None
        except ZraftError:
            return None

    return wait_until(leader, WAIT, "a leader")


def _without_curve(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith("--curve-") or arg in ("--election-timeout-ms", "--heartbeat-ms"):
            skip = True
            continue
        out.append(arg)
    return out


def test_client_keys_rotate_through_the_allow_list_without_a_restart(tmp_path: Path) -> None:
    with secure_cluster(tmp_path, 1) as (cluster, keys):
        node = cluster.nodes[0]
        old = secure_client_for(node, keys)
        try:
            old.put("k", 1)
            write_keypair(tmp_path / "new", "newcomer")
            new_pair = read_secret_key(tmp_path / "new" / "newcomer.key_secret")
            with pytest.raises(Unavailable):  # not admitted yet
                Client([node.client_url], timeout=1.0, curve_secret_key=new_pair.secret,
                       server_public_key=keys.nodes["n1"].public)  # fmt: skip
            (keys.clients_dir / "newcomer.key").write_bytes((tmp_path / "new" / "newcomer.key").read_bytes())

            def new_client_works() -> bool:
                try:
                    with Client([node.client_url], timeout=1.0, curve_secret_key=new_pair.secret,
                                server_public_key=keys.nodes["n1"].public) as c:  # fmt: skip
                        return c.put("k", 2) > 0
                except ZraftError:
                    return False

            wait_until(new_client_works, WAIT, "the added key to be admitted")
            (keys.clients_dir / "client.key").unlink()

            def old_client_refused() -> bool:
                try:
                    old.put("k", 3, timeout=1.0)
                except ZraftError:
                    return True
                return False

            wait_until(old_client_refused, WAIT, "the removed key to be refused on its open connection")
            wait_until(lambda: "client keys reloaded" in node.log_text(), WAIT, "the reload to be logged")
        finally:
            old.close()
        assert "1 added" in node.log_text() and "1 removed" in node.log_text()


def test_the_capture_proxy_stays_bounded_even_when_it_reaches_itself() -> None:
    """The cause of the #14 abort, as a regression test: a proxy whose target is its own port. The old
    one cascaded (every accepted connection opened another to itself, two threads each) until the process
    ran out of file descriptors and libzmq aborted it. This one stays at CaptureProxy.MAX_PAIRS pairs and
    one thread, and the connections it refuses are closed."""
    proxy = CaptureProxy()
    proxy.target_port = proxy.port
    threads_before = threading.active_count()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as first:
            first.sendall(b"\xff" + bytes(8) + b"\x7f")  # a ZMTP greeting's start, as a peer DEALER sends
            wait_until(lambda: proxy.refused > 0, WAIT, "the proxy to refuse a connection past its bound")
            assert proxy.peak_pairs == CaptureProxy.MAX_PAIRS
            assert threading.active_count() <= threads_before
    finally:
        proxy.close()


def _write_through(url: str, value: str, setup: Callable[[zmq.Socket[bytes]], None]) -> ClientResponse:
    ctx = zmq.Context.instance()
    with closing(ctx.socket(zmq.DEALER)) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        setup(sock)
        sock.connect(url)
        req = write_request("canary", value)
        sock.send(encode(req))
        assert sock.poll(int(WAIT * 1000)), "no answer through the proxy"
        msg = decode(sock.recv())
        assert isinstance(msg, ClientResponse)
        return msg


@pytest.mark.parametrize("secure", [True, False], ids=["curve", "plaintext-control"])
def test_a_capture_of_the_traffic_shows_no_plaintext_value(tmp_path: Path, secure: bool) -> None:
    canary = "CANARY-" + os.urandom(8).hex()
    names = ["n1"]
    keys = make_keys(tmp_path / "keys", names)
    extra = keys.node_flags if secure else None
    with start_cluster(1, base_dir=tmp_path, node_args_of=extra) as cluster:
        node = cluster.nodes[0]
        port = int(node.client_url.rsplit(":", 1)[1])
        if not secure:
            wait_until(lambda: (try_status(node.client_url) or {}).get("leader"), WAIT, "a leader")
        else:
            wait_for_leader_secure(cluster, keys)
        capture = CaptureProxy(port)
        try:

            def setup(sock: zmq.Socket[bytes]) -> None:
                if secure:
                    client_options(sock, keys.client, keys.nodes["n1"].public)

            answer = _write_through(f"tcp://127.0.0.1:{capture.port}", canary, setup)
        finally:
            capture.close()
        assert answer.status == Status.OK
        data = capture.captured()
        assert len(data) > 100
        if secure:
            assert canary.encode() not in data
            assert b"canary" not in data  # the key is not visible either
        else:
            assert canary.encode() in data  # the capture does see plaintext


def test_keygen_writes_a_keypair_with_a_private_secret_file(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    run = [sys.executable, str(CTL), "keygen", "--out", str(out), "--name", "n1", "-w", "json"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    shown = json.loads(first.stdout)
    pair = read_secret_key(out / "n1.key_secret")
    assert shown["public_key"] == key_text(pair.public)
    assert key_text(pair.secret) not in first.stdout + first.stderr
    assert stat.S_IMODE((out / "n1.key_secret").stat().st_mode) == 0o600
    assert key_text(pair.secret) not in (out / "n1.key").read_text()
    again = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert "not overwriting" in again.stderr
    assert read_secret_key(out / "n1.key_secret") == pair  # untouched


def test_node_with_a_partial_curve_setup_refuses_to_start(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys", ["n1"])
    p1, p2 = free_ports(2)
    (tmp_path / "bad.key_secret").write_text("not a key at all\n")
    node_bin = REPO_ROOT / "bin" / "cluster-node"
    base = [sys.executable, str(node_bin), "--name", "n1", "--data-dir", str(tmp_path / "d"),
            "--initial-cluster", f"n1=tcp://127.0.0.1:{p1}",
            "--client-url", f"tcp://127.0.0.1:{p2}"]  # fmt: skip
    partial = subprocess.run(
        [*base, "--curve-secret-key", str(keys.folder / "n1.key_secret")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert partial.returncode == 2
    assert "--curve-peers" in partial.stderr
    bad = subprocess.run(
        [*base, "--curve-secret-key", str(tmp_path / "bad.key_secret"), "--curve-peers", str(keys.peers_file),
         "--curve-clients", str(keys.clients_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "holds no CURVE secret key" in bad.stderr
    assert "not a key at all" not in bad.stderr


def _ctl(
    cluster: Cluster, keys: Keys, *args: str, secret: str = "client.key_secret"
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["ZRAFT_ENDPOINTS"] = ",".join(n.client_url for n in cluster.nodes)
    env["ZRAFT_CURVE_SECRET_KEY"] = str(keys.folder / secret)
    env["ZRAFT_SERVER_PUBLIC_KEY"] = ",".join(
        f"{n.client_url}={keys.folder / (n.name + '.key')}" for n in cluster.nodes
    )
    return subprocess.run(
        [sys.executable, str(CTL), *args], capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT
    )


def test_users_rights_by_prefix_are_enforced_and_replicated(tmp_path: Path) -> None:
    with secure_cluster(tmp_path, 3) as (cluster, keys):
        wait_for_leader_secure(cluster, keys)
        assert all("no users are configured, so access is OPEN" in n.log_text() for n in cluster.nodes)
        for name in ("reader", "stranger"):
            write_keypair(keys.folder, name)
            (keys.clients_dir / f"{name}.key").write_bytes((keys.folder / f"{name}.key").read_bytes())
        reader = read_secret_key(keys.folder / "reader.key_secret")
        stranger = read_secret_key(keys.folder / "stranger.key_secret")
        with secure_client(cluster, keys, timeout=WAIT) as admin:
            admin.put("other/secret", "s3")
            admin.put("svc/db", "10.0.0.2:5432")
        added = _ctl(cluster, keys, "user", "add", "admin", "--key", str(keys.folder / "client.key"),
                     "--read", "", "--write", "")  # fmt: skip
        assert added.returncode == 0, added.stderr
        added = _ctl(cluster, keys, "user", "add", "reader", f"--key={key_text(reader.public)}",
                     "--read", "svc/", "--write", "svc/web/")  # fmt: skip
        # (--key=KEY: a Z85 key may start with "-", which argparse would take for an option)
        assert added.returncode == 0, added.stderr
        listed = _ctl(cluster, keys, "user", "list", "-w", "json")
        assert listed.returncode == 0, listed.stderr
        assert {u["name"]: u["write"] for u in json.loads(listed.stdout)} == {
            "admin": [""],
            "reader": ["svc/web/"],
        }

        def connect(pair: KeyPair) -> Client:
            return wait_until(lambda: _try_client(cluster, keys, pair), WAIT, "the key to be admitted")

        with connect(reader) as c:
            assert c.get("svc/db") == "10.0.0.2:5432"
            assert c.put("svc/web/a", "1") > 0
            for denied in (
                lambda: c.put("svc/db", "evil"),
                lambda: c.put("other/x", 1),
                lambda: c.delete_prefix("svc/"),
                lambda: c.get("other/secret"),
                lambda: c.put(
                    "__zraft/users/reader", {"key": key_text(reader.public), "read": [""], "write": [""]}
                ),
            ):
                with pytest.raises(PermissionDenied):
                    denied()
            with pytest.raises(PermissionDenied, match="may not read 'other/'"), c.watch("other/") as w:
                next(w)  # a watch outside the read rights ends with PermissionDenied, as a read does
        with pytest.raises(PermissionDenied, match="permission denied"):
            asyncio.run(_async_watch_first(cluster, keys, reader, "other/"))
        watched = _ctl(cluster, keys, "watch", "other/", secret="reader.key_secret")
        assert watched.returncode == 1, watched.stderr
        assert "watch: permission denied: user reader may not read 'other/'" in watched.stderr
        with connect(stranger) as c, pytest.raises(PermissionDenied):
            c.get("svc/db")
        with secure_client(cluster, keys) as admin:
            assert admin.get("svc/db") == "10.0.0.2:5432"  # the refused writes wrote nothing
            assert admin.get("other/x") is None
        with connect(reader) as c, pytest.raises(PermissionDenied):
            c.get("other/secret", serializable=True)  # answered locally by any node: refused there too
        removed = _ctl(cluster, keys, "user", "remove", "reader")
        assert removed.returncode == 0, removed.stderr
        with connect(reader) as c, pytest.raises(PermissionDenied):
            c.get("svc/db")
        bad = _ctl(cluster, keys, "put", "__zraft/members/n1", "x")
        assert bad.returncode == 2 and "reserved" in bad.stderr  # nodes' own keys stay theirs


async def _async_watch_first(cluster: Cluster, keys: Keys, pair: KeyPair, prefix: str) -> Any:
    async with (
        AsyncClient(
            [n.client_url for n in cluster.nodes],
            timeout=WAIT,
            curve_secret_key=pair.secret,
            server_public_key=keys.servers(cluster),
        ) as ac,
        ac.watch(prefix) as w,
    ):
        async for event in w:
            return event
    return None


def _try_client(cluster: Cluster, keys: Keys, pair: KeyPair) -> Client | None:
    try:
        return secure_client(cluster, keys, pair, timeout=2.0)
    except ZraftError:
        return None


@pytest.mark.parametrize("secure", [True, False], ids=["curve", "plaintext-control"])
def test_a_capture_of_the_peer_traffic_shows_no_plaintext_value(tmp_path: Path, secure: bool) -> None:
    """Two members, each told that the other lives behind a recording proxy: every peer byte passes a
    proxy (a 2-node cluster commits only with both), and the value written is in none of them (while a
    plaintext cluster's capture shows it)."""
    canary = "CANARY-" + os.urandom(8).hex()
    keys = make_keys(tmp_path / "keys", ["n1", "n2"])
    proxies = {name: CaptureProxy() for name in ("n1", "n2")}  # bound first: the ports below cannot be theirs
    peer_ports = free_ports(2)
    client_ports = free_ports(2)
    for name, port in zip(("n1", "n2"), peer_ports, strict=True):
        proxies[name].target_port = port
    nodes: list[NodeHandle] = []
    try:
        for i, name in enumerate(("n1", "n2")):
            other = "n2" if name == "n1" else "n1"
            initial = f"{name}=tcp://127.0.0.1:{peer_ports[i]},{other}=tcp://127.0.0.1:{proxies[other].port}"
            args = node_args(
                name,
                tmp_path / name,
                f"tcp://127.0.0.1:{peer_ports[i]}",
                f"tcp://127.0.0.1:{client_ports[i]}",
                initial,
                extra=keys.node_flags(name) if secure else (),
            )
            node = NodeHandle(name, "", f"tcp://127.0.0.1:{client_ports[i]}", tmp_path / name,
                              tmp_path / f"{name}.log", args)  # fmt: skip
            nodes.append(node)
            node.start()
        cluster = Cluster(nodes, tmp_path)
        if secure:
            wait_for_leader_secure(cluster, keys)
        else:
            wait_until(lambda: (try_status(nodes[0].client_url) or {}).get("leader"), WAIT, "a leader")
        client = (
            secure_client(cluster, keys, timeout=WAIT)
            if secure
            else Client([n.client_url for n in nodes], timeout=WAIT)
        )
        with client as c:
            c.put("canary", canary)
            assert c.get("canary") == canary
        captured = b"".join(p.captured() for p in proxies.values())
        assert len(captured) > 1000  # the peers did talk through the proxies
        assert (canary.encode() in captured) is not secure
    finally:
        for node in nodes:
            node.kill()
        for proxy in proxies.values():
            proxy.close()


def test_service_events_use_the_clients_curve_keys_and_a_capture_shows_no_event(tmp_path: Path) -> None:
    """Event sockets of services whose Client has CURVE keys: an event goes through (here through a
    recording proxy) and is not in the capture; a plain socket cannot deliver one; a receiver that
    advertises no key is never sent to."""
    pairs = [KeyPair(*zmq.curve_keypair()) for _ in range(2)]
    sender, receiver = (EventEndpoint(f"token-{i}", "127.0.0.1", pairs[i]) for i in range(2))
    sender.start()
    receiver.start()
    assert receiver.url is not None and receiver.public_key == key_text(pairs[1].public)
    got: list[Event] = []
    receiver.subscribe("NOTE", got.append)
    canary = "CANARY-" + os.urandom(8).hex()
    capture = CaptureProxy(int(receiver.url.rsplit(":", 1)[1]))
    try:
        via = f"tcp://127.0.0.1:{capture.port}"
        result = sender.send(
            [("SERVER_META/r", via)], "NOTE", canary, WAIT, "SERVER_META/s", {via: receiver.public_key}
        )
        assert result.ok and [e.payload for e in got] == [canary]
        wire = capture.captured()
        assert len(wire) > 100 and canary.encode() not in wire and b"NOTE" not in wire

        no_key = sender.send([("SERVER_META/r", receiver.url)], "NOTE", 1, 1.0, "SERVER_META/s")
        assert not no_key.ok and "no CURVE key" in no_key.deliveries[0].reason  # never sent in plaintext

        with closing(zmq.Context.instance().socket(zmq.DEALER)) as plain:
            plain.setsockopt(zmq.LINGER, 0)
            plain.connect(receiver.url)
            plain.send(encode_event("intruder", 1, "x", "NOTE", "forged"))
            assert not plain.poll(1000)  # no ack: the handshake never completed
        assert [e.payload for e in got] == [canary]  # the forged event never reached a listener
    finally:
        capture.close()
        sender.close()
        receiver.close()


def test_the_http_status_server_of_a_curve_node_serves_no_values_and_no_secret(tmp_path: Path) -> None:
    """The HTTP port authenticates nobody: on a node with CURVE keys the registry routes answer 403, and
    no other route shows a key's value or any secret key (only the node's public key)."""
    keys = make_keys(tmp_path / "keys", ["n1"])
    http = f"http://127.0.0.1:{free_ports(1)[0]}"
    canary = "CANARY-" + os.urandom(8).hex()
    with start_cluster(
        1, base_dir=tmp_path, node_args_of=lambda name: [*keys.node_flags(name), "--http-url", http]
    ) as cluster:
        with secure_client(cluster, keys, timeout=WAIT) as c:
            c.put(SERVER_PREFIX + "s1", {"SERVER_HOST": canary, "STATUS": "ONLINE"})
            c.put(PROCESS_PREFIX + "p1", {"SERVER_NAME": "s1", "NOTE": canary})
        paths = ["/", "/health", "/ready", "/metrics", "/api/v1/node/status", "/api/v1/cluster/address",
                 "/api/v1/cluster/status", "/api/v1/cluster/nodes", "/api/v1/cluster/node/s1/p1"]  # fmt: skip
        answers = {path: _http_get(http + path) for path in paths}
        bodies = {path: body for path, (_, body) in answers.items()}
        for path in ("/api/v1/cluster/nodes", "/api/v1/cluster/node/s1/p1"):
            assert answers[path][0] == 403
            assert b"not served over unauthenticated HTTP" in answers[path][1]
        shown = json.loads(bodies["/api/v1/node/status"])["body"]
        assert key_text(keys.nodes["n1"].public) in json.dumps(shown)  # the public key only
        assert answers["/metrics"][0] == 200 and answers["/api/v1/cluster/status"][0] == 200
        for path, body in bodies.items():
            assert canary.encode() not in body, path
            for secret in keys.secrets():
                assert secret.encode() not in body, path


def _http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
