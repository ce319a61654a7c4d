"""CURVE keys and files, the client's key settings, the node's security setup, and identity binding over
real loopback sockets (a member's key declaring another member's name is refused)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth

from actors.membership import Configuration, Member
from actors.messages import RequestVote
from cluster.client.curve import client_curve, curve_settings
from cluster.node.config import ConfigError, load_config
from cluster.node.inbound import Rejected, admit_peer_frame
from cluster.node.join import joined_configuration
from cluster.node.security import NodeSecurity
from tests.integration.util import free_ports, wait_until
from transport.codec import encode
from transport.curve import (
    KeyFileError,
    KeyPair,
    generate,
    key_text,
    parse_peer_keys,
    read_key_dir_checked,
    read_public_key,
    read_secret_key,
    write_keypair,
)
from transport.endpoints import MissingPeerKey, PeerMesh, recv_batch_users
from transport.zap import PEER_DOMAIN, Gatekeeper


def test_keypair_files_round_trip_and_the_secret_is_private(tmp_path: Path) -> None:
    pair = generate()
    public_path, secret_path = write_keypair(tmp_path / "k", "n1", pair)
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert read_public_key(public_path) == pair.public
    assert read_secret_key(secret_path) == pair
    assert key_text(pair.secret) not in public_path.read_text()
    assert key_text(pair.secret) not in repr(pair)
    assert zmq.auth.load_certificate(str(secret_path)) == (pair.public, pair.secret)  # czmq layout
    with pytest.raises(FileExistsError):
        write_keypair(tmp_path / "k", "n1")
    assert read_secret_key(secret_path) == pair


def test_bare_key_files_and_bad_files(tmp_path: Path) -> None:
    pair = generate()
    (tmp_path / "bare.key").write_bytes(pair.public + b"\n")
    (tmp_path / "bare.key_secret").write_bytes(pair.secret)
    assert read_public_key(tmp_path / "bare.key") == pair.public
    assert read_secret_key(tmp_path / "bare.key_secret") == pair
    (tmp_path / "junk.key_secret").write_text("hunter2 is my password\n")
    with pytest.raises(KeyFileError) as err:
        read_secret_key(tmp_path / "junk.key_secret")
    assert "hunter2" not in str(err.value) and "junk.key_secret" in str(err.value)
    other = generate()
    (tmp_path / "mixed.key_secret").write_text(f'curve\n public-key = "{key_text(other.public)}"\n'
                                                 f' secret-key = "{key_text(pair.secret)}"\n')  # fmt: skip
    with pytest.raises(KeyFileError, match="does not belong"):
        read_secret_key(tmp_path / "mixed.key_secret")


def test_peer_key_file_forms(tmp_path: Path) -> None:
    a, b, c = generate(), generate(), generate()
    write_keypair(tmp_path, "n3", c)
    (tmp_path / "peers").write_text(
        f"# members\nn1 {key_text(a.public)}\nn2 = {key_text(b.public)}\nn3 = n3.key\n\n"
    )
    assert parse_peer_keys(tmp_path / "peers") == {"n1": a.public, "n2": b.public, "n3": c.public}
    (tmp_path / "twice").write_text(f"n1 {key_text(a.public)}\nn1 {key_text(b.public)}\n")
    with pytest.raises(KeyFileError, match="twice"):
        parse_peer_keys(tmp_path / "twice")
    (tmp_path / "wrong").write_text(f"n1 {key_text(a.secret)[:20]}\n")
    with pytest.raises(KeyFileError) as err:
        parse_peer_keys(tmp_path / "wrong")
    assert key_text(a.secret)[:20] not in str(err.value)


def test_client_key_directory_skips_bad_files(tmp_path: Path) -> None:
    a, b = generate(), generate()
    write_keypair(tmp_path, "alice", a)
    (tmp_path / "bob.key").write_bytes(b.public)
    (tmp_path / "broken.key").write_text("nope")
    (tmp_path / "notes.txt").write_text("ignored")
    keys, problems = read_key_dir_checked(tmp_path)
    assert keys == {a.public: "alice", b.public: "bob"}
    assert len(problems) == 1 and "broken.key" in problems[0]


def test_client_curve_settings(tmp_path: Path) -> None:
    mine, n1, n2 = generate(), generate(), generate()
    write_keypair(tmp_path, "me", mine)
    write_keypair(tmp_path, "n2", n2)
    assert client_curve(None, None) is None
    one = client_curve(mine.secret, n1.public)
    assert one is not None and one.server_key("tcp://x:1") == n1.public and one.pair == mine
    spec = f"tcp://h:1={key_text(n1.public)},tcp://h:2={tmp_path / 'n2.key'}"
    mapped = client_curve(str(tmp_path / "me.key_secret"), spec)
    assert mapped is not None
    assert mapped.server_key("tcp://h:1") == n1.public
    assert mapped.server_key("tcp://h:2") == n2.public
    assert mapped.server_key("tcp://h:3") is None
    assert key_text(mine.secret) not in repr(mapped)
    as_map = client_curve(mine.secret, {"tcp://h:1": n1.public})
    assert as_map is not None and as_map.server_key("tcp://h:1") == n1.public
    with pytest.raises(ValueError, match="both"):
        client_curve(mine.secret, None)
    with pytest.raises(ValueError) as err:
        client_curve("not-a-key-and-no-file", n1.public)
    assert "not-a-key" not in str(err.value)
    env = {"ZRAFT_CURVE_SECRET_KEY": str(tmp_path / "me.key_secret"), "ZRAFT_SERVER_PUBLIC_KEY": spec}
    assert curve_settings(None, None, env) == (str(tmp_path / "me.key_secret"), spec)
    assert curve_settings(None, None, {}) == (None, None)


def _node_config(tmp_path: Path, *extra: str) -> list[str]:
    p1, p2, p3 = free_ports(3)
    return [
        "--name", "n1", "--data-dir", str(tmp_path / "d"),
        "--initial-cluster", f"n1=tcp://127.0.0.1:{p1},n2=tcp://127.0.0.1:{p2}",
        "--client-url", f"tcp://127.0.0.1:{p3}", *extra,
    ]  # fmt: skip


def _keys(tmp_path: Path) -> tuple[KeyPair, KeyPair]:
    n1, n2 = generate(), generate()
    write_keypair(tmp_path, "n1", n1)
    write_keypair(tmp_path, "n2", n2)
    (tmp_path / "peers").write_text("n1 = n1.key\nn2 = n2.key\n")
    (tmp_path / "clients").mkdir()
    return n1, n2


def test_node_security_load_checks_and_reload(tmp_path: Path) -> None:
    n1, n2 = _keys(tmp_path)
    flags = ["--curve-secret-key", str(tmp_path / "n1.key_secret"), "--curve-peers", str(tmp_path / "peers"),
             "--curve-clients", str(tmp_path / "clients")]  # fmt: skip
    with pytest.raises(ConfigError, match="--curve-clients"):
        load_config(_node_config(tmp_path, *flags[:4]), environ={})
    config = load_config(_node_config(tmp_path, *flags), environ={})
    sec = NodeSecurity.load(config)
    assert sec.secure and sec.member_keys == {"n1": n1.public, "n2": n2.public}
    assert sec.member_of(key_text(n2.public)) == "n2"
    assert sec.member_of(key_text(generate().public)) is None
    assert sec.client_admitted(key_text(n2.public))  # members may use the client port
    client = generate()
    assert not sec.client_admitted(key_text(client.public))
    assert sec.reload(0.0) is None  # nothing changed
    write_keypair(tmp_path / "clients", "alice", client)
    assert sec.reload(0.5) is None  # not due yet
    line = sec.reload(1.0)
    assert line is not None and "1 added" in line
    assert sec.client_admitted(key_text(client.public))
    (tmp_path / "clients" / "alice.key").unlink()
    line = sec.reload(2.0)
    assert line is not None and "1 removed" in line
    assert not sec.client_admitted(key_text(client.public))
    assert key_text(n1.secret) not in repr(sec.describe())

    (tmp_path / "peers").write_text("n1 = n1.key\nn2 = n1.key\n")
    with pytest.raises(ConfigError, match="same key"):
        NodeSecurity.load(config)
    (tmp_path / "peers").write_text("n1 = n1.key\n")
    with pytest.raises(ConfigError, match="no public key for member"):
        NodeSecurity.load(config)
    (tmp_path / "peers").write_text("n1 = n2.key\nn2 = n2.key\n")
    with pytest.raises(ConfigError, match="not the key"):
        NodeSecurity.load(config)


def test_open_node_has_no_security(tmp_path: Path) -> None:
    sec = NodeSecurity.load(load_config(_node_config(tmp_path), environ={}))
    assert not sec.secure
    assert sec.describe() == {"curve": False}
    assert sec.reload(10.0) is None


def test_a_member_key_declaring_another_name_is_refused(tmp_path: Path) -> None:
    """Over real CURVE sockets: n2's key proves n2, so a frame from it that declares identity n1 is
    rejected, while n2 declaring itself is admitted; a key the gate does not know never gets a frame in."""
    n1, n2 = generate(), generate()
    stranger = generate()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    gate = Gatekeeper(ctx)
    gate.start()
    gate.admit(PEER_DOMAIN, [n1.public, n2.public])
    port, p2, p3 = free_ports(3)
    url = f"tcp://127.0.0.1:{port}"
    n3 = generate()
    rx = PeerMesh.open(ctx, "n3", url, {}, 1 << 20, curve=n3)
    senders = []
    try:
        rx_key = n3.public
        for name, pair, own in (("n1", n2, p2), ("n2", n2, p3), ("n1", stranger, free_ports(1)[0])):
            mesh = PeerMesh.open(ctx, name, f"tcp://127.0.0.1:{own}", {"n3": url}, 1 << 20, curve=pair,
                                 peer_keys={"n3": rx_key})  # fmt: skip
            senders.append(mesh)
        members = {key_text(n1.public): "n1", key_text(n2.public): "n2"}
        vote = {name: encode(RequestVote(name, "n3", 1, 0, 0, False, False))
                for name in ("n1", "n2")}  # fmt: skip
        got: list[tuple[list[bytes], str]] = []

        def both_arrived() -> bool:
            for mesh, name in zip(senders, ("n1", "n2", "n1"), strict=True):
                mesh.send("n3", vote[name])
            got.extend(recv_batch_users(rx.router, 100, 1 << 20))
            return {f[0] for f, _ in got} >= {b"n1", b"n2"}

        wait_until(both_arrived, 10.0, "frames from both admitted keys", interval=0.05)
        outcomes: dict[bytes, str] = {}
        for (identity, payload), user in got:
            try:
                admit_peer_frame(identity, payload, {"n1", "n2"}, 1 << 20, members.get(user, ""))
                outcomes[identity] = "admitted"
            except Rejected as rejected:
                outcomes[identity] = rejected.counter
        assert outcomes == {b"n1": "unproven_peer", b"n2": "admitted"}
        assert all(user != key_text(stranger.public) for _, user in got)
    finally:
        for mesh in [rx, *senders]:
            mesh.close()
        gate.stop()
        ctx.term()


def test_a_member_added_later_is_reached_over_curve_only_with_its_key(tmp_path: Path) -> None:
    """Dynamic membership: the peer key file may name a member not yet in the cluster (its key is kept),
    a CURVE mesh connects to a member added later as a CURVE client of that member's key, and refuses
    (MissingPeerKey, no DEALER) a member whose key it does not know rather than connect in plaintext."""
    n1, n2 = _keys(tmp_path)
    n4 = generate()
    write_keypair(tmp_path, "n4", n4)
    (tmp_path / "peers").write_text("n1 = n1.key\nn2 = n2.key\nn4 = n4.key\n")
    flags = ["--curve-secret-key", str(tmp_path / "n1.key_secret"), "--curve-peers", str(tmp_path / "peers"),
             "--curve-clients", str(tmp_path / "clients")]  # fmt: skip
    sec = NodeSecurity.load(load_config(_node_config(tmp_path, *flags), environ={}))
    assert sec.member_keys == {"n1": n1.public, "n2": n2.public, "n4": n4.public}
    assert any("n4" in problem for problem in sec.startup_problems)

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    gate = Gatekeeper(ctx)
    gate.start()
    gate.admit(PEER_DOMAIN, [n1.public, n4.public])
    p1, p4 = free_ports(2)
    rx = PeerMesh.open(ctx, "n4", f"tcp://127.0.0.1:{p4}", {}, 1 << 20, curve=n4)
    tx = PeerMesh.open(ctx, "n1", f"tcp://127.0.0.1:{p1}", {}, 1 << 20, curve=n1)
    try:
        with pytest.raises(MissingPeerKey, match="n5"):
            tx.connect("n5", "tcp://127.0.0.1:1")
        assert "n5" not in tx.dealers and "n5" not in tx.urls
        tx.connect("n4", f"tcp://127.0.0.1:{p4}", sec.member_keys["n4"])
        frame = encode(RequestVote("n1", "n4", 1, 0, 0, False, False))
        got: list[tuple[list[bytes], str]] = []

        def arrived() -> bool:
            tx.send("n4", frame)
            got.extend(recv_batch_users(rx.router, 100, 1 << 20))
            return bool(got)

        wait_until(arrived, 10.0, "a frame over CURVE from n1 to n4", interval=0.05)
        (identity, payload), user = got[0]
        assert identity == b"n1" and payload == frame and user == key_text(n1.public)
    finally:
        rx.close()
        tx.close()
        gate.stop()
        ctx.term()


def test_member_keys_follow_the_configuration_and_join_items_carry_keys(tmp_path: Path) -> None:
    """A member record's CURVE key (cluster-ctl member add ... --curve-public-key) is taken over the peer
    key file: that member is then a member key on both ports. --join URL=KEY parses; with CURVE every
    join URL needs its key, without CURVE none may have one."""
    n1, n2 = _keys(tmp_path)
    flags = ["--curve-secret-key", str(tmp_path / "n1.key_secret"), "--curve-peers", str(tmp_path / "peers"),
             "--curve-clients", str(tmp_path / "clients")]  # fmt: skip
    sec = NodeSecurity.load(load_config(_node_config(tmp_path, *flags), environ={}))
    n4 = generate()
    config = Configuration.of([Member("n1"), Member("n2"), Member("n4", "tcp://n4:1", learner=True)])
    assert sec.follow(config) == [] and sec.member_of(key_text(n4.public)) is None
    keyed = Configuration.of([*config.members[:2], config.members[2].with_curve_key(key_text(n4.public))])
    assert sec.follow(keyed) == ["n4"] and sec.follow(keyed) == []  # only news are reported
    assert sec.member_keys["n4"] == n4.public and sec.member_keys["n2"] == n2.public
    assert sec.member_of(key_text(n4.public)) == "n4" and sec.client_admitted(key_text(n4.public))
    bad = Configuration.of([*config.members[:2], config.members[2].with_curve_key("not a key")])
    assert sec.follow(bad) == ["n4: not a Z85 CURVE key, ignored"] and sec.member_keys["n4"] == n4.public
    assert NodeSecurity().follow(keyed) == []  # an open node has no keys to follow

    url = "tcp://127.0.0.1:7000"
    joiner = [
        "--name", "n4", "--data-dir", str(tmp_path / "d4"), "--peer-url", "tcp://127.0.0.1:7101",
        "--client-url", "tcp://127.0.0.1:7001", "--initial-cluster-state", "existing",
    ]  # fmt: skip
    config4 = load_config([*joiner, "--join", f"{url}={key_text(n1.public)}"], environ={})
    assert config4.join_urls == (url,)
    with pytest.raises(ConfigError, match="no --curve-secret-key"):
        joined_configuration(config4, timeout=0.1)
    secure4 = load_config([*joiner, "--join", url, *flags], environ={})
    with pytest.raises(ConfigError, match="every --join item is URL=KEY"):
        joined_configuration(secure4, timeout=0.1)
